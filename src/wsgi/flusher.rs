//! The flusher: a companion thread per worker that sends what a streaming response left
//! buffered once its producer (a generator waiting on something) has paused for
//! [`FLUSH_IDLE`], so no block waits in a buffer while the application computes the next.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Duration;

/// Output a paused producer left in the buffer goes out after this long without a write.
pub(crate) const FLUSH_IDLE: Duration = Duration::from_millis(10);

/// What the flusher watches: a response that may hold buffered output.
pub(crate) trait Flush: Send + Sync {
    /// How long ago the last write was, when output waits in the buffer; `None` when none does.
    /// Must not block.
    fn pending_for(&self) -> Option<Duration>;

    /// Sends what is buffered if nothing was written for [`FLUSH_IDLE`] (checked again, under
    /// the response's own lock). Called without the flusher's lock held.
    fn flush_if_idle(&self);
}

/// The companion thread's handle.
pub(crate) struct Flusher {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    target: Option<Arc<dyn Flush>>,
    stop: bool,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("Flusher")
            .field("watching", &s.target.is_some())
            .field("stop", &s.stop)
            .finish()
    }
}

impl Flusher {
    /// Starts the flusher thread.
    pub(crate) fn spawn(name: String) -> std::io::Result<Arc<Self>> {
        let f = Arc::new(Self {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let f2 = Arc::clone(&f);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || f2.run())?;
        Ok(f)
    }

    /// Watches `target` (instead of the previous one). The thread is not woken: it only has
    /// work once the target has buffered output, and the target then calls [`Flusher::poke`].
    pub(crate) fn watch(&self, target: Arc<dyn Flush>) {
        self.state.lock().target = Some(target);
    }

    /// Watches nothing.
    pub(crate) fn unwatch(&self) {
        self.state.lock().target = None;
    }

    /// Ends the thread.
    pub(crate) fn stop(&self) {
        let mut s = self.state.lock();
        s.stop = true;
        s.target = None;
        drop(s);
        self.cv.notify_one();
    }

    /// Wakes the thread: the watched response has just buffered output.
    pub(crate) fn poke(&self) {
        // Taking the lock orders this wake-up after the thread's last look at the target, so
        // it cannot be lost between that look and the wait.
        let _s = self.state.lock();
        self.cv.notify_one();
    }

    fn run(&self) {
        let mut s = self.state.lock();
        loop {
            if s.stop {
                return;
            }
            let pending = s
                .target
                .as_ref()
                .and_then(|t| t.pending_for().map(|idle| (Arc::clone(t), idle)));
            match pending {
                Some((target, idle)) if idle >= FLUSH_IDLE => {
                    drop(s);
                    target.flush_if_idle();
                    s = self.state.lock();
                }
                Some((target, idle)) => {
                    drop(target);
                    self.cv.wait_for(&mut s, FLUSH_IDLE - idle);
                }
                None => self.cv.wait(&mut s),
            }
        }
    }
}
