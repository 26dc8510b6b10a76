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

mod db;
mod error;

pub use error::{ConfigError, NotFoundReason};

use crate::{Error, HeaderProtocol, Result};
use db::{Db, HandlerRow};
use rusqlite::params;
use std::fmt;
use std::path::{Path, PathBuf};

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
    config_of(&db, row, selector)
}

/// Loads every handler `selector` matches, in row order. With
/// [`HandlerSelector::SendIdent`] these are the handlers of every server that routes to one
/// handler process: each Mongrel2 server has its own handler row (its own sockets) with the
/// same `send_ident`. A handler takes requests from all of them and answers each on its own
/// server ([`Server::also`](crate::Server::also)). Other selectors name one handler, as with
/// [`load_handler`] (a route path shared by several handlers may lead to different
/// applications, so it stays an error).
///
/// # Errors
/// As [`load_handler`], except that several handlers sharing a send_ident are not an error.
pub fn load_handlers(
    db: impl AsRef<Path>,
    selector: &HandlerSelector,
) -> Result<Vec<HandlerConfig>> {
    let db = Db::open(db.as_ref())?;
    let rows = match selector {
        HandlerSelector::SendIdent(_) => db.select_handlers(selector)?,
        _ => vec![db.select_handler(selector)?],
    };
    rows.into_iter()
        .map(|row| config_of(&db, row, selector))
        .collect()
}

/// One handler row with the settings around it.
fn config_of(db: &Db, row: HandlerRow, selector: &HandlerSelector) -> Result<HandlerConfig> {
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
    use rusqlite::Connection;

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
