//! The routing table of the ready-based device ([`Device`](crate::Device)): which worker
//! process gets which Mongrel2 message. Pure bookkeeping, no sockets.
//!
//! Rules:
//! - A worker announces `READY <free> <seen>`: it can start `free` more requests, and it has
//!   received `seen` assigned messages so far. The device's estimate of its free slots is
//!   `free - (assigned - seen)`, so messages still on the wire are not counted twice.
//! - A message for a client connection that no worker holds is *assigned* to the ready worker
//!   that was assigned least recently (LRU), or queued until one is ready. The connection then
//!   sticks to that worker until Mongrel2 reports it gone, so download credits, upload slices,
//!   WebSocket frames and disconnect notices reach the process that holds its state.
//! - Messages for a connection a worker holds are forwarded to it at once, ready or not.
//! - A worker that says `BYE`, or is silent for the liveness timeout, gets nothing new; its
//!   connections are forgotten.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A worker's id on the device's ROUTER socket.
pub(crate) type WorkerId = Vec<u8>;

/// What a frame from Mongrel2 is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Anything a worker may have to act on (requests, frames, upload slices).
    Work,
    /// A disconnect notice: forwarded to the holder, then the connection is forgotten.
    Disconnect,
    /// A download-credits notice: only useful to the holder.
    Credits,
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
}

impl WorkerInfo {
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
        let w = self.workers.entry(id.to_vec()).or_insert(WorkerInfo {
            free: 0,
            seen: 0,
            assigned: 0,
            last_assigned: 0,
            last_heard: now,
            leaving: false,
        });
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

    /// A `BYE`: the worker is draining; it still gets messages for connections it holds.
    pub(crate) fn bye(&mut self, id: &[u8]) {
        if let Some(w) = self.workers.get_mut(id) {
            w.leaving = true;
        }
    }

    /// Forgets a worker (it stopped answering): its connections are dropped.
    pub(crate) fn remove(&mut self, id: &[u8]) {
        self.workers.remove(id);
        self.sticky.retain(|_, (w, _)| w.as_slice() != id);
    }

    /// Forgets workers silent for longer than the liveness timeout, and connections idle for
    /// long (their disconnect notice never came).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<WorkerId> {
        let dead: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_heard) > self.liveness)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            self.remove(id);
        }
        let idle = self.sticky_idle;
        self.sticky
            .retain(|_, (_, t)| now.duration_since(*t) <= idle);
        dead
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

    fn holder(&mut self, conn: u64, class: Class, now: Instant) -> Option<WorkerId> {
        let (id, t) = self.sticky.get_mut(&conn)?;
        if !self.workers.contains_key(id) {
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
        if class != Class::Work && !waiting {
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
            if class != Class::Work {
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

    /// The workers the device knows now.
    pub(crate) fn worker_ids(&self) -> impl Iterator<Item = &WorkerId> {
        self.workers.keys()
    }

    /// Puts a frame back at the head of the queue (its worker vanished before it was sent).
    pub(crate) fn requeue(&mut self, conn: u64, frame: Bytes) {
        self.sticky.remove(&conn);
        self.queue.push_front((conn, Class::Work, frame));
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
        assert_eq!(s.route(1, Class::Work, f.clone(), t), Route::Queued);
        assert_eq!(s.route(9, Class::Credits, f.clone(), t), Route::Drop);
        s.ready(b"a", 1, 0, t);
        s.ready(b"b", 1, 0, t);
        let (w, assigned, _) = s.next_queued(t).unwrap();
        assert!(assigned);
        let other = if w == b"a" { b"b" } else { b"a" };
        // Connection 1 sticks to w; a new connection goes to the other (LRU), then none is free.
        assert_eq!(s.route(1, Class::Work, f.clone(), t), to(&w, false));
        assert_eq!(s.route(2, Class::Work, f.clone(), t), to(other, true));
        assert_eq!(s.route(3, Class::Work, f.clone(), t), Route::Queued);
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
        assert_eq!(s.route(4, Class::Work, f.clone(), t), Route::Queued);
        // BYE: no new work; silence: forgotten with its connections.
        s.bye(other);
        s.ready(&w, 1, 1, t);
        assert_eq!(s.next_queued(t).unwrap().0, w.clone());
        let later = t + Duration::from_secs(6);
        s.ready(other, 1, 2, later);
        assert_eq!(s.expire(later), vec![w.clone()]);
        assert_eq!(s.route(1, Class::Credits, f.clone(), later), Route::Drop);
        assert_eq!(s.live_workers(), 1);
        assert_eq!(s.queued(), 0);
    }
}
