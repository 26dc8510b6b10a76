//! [`ServerStats`]: what a running [`Server`](crate::Server)'s queue looks like right now, read
//! from any thread (a metrics endpoint, say) without taking the queue's lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The counts themselves, stored by the worker queue whenever it changes (under the lock it
/// already holds then: one relaxed store each).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Jobs waiting for an idle worker.
    pub(crate) queued: AtomicUsize,
    /// Workers waiting for a job.
    pub(crate) idle: AtomicUsize,
    /// Worker threads the server was started with.
    pub(crate) workers: AtomicUsize,
}

/// A live view of a [`Server`](crate::Server)'s worker queue: from
/// [`Server::stats`](crate::Server::stats), `Clone + Send + Sync`, cheap to read (three relaxed
/// loads, no lock). The values are a snapshot that may be a moment old.
///
/// ```no_run
/// # use m2wsgi::{Connection, Server};
/// let server = Server::new(Connection::builder("tcp://127.0.0.1:9999").connect()?).workers(4);
/// let stats = server.stats();
/// std::thread::spawn(move || loop {
///     eprintln!("{} queued, {} of {} workers idle", stats.queued(), stats.idle_workers(), stats.workers());
///     std::thread::sleep(std::time::Duration::from_secs(10));
/// });
/// # Ok::<(), m2wsgi::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerStats(pub(crate) Arc<Stats>);

impl ServerStats {
    /// Messages received and waiting for an idle worker (0 when a worker is free: a message
    /// goes straight to one). Behind `m2wsgi-device` it stays near 0, since the device only
    /// sends a process as many requests as it has free workers.
    pub fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Relaxed)
    }

    /// Worker threads waiting for a message.
    pub fn idle_workers(&self) -> usize {
        self.0.idle.load(Ordering::Relaxed)
    }

    /// Worker threads the server runs (0 until it starts serving).
    pub fn workers(&self) -> usize {
        self.0.workers.load(Ordering::Relaxed)
    }

    /// Worker threads handling a message: [`workers`](Self::workers) less
    /// [`idle_workers`](Self::idle_workers).
    pub fn busy_workers(&self) -> usize {
        self.workers().saturating_sub(self.idle_workers())
    }
}
