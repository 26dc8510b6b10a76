//! [`WsgiServer::timeout`](super::WsgiServer::timeout) (`m2wsgi --timeout`): a watchdog thread
//! that answers `504 Gateway Timeout` for a request whose application call (iterating its
//! response included) runs too long, logs the Python stack of the thread running it, and counts
//! that thread as lost until the application returns.
//!
//! Python threads cannot be stopped from outside, so the thread is left running. The request is
//! taken out of its hands through the runtime instead ([`Responder::give_up`], the path the
//! shutdown deadline's `503` takes): the client is answered at once (or, when the response had
//! started, its connection is dropped), and whatever the thread writes later fails, so it never
//! reaches the client. When the application finally returns, the thread goes back to serving.

use super::server::Label;
use crate::conn_state::GaveUp;
use crate::Responder;
use http::StatusCode;
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longer timeouts are taken as this one (a century), so that deadlines stay representable.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The worker threads lost to the timeout: stuck in a request that was already answered `504`,
/// until their application call returns. Shared by the watchdog and whatever decides to recycle
/// the process ([`WsgiServer::lost_threads`](super::WsgiServer::lost_threads)).
#[derive(Debug, Default)]
pub(crate) struct LostThreads {
    threads: AtomicUsize,
    stuck: AtomicUsize,
    total: AtomicU64,
}

impl LostThreads {
    /// The worker threads serving (0 until serving starts).
    pub(crate) fn threads(&self) -> usize {
        self.threads.load(Ordering::SeqCst)
    }

    /// The threads stuck right now.
    pub(crate) fn stuck(&self) -> usize {
        self.stuck.load(Ordering::SeqCst)
    }

    /// The requests that ran past the timeout since serving started.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Whether more than half the threads are stuck: the process serves at less than half its
    /// capacity and should be recycled (the stuck threads cannot be stopped any other way).
    pub(crate) fn should_recycle(&self) -> bool {
        more_than_half(self.stuck(), self.threads())
    }

    pub(crate) fn set_threads(&self, n: usize) {
        self.threads.store(n, Ordering::SeqCst);
    }
}

fn more_than_half(stuck: usize, threads: usize) -> bool {
    threads > 0 && stuck * 2 > threads
}

/// The request a worker thread is running.
struct Running {
    started: Instant,
    responder: Responder,
    what: Label,
    timed_out: bool,
    /// The timeout was logged (the thread's end is logged after it).
    reported: bool,
}

/// A worker thread, as the watchdog reports it.
struct Thread {
    /// `m2wsgi-worker-N`.
    name: String,
    /// Its `threading.get_ident()`, the key of `sys._current_frames()`.
    ident: Option<u64>,
}

/// The watchdog: one thread for the whole server, one slot per worker.
pub(crate) struct Watchdog {
    timeout: Duration,
    slots: Vec<Mutex<Option<Running>>>,
    threads: Vec<Mutex<Thread>>,
    lost: Arc<LostThreads>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Signalled when a timeout has been logged.
    reported: Condvar,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("timeout", &self.timeout)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

/// What the watchdog did about one request, for the log.
struct Fired {
    index: usize,
    what: Label,
    elapsed: Duration,
    did: GaveUp,
    stuck: usize,
}

impl Watchdog {
    /// Starts the watchdog thread for `threads` workers.
    pub(crate) fn spawn(
        timeout: Duration,
        threads: usize,
        lost: Arc<LostThreads>,
    ) -> std::io::Result<Arc<Self>> {
        let dog = Arc::new(Self {
            timeout: timeout.min(LONGEST),
            slots: (0..threads).map(|_| Mutex::new(None)).collect(),
            threads: (0..threads)
                .map(|i| {
                    Mutex::new(Thread {
                        name: format!("m2wsgi-worker-{i}"),
                        ident: None,
                    })
                })
                .collect(),
            lost,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            reported: Condvar::new(),
        });
        let run = Arc::clone(&dog);
        std::thread::Builder::new()
            .name("m2wsgi-watchdog".into())
            .spawn(move || run.run())?;
        Ok(dog)
    }

    /// Worker `index`'s side of the watchdog; `ident` is its Python thread id.
    pub(crate) fn clock(self: &Arc<Self>, index: usize, ident: Option<u64>) -> Clock {
        if let Some(t) = self.threads.get(index) {
            t.lock().ident = ident;
        }
        Clock {
            dog: Arc::clone(self),
            index,
        }
    }

    /// Ends the watchdog thread.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
    }

    fn run(&self) {
        let mut stop = self.stop.lock();
        while !*stop {
            drop(stop);
            let next = self.check();
            stop = self.stop.lock();
            if !*stop {
                self.wake.wait_until(&mut stop, next);
            }
        }
    }

    /// Gives up every request past its deadline; returns when to look again (the earliest
    /// deadline still to come: a request that starts later has a later one).
    fn check(&self) -> Instant {
        let now = Instant::now();
        let mut next = now + self.timeout;
        let mut fired = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let mut slot = slot.lock();
            let Some(r) = slot.as_mut().filter(|r| !r.timed_out) else {
                continue;
            };
            let deadline = r.started + self.timeout;
            if deadline > now {
                next = next.min(deadline);
                continue;
            }
            r.timed_out = true;
            // Under the slot's lock, so the worker cannot end the request in between: either it
            // finished in time, or what it sends from now on is refused.
            let did = r.responder.give_up(StatusCode::GATEWAY_TIMEOUT);
            let stuck = self.lost.stuck.fetch_add(1, Ordering::SeqCst) + 1;
            self.lost.total.fetch_add(1, Ordering::SeqCst);
            fired.push(Fired {
                index,
                what: r.what.clone(),
                elapsed: now - r.started,
                did,
                stuck,
            });
        }
        // The clients are answered; now the stacks, with the GIL.
        for f in fired {
            self.report(&f);
            if let Some(r) = self.slots[f.index].lock().as_mut() {
                r.reported = true;
            }
            self.reported.notify_all();
        }
        next
    }

    fn report(&self, f: &Fired) {
        let (name, ident) = match self.threads.get(f.index) {
            Some(t) => {
                let t = t.lock();
                (t.name.clone(), t.ident)
            }
            None => (format!("m2wsgi-worker-{}", f.index), None),
        };
        let answer = match f.did {
            GaveUp::Answered => "answered 504 Gateway Timeout",
            GaveUp::Dropped => "its response had started: the connection is dropped",
            GaveUp::Nothing => "the client was gone already",
        };
        let stack = match ident {
            Some(ident) => Python::attach(|py| python_stack(py, ident))
                .unwrap_or_else(|e| format!("(cannot read it: {e})")),
            None => "(unknown: the thread's Python id could not be read)".into(),
        };
        let threads = self.lost.threads();
        super::metrics::count_timeout();
        tracing::error!(
            "{}: the application is still running after {:.1?} (timeout {:?}): {answer}; \
             thread {name} is lost until the application returns (Python threads cannot be \
             stopped), {} of {threads} thread(s) stuck. Its Python stack (most recent call \
             last):\n{}",
            f.what,
            f.elapsed,
            self.timeout,
            f.stuck,
            stack.trim_end()
        );
        if self.lost.should_recycle() {
            if super::supervisor::request_recycle() {
                tracing::error!(
                    "{} of {threads} worker thread(s) are stuck in requests past the timeout: \
                     asked the supervisor to replace this worker",
                    self.lost.stuck()
                );
            } else {
                tracing::error!(
                    "{} of {threads} worker thread(s) are stuck in requests past the timeout: \
                     this process should be recycled (restart it, or run m2wsgi with \
                     --workers, which replaces such a worker; stuck Python threads cannot be \
                     stopped any other way)",
                    self.lost.stuck()
                );
            }
        }
    }

    /// Worker `index` starts the application for a request.
    fn begin(&self, index: usize, responder: Responder, what: Label) {
        if let Some(slot) = self.slots.get(index) {
            *slot.lock() = Some(Running {
                started: Instant::now(),
                responder,
                what,
                timed_out: false,
                reported: false,
            });
        }
    }

    /// Whether worker `index`'s request ran past the timeout.
    fn timed_out(&self, index: usize) -> bool {
        self.slots
            .get(index)
            .is_some_and(|s| s.lock().as_ref().is_some_and(|r| r.timed_out))
    }

    /// Worker `index` is done with its request (the application returned). Call it without
    /// the GIL: it waits for the watchdog to log a timeout (which takes the GIL) first, so the
    /// log tells the story in order.
    ///
    /// `wait` false skips that wait (for a guard dropped by a panic, when the GIL may be held).
    fn end(&self, index: usize, wait: bool) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        let mut slot = slot.lock();
        while wait && slot.as_ref().is_some_and(|r| r.timed_out && !r.reported) {
            self.reported.wait(&mut slot);
        }
        let Some(r) = slot.take() else {
            return;
        };
        drop(slot);
        if !r.timed_out {
            return;
        }
        let stuck = self
            .lost
            .stuck
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        let elapsed = r.started.elapsed();
        tracing::warn!(
            "{}: the application returned after {elapsed:.1?}, {:.1?} past the timeout; its \
             response was discarded; thread m2wsgi-worker-{index} serves again ({stuck} of {} \
             thread(s) stuck)",
            r.what,
            elapsed.saturating_sub(self.timeout),
            self.lost.threads()
        );
    }
}

/// The frames of Python thread `ident` (`sys._current_frames()[ident]`), formatted with
/// `traceback.format_stack`.
fn python_stack(py: Python<'_>, ident: u64) -> PyResult<String> {
    let frame = py
        .import("sys")?
        .call_method0("_current_frames")?
        .call_method1("get", (ident,))?;
    if frame.is_none() {
        return Ok(
            "(no Python frame: the thread is in m2wsgi's own code, sending the response \
                   or waiting for the client)"
                .into(),
        );
    }
    let lines = py
        .import("traceback")?
        .call_method1("format_stack", (frame,))?;
    PyString::new(py, "")
        .call_method1("join", (lines,))?
        .extract()
}

/// A worker thread's side of the watchdog.
#[derive(Debug)]
pub(crate) struct Clock {
    dog: Arc<Watchdog>,
    index: usize,
}

impl Clock {
    /// Times the application's call for one request, until the returned guard is dropped.
    pub(crate) fn start(&self, responder: Responder, what: Label) -> Timed<'_> {
        self.dog.begin(self.index, responder, what);
        Timed {
            clock: self,
            ended: false,
        }
    }
}

/// One request being timed, until [`Timed::end`].
#[derive(Debug)]
#[must_use = "call end() when the application has returned"]
pub(crate) struct Timed<'a> {
    clock: &'a Clock,
    ended: bool,
}

impl Timed<'_> {
    /// Whether the request ran past the timeout (it was answered `504` then).
    pub(crate) fn timed_out(&self) -> bool {
        self.clock.dog.timed_out(self.clock.index)
    }

    /// Ends the timing, logging a late return. Call it with the GIL released (see
    /// `Watchdog::end`).
    pub(crate) fn end(mut self) {
        self.ended = true;
        self.clock.dog.end(self.clock.index, true);
    }
}

impl Drop for Timed<'_> {
    /// Frees the slot if [`end`](Timed::end) was not reached (a panic).
    fn drop(&mut self) {
        if !self.ended {
            self.clock.dog.end(self.clock.index, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_half_is_strict() {
        assert!(!more_than_half(0, 0));
        assert!(more_than_half(1, 1));
        assert!(!more_than_half(1, 2));
        assert!(more_than_half(2, 3));
        assert!(!more_than_half(2, 4));
        assert!(more_than_half(3, 4));
        let lost = LostThreads::default();
        lost.set_threads(2);
        lost.stuck.store(1, Ordering::SeqCst);
        assert!(!lost.should_recycle());
        lost.stuck.store(2, Ordering::SeqCst);
        assert!(lost.should_recycle());
    }
}
