//! [`ConfigError`]: why a handler could not be loaded from the config database.

use super::HandlerSelector;
use crate::Error;
use std::error::Error as StdError;
use std::path::PathBuf;

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
