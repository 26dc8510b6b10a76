//! Serving: N workers reading from Mongrel2 in turn, graceful shutdown.
//!
//! One dispatcher per connection reads from Mongrel2. It keeps per-connection state (download
//! credits, upload progress, disconnects) and hands each message to an **idle** worker through
//! one shared queue, so a fast request never waits behind a slow one. All messages of one
//! client connection go to one owner at a time: while a worker handles a message for
//! connection 7, later messages for 7 wait for that worker, in order, so an upload's start and
//! done, or a WebSocket's frames, never race.
//!
//! With one connection the dispatcher has no thread of its own: an idle worker holds it and
//! reads the next message itself, then answers it on the same thread, and the thread that
//! called [`Server::serve`] reads only while every worker is busy (the `reader` module). With
//! more ([`Server::also`]), each connection's dispatcher has a thread.
//!
//! Shutdown (SIGINT/SIGTERM with [`Server::handle_signals`], or [`ShutdownHandle::shutdown`]):
//! the process stops taking new requests ([`Connection::stop_receiving`]: behind a device, the
//! leave handshake; directly on Mongrel2, the request socket is disconnected), what was
//! received is answered, in-flight requests get until the deadline to finish, then
//! [`Server::serve`] returns. A second signal exits the process at once.

use crate::conn_state::ConnState;
use crate::dispatcher::Dispatcher;
use crate::error::Result;
use crate::reader::Reader;
use crate::request::Request;
use crate::stats::{ServerStats, Stats};
use crate::transport::Connection;
use crate::worker::{Shared, Worker};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stops a running [`Server`] from another thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    pub(crate) fn new(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }

    /// Asks the server to drain and return.
    pub fn shutdown(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown was asked for.
    pub fn is_shutdown(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The underlying flag (for signal handlers installed elsewhere).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

/// Installs SIGINT and SIGTERM handlers: the first signal sets `flag`, a second one exits the
/// process at once with status 1. Install them before starting anything (an embedded Python
/// interpreter, say) that might install its own.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) when a handler cannot be installed.
pub fn install_signal_handlers(flag: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(flag))?;
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    Ok(())
}

/// Runs a handler over a [`Connection`] with N worker threads.
///
/// ```no_run
/// use m2wsgi::{Connection, Server};
/// use http::{HeaderMap, StatusCode};
///
/// let conn = Connection::builder("tcp://127.0.0.1:9999").connect()?;
/// Server::new(conn)
///     .workers(4)
///     .handle_signals(true)
///     .serve(|req| {
///         if req.is_request() {
///             let _ = req.reply_http(StatusCode::OK, &HeaderMap::new(), b"Hello, world!");
///         }
///     })?;
/// # Ok::<(), m2wsgi::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a server does nothing until .serve() is called"]
pub struct Server {
    conn: Connection,
    /// More Mongrel2 servers to take requests from ([`Server::also`]).
    more: Vec<Connection>,
    workers: usize,
    deadline: Duration,
    stop: Arc<AtomicBool>,
    signals: bool,
    max_streams: Option<usize>,
    stats: Arc<Stats>,
    max_body: Option<u64>,
}

impl Server {
    /// A server over `conn` with one worker, a 30 s shutdown deadline, and no signal handling.
    pub fn new(conn: Connection) -> Self {
        Self {
            conn,
            more: Vec::new(),
            workers: 1,
            deadline: Duration::from_secs(30),
            stop: Arc::new(AtomicBool::new(false)),
            signals: false,
            max_streams: None,
            stats: Arc::default(),
            max_body: None,
        }
    }

    /// Also take requests from another Mongrel2 server (or another handler of the same one):
    /// the same worker threads serve every connection, each reply goes back through the
    /// connection its request came from, and each connection keeps its own client ids and
    /// restart detection (the ids of two servers overlap freely).
    pub fn also(mut self, conn: Connection) -> Self {
        self.more.push(conn);
        self
    }

    /// Number of worker threads (at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The most streamed uploads (`upload.stream=1`) read at once; a new one beyond it is
    /// answered `503`, so that slow uploads cannot hold every worker. Default: half the workers
    /// (at least 1). Each one is also bounded in time by the connection's
    /// [`StreamLimits`](crate::StreamLimits).
    pub fn max_streamed_uploads(mut self, n: usize) -> Self {
        self.max_streams = Some(n.max(1));
        self
    }

    /// The largest request body taken, in bytes: a request with a larger one is answered
    /// `413 Payload Too Large` (and its connection closed) by the dispatcher, before any
    /// handler sees it. Default: no limit.
    ///
    /// Every way Mongrel2 delivers a body is covered:
    /// - an inline body, by its `Content-Length` (or its size);
    /// - an async upload (above Mongrel2's `limits.content_length`), by the `Content-Length` of
    ///   its start message, while Mongrel2 is still writing the temp file; the file is deleted,
    ///   and the done message that may follow is swallowed. A chunked one (no length) is
    ///   measured when its done message comes, and its file deleted;
    /// - a streamed upload (`upload.stream=1`), by the `Content-Length` of its first message;
    ///   a chunked one as soon as the slices received pass the limit: the handler reading it
    ///   then gets an error, and the client the `413` (or, if the handler had started to
    ///   answer, a dropped connection).
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = Some(bytes);
        self
    }

    /// How long in-flight requests may take to finish once shutdown starts.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// Install SIGINT/SIGTERM handlers when serving starts (see [`install_signal_handlers`]).
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Use this flag as the stop flag (for handlers installed earlier with
    /// [`install_signal_handlers`]).
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = flag;
        self
    }

    /// A handle to stop the server from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(Arc::clone(&self.stop))
    }

    /// A live view of the worker queue once serving starts: messages waiting for a worker,
    /// idle and busy workers (for a metrics endpoint).
    pub fn stats(&self) -> ServerStats {
        ServerStats(Arc::clone(&self.stats))
    }

    /// Serves until shutdown, calling `handler` for every message on a worker thread: HTTP
    /// requests, completed uploads, WebSocket handshakes and frames, JSON/XML socket messages,
    /// and disconnect notices ([`MessageKind::Disconnect`](crate::MessageKind::Disconnect)). A panic in the handler is logged;
    /// the worker goes on.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if signal handlers cannot be installed or a thread cannot start.
    pub fn serve<F>(self, handler: F) -> Result<()>
    where
        F: Fn(Request) + Send + Sync + 'static,
    {
        self.serve_with(move |mut worker: Worker| {
            while let Some(req) = worker.next() {
                // At debug level every line a handler logs names its connection.
                let span = tracing::debug_span!("request", conn_id = req.conn_id());
                let _entered = span.enter();
                if catch_unwind(AssertUnwindSafe(|| handler(req))).is_err() {
                    tracing::error!("handler panicked; worker {} goes on", worker.index());
                }
            }
        })
    }

    /// Serves until shutdown, running `worker_main` once on each worker thread. When it returns,
    /// the connection's sockets are closed (replies still queued get up to a second to reach
    /// Mongrel2). It loops on
    /// [`Worker::next`] until that returns `None`. Use this to set up per-thread state (an
    /// embedded interpreter, a database handle) for the thread's whole life.
    ///
    /// # Errors
    /// As [`serve`](Server::serve).
    pub fn serve_with<F>(self, worker_main: F) -> Result<()>
    where
        F: Fn(Worker) + Send + Sync + 'static,
    {
        if self.signals {
            install_signal_handlers(&self.stop)?;
        }
        let conns: Vec<Connection> = std::iter::once(self.conn.clone())
            .chain(self.more.iter().cloned())
            .collect();
        self.stats.workers.store(self.workers, Ordering::Relaxed);
        let shared = Arc::new(Shared::new(conns.clone(), Arc::clone(&self.stats)));
        let max_streams = self.max_streams.unwrap_or((self.workers / 2).max(1));
        let (grace, stop, max_body) = (self.deadline, &self.stop, self.max_body);
        // One connection: idle workers read from it themselves, this thread is the standby
        // (see `reader`). More: a dispatcher thread for each.
        let reader = (conns.len() == 1).then(|| {
            let d = Dispatcher::new(conns[0].clone(), shared.clone(), max_streams, max_body);
            Arc::new(Reader::new(d, Arc::clone(stop), grace))
        });
        let main = Arc::new(worker_main);
        for index in 0..self.workers {
            let worker = Shared::worker(&shared, index, reader.clone());
            let main = Arc::clone(&main);
            let spawned = std::thread::Builder::new()
                .name(format!("m2wsgi-worker-{index}"))
                .spawn(move || main(worker));
            if let Err(e) = spawned {
                self.stop.store(true, Ordering::SeqCst);
                tracing::error!("cannot start worker {index}: {e}");
            }
        }
        let (deadline, states) = match &reader {
            Some(reader) => reader.standby(&*shared),
            None => dispatch_each(&conns, &shared, max_streams, max_body, stop, grace),
        };
        // No more input: let workers empty the queue and stop.
        shared.close();
        let busy = shared.wait_workers(deadline);
        if busy > 0 {
            tracing::warn!(
                "shutdown deadline passed with {busy} worker(s) still busy; answering their \
                 requests 503 (or dropping the connections whose answer had started) and leaving \
                 them"
            );
            for st in states {
                st.abandon(&st.conn);
            }
        }
        for conn in &conns {
            conn.close_receiving();
            conn.close_sending();
        }
        tracing::info!("server stopped");
        Ok(())
    }
}

/// Routes every connection on a dispatcher thread of its own (the first on this thread) until
/// each is finished; returns the latest shutdown deadline and the connections known then.
fn dispatch_each(
    conns: &[Connection],
    shared: &Arc<Shared>,
    max_streams: usize,
    max_body: Option<u64>,
    stop: &AtomicBool,
    grace: Duration,
) -> (Instant, Vec<Arc<ConnState>>) {
    std::thread::scope(|scope| {
        let others: Vec<_> = conns[1..]
            .iter()
            .enumerate()
            .filter_map(|(i, conn)| {
                let mut d = Dispatcher::new(conn.clone(), shared.clone(), max_streams, max_body);
                std::thread::Builder::new()
                    .name(format!("m2wsgi-dispatch-{}", i + 1))
                    .spawn_scoped(scope, move || (d.run(stop, grace), d.take_states()))
                    .map_err(|e| {
                        stop.store(true, Ordering::SeqCst);
                        tracing::error!("cannot start a dispatcher: {e}");
                    })
                    .ok()
            })
            .collect();
        let mut first = Dispatcher::new(conns[0].clone(), shared.clone(), max_streams, max_body);
        let mut deadline = first.run(stop, grace);
        let mut states = first.take_states();
        for t in others {
            if let Ok((d, s)) = t.join() {
                deadline = deadline.max(d);
                states.extend(s);
            }
        }
        (deadline, states)
    })
}
