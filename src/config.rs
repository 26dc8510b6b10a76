//! Reading a handler's settings from Mongrel2's config database (the sqlite file `m2sh load`
//! writes), so a handler can be started with nothing but that file and a handler name.
//!
//! ```no_run
//! use m2wsgi::config::{load_handler, HandlerSelector};
//!
//! let cfg = load_handler(
//!     "config.sqlite",
//!     &HandlerSelector::SendIdent("34f9ceee-cd52-4b7f-b197-88bf2f0ec378".into()),
//! )?;
//! println!("pull from {}, publish to {}", cfg.send_spec, cfg.recv_spec);
//! # Ok::<(), m2wsgi::Error>(())
//! ```
//!
//! The database is opened read-only and queried with bound parameters only. Tables and columns are
//! the ones Mongrel2 1.12 reads (see the handler, route, host, server and setting tables that
//! `m2sh load` creates); the `route` table has no server id, so routes are joined to servers
//! through `host`.

use crate::{Error, HeaderProtocol, Result};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Params};
use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which handler of the config database to load.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HandlerSelector {
    /// The row id in the `handler` table.
    Id(i64),
    /// The handler's `send_ident`: the UUID it is usually configured with.
    SendIdent(String),
    /// The handler that one route of one host of one server points to.
    Route {
        /// The server's `uuid` (what `mongrel2 config.sqlite UUID` is started with).
        server_uuid: String,
        /// The host's `name`.
        host: String,
        /// The route's path pattern exactly as configured, such as `/handler` or `@chat`.
        path: String,
    },
    /// The handler behind a route path on any server and host. An error if the path leads to
    /// more than one handler; use [`HandlerSelector::Route`] then.
    RoutePath(String),
}

impl fmt::Display for HandlerSelector {
    /// How the selector reads in error messages: `send_ident "…"`, `route "/p" on host "h" of
    /// server "u"`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerSelector::Id(id) => write!(f, "handler id {id}"),
            HandlerSelector::SendIdent(ident) => write!(f, "send_ident {ident:?}"),
            HandlerSelector::Route {
                server_uuid,
                host,
                path,
            } => write!(
                f,
                "route {path:?} on host {host:?} of server {server_uuid:?}"
            ),
            HandlerSelector::RoutePath(path) => write!(f, "route path {path:?}"),
        }
    }
}

/// One handler's configuration, with the global settings that change what it receives.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// The handler's row id in the `handler` table.
    pub id: i64,
    /// Where Mongrel2 binds its PUSH socket; the handler connects its PULL socket here
    /// (`tcp://127.0.0.1:9999`), exactly as stored.
    pub send_spec: String,
    /// Mongrel2's identity on that PUSH socket; handlers conventionally use it as their UUID.
    /// Empty if unset.
    pub send_ident: String,
    /// Where Mongrel2 binds its SUB socket; the handler connects its PUB socket here, exactly as
    /// stored.
    pub recv_spec: String,
    /// The prefix Mongrel2's SUB socket subscribes to: when not empty, every reply must start
    /// with it or ZeroMQ drops it. Empty if unset (the usual case: everything gets through).
    pub recv_ident: String,
    /// `raw_payload=1`: JSON/XML socket replies are sent as they are instead of base64-decoded.
    pub raw_payload: bool,
    /// How request headers are encoded: [`HeaderProtocol::Tnetstring`] when the `protocol` column
    /// is exactly `tnetstring`, [`HeaderProtocol::Json`] for anything else (Mongrel2's default).
    pub protocol: HeaderProtocol,
    /// The `chroot` of the server(s) routing to this handler, which Mongrel2's file paths (upload
    /// temp files) are relative to. With [`HandlerSelector::Route`] it is that route's server's;
    /// otherwise it is known only when every server with a handler route to this handler has the
    /// same chroot. `None` when no server routes to it, when they disagree, or when it is empty.
    /// A relative chroot (`./`) is relative to the directory Mongrel2 was started in.
    pub chroot: Option<PathBuf>,
    /// The `upload.temp_store` setting: the `mkstemp` template (ending in `XXXXXX`) for request
    /// bodies larger than [`content_length_limit`](Self::content_length_limit). `None` when not
    /// set, in which case Mongrel2 answers such requests with 413 itself.
    pub upload_temp_store: Option<String>,
    /// The directory part of `upload.temp_store` as Mongrel2 sees it (inside its chroot), e.g.
    /// `/tmp` for `/tmp/upload.XXXXXX`, or `.` for a bare file name: the only directory upload
    /// paths in `x-mongrel2-upload-start`/`-done` should point into.
    pub upload_dir: Option<PathBuf>,
    /// `upload.stream` is non-zero: large bodies arrive as a stream of messages gated by upload
    /// credits instead of through a temp file.
    pub upload_stream: bool,
    /// `download.flow_control` is non-zero: Mongrel2 reports download credits and the handler
    /// should pace large responses by them.
    pub flow_control: bool,
    /// The `limits.content_length` setting: bodies longer than this many bytes go through an
    /// async or streamed upload. `None` when not set (Mongrel2 then uses 20480). A negative value
    /// reads as 0.
    pub content_length_limit: Option<u64>,
}

/// Loads the handler `selector` names from the Mongrel2 config database at `db`.
///
/// The file is opened read-only. Settings are read as Mongrel2 reads them (`atoi`: `"1"` and
/// `"1 "` are 1, anything that does not start with a number is 0); if a key appears more than
/// once, the first row wins.
///
/// # Errors
///
/// [`Error::Config`] when the file does not exist or is not a Mongrel2 config database, when no
/// handler matches (the message says what was looked for, in which file, and for a route which
/// part is missing: the server, the host, the route, or a route that is not a handler route),
/// when a send_ident or route path matches several different handlers, when the handler row has
/// no `send_spec` or `recv_spec`, or when sqlite fails.
pub fn load_handler(db: impl AsRef<Path>, selector: &HandlerSelector) -> Result<HandlerConfig> {
    let db = Db::open(db.as_ref())?;
    let row = db.select_handler(selector)?;
    let chroot = match selector {
        HandlerSelector::Route { server_uuid, .. } => db.one_chroot(
            "SELECT DISTINCT CAST(chroot AS TEXT) FROM server WHERE uuid = ?1",
            params![server_uuid],
        )?,
        _ => db.one_chroot(
            "SELECT DISTINCT CAST(s.chroot AS TEXT)
             FROM route r
             JOIN host ho ON ho.id = r.host_id
             JOIN server s ON s.id = ho.server_id
             WHERE r.target_type = 'handler' AND r.target_id = ?1",
            params![row.id],
        )?,
    };

    let send_spec = row
        .send_spec
        .filter(|s| !s.is_empty())
        .ok_or_else(|| db.missing_spec(row.id, "send_spec"))?;
    let recv_spec = row
        .recv_spec
        .filter(|s| !s.is_empty())
        .ok_or_else(|| db.missing_spec(row.id, "recv_spec"))?;

    let upload_temp_store = db.setting("upload.temp_store")?;
    let upload_dir = upload_temp_store.as_deref().and_then(upload_dir);
    let int_setting = |key| Ok::<_, Error>(db.setting(key)?.map(|v| atoi(&v)));
    Ok(HandlerConfig {
        id: row.id,
        send_spec,
        send_ident: row.send_ident.unwrap_or_default(),
        recv_spec,
        recv_ident: row.recv_ident.unwrap_or_default(),
        raw_payload: row.raw_payload.is_some_and(|v| v != 0),
        protocol: match row.protocol.as_deref() {
            Some("tnetstring") => HeaderProtocol::Tnetstring,
            _ => HeaderProtocol::Json,
        },
        chroot,
        upload_temp_store,
        upload_dir,
        upload_stream: int_setting("upload.stream")?.is_some_and(|v| v != 0),
        flow_control: int_setting("download.flow_control")?.is_some_and(|v| v != 0),
        content_length_limit: int_setting("limits.content_length")?
            .map(|v| u64::try_from(v).unwrap_or(0)),
    })
}

/// Why a handler could not be loaded from Mongrel2's config database. Every variant names the
/// database file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error("config database {} not found", .path.display())]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// The file cannot be read.
    #[error("cannot read config database {}: {source}", .path.display())]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The path is a directory.
    #[error("config database {} is a directory", .path.display())]
    IsDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The file is not an sqlite database, or lacks a table Mongrel2's config has.
    #[error("{} is not a Mongrel2 config database ({})", .path.display(), match .missing_table {
        Some(t) => format!("it has no {t} table"),
        None => "sqlite cannot read it".to_owned(),
    })]
    NotADatabase {
        /// The database file.
        path: PathBuf,
        /// The first required table it lacks, when it is an sqlite file.
        missing_table: Option<&'static str>,
    },
    /// No handler matches the selector.
    #[error("{} in {}", not_found_text(.selector, .reason), .path.display())]
    NotFound {
        /// The database file.
        path: PathBuf,
        /// What was looked for.
        selector: HandlerSelector,
        /// What exactly is missing.
        reason: NotFoundReason,
    },
    /// The selector matches several different handlers.
    #[error("{selector} matches several different handlers (ids {}) in {}; select it by {}",
        .candidates.iter().map(i64::to_string).collect::<Vec<_>>().join(", "), .path.display(),
        if matches!(.selector, HandlerSelector::RoutePath(_)) {
            "server, host and path (HandlerSelector::Route) or by id"
        } else {
            "id"
        })]
    Ambiguous {
        /// The database file.
        path: PathBuf,
        /// What was looked for.
        selector: HandlerSelector,
        /// The ids of the handlers it matches, ascending.
        candidates: Vec<i64>,
    },
    /// The handler row lacks a socket spec.
    #[error("handler id {id} has no {field} in {}", .path.display())]
    MissingSpec {
        /// The database file.
        path: PathBuf,
        /// The handler's id.
        id: i64,
        /// `send_spec` or `recv_spec`.
        field: &'static str,
    },
    /// sqlite failed.
    #[error("reading {}: {source}", .path.display())]
    Sql {
        /// The database file.
        path: PathBuf,
        /// sqlite's error.
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// What a [`ConfigError::NotFound`] did not find.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFoundReason {
    /// Nothing matches (no such id, send_ident, or route).
    NoMatch,
    /// No server has the selector's uuid.
    NoServer,
    /// The server has no host of the selector's name.
    NoHost,
    /// The route points to a handler id that does not exist (`None`: NULL).
    DanglingRoute(Option<i64>),
    /// The route leads to something other than a handler (`dir`, `proxy`, ...).
    NotAHandlerRoute(Vec<String>),
}

fn not_found_text(selector: &HandlerSelector, reason: &NotFoundReason) -> String {
    match (selector, reason) {
        (HandlerSelector::Id(id), _) => format!("no handler with id {id}"),
        (HandlerSelector::SendIdent(ident), _) => format!("no handler with send_ident {ident:?}"),
        (HandlerSelector::Route { server_uuid, .. }, NotFoundReason::NoServer) => {
            format!("no server with uuid {server_uuid:?}")
        }
        (
            HandlerSelector::Route {
                server_uuid, host, ..
            },
            NotFoundReason::NoHost,
        ) => format!("server {server_uuid:?} has no host named {host:?}"),
        (_, NotFoundReason::DanglingRoute(id)) => {
            let id = id.map_or_else(|| "NULL".to_owned(), |id| id.to_string());
            format!("{selector} points to handler id {id}, which does not exist")
        }
        (_, NotFoundReason::NotAHandlerRoute(kinds)) => {
            format!(
                "{selector} is a {} route, not a handler route",
                kinds.join("/")
            )
        }
        _ => format!("no {selector}"),
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(Box::new(e))
    }
}

/// The tables this module reads; a file without them is not a Mongrel2 config.
const REQUIRED_TABLES: [&str; 5] = ["handler", "route", "host", "server", "setting"];

/// The handler columns, in [`HandlerRow`] order, for a query that names the table `h`. The casts
/// keep hand-edited rows with odd column types readable.
const HANDLER_COLUMNS: &str = "h.id, CAST(h.send_spec AS TEXT), CAST(h.send_ident AS TEXT), \
     CAST(h.recv_spec AS TEXT), CAST(h.recv_ident AS TEXT), CAST(h.raw_payload AS INTEGER), \
     CAST(h.protocol AS TEXT)";

/// One row of the `handler` table, NULLs kept.
struct HandlerRow {
    id: i64,
    send_spec: Option<String>,
    send_ident: Option<String>,
    recv_spec: Option<String>,
    recv_ident: Option<String>,
    raw_payload: Option<i64>,
    protocol: Option<String>,
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
struct Db<'p> {
    conn: Connection,
    path: &'p Path,
}

impl<'p> Db<'p> {
    fn open(path: &'p Path) -> Result<Self> {
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

    fn missing_spec(&self, id: i64, field: &'static str) -> Error {
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

    fn select_handler(&self, selector: &HandlerSelector) -> Result<HandlerRow> {
        let rows = match selector {
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
        };
        match self.unique(rows, selector)? {
            Some(row) => Ok(row),
            None => Err(self.not_found(selector)?),
        }
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
    fn one_chroot(&self, sql: &str, params: impl Params) -> Result<Option<PathBuf>> {
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
    fn setting(&self, key: &str) -> Result<Option<String>> {
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

/// The directory of an `mkstemp` template: `/tmp` for `/tmp/upload.XXXXXX`, `.` for a bare name.
fn upload_dir(temp_store: &str) -> Option<PathBuf> {
    let parent = Path::new(temp_store).parent()?;
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_path_buf()
    })
}

/// C's `atoi`, as Mongrel2's `Setting_get_int` uses it: leading whitespace, an optional sign, then
/// as many digits as there are; 0 when there are none. Saturates instead of overflowing.
fn atoi(s: &str) -> i64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |n, d| {
            n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if negative {
        -n
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    //! Tests that need no Mongrel2. The ones that load a config with the real `m2sh` are in
    //! `tests/e2e_config.rs` (feature `e2e`).
    use super::*;

    fn config_err(db: &Path, selector: &HandlerSelector) -> ConfigError {
        match load_handler(db, selector) {
            Err(Error::Config(e)) => *e,
            other => panic!("{selector}: expected Error::Config, got {other:?}"),
        }
    }

    fn config_error(db: &Path, selector: &HandlerSelector) -> String {
        config_err(db, selector).to_string()
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nope.sqlite");
        let msg = config_error(&db, &HandlerSelector::Id(1));
        assert_eq!(msg, format!("config database {} not found", db.display()));
        assert!(!db.exists(), "a read-only open must not create the file");

        assert!(matches!(
            config_err(dir.path(), &HandlerSelector::Id(1)),
            ConfigError::IsDirectory { .. }
        ));
        let msg = config_error(dir.path(), &HandlerSelector::Id(1));
        assert_eq!(
            msg,
            format!("config database {} is a directory", dir.path().display())
        );
    }

    #[test]
    fn not_a_config_database() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(
            &junk,
            b"tcp://127.0.0.1:9999 is not sqlite, just some text ...........",
        )
        .unwrap();
        assert!(matches!(
            config_err(&junk, &HandlerSelector::Id(1)),
            ConfigError::NotADatabase {
                missing_table: None,
                ..
            }
        ));
        let msg = config_error(&junk, &HandlerSelector::Id(1));
        assert!(
            msg.starts_with(&format!(
                "{} is not a Mongrel2 config database",
                junk.display()
            )),
            "{msg}"
        );

        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            config_err(&empty, &HandlerSelector::Id(1)),
            ConfigError::NotADatabase {
                missing_table: Some("handler"),
                ..
            }
        ));
        let msg = config_error(&empty, &HandlerSelector::Id(1));
        assert_eq!(
            msg,
            format!(
                "{} is not a Mongrel2 config database (it has no handler table)",
                empty.display()
            )
        );

        let other = dir.path().join("other.sqlite");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE handler (id INTEGER PRIMARY KEY, send_spec TEXT);")
            .unwrap();
        let msg = config_error(&other, &HandlerSelector::Id(1));
        assert_eq!(
            msg,
            format!(
                "{} is not a Mongrel2 config database (it has no route table)",
                other.display()
            )
        );
    }

    #[test]
    fn atoi_table() {
        let table = [
            ("1", 1),
            ("0", 0),
            ("", 0),
            ("  42abc", 42),
            ("+7", 7),
            ("-20", -20),
            ("yes", 0),
            ("- 1", 0),
            ("99999999999999999999999", i64::MAX),
        ];
        for (input, want) in table {
            assert_eq!(atoi(input), want, "{input:?}");
        }
    }

    #[test]
    fn upload_dir_table() {
        let table = [
            ("/tmp/upload.XXXXXX", Some("/tmp")),
            ("tmp/up.XXXXXX", Some("tmp")),
            ("upload.XXXXXX", Some(".")),
            ("/upload.XXXXXX", Some("/")),
            ("", None),
        ];
        for (input, want) in table {
            assert_eq!(upload_dir(input), want.map(PathBuf::from), "{input:?}");
        }
    }

    #[test]
    fn public_types_are_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<HandlerConfig>();
        assert_send_sync::<HandlerSelector>();
    }
}
