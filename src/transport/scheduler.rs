//! The routing table of the ready-based device ([`Device`](crate::Device)): which worker
//! process gets which Mongrel2 message. Pure bookkeeping, no sockets.
//!
//! Rules:
//! - A worker announces `READY <free> <seen>`: it can start `free` more requests, and it has
//!   received `seen` assigned messages so far. The device's estimate of its free slots is
//!   `free - (assigned - seen)`, so messages still on the wire are not counted twice.
//! - A message that starts something new on a client connection no worker holds is *assigned*
//!   to the ready worker that was assigned least recently (LRU), or queued until one is ready.
//!   The connection then sticks to that worker until Mongrel2 reports it gone, so download
//!   credits, upload slices, WebSocket frames and disconnect notices reach the process that
//!   holds its state.
//! - Messages for a connection a worker holds are forwarded to it at once, ready or not.
//! - A worker that says `BYE` gets nothing new: the next request of a keep-alive connection it
//!   holds goes to another worker, and it only gets the continuations of what it holds.
//! - A worker that is gone (its socket broke, or it was silent for the liveness timeout) is
//!   forgotten with its connections; the device closes the ones it held unless it had said
//!   `BYE`.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A worker's id on the device's ROUTER socket.
pub(crate) type WorkerId = Vec<u8>;

/// What a frame from Mongrel2 is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The start of something new on the connection: an HTTP request, the start of an async
    /// upload, a WebSocket handshake. Any worker can take it.
    Fresh,
    /// A message on a long-lived socket: WebSocket frames, JSON and XML socket messages. It
    /// stays with its holder, even one that is leaving; with no holder, any worker can take it.
    Socket,
    /// The continuation of a request the holder started: upload slices, the done message of an
    /// async upload. Only the holder can act on it.
    Continuation,
    /// A disconnect notice: forwarded to the holder, then the connection is forgotten.
    Disconnect,
    /// A download-credits notice: only useful to the holder.
    Credits,
}

impl Class {
    /// Whether a worker that does not hold the connection can take it.
    fn assignable(self) -> bool {
        matches!(self, Class::Fresh | Class::Socket)
    }
}

/// Where a frame goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// To this worker; `assigned` tells the worker it counts against its free slots.
    To { worker: WorkerId, assigned: bool },
    /// Nowhere (a notice for a connection nobody holds).
    Drop,
    /// Into the queue until a worker is ready.
    Queued,
}

#[derive(Debug)]
struct WorkerInfo {
    free: i64,
    seen: u64,
    assigned: u64,
    last_assigned: u64,
    last_heard: Instant,
    leaving: bool,
    /// Requests (fresh messages) handed to it.
    requests: u64,
    /// The device's count of lost Mongrel2 links when it last sent this worker `R`.
    resets: u64,
}

impl WorkerInfo {
    /// A worker first heard from at `now`.
    fn new(now: Instant, leaving: bool) -> Self {
        Self {
            free: 0,
            seen: 0,
            assigned: 0,
            last_assigned: 0,
            last_heard: now,
            leaving,
            requests: 0,
            resets: 0,
        }
    }

    fn estimate(&self) -> i64 {
        self.free - (self.assigned.saturating_sub(self.seen)) as i64
    }
}

/// The device's routing table. See the module docs.
#[derive(Debug)]
pub(crate) struct Scheduler {
    workers: HashMap<WorkerId, WorkerInfo>,
    sticky: HashMap<u64, (WorkerId, Instant)>,
    queue: VecDeque<(u64, Class, Bytes)>,
    clock: u64,
    /// Bumped whenever a worker comes, leaves or goes (for [`Scheduler::version`]).
    version: u64,
    liveness: Duration,
    sticky_idle: Duration,
}

impl Scheduler {
    pub(crate) fn new(liveness: Duration, sticky_idle: Duration) -> Self {
        Self {
            workers: HashMap::new(),
            sticky: HashMap::new(),
            queue: VecDeque::new(),
            clock: 0,
            version: 0,
            liveness,
            sticky_idle,
        }
    }

    /// Number of workers heard from and not leaving.
    pub(crate) fn live_workers(&self) -> usize {
        self.workers.values().filter(|w| !w.leaving).count()
    }

    /// Messages waiting for a ready worker.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A `READY free seen` announcement (also the heartbeat).
    pub(crate) fn ready(&mut self, id: &[u8], free: i64, seen: u64, now: Instant) {
        if self.workers.get(id).is_none_or(|w| w.leaving) {
            self.version += 1;
        }
        let w = self
            .workers
            .entry(id.to_vec())
            .or_insert_with(|| WorkerInfo::new(now, false));
        // A restarted worker (same id, counters from zero) starts over.
        if seen < w.seen {
            w.assigned = seen;
        }
        w.free = free;
        w.seen = seen;
        w.assigned = w.assigned.max(seen);
        w.last_heard = now;
        w.leaving = false;
    }

    /// A `BYE` (also the heartbeat of a draining worker): it gets nothing new; it still gets
    /// the continuations of what it holds.
    pub(crate) fn bye(&mut self, id: &[u8], now: Instant) {
        if self.workers.get(id).is_none_or(|w| !w.leaving) {
            self.version += 1;
        }
        let w = self
            .workers
            .entry(id.to_vec())
            .or_insert_with(|| WorkerInfo::new(now, true));
        w.leaving = true;
        w.last_heard = now;
    }

    /// Forgets a worker that is gone, and the connections it held. Returns those connections
    /// when the worker had not said `BYE` (its clients may be waiting for an answer that will
    /// never come), none when it left in order.
    pub(crate) fn remove(&mut self, id: &[u8]) -> Vec<u64> {
        let Some(w) = self.workers.remove(id) else {
            return Vec::new();
        };
        self.version += 1;
        let mut held = Vec::new();
        self.sticky.retain(|&conn, (w, _)| {
            let mine = w.as_slice() == id;
            if mine {
                held.push(conn);
            }
            !mine
        });
        if w.leaving {
            held.clear();
        }
        held.sort_unstable();
        held
    }

    /// Forgets workers silent for longer than the liveness timeout (with what
    /// [`remove`](Self::remove) returns for each), and connections idle for long (their
    /// disconnect notice never came).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(WorkerId, Vec<u64>)> {
        let dead: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_heard) > self.liveness)
            .map(|(id, _)| id.clone())
            .collect();
        let gone = dead
            .into_iter()
            .map(|id| {
                let held = self.remove(&id);
                (id, held)
            })
            .collect();
        let idle = self.sticky_idle;
        self.sticky
            .retain(|_, (_, t)| now.duration_since(*t) <= idle);
        gone
    }

    /// Changes whenever a worker comes, leaves or goes.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Counts a request handed to a worker.
    pub(crate) fn count_request(&mut self, id: &[u8]) {
        if let Some(w) = self.workers.get_mut(id) {
            w.requests += 1;
        }
    }

    /// Every known worker: its id, whether it is leaving, the requests handed to it.
    pub(crate) fn snapshot(&self) -> Vec<(WorkerId, bool, u64)> {
        let mut v: Vec<_> = self
            .workers
            .iter()
            .map(|(id, w)| (id.clone(), w.leaving, w.requests))
            .collect();
        v.sort();
        v
    }

    /// Whether the worker has said `BYE`.
    pub(crate) fn is_leaving(&self, id: &[u8]) -> bool {
        self.workers.get(id).is_some_and(|w| w.leaving)
    }

    fn pick(&mut self) -> Option<WorkerId> {
        let (id, _) = self
            .workers
            .iter()
            .filter(|(_, w)| !w.leaving && w.estimate() > 0)
            .min_by_key(|(_, w)| w.last_assigned)?;
        Some(id.clone())
    }

    fn assign(&mut self, conn: u64, id: &WorkerId, now: Instant) {
        self.clock += 1;
        if let Some(w) = self.workers.get_mut(id) {
            w.assigned += 1;
            w.last_assigned = self.clock;
        }
        self.sticky.insert(conn, (id.clone(), now));
    }

    /// The worker holding `conn`, if it should get a message of this class: a leaving
    /// worker's keep-alive connection is released at its next fresh request.
    fn holder(&mut self, conn: u64, class: Class, now: Instant) -> Option<WorkerId> {
        let (id, t) = self.sticky.get_mut(&conn)?;
        let leaving = match self.workers.get(id) {
            None => true,
            Some(w) => w.leaving && class == Class::Fresh,
        };
        if leaving {
            self.sticky.remove(&conn);
            return None;
        }
        *t = now;
        let id = id.clone();
        if class == Class::Disconnect {
            self.sticky.remove(&conn);
        }
        Some(id)
    }

    /// Routes one frame from Mongrel2.
    pub(crate) fn route(&mut self, conn: u64, class: Class, frame: Bytes, now: Instant) -> Route {
        if let Some(worker) = self.holder(conn, class, now) {
            return Route::To {
                worker,
                assigned: false,
            };
        }
        let waiting = self.queue.iter().any(|(c, _, _)| *c == conn);
        if !class.assignable() && !waiting {
            return Route::Drop;
        }
        if !waiting && self.queue.is_empty() {
            if let Some(worker) = self.pick() {
                self.assign(conn, &worker, now);
                return Route::To {
                    worker,
                    assigned: true,
                };
            }
        }
        self.queue.push_back((conn, class, frame));
        Route::Queued
    }

    /// The next queued frame that can go now, in arrival order.
    pub(crate) fn next_queued(&mut self, now: Instant) -> Option<(WorkerId, bool, Bytes)> {
        loop {
            let &(conn, class, _) = self.queue.front()?;
            if let Some(worker) = self.holder(conn, class, now) {
                let (_, _, frame) = self.queue.pop_front()?;
                return Some((worker, false, frame));
            }
            if !class.assignable() {
                self.queue.pop_front();
                continue;
            }
            let worker = self.pick()?;
            let (_, _, frame) = self.queue.pop_front()?;
            self.assign(conn, &worker, now);
            return Some((worker, true, frame));
        }
    }

    /// Forgets every client connection and every queued frame: Mongrel2 went away, so they
    /// belong to a server that no longer exists (and whose connection ids the next one reuses).
    /// Returns the number of frames dropped.
    pub(crate) fn forget_connections(&mut self) -> usize {
        self.sticky.clear();
        let n = self.queue.len();
        self.queue.clear();
        n
    }

    /// The device sent every worker it knows `R` for its `losses`-th lost link.
    pub(crate) fn reset_all(&mut self, losses: u64) {
        for w in self.workers.values_mut() {
            w.resets = losses;
        }
    }

    /// Whether worker `id` has not had `R` for the device's `losses`-th lost link (it was not
    /// known then); if so, it is marked as having had it, so it is owed at most one.
    pub(crate) fn owes_reset(&mut self, id: &[u8], losses: u64) -> bool {
        match self.workers.get_mut(id) {
            Some(w) if w.resets < losses => {
                w.resets = losses;
                true
            }
            _ => false,
        }
    }

    /// The workers the device knows now.
    pub(crate) fn worker_ids(&self) -> impl Iterator<Item = &WorkerId> {
        self.workers.keys()
    }

    /// Puts a fresh frame back at the head of the queue (its worker vanished before it was
    /// sent), for the next ready worker.
    pub(crate) fn requeue(&mut self, conn: u64, frame: Bytes) {
        self.sticky.remove(&conn);
        self.queue.push_front((conn, Class::Fresh, frame));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(w: &[u8], assigned: bool) -> Route {
        Route::To {
            worker: w.to_vec(),
            assigned,
        }
    }

    #[test]
    fn lru_sticky_and_queueing() {
        let t = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(5), Duration::from_secs(600));
        let f = Bytes::from_static(b"frame");
        // No workers: work waits, notices are dropped.
        assert_eq!(s.route(1, Class::Fresh, f.clone(), t), Route::Queued);
        assert_eq!(s.route(9, Class::Credits, f.clone(), t), Route::Drop);
        s.ready(b"a", 1, 0, t);
        s.ready(b"b", 1, 0, t);
        let (w, assigned, _) = s.next_queued(t).unwrap();
        assert!(assigned);
        let other = if w == b"a" { b"b" } else { b"a" };
        // Connection 1 sticks to w; a new connection goes to the other (LRU), then none is free.
        assert_eq!(s.route(1, Class::Fresh, f.clone(), t), to(&w, false));
        assert_eq!(s.route(2, Class::Fresh, f.clone(), t), to(other, true));
        assert_eq!(s.route(3, Class::Fresh, f.clone(), t), Route::Queued);
        // Messages for a queued connection stay behind it, even notices.
        assert_eq!(s.route(3, Class::Disconnect, f.clone(), t), Route::Queued);
        // The other worker reports it saw the assignment and is free again.
        s.ready(other, 1, 1, t);
        assert_eq!(s.next_queued(t).unwrap().0, other.to_vec());
        let (w3, assigned, _) = s.next_queued(t).unwrap();
        assert_eq!((w3.as_slice(), assigned), (&other[..], false));
        // The disconnect released connection 3; connection 1 still sticks.
        assert_eq!(s.route(3, Class::Credits, f.clone(), t), Route::Drop);
        assert_eq!(s.route(1, Class::Credits, f.clone(), t), to(&w, false));
        // A stale report (assignment still on the wire) does not over-commit.
        s.ready(&w, 1, 0, t);
        assert_eq!(s.route(4, Class::Fresh, f.clone(), t), Route::Queued);
        // BYE: no new work; silence: forgotten with its connections.
        s.bye(other, t);
        s.ready(&w, 1, 1, t);
        assert_eq!(s.next_queued(t).unwrap().0, w.clone());
        let later = t + Duration::from_secs(6);
        s.bye(other, later);
        // The silent worker had not said BYE: the connections it held are returned to close.
        assert_eq!(s.expire(later), vec![(w.clone(), vec![1, 4])]);
        assert_eq!(s.route(1, Class::Credits, f.clone(), later), Route::Drop);
        // The one left is leaving: it takes nothing new.
        assert_eq!(s.live_workers(), 0);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn a_leaving_worker_keeps_continuations_and_loses_fresh_requests() {
        let t = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(5), Duration::from_secs(600));
        let f = Bytes::from_static(b"frame");
        s.ready(b"a", 4, 0, t);
        assert_eq!(s.route(1, Class::Fresh, f.clone(), t), to(b"a", true));
        assert_eq!(s.route(2, Class::Fresh, f.clone(), t), to(b"a", true));
        s.ready(b"b", 4, 0, t);
        s.bye(b"a", t);
        assert!(s.is_leaving(b"a"));
        // What a holds continues there; the next request of its keep-alive connection moves.
        assert_eq!(
            s.route(1, Class::Continuation, f.clone(), t),
            to(b"a", false)
        );
        assert_eq!(s.route(1, Class::Credits, f.clone(), t), to(b"a", false));
        assert_eq!(s.route(2, Class::Fresh, f.clone(), t), to(b"b", true));
        assert_eq!(s.route(3, Class::Fresh, f.clone(), t), to(b"b", true));
        // A continuation for a connection nobody holds has nowhere to go; a socket message
        // does.
        assert_eq!(s.route(9, Class::Continuation, f.clone(), t), Route::Drop);
        assert_eq!(s.route(1, Class::Socket, f.clone(), t), to(b"a", false));
        assert_eq!(s.route(8, Class::Socket, f.clone(), t), to(b"b", true));
        // a left in order: its connections are forgotten, not closed.
        assert_eq!(s.remove(b"a"), Vec::<u64>::new());
        assert_eq!(s.route(1, Class::Credits, f.clone(), t), Route::Drop);
        // b dies without BYE: the connections it held are returned (to be closed).
        assert_eq!(s.remove(b"b"), vec![2, 3, 8]);
        assert_eq!(s.live_workers(), 0);
        // A fresh frame whose worker vanished goes back to the head of the queue.
        s.requeue(5, f.clone());
        assert_eq!(s.queued(), 1);
        s.ready(b"c", 1, 0, t);
        let (w, assigned, _) = s.next_queued(t).unwrap();
        assert_eq!((w.as_slice(), assigned), (&b"c"[..], true));
    }
}
