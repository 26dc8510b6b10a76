//! Sending the application's iterable: the list/tuple fast path (one message with a
//! `Content-Length`), `wsgi.file_wrapper` files read in large blocks, generic streaming, and
//! `close()` on the iterable.

use super::exchange::{Exchange, Failure};
use super::interpreter::type_name;
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

/// Block size for reading a `wsgi.file_wrapper` file.
pub(crate) const FILE_BLOCK: usize = 256 * 1024;

/// A body chunk as `bytes`; anything else is the application's error.
pub(crate) fn as_bytes<'py>(item: &Bound<'py, PyAny>) -> Result<Bound<'py, PyBytes>, Failure> {
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
