//! Test a handler without Mongrel2: the exact frames Mongrel2 sends, and a fake Mongrel2 that a
//! [`Connection`](m2wsgi::Connection) can be pointed at.
//!
//! - [`RequestBuilder`] builds request frames byte for byte as Mongrel2 1.12 writes them, in both
//!   header protocols (tnetstring and the legacy JSON): plain HTTP requests, async uploads
//!   (`x-mongrel2-upload-start` / `-done`), streamed uploads (`UPLOAD_STREAM`), WebSocket
//!   handshakes and frames, JSON-socket messages. [`disconnect`], [`credits`] and
//!   [`upload_slice`] build the other messages Mongrel2 sends.
//! - [`FakeMongrel2`] binds Mongrel2's two sockets (a PUSH for requests, a SUB for replies) on
//!   loopback TCP ports chosen by the system, [`send`](FakeMongrel2::send)s frames and collects
//!   the handler's replies ([`Reply`]), and reads whole HTTP responses per client connection id
//!   ([`HttpResponse`]).
//!
//! Header order: Mongrel2 writes the headers in the order of its hash table, which is not
//! stable. The builder writes Mongrel2's own keys first in the order seen on the wire and the
//! HTTP headers in the order they were added; [`RequestBuilder::order`] pins any other order (to
//! reproduce a captured frame, say). A handler must not depend on the order.
//!
//! # Example: a handler tested in a few lines
//!
//! ```
//! use m2wsgi::testing::{FakeMongrel2, RequestBuilder};
//! use m2wsgi::{Connection, Server};
//! use std::time::Duration;
//!
//! let m2 = FakeMongrel2::new();
//! let conn = Connection::builder(m2.send_spec())
//!     .recv_spec(m2.recv_spec())
//!     .send_ident(m2.sender())
//!     .connect()?;
//! let server = Server::new(conn);
//! let stop = server.shutdown_handle();
//! let thread = std::thread::spawn(move || {
//!     server.serve(|req| {
//!         let _ = req.reply_http(http::StatusCode::OK, &http::HeaderMap::new(), b"hi");
//!     })
//! });
//!
//! m2.send(RequestBuilder::get("/hello").conn_id(7).build());
//! let resp = m2.read_response(7, Duration::from_secs(10)).expect("a response");
//! assert_eq!(resp.status, 200);
//! assert_eq!(resp.body, b"hi");
//!
//! stop.shutdown();
//! thread.join().unwrap()?;
//! # Ok::<(), m2wsgi::Error>(())
//! ```

use base64::Engine as _;
use bytes::Bytes;
use m2wsgi::codec::{HeaderProtocol, Opcode};
use m2wsgi::tnetstring::{self, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The sender UUID of the captured tnetstring frames, used when none is given.
pub const DEFAULT_SENDER: &str = "34f9ceee-cd52-4b7f-b197-88bf2f0ec378";

/// The GUID that RFC 6455 appends to `Sec-WebSocket-Key` before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Mongrel2's own header keys, in the order it writes them in tnetstring headers.
const TNET_FIRST: [&str; 9] = [
    "REMOTE_ADDR",
    "METHOD",
    "URL_SCHEME",
    "PATTERN",
    "FRAGMENT",
    "QUERY",
    "URI",
    "VERSION",
    "PATH",
];

/// Mongrel2's own header keys that end a JSON header object, in its order.
const JSON_LAST: [&str; 8] = [
    "METHOD",
    "VERSION",
    "URI",
    "QUERY",
    "FRAGMENT",
    "PATTERN",
    "URL_SCHEME",
    "REMOTE_ADDR",
];

/// Keys Mongrel2 adds after the HTTP headers in tnetstring frames.
const TNET_LAST: [&str; 2] = ["UPLOAD_STREAM", "UPLOAD_STREAM_DONE"];

/// One header value: a string, or a list for a repeated header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderValue {
    One(Vec<u8>),
    Many(Vec<Vec<u8>>),
}

/// Builds one request frame exactly as Mongrel2 sends it to a handler.
///
/// ```
/// use m2wsgi::testing::RequestBuilder;
///
/// let frame = RequestBuilder::get("/handler").pattern("/handler").conn_id(1).build();
/// let msg = m2wsgi::Message::decode(frame.into())?;
/// assert_eq!(msg.method(), Some(&http::Method::GET));
/// assert_eq!(msg.headers()["host"], "localhost");
/// # Ok::<(), m2wsgi::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "call .build() to get the frame"]
pub struct RequestBuilder {
    sender: Vec<u8>,
    conn_id: u64,
    path: Vec<u8>,
    protocol: HeaderProtocol,
    /// Every header entry, Mongrel2's keys included, in the order they were set.
    entries: Vec<(Vec<u8>, HeaderValue)>,
    body: Vec<u8>,
    order: Vec<Vec<u8>>,
}

impl RequestBuilder {
    /// A request `method uri` (`uri` is the request target: path, optional `?query`, optional
    /// `#fragment`, kept raw). It carries what Mongrel2 always adds (`METHOD`, `VERSION`
    /// `HTTP/1.1`, `URI`, `PATH`, `QUERY` and `FRAGMENT` when present, `PATTERN` `/`,
    /// `URL_SCHEME` `http`, `REMOTE_ADDR` and `x-forwarded-for` `127.0.0.1`) and a `host:
    /// localhost` header, from [`DEFAULT_SENDER`] on connection id 1, with an empty body.
    pub fn new(method: &str, uri: &str) -> Self {
        let (target, fragment) = match uri.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (uri, None),
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut b = RequestBuilder {
            sender: DEFAULT_SENDER.as_bytes().to_vec(),
            conn_id: 1,
            path: path.as_bytes().to_vec(),
            protocol: HeaderProtocol::Tnetstring,
            entries: Vec::new(),
            body: Vec::new(),
            order: Vec::new(),
        };
        b = b
            .set("REMOTE_ADDR", "127.0.0.1")
            .set("METHOD", method)
            .set("URL_SCHEME", "http")
            .set("PATTERN", "/");
        if let Some(f) = fragment {
            b = b.set("FRAGMENT", f);
        }
        if let Some(q) = query {
            b = b.set("QUERY", q);
        }
        b.set("URI", target)
            .set("VERSION", "HTTP/1.1")
            .set("PATH", path)
            .header("host", "localhost")
            .set("x-forwarded-for", "127.0.0.1")
    }

    /// A `GET` request (see [`new`](Self::new)).
    pub fn get(uri: &str) -> Self {
        Self::new("GET", uri)
    }

    /// A `HEAD` request.
    pub fn head(uri: &str) -> Self {
        Self::new("HEAD", uri)
    }

    /// A `POST` request with an inline `body` and its `content-length` header.
    pub fn post(uri: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        Self::new("POST", uri)
            .header("content-length", body.len().to_string())
            .body(body)
    }

    /// The first message of a WebSocket connection (`METHOD` `WEBSOCKET_HANDSHAKE`), with the
    /// handshake headers for `key` (`Sec-WebSocket-Key`). The body is the
    /// `Sec-WebSocket-Accept` value Mongrel2 computes; the handler sends the `101` itself.
    pub fn websocket_handshake(uri: &str, key: &str) -> Self {
        Self::get(uri)
            .set("METHOD", "WEBSOCKET_HANDSHAKE")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", key)
            .header("sec-websocket-version", "13")
            .header("connection", "Upgrade")
            .body(websocket_accept(key))
    }

    /// One complete WebSocket message or control frame from the client (`METHOD` `WEBSOCKET`,
    /// `FLAGS` `0x81` for text and so on, the handshake headers repeated), with the unmasked
    /// `payload` as body.
    pub fn websocket_frame(
        uri: &str,
        key: &str,
        opcode: Opcode,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        Self::websocket_handshake(uri, key)
            .set("METHOD", "WEBSOCKET")
            .header("FLAGS", format!("0x{:X}", opcode.as_u8() | 0x80))
            .body(payload)
    }

    /// A message on a JSON socket (`@pattern {json}\0` from the client): `METHOD` `JSON`,
    /// `PATH` and `PATTERN` `pattern`, no `VERSION` or `URI`, the JSON text as body.
    pub fn json_socket(pattern: &str, json: impl Into<Vec<u8>>) -> Self {
        let mut b = Self::get(pattern)
            .set("METHOD", "JSON")
            .set("PATTERN", pattern)
            .body(json);
        b.remove(&["URI", "VERSION", "host"]);
        b
    }

    /// Sets the sender (the handler's `send_ident`, first field of every frame).
    pub fn sender(mut self, sender: impl AsRef<[u8]>) -> Self {
        self.sender = sender.as_ref().to_vec();
        self
    }

    /// Sets the client connection id.
    pub fn conn_id(mut self, id: u64) -> Self {
        self.conn_id = id;
        self
    }

    /// Sets the header protocol (tnetstring by default).
    pub fn protocol(mut self, protocol: HeaderProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Uses the legacy JSON header protocol.
    pub fn json(self) -> Self {
        self.protocol(HeaderProtocol::Json)
    }

    /// Sets `PATTERN`, the route that matched.
    pub fn pattern(self, pattern: &str) -> Self {
        self.set("PATTERN", pattern)
    }

    /// Sets `VERSION` (`HTTP/1.0`, say).
    pub fn version(self, version: &str) -> Self {
        self.set("VERSION", version)
    }

    /// Sets `URL_SCHEME` (`https` for an SSL listener).
    pub fn scheme(self, scheme: &str) -> Self {
        self.set("URL_SCHEME", scheme)
    }

    /// Sets the client address: `REMOTE_ADDR` and `x-forwarded-for`.
    pub fn remote_addr(self, addr: &str) -> Self {
        self.set("REMOTE_ADDR", addr).set("x-forwarded-for", addr)
    }

    /// Sets a header, replacing one of the same name (names are used as given: Mongrel2
    /// lower-cases HTTP header names, and upper-case ones are its own keys).
    pub fn header(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.set(name, value)
    }

    /// Sets a header from its values as Mongrel2 sends them: several (a repeated header, at
    /// most 5) as a list, a single one as a string.
    pub fn header_values(mut self, name: &str, values: &[&[u8]]) -> Self {
        let v = match values {
            [one] => HeaderValue::One(one.to_vec()),
            _ => HeaderValue::Many(values.iter().map(|v| v.to_vec()).collect()),
        };
        self.put(name, v);
        self
    }

    /// Sets `METHOD`.
    pub fn method(self, method: &str) -> Self {
        self.set("METHOD", method)
    }

    /// The value set for header or Mongrel2 key `name`, if it is a single string.
    pub fn value_of(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .and_then(|(_, v)| match v {
                HeaderValue::One(s) => Some(s.as_slice()),
                HeaderValue::Many(_) => None,
            })
    }

    /// Removes a header or Mongrel2 key.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.remove(&[name]);
        self
    }

    /// Sets the body (inline; Mongrel2 does so up to `limits.content_length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first message of an async upload: `x-mongrel2-upload-start: temp_path` and an empty
    /// body (Mongrel2 is writing the body to `temp_path`).
    pub fn upload_start(self, temp_path: &str) -> Self {
        self.header("x-mongrel2-upload-start", temp_path)
            .body(Vec::new())
    }

    /// The second message of an async upload: `x-mongrel2-upload-start` and
    /// `x-mongrel2-upload-done`, both `temp_path`, and an empty body (the file is complete).
    pub fn upload_done(self, temp_path: &str) -> Self {
        self.upload_start(temp_path)
            .header("x-mongrel2-upload-done", temp_path)
    }

    /// The first message of a streamed upload (`upload.stream=1`): `UPLOAD_STREAM: 0` (and
    /// `UPLOAD_STREAM_DONE: 1` when `done`); the body is what Mongrel2 had already read. The rest
    /// comes in [`upload_slice`]s once the handler grants credits.
    pub fn upload_stream(self, first: impl Into<Vec<u8>>, done: bool) -> Self {
        let b = self.header("UPLOAD_STREAM", "0").body(first);
        if done {
            b.header("UPLOAD_STREAM_DONE", "1")
        } else {
            b.remove_header("UPLOAD_STREAM_DONE")
        }
    }

    /// Adds `DOWNLOAD_CREDITS` (Mongrel2 sends `102400` on the first request of a connection
    /// when `download.flow_control=1`).
    pub fn download_credits(self, credits: u64) -> Self {
        self.header("DOWNLOAD_CREDITS", credits.to_string())
    }

    /// Pins the order of the header keys: the keys named here come first, in this order; the
    /// others follow in the default order. Mongrel2's own order is that of a hash table, so
    /// this is only needed to reproduce a captured frame byte for byte.
    pub fn order(mut self, keys: &[&str]) -> Self {
        self.order = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        self
    }

    /// The client connection id.
    pub fn id(&self) -> u64 {
        self.conn_id
    }

    /// The frame, as Mongrel2 would push it.
    pub fn build(&self) -> Vec<u8> {
        let entries = self.ordered();
        let mut out = Vec::with_capacity(256 + self.body.len());
        frame_prefix(&mut out, &self.sender, self.conn_id, &self.path);
        match self.protocol {
            HeaderProtocol::Tnetstring => {
                let dict = Value::Dict(
                    entries
                        .iter()
                        .map(|(k, v)| (k.as_slice(), tnet_value(v)))
                        .collect(),
                );
                dict.encode(&mut out);
            }
            HeaderProtocol::Json => {
                let mut json = Vec::new();
                json.push(b'{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        json.push(b',');
                    }
                    json_string(&mut json, k);
                    json.push(b':');
                    match v {
                        // Mongrel2 does not escape the PATH value at all.
                        HeaderValue::One(s) if k == b"PATH" => {
                            json.push(b'"');
                            json.extend_from_slice(s);
                            json.push(b'"');
                        }
                        HeaderValue::One(s) => json_string(&mut json, s),
                        HeaderValue::Many(list) => {
                            json.push(b'[');
                            for (j, s) in list.iter().enumerate() {
                                if j > 0 {
                                    json.push(b',');
                                }
                                json_string(&mut json, s);
                            }
                            json.push(b']');
                        }
                    }
                }
                json.push(b'}');
                tnetstring::write_netstring(&mut out, &json);
            }
        }
        tnetstring::write_netstring(&mut out, &self.body);
        out
    }

    /// [`build`](Self::build) as [`Bytes`], for [`Message::decode`](m2wsgi::Message::decode).
    pub fn build_bytes(&self) -> Bytes {
        Bytes::from(self.build())
    }

    fn set(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.put(name, HeaderValue::One(value.as_ref().to_vec()));
        self
    }

    fn put(&mut self, name: &str, value: HeaderValue) {
        match self.entries.iter_mut().find(|(k, _)| k == name.as_bytes()) {
            Some((_, v)) => *v = value,
            None => self.entries.push((name.as_bytes().to_vec(), value)),
        }
    }

    fn remove(&mut self, names: &[&str]) {
        self.entries
            .retain(|(k, _)| !names.iter().any(|n| k == n.as_bytes()));
    }

    /// The entries in wire order: the default rank of each key (Mongrel2's keys where it puts
    /// them, the rest as added), then the pinned [`order`](Self::order).
    fn ordered(&self) -> Vec<(Vec<u8>, HeaderValue)> {
        let pos = |list: &[&str], k: &[u8]| list.iter().position(|n| n.as_bytes() == k);
        let rank = |k: &[u8]| -> usize {
            match self.protocol {
                HeaderProtocol::Tnetstring => {
                    if let Some(i) = pos(&TNET_FIRST, k) {
                        i
                    } else if k == b"x-forwarded-for" {
                        200
                    } else if let Some(i) = pos(&TNET_LAST, k) {
                        300 + i
                    } else {
                        100
                    }
                }
                HeaderProtocol::Json => {
                    if k == b"PATH" {
                        0
                    } else if k == b"x-forwarded-for" {
                        1
                    } else if let Some(i) = pos(&JSON_LAST, k) {
                        200 + i
                    } else {
                        100
                    }
                }
            }
        };
        let mut entries = self.entries.clone();
        entries.sort_by_key(|(k, _)| rank(k)); // stable: same rank keeps the order added
        if !self.order.is_empty() {
            let pinned = |k: &[u8]| {
                self.order
                    .iter()
                    .position(|o| o == k)
                    .unwrap_or(self.order.len())
            };
            entries.sort_by_key(|(k, _)| pinned(k));
        }
        entries
    }
}

fn tnet_value(v: &HeaderValue) -> Value<'_> {
    match v {
        HeaderValue::One(s) => Value::String(s),
        HeaderValue::Many(list) => Value::List(list.iter().map(|s| Value::String(s)).collect()),
    }
}

/// `"s"` with only `\` and `"` escaped, as Mongrel2 writes JSON (other bytes are copied raw).
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'\\' || b == b'"' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// `SENDER SP CONN_ID SP PATH SP`.
fn frame_prefix(out: &mut Vec<u8>, sender: &[u8], conn_id: u64, path: &[u8]) {
    out.extend_from_slice(sender);
    out.push(b' ');
    out.extend_from_slice(conn_id.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    out.push(b' ');
}

/// The `Sec-WebSocket-Accept` value for `key`: base64 of the SHA-1 of key + the RFC 6455 GUID.
pub fn websocket_accept(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// Mongrel2's notice that client `conn_id` is gone: path `@*`, `METHOD` `JSON`, body
/// `{"type":"disconnect"}`.
pub fn disconnect(sender: &str, conn_id: u64, protocol: HeaderProtocol) -> Vec<u8> {
    notice(sender, conn_id, protocol, &[], b"{\"type\":\"disconnect\"}")
}

/// Mongrel2's download-credits notice (`download.flow_control=1`): `bytes` more were written to
/// client `conn_id`; body `{"type":"credits"}`.
pub fn credits(sender: &str, conn_id: u64, bytes: u64, protocol: HeaderProtocol) -> Vec<u8> {
    let n = bytes.to_string();
    notice(
        sender,
        conn_id,
        protocol,
        &[("DOWNLOAD_CREDITS", n.as_bytes())],
        b"{\"type\":\"credits\"}",
    )
}

fn notice(
    sender: &str,
    conn_id: u64,
    protocol: HeaderProtocol,
    extra: &[(&str, &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    frame_prefix(&mut out, sender.as_bytes(), conn_id, b"@*");
    match protocol {
        HeaderProtocol::Tnetstring => {
            // Extra keys first, then METHOD (as observed for DOWNLOAD_CREDITS).
            let mut items: Vec<(&[u8], Value<'_>)> = extra
                .iter()
                .map(|(k, v)| (k.as_bytes(), Value::String(v)))
                .collect();
            items.push((b"METHOD", Value::String(b"JSON")));
            Value::Dict(items).encode(&mut out);
        }
        HeaderProtocol::Json => {
            let mut json = b"{\"METHOD\":\"JSON\"".to_vec();
            for (k, v) in extra {
                json.push(b',');
                json_string(&mut json, k.as_bytes());
                json.push(b':');
                json_string(&mut json, v);
            }
            json.push(b'}');
            tnetstring::write_netstring(&mut out, &json);
        }
    }
    tnetstring::write_netstring(&mut out, body);
    out
}

/// A later message of a streamed upload: headers only `UPLOAD_STREAM: offset` (plus
/// `UPLOAD_STREAM_DONE: 1` when `done`), the next `slice` of the body. `path` is the request's
/// path, as in the first message. (Mongrel2 writes these in tnetstring form for both protocols'
/// handlers as far as observed; only tnetstring is built.)
pub fn upload_slice(
    sender: &str,
    conn_id: u64,
    path: &str,
    offset: u64,
    slice: &[u8],
    done: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    frame_prefix(&mut out, sender.as_bytes(), conn_id, path.as_bytes());
    let off = offset.to_string();
    let mut items: Vec<(&[u8], Value<'_>)> =
        vec![(b"UPLOAD_STREAM", Value::String(off.as_bytes()))];
    if done {
        items.push((b"UPLOAD_STREAM_DONE", Value::String(b"1")));
    }
    Value::Dict(items).encode(&mut out);
    tnetstring::write_netstring(&mut out, slice);
    out
}

// ------------------------------------------------------------------------------------------------
// Replies

/// One message a handler published: `SENDER SP LEN:IDS, SP BODY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The sender (the handler's `send_ident`).
    pub sender: Bytes,
    /// The client connection ids it is addressed to.
    pub conn_ids: Vec<u64>,
    /// Whether this is an extended message (`X` before the ids; the body is a tnetstring such as
    /// `[ctl, {credits: N}]`).
    pub extended: bool,
    /// The body: bytes for the clients (empty = close them), or the extended message.
    pub body: Bytes,
}

impl Reply {
    /// Parses a reply frame; `None` when it is not `SENDER SP NETSTRING(IDS) SP BODY` with
    /// decimal ids.
    pub fn parse(frame: &[u8]) -> Option<Reply> {
        let sp = frame.iter().position(|&b| b == b' ')?;
        let (ids, rest) = tnetstring::parse_netstring(&frame[sp + 1..]).ok()?;
        let body = rest.strip_prefix(b" ")?;
        let (extended, ids) = match ids.strip_prefix(b"X ") {
            Some(i) => (true, i),
            None => (false, ids),
        };
        let conn_ids = ids
            .split(|&b| b == b' ')
            .filter(|s| !s.is_empty())
            .map(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some(Reply {
            sender: Bytes::copy_from_slice(&frame[..sp]),
            conn_ids,
            extended,
            body: Bytes::copy_from_slice(body),
        })
    }
}

/// What one client connection received, gathered from the replies.
#[derive(Debug, Default, Clone)]
pub struct ClientOutput {
    /// The bytes written to the client, in order.
    pub data: Vec<u8>,
    /// How many non-empty replies carried them.
    pub messages: usize,
    /// Whether an empty reply (close) came.
    pub closed: bool,
    /// The bodies of extended (`X`) messages addressed to it.
    pub ctl: Vec<Vec<u8>>,
}

impl ClientOutput {
    /// Whether an extended message cancelled the connection (`ctl` with `cancel`).
    pub fn cancelled(&self) -> bool {
        self.ctl
            .iter()
            .any(|c| c.windows(6).any(|w| w == b"cancel"))
    }

    /// Whether the connection ended: closed or cancelled.
    pub fn ended(&self) -> bool {
        self.closed || self.cancelled()
    }
}

// ------------------------------------------------------------------------------------------------
// HTTP responses

/// A parsed HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (de-chunked when the response was chunked).
    pub body: Vec<u8>,
    /// Whether the body was chunked.
    pub chunked: bool,
    /// The head as sent: status line and headers up to and including the blank line.
    pub head: Vec<u8>,
}

impl HttpResponse {
    /// Parses one complete response from the front of `data`; `None` while it is incomplete.
    /// `head_only` is for answers to `HEAD` (no body whatever the headers say); `closed` says
    /// the connection ended, which completes a body delimited by the close.
    ///
    /// # Errors
    /// A message when `data` is not an HTTP response or its framing is broken.
    pub fn parse(data: &[u8], head_only: bool, closed: bool) -> Result<Option<Self>, String> {
        let mut hbuf = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hbuf);
        let n = match r.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "bad HTTP response ({e}): {:?}",
                    String::from_utf8_lossy(data)
                ))
            }
        };
        let status = r.code.unwrap_or(0);
        let mut resp = HttpResponse {
            status,
            reason: r.reason.unwrap_or("").to_string(),
            headers: r
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
            body: Vec::new(),
            chunked: false,
            head: data[..n].to_vec(),
        };
        let rest = &data[n..];
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(Some(resp));
        }
        if resp
            .header_str("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            resp.chunked = true;
            let mut p = rest;
            loop {
                let Some(line_end) = p.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let size = std::str::from_utf8(&p[..line_end])
                    .ok()
                    .and_then(|l| l.split(';').next())
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or_else(|| format!("bad chunk size in {:?}", String::from_utf8_lossy(p)))?;
                p = &p[line_end + 2..];
                if size == 0 {
                    return Ok((p.len() >= 2).then_some(resp));
                }
                if p.len() < size + 2 {
                    return Ok(None);
                }
                resp.body.extend_from_slice(&p[..size]);
                p = &p[size + 2..];
            }
        }
        if let Some(len) = resp.header_str("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {len:?}"))?;
            if rest.len() >= len {
                resp.body = rest[..len].to_vec();
                return Ok(Some(resp));
            }
            // A short body followed by a close is complete as far as the server goes.
            resp.body = rest.to_vec();
            return Ok(closed.then_some(resp));
        }
        resp.body = rest.to_vec();
        Ok(closed.then_some(resp))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name` as (lossy) text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of header `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The head as (lossy) text.
    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// ------------------------------------------------------------------------------------------------
// The fake Mongrel2

/// How often the fake's SUB socket is polled (a bound socket attaches new peers only when its
/// owner calls into it, so it is polled all the time, as Mongrel2 does).
const POLL_MS: i64 = 10;

/// Stands in for Mongrel2: a PUSH socket (requests) and a SUB socket (replies, subscribed to
/// everything) bound on `tcp://127.0.0.1:*`. Point a [`Connection`](m2wsgi::Connection) at
/// [`send_spec`](Self::send_spec) and [`recv_spec`](Self::recv_spec).
///
/// A thread polls the SUB socket from the start, so the handler's subscription is seen (the
/// runtime connects its request socket only after that) and replies are collected. Everything
/// is stopped on drop. Loopback TCP rather than `inproc://`: with libzmq 4.3 a PUB connecting to
/// a bound SUB in the same process never completes its handshake over `inproc://`.
pub struct FakeMongrel2 {
    push: Mutex<zmq::Socket>,
    send_spec: String,
    recv_spec: String,
    sender: String,
    replies: Mutex<Receiver<Vec<u8>>>,
    state: Mutex<Collected>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _ctx: zmq::Context,
}

#[derive(Debug, Default)]
struct Collected {
    /// Replies received but not yet handed out by `recv_reply`.
    pending: std::collections::VecDeque<Reply>,
    /// What each connection id received (every reply counts, handed out or not).
    clients: HashMap<u64, ClientOutput>,
}

impl std::fmt::Debug for FakeMongrel2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMongrel2")
            .field("send_spec", &self.send_spec)
            .field("recv_spec", &self.recv_spec)
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl Default for FakeMongrel2 {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeMongrel2 {
    /// Binds both sockets on loopback ports chosen by the system and starts polling.
    ///
    /// # Panics
    /// When ZeroMQ cannot create or bind the sockets.
    pub fn new() -> Self {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).expect("PUSH socket");
        push.set_linger(0).expect("linger");
        // A handler that never connects makes `send` fail instead of hanging.
        push.set_sndtimeo(10_000).expect("sndtimeo");
        push.bind("tcp://127.0.0.1:*").expect("bind PUSH");
        let sub = ctx.socket(zmq::SUB).expect("SUB socket");
        sub.set_linger(0).expect("linger");
        sub.set_subscribe(b"").expect("subscribe");
        sub.bind("tcp://127.0.0.1:*").expect("bind SUB");
        let send_spec = push.get_last_endpoint().expect("endpoint").expect("utf-8");
        let recv_spec = sub.get_last_endpoint().expect("endpoint").expect("utf-8");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("fake-mongrel2".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match sub.poll(zmq::POLLIN, POLL_MS) {
                            Ok(n) if n > 0 => {
                                while let Ok(frame) = sub.recv_bytes(zmq::DONTWAIT) {
                                    if tx.send(frame).is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(_) | Err(zmq::Error::EINTR) => {}
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn the fake Mongrel2's thread")
        };
        FakeMongrel2 {
            push: Mutex::new(push),
            send_spec,
            recv_spec,
            sender: DEFAULT_SENDER.to_owned(),
            replies: Mutex::new(rx),
            state: Mutex::new(Collected::default()),
            stop,
            thread: Some(thread),
            _ctx: ctx,
        }
    }

    /// Where requests come from (Mongrel2's `send_spec`): connect the handler's PULL here.
    pub fn send_spec(&self) -> &str {
        &self.send_spec
    }

    /// Where replies go (Mongrel2's `recv_spec`): connect the handler's PUB here.
    pub fn recv_spec(&self) -> &str {
        &self.recv_spec
    }

    /// The sender the builder uses by default ([`DEFAULT_SENDER`]); give it to the handler as
    /// its `send_ident`.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// Pushes one frame to the handler (from [`RequestBuilder::build`], [`disconnect`], or any
    /// bytes at all).
    ///
    /// # Panics
    /// When the frame cannot be sent within 10 s (no handler connected).
    pub fn send(&self, frame: impl Into<Vec<u8>>) {
        let frame: Vec<u8> = frame.into();
        self.push
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(frame, 0)
            .expect("the fake Mongrel2 could not push a frame (is a handler connected?)");
    }

    /// Pushes a request and returns its connection id.
    pub fn send_request(&self, req: &RequestBuilder) -> u64 {
        self.send(req.build());
        req.id()
    }

    /// Sends Mongrel2's disconnect notice for `conn_id` (tnetstring headers).
    pub fn disconnect(&self, conn_id: u64) {
        self.send(disconnect(
            &self.sender,
            conn_id,
            HeaderProtocol::Tnetstring,
        ));
    }

    /// Moves replies that arrived into the collected state; waits up to `wait` for the first.
    fn pump(&self, wait: Duration) {
        let rx = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        let mut frames = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(f) => frames.push(f),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        frames.extend(rx.try_iter());
        drop(rx);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for frame in frames {
            let reply = Reply::parse(&frame).unwrap_or_else(|| {
                panic!(
                    "the handler sent a malformed reply: {:?}",
                    String::from_utf8_lossy(&frame)
                )
            });
            for &id in &reply.conn_ids {
                let c = st.clients.entry(id).or_default();
                if reply.extended {
                    c.ctl.push(reply.body.to_vec());
                } else if reply.body.is_empty() {
                    c.closed = true;
                } else {
                    c.data.extend_from_slice(&reply.body);
                    c.messages += 1;
                }
            }
            st.pending.push_back(reply);
        }
    }

    /// The next reply the handler published, waiting up to `timeout`; `None` if none came.
    ///
    /// # Panics
    /// When the handler published something that is not a reply frame.
    pub fn recv_reply(&self, timeout: Duration) -> Option<Reply> {
        let deadline = Instant::now() + timeout;
        let mut last = false;
        loop {
            let next = self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .pop_front();
            if next.is_some() || last {
                return next;
            }
            // Looks at least once, so a zero timeout still takes what has arrived.
            let left = deadline.saturating_duration_since(Instant::now());
            self.pump(left.min(Duration::from_millis(50)));
            last = Instant::now() >= deadline;
        }
    }

    /// What client `conn_id` received so far (every reply counts, whether or not
    /// [`recv_reply`](Self::recv_reply) handed it out).
    pub fn client(&self, conn_id: u64) -> ClientOutput {
        self.pump(Duration::ZERO);
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clients
            .get(&conn_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for `done` to hold for client `conn_id`'s output.
    pub fn wait_client(
        &self,
        conn_id: u64,
        timeout: Duration,
        mut done: impl FnMut(&ClientOutput) -> bool,
    ) -> Option<ClientOutput> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.client(conn_id);
            if done(&c) {
                return Some(c);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.pump(left.min(Duration::from_millis(20)));
        }
    }

    /// Waits up to `timeout` for a whole HTTP response to client `conn_id`.
    ///
    /// # Panics
    /// When what the client received is not an HTTP response.
    pub fn read_response(&self, conn_id: u64, timeout: Duration) -> Option<HttpResponse> {
        self.read_response_with(conn_id, false, timeout)
    }

    /// [`read_response`](Self::read_response) for an answer to `HEAD` when `head_only`.
    ///
    /// # Panics
    /// When what the client received is not an HTTP response.
    pub fn read_response_with(
        &self,
        conn_id: u64,
        head_only: bool,
        timeout: Duration,
    ) -> Option<HttpResponse> {
        let mut resp = None;
        self.wait_client(conn_id, timeout, |c| {
            resp = HttpResponse::parse(&c.data, head_only, c.ended())
                .unwrap_or_else(|e| panic!("connection {conn_id}: {e}"));
            resp.is_some()
        })?;
        resp
    }
}

impl Drop for FakeMongrel2 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
