//! Serving: one dispatcher thread reading from Mongrel2, N workers, graceful shutdown.
//!
//! The dispatcher owns the request socket. It keeps per-connection state (download credits,
//! upload progress, disconnects) and hands each message to an **idle** worker through one shared
//! queue, so a fast request never waits behind a slow one. All messages of one client connection
//! go to one owner at a time: while a worker handles a message for connection 7, later messages
//! for 7 wait for that worker, in order, so an upload's start and done, or a WebSocket's frames,
//! never race.
//!
//! Shutdown (SIGINT/SIGTERM with [`Server::handle_signals`], or [`ShutdownHandle::shutdown`]):
//! the request socket is disconnected so Mongrel2 stops sending to this process, the messages
//! ZeroMQ had already prefetched are drained and answered, in-flight requests get until the
//! deadline to finish, then [`Server::serve`] returns. A second signal exits the process at once.

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::request::{reject, ConnState, Request};
use crate::upload::{check_upload, UploadFile};
use crate::{Message, MessageKind};
use http::StatusCode;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// How often the dispatcher wakes to look at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Connection state untouched this long, with nothing in flight, is forgotten (for clients whose
/// disconnect notice never came).
const IDLE_STATE: Duration = Duration::from_secs(600);

/// One message for a worker, with its connection state and, for uploads, the verified file.
#[derive(Debug)]
pub(crate) struct Job {
    msg: Message,
    upload: Option<std::path::PathBuf>,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<(Arc<ConnState>, Job)>,
    closing: bool,
    /// Workers waiting in `Worker::next`.
    idle: usize,
}

#[derive(Debug)]
struct Shared {
    conn: Connection,
    queue: Mutex<Queue>,
    ready: Condvar,
    live_workers: AtomicUsize,
    done: Condvar,
    done_lock: Mutex<()>,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the connection (a device, if any) how many requests could start right now.
    fn report(&self, q: &Queue) {
        self.conn.set_capacity(q.idle.saturating_sub(q.jobs.len()));
    }
}

/// Stops a running [`Server`] from another thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
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
/// [`Error::Io`] when a handler cannot be installed.
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
    workers: usize,
    deadline: Duration,
    stop: Arc<AtomicBool>,
    signals: bool,
}

impl Server {
    /// A server over `conn` with one worker, a 30 s shutdown deadline, and no signal handling.
    pub fn new(conn: Connection) -> Self {
        Self {
            conn,
            workers: 1,
            deadline: Duration::from_secs(30),
            stop: Arc::new(AtomicBool::new(false)),
            signals: false,
        }
    }

    /// Number of worker threads (at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
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
        ShutdownHandle(Arc::clone(&self.stop))
    }

    /// Serves until shutdown, calling `handler` for every message on a worker thread: HTTP
    /// requests, completed uploads, WebSocket handshakes and frames, JSON/XML socket messages,
    /// and disconnect notices ([`MessageKind::Disconnect`]). A panic in the handler is logged;
    /// the worker goes on.
    ///
    /// # Errors
    /// [`Error::Io`] if signal handlers cannot be installed or a thread cannot start.
    pub fn serve<F>(self, handler: F) -> Result<()>
    where
        F: Fn(Request) + Send + Sync + 'static,
    {
        self.serve_with(move |mut worker: Worker| {
            while let Some(req) = worker.next() {
                if catch_unwind(AssertUnwindSafe(|| handler(req))).is_err() {
                    log::error!("handler panicked; worker {} goes on", worker.index());
                }
            }
        })
    }

    /// Serves until shutdown, running `worker_main` once on each worker thread. It loops on
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
        let shared = Arc::new(Shared {
            conn: self.conn.clone(),
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            live_workers: AtomicUsize::new(self.workers),
            done: Condvar::new(),
            done_lock: Mutex::new(()),
        });
        let main = Arc::new(worker_main);
        for index in 0..self.workers {
            let shared2 = Arc::clone(&shared);
            let main = Arc::clone(&main);
            let spawned = std::thread::Builder::new()
                .name(format!("m2wsgi-worker-{index}"))
                .spawn(move || {
                    let guard = LiveGuard(Arc::clone(&shared2));
                    main(Worker {
                        shared: shared2,
                        current: None,
                        index,
                    });
                    drop(guard);
                });
            if let Err(e) = spawned {
                shared.live_workers.fetch_sub(1, Ordering::SeqCst);
                self.stop.store(true, Ordering::SeqCst);
                log::error!("cannot start worker {index}: {e}");
            }
        }
        let mut d = Dispatcher {
            conn: self.conn.clone(),
            shared: Arc::clone(&shared),
            states: HashMap::new(),
            epoch: self.conn.epoch(),
            last_sweep: Instant::now(),
        };
        d.run(&self.stop);
        // No more input: let workers empty the queue and stop.
        shared.queue().closing = true;
        shared.ready.notify_all();
        let deadline = Instant::now() + self.deadline;
        let mut g = shared
            .done_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while shared.live_workers.load(Ordering::SeqCst) > 0 {
            let now = Instant::now();
            if now >= deadline {
                log::warn!(
                    "shutdown deadline passed with {} worker(s) still busy; leaving them",
                    shared.live_workers.load(Ordering::SeqCst)
                );
                break;
            }
            g = shared
                .done
                .wait_timeout(g, (deadline - now).min(POLL))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        drop(g);
        self.conn.close_receiving();
        log::info!("server stopped");
        Ok(())
    }
}

struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live_workers.fetch_sub(1, Ordering::SeqCst);
        let _g = self.0.done_lock.lock();
        self.0.done.notify_all();
    }
}

/// A worker thread's source of requests; see [`Server::serve_with`]. `Send`, so it can be used
/// inside `Python::detach` and the like.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    /// The connection this worker owns right now.
    current: Option<Arc<ConnState>>,
    index: usize,
}

impl Worker {
    /// This worker's number, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    fn make(&mut self, st: Arc<ConnState>, job: Job) -> Request {
        self.current = Some(Arc::clone(&st));
        let upload = job.upload.map(UploadFile::new);
        Request::new(job.msg, self.shared.conn.clone(), st, upload)
    }
}

/// `Worker` is an iterator of requests: `for req in worker { ... }`.
impl Iterator for Worker {
    type Item = Request;

    /// Blocks until the next message for this worker, or returns `None` once the server is
    /// shutting down and the queue is empty. Calling it again means the previous request's
    /// handler has returned: later messages for the same client come to this worker first.
    fn next(&mut self) -> Option<Request> {
        if let Some(st) = self.current.take() {
            let mut g = st.lock();
            if let Some(job) = g.pending.pop_front() {
                drop(g);
                return Some(self.make(st, job));
            }
            g.busy = false;
        }
        let mut q = self.shared.queue();
        q.idle += 1;
        loop {
            if let Some((st, job)) = q.jobs.pop_front() {
                q.idle -= 1;
                self.shared.report(&q);
                drop(q);
                return Some(self.make(st, job));
            }
            if q.closing {
                q.idle -= 1;
                return None;
            }
            self.shared.report(&q);
            q = self
                .shared
                .ready
                .wait_timeout(q, POLL)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

struct Dispatcher {
    conn: Connection,
    shared: Arc<Shared>,
    states: HashMap<u64, Arc<ConnState>>,
    /// The connection's epoch the states belong to.
    epoch: u64,
    last_sweep: Instant,
}

impl Dispatcher {
    fn run(&mut self, stop: &AtomicBool) {
        let mut stopping = false;
        loop {
            if !stopping && stop.load(Ordering::SeqCst) {
                stopping = true;
                log::info!("shutting down: no new requests; draining what was received");
                self.conn.stop_receiving();
            }
            let got = self.conn.recv(POLL);
            // Only this thread advances the epoch, inside `recv`: a message just returned
            // belongs to the epoch read now.
            self.check_epoch();
            match got {
                Ok(Some(msg)) => self.route(msg),
                Ok(None) if stopping => break,
                Ok(None) => {}
                Err(Error::Parse(e)) => log::warn!("skipping malformed message from Mongrel2: {e}"),
                Err(e) => {
                    log::error!("receiving from Mongrel2: {e}");
                    std::thread::sleep(POLL);
                }
            }
            if self.last_sweep.elapsed() > POLL * 100 {
                self.sweep();
            }
        }
    }

    /// After Mongrel2 restarted, every known connection is gone: its handlers see
    /// `is_disconnected()`, its waits end, its messages still queued are dropped, and the ids
    /// are free for the new server's clients.
    fn check_epoch(&mut self) {
        let epoch = self.conn.epoch();
        if epoch == self.epoch {
            return;
        }
        self.epoch = epoch;
        let n = self.states.len();
        for (_, st) in self.states.drain() {
            let mut g = st.lock();
            g.disconnected = true;
            g.pending.clear();
            drop(g);
            st.notify();
        }
        if n > 0 {
            log::warn!("{n} client connection(s) of the previous Mongrel2 dropped");
        }
    }

    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        self.states.retain(|_, st| {
            let g = st.lock();
            Arc::strong_count(st) > 1
                || g.busy
                || g.last_seen.is_some_and(|t| t.elapsed() < IDLE_STATE)
        });
    }

    fn state(&mut self, id: u64) -> Arc<ConnState> {
        let st = self
            .states
            .entry(id)
            .or_insert_with(|| Arc::new(ConnState::new(id, self.epoch)));
        st.lock().last_seen = Some(Instant::now());
        Arc::clone(st)
    }

    fn route(&mut self, msg: Message) {
        let id = msg.conn_id();
        match msg.kind().clone() {
            MessageKind::Credits { bytes } => {
                if let Some(st) = self.states.get(&id) {
                    let mut g = st.lock();
                    g.credits = Some(g.credits.unwrap_or(0) + bytes);
                    drop(g);
                    st.notify();
                }
            }
            MessageKind::Disconnect => {
                if let Some(st) = self.states.remove(&id) {
                    st.lock().disconnected = true;
                    st.notify();
                    self.enqueue(st, Job { msg, upload: None });
                }
            }
            MessageKind::UploadStream { done, .. } => {
                if let Some(st) = self.states.get(&id) {
                    let mut g = st.lock();
                    g.stream.push_back(msg.body().clone());
                    g.stream_done |= done;
                    drop(g);
                    st.notify();
                }
            }
            MessageKind::UploadStart { path } => {
                let st = self.state(id);
                if self.conn.upload_policy().upload_dir.is_none() {
                    static ONCE: Once = Once::new();
                    ONCE.call_once(|| {
                        log::error!(
                            "refusing async uploads with 413: no upload directory is set (set \
                             upload_dir on the connection builder, or --upload-dir, to the \
                             directory of Mongrel2's upload.temp_store)"
                        )
                    });
                    reject(&self.conn, self.epoch, &msg, StatusCode::PAYLOAD_TOO_LARGE);
                    // Remembered so the done message that follows is known as answered.
                    st.lock().upload_start = Some(path);
                    return;
                }
                // Mongrel2 creates the temp file before it sends the start message, which has
                // an empty body. A client can send the header itself (with any path and a body):
                // refuse it here rather than wait for a done message that never comes.
                if let Err(e) = check_upload(self.conn.upload_policy(), &path, &path) {
                    log::warn!("connection {id}: upload start refused: {e}; 400");
                    reject(&self.conn, self.epoch, &msg, StatusCode::BAD_REQUEST);
                    return;
                }
                if !msg.body().is_empty() {
                    log::warn!("connection {id}: upload start with a body (a spoofed header); 400");
                    reject(&self.conn, self.epoch, &msg, StatusCode::BAD_REQUEST);
                    return;
                }
                st.lock().upload_start = Some(path);
            }
            MessageKind::UploadDone { start, done } => {
                let st = self.state(id);
                let expected = st.lock().upload_start.take();
                if self.conn.upload_policy().upload_dir.is_none()
                    && expected.as_ref() == Some(&start)
                {
                    return; // refused with 413 at start
                }
                if expected.as_ref() != Some(&start) {
                    log::warn!("connection {id}: upload done without a matching start; 400");
                    reject(&self.conn, self.epoch, &msg, StatusCode::BAD_REQUEST);
                    return;
                }
                match check_upload(self.conn.upload_policy(), &start, &done) {
                    Ok(path) => self.enqueue(
                        st,
                        Job {
                            msg,
                            upload: Some(path),
                        },
                    ),
                    Err(e) => {
                        log::warn!("connection {id}: {e}; 400");
                        reject(&self.conn, self.epoch, &msg, StatusCode::BAD_REQUEST);
                    }
                }
            }
            _ => {
                let st = self.state(id);
                {
                    let mut g = st.lock();
                    if let Some(c) = msg.download_credits() {
                        if g.credits.is_none() {
                            g.credits = Some(c);
                        }
                    } else if g.credits.is_none() && self.conn.flow_control() && msg.is_request() {
                        g.credits = Some(crate::request::MAX_CREDITS);
                    }
                    if msg.upload_stream().is_some() {
                        g.stream.clear();
                        g.stream_done = msg.upload_stream_done();
                        g.stream_balance = 0;
                    }
                }
                self.enqueue(st, Job { msg, upload: None });
            }
        }
    }

    fn enqueue(&mut self, st: Arc<ConnState>, job: Job) {
        {
            let mut g = st.lock();
            if g.busy {
                g.pending.push_back(job);
                return;
            }
            g.busy = true;
        }
        let mut q = self.shared.queue();
        q.jobs.push_back((st, job));
        self.shared.report(&q);
        drop(q);
        self.shared.ready.notify_one();
    }
}
