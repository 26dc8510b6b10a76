//! `start_response(status, headers, exc_info=None)` and the legacy `write(data)` callable it
//! returns, with the checks on the status line and the headers.

use super::body::as_bytes;
use super::exchange::{Exchange, Status};
use super::interpreter::type_name;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use http::StatusCode;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use std::sync::Arc;

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
                if self.ex.has_status() {
                    return Err(PyAssertionError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
            }
        }
        let status = parse_status(status)?;
        let (headers, content_length) = parse_headers(headers)?;
        self.ex.set_head(status, headers, content_length);
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

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = as_bytes(data)?;
        let bytes = data.as_bytes();
        if bytes.is_empty() {
            return Ok(());
        }
        let ex = &self.ex;
        Ok(py.detach(|| ex.write(bytes))?)
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
