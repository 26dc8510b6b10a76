//! Starting the embedded interpreter, flushing it at exit, and importing the application.

use super::{AppNameProblem, InitError, WsgiError};
use pyo3::exceptions::PyModuleNotFoundError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `sys.executable` of the interpreter this crate was built against (`PYO3_PYTHON` at build
/// time): the default `PyConfig.executable` when no virtualenv is active.
pub const BUILD_PYTHON: &str = env!("M2WSGI_PYTHON");

/// The interpreter whose prefix (and `pyvenv.cfg`) the embedded CPython adopts:
/// `$VIRTUAL_ENV/bin/python` when `VIRTUAL_ENV` is set and that file exists, else
/// [`BUILD_PYTHON`].
pub fn python_executable() -> PathBuf {
    active_virtualenv().map_or_else(|| PathBuf::from(BUILD_PYTHON), |v| v.join("bin/python"))
}

/// `$VIRTUAL_ENV` when it is set and has a `bin/python` (with a warning when it has none).
fn active_virtualenv() -> Option<PathBuf> {
    let venv = PathBuf::from(std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty())?);
    if venv.join("bin/python").exists() {
        return Some(venv);
    }
    tracing::warn!(
        "VIRTUAL_ENV={} has no bin/python; using {BUILD_PYTHON}",
        venv.display()
    );
    None
}

/// The virtualenv `exe` belongs to, as CPython finds it: the directory holding a `pyvenv.cfg`,
/// next to `exe` or one level up.
fn virtualenv_of(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .take(2)
        .find(|dir| !dir.as_os_str().is_empty() && dir.join("pyvenv.cfg").is_file())
        .map(Path::to_path_buf)
}

/// Whether CPython is initialised in this process.
pub fn is_initialized() -> bool {
    Python::try_attach(|_| ()).is_some()
}

/// Initialises CPython for embedding, once per process. Call it early, before any thread uses
/// Python.
///
/// `executable` is the interpreter CPython should believe it is (it derives `sys.prefix` and
/// honours a `pyvenv.cfg` next to it); `None` means [`python_executable`]. Python installs no
/// signal handlers (`install_signal_handlers = 0`): install Rust ones, before this call, since
/// the first `import signal` otherwise puts Python's SIGINT handler in place. On return the GIL is
/// released, so any thread may `Python::attach`.
///
/// Before that, the virtualenv the interpreter would adopt (`$VIRTUAL_ENV` for `None`, else the
/// one holding `executable`, if any) is checked against the embedded Python: a virtualenv made
/// for another major.minor is refused, since none of its packages could be imported. One that
/// names no version (no `version` or `version_info` in its `pyvenv.cfg`, no
/// `lib/pythonX.Y/site-packages`) is accepted with a warning.
///
/// Safe to call from several threads at once: the first call initialises the interpreter, the
/// others wait for it, and every call, later ones included, returns the first one's result
/// (a later call's `executable` is then ignored, with a warning if it differs).
///
/// # Errors
/// [`WsgiError::Virtualenv`] when the virtualenv is for another Python (nothing is
/// initialised then); [`WsgiError::Init`] when `Py_InitializeFromConfig` fails, or when Python
/// was initialised by something else than this function ([`InitError::AlreadyInitialized`]).
pub fn initialize(executable: Option<&Path>) -> Result<(), WsgiError> {
    static INIT: OnceLock<Result<PathBuf, WsgiError>> = OnceLock::new();
    let mut ran_here = false;
    let outcome = INIT.get_or_init(|| {
        ran_here = true;
        let (exe, venv) = match executable {
            Some(exe) => (exe.to_path_buf(), virtualenv_of(exe)),
            None => match active_virtualenv() {
                Some(venv) => (venv.join("bin/python"), Some(venv)),
                None => (PathBuf::from(BUILD_PYTHON), None),
            },
        };
        if let Some(venv) = &venv {
            super::venv::check_virtualenv(venv)?;
        }
        init_from_config(&exe)?;
        tracing::debug!("Python initialised as {}", exe.display());
        Ok(exe)
    });
    match outcome {
        Ok(first) => {
            if let Some(wanted) = executable.filter(|w| !ran_here && *w != first.as_path()) {
                tracing::warn!(
                    "Python is initialised already, as {}; {} is not used",
                    first.display(),
                    wanted.display()
                );
            }
            Ok(())
        }
        Err(e) => Err(e.clone()),
    }
}

/// The one FFI island of the crate: CPython's `PyConfig` initialisation protocol has no safe
/// wrapper in PyO3 (whose `Python::initialize` would look up `python3` on `PATH` and install
/// Python's signal handlers).
///
/// It runs at most once per process ([`initialize`] calls it through a `OnceLock`), before
/// any other thread uses Python (the caller's part of the contract).
#[allow(unsafe_code)]
fn init_from_config(exe: &Path) -> Result<(), InitError> {
    use pyo3::ffi;
    use std::os::unix::ffi::OsStrExt;

    /// `Ok` unless the status reports an error or an exit.
    ///
    /// # Safety
    /// `st` must be a status returned by CPython, unchanged.
    unsafe fn check(st: ffi::PyStatus, step: &'static str) -> Result<(), InitError> {
        // SAFETY: PyStatus_Exception and PyStatus_IsExit only read the struct they are given by
        // value; they need no interpreter.
        let (failed, exit) = unsafe { (ffi::PyStatus_Exception(st), ffi::PyStatus_IsExit(st)) };
        if failed == 0 {
            return Ok(());
        }
        if exit != 0 {
            return Err(InitError::Exit {
                step,
                code: st.exitcode,
            });
        }
        let text = |p: *const std::os::raw::c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: in a status from CPython (the caller's promise), `func` and `err_msg`
                // are NULL (handled above) or point to static NUL-terminated strings.
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            }
        };
        Err(InitError::Status {
            step,
            function: text(st.func),
            message: text(st.err_msg),
        })
    }

    let exe_c = std::ffi::CString::new(exe.as_os_str().as_bytes())
        .map_err(|_| InitError::NulInPath(exe.to_path_buf()))?;

    // SAFETY: Py_IsInitialized may be called at any time, before initialisation included.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Err(InitError::AlreadyInitialized);
    }
    let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
    let c = config.as_mut_ptr();
    // SAFETY: `c` points to writable, aligned, local memory the size of a PyConfig;
    // PyConfig_InitPythonConfig writes every field of it and needs no interpreter.
    unsafe { ffi::PyConfig_InitPythonConfig(c) };
    // SAFETY: `*c` is now an initialised PyConfig that nothing else can reach; these are plain
    // int fields.
    unsafe {
        // SIGINT/SIGTERM belong to Rust (Python's handler would turn SIGINT into
        // KeyboardInterrupt in whichever thread runs Python).
        (*c).install_signal_handlers = 0;
        // Do not parse our command line as Python's.
        (*c).parse_argv = 0;
    }
    // Derive sys.prefix (and honour pyvenv.cfg) from this interpreter, not from the first
    // `python3` on PATH.
    // SAFETY: `*c` is an initialised PyConfig and `executable` one of its string fields (its
    // address taken without an intermediate reference); `exe_c` is NUL-terminated and outlives
    // the call, which decodes and copies it.
    let st = unsafe {
        ffi::PyConfig_SetBytesString(c, std::ptr::addr_of_mut!((*c).executable), exe_c.as_ptr())
    };
    // SAFETY: `st` was just returned by CPython.
    if let Err(e) = unsafe { check(st, "PyConfig_SetBytesString(executable)") } {
        // SAFETY: frees what the initialised config owns, once; `c` is not used after this.
        unsafe { ffi::PyConfig_Clear(c) };
        return Err(e);
    }
    // SAFETY: no interpreter exists (checked above; this runs at most once, before any other
    // thread uses Python) and `*c` is a complete, initialised config, which CPython reads
    // and copies what it keeps from.
    let st = unsafe { ffi::Py_InitializeFromConfig(c) };
    // SAFETY: frees what the config owns, once, after CPython copied it; `c` is not used after.
    unsafe { ffi::PyConfig_Clear(c) };
    // SAFETY: `st` was just returned by CPython.
    unsafe { check(st, "Py_InitializeFromConfig") }?;
    // SAFETY: Py_InitializeFromConfig succeeded, so this thread holds the GIL, as
    // PyEval_SaveThread requires. Releasing it lets other threads attach. The thread state it
    // returns stays registered for this thread (a later attach here reuses it), so it need not
    // be kept.
    unsafe { ffi::PyEval_SaveThread() };
    Ok(())
}

/// Flushes Python's `sys.stdout` and `sys.stderr`. The interpreter is never finalised (that
/// would wait for the application's threads), so call this before the process exits, or
/// buffered output such as a `print()` without a newline is lost. Does nothing when Python is
/// not initialised.
pub fn flush_stdio() {
    let _ = Python::try_attach(|py| {
        let Ok(sys) = py.import("sys") else { return };
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                if !stream.is_none() {
                    if let Err(e) = stream.call_method0("flush") {
                        tracing::warn!("flushing sys.{name}: {e}");
                    }
                }
            }
        }
    });
}

/// What a normal interpreter exit would do, short of finalising it: runs the application's
/// `atexit` handlers (`logging` flushes its handlers there, for one), then [`flush_stdio`].
/// The interpreter is never finalised, since that would wait for the application's threads.
/// Call it once, as the process ends. Does nothing when Python is not initialised.
pub fn run_exit_handlers() {
    let _ = Python::try_attach(|py| {
        let ran = py
            .import("atexit")
            .and_then(|m| m.call_method0("_run_exitfuncs"));
        if let Err(e) = ran {
            tracing::warn!("running atexit handlers: {}", format_exception(py, &e));
        }
    });
    flush_stdio();
}

/// A few lines describing the embedded interpreter: version, `sys.executable`, `sys.prefix`,
/// the `libpython` mapped into this process, and `sys.path`. For `m2wsgi --python-info`.
///
/// # Panics
/// If Python is not initialised.
pub fn python_info() -> String {
    let libpython = std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("libpython"))
        .unwrap_or("(none: statically linked?)")
        .to_string();
    Python::attach(|py| {
        let get = |expr: &std::ffi::CStr| -> String {
            py.eval(expr, None, None)
                .and_then(|v| v.str().map(|s| s.to_string()))
                .unwrap_or_else(|e| format!("<{e}>"))
        };
        format!(
            "python: {}\nexecutable: {}\nprefix: {}\nbase_prefix: {}\nlibpython: {libpython}\n\
             build_python: {BUILD_PYTHON}\npath: {}\n",
            get(c"__import__('sys').version.split()[0]"),
            get(c"__import__('sys').executable"),
            get(c"__import__('sys').prefix"),
            get(c"__import__('sys').base_prefix"),
            get(c"__import__('os').pathsep.join(__import__('sys').path)"),
        )
    })
}

/// Formats a Python exception with its traceback, as `traceback.format_exception` does.
pub(crate) fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        let lines = tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let text: String = pyo3::types::PyString::new(py, "")
            .call_method1("join", (lines,))?
            .extract()?;
        Ok(text)
    });
    match formatted {
        Ok(t) => t.trim_end().to_string(),
        Err(_) => err.to_string(),
    }
}

/// The name of an object's Python type, for error messages (`?` if it has none).
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn is_dotted(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
                && chars.all(|c| c == '_' || c.is_alphanumeric())
        })
}

/// Imports the WSGI application `name`.
///
/// Accepted forms: `pkg.mod:attr` (the attribute may be dotted: `pkg.mod:factory.app`),
/// `pkg.mod.attr` (the form the Python m2wsgi takes: the module if one of that name exists,
/// else the last part is an attribute), and `pkg.mod` (then its `application`, else its `app`).
/// The directories in `sys_path` are put at the front of `sys.path` first, in order (pass the
/// working directory to make modules there importable).
///
/// # Errors
/// [`WsgiError::ModuleNotFound`] when the module does not exist, told apart from
/// [`WsgiError::ImportFailed`] when it exists but raises while importing (including an
/// `ImportError` for one of its own imports); [`WsgiError::NoAttribute`],
/// [`WsgiError::NotCallable`], [`WsgiError::BadAppName`].
///
/// # Panics
/// If Python is not initialised.
pub fn load_app(name: &str, sys_path: &[PathBuf]) -> Result<Py<PyAny>, WsgiError> {
    Python::attach(|py| {
        prepend_sys_path(py, sys_path)?;
        let (obj, shown) = if let Some((module, attr)) = name.split_once(':') {
            if !is_dotted(module) || !is_dotted(attr) {
                return Err(bad_name(name));
            }
            let m = import(py, name, module)?;
            (get_attr_path(&m, module, attr)?, name.to_string())
        } else {
            if !is_dotted(name) {
                return Err(bad_name(name));
            }
            match import(py, name, name) {
                Ok(m) => {
                    let mut found = None;
                    for attr in ["application", "app"] {
                        if let Ok(v) = m.getattr(attr) {
                            found = Some((v, format!("{name}:{attr}")));
                            break;
                        }
                    }
                    found.ok_or_else(|| WsgiError::NoAttribute {
                        module: name.to_string(),
                        attr: "`application` (nor `app`)".to_string(),
                    })?
                }
                Err(WsgiError::ModuleNotFound { module, .. })
                    if module == name && name.contains('.') =>
                {
                    let (module, attr) = name.rsplit_once('.').unwrap_or((name, ""));
                    let m = import(py, name, module)?;
                    (get_attr_path(&m, module, attr)?, format!("{module}:{attr}"))
                }
                Err(e) => return Err(e),
            }
        };
        if !obj.is_callable() {
            return Err(WsgiError::NotCallable {
                name: shown,
                type_name: type_name(&obj),
            });
        }
        tracing::debug!("loaded application {shown}");
        Ok(obj.unbind())
    })
}

fn bad_name(name: &str) -> WsgiError {
    let reason = if name.ends_with(".py") || name.contains('/') {
        AppNameProblem::FilePath
    } else {
        AppNameProblem::NotDotted
    };
    WsgiError::BadAppName {
        name: name.to_string(),
        reason,
    }
}

fn prepend_sys_path(py: Python<'_>, dirs: &[PathBuf]) -> Result<(), WsgiError> {
    let path = py
        .import("sys")
        .and_then(|s| s.getattr("path"))
        .and_then(|p| p.cast_into::<PyList>().map_err(Into::into))
        .map_err(|e| WsgiError::Python(e.to_string()))?;
    for (i, dir) in dirs.iter().enumerate() {
        let d = dir.to_string_lossy().into_owned();
        let present = path.contains(&d).unwrap_or(false);
        if present {
            let _ = path.call_method1("remove", (&d,));
        }
        path.insert(i, d)
            .map_err(|e| WsgiError::Python(e.to_string()))?;
    }
    Ok(())
}

fn import<'py>(
    py: Python<'py>,
    app: &str,
    module: &str,
) -> Result<Bound<'py, PyModule>, WsgiError> {
    py.import(module).map_err(|e| {
        if e.is_instance_of::<PyModuleNotFoundError>(py) {
            let missing: Option<String> = e
                .value(py)
                .getattr("name")
                .ok()
                .and_then(|n| n.extract().ok());
            if let Some(missing) = missing {
                if module == missing || module.starts_with(&format!("{missing}.")) {
                    let sys_path = py
                        .eval(c"repr(__import__('sys').path)", None, None)
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    return WsgiError::ModuleNotFound {
                        app: app.to_string(),
                        module: missing,
                        sys_path,
                    };
                }
            }
        }
        WsgiError::ImportFailed {
            module: module.to_string(),
            traceback: format_exception(py, &e),
        }
    })
}

fn get_attr_path<'py>(
    m: &Bound<'py, PyModule>,
    module: &str,
    attr: &str,
) -> Result<Bound<'py, PyAny>, WsgiError> {
    let mut obj = m.clone().into_any();
    for part in attr.split('.') {
        obj = obj.getattr(part).map_err(|_| WsgiError::NoAttribute {
            module: module.to_string(),
            attr: format!("`{attr}`"),
        })?;
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn dotted_names() {
        assert!(is_dotted("a"));
        assert!(is_dotted("pkg.mod_1.x"));
        assert!(is_dotted("_private.app"));
        assert!(!is_dotted(""));
        assert!(!is_dotted("a..b"));
        assert!(!is_dotted("1abc"));
        assert!(!is_dotted("app.py/x"));
        assert!(!is_dotted("a.b."));
    }

    /// Two threads initialise at the same moment: one does it, both get its result, and the
    /// interpreter works.
    #[test]
    fn initialize_from_two_threads_at_once() {
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    initialize(None)
                })
            })
            .collect();
        for t in threads {
            let r = t.join().expect("initialize panicked");
            assert!(r.is_ok(), "{r:?}");
        }
        assert!(is_initialized());
        assert!(
            initialize(None).is_ok(),
            "a later call gets the same result"
        );
        let two: i64 = Python::attach(|py| py.eval(c"1 + 1", None, None)?.extract()).unwrap();
        assert_eq!(two, 2);
    }

    #[test]
    fn load_app_errors() {
        initialize(None).expect("initialise Python");
        let apps = [Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")];
        let err = |name: &str| load_app(name, &apps).expect_err(name);
        assert!(matches!(
            err("m2wsgi_no_such_module"),
            WsgiError::ModuleNotFound { module, .. } if module == "m2wsgi_no_such_module"
        ));
        assert!(matches!(
            err("broken_import"),
            WsgiError::ImportFailed { module, .. } if module == "broken_import"
        ));
        assert!(matches!(
            err("probe:nothing_here"),
            WsgiError::NoAttribute { module, .. } if module == "probe"
        ));
        assert!(matches!(
            err("probe:CLOSED"),
            WsgiError::NotCallable { type_name, .. } if type_name == "dict"
        ));
        assert!(matches!(
            err("apps/probe.py"),
            WsgiError::BadAppName {
                reason: AppNameProblem::FilePath,
                ..
            }
        ));
        assert!(matches!(
            err("1probe"),
            WsgiError::BadAppName {
                reason: AppNameProblem::NotDotted,
                ..
            }
        ));
        assert!(load_app("probe:application", &apps).is_ok());
    }
}
