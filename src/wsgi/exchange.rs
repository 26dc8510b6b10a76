//! One request's response in the making: the state machine shared by the worker,
//! `start_response`, `write` and the flusher.
//!
//! The response is *pending* (the request is held, nothing sent) until the first non-empty body
//! chunk or the end of the body; then the head goes out and it is *streaming*; it ends *done*,
//! normally ([`Exchange::finish`]) or after an error ([`Exchange::fail`]: a 500 while pending, a
//! dropped connection once streaming).

use super::flusher::{Flush, Flusher, FLUSH_IDLE};
use crate::{Error, Request, ResponseStream};
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::PyErr;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The status line of a response being built, as `start_response` accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) code: StatusCode,
    /// The reason phrase: latin-1 characters, no control characters but tab.
    pub(crate) reason: String,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.as_u16(), self.reason)
    }
}

/// How the application broke the WSGI protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Misuse {
    /// A body chunk (or the end of the body) came before any `start_response` call.
    #[error("the application sent a body (or returned) without calling start_response")]
    NoStartResponse,
    /// `write()` was called after the response had ended.
    #[error("write() after the response was finished")]
    WriteAfterFinish,
}

/// Why a response could not be completed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The application raised (or produced something that is not bytes).
    App(PyErr),
    /// The application broke the protocol.
    Invalid(Misuse),
    /// The client is gone.
    Gone,
    /// Sending failed.
    Send(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Closed => Failure::Gone,
            e => Failure::Send(e),
        }
    }
}

impl From<Failure> for PyErr {
    /// The exception the application's `write()` call raises.
    fn from(f: Failure) -> Self {
        match f {
            Failure::App(e) => e,
            Failure::Invalid(m) => PyRuntimeError::new_err(m.to_string()),
            Failure::Gone => PyOSError::new_err("the client disconnected"),
            Failure::Send(e) => PyOSError::new_err(e.to_string()),
        }
    }
}

#[derive(Debug, Default)]
struct Head {
    status: Option<Status>,
    headers: HeaderMap,
    content_length: Option<u64>,
}

#[derive(Debug)]
enum Out {
    Pending(Box<Request>),
    Streaming(ResponseStream),
    Done,
}

/// One request's response in the making. `head` is only ever held briefly; `out` may be held
/// while sending (credit waits), so it is only locked with the GIL released.
#[derive(Debug)]
pub(crate) struct Exchange {
    head: Mutex<Head>,
    sent: AtomicBool,
    done: AtomicBool,
    out: Mutex<Out>,
    dirty: AtomicBool,
    epoch: Instant,
    last_write: AtomicU64,
    flusher: Option<Arc<Flusher>>,
    /// For the access log and metrics: the status sent (0: none yet), the body bytes sent, and
    /// whether to keep the response headers once sent.
    status: AtomicU16,
    body_bytes: AtomicU64,
    keep_headers: AtomicBool,
}

impl Exchange {
    pub(crate) fn new(req: Request, flusher: Option<Arc<Flusher>>) -> Arc<Self> {
        Arc::new(Self {
            head: Mutex::new(Head::default()),
            sent: AtomicBool::new(false),
            done: AtomicBool::new(false),
            out: Mutex::new(Out::Pending(Box::new(req))),
            dirty: AtomicBool::new(false),
            epoch: Instant::now(),
            last_write: AtomicU64::new(0),
            flusher,
            status: AtomicU16::new(0),
            body_bytes: AtomicU64::new(0),
            keep_headers: AtomicBool::new(false),
        })
    }

    /// Keeps the response headers once sent, for [`with_response_headers`](Self::with_response_headers).
    pub(crate) fn keep_response_headers(&self) {
        self.keep_headers.store(true, Ordering::Relaxed);
    }

    /// The status sent (`None` if nothing was) and the body bytes sent, once the response is
    /// over.
    pub(crate) fn outcome(&self) -> (Option<u16>, u64) {
        let status = self.status.load(Ordering::Relaxed);
        (
            (status != 0).then_some(status),
            self.body_bytes.load(Ordering::Relaxed),
        )
    }

    /// Calls `f` with the response headers sent (empty unless
    /// [`keep_response_headers`](Self::keep_response_headers) was called before they were).
    pub(crate) fn with_response_headers<R>(&self, f: impl FnOnce(&HeaderMap) -> R) -> R {
        f(&self.head.lock().headers)
    }

    /// Whether the status line and headers have gone out.
    pub(crate) fn headers_sent(&self) -> bool {
        self.sent.load(Ordering::SeqCst)
    }

    /// Whether `start_response` has set a status.
    pub(crate) fn has_status(&self) -> bool {
        self.head.lock().status.is_some()
    }

    /// Sets (or, before the head is sent, replaces) the status and headers.
    pub(crate) fn set_head(&self, status: Status, headers: HeaderMap, content_length: Option<u64>) {
        let mut h = self.head.lock();
        h.status = Some(status);
        h.headers = headers;
        h.content_length = content_length;
    }

    /// Sends the head (once) with `hint` as the body length unless the application set one.
    fn begin(&self, out: &mut Out, hint: Option<u64>) -> Result<(), Failure> {
        if !matches!(out, Out::Pending(_)) {
            return Ok(());
        }
        let (status, headers, len) = {
            let mut h = self.head.lock();
            let Some(status) = h.status.clone() else {
                return Err(Failure::Invalid(Misuse::NoStartResponse));
            };
            (status, std::mem::take(&mut h.headers), h.content_length)
        };
        let Out::Pending(req) = std::mem::replace(out, Out::Done) else {
            return Ok(());
        };
        let reason: Vec<u8> = status.reason.chars().map(|c| c as u8).collect();
        let stream = req.stream_with_reason(status.code, &reason, &headers, len.or(hint))?;
        self.sent.store(true, Ordering::SeqCst);
        self.status.store(status.code.as_u16(), Ordering::Relaxed);
        if self.keep_headers.load(Ordering::Relaxed) {
            self.head.lock().headers = headers;
        }
        *out = Out::Streaming(stream);
        Ok(())
    }

    /// Writes one body chunk (sending the head first if needed). Call without the GIL.
    pub(crate) fn write(&self, data: &[u8]) -> Result<(), Failure> {
        let mut out = self.out.lock();
        self.begin(&mut out, None)?;
        let Out::Streaming(stream) = &mut *out else {
            return Err(Failure::Invalid(Misuse::WriteAfterFinish));
        };
        stream.write(data)?;
        let gone = stream.is_disconnected();
        drop(out);
        if gone {
            return Err(Failure::Gone);
        }
        self.touch();
        Ok(())
    }

    /// Sends a whole body known in advance (the list fast path): one message with the head
    /// when nothing was sent yet.
    pub(crate) fn write_whole(&self, chunks: &[&[u8]], total: u64) -> Result<(), Failure> {
        let mut out = self.out.lock();
        let fresh = matches!(&*out, Out::Pending(_));
        self.begin(&mut out, Some(total))?;
        let Out::Streaming(stream) = &mut *out else {
            return Err(Failure::Invalid(Misuse::WriteAfterFinish));
        };
        match chunks {
            [] => {}
            [one] => stream.write(one)?,
            many if fresh => stream.write(&many.concat())?,
            many => {
                for c in many {
                    stream.write(c)?;
                }
            }
        }
        Ok(())
    }

    /// Records a write and, if the buffer was clean, tells the flusher there is work.
    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_write.store(now, Ordering::SeqCst);
        if !self.dirty.swap(true, Ordering::SeqCst) {
            if let Some(f) = &self.flusher {
                f.poke();
            }
        }
    }

    /// Time since the last write.
    fn idle(&self) -> Duration {
        let last = Duration::from_nanos(self.last_write.load(Ordering::SeqCst));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Ends the response normally: the head if not sent yet (with the length of what was
    /// written, 0), then the end of the body.
    pub(crate) fn finish(&self) -> Result<(), Failure> {
        let mut out = self.out.lock();
        self.begin(&mut out, Some(0))?;
        self.done.store(true, Ordering::SeqCst);
        match std::mem::replace(&mut *out, Out::Done) {
            Out::Streaming(stream) => {
                self.body_bytes.store(stream.written(), Ordering::Relaxed);
                stream.finish().map_err(Failure::from)
            }
            _ => Ok(()),
        }
    }

    /// Ends the response after an error: a 500 when nothing was sent, else the connection is
    /// dropped (what is buffered is discarded, so a truncated body never looks complete).
    pub(crate) fn fail(&self) {
        let mut out = self.out.lock();
        self.done.store(true, Ordering::SeqCst);
        match std::mem::replace(&mut *out, Out::Done) {
            Out::Pending(req) => {
                let mut h = HeaderMap::new();
                h.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                const BODY: &[u8] = b"Internal Server Error\n";
                self.status.store(500, Ordering::Relaxed);
                if req.method() != Some(&http::Method::HEAD) {
                    self.body_bytes.store(BODY.len() as u64, Ordering::Relaxed);
                }
                if self.keep_headers.load(Ordering::Relaxed) {
                    self.head.lock().headers = h.clone();
                }
                if let Err(e) = req.reply_http(StatusCode::INTERNAL_SERVER_ERROR, &h, BODY) {
                    tracing::debug!("sending a 500: {e}");
                }
            }
            Out::Streaming(stream) => {
                self.body_bytes.store(stream.written(), Ordering::Relaxed);
                if let Err(e) = stream.abort() {
                    tracing::debug!("dropping a failed response's connection: {e}");
                }
            }
            Out::Done => {}
        }
    }

    /// Whether the response is complete (or abandoned). Never blocks.
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

impl Flush for Exchange {
    fn pending_for(&self) -> Option<Duration> {
        self.dirty.load(Ordering::SeqCst).then(|| self.idle())
    }

    fn flush_if_idle(&self) {
        let mut out = self.out.lock();
        if !self.dirty.load(Ordering::SeqCst) || self.idle() < FLUSH_IDLE {
            return;
        }
        self.dirty.store(false, Ordering::SeqCst);
        if let Out::Streaming(stream) = &mut *out {
            if let Err(e) = stream.flush() {
                tracing::debug!("flushing a paused response: {e}");
            }
        }
    }
}
