//! Per-client-connection state, shared by the dispatcher (which feeds it from Mongrel2's
//! messages) and by every handle on that connection (which waits on it): download credits,
//! streamed-upload slices, the disconnect flag, and dispatch ownership with the messages that
//! wait for the owner. Flow control in both directions lives here.

use crate::codec::response::Ctl;
use crate::error::{Error, Result};
use crate::transport::Connection;
use crate::Message;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Mongrel2's download window with `download.flow_control=1` (`MAX_CREDITS`, fixed in 1.12).
pub const MAX_CREDITS: u64 = 102_400;

/// Largest message a flow-controlled stream sends at once.
pub(crate) const FLOW_PIECE: usize = 64 * 1024;
/// A flow-controlled writer sends once this much credit (or the whole rest) is available.
const MIN_FLOW_PIECE: u64 = 16 * 1024;
/// How long a flow-controlled writer or a streamed-upload reader waits for Mongrel2 before
/// giving the connection up.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Upload credit granted at a time for streamed uploads.
const UPLOAD_GRANT: i64 = 64 * 1024;
/// How often a waiting handle looks again (a notify wakes it earlier).
const WAIT_STEP: Duration = Duration::from_millis(200);

/// What [`ConnState::give_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// The client got the status and the connection is closed.
    Answered,
    /// An answer had started: the connection was dropped.
    Dropped,
    /// Nothing: the client was gone already, or no request is being handled.
    Nothing,
}

/// One message for a worker and, for a completed async upload, the verified file.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) msg: Message,
    pub(crate) upload: Option<PathBuf>,
}

/// The state of one client connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub(crate) id: u64,
    /// The connection's epoch (see `Connection::epoch`): the id names this client only while
    /// the epoch is current.
    pub(crate) epoch: u64,
    /// The Mongrel2 connection the client came through (a server may take requests from
    /// several).
    pub(crate) conn: Connection,
    inner: Mutex<ConnInner>,
    cond: Condvar,
}

/// The mutable part of [`ConnState`], behind its lock.
#[derive(Debug, Default)]
pub(crate) struct ConnInner {
    pub(crate) disconnected: bool,
    /// Download credits left, once flow control is on for this connection.
    pub(crate) credits: Option<u64>,
    /// `x-mongrel2-upload-start` seen for this connection.
    pub(crate) upload_start: Option<Bytes>,
    /// Streamed upload: slices received and not yet read, whether the last came, credit balance.
    pub(crate) stream: VecDeque<Bytes>,
    pub(crate) stream_done: bool,
    pub(crate) stream_balance: i64,
    /// Streamed upload: when it started, when its last slice came, bytes so far (the pace
    /// [`StreamLimits`](crate::upload::StreamLimits) checks).
    pub(crate) stream_started: Option<Instant>,
    pub(crate) stream_last: Option<Instant>,
    pub(crate) stream_received: u64,
    /// Bytes of an answer went out since the owner took its current message.
    pub(crate) answering: bool,
    /// The server answered the current request itself (`503` at the shutdown deadline, `504`
    /// past a timeout, `413` for a body above the limit: see [`ConnState::give_up`]); the
    /// owner's writes fail from then on.
    pub(crate) gave_up: Option<http::StatusCode>,
    /// An async upload answered at its start message (refused): its done message needs no
    /// answer.
    pub(crate) upload_refused: Option<Bytes>,
    /// Dispatch: a worker owns this connection now; messages that came meanwhile.
    pub(crate) busy: bool,
    pub(crate) pending: VecDeque<Job>,
    pub(crate) last_seen: Option<Instant>,
    /// Async handles waiting on this connection (credits, upload slices, a disconnect), woken
    /// by [`ConnState::notify`] as the condition variable wakes the threads.
    wakers: Vec<Waker>,
}

impl ConnInner {
    /// Wakes `waker` at the next [`ConnState::notify`]. Registered under the lock that guards
    /// the condition it waits for, so no wake-up is lost.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // the async runtime's
    pub(crate) fn register(&mut self, waker: &Waker) {
        if !self.wakers.iter().any(|w| w.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
    }
}

/// What a streamed-upload reader does next (see [`ConnState::upload_step`]).
enum SliceStep {
    /// A slice, or `None` at the end of the body.
    Ready(Option<Bytes>),
    /// Grant Mongrel2 this much upload credit, then look again.
    Grant(i64),
    /// Wait for a slice until this instant.
    Wait(Instant),
    /// The body is slower than the limits allow (this many bytes came).
    TooSlow(u64),
}

/// What [`ConnState::poll_upload_slice`] found.
#[cfg_attr(not(feature = "tower"), allow(dead_code))] // the deadline is the async runtime's
#[derive(Debug)]
pub(crate) enum UploadPoll {
    /// A slice, or `None` at the end of the body.
    Ready(Option<Bytes>),
    /// Nothing yet: the waker is registered; poll again when woken or at this instant.
    Pending(Instant),
}

impl ConnState {
    pub(crate) fn new(id: u64, epoch: u64, conn: Connection) -> Self {
        Self {
            id,
            epoch,
            conn,
            inner: Mutex::new(ConnInner::default()),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ConnInner> {
        self.inner.lock()
    }

    /// Wakes every handle waiting on this connection, threads and tasks. Call it without
    /// holding the lock.
    pub(crate) fn notify(&self) {
        self.cond.notify_all();
        let wakers = std::mem::take(&mut self.lock().wakers);
        for w in wakers {
            w.wake();
        }
    }

    /// The next message for the owner of this connection, which has finished the previous one;
    /// `None` gives the connection up (the dispatcher hands its next message to any worker).
    pub(crate) fn next_pending(&self) -> Option<Job> {
        let mut g = self.lock();
        let job = g.pending.pop_front();
        match job {
            Some(_) => g.answering = false,
            None => g.busy = false,
        }
        job
    }

    /// Whether flow control is on for this connection.
    pub(crate) fn flow_controlled(&self) -> bool {
        self.lock().credits.is_some()
    }

    /// Download credits arrived.
    pub(crate) fn add_credits(&self, bytes: u64) {
        let mut g = self.lock();
        g.credits = Some(g.credits.unwrap_or(0) + bytes);
        drop(g);
        self.notify();
    }

    /// How many of the next `want` bytes may be sent now: all of them without flow control;
    /// with it, at most [`FLOW_PIECE`], waiting until at least 16 KiB (or all of `want`) of
    /// credit is there, and taking it.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone, or when no credit came for a minute.
    pub(crate) fn take_credits(&self, want: usize, gone: impl Fn() -> bool) -> Result<usize> {
        let mut g = self.lock();
        let deadline = Instant::now() + STALL_TIMEOUT;
        loop {
            if let Some(n) = Self::credit_step(&mut g, want, gone())? {
                return Ok(n);
            }
            if Instant::now() >= deadline {
                self.warn_stalled();
                return Err(Error::Closed);
            }
            self.cond.wait_for(&mut g, WAIT_STEP);
        }
    }

    /// [`take_credits`](Self::take_credits) for a task: `Pending` (and `cx` woken when credits
    /// come or the client goes) while the window is short. The caller bounds the wait by
    /// [`STALL_TIMEOUT`] (and then calls [`warn_stalled`](Self::warn_stalled)).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // the async runtime's
    pub(crate) fn poll_credits(
        &self,
        cx: &mut Context<'_>,
        want: usize,
        gone: bool,
    ) -> Poll<Result<usize>> {
        let mut g = self.lock();
        match Self::credit_step(&mut g, want, gone) {
            Ok(None) => {
                g.register(cx.waker());
                Poll::Pending
            }
            Ok(Some(n)) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Logs a flow-controlled writer giving up for want of credits.
    pub(crate) fn warn_stalled(&self) {
        tracing::warn!(
            "connection {}: no download credits for {STALL_TIMEOUT:?}; giving up",
            self.id
        );
    }

    /// One look at the credit window: `Some(n)` bytes may go now (taken from the window),
    /// `None` means wait.
    fn credit_step(g: &mut ConnInner, want: usize, gone: bool) -> Result<Option<usize>> {
        if g.disconnected || gone {
            return Err(Error::Closed);
        }
        g.answering = true;
        let Some(c) = g.credits else {
            return Ok(Some(want));
        };
        let want = want.min(FLOW_PIECE) as u64;
        if c >= want.min(MIN_FLOW_PIECE) {
            // As much of the piece as the window allows (at least 16 KiB).
            let n = want.min(c);
            g.credits = Some(c - n);
            return Ok(Some(n as usize));
        }
        Ok(None)
    }

    /// Answers what is still running on this connection when the server gives up waiting
    /// (the shutdown deadline passed): `503` if nothing was sent yet, else the connection is
    /// dropped (a truncated body must not look complete). Later writes of the handler fail.
    pub(crate) fn abandon(&self, conn: &Connection) {
        self.give_up(conn, http::StatusCode::SERVICE_UNAVAILABLE);
    }

    /// Takes the request its owner is handling out of its hands: the client gets `status` and
    /// the connection is closed if nothing of an answer was sent yet, else the connection is
    /// dropped at once (`X ctl cancel`: a truncated body must not look complete). The
    /// connection counts as gone from then on, so every later write of the owner fails with
    /// [`Error::Closed`] and nothing it produces reaches the client. Used for the shutdown
    /// deadline (`503`), a request running past its timeout (`504`) and a streamed body that
    /// grows past the size limit (`413`).
    pub(crate) fn give_up(&self, conn: &Connection, status: http::StatusCode) -> GaveUp {
        let mut g = self.lock();
        if !g.busy || g.disconnected {
            return GaveUp::Nothing;
        }
        let answering = g.answering;
        g.disconnected = true;
        g.gave_up = Some(status);
        drop(g);
        self.notify();
        if answering {
            let _ = conn.ctl_in(self.epoch, self.id, &[Ctl::Cancel]);
            GaveUp::Dropped
        } else {
            self.answer_and_close(conn, status);
            GaveUp::Answered
        }
    }

    /// Sends a short `status` response to the client and closes its connection, whatever the
    /// owner of the connection does next.
    fn answer_and_close(&self, conn: &Connection, status: http::StatusCode) {
        let out = crate::responder::simple_response(http::Version::HTTP_11, status, true);
        let _ = conn.reply_in(self.epoch, self.id, &out);
        let _ = conn.reply_in(self.epoch, self.id, b"");
    }

    /// A streamed upload starts (or restarts) on this connection.
    pub(crate) fn start_upload_stream(&self, done: bool, first: usize) {
        let mut g = self.lock();
        g.stream.clear();
        g.stream_done = done;
        g.stream_balance = 0;
        let now = Instant::now();
        g.stream_started = Some(now);
        g.stream_last = Some(now);
        g.stream_received = first as u64;
    }

    /// Whether a streamed upload is open on this connection and its owner is reading it.
    pub(crate) fn streaming(&self) -> bool {
        let g = self.lock();
        g.busy && g.stream_started.is_some() && !g.stream_done && !g.disconnected
    }

    /// A slice of a streamed upload arrived; returns the body's bytes received so far. A slice
    /// that takes the body past `max` is counted but not handed to the reader (the caller then
    /// gives up on the request), so a handler never reads past the limit.
    pub(crate) fn push_upload_slice(&self, slice: Bytes, done: bool, max: Option<u64>) -> u64 {
        let mut g = self.lock();
        g.stream_received += slice.len() as u64;
        g.stream_last = Some(Instant::now());
        if max.is_none_or(|m| g.stream_received <= m) {
            g.stream.push_back(slice);
            g.stream_done |= done;
        }
        let received = g.stream_received;
        drop(g);
        self.notify();
        received
    }

    /// The next non-empty slice of a streamed upload, or `None` at its end. Grants Mongrel2
    /// upload credit (through `conn`) whenever the slices granted so far are used up.
    ///
    /// # Errors
    /// `ConnectionAborted` when the client left, or when the server answered the request
    /// itself ([`give_up`](Self::give_up): a body past the size limit, say); `TimedOut` when
    /// the body is slower than the connection's [`StreamLimits`](crate::upload::StreamLimits)
    /// allow (the client has then been answered `408` and the connection closed); or the
    /// error of sending the credit.
    pub(crate) fn next_upload_slice(
        &self,
        conn: &Connection,
        gone: impl Fn() -> bool,
    ) -> io::Result<Option<Bytes>> {
        loop {
            // The wait below only returns to look again: `Pending` never comes back.
            let step = self.upload_slice(conn, &gone, |g, deadline| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.cond.wait_for(g, WAIT_STEP.min(left));
                true
            })?;
            if let UploadPoll::Ready(slice) = step {
                return Ok(slice);
            }
        }
    }

    /// [`next_upload_slice`](Self::next_upload_slice) for a task: `Pending(deadline)` when no
    /// slice is there yet (`cx` is woken when one comes or the client goes; poll again at
    /// `deadline` at the latest, when the pace limits are checked).
    ///
    /// # Errors
    /// As [`next_upload_slice`](Self::next_upload_slice).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))] // the async runtime's
    pub(crate) fn poll_upload_slice(
        &self,
        cx: &mut Context<'_>,
        conn: &Connection,
        gone: bool,
    ) -> io::Result<UploadPoll> {
        self.upload_slice(conn, &|| gone, |g, _| {
            g.register(cx.waker());
            false
        })
    }

    /// Reads a streamed upload's next slice, granting credit as needed. When there is none
    /// yet, `wait(guard, deadline)` is called: it waits and returns `true` to look again, or
    /// returns `false` to return `Pending(deadline)`.
    fn upload_slice(
        &self,
        conn: &Connection,
        gone: &dyn Fn() -> bool,
        mut wait: impl FnMut(&mut MutexGuard<'_, ConnInner>, Instant) -> bool,
    ) -> io::Result<UploadPoll> {
        let limits = conn.stream_limits();
        let mut g = self.lock();
        loop {
            match Self::upload_step(&mut g, limits, gone())? {
                SliceStep::Ready(slice) => return Ok(UploadPoll::Ready(slice)),
                SliceStep::Grant(grant) => {
                    drop(g);
                    conn.ctl_in(self.epoch, self.id, &[Ctl::Credits(grant)])?;
                    g = self.lock();
                }
                SliceStep::TooSlow(received) => {
                    drop(g);
                    return Err(self.too_slow(conn, received));
                }
                SliceStep::Wait(deadline) => {
                    if !wait(&mut g, deadline) {
                        return Ok(UploadPoll::Pending(deadline));
                    }
                }
            }
        }
    }

    /// One look at a streamed upload: what its reader does next.
    fn upload_step(
        g: &mut ConnInner,
        limits: crate::upload::StreamLimits,
        gone: bool,
    ) -> io::Result<SliceStep> {
        loop {
            // Taken out of the owner's hands (a body past the size limit, say): nothing more
            // of it is read.
            if let Some(status) = g.gave_up {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("the server answered {status} and closed the connection"),
                ));
            }
            if let Some(next) = g.stream.pop_front() {
                g.stream_balance -= next.len() as i64;
                if !next.is_empty() {
                    return Ok(SliceStep::Ready(Some(next)));
                }
                continue;
            }
            if g.stream_done {
                return Ok(SliceStep::Ready(None));
            }
            if g.disconnected || gone {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "client disconnected during upload",
                ));
            }
            if g.stream_balance <= 0 {
                let grant = UPLOAD_GRANT - g.stream_balance;
                g.stream_balance += grant;
                return Ok(SliceStep::Grant(grant));
            }
            let now = Instant::now();
            let deadline = limits.deadline(
                g.stream_started.unwrap_or(now),
                g.stream_last.unwrap_or(now),
                g.stream_received,
            );
            if now >= deadline {
                g.disconnected = true;
                return Ok(SliceStep::TooSlow(g.stream_received));
            }
            return Ok(SliceStep::Wait(deadline));
        }
    }

    /// A streamed upload was too slow: wakes the other handles, answers `408`, closes.
    fn too_slow(&self, conn: &Connection, received: u64) -> io::Error {
        self.notify();
        tracing::warn!(
            "connection {}: streamed upload too slow ({received} bytes; limits {:?}); 408 and \
             closing",
            self.id,
            conn.stream_limits()
        );
        self.answer_and_close(conn, http::StatusCode::REQUEST_TIMEOUT);
        io::Error::new(io::ErrorKind::TimedOut, "streamed upload too slow")
    }
}
