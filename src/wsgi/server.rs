//! Serving a WSGI application with N worker threads, each attached to Python for its life.

use super::body::{close_iterable, send_body};
use super::environ::{EnvironConfig, Template};
use super::exchange::{Exchange, Failure};
use super::flusher::Flusher;
use super::input::Input;
use super::interpreter::format_exception;
use super::observe::{Answer, Observe, Observer};
use super::start_response::StartResponse;
use super::watchdog::{Clock, LostThreads, Watchdog};
use super::WsgiError;
use super::{metrics, AccessLog};
use crate::{Connection, MessageKind, Request, Server, Worker};
use http::{HeaderMap, StatusCode};
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves a WSGI application over a [`Connection`].
///
/// ```no_run
/// # use m2wsgi::{wsgi::{self, WsgiServer}, Connection};
/// wsgi::initialize(None)?;
/// let app = wsgi::load_app("hello:application", &[std::env::current_dir()?])?;
/// let conn = Connection::builder("tcp://127.0.0.1:9999").connect()?;
/// WsgiServer::new(app)
///     .threads(4)
///     .script_name("") // PATH_INFO gets the whole path, whatever the route
///     .serve(conn)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a server does nothing until .serve() is called"]
pub struct WsgiServer {
    app: Py<PyAny>,
    threads: usize,
    env: EnvironConfig,
    shutdown_timeout: Duration,
    stop: Option<Arc<AtomicBool>>,
    also: Vec<Connection>,
    access_log: Option<AccessLog>,
    metrics: bool,
    timeout: Duration,
    max_body: Option<u64>,
    lost: Arc<LostThreads>,
}

impl WsgiServer {
    /// A server for `app` (a callable: see [`load_app`](super::load_app)) with one thread, the
    /// route prefix as SCRIPT_NAME, `wsgi.multiprocess` false, a 30 s shutdown deadline, no
    /// request timeout and no body size limit.
    pub fn new(app: Py<PyAny>) -> Self {
        Self {
            app,
            threads: 1,
            env: EnvironConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            stop: None,
            also: Vec::new(),
            access_log: None,
            metrics: false,
            timeout: Duration::ZERO,
            max_body: None,
            lost: Arc::default(),
        }
    }

    /// Number of worker threads (at least 1). `wsgi.multithread` is true with more than one.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// A fixed SCRIPT_NAME (the application's mount point) instead of the prefix of Mongrel2's
    /// route pattern. A request path that starts with it loses it from PATH_INFO. `""` means no
    /// SCRIPT_NAME: PATH_INFO is the whole path.
    pub fn script_name(mut self, s: impl Into<String>) -> Self {
        self.env.script_name = Some(s.into());
        self
    }

    /// Declares that other processes serve the same application from the same Mongrel2 handler
    /// sockets (`wsgi.multiprocess`). Mongrel2 cannot tell, so it is false unless declared.
    pub fn multiprocess(mut self, on: bool) -> Self {
        self.env.multiprocess = on;
        self
    }

    /// How long in-flight requests may take to finish once shutdown starts (default 30 s).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Answers `504 Gateway Timeout` for a request whose application call, iterating its
    /// response included, has not finished after `d` (`Duration::ZERO`, the default, never
    /// does). A response whose headers went out already has its connection dropped instead.
    ///
    /// The Python stack of the thread is logged. The thread itself cannot be stopped: it is
    /// counted as lost until the application returns, and nothing it sends after the timeout
    /// reaches the client; then it serves again. When more than half the threads are stuck at
    /// once, an error says that the process should be recycled. Long downloads count too: set
    /// `d` above the longest response expected.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Answers `413 Payload Too Large` to requests with a body above `bytes`, before the
    /// application sees them (see [`Server::max_body`] for how each kind of body is measured).
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = Some(bytes);
        self
    }

    /// The count of threads lost to the [`timeout`](Self::timeout), for whatever recycles the
    /// process: it is updated while [`serve`](Self::serve) runs.
    pub(crate) fn lost_threads(&self) -> Arc<LostThreads> {
        Arc::clone(&self.lost)
    }

    /// Stops serving when this flag becomes true (set it from a signal handler installed with
    /// [`install_signal_handlers`](crate::install_signal_handlers) before
    /// [`initialize`](super::initialize)).
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Also serves the requests of another Mongrel2 server (see [`Server::also`]): the same
    /// threads, each reply back through the connection its request came from.
    pub fn also(mut self, conn: Connection) -> Self {
        self.also.push(conn);
        self
    }

    /// Writes a line per request to `log` (see [`AccessLog`] for the format), from the worker
    /// threads, without the GIL.
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// Collects the per-request metrics that [`metrics::render`] shows (requests by status,
    /// durations, GIL waits, threads, queue...): a few atomic additions per request. Off by
    /// default. The registry is the process's: serve one application per process.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Serves until the stop flag is set, then drains (see [`Server`]) and returns. Blocks the
    /// calling thread, which must not be attached to Python (it would hold the GIL).
    ///
    /// # Errors
    /// [`Error::Wsgi`](crate::Error::Wsgi) with [`WsgiError::NotInitialized`] when Python is
    /// not initialised; as [`Server::serve_with`].
    pub fn serve(self, conn: Connection) -> crate::Result<()> {
        if !super::is_initialized() {
            return Err(WsgiError::NotInitialized.into());
        }
        let mut env = self.env;
        env.multithread = self.threads > 1;
        self.lost.set_threads(self.threads);
        let watchdog = if self.timeout.is_zero() {
            None
        } else {
            Some(Watchdog::spawn(self.timeout, self.threads, self.lost)?)
        };
        let mut server = Server::new(conn)
            .workers(self.threads)
            .shutdown_timeout(self.shutdown_timeout);
        if let Some(flag) = self.stop {
            server = server.stop_flag(flag);
        }
        for conn in self.also {
            server = server.also(conn);
        }
        if let Some(bytes) = self.max_body {
            server = server.max_body(bytes);
        }
        if self.metrics {
            metrics::watch_server(server.stats());
        }
        let log = self.access_log.clone();
        let observe = Observe::new(self.access_log, self.metrics);
        let shared = Arc::new(Shared {
            app: self.app,
            env,
            observe,
            watchdog: watchdog.clone(),
        });
        let served = server.serve_with(move |worker| run_worker(&shared, worker));
        if let Some(w) = watchdog {
            w.stop();
        }
        if let Some(log) = log {
            log.flush();
        }
        served
    }
}

#[derive(Debug)]
struct Shared {
    app: Py<PyAny>,
    env: EnvironConfig,
    observe: Option<Observe>,
    watchdog: Option<Arc<Watchdog>>,
}

fn run_worker(shared: &Shared, mut worker: Worker) {
    let index = worker.index();
    let flusher = match Flusher::spawn(format!("m2wsgi-flush-{index}")) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(
                "worker {index}: no flusher thread ({e}); paused streams wait for more output"
            );
            None
        }
    };
    Python::attach(|py| {
        let template = match Template::new(py, &shared.env) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(
                    "worker {index}: cannot build the environ template: {}",
                    format_exception(py, &e)
                );
                return;
            }
        };
        let app = shared.app.bind(py);
        let mut obs = shared.observe.as_ref().map(Observe::thread);
        let clock = shared.watchdog.as_ref().map(|w| {
            // The key of this thread's frames in `sys._current_frames()`.
            let ident = py
                .import("threading")
                .and_then(|t| t.call_method0("get_ident"))
                .and_then(|i| i.extract::<u64>())
                .ok();
            w.clock(index, ident)
        });
        loop {
            // The last request's log line and counters are written, then the next request is
            // taken. The GIL is released only when there is none yet: a thread that keeps up
            // keeps the GIL from request to request, instead of handing it to another thread
            // (a switch of threads) twice per request.
            if let Some(o) = &mut obs {
                o.finish();
            }
            let timed = obs.is_some();
            let next = match worker.try_next() {
                Ok(next) => next.map(|r| (r, timed.then(Instant::now))),
                // `taken` is read before the GIL is: the wait for it is a metric.
                Err(crate::NotReady) => py.detach(|| {
                    let req = worker.next()?;
                    Some((req, timed.then(Instant::now)))
                }),
            };
            let Some((req, taken)) = next else {
                break;
            };
            if let (Some(o), Some(taken)) = (&mut obs, taken) {
                o.begin(&req, taken);
            }
            let run = catch_unwind(AssertUnwindSafe(|| {
                handle(
                    py,
                    shared,
                    &template,
                    app,
                    Helpers {
                        flusher: flusher.as_ref(),
                        clock: clock.as_ref(),
                    },
                    req,
                    obs.as_mut(),
                )
            }));
            match (run, &mut obs) {
                (Ok(answer), Some(o)) => o.answered(answer),
                (Ok(_), None) => {}
                (Err(_), _) => {
                    tracing::error!("worker {index}: panic while handling a request; going on");
                }
            }
            if let Some(f) = &flusher {
                f.unwatch();
            }
        }
    });
    if let Some(f) = flusher {
        f.stop();
    }
}

/// `METHOD /path` for log lines (no query string: it may hold secrets). Formatted only when
/// a line is logged.
#[derive(Debug, Clone)]
pub(super) struct Label {
    method: Option<http::Method>,
    path: bytes::Bytes,
}

impl Label {
    fn new(req: &Request) -> Self {
        Self {
            method: req.method().cloned(),
            path: req.request_path().cloned().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.method.as_ref().map_or("-", http::Method::as_str),
            String::from_utf8_lossy(&self.path)
        )
    }
}

/// A worker thread's helpers for one request: the thread that flushes paused generators, and
/// the watchdog's clock (with `--timeout`).
#[derive(Clone, Copy)]
struct Helpers<'a> {
    flusher: Option<&'a Arc<Flusher>>,
    clock: Option<&'a Clock>,
}

fn handle(
    py: Python<'_>,
    shared: &Shared,
    template: &Template,
    app: &Bound<'_, PyAny>,
    helpers: Helpers<'_>,
    req: Request,
    obs: Option<&mut Observer<'_>>,
) -> Answer {
    match req.kind() {
        MessageKind::Request | MessageKind::UploadDone { .. } => {}
        MessageKind::WebSocketHandshake => {
            tracing::warn!(
                "{}: WebSocket handshake refused: WSGI cannot serve WebSockets",
                Label::new(&req)
            );
            let mut h = HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            const BODY: &[u8] = b"WebSockets are not served here\n";
            let _ = req.reply_http(StatusCode::BAD_REQUEST, &h, BODY);
            return Answer::Fixed(400, BODY.len() as u64);
        }
        // Disconnect notices, WebSocket frames, JSON/XML socket messages: nothing to answer.
        _ => return Answer::Unknown,
    }
    let what = Label::new(&req);
    let body = match req.body_reader() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{what}: cannot open the request body: {e}; 500");
            let ex = Exchange::new(req, None);
            py.detach(|| ex.fail());
            return Answer::Exchange(ex);
        }
    };
    let body_len = body.len();
    let input = match Bound::new(py, Input::new(body)) {
        Ok(i) => i.into_any(),
        Err(e) => {
            // The request is dropped unanswered: the runtime answers 500.
            tracing::error!("{what}: {}", format_exception(py, &e));
            return Answer::Fixed(500, 0);
        }
    };
    let environ = template.build(py, &shared.env, &req, body_len, input);
    let Helpers { flusher, clock } = helpers;
    let responder = clock.map(|_| req.responder());
    let ex = Exchange::new(req, flusher.cloned());
    if obs.as_ref().is_some_and(|o| o.needs_response_headers()) {
        ex.keep_response_headers();
    }
    let environ = match environ {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(
                "{what}: building environ: {}; 500",
                format_exception(py, &e)
            );
            py.detach(|| ex.fail());
            return Answer::Exchange(ex);
        }
    };
    let environ_seen = obs
        .as_ref()
        .is_some_and(|o| o.wants_environ())
        .then(|| environ.clone());
    if let Some(f) = flusher {
        f.watch(Arc::<Exchange>::clone(&ex));
    }
    let start_response = match Bound::new(py, StartResponse::new(Arc::clone(&ex))) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{what}: {}", format_exception(py, &e));
            py.detach(|| ex.fail());
            return Answer::Exchange(ex);
        }
    };
    // The timeout covers the application's call, the iteration of its response and close().
    let timed = clock.zip(responder).map(|(c, r)| c.start(r, what.clone()));
    let outcome = match app.call1((environ, start_response)) {
        Err(e) => Err((Failure::App(e), None)),
        Ok(result) => {
            let sent = send_body(py, &result, &ex);
            let sent = match sent {
                Ok(()) if ex.is_done() => Ok(()),
                Ok(()) => py.detach(|| ex.finish()),
                Err(f) => Err(f),
            };
            // close() is always called: normal end, error, client gone.
            let closed = close_iterable(py, &result);
            match (sent, closed) {
                (Ok(()), Ok(())) => Ok(()),
                (Ok(()), Err(e)) => {
                    tracing::error!(
                        "{what}: close() of the response raised:\n{}",
                        format_exception(py, &e)
                    );
                    Ok(())
                }
                (Err(f), closed) => Err((f, closed.err())),
            }
        }
    };
    // Past the timeout the request was answered already: that its late writes fail is expected.
    let late = timed.as_ref().is_some_and(|t| t.timed_out());
    if let Err((failure, close_err)) = outcome {
        if !(late && matches!(failure, Failure::Gone | Failure::Send(_))) {
            report(py, &what, &ex, failure);
        }
        if let Some(e) = close_err {
            tracing::error!(
                "{what}: close() of the response raised:\n{}",
                format_exception(py, &e)
            );
        }
        py.detach(|| ex.fail());
    }
    if let Some(t) = timed {
        py.detach(|| t.end());
    }
    template.flush_errors(py);
    if let (Some(o), Some(env)) = (obs, environ_seen) {
        o.capture_environ(&env);
    }
    Answer::Exchange(ex)
}

fn report(py: Python<'_>, what: &Label, ex: &Exchange, failure: Failure) {
    let after = if ex.headers_sent() {
        "the response had started: closing the connection"
    } else {
        "500"
    };
    match failure {
        Failure::App(e) => {
            tracing::error!(
                "{what}: the application raised; {after}\n{}",
                format_exception(py, &e)
            );
        }
        Failure::Invalid(msg) => tracing::error!("{what}: {msg}; {after}"),
        Failure::Gone => {
            metrics::count_disconnect();
            tracing::info!("{what}: the client disconnected; response abandoned");
        }
        Failure::Send(e) => tracing::warn!("{what}: sending the response: {e}; abandoned"),
    }
}
