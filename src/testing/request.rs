//! Building the frames Mongrel2 sends: requests in both header protocols, uploads, notices,
//! WebSocket frames.

use super::DEFAULT_SENDER;
use base64::Engine as _;
use bytes::Bytes;
use m2wsgi::codec::{HeaderProtocol, Opcode};
use m2wsgi::tnetstring::{self, Value};

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
