//! What the worker threads record per request for the access log and the metrics: taken when a
//! worker gets a request, finished (line written, counters added, in Rust) just before it asks
//! for the next one.
//!
//! With neither the access log nor metrics, a worker has no [`Observer`] and pays one branch per
//! step.

use super::access_log::{self, AccessLog, Clock, Record};
use super::exchange::Exchange;
use super::metrics::{self, Upload};
use crate::{MessageKind, Request};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What a server observes: shared by its worker threads.
#[derive(Debug, Clone)]
pub(crate) struct Observe {
    pub(crate) log: Option<AccessLog>,
    pub(crate) metrics: bool,
}

impl Observe {
    /// `None` when there is nothing to observe.
    pub(crate) fn new(log: Option<AccessLog>, metrics: bool) -> Option<Self> {
        (log.is_some() || metrics).then_some(Self { log, metrics })
    }

    /// A worker thread's own state.
    pub(crate) fn thread(&self) -> Observer<'_> {
        Observer {
            log: self.log.as_ref().map(|l| {
                let inner = l.inner();
                ThreadLog {
                    log: inner,
                    clock: inner.clock(),
                    record: Record::default(),
                    line: Vec::with_capacity(512),
                }
            }),
            metrics: self.metrics,
            current: None,
        }
    }
}

/// How a request was answered.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Not known (the handler panicked).
    Unknown,
    /// A fixed answer: this status and this many body bytes.
    Fixed(u16, u64),
    /// Through an exchange, which knows.
    Exchange(Arc<Exchange>),
}

#[derive(Debug)]
struct ThreadLog<'a> {
    log: &'a access_log::Inner,
    clock: Clock,
    record: Record,
    line: Vec<u8>,
}

#[derive(Debug)]
struct Current {
    taken: Instant,
    answer: Answer,
}

/// A worker thread's recorder.
#[derive(Debug)]
pub(crate) struct Observer<'a> {
    log: Option<ThreadLog<'a>>,
    metrics: bool,
    current: Option<Current>,
}

impl Observer<'_> {
    /// The worker took `req` at `taken` and now holds the GIL. Only requests that expect an
    /// answer are recorded.
    pub(crate) fn begin(&mut self, req: &Request, taken: Instant) {
        let upload = match req.kind() {
            MessageKind::Request | MessageKind::WebSocketHandshake => {
                req.upload_stream().is_some().then_some(Upload::Stream)
            }
            MessageKind::UploadDone { .. } => Some(Upload::Async),
            _ => return,
        };
        if self.metrics {
            metrics::request_started(taken.elapsed(), upload);
        }
        if let Some(l) = &mut self.log {
            l.log.format.capture_request(req, &mut l.record);
        }
        self.current = Some(Current {
            taken,
            answer: Answer::Unknown,
        });
    }

    /// Whether a request is being recorded and its line needs environ variables.
    pub(crate) fn wants_environ(&self) -> bool {
        self.current.is_some()
            && self
                .log
                .as_ref()
                .is_some_and(|l| !l.log.format.environ_keys().is_empty())
    }

    /// Reads the environ variables the line needs, after the application ran (GIL held).
    pub(crate) fn capture_environ(&mut self, env: &Bound<'_, PyDict>) {
        let Some(l) = &mut self.log else { return };
        l.record.environ.clear();
        for key in l.log.format.environ_keys() {
            let value = lookup(env, key).and_then(|v| v.str().ok().map(|s| s.to_string()));
            l.record.environ.push(value);
        }
    }

    /// Tells how the current request was answered.
    pub(crate) fn answered(&mut self, answer: Answer) {
        if let Some(c) = &mut self.current {
            c.answer = answer;
        }
    }

    /// Whether the line needs the response headers: ask the exchange to keep them
    /// ([`Exchange::keep_response_headers`]) before it sends them.
    pub(crate) fn needs_response_headers(&self) -> bool {
        self.log
            .as_ref()
            .is_some_and(|l| l.log.format.needs_response_headers())
    }

    /// The current request is over: its line and its counters. Touches no Python object.
    pub(crate) fn finish(&mut self) {
        let Some(c) = self.current.take() else { return };
        let elapsed = c.taken.elapsed();
        let (status, bytes) = match &c.answer {
            Answer::Unknown => (None, 0),
            Answer::Fixed(s, b) => (Some(*s), *b),
            Answer::Exchange(ex) => ex.outcome(),
        };
        if self.metrics {
            metrics::request_finished(status, elapsed);
        }
        if let Some(l) = &mut self.log {
            let rec = &mut l.record;
            rec.status = status;
            rec.bytes = bytes;
            rec.elapsed = elapsed;
            match &c.answer {
                Answer::Exchange(ex) if l.log.format.needs_response_headers() => {
                    ex.with_response_headers(|h| l.log.format.capture_response(h, rec));
                }
                _ => rec.response_headers.clear(),
            }
            l.line.clear();
            l.log
                .format
                .write(rec, &mut l.clock, SystemTime::now(), &mut l.line);
            l.log.write(&l.line);
            // The record held slices of the request's frame (its body too): not until the
            // next request.
            rec.release();
        }
    }
}

/// `environ[KEY]`, else `environ[key]`, else the first key whose lower case is `key` (gunicorn
/// looks environ variables up in lower case).
fn lookup<'py>(env: &Bound<'py, PyDict>, key: &str) -> Option<Bound<'py, PyAny>> {
    let py = env.py();
    let upper = key.to_ascii_uppercase();
    if let Ok(Some(v)) = env.get_item(PyString::new(py, &upper)) {
        return Some(v);
    }
    if let Ok(Some(v)) = env.get_item(PyString::new(py, key)) {
        return Some(v);
    }
    env.iter().find_map(|(k, v)| {
        k.cast::<PyString>()
            .ok()
            .and_then(|k| k.to_str().ok().map(|k| k.eq_ignore_ascii_case(key)))
            .unwrap_or(false)
            .then_some(v)
    })
}
