//! The bridge's errors: starting Python and importing the application.

use std::path::PathBuf;

/// What can go wrong starting the bridge: initialising Python or importing the application.
///
/// It converts into the crate's [`Error`](crate::Error) (as
/// [`Error::Wsgi`](crate::Error::Wsgi)), so `?` works in functions returning
/// [`m2wsgi::Result`](crate::Result).
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum WsgiError {
    /// CPython could not be initialised.
    #[error("cannot initialise Python: {0}")]
    Init(#[from] InitError),
    /// Python is not initialised: [`initialize`](super::initialize) was not called, or failed.
    #[error("Python is not initialised: call m2wsgi::wsgi::initialize first")]
    NotInitialized,
    /// The application name is not of a form [`load_app`](super::load_app) understands.
    #[error("bad application name {name:?}: {reason}")]
    BadAppName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: AppNameProblem,
    },
    /// The application's module (or a package above it) does not exist.
    #[error("no module named {module:?} (looked for application {app:?}; sys.path = {sys_path})")]
    ModuleNotFound {
        /// The application name as given.
        app: String,
        /// The module that is missing.
        module: String,
        /// `sys.path` at the time, for the error message.
        sys_path: String,
    },
    /// The application's module exists, but importing it raised (an `ImportError` of one of
    /// its own imports, a `SyntaxError`, anything).
    #[error("importing {module:?} raised an exception:\n{traceback}")]
    ImportFailed {
        /// The module being imported.
        module: String,
        /// The formatted Python traceback.
        traceback: String,
    },
    /// The module has no such attribute (or, for a bare module name, neither `application`
    /// nor `app`).
    #[error("module {module:?} has no attribute {attr}")]
    NoAttribute {
        /// The module.
        module: String,
        /// The attribute(s) looked for, quoted with backticks.
        attr: String,
    },
    /// The object found is not callable.
    #[error("{name} is not callable (it is a {type_name})")]
    NotCallable {
        /// The application name.
        name: String,
        /// Its Python type.
        type_name: String,
    },
    /// Python raised while the bridge was setting things up (putting directories on
    /// `sys.path`): the exception's text.
    #[error("Python error: {0}")]
    Python(String),
}

/// Why an application name was refused ([`WsgiError::BadAppName`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppNameProblem {
    /// It looks like a file path (`app.py`, `dir/app`).
    #[error(
        "give a dotted module name (pkg.module:app), not a file path; add its directory with \
         --pythonpath or --chdir"
    )]
    FilePath,
    /// It is not made of dotted Python identifiers.
    #[error("expected pkg.module:attribute, pkg.module.attribute or pkg.module")]
    NotDotted,
}

/// Why CPython could not be initialised ([`WsgiError::Init`]).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The interpreter path holds a NUL byte, which CPython cannot take.
    #[error("interpreter path {} contains a NUL byte", .0.display())]
    NulInPath(PathBuf),
    /// Python was initialised in this process by something else than
    /// [`initialize`](super::initialize).
    #[error("Python is already initialised in this process")]
    AlreadyInitialized,
    /// A step of CPython's `PyConfig` initialisation failed.
    #[error("{step}: {function} {message}")]
    Status {
        /// The CPython call that failed.
        step: &'static str,
        /// The CPython function that reported it.
        function: String,
        /// CPython's message.
        message: String,
    },
    /// CPython asked for the process to exit during initialisation.
    #[error("{step}: the interpreter asked to exit ({code})")]
    Exit {
        /// The CPython call that failed.
        step: &'static str,
        /// The exit status CPython asked for.
        code: i32,
    },
}
