//! The queries: an open config database and what it is asked.

use super::error::{ConfigError, NotFoundReason};
use super::HandlerSelector;
use crate::{Error, Result};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Params};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The tables this module reads; a file without them is not a Mongrel2 config.
const REQUIRED_TABLES: [&str; 5] = ["handler", "route", "host", "server", "setting"];

/// The handler columns, in [`HandlerRow`] order, for a query that names the table `h`. The casts
/// keep hand-edited rows with odd column types readable.
const HANDLER_COLUMNS: &str = "h.id, CAST(h.send_spec AS TEXT), CAST(h.send_ident AS TEXT), \
     CAST(h.recv_spec AS TEXT), CAST(h.recv_ident AS TEXT), CAST(h.raw_payload AS INTEGER), \
     CAST(h.protocol AS TEXT)";

/// One row of the `handler` table, NULLs kept.
pub(super) struct HandlerRow {
    pub(super) id: i64,
    pub(super) send_spec: Option<String>,
    pub(super) send_ident: Option<String>,
    pub(super) recv_spec: Option<String>,
    pub(super) recv_ident: Option<String>,
    pub(super) raw_payload: Option<i64>,
    pub(super) protocol: Option<String>,
}

impl HandlerRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(HandlerRow {
            id: row.get(0)?,
            send_spec: row.get(1)?,
            send_ident: row.get(2)?,
            recv_spec: row.get(3)?,
            recv_ident: row.get(4)?,
            raw_payload: row.get(5)?,
            protocol: row.get(6)?,
        })
    }
}

/// An open config database and its path, for error messages.
pub(super) struct Db<'p> {
    conn: Connection,
    path: &'p Path,
}

impl<'p> Db<'p> {
    pub(super) fn open(path: &'p Path) -> Result<Self> {
        let path_buf = || path.to_path_buf();
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing { path: path_buf() }.into());
            }
            Err(source) => {
                return Err(ConfigError::Unreadable {
                    path: path_buf(),
                    source,
                }
                .into());
            }
            Ok(meta) if meta.is_dir() => {
                return Err(ConfigError::IsDirectory { path: path_buf() }.into());
            }
            Ok(_) => {}
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| ConfigError::Sql {
            path: path_buf(),
            source: Box::new(e),
        })?;
        let db = Db { conn, path };
        // m2sh may be rewriting the file right now.
        db.conn
            .busy_timeout(Duration::from_secs(2))
            .map_err(|e| db.sql(e))?;

        let mut present = Vec::new();
        let mut stmt = db
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .map_err(|e| db.not_a_config(e))?;
        let names = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| db.not_a_config(e))?;
        for name in names {
            present.push(name.map_err(|e| db.not_a_config(e))?);
        }
        drop(stmt);
        if let Some(missing) = REQUIRED_TABLES
            .iter()
            .find(|t| !present.iter().any(|p| p == *t))
        {
            return Err(ConfigError::NotADatabase {
                path: path_buf(),
                missing_table: Some(missing),
            }
            .into());
        }
        Ok(db)
    }

    /// [`ConfigError::NotFound`] for `selector`.
    fn not_found_error(&self, selector: &HandlerSelector, reason: NotFoundReason) -> Error {
        ConfigError::NotFound {
            path: self.path.to_path_buf(),
            selector: selector.clone(),
            reason,
        }
        .into()
    }

    pub(super) fn missing_spec(&self, id: i64, field: &'static str) -> Error {
        ConfigError::MissingSpec {
            path: self.path.to_path_buf(),
            id,
            field,
        }
        .into()
    }

    fn sql(&self, e: rusqlite::Error) -> Error {
        ConfigError::Sql {
            path: self.path.to_path_buf(),
            source: Box::new(e),
        }
        .into()
    }

    fn not_a_config(&self, e: rusqlite::Error) -> Error {
        if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
            ConfigError::NotADatabase {
                path: self.path.to_path_buf(),
                missing_table: None,
            }
            .into()
        } else {
            self.sql(e)
        }
    }

    fn handlers(&self, sql: &str, params: impl Params) -> Result<Vec<HandlerRow>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params, HandlerRow::from_row)
            .map_err(|e| self.sql(e))?;
        let mut out: Vec<HandlerRow> = Vec::new();
        for row in rows {
            let row = row.map_err(|e| self.sql(e))?;
            if !out.iter().any(|r| r.id == row.id) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The one handler of `rows`; `None` if there is none, an error if there are several.
    fn unique(
        &self,
        mut rows: Vec<HandlerRow>,
        selector: &HandlerSelector,
    ) -> Result<Option<HandlerRow>> {
        match rows.len() {
            0 => Ok(None),
            1 => Ok(rows.pop()),
            _ => Err(ConfigError::Ambiguous {
                path: self.path.to_path_buf(),
                selector: selector.clone(),
                candidates: rows.iter().map(|r| r.id).collect(),
            }
            .into()),
        }
    }

    pub(super) fn select_handler(&self, selector: &HandlerSelector) -> Result<HandlerRow> {
        let rows = self.matching(selector)?;
        match self.unique(rows, selector)? {
            Some(row) => Ok(row),
            None => Err(self.not_found(selector)?),
        }
    }

    /// Every handler `selector` matches, in row order; an error when none does.
    pub(super) fn select_handlers(&self, selector: &HandlerSelector) -> Result<Vec<HandlerRow>> {
        let rows = self.matching(selector)?;
        if rows.is_empty() {
            return Err(self.not_found(selector)?);
        }
        Ok(rows)
    }

    /// The handler rows `selector` matches.
    fn matching(&self, selector: &HandlerSelector) -> Result<Vec<HandlerRow>> {
        Ok(match selector {
            HandlerSelector::Id(id) => self.handlers(
                &format!("SELECT {HANDLER_COLUMNS} FROM handler h WHERE h.id = ?1"),
                params![id],
            )?,
            HandlerSelector::SendIdent(ident) => self.handlers(
                &format!(
                    "SELECT {HANDLER_COLUMNS} FROM handler h WHERE h.send_ident = ?1 ORDER BY h.id"
                ),
                params![ident],
            )?,
            HandlerSelector::Route {
                server_uuid,
                host,
                path,
            } => self.handlers(
                &format!(
                    "SELECT {HANDLER_COLUMNS}
                     FROM server s
                     JOIN host ho ON ho.server_id = s.id
                     JOIN route r ON r.host_id = ho.id AND r.target_type = 'handler'
                     JOIN handler h ON h.id = r.target_id
                     WHERE s.uuid = ?1 AND ho.name = ?2 AND r.path = ?3
                     ORDER BY h.id"
                ),
                params![server_uuid, host, path],
            )?,
            HandlerSelector::RoutePath(path) => self.handlers(
                &format!(
                    "SELECT {HANDLER_COLUMNS}
                     FROM route r JOIN handler h ON h.id = r.target_id
                     WHERE r.target_type = 'handler' AND r.path = ?1
                     ORDER BY h.id"
                ),
                params![path],
            )?,
        })
    }

    /// Why `selector` found nothing, as precisely as the database can tell.
    fn not_found(&self, selector: &HandlerSelector) -> Result<Error> {
        Ok(match selector {
            HandlerSelector::Id(_) | HandlerSelector::SendIdent(_) => {
                self.not_found_error(selector, NotFoundReason::NoMatch)
            }
            HandlerSelector::Route {
                server_uuid,
                host,
                path,
            } => {
                if !self.exists("SELECT 1 FROM server WHERE uuid = ?1", params![server_uuid])? {
                    return Ok(self.not_found_error(selector, NotFoundReason::NoServer));
                }
                if !self.exists(
                    "SELECT 1 FROM host ho JOIN server s ON s.id = ho.server_id
                     WHERE s.uuid = ?1 AND ho.name = ?2",
                    params![server_uuid, host],
                )? {
                    return Ok(self.not_found_error(selector, NotFoundReason::NoHost));
                }
                let targets = self.route_targets(
                    "SELECT DISTINCT CAST(r.target_type AS TEXT), r.target_id
                     FROM route r
                     JOIN host ho ON ho.id = r.host_id
                     JOIN server s ON s.id = ho.server_id
                     WHERE s.uuid = ?1 AND ho.name = ?2 AND r.path = ?3",
                    params![server_uuid, host, path],
                )?;
                self.explain_targets(selector, &targets)
            }
            HandlerSelector::RoutePath(path) => {
                let targets = self.route_targets(
                    "SELECT DISTINCT CAST(target_type AS TEXT), target_id FROM route WHERE path = ?1",
                    params![path],
                )?;
                self.explain_targets(selector, &targets)
            }
        })
    }

    fn route_targets(
        &self,
        sql: &str,
        params: impl Params,
    ) -> Result<Vec<(Option<String>, Option<i64>)>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|e| self.sql(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))
    }

    /// The error for a route selector whose routes (`targets`) lead to no handler row.
    fn explain_targets(
        &self,
        selector: &HandlerSelector,
        targets: &[(Option<String>, Option<i64>)],
    ) -> Error {
        if targets.is_empty() {
            return self.not_found_error(selector, NotFoundReason::NoMatch);
        }
        if let Some((_, id)) = targets
            .iter()
            .find(|(t, _)| t.as_deref() == Some("handler"))
        {
            return self.not_found_error(selector, NotFoundReason::DanglingRoute(*id));
        }
        let kinds = targets
            .iter()
            .map(|(t, _)| t.clone().unwrap_or_else(|| "NULL".to_owned()))
            .collect();
        self.not_found_error(selector, NotFoundReason::NotAHandlerRoute(kinds))
    }

    fn exists(&self, sql: &str, params: impl Params) -> Result<bool> {
        self.conn
            .query_row(sql, params, |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| self.sql(e))
    }

    /// The single non-empty chroot the query returns, if it returns exactly one value.
    pub(super) fn one_chroot(&self, sql: &str, params: impl Params) -> Result<Option<PathBuf>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql(e))?;
        let values: Vec<Option<String>> = stmt
            .query_map(params, |row| row.get(0))
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.sql(e))?;
        Ok(match values.as_slice() {
            [Some(chroot)] if !chroot.is_empty() => Some(PathBuf::from(chroot)),
            _ => None,
        })
    }

    /// A setting's value as text, if the key is present (first row wins).
    pub(super) fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT CAST(value AS TEXT) FROM setting WHERE key = ?1 ORDER BY id LIMIT 1",
                params![key],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.sql(e))
    }
}
