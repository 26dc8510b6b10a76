//! The bridge's errors: starting Python and importing the application.

use std::fmt;
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
    /// The virtualenv was made for another Python than the one embedded; refused before
    /// Python is initialised.
    #[error(transparent)]
    Virtualenv(#[from] VenvError),
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

/// A virtualenv that cannot work with the embedded Python ([`WsgiError::Virtualenv`]).
///
/// A virtualenv belongs to one Python major.minor: its packages live in `lib/pythonX.Y/`, and
/// compiled extensions are built for that version's ABI. [`initialize`](super::initialize)
/// checks this before starting the interpreter, so that a mismatch is reported as such rather
/// than as a `ModuleNotFoundError` while the application is imported.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VenvError {
    /// The virtualenv is for another Python major.minor than the embedded interpreter.
    #[error(
        "the virtualenv {} is for Python {venv_python} ({found_in}), but this m2wsgi embeds \
         Python {embedded_full}: recreate the venv with python{embedded}, or rebuild m2wsgi \
         with PYO3_PYTHON pointing at a {venv_python} interpreter",
        venv.display()
    )]
    Mismatch {
        /// The virtualenv's directory.
        venv: PathBuf,
        /// The Python the virtualenv was made for.
        venv_python: PyVersion,
        /// Where that version was read.
        found_in: VersionSource,
        /// The embedded interpreter's major.minor.
        embedded: PyVersion,
        /// The embedded interpreter's full version, as `sys.version` starts (`3.11.7`).
        embedded_full: String,
    },
}

/// A Python major.minor version (`3.12`): what a virtualenv is tied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PyVersion {
    /// `3` in `3.12`.
    pub major: u32,
    /// `12` in `3.12`.
    pub minor: u32,
}

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Where a virtualenv's Python version was read ([`VenvError::Mismatch`]).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// A key of its `pyvenv.cfg`: `version` (written by the standard library's `venv`) or
    /// `version_info` (written by uv and virtualenv).
    PyvenvCfg {
        /// The key.
        key: String,
    },
    /// The name of its `lib/pythonX.Y/site-packages` directory (`python3.12`), used when
    /// `pyvenv.cfg` names no version.
    LibDir {
        /// The directory's name under `lib/`.
        name: String,
    },
}

impl fmt::Display for VersionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSource::PyvenvCfg { .. } => f.write_str("its pyvenv.cfg"),
            VersionSource::LibDir { name } => write!(f, "its lib/{name}/site-packages"),
        }
    }
}
