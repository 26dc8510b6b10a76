//! Building `environ`: a template per worker thread holding what never changes, copied per
//! request, then the per-request keys (interned) set on the copy.

use crate::{MessageKind, Request, Responder};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, TRANSFER_ENCODING};
use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

/// What the environ of every request of one server shares.
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvironConfig {
    /// `--script-name`: overrides the prefix taken from Mongrel2's `PATTERN`. `Some("")` means
    /// "no SCRIPT_NAME at all".
    pub(crate) script_name: Option<String>,
    pub(crate) multithread: bool,
    pub(crate) multiprocess: bool,
}

/// Mongrel2 route patterns are a literal prefix, then an optional pattern starting at `(`; the
/// other regex-like characters are taken as the start of a pattern too, to be safe. (`%` is not:
/// request paths are percent-encoded, and so may route prefixes be.)
const PATTERN_CHARS: &[u8] = b"([*?+$^\\";

/// The per-thread environ template.
#[derive(Debug)]
pub(crate) struct Template {
    dict: Py<PyDict>,
    errors: Py<ErrorStream>,
}

impl Template {
    pub(crate) fn new(py: Python<'_>, cfg: &EnvironConfig) -> PyResult<Self> {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
        d.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "http"))?;
        let errors = Bound::new(py, ErrorStream::default())?;
        d.set_item(intern!(py, "wsgi.errors"), &errors)?;
        d.set_item(intern!(py, "wsgi.multithread"), cfg.multithread)?;
        d.set_item(intern!(py, "wsgi.multiprocess"), cfg.multiprocess)?;
        d.set_item(intern!(py, "wsgi.run_once"), false)?;
        d.set_item(intern!(py, "wsgi.input_terminated"), true)?;
        d.set_item(
            intern!(py, "wsgi.file_wrapper"),
            py.get_type::<super::body::FileWrapper>(),
        )?;
        d.set_item(
            intern!(py, "SERVER_SOFTWARE"),
            concat!("m2wsgi/", env!("CARGO_PKG_VERSION")),
        )?;
        d.set_item(intern!(py, "SCRIPT_NAME"), intern!(py, ""))?;
        d.set_item(intern!(py, "QUERY_STRING"), intern!(py, ""))?;
        Ok(Self {
            dict: d.unbind(),
            errors: errors.unbind(),
        })
    }

    /// Logs what the request left in `wsgi.errors` without a final newline.
    pub(crate) fn flush_errors(&self, py: Python<'_>) {
        self.errors.bind(py).get().flush();
    }

    /// A fresh environ for `req`, with `input` as `wsgi.input`; `body_len` is the body's real
    /// length when known.
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        cfg: &EnvironConfig,
        req: &Request,
        body_len: Option<u64>,
        input: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.dict.bind(py).copy()?;
        let method = req.method().map_or("GET", http::Method::as_str);
        env.set_item(intern!(py, "REQUEST_METHOD"), method_str(py, method))?;

        let raw_path: &[u8] = req.request_path().map_or(b"/", |p| p.as_ref());
        let (script, rest) = split_path(raw_path, req.pattern().map(|p| p.as_ref()), cfg);
        if !script.is_empty() {
            env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, &script))?;
        }
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, &percent_decode(rest)))?;
        if let Some(q) = req.query() {
            env.set_item(intern!(py, "QUERY_STRING"), latin1(py, q))?;
        }
        if let Some(uri) = req.uri() {
            let u = latin1(py, uri);
            env.set_item(intern!(py, "REQUEST_URI"), &u)?;
            env.set_item(intern!(py, "RAW_URI"), u)?;
        }
        let https = req.url_scheme().is_some_and(|s| s.as_ref() == b"https");
        if https {
            env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
        }
        let (name, port) = server_name_port(
            req.headers().get(http::header::HOST).map(|h| h.as_bytes()),
            https,
        );
        env.set_item(intern!(py, "SERVER_NAME"), latin1(py, name))?;
        env.set_item(intern!(py, "SERVER_PORT"), latin1(py, port))?;
        env.set_item(
            intern!(py, "SERVER_PROTOCOL"),
            match req.version() {
                Some(http::Version::HTTP_10) => intern!(py, "HTTP/1.0"),
                Some(http::Version::HTTP_09) => intern!(py, "HTTP/0.9"),
                _ => intern!(py, "HTTP/1.1"),
            },
        )?;
        if let Some(addr) = req.remote_addr() {
            env.set_item(intern!(py, "REMOTE_ADDR"), latin1(py, addr))?;
        }

        let headers = req.headers();
        if let Some(ct) = headers.get(CONTENT_TYPE) {
            env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, ct.as_bytes()))?;
        }
        let upload = matches!(req.kind(), MessageKind::UploadDone { .. });
        if upload || headers.contains_key(CONTENT_LENGTH) {
            let len = match body_len {
                Some(n) => n.to_string(),
                None => headers
                    .get(CONTENT_LENGTH)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default(),
            };
            env.set_item(intern!(py, "CONTENT_LENGTH"), len)?;
        }
        for name in headers.keys() {
            if !passes(name.as_str().as_bytes()) {
                continue;
            }
            let mut values = headers.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            let key = http_key(py, name.as_str());
            match values.next() {
                None => env.set_item(key, latin1(py, first.as_bytes()))?,
                Some(second) => {
                    let sep: &[u8] = if name == COOKIE { b"; " } else { b", " };
                    let mut joined = Vec::with_capacity(first.len() + second.len() + 16);
                    joined.extend_from_slice(first.as_bytes());
                    for v in std::iter::once(second).chain(values) {
                        joined.extend_from_slice(sep);
                        joined.extend_from_slice(v.as_bytes());
                    }
                    env.set_item(key, latin1(py, &joined))?;
                }
            }
        }
        // Headers `http` refused (control bytes in a value, odd names): still passed on, byte
        // for byte. Upper-case names are Mongrel2's own keys, not headers.
        for (name, value) in req.extra() {
            if name.iter().any(u8::is_ascii_uppercase) || !passes(name) {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let key = http_key(py, name);
            let v = match env.get_item(&key)? {
                Some(old) => {
                    let sep = if name == "cookie" { "; " } else { ", " };
                    let mut s: String = old.extract()?;
                    s.push_str(sep);
                    s.push_str(&latin1_string(value));
                    PyString::new(py, &s)
                }
                None => latin1(py, value),
            };
            env.set_item(key, v)?;
        }
        env.set_item(intern!(py, "wsgi.input"), input)?;
        env.set_item(
            intern!(py, "m2wsgi.is_disconnected"),
            Bound::new(
                py,
                Disconnected {
                    responder: req.responder(),
                },
            )?,
        )?;
        Ok(env)
    }
}

/// Whether a header reaches the environ as `HTTP_*`.
fn passes(name: &[u8]) -> bool {
    !(name.contains(&b'_')
        || name == CONTENT_TYPE.as_str().as_bytes()
        || name == CONTENT_LENGTH.as_str().as_bytes()
        || name == TRANSFER_ENCODING.as_str().as_bytes()
        || name.starts_with(b"x-mongrel2-"))
}

fn method_str<'py>(py: Python<'py>, m: &str) -> Bound<'py, PyString> {
    match m {
        "GET" => intern!(py, "GET").clone(),
        "POST" => intern!(py, "POST").clone(),
        "HEAD" => intern!(py, "HEAD").clone(),
        "PUT" => intern!(py, "PUT").clone(),
        "DELETE" => intern!(py, "DELETE").clone(),
        "OPTIONS" => intern!(py, "OPTIONS").clone(),
        "PATCH" => intern!(py, "PATCH").clone(),
        other => PyString::new(py, other),
    }
}

/// `HTTP_` + the name upper-cased with `-` as `_`; interned for common headers.
fn http_key<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    macro_rules! table {
        ($($n:literal => $k:literal),* $(,)?) => {
            match name {
                $($n => return intern!(py, $k).clone(),)*
                _ => {}
            }
        };
    }
    table! {
        "host" => "HTTP_HOST",
        "user-agent" => "HTTP_USER_AGENT",
        "accept" => "HTTP_ACCEPT",
        "accept-encoding" => "HTTP_ACCEPT_ENCODING",
        "accept-language" => "HTTP_ACCEPT_LANGUAGE",
        "connection" => "HTTP_CONNECTION",
        "cookie" => "HTTP_COOKIE",
        "x-forwarded-for" => "HTTP_X_FORWARDED_FOR",
        "referer" => "HTTP_REFERER",
        "origin" => "HTTP_ORIGIN",
        "cache-control" => "HTTP_CACHE_CONTROL",
        "authorization" => "HTTP_AUTHORIZATION",
        "if-none-match" => "HTTP_IF_NONE_MATCH",
        "if-modified-since" => "HTTP_IF_MODIFIED_SINCE",
        "x-requested-with" => "HTTP_X_REQUESTED_WITH",
        "upgrade-insecure-requests" => "HTTP_UPGRADE_INSECURE_REQUESTS",
        "pragma" => "HTTP_PRAGMA",
        "expect" => "HTTP_EXPECT",
    }
    let mut k = String::with_capacity(5 + name.len());
    k.push_str("HTTP_");
    k.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    PyString::new(py, &k)
}

/// Bytes as a latin-1 `str` (every byte one code point, none lost).
pub(crate) fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    if b.is_ascii() {
        // ASCII is the same in UTF-8 and latin-1.
        PyString::new(py, std::str::from_utf8(b).unwrap_or_default())
    } else {
        PyString::new(py, &latin1_string(b))
    }
}

fn latin1_string(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// Splits the raw (still percent-encoded) request path into SCRIPT_NAME (decoded) and the rest
/// (to be decoded into PATH_INFO).
pub(crate) fn split_path<'a>(
    raw_path: &'a [u8],
    pattern: Option<&[u8]>,
    cfg: &EnvironConfig,
) -> (Vec<u8>, &'a [u8]) {
    if let Some(s) = &cfg.script_name {
        let s = s.trim_end_matches('/').as_bytes();
        return match strip_prefix_at_boundary(raw_path, s) {
            Some(rest) if !s.is_empty() => (s.to_vec(), rest),
            _ => (s.to_vec(), raw_path),
        };
    }
    let Some(pattern) = pattern.filter(|p| p.first() == Some(&b'/')) else {
        return (Vec::new(), raw_path);
    };
    let literal = pattern
        .iter()
        .position(|b| PATTERN_CHARS.contains(b))
        .map_or(pattern, |i| &pattern[..i]);
    // A prefix ending inside a segment ("/app" of "/app(.*)" for "/apple") is no mount point.
    let mut prefix = literal;
    while let [rest @ .., b'/'] = prefix {
        prefix = rest;
    }
    if prefix.is_empty() {
        return (Vec::new(), raw_path);
    }
    match strip_prefix_at_boundary(raw_path, prefix) {
        Some(rest) => (percent_decode(prefix), rest),
        None => (Vec::new(), raw_path),
    }
}

fn strip_prefix_at_boundary<'a>(path: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

/// Decodes `%XX` escapes (`%2F` too); a `%` not followed by two hex digits stays as it is.
pub(crate) fn percent_decode(s: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(s).collect()
}

/// SERVER_NAME and SERVER_PORT from a `Host` header value.
pub(crate) fn server_name_port(host: Option<&[u8]>, https: bool) -> (&[u8], &[u8]) {
    let default_port: &[u8] = if https { b"443" } else { b"80" };
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return (b"localhost", default_port);
    };
    // `[v6]:port` or `name:port`; the colon must come after any `]`.
    let colon = host.iter().rposition(|&b| b == b':');
    let bracket = host.iter().rposition(|&b| b == b']');
    match colon {
        Some(c) if bracket.is_none_or(|b| c > b) => {
            let port = &host[c + 1..];
            if !port.is_empty() && port.iter().all(u8::is_ascii_digit) {
                (&host[..c], port)
            } else {
                (&host[..c], default_port)
            }
        }
        _ => (host, default_port),
    }
}

/// `wsgi.errors`: a text stream whose complete lines go to the log.
#[pyclass(module = "m2wsgi", name = "ErrorStream", frozen)]
#[derive(Debug, Default)]
pub(crate) struct ErrorStream {
    partial: Mutex<String>,
}

impl ErrorStream {
    fn emit(line: &str) {
        tracing::error!(target: "wsgi.errors", "{}", line.trim_end_matches('\r'));
    }
}

#[pymethods]
impl ErrorStream {
    fn write(&self, s: &str) -> usize {
        let mut p = self.partial.lock();
        p.push_str(s);
        if p.contains('\n') {
            let text = std::mem::take(&mut *p);
            let mut lines = text.split('\n').peekable();
            while let Some(line) = lines.next() {
                if lines.peek().is_none() {
                    p.push_str(line);
                } else {
                    Self::emit(line);
                }
            }
        }
        s.chars().count()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?.extract::<String>()?);
        }
        Ok(())
    }

    fn flush(&self) {
        let mut p = self.partial.lock();
        if !p.is_empty() {
            Self::emit(&std::mem::take(&mut *p));
        }
    }

    fn writable(&self) -> bool {
        true
    }
}

/// `environ['m2wsgi.is_disconnected']()`: whether Mongrel2 reported the client gone.
#[pyclass(module = "m2wsgi", name = "IsDisconnected", frozen)]
#[derive(Debug)]
pub(crate) struct Disconnected {
    responder: Responder,
}

#[pymethods]
impl Disconnected {
    fn __call__(&self) -> bool {
        self.responder.is_disconnected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(script: Option<&str>) -> EnvironConfig {
        EnvironConfig {
            script_name: script.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn path_split_from_pattern() {
        let c = cfg(None);
        let t = |path: &str, pat: &str| {
            let (s, r) = split_path(path.as_bytes(), Some(pat.as_bytes()), &c);
            (
                String::from_utf8(s).unwrap(),
                String::from_utf8(r.to_vec()).unwrap(),
            )
        };
        assert_eq!(t("/app/x/y", "/app"), ("/app".into(), "/x/y".into()));
        assert_eq!(t("/app", "/app"), ("/app".into(), "".into()));
        assert_eq!(t("/app/", "/app/"), ("/app".into(), "/".into()));
        assert_eq!(t("/apple", "/app"), ("".into(), "/apple".into()));
        assert_eq!(t("/app/x", "/app/(.*)"), ("/app".into(), "/x".into()));
        assert_eq!(t("/x", "/"), ("".into(), "/x".into()));
        assert_eq!(t("/x", "/(.*)"), ("".into(), "/x".into()));
        assert_eq!(t("/a%20b/c", "/a%20b"), ("/a b".into(), "/c".into()));
        let (s, r) = split_path(b"/x", None, &c);
        assert!(s.is_empty());
        assert_eq!(r, b"/x");
    }

    #[test]
    fn path_split_from_option() {
        let (s, r) = split_path(b"/mnt/a", Some(b"/"), &cfg(Some("/mnt/")));
        assert_eq!((s.as_slice(), r), (&b"/mnt"[..], &b"/a"[..]));
        let (s, r) = split_path(b"/other", Some(b"/"), &cfg(Some("/mnt")));
        assert_eq!((s.as_slice(), r), (&b"/mnt"[..], &b"/other"[..]));
        let (s, r) = split_path(b"/app/x", Some(b"/app"), &cfg(Some("")));
        assert_eq!((s.as_slice(), r), (&b""[..], &b"/app/x"[..]));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%2Fb%20c"), b"/a/b c");
        assert_eq!(percent_decode(b"/caf%C3%A9"), b"/caf\xc3\xa9");
        assert_eq!(percent_decode(b"%"), b"%");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%zz%41"), b"%zzA");
        assert_eq!(percent_decode(b"%41"), b"A");
        assert_eq!(percent_decode(b"a%4"), b"a%4");
    }

    #[test]
    fn host_header() {
        let t = |h: Option<&str>, https| {
            let (n, p) = server_name_port(h.map(str::as_bytes), https);
            (
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(p.to_vec()).unwrap(),
            )
        };
        assert_eq!(
            t(Some("example.com:8080"), false),
            ("example.com".into(), "8080".into())
        );
        assert_eq!(
            t(Some("example.com"), false),
            ("example.com".into(), "80".into())
        );
        assert_eq!(
            t(Some("example.com"), true),
            ("example.com".into(), "443".into())
        );
        assert_eq!(t(Some("[::1]:81"), false), ("[::1]".into(), "81".into()));
        assert_eq!(t(Some("[::1]"), false), ("[::1]".into(), "80".into()));
        assert_eq!(t(Some("h:x"), false), ("h".into(), "80".into()));
        assert_eq!(t(None, false), ("localhost".into(), "80".into()));
    }

    #[test]
    fn headers_passed() {
        assert!(passes(b"x-forwarded-for"));
        assert!(!passes(b"x_forwarded_for"));
        assert!(!passes(b"content-type"));
        assert!(!passes(b"x-mongrel2-upload-start"));
        assert!(!passes(b"transfer-encoding"));
        assert_eq!(latin1_string(b"a\xe9\xff"), "a\u{e9}\u{ff}");
    }
}
