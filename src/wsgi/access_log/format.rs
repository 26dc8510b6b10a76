//! The access log's line format: gunicorn's `%(atom)s` syntax compiled once into a list of
//! parts, what one request's line needs ([`Record`]), and writing a line.

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::fmt;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

/// gunicorn's default access log format (Apache's combined log format).
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// Why a format string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access log format {format:?}, at byte {at}: {problem}")]
pub struct FormatError {
    /// The format string.
    pub format: String,
    /// Where the problem starts.
    pub at: usize,
    /// What is wrong.
    pub problem: String,
}

/// One piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied as it is (`%%` already turned into `%`).
    Lit(Box<[u8]>),
    /// `h`: the client address.
    Host,
    /// `l` and atoms gunicorn does not know: `-`.
    Dash,
    /// `u`: the user name of HTTP Basic authentication (request header at this index).
    User(usize),
    /// `t`: the time the line is written.
    Time,
    /// `r`: `METHOD RAW_URI PROTOCOL`.
    RequestLine,
    /// `m`
    Method,
    /// `U`: the path without the query string, percent-decoded.
    Path,
    /// `q`
    Query,
    /// `H`
    Protocol,
    /// `s`
    Status,
    /// `B`
    Bytes,
    /// `b`: `B`, or `-` when no response was sent.
    BytesOrDash,
    /// `f`, `a`, `{name}i`: a request header (at this index of [`Format::request_headers`]).
    Header(usize),
    /// `{name}o`: a response header.
    ResponseHeader(usize),
    /// `{name}e`: an environ variable.
    Environ(usize),
    /// `T`: whole seconds.
    Seconds,
    /// `M`: milliseconds.
    Millis,
    /// `D`: microseconds.
    Micros,
    /// `L`: seconds with six decimals.
    Decimal,
    /// `p`: `<pid>`.
    Pid,
}

/// A compiled access log format.
#[derive(Debug, Clone)]
pub(crate) struct Format {
    parts: Vec<Part>,
    /// The request headers the line needs, lower case.
    request_headers: Vec<HeaderName>,
    /// The response headers the line needs.
    response_headers: Vec<HeaderName>,
    /// The environ variables the line needs, lower case as gunicorn looks them up.
    environ: Vec<String>,
    /// `<pid>`, for `p`.
    pid: String,
    /// Atoms written as `-` because they are not known (for a warning at start).
    unknown: Vec<String>,
}

impl Format {
    /// Compiles `format`: literal text, `%%` for a percent sign, and `%(atom)s` atoms. The
    /// conversion may be any of Python's (`s`, `d`, ...) with flags and a width, which are
    /// accepted and ignored: every value is written as text.
    pub(crate) fn compile(format: &str) -> Result<Self, FormatError> {
        let err = |at: usize, problem: &str| FormatError {
            format: format.to_string(),
            at,
            problem: problem.to_string(),
        };
        let mut f = Format {
            parts: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            environ: Vec::new(),
            pid: format!("<{}>", std::process::id()),
            unknown: Vec::new(),
        };
        let b = format.as_bytes();
        let mut lit: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'%' {
                lit.push(b[i]);
                i += 1;
                continue;
            }
            match b.get(i + 1) {
                Some(b'%') => {
                    lit.push(b'%');
                    i += 2;
                    continue;
                }
                Some(b'(') => {}
                _ => {
                    return Err(err(
                        i,
                        "a % that starts no %(atom)s (write %% for a percent sign)",
                    ))
                }
            }
            // The key runs to the matching parenthesis, as in Python's `%` formatting.
            let start = i + 2;
            let mut depth = 1;
            let mut j = start;
            while j < b.len() {
                match b[j] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            if j >= b.len() {
                return Err(err(i, "%( without its closing )"));
            }
            let key = &format[start..j];
            j += 1;
            while j < b.len() && b"#0- +".contains(&b[j]) {
                j += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if b.get(j) == Some(&b'.') {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            while j < b.len() && b"hlL".contains(&b[j]) {
                j += 1;
            }
            match b.get(j) {
                Some(c) if b"diouxXeEfFgGcrsa".contains(c) => {}
                _ => return Err(err(j, "%(atom) must be followed by a conversion such as s")),
            }
            i = j + 1;
            if !lit.is_empty() {
                f.parts
                    .push(Part::Lit(std::mem::take(&mut lit).into_boxed_slice()));
            }
            let part = f.atom(key);
            f.parts.push(part);
        }
        if !lit.is_empty() {
            f.parts.push(Part::Lit(lit.into_boxed_slice()));
        }
        Ok(f)
    }

    fn atom(&mut self, key: &str) -> Part {
        match key {
            "h" => Part::Host,
            "l" => Part::Dash,
            "u" => Part::User(self.request_header("authorization")),
            "t" => Part::Time,
            "r" => Part::RequestLine,
            "m" => Part::Method,
            "U" => Part::Path,
            "q" => Part::Query,
            "H" => Part::Protocol,
            "s" => Part::Status,
            "B" => Part::Bytes,
            "b" => Part::BytesOrDash,
            "f" => Part::Header(self.request_header("referer")),
            "a" => Part::Header(self.request_header("user-agent")),
            "T" => Part::Seconds,
            "M" => Part::Millis,
            "D" => Part::Micros,
            "L" => Part::Decimal,
            "p" => Part::Pid,
            k => {
                // gunicorn looks `{...}x` atoms up in lower case.
                let lower = k.to_ascii_lowercase();
                let named = lower
                    .strip_prefix('{')
                    .and_then(|r| r.len().checked_sub(2).map(|n| (&r[..n], &r[n..])))
                    .filter(|(_, kind)| matches!(*kind, "}i" | "}o" | "}e"));
                match named {
                    Some((name, "}i")) if HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                        Part::Header(self.request_header(name))
                    }
                    Some((name, "}o")) if HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                        let h = HeaderName::from_bytes(name.as_bytes()).expect("checked");
                        Part::ResponseHeader(index_of(&mut self.response_headers, h))
                    }
                    Some((name, "}e")) => Part::Environ(index_of(&mut self.environ, name.into())),
                    _ => {
                        self.unknown.push(k.to_string());
                        Part::Dash
                    }
                }
            }
        }
    }

    fn request_header(&mut self, name: &str) -> usize {
        let h = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        index_of(&mut self.request_headers, h)
    }

    /// The atoms that are always written as `-` because they mean nothing (to warn about).
    pub(crate) fn unknown_atoms(&self) -> &[String] {
        &self.unknown
    }

    /// The environ variables the line needs (lower case: look up `KEY`, then `key`).
    pub(crate) fn environ_keys(&self) -> &[String] {
        &self.environ
    }

    /// Fills the request's part of `rec` (call with the request at hand, before answering).
    pub(crate) fn capture_request(&self, msg: &crate::Message, rec: &mut Record) {
        rec.method = msg.method().cloned();
        rec.uri = msg.uri().cloned();
        rec.path = msg.request_path().cloned();
        rec.query = msg.query().cloned();
        rec.version = msg.version();
        rec.remote = msg.remote_addr().cloned();
        capture_headers(msg.headers(), &self.request_headers, &mut rec.headers);
        rec.response_headers.clear();
        rec.environ.clear();
        rec.status = None;
        rec.bytes = 0;
    }

    /// Fills the response headers of `rec` from what was sent.
    pub(crate) fn capture_response(&self, headers: &HeaderMap, rec: &mut Record) {
        capture_headers(headers, &self.response_headers, &mut rec.response_headers);
    }

    /// Whether the line needs the response headers.
    pub(crate) fn needs_response_headers(&self) -> bool {
        !self.response_headers.is_empty()
    }

    /// Appends the line for `rec` and a newline to `out`; `clock` gives `%(t)s` for `now`.
    pub(crate) fn write(
        &self,
        rec: &Record,
        clock: &mut Clock,
        now: SystemTime,
        out: &mut Vec<u8>,
    ) {
        for part in &self.parts {
            match part {
                Part::Lit(t) => out.extend_from_slice(t),
                Part::Host => opt(out, rec.remote.as_deref()),
                Part::Dash => out.push(b'-'),
                Part::User(i) => match rec.headers.get(*i).and_then(Slot::get).and_then(basic_user)
                {
                    Some(u) => escaped(out, u.as_bytes()),
                    None => out.push(b'-'),
                },
                Part::Time => out.extend_from_slice(clock.stamp(now).as_bytes()),
                Part::RequestLine => {
                    method(out, rec.method.as_ref());
                    out.push(b' ');
                    match &rec.uri {
                        Some(u) => escaped(out, u),
                        None => {
                            escaped(out, rec.path.as_deref().unwrap_or(b"-"));
                            if let Some(q) = rec.query.as_deref().filter(|q| !q.is_empty()) {
                                out.push(b'?');
                                escaped(out, q);
                            }
                        }
                    }
                    out.push(b' ');
                    protocol(out, rec.version);
                }
                Part::Method => method(out, rec.method.as_ref()),
                Part::Path => match &rec.path {
                    Some(p) => {
                        let decoded: Vec<u8> = percent_encoding::percent_decode(p).collect();
                        escaped(out, &decoded);
                    }
                    None => out.push(b'-'),
                },
                Part::Query => escaped(out, rec.query.as_deref().unwrap_or_default()),
                Part::Protocol => protocol(out, rec.version),
                Part::Status => match rec.status {
                    Some(s) => number(out, s),
                    None => out.push(b'-'),
                },
                Part::Bytes => number(out, rec.bytes),
                Part::BytesOrDash => match rec.status {
                    Some(_) => number(out, rec.bytes),
                    None => out.push(b'-'),
                },
                Part::Header(i) => opt(out, rec.headers.get(*i).and_then(Slot::get)),
                Part::ResponseHeader(i) => {
                    opt(out, rec.response_headers.get(*i).and_then(Slot::get))
                }
                Part::Environ(i) => opt(
                    out,
                    rec.environ
                        .get(*i)
                        .and_then(|v| v.as_deref())
                        .map(str::as_bytes),
                ),
                Part::Seconds => number(out, rec.elapsed.as_secs()),
                Part::Millis => number(out, rec.elapsed.as_millis()),
                Part::Micros => number(out, rec.elapsed.as_micros()),
                Part::Decimal => {
                    let _ = write!(
                        out,
                        "{}.{:06}",
                        rec.elapsed.as_secs(),
                        rec.elapsed.subsec_micros()
                    );
                }
                Part::Pid => out.extend_from_slice(self.pid.as_bytes()),
            }
        }
        out.push(b'\n');
    }
}

fn index_of<T: PartialEq>(v: &mut Vec<T>, item: T) -> usize {
    match v.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            v.push(item);
            v.len() - 1
        }
    }
}

fn capture_headers(map: &HeaderMap, names: &[HeaderName], into: &mut Vec<Slot>) {
    into.clear();
    for name in names {
        let mut values = map.get_all(name).iter();
        let slot = match (values.next(), values.next()) {
            (None, _) => Slot::Absent,
            (Some(v), None) => Slot::One(v.clone()),
            (Some(a), Some(b)) => {
                let mut joined = Vec::with_capacity(a.len() + b.len() + 16);
                joined.extend_from_slice(a.as_bytes());
                for v in std::iter::once(b).chain(values) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(v.as_bytes());
                }
                Slot::Joined(joined)
            }
        };
        into.push(slot);
    }
}

/// A header's value for the line: absent, one value, or repeated values joined with `, `.
#[derive(Debug, Clone, Default)]
pub(crate) enum Slot {
    /// Not there.
    #[default]
    Absent,
    /// One value (shares the request's buffer).
    One(HeaderValue),
    /// Several values joined.
    Joined(Vec<u8>),
}

impl Slot {
    fn get(&self) -> Option<&[u8]> {
        match self {
            Slot::Absent => None,
            Slot::One(v) => Some(v.as_bytes()),
            Slot::Joined(v) => Some(v),
        }
    }
}

/// What one request's line is made of. A worker thread keeps one and refills it for every
/// request, so its vectors are allocated once.
#[derive(Debug, Default)]
pub(crate) struct Record {
    pub(crate) method: Option<Method>,
    pub(crate) uri: Option<Bytes>,
    pub(crate) path: Option<Bytes>,
    pub(crate) query: Option<Bytes>,
    pub(crate) version: Option<Version>,
    pub(crate) remote: Option<Bytes>,
    /// The values of [`Format::request_headers`], in order.
    pub(crate) headers: Vec<Slot>,
    /// The values of [`Format::response_headers`], in order (empty when nothing was sent).
    pub(crate) response_headers: Vec<Slot>,
    /// The values of [`Format::environ_keys`], in order (empty when the application was not
    /// called).
    pub(crate) environ: Vec<Option<String>>,
    /// The status sent, if any.
    pub(crate) status: Option<u16>,
    /// Body bytes sent.
    pub(crate) bytes: u64,
    /// From the worker taking the request to the end of its response.
    pub(crate) elapsed: Duration,
}

impl Record {
    /// Lets go of the request's buffers once its line is written (the vectors keep their room).
    pub(crate) fn release(&mut self) {
        self.method = None;
        self.uri = None;
        self.path = None;
        self.query = None;
        self.remote = None;
        self.headers.clear();
        self.response_headers.clear();
        self.environ.clear();
    }
}

/// `[01/Dec/2025:14:08:26 +0100]` for the current second, in the local time zone (read once,
/// when the log is opened), formatted once a second.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    tz: TimeZone,
    second: i64,
    text: String,
}

impl Clock {
    pub(crate) fn new(tz: TimeZone) -> Self {
        Self {
            tz,
            second: i64::MIN,
            text: String::new(),
        }
    }

    pub(crate) fn stamp(&mut self, now: SystemTime) -> &str {
        let ts = Timestamp::try_from(now).unwrap_or(Timestamp::UNIX_EPOCH);
        if ts.as_second() != self.second {
            self.second = ts.as_second();
            self.text = clf_time(&self.tz, ts);
        }
        &self.text
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The Common Log Format's time: `[%d/%b/%Y:%H:%M:%S %z]`.
fn clf_time(tz: &TimeZone, ts: Timestamp) -> String {
    let offset = tz.to_offset(ts);
    let dt = offset.to_datetime(ts);
    let secs = offset.seconds();
    let (sign, secs) = if secs < 0 { ('-', -secs) } else { ('+', secs) };
    let month = usize::try_from(dt.month() - 1).unwrap_or(0);
    format!(
        "[{:02}/{}/{:04}:{:02}:{:02}:{:02} {sign}{:02}{:02}]",
        dt.day(),
        MONTHS[month.min(11)],
        dt.year(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The user of an `Authorization: Basic ...` header, as gunicorn finds it: the part of the
/// decoded credentials before the first `:`, if it is UTF-8 and not empty.
fn basic_user(auth: &[u8]) -> Option<String> {
    let scheme = auth.get(..5)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let space = auth.iter().position(|&b| b == b' ')?;
    let encoded = auth[space + 1..].trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let user = decoded.split(|&b| b == b':').next()?;
    String::from_utf8(user.to_vec())
        .ok()
        .filter(|u| !u.is_empty())
}

fn method(out: &mut Vec<u8>, m: Option<&Method>) {
    match m {
        Some(m) => escaped(out, m.as_str().as_bytes()),
        None => out.push(b'-'),
    }
}

fn protocol(out: &mut Vec<u8>, v: Option<Version>) {
    out.extend_from_slice(match v {
        Some(Version::HTTP_10) => b"HTTP/1.0",
        Some(Version::HTTP_11) => b"HTTP/1.1",
        Some(Version::HTTP_09) => b"HTTP/0.9",
        Some(Version::HTTP_2) => b"HTTP/2.0",
        Some(Version::HTTP_3) => b"HTTP/3.0",
        _ => b"-",
    });
}

fn number(out: &mut Vec<u8>, n: impl fmt::Display) {
    let _ = write!(out, "{n}");
}

fn opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => escaped(out, v),
        None => out.push(b'-'),
    }
}

/// A value as the line carries it: `"` as `\"` (as gunicorn does), `\` as `\\`, and control
/// bytes as `\xHH`, so that a value can neither end a quoted field nor a line. Other bytes
/// (UTF-8 included) are kept.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f;
    if !v.iter().any(|&b| special(b)) {
        out.extend_from_slice(v);
        return;
    }
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if special(b) => {
                let _ = write!(out, "\\x{b:02x}");
            }
            b => out.push(b),
        }
    }
}
