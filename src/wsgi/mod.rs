//! A PEP 3333 (WSGI) bridge: serve a Python web application (Flask, Django, any WSGI callable)
//! behind Mongrel2, with CPython embedded in this process through PyO3.
//!
//! The `m2wsgi` command is a thin front end to this module (its options and `main` are in
//! [`cli`]); use the module directly to embed the bridge in your own binary.
//!
//! ```no_run
//! use m2wsgi::wsgi::{self, WsgiServer};
//! use m2wsgi::Connection;
//!
//! // Once per process, before any other thread touches Python (and after installing your own
//! // SIGINT/SIGTERM handlers, if any: see `install_signal_handlers`).
//! wsgi::initialize(None)?;
//! let app = wsgi::load_app("myproject.wsgi:application", &[std::env::current_dir()?])?;
//! let conn = Connection::builder("tcp://127.0.0.1:9999").connect()?;
//! WsgiServer::new(app).threads(4).serve(conn)?;
//! wsgi::run_exit_handlers(); // atexit handlers, then flush sys.stdout / sys.stderr
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the application sees
//!
//! `environ` is a real `dict` copied per request from a per-thread template. Every CGI value is a
//! `str`:
//!
//! | key | value |
//! |---|---|
//! | `REQUEST_METHOD` | the method |
//! | `SCRIPT_NAME` | the route's prefix: Mongrel2's `PATTERN` up to the first `(` (or other pattern character), without a trailing `/`, when the path starts with it at a segment boundary; or [`WsgiServer::script_name`] |
//! | `PATH_INFO` | the rest of the path, percent-decoded, bytes as latin-1 (PEP 3333). `%2F` is decoded to `/` like gunicorn, wsgiref and Werkzeug do; the raw path is in `REQUEST_URI` / `RAW_URI` |
//! | `QUERY_STRING` | raw, never decoded; `""` when there is none |
//! | `SERVER_NAME`, `SERVER_PORT` | from the `Host` header; else `localhost` and 80 / 443 by scheme |
//! | `SERVER_PROTOCOL` | `HTTP/1.1` or `HTTP/1.0` |
//! | `CONTENT_TYPE`, `CONTENT_LENGTH` | only when present; `CONTENT_LENGTH` is the real body size for async uploads (chunked request bodies included: Mongrel2 de-chunks them, so `HTTP_TRANSFER_ENCODING` is left out) |
//! | `HTTP_*` | every other header; repeated ones joined with `", "` (`Cookie` with `"; "`); values latin-1, byte for byte. Names holding `_` are dropped (they would collide with `-` names, e.g. a client's `X_Forwarded_For` with Mongrel2's `X-Forwarded-For`), and so are Mongrel2's `x-mongrel2-upload-*` |
//! | `REMOTE_ADDR` | the client address Mongrel2 reports |
//! | `REQUEST_URI`, `RAW_URI` | the raw request target (path and query) |
//! | `wsgi.version` | `(1, 0)` |
//! | `wsgi.url_scheme` | Mongrel2's `URL_SCHEME` (`http` / `https`) |
//! | `wsgi.input` | a streaming file-like object over the body: `read(n)`, `read()`, `readline(size)`, `readlines(hint)`, iteration; never loaded whole, `b''` past the end; the GIL is released while it waits |
//! | `wsgi.input_terminated` | `True`: Mongrel2 delivers whole bodies, reading to `b''` is safe |
//! | `wsgi.errors` | a text stream whose lines go to the log (target `wsgi.errors`, level error) |
//! | `wsgi.multithread` | `True` with more than one thread |
//! | `wsgi.multiprocess` | [`WsgiServer::multiprocess`]: `False` unless declared (Mongrel2 cannot tell a handler about other handler processes) |
//! | `wsgi.run_once` | `False` |
//! | `wsgi.file_wrapper` | [`FileWrapper`]: responses built from it are read in 256 KiB blocks |
//! | `m2wsgi.is_disconnected` | a callable: `True` once Mongrel2 reported the client gone |
//!
//! # Responses
//!
//! `start_response(status, headers, exc_info=None)` follows PEP 3333 to the letter: the status may
//! be replaced (with `exc_info`) until the headers are sent, `exc_info` is re-raised once they
//! are, and a second call without `exc_info` raises. Headers go out with the first non-empty body
//! chunk (so `start_response` may be called during the first iteration), in one Mongrel2 message
//! with it. The status line and header names, values and framing are checked: a malformed status,
//! a header name that is not a token, CR/LF in a value, a character outside latin-1, or a
//! hop-by-hop header (`Connection`, `Keep-Alive`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`,
//! `TE`, `Trailer`) makes `start_response` raise, and the client gets a 500 with a log line.
//!
//! A `list` or `tuple` of `bytes` is sent as one message with a `Content-Length`. Any other
//! iterable is streamed: chunked on HTTP/1.1 without a `Content-Length`, close-delimited on
//! HTTP/1.0. Writes are coalesced by [`ResponseStream`](crate::ResponseStream), and whatever a
//! paused generator has produced is flushed within 10 ms, so no block is delayed while the
//! application computes the next. Iteration stops when the client disconnects. `close()` on the
//! iterable is called in every case: normal end, error, disconnect. An exception (or a non-bytes
//! chunk) before anything was sent gives a 500, after that the connection is closed; the
//! traceback goes to the log, never the environ, and the thread goes on serving.
//!
//! # Threads
//!
//! Each worker thread attaches to Python once for its whole life and releases the GIL whenever it
//! waits (for the next request, for the body, for download credits). No Python-level lock is
//! taken by the bridge, so it is ready for free-threaded CPython.
//!
//! A thread cannot be stopped from outside. With [`WsgiServer::timeout`], a request whose
//! application runs too long is answered `504 Gateway Timeout` (or its connection dropped, once
//! its response has started) by a watchdog thread, which logs the Python stack of the thread;
//! the thread is counted as lost until the application returns, and what it sends from then on
//! never reaches the client. [`WsgiServer::max_body`] refuses large request bodies with `413`
//! before the application is called.
//!
//! # Where things are
//!
//! | file | what it does |
//! |---|---|
//! | `cli.rs` | the `m2wsgi` command: its options ([`cli::Args`]) and its `main` ([`cli::run`]) |
//! | `error.rs` | [`WsgiError`] and its leaf errors |
//! | `interpreter.rs` | starting CPython ([`initialize`]), flushing it at exit, importing the application ([`load_app`]) |
//! | `venv.rs` | the check, before CPython starts, that a virtualenv is for the embedded Python ([`VenvError`]) |
//! | `server.rs` | [`WsgiServer`]: the worker threads, each attached to Python for its life; one request from message to logged outcome |
//! | `environ.rs` | the `environ` dict: per-thread template, CGI keys, `SCRIPT_NAME` / `PATH_INFO`, `wsgi.errors` |
//! | `input.rs` | `wsgi.input`, the streaming request body |
//! | `exchange.rs` | one response's state machine (pending, streaming, done), shared by the callables below and the flusher |
//! | `start_response.rs` | `start_response` and `write`, with the status and header checks |
//! | `body.rs` | sending the returned iterable (lists, [`FileWrapper`], generators) and calling its `close()` |
//! | `flusher.rs` | the per-worker thread that sends what a paused generator left buffered |
//! | `supervisor.rs` | `--workers N`: the supervisor process, its device, and the worker processes it starts, restarts and recycles |
//! | `observe.rs` | what a worker records per request for the access log and the metrics (nothing without them) |
//! | `access_log.rs` | [`AccessLog`]: gunicorn's format compiled once (`access_log/format.rs`), lines buffered and written without the GIL, reopened on SIGUSR1 |
//! | `metrics.rs` | [`metrics`]: the process's Prometheus counters, their exposition, [`metrics::merge`] for several processes, the `/metrics` endpoint |
//! | `watchdog.rs` | [`WsgiServer::timeout`]: the thread that answers `504` for a request running too long, logs its Python stack and counts the threads lost to it |
//!
//! # Embedding CPython
//!
//! [`initialize`] starts the interpreter through `PyConfig` so that:
//! - it is the interpreter this crate was built against (`PYO3_PYTHON`; the build script adds an
//!   rpath to its `libpython`);
//! - `sys.prefix` comes from `$VIRTUAL_ENV/bin/python` when a virtualenv is active, else from the
//!   build interpreter, never from whatever `python3` is first on `PATH`;
//! - a virtualenv made for another Python major.minor (read from its `pyvenv.cfg`, else from its
//!   `lib/pythonX.Y/site-packages`) is refused with [`VenvError::Mismatch`] before anything
//!   starts, instead of failing later with a `ModuleNotFoundError`;
//! - Python installs no signal handlers: SIGINT/SIGTERM stay with Rust (install yours before
//!   calling it, see [`install_signal_handlers`](crate::install_signal_handlers));
//! - it happens once per process: calls from several threads at once, or later calls, wait for
//!   the first one and get its result;
//! - the interpreter is never finalised (that would wait for the application's non-daemon
//!   threads): call [`run_exit_handlers`] (the `atexit` handlers, then [`flush_stdio`]) before
//!   exiting.

mod access_log;
mod body;
pub mod cli;
mod environ;
mod error;
mod exchange;
mod flusher;
mod input;
mod interpreter;
pub mod metrics;
mod observe;
mod server;
mod start_response;
mod supervisor;
mod venv;
mod watchdog;

pub use access_log::{AccessLog, AccessLogError, FormatError, DEFAULT_FORMAT};
pub use body::FileWrapper;
pub use error::{AppNameProblem, InitError, PyVersion, VenvError, VersionSource, WsgiError};
pub use interpreter::{
    flush_stdio, initialize, is_initialized, load_app, python_executable, python_info,
    run_exit_handlers, BUILD_PYTHON,
};
pub use server::WsgiServer;
