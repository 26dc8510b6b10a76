//! The reading role: which thread reads from Mongrel2 right now.
//!
//! A [`Server`](crate::Server) with one connection has no thread that only reads. A worker with
//! nothing to do takes the [`Dispatcher`] and reads the next message itself; when that message
//! starts a request, it lets the dispatcher go and answers the request on the same thread. So
//! a request costs no hand-off between threads: under load one worker reads, answers and reads
//! again while the others sleep, as long as one thread keeps up (its caches stay warm, and a
//! WSGI server's GIL stays on one thread).
//!
//! While every worker is busy somebody must still read: the download credits, upload slices
//! and disconnect notices of the requests being answered, new requests (for the queue), the
//! stop. That is the *standby*, the thread that called `serve`: once nobody has held the
//! dispatcher for [`TAKEOVER`], it takes it and reads until a worker is idle again, then wakes
//! that worker to take over. A request that is answered within [`TAKEOVER`] never wakes it.

use crate::conn_state::ConnState;
use crate::dispatcher::{Dispatcher, POLL};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the dispatcher may be left alone (every worker busy answering) before the standby
/// takes it. It bounds how late a busy server sees a credit, a disconnect or a new request
/// while its workers are all answering: short enough not to matter next to a request that
/// takes this long, long enough that a quick request never wakes the standby.
pub(crate) const TAKEOVER: Duration = Duration::from_micros(500);

/// How long the standby sleeps at most while the dispatcher is held (a release or the end of
/// routing wakes it earlier).
const HELD_WAIT: Duration = Duration::from_secs(1);

/// The workers, as the standby sees them.
pub(crate) trait Idle {
    /// Whether a worker waits for a job (and could read from Mongrel2 itself).
    fn has_waiting(&self) -> bool;
    /// Whether a worker has been answering one request for longer than `d`.
    fn busy_longer_than(&self, d: Duration) -> bool;
    /// Wakes the most recently idle worker, if one waits.
    fn wake_one(&self);
}

/// The dispatcher, and who holds it.
pub(crate) struct Reader {
    dispatcher: Mutex<Dispatcher>,
    role: Mutex<Role>,
    /// Wakes the standby: the dispatcher was let go, or routing finished.
    changed: Condvar,
    stop: Arc<AtomicBool>,
    grace: Duration,
}

#[derive(Debug)]
struct Role {
    held: bool,
    /// How many times the dispatcher was taken.
    leads: u64,
    /// When the dispatcher was last let go.
    released: Instant,
    /// The standby sleeps until the dispatcher is let go.
    standby_waiting: bool,
    /// The shutdown deadline, once routing is finished.
    finished: Option<Instant>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("role", &*self.role.lock())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Routing for `dispatcher`, which stops (drains) once `stop` is set and gives in-flight
    /// requests `grace` to finish.
    pub(crate) fn new(dispatcher: Dispatcher, stop: Arc<AtomicBool>, grace: Duration) -> Self {
        Self {
            dispatcher: Mutex::new(dispatcher),
            role: Mutex::new(Role {
                held: false,
                leads: 0,
                released: Instant::now(),
                standby_waiting: false,
                finished: None,
            }),
            changed: Condvar::new(),
            stop,
            grace,
        }
    }

    /// The dispatcher, unless somebody else holds it or routing is finished.
    pub(crate) fn try_lead(&self) -> Option<Lead<'_>> {
        let d = self.dispatcher.try_lock()?;
        if d.finished().is_some() {
            return None;
        }
        let mut role = self.role.lock();
        role.held = true;
        role.leads += 1;
        drop(role);
        Some(Lead {
            reader: self,
            dispatcher: Some(d),
        })
    }

    /// The standby's loop (see the module docs), until routing is finished; returns the
    /// shutdown deadline and the connections known then.
    pub(crate) fn standby(&self, workers: &dyn Idle) -> (Instant, Vec<Arc<ConnState>>) {
        let mut role = self.role.lock();
        let mut seen = role.leads;
        loop {
            if let Some(deadline) = role.finished {
                drop(role);
                return (deadline, self.dispatcher.lock().take_states());
            }
            if role.held {
                if role.leads == seen {
                    // Held since the last look (a worker waiting at the socket for the next
                    // message): sleep until it lets go.
                    role.standby_waiting = true;
                    self.changed.wait_for(&mut role, HELD_WAIT);
                    role.standby_waiting = false;
                } else {
                    // Taken and let go again since the last look (a worker reading and
                    // answering in turn): look again later, without being woken every time.
                    seen = role.leads;
                    self.changed.wait_for(&mut role, TAKEOVER);
                }
                continue;
            }
            let left = role.released.elapsed();
            if left < TAKEOVER {
                self.changed.wait_for(&mut role, TAKEOVER - left);
                continue;
            }
            drop(role);
            if let Some(mut lead) = self.try_lead() {
                // Every worker is busy: read while one of them has been at a request for long
                // (its credits and disconnect notice must come in), until one is free to read.
                while !lead.step(POLL)
                    && !workers.has_waiting()
                    && workers.busy_longer_than(TAKEOVER)
                {}
                drop(lead);
                workers.wake_one();
            }
            role = self.role.lock();
            seen = role.leads;
        }
    }
}

/// The dispatcher, held; let go when dropped.
pub(crate) struct Lead<'a> {
    reader: &'a Reader,
    dispatcher: Option<MutexGuard<'a, Dispatcher>>,
}

impl Lead<'_> {
    /// Waits up to `wait` for one message and routes it; true once routing is finished.
    pub(crate) fn step(&mut self, wait: Duration) -> bool {
        let d = self.dispatcher.as_mut().expect("held until dropped");
        d.step(&self.reader.stop, self.reader.grace, wait).is_some()
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let dispatcher = self.dispatcher.take();
        let finished = dispatcher.as_ref().and_then(|d| d.finished());
        // The role is updated before the dispatcher is let go: whoever takes it next marks it
        // held after this.
        let mut role = self.reader.role.lock();
        role.held = false;
        role.released = Instant::now();
        if finished.is_some() {
            role.finished = finished;
        }
        if role.standby_waiting || role.finished.is_some() {
            self.reader.changed.notify_one();
        }
        drop(role);
        drop(dispatcher);
    }
}
