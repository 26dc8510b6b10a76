//! The dispatcher threads' hand-off into the async runtime: a channel of jobs, and the count of
//! requests that could start now (what a device is told).

use crate::conn_state::{ConnState, Job};
use crate::dispatcher::Handoff;
use crate::transport::Connection;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What the dispatcher threads send the serving task.
#[derive(Debug)]
pub(super) enum Fed {
    /// A message of a connection nobody owns; it is now owned by whoever takes it.
    Job(Arc<ConnState>, Job),
    /// A dispatcher stopped (shutdown): its shutdown deadline, and the connections it knew.
    Stopped(Instant, Vec<Arc<ConnState>>),
}

/// The [`Handoff`] of the async runtime.
#[derive(Debug)]
pub(super) struct Feed {
    tx: mpsc::UnboundedSender<Fed>,
    conns: Vec<Connection>,
    /// The most requests handled at once.
    limit: usize,
    /// Requests being handled now.
    running: AtomicUsize,
    /// Jobs sent and not yet taken.
    queued: AtomicUsize,
    /// The service is ready for another request.
    ready: AtomicBool,
}

impl Feed {
    pub(super) fn new(
        conns: Vec<Connection>,
        limit: usize,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Fed>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let feed = Arc::new(Self {
            tx,
            conns,
            limit,
            running: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            ready: AtomicBool::new(true),
        });
        feed.report();
        (feed, rx)
    }

    /// Tells the connections (a device, if any) how many more requests could start now.
    fn report(&self) {
        let free = if self.ready.load(Ordering::Relaxed) {
            self.limit
                .saturating_sub(self.running.load(Ordering::Relaxed))
                .saturating_sub(self.queued.load(Ordering::Relaxed))
        } else {
            0
        };
        for c in &self.conns {
            c.set_capacity(free);
        }
    }

    /// The serving task took a job off the channel.
    pub(super) fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.report();
    }

    /// A request started (`+1`) or ended (`-1`).
    pub(super) fn running(&self, started: bool) {
        if started {
            self.running.fetch_add(1, Ordering::Relaxed);
        } else {
            self.running.fetch_sub(1, Ordering::Relaxed);
        }
        self.report();
    }

    /// Whether the service is ready for more (`false` while `poll_ready` is pending).
    pub(super) fn set_ready(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::Relaxed) != ready {
            self.report();
        }
    }

    /// A dispatcher stopped.
    pub(super) fn stopped(&self, deadline: Instant, states: Vec<Arc<ConnState>>) {
        let _ = self.tx.send(Fed::Stopped(deadline, states));
    }
}

impl Handoff for Feed {
    fn hand_off(&self, st: Arc<ConnState>, job: Job) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Fed::Job(st, job)).is_err() {
            // The serving task is gone (its future was dropped): nobody will answer.
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        self.report();
    }
}
