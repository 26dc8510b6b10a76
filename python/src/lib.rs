//! `m2wsgi._m2wsgi`: the library's WSGI server for a process where Python is the host (the
//! `m2wsgi` console script, `python -m m2wsgi`, and `m2wsgi.serve` from code).
//!
//! No code of the bridge is here: the command is [`m2wsgi::wsgi::cli::main_hosted`], the server
//! [`m2wsgi::wsgi::WsgiServer`]. What this module adds is what a host process needs: the GIL
//! released while the server runs, and Python's own SIGINT/SIGTERM handling set aside so that
//! the first signal drains and a second one exits at once, as with the Rust binary.

use m2wsgi::wsgi::cli::{self, LogLevel};
use m2wsgi::wsgi::WsgiServer;
use m2wsgi::Connection;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Puts the default action back for SIGINT and SIGTERM: Python's own handler would turn the
/// signal into a `KeyboardInterrupt` once this call returns, after the server has already
/// drained for it. The Rust handlers installed next take over.
fn set_python_signals_aside(py: Python<'_>) -> PyResult<()> {
    let signal = py.import("signal")?;
    let default = signal.getattr("SIG_DFL")?;
    for name in ["SIGINT", "SIGTERM"] {
        signal.call_method1("signal", (signal.getattr(name)?, &default))?;
    }
    Ok(())
}

/// Runs the `m2wsgi` command with `argv` (the program name first); `relaunch` is how a worker
/// process is started (`[sys.executable, "-m", "m2wsgi"]`). Returns the exit status.
#[pyfunction]
fn _main(py: Python<'_>, argv: Vec<OsString>, relaunch: Vec<OsString>) -> PyResult<u8> {
    set_python_signals_aside(py)?;
    Ok(py.detach(|| cli::main_hosted(argv, relaunch)))
}

/// Serves the WSGI callable `app` behind Mongrel2 until SIGINT or SIGTERM (the first drains:
/// requests received are answered, then it returns; a second exits the process at once).
///
/// `send_spec` is Mongrel2's `send_spec` (`tcp://127.0.0.1:9999`), `recv_spec` its
/// `recv_spec` (default: the port below). The other options are the command's: `threads`
/// (`--num-threads`), `send_ident`, `shutdown_timeout` and `timeout` in seconds, `max_body`
/// in bytes, `log_level` (`"info"`, `"debug"`, ...).
#[pyfunction]
#[pyo3(signature = (
    app, send_spec, recv_spec=None, *, threads=4, send_ident=None, shutdown_timeout=30.0,
    timeout=None, max_body=None, log_level=None, handle_signals=true
))]
#[allow(clippy::too_many_arguments)] // Python keyword arguments
fn serve(
    py: Python<'_>,
    app: Py<PyAny>,
    send_spec: String,
    recv_spec: Option<String>,
    threads: usize,
    send_ident: Option<String>,
    shutdown_timeout: f64,
    timeout: Option<f64>,
    max_body: Option<u64>,
    log_level: Option<&str>,
    handle_signals: bool,
) -> PyResult<()> {
    let level = log_level
        .map(|l| {
            l.parse::<LogLevel>()
                .map_err(|_| PyValueError::new_err(format!("log_level: unknown level {l:?}")))
        })
        .transpose()?;
    cli::init_logging(level);
    let seconds = |what: &str, s: f64| {
        Duration::try_from_secs_f64(s).map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
    };
    let mut builder = Connection::builder(send_spec);
    if let Some(r) = recv_spec {
        builder = builder.recv_spec(r);
    }
    if let Some(ident) = send_ident {
        builder = builder.send_ident(ident);
    }
    let conn = builder
        .connect()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    if handle_signals {
        set_python_signals_aside(py)?;
        m2wsgi::install_signal_handlers(&stop)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    }
    let mut server = WsgiServer::new(app)
        .threads(threads)
        .shutdown_timeout(seconds("shutdown_timeout", shutdown_timeout)?)
        .stop_flag(stop);
    if let Some(t) = timeout {
        server = server.timeout(seconds("timeout", t)?);
    }
    if let Some(n) = max_body {
        server = server.max_body(n);
    }
    py.detach(|| server.serve(conn))
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// The extension module.
#[pymodule]
fn _m2wsgi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(_main, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    Ok(())
}
