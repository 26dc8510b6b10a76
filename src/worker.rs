//! The idle-worker queue between the dispatcher and the worker threads, and [`Worker`], a
//! worker thread's source of requests.

use crate::conn_state::{ConnState, Job};
use crate::dispatcher::{Handoff, POLL};
use crate::reader::{Idle, Reader};
use crate::request::Request;
use crate::stats::Stats;
use crate::transport::Connection;
use crate::upload::UploadFile;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a waiting worker looks at the queue again (a notify wakes it earlier).
const IDLE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<(Arc<ConnState>, Job)>,
    closing: bool,
    /// Workers waiting in `Worker::next` (the one reading from Mongrel2 among them).
    idle: usize,
    /// A waiting worker holds the dispatcher (see `reader`): the job it routes is its own.
    leading: bool,
    /// The wake-up signals of the workers waiting in `Worker::next`, the most recently idle
    /// last: a new job wakes that one, so when one thread can keep up, the same thread takes
    /// request after request (its caches stay warm, and a WSGI server's GIL stays put).
    waiting: Vec<Arc<Condvar>>,
}

/// What the dispatcher and the workers share: the queue of jobs for idle workers, and the
/// count of live worker threads.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The connections the jobs come from (told how many requests could start).
    conns: Vec<Connection>,
    queue: Mutex<Queue>,
    live_workers: Mutex<usize>,
    done: Condvar,
    stats: Arc<Stats>,
    /// For each worker, when it took the request it is answering (nanoseconds after `origin`,
    /// plus one), or 0 while it has none.
    busy: Mutex<Vec<Arc<AtomicU64>>>,
    origin: Instant,
}

impl Shared {
    pub(crate) fn new(conns: Vec<Connection>, stats: Arc<Stats>) -> Self {
        Self {
            conns,
            stats,
            queue: Mutex::new(Queue::default()),
            live_workers: Mutex::new(0),
            done: Condvar::new(),
            busy: Mutex::default(),
            origin: Instant::now(),
        }
    }

    /// Tells the connection (a device, if any) how many requests could start right now, and
    /// [`ServerStats`](crate::ServerStats) how many are queued and how many workers idle.
    fn report(&self, q: &Queue) {
        self.stats.queued.store(q.jobs.len(), Ordering::Relaxed);
        self.stats.idle.store(q.idle, Ordering::Relaxed);
        let free = q.idle.saturating_sub(q.jobs.len());
        for c in &self.conns {
            c.set_capacity(free);
        }
    }

    /// No more jobs will come: workers empty the queue, then their `next` returns `None`.
    pub(crate) fn close(&self) {
        let mut q = self.queue.lock();
        q.closing = true;
        for w in q.waiting.drain(..) {
            w.notify_one();
        }
    }

    /// A worker thread for `shared`, numbered `index`, that reads from Mongrel2 itself when
    /// it is idle and `reader` is given. Counted live until it is dropped.
    pub(crate) fn worker(shared: &Arc<Self>, index: usize, reader: Option<Arc<Reader>>) -> Worker {
        *shared.live_workers.lock() += 1;
        let busy = Arc::new(AtomicU64::new(0));
        shared.busy.lock().push(Arc::clone(&busy));
        Worker {
            shared: Arc::clone(shared),
            reader,
            busy,
            current: None,
            index,
            wake: Arc::new(Condvar::new()),
        }
    }

    /// Waits until every worker is gone or `deadline` passes; returns how many are still busy.
    pub(crate) fn wait_workers(&self, deadline: Instant) -> usize {
        let mut live = self.live_workers.lock();
        while *live > 0 && Instant::now() < deadline {
            self.done.wait_until(&mut live, deadline);
        }
        *live
    }
}

impl Idle for Shared {
    fn has_waiting(&self) -> bool {
        !self.queue.lock().waiting.is_empty()
    }

    fn busy_longer_than(&self, d: Duration) -> bool {
        let now = self.origin.elapsed().as_nanos() as u64;
        let d = d.as_nanos() as u64;
        self.busy.lock().iter().any(|b| {
            let since = b.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since - 1) > d
        })
    }

    fn wake_one(&self) {
        let wake = self.queue.lock().waiting.pop();
        if let Some(w) = wake {
            w.notify_one();
        }
    }
}

impl Handoff for Shared {
    /// Hands a job for a connection nobody owns to the most recently idle worker (or to the
    /// idle worker routing it).
    fn hand_off(&self, st: Arc<ConnState>, job: Job) {
        let mut q = self.queue.lock();
        q.jobs.push_back((st, job));
        self.report(&q);
        let wake = if q.leading { None } else { q.waiting.pop() };
        drop(q);
        if let Some(w) = wake {
            w.notify_one();
        }
    }
}

/// A worker thread's source of requests; see [`Server::serve_with`](crate::Server::serve_with).
/// `Send`, so it can be used inside `Python::detach` and the like.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    /// The dispatcher this worker reads with while it is idle, if any.
    reader: Option<Arc<Reader>>,
    /// When this worker took the request it is answering (see `Shared::busy`).
    busy: Arc<AtomicU64>,
    /// The connection this worker owns right now.
    current: Option<Arc<ConnState>>,
    index: usize,
    /// What wakes this worker when a job comes while it waits.
    wake: Arc<Condvar>,
}

impl Worker {
    /// This worker's number, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    fn make(&mut self, st: Arc<ConnState>, job: Job) -> Request {
        if self.reader.is_some() {
            let now = self.shared.origin.elapsed().as_nanos() as u64;
            self.busy.store(now + 1, Ordering::Relaxed);
        }
        self.current = Some(Arc::clone(&st));
        let upload = job.upload.map(UploadFile::new);
        let conn = st.conn.clone();
        Request::new(job.msg, conn, st, upload)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let mut live = self.shared.live_workers.lock();
        *live = live.saturating_sub(1);
        self.shared.done.notify_all();
    }
}

impl Worker {
    /// Like [`next`](Iterator::next), without waiting: `Err(NotReady)` when no request is
    /// ready now (queued, or a message already waiting at Mongrel2's socket, which it reads
    /// when no other thread is reading) and the server is not shutting down. A thread that must give something up to
    /// wait (a WSGI worker its hold on Python) calls this first and waits only when it has to.
    ///
    /// # Errors
    /// [`NotReady`] when nothing is ready.
    pub fn try_next(&mut self) -> Result<Option<Request>, NotReady> {
        self.take(false)
    }

    /// The next request: this worker's connection's next message first, then the queue;
    /// waits for one when `wait`, else `Err(NotReady)` when there is none.
    fn take(&mut self, wait: bool) -> Result<Option<Request>, NotReady> {
        self.busy.store(0, Ordering::Relaxed);
        if let Some(st) = self.current.take() {
            if let Some(job) = st.next_pending() {
                return Ok(Some(self.make(st, job)));
            }
        }
        let mut q = self.shared.queue.lock();
        q.idle += 1;
        // Without `wait`, a message already waiting at Mongrel2's socket is read once.
        let mut looked = false;
        loop {
            if let Some((st, job)) = q.jobs.pop_front() {
                q.idle -= 1;
                self.shared.report(&q);
                drop(q);
                return Ok(Some(self.make(st, job)));
            }
            if q.closing {
                q.idle -= 1;
                return Ok(None);
            }
            // Nothing queued: read from Mongrel2 until a job comes, unless another thread is.
            if !q.leading && (wait || !looked) {
                if let Some(mut lead) = self.reader.as_deref().and_then(Reader::try_lead) {
                    q.leading = true;
                    self.shared.report(&q);
                    drop(q);
                    loop {
                        let finished = lead.step(if wait { POLL } else { Duration::ZERO });
                        q = self.shared.queue.lock();
                        if !wait || finished || q.closing || !q.jobs.is_empty() {
                            break;
                        }
                        drop(q);
                    }
                    q.leading = false;
                    drop(lead);
                    looked = true;
                    continue;
                }
            }
            if !wait {
                q.idle -= 1;
                return Err(NotReady);
            }
            self.shared.report(&q);
            q.waiting.push(Arc::clone(&self.wake));
            self.wake.wait_for(&mut q, IDLE_POLL);
            // Woken by a job (and taken off the list), or timed out (still on it).
            let me = Arc::as_ptr(&self.wake);
            q.waiting.retain(|w| Arc::as_ptr(w) != me);
        }
    }
}

/// [`Worker::try_next`] found no request ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady;

/// `Worker` is an iterator of requests: `for req in worker { ... }`.
impl Iterator for Worker {
    type Item = Request;

    /// Blocks until the next message for this worker, or returns `None` once the server is
    /// shutting down and the queue is empty. Calling it again means the previous request's
    /// handler has returned: later messages for the same client come to this worker first.
    fn next(&mut self) -> Option<Request> {
        self.take(true).ok().flatten()
    }
}
