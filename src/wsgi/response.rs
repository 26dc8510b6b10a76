//! The response side: `start_response` and `write`, header validation, sending the iterable
//! (list fast path, `wsgi.file_wrapper`, generic streaming), `close()`, and the flusher that keeps
//! a paused generator's output from waiting in a buffer.

use super::Status;
use crate::{Error, Request, ResponseStream};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use pyo3::exceptions::{PyAssertionError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Output a paused producer left in the buffer goes out after this long without a write.
pub(crate) const FLUSH_IDLE: Duration = Duration::from_millis(10);
/// Block size for reading a `wsgi.file_wrapper` file.
pub(crate) const FILE_BLOCK: usize = 256 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a response could not be completed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The application raised (or produced something that is not bytes).
    App(PyErr),
    /// The application broke the protocol (no start_response, ...).
    Invalid(String),
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

/// One request's response in the making, shared by the worker, `start_response`, `write` and the
/// flusher. `head` is only ever held briefly; `out` may be held while sending (credit waits), so
/// it is only locked with the GIL released.
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
        })
    }

    /// Whether the status line and headers have gone out.
    pub(crate) fn headers_sent(&self) -> bool {
        self.sent.load(Ordering::SeqCst)
    }

    /// Sends the head (once) with `hint` as the body length unless the application set one.
    fn begin(&self, out: &mut Out, hint: Option<u64>) -> Result<(), Failure> {
        if !matches!(out, Out::Pending(_)) {
            return Ok(());
        }
        let (status, headers, len) = {
            let mut h = lock(&self.head);
            let Some(status) = h.status.clone() else {
                return Err(Failure::Invalid(
                    "the application sent a body (or returned) without calling start_response"
                        .into(),
                ));
            };
            (status, std::mem::take(&mut h.headers), h.content_length)
        };
        let Out::Pending(req) = std::mem::replace(out, Out::Done) else {
            return Ok(());
        };
        let reason: Vec<u8> = status.reason.chars().map(|c| c as u8).collect();
        let stream = req.stream_with_reason(status.code, &reason, &headers, len.or(hint))?;
        self.sent.store(true, Ordering::SeqCst);
        *out = Out::Streaming(stream);
        Ok(())
    }

    /// Writes one body chunk (sending the head first if needed). Call without the GIL.
    pub(crate) fn write(&self, data: &[u8]) -> Result<(), Failure> {
        let mut out = lock(&self.out);
        self.begin(&mut out, None)?;
        let Out::Streaming(stream) = &mut *out else {
            return Err(Failure::Invalid(
                "write() after the response was finished".into(),
            ));
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
        let mut out = lock(&self.out);
        let fresh = matches!(&*out, Out::Pending(_));
        self.begin(&mut out, Some(total))?;
        let Out::Streaming(stream) = &mut *out else {
            return Err(Failure::Invalid(
                "write() after the response was finished".into(),
            ));
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

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_write.store(now, Ordering::SeqCst);
        if !self.dirty.swap(true, Ordering::SeqCst) {
            if let Some(f) = &self.flusher {
                f.poke();
            }
        }
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_nanos(self.last_write.load(Ordering::SeqCst));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Flushes what a producer left buffered if it has not written for [`FLUSH_IDLE`].
    fn flush_if_idle(&self) {
        let mut out = lock(&self.out);
        if !self.dirty.load(Ordering::SeqCst) || self.idle() < FLUSH_IDLE {
            return;
        }
        self.dirty.store(false, Ordering::SeqCst);
        if let Out::Streaming(stream) = &mut *out {
            if let Err(e) = stream.flush() {
                log::debug!("flushing a paused response: {e}");
            }
        }
    }

    /// Ends the response normally: the head if not sent yet (with the length of what was
    /// written, 0), then the end of the body.
    pub(crate) fn finish(&self) -> Result<(), Failure> {
        let mut out = lock(&self.out);
        self.begin(&mut out, Some(0))?;
        self.done.store(true, Ordering::SeqCst);
        match std::mem::replace(&mut *out, Out::Done) {
            Out::Streaming(stream) => stream.finish().map_err(Failure::from),
            _ => Ok(()),
        }
    }

    /// Ends the response after an error: a 500 when nothing was sent, else the connection is
    /// dropped (what is buffered is discarded, so a truncated body never looks complete).
    pub(crate) fn fail(&self) {
        let mut out = lock(&self.out);
        self.done.store(true, Ordering::SeqCst);
        match std::mem::replace(&mut *out, Out::Done) {
            Out::Pending(req) => {
                let mut h = HeaderMap::new();
                h.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                if let Err(e) = req.reply_http(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &h,
                    b"Internal Server Error\n",
                ) {
                    log::debug!("sending a 500: {e}");
                }
            }
            Out::Streaming(stream) => {
                if let Err(e) = stream.abort() {
                    log::debug!("dropping a failed response's connection: {e}");
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

/// Parses a WSGI status string: three digits, then a space and a reason phrase (latin-1, no
/// control characters). A missing reason phrase is tolerated (the standard one is used).
pub(crate) fn parse_status(obj: &Bound<'_, PyAny>) -> PyResult<Status> {
    let s = obj.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!("status must be a str, not {}", type_name(obj)))
    })?;
    let s = s.to_str()?;
    let bad = || {
        PyValueError::new_err(format!(
            "invalid status {s:?}: expected three digits, a space and a reason phrase, as in \
             '200 OK'"
        ))
    };
    let b = s.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let reason = match &s[3..] {
        "" => "",
        r if r.starts_with(' ') => &r[1..],
        _ => return Err(bad()),
    };
    if reason
        .chars()
        .any(|c| u32::from(c) > 0xff || (c.is_control() && c != '\t'))
    {
        return Err(bad());
    }
    let code = s[..3]
        .parse::<u16>()
        .ok()
        .and_then(|n| StatusCode::from_u16(n).ok())
        .ok_or_else(bad)?;
    let reason = if reason.is_empty() {
        code.canonical_reason().unwrap_or("Unknown").to_string()
    } else {
        reason.to_string()
    };
    Ok(Status { code, reason })
}

/// Header names a WSGI application must not set (PEP 3333: hop-by-hop headers belong to the
/// server).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "trailers"
    ) || name.starts_with("proxy-")
}

fn latin1_bytes(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Parses and checks `response_headers`: a list of `(name, value)` str pairs.
pub(crate) fn parse_headers(obj: &Bound<'_, PyAny>) -> PyResult<(HeaderMap, Option<u64>)> {
    let items: Vec<Bound<'_, PyAny>> = if let Ok(l) = obj.cast::<PyList>() {
        l.iter().collect()
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        t.iter().collect()
    } else {
        return Err(PyTypeError::new_err(format!(
            "response headers must be a list of (name, value) tuples, not {}",
            type_name(obj)
        )));
    };
    let mut map = HeaderMap::with_capacity(items.len());
    let mut length: Option<u64> = None;
    for item in items {
        let pair: Vec<Bound<'_, PyAny>> = if let Ok(t) = item.cast::<PyTuple>() {
            t.iter().collect()
        } else if let Ok(l) = item.cast::<PyList>() {
            l.iter().collect()
        } else {
            Vec::new()
        };
        let [n, v] = pair.as_slice() else {
            return Err(PyTypeError::new_err(format!(
                "each response header must be a (name, value) tuple, not {}",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            )));
        };
        let (Ok(n), Ok(v)) = (n.cast::<PyString>(), v.cast::<PyString>()) else {
            return Err(PyTypeError::new_err(format!(
                "response header names and values must be str: {}",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            )));
        };
        let (n, v) = (n.to_str()?, v.to_str()?);
        let name = HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("invalid response header name {n:?}")))?;
        if is_hop_by_hop(name.as_str()) {
            return Err(PyValueError::new_err(format!(
                "hop-by-hop header {n:?} is not allowed in a WSGI response (PEP 3333); the \
                 server handles connection management"
            )));
        }
        let value = latin1_bytes(v)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "response header {n:?} has characters outside latin-1: {v:?}"
                ))
            })
            .and_then(|b| {
                HeaderValue::from_bytes(&b).map_err(|_| {
                    PyValueError::new_err(format!(
                        "response header {n:?} has a control character (CR, LF, NUL...): {v:?}"
                    ))
                })
            })?;
        if name == CONTENT_LENGTH {
            let len: u64 = v
                .trim()
                .parse()
                .map_err(|_| PyValueError::new_err(format!("invalid Content-Length {v:?}")))?;
            if length.is_some_and(|l| l != len) {
                return Err(PyValueError::new_err("conflicting Content-Length headers"));
            }
            length = Some(len);
            if map.contains_key(CONTENT_LENGTH) {
                continue;
            }
        }
        map.append(name, value);
    }
    Ok((map, length))
}

/// The `start_response` callable given to the application.
#[pyclass(module = "m2wsgi", name = "StartResponse", frozen)]
#[derive(Debug)]
pub(crate) struct StartResponse {
    ex: Arc<Exchange>,
}

impl StartResponse {
    pub(crate) fn new(ex: Arc<Exchange>) -> Self {
        Self { ex }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        match exc_info.filter(|e| !e.is_none()) {
            Some(exc) => {
                if self.ex.headers_sent() {
                    // PEP 3333: too late to change the response; re-raise the original error.
                    let value = exc.get_item(1)?;
                    let tb = exc.get_item(2)?;
                    let value = if tb.is_none() {
                        value
                    } else {
                        value.call_method1(intern!(status.py(), "with_traceback"), (tb,))?
                    };
                    return Err(PyErr::from_value(value));
                }
            }
            None => {
                if lock(&self.ex.head).status.is_some() {
                    return Err(PyAssertionError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
            }
        }
        let status = parse_status(status)?;
        let (headers, content_length) = parse_headers(headers)?;
        let mut h = lock(&self.ex.head);
        h.status = Some(status);
        h.headers = headers;
        h.content_length = content_length;
        Ok(Write {
            ex: Arc::clone(&self.ex),
        })
    }
}

/// The legacy `write(data)` callable `start_response` returns.
#[pyclass(module = "m2wsgi", name = "Write", frozen)]
#[derive(Debug)]
pub(crate) struct Write {
    ex: Arc<Exchange>,
}

pub(crate) fn failure_to_pyerr(f: Failure) -> PyErr {
    match f {
        Failure::App(e) => e,
        Failure::Invalid(m) => PyRuntimeError::new_err(m),
        Failure::Gone => PyOSError::new_err("the client disconnected"),
        Failure::Send(e) => PyOSError::new_err(e.to_string()),
    }
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = as_bytes(data).map_err(failure_to_pyerr)?;
        let bytes = data.as_bytes();
        if bytes.is_empty() {
            return Ok(());
        }
        let ex = &self.ex;
        py.detach(|| ex.write(bytes)).map_err(failure_to_pyerr)
    }
}

fn as_bytes<'py>(item: &Bound<'py, PyAny>) -> Result<Bound<'py, PyBytes>, Failure> {
    item.cast::<PyBytes>().cloned().map_err(|_| {
        Failure::App(PyTypeError::new_err(format!(
            "a WSGI response body must yield bytes, not {}",
            type_name(item)
        )))
    })
}

/// `wsgi.file_wrapper`: wraps a file-like object as the response iterable. m2wsgi recognises
/// it and reads the file in 256 KiB blocks; iterating it yields `blksize` blocks.
#[pyclass(module = "m2wsgi", name = "FileWrapper", frozen)]
#[derive(Debug)]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        Self {
            filelike,
            blksize: blksize.max(1),
        }
    }

    /// The wrapped file-like object.
    #[getter]
    fn filelike(&self, py: Python<'_>) -> Py<PyAny> {
        self.filelike.clone_ref(py)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1(intern!(py, "read"), (self.blksize,))?;
        Ok((data.len()? > 0).then_some(data))
    }

    /// Closes the file (if it has `close`).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr(intern!(py, "close"))? {
            f.call_method0(intern!(py, "close"))?;
        }
        Ok(())
    }
}

/// Sends the application's iterable. The head goes with the first non-empty chunk.
pub(crate) fn send_body(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    ex: &Exchange,
) -> Result<(), Failure> {
    if let Ok(list) = result.cast_exact::<PyList>() {
        return send_whole(py, ex, list.iter());
    }
    if let Ok(tuple) = result.cast_exact::<PyTuple>() {
        return send_whole(py, ex, tuple.iter());
    }
    if let Ok(fw) = result.cast_exact::<FileWrapper>() {
        let f = fw.get().filelike.bind(py);
        if let Ok(read) = f.getattr(intern!(py, "read")) {
            return send_file(py, ex, &read);
        }
    }
    let iter = result.try_iter().map_err(Failure::App)?;
    for item in iter {
        let chunk = as_bytes(&item.map_err(Failure::App)?)?;
        let data = chunk.as_bytes();
        if data.is_empty() {
            continue;
        }
        py.detach(|| ex.write(data))?;
    }
    Ok(())
}

fn send_whole<'py>(
    py: Python<'py>,
    ex: &Exchange,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
) -> Result<(), Failure> {
    let mut chunks = Vec::new();
    let mut total = 0u64;
    for item in items {
        let b = as_bytes(&item)?;
        total += b.as_bytes().len() as u64;
        chunks.push(b);
    }
    let slices: Vec<&[u8]> = chunks
        .iter()
        .map(|b| b.as_bytes())
        .filter(|b| !b.is_empty())
        .collect();
    // The whole body is known: send it and end the response in one go (one GIL release).
    py.detach(|| {
        if !slices.is_empty() || ex.headers_sent() {
            ex.write_whole(&slices, total)?;
        }
        ex.finish()
    })
}

fn send_file(py: Python<'_>, ex: &Exchange, read: &Bound<'_, PyAny>) -> Result<(), Failure> {
    loop {
        let block = read.call1((FILE_BLOCK,)).map_err(Failure::App)?;
        let block = as_bytes(&block)?;
        let data = block.as_bytes();
        if data.is_empty() {
            return Ok(());
        }
        py.detach(|| ex.write(data))?;
    }
}

/// Calls `close()` on the iterable if it has one.
pub(crate) fn close_iterable(py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<()> {
    if result.is_instance_of::<PyList>() || result.is_instance_of::<PyTuple>() {
        return Ok(());
    }
    match result.getattr(intern!(py, "close")) {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    }
}

/// A companion thread per worker that flushes a streaming response whose producer paused.
#[derive(Debug)]
pub(crate) struct Flusher {
    state: Mutex<FlusherState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct FlusherState {
    target: Option<Arc<Exchange>>,
    stop: bool,
}

impl Flusher {
    /// Starts the flusher thread.
    pub(crate) fn spawn(name: String) -> std::io::Result<Arc<Self>> {
        let f = Arc::new(Self {
            state: Mutex::new(FlusherState::default()),
            cv: Condvar::new(),
        });
        let f2 = Arc::clone(&f);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || f2.run())?;
        Ok(f)
    }

    /// Watches this exchange (or none). The thread is not woken: it only has work once the
    /// exchange becomes dirty, which pokes it.
    pub(crate) fn set_target(&self, ex: Option<Arc<Exchange>>) {
        lock(&self.state).target = ex;
    }

    /// Ends the thread.
    pub(crate) fn stop(&self) {
        let mut g = lock(&self.state);
        g.stop = true;
        g.target = None;
        drop(g);
        self.cv.notify_one();
    }

    fn poke(&self) {
        let _g = lock(&self.state);
        self.cv.notify_one();
    }

    fn run(&self) {
        let mut g = lock(&self.state);
        loop {
            if g.stop {
                return;
            }
            match g.target.clone() {
                Some(ex) if ex.dirty.load(Ordering::SeqCst) => {
                    let idle = ex.idle();
                    if idle >= FLUSH_IDLE {
                        drop(g);
                        ex.flush_if_idle();
                        g = lock(&self.state);
                    } else {
                        g = self
                            .cv
                            .wait_timeout(g, FLUSH_IDLE - idle)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|e| e.into_inner().0);
                    }
                }
                _ => {
                    g = self
                        .cv
                        .wait(g)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_hop_by_hop;

    #[test]
    fn hop_by_hop_names() {
        for n in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "te",
            "trailer",
            "proxy-authenticate",
            "proxy-x",
        ] {
            assert!(is_hop_by_hop(n), "{n}");
        }
        for n in ["content-type", "x-connection", "tea", "set-cookie"] {
            assert!(!is_hop_by_hop(n), "{n}");
        }
    }
}
