//! `wsgi.input`: a file-like object streaming the request body, with the GIL released while it
//! reads.

use crate::Body;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PySlice};
use std::io::{self, BufRead, Read};

/// The request body as a binary file-like object (PEP 3333 `wsgi.input`).
#[pyclass(module = "m2wsgi", name = "Input")]
#[derive(Debug)]
pub(crate) struct Input {
    body: Body,
    closed: bool,
}

impl Input {
    pub(crate) fn new(body: Body) -> Self {
        Self {
            body,
            closed: false,
        }
    }
}

fn io_err(e: io::Error) -> PyErr {
    PyOSError::new_err(format!("reading the request body: {e}"))
}

/// `size` as Python passes it: `None` or negative means "no limit".
fn limit(size: Option<isize>) -> Option<u64> {
    size.and_then(|s| u64::try_from(s).ok())
}

fn read_up_to(body: &mut Body, n: Option<u64>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match n {
        Some(n) => {
            out.reserve(n.min(64 * 1024) as usize);
            body.by_ref().take(n).read_to_end(&mut out)?;
        }
        None => {
            out.reserve(body.len().unwrap_or(0).min(1 << 20) as usize);
            body.read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

fn read_line(body: &mut Body, n: Option<u64>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut left = n.unwrap_or(u64::MAX);
    while left > 0 {
        let buf = body.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let window = &buf[..buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))];
        let (take, done) = match window.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (window.len(), false),
        };
        out.extend_from_slice(&window[..take]);
        body.consume(take);
        left -= take as u64;
        if done {
            break;
        }
    }
    Ok(out)
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: up to `size` bytes (fewer only at the end of the body); everything
    /// left when `size` is negative or `None`; `b''` at the end.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let n = limit(size);
        let body = &mut self.body;
        // The length known in advance (a body in the message or a temp file): read straight
        // into the new `bytes` object, with the GIL released (nothing else can see it yet).
        if let Some(rem) = body.remaining() {
            let k = usize::try_from(n.map_or(rem, |n| n.min(rem))).map_err(|_| {
                PyOSError::new_err("reading the request body: too large for this machine")
            })?;
            return PyBytes::new_with(py, k, |buf| {
                py.detach(|| body.read_exact(buf)).map_err(io_err)
            });
        }
        let data = py.detach(|| read_up_to(body, n)).map_err(io_err)?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readline(size=-1)`: one line with its `\n`, at most `size` bytes.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let n = limit(size);
        let body = &mut self.body;
        let data = py.detach(|| read_line(body, n)).map_err(io_err)?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readlines(hint=-1)`: lines until their total size reaches `hint` (all when `hint <= 0`).
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let body = &mut self.body;
        let lines = py
            .detach(|| -> io::Result<Vec<Vec<u8>>> {
                let mut lines = Vec::new();
                let mut total = 0u64;
                loop {
                    let line = read_line(body, None)?;
                    if line.is_empty() {
                        break;
                    }
                    total += line.len() as u64;
                    lines.push(line);
                    if hint.is_some_and(|h| total >= h) {
                        break;
                    }
                }
                Ok(lines)
            })
            .map_err(io_err)?;
        PyList::new(py, lines.iter().map(|l| PyBytes::new(py, l)))
    }

    /// `readinto(buffer)`: fills a writable buffer (`bytearray`, `memoryview`) as far as the
    /// body goes; returns the count (0 at the end).
    fn readinto(&mut self, py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let n = buffer.len()? as u64;
        let body = &mut self.body;
        let data = py.detach(|| read_up_to(body, Some(n))).map_err(io_err)?;
        if !data.is_empty() {
            let k = data.len() as isize;
            buffer.set_item(PySlice::new(py, 0, k, 1), PyBytes::new(py, &data))?;
        }
        Ok(data.len())
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    fn readable(&self) -> bool {
        true
    }

    fn seekable(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        false
    }

    /// Marks the stream closed (for `io` wrappers); the body itself is freed with the request.
    fn close(&mut self) {
        self.closed = true;
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed
    }
}
