//! Messages from Mongrel2 to a handler: `SENDER SP CONN_ID SP PATH SP HEADERS BODY`.

use super::headers::{HeaderProtocol, RawHeaders};
use super::websocket::Opcode;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::tnetstring::{parse_int, split, Limits};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use std::borrow::Cow;

/// A Mongrel2 message decoded in place: every field borrows from the frame.
///
/// This is the zero-copy form, good for routing and filtering; [`Message`] is the owned form
/// with an [`http::HeaderMap`].
///
/// ```
/// use m2wsgi::RawMessage;
///
/// let frame = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 1 /handler 26:6:METHOD,3:GET,4:host,1:x,}0:,";
/// let msg = RawMessage::decode(frame)?;
/// assert_eq!(msg.conn_id(), 1);
/// assert_eq!(msg.path(), b"/handler");
/// assert_eq!(msg.headers().get(b"METHOD").as_deref(), Some(&b"GET"[..]));
/// # Ok::<(), m2wsgi::ParseError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RawMessage<'a> {
    sender: &'a [u8],
    conn_id: u64,
    path: &'a [u8],
    headers: RawHeaders<'a>,
    body: &'a [u8],
    body_at: usize,
}

impl<'a> RawMessage<'a> {
    /// Decodes a frame with the default [`Limits`]. The header encoding (tnetstring or JSON) is
    /// recognised from the bytes.
    ///
    /// # Errors
    /// A [`ParseError`] with the offset of the first problem: a missing space, a bad connection
    /// id, malformed headers or body, or bytes after the body.
    pub fn decode(frame: &'a [u8]) -> Result<Self, ParseError> {
        Self::decode_with(frame, &Limits::default())
    }

    /// Like [`RawMessage::decode`], with explicit limits.
    ///
    /// # Errors
    /// As [`RawMessage::decode`].
    pub fn decode_with(frame: &'a [u8], limits: &Limits) -> Result<Self, ParseError> {
        let (sender, at) = field(frame, 0, K::BadSender)?;
        if !sender
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ParseError::new(K::BadSender, 0));
        }
        let (id, path_at) = field(frame, at, K::BadConnId)?;
        let conn_id = parse_int(id)
            .ok()
            .filter(|_| id[0] != b'-')
            .ok_or(ParseError::new(K::BadConnId, at))? as u64;
        let (path, hdr_at) = field(frame, path_at, K::BadField)?;
        let el = split(&frame[hdr_at..], limits).map_err(|e| e.shift(hdr_at))?;
        let payload_at = hdr_at + el.payload_at;
        let protocol = match el.tag {
            b'}' => HeaderProtocol::Tnetstring,
            b',' if el.payload.first() == Some(&b'{') => HeaderProtocol::Json,
            _ => return Err(ParseError::new(K::BadHeaders, hdr_at)),
        };
        let headers = RawHeaders::new(el.payload, payload_at, protocol, path);
        headers.validate(limits)?;
        let body_el_at = hdr_at + el.len;
        let body = split(&frame[body_el_at..], limits).map_err(|e| e.shift(body_el_at))?;
        if body.tag != b',' {
            return Err(ParseError::new(K::BadBody, body_el_at));
        }
        let end = body_el_at + body.len;
        if end != frame.len() {
            return Err(ParseError::new(K::TrailingBytes, end));
        }
        Ok(Self {
            sender,
            conn_id,
            path,
            headers,
            body: body.payload,
            body_at: body_el_at + body.payload_at,
        })
    }

    /// The sender UUID: the handler's own `send_ident`.
    pub fn sender(&self) -> &'a [u8] {
        self.sender
    }

    /// Mongrel2's connection id for the client.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The PATH field: the request path, `@*` for disconnect and credit notices, `@name` for
    /// JSON socket messages.
    pub fn path(&self) -> &'a [u8] {
        self.path
    }

    /// The headers, undecoded.
    pub fn headers(&self) -> RawHeaders<'a> {
        self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// Splits the space-terminated field starting at `at`; returns it and the offset after the space.
fn field(frame: &[u8], at: usize, kind: K) -> Result<(&[u8], usize), ParseError> {
    let rest = &frame[at..];
    match rest.iter().position(|&b| b == b' ') {
        Some(0) => Err(ParseError::new(kind, at)),
        Some(n) => Ok((&rest[..n], at + n + 1)),
        None => Err(ParseError::new(K::MissingSpace, frame.len())),
    }
}

/// What a message from Mongrel2 is.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageKind {
    /// An HTTP request with its whole body inline (the common case). A request whose body is
    /// streamed (`upload.stream=1`) is this kind too, with [`Message::upload_stream`] set.
    Request,
    /// First message of an async upload: the headers, with the body still being written to the
    /// temp file named by `x-mongrel2-upload-start`.
    UploadStart {
        /// The temp file path as Mongrel2 sees it (inside its chroot).
        path: Bytes,
    },
    /// Second message of an async upload: the body is complete in the temp file.
    UploadDone {
        /// `x-mongrel2-upload-start`.
        start: Bytes,
        /// `x-mongrel2-upload-done`; a genuine upload has `start == done`.
        done: Bytes,
    },
    /// A continuation of a streamed upload: headers hold only `UPLOAD_STREAM` (and
    /// `UPLOAD_STREAM_DONE`), the body is the next slice of the request body.
    UploadStream {
        /// Offset of this slice within the request body.
        offset: u64,
        /// Whether this is the last slice.
        done: bool,
    },
    /// The client's connection is gone (`@*`, `{"type":"disconnect"}`).
    Disconnect,
    /// Download credits returned (`@*`, `{"type":"credits"}`): bytes Mongrel2 has written.
    Credits {
        /// `DOWNLOAD_CREDITS`: bytes written to the client since the last notice.
        bytes: u64,
    },
    /// A WebSocket handshake; the body is the `Sec-WebSocket-Accept` value Mongrel2 computed.
    /// The handler must send the `101 Switching Protocols` response itself.
    WebSocketHandshake,
    /// A WebSocket message or control frame; the body is the unmasked payload.
    WebSocketFrame {
        /// The opcode from `FLAGS`.
        opcode: Opcode,
        /// The raw `FLAGS` byte (first frame byte with FIN set).
        flags: u8,
    },
    /// A JSON socket message (`@path {json}\0`); the body is the JSON text.
    Json,
    /// An XML socket message (`<tag ...>...</tag>\0`); the body is the XML text.
    Xml,
}

/// A Mongrel2 message decoded into owned, shared buffers: [`Bytes`] slices of one frame, an
/// [`http::HeaderMap`] of the HTTP headers, and Mongrel2's own fields typed.
///
/// Mongrel2's upper-case keys (`METHOD`, `URI`, `PATTERN`, ...) are not in [`Message::headers`]:
/// they have accessors. Keys this crate does not know, and headers whose name or value `http`
/// rejects, are kept in [`Message::extra`] in wire order.
///
/// ```
/// use m2wsgi::{Message, MessageKind};
///
/// let frame = bytes::Bytes::from_static(
///     b"uuid 7 /p 52:6:METHOD,4:POST,3:URI,2:/p,6:cookie,12:3:a=1,3:b=2,]}5:hello,",
/// );
/// let msg = Message::decode(frame)?;
/// assert_eq!(msg.kind(), &MessageKind::Request);
/// assert_eq!(msg.method(), Some(&http::Method::POST));
/// let cookies: Vec<_> = msg.headers().get_all("cookie").iter().collect();
/// assert_eq!(cookies, ["a=1", "b=2"]);
/// assert_eq!(msg.body().as_ref(), b"hello");
/// # Ok::<(), m2wsgi::ParseError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Message {
    sender: Bytes,
    conn_id: u64,
    path: Bytes,
    protocol: HeaderProtocol,
    kind: MessageKind,
    headers: HeaderMap,
    method: Option<Method>,
    version: Option<Version>,
    uri: Option<Bytes>,
    req_path: Option<Bytes>,
    query: Option<Bytes>,
    fragment: Option<Bytes>,
    pattern: Option<Bytes>,
    url_scheme: Option<Bytes>,
    remote_addr: Option<Bytes>,
    download_credits: Option<u64>,
    upload_stream: Option<u64>,
    upload_stream_done: bool,
    extra: Vec<(Bytes, Bytes)>,
    body: Bytes,
}

fn slice(frame: &Bytes, part: &[u8]) -> Bytes {
    if part.is_empty() {
        Bytes::new()
    } else {
        frame.slice_ref(part)
    }
}

fn cow_bytes(frame: &Bytes, c: Cow<'_, [u8]>) -> Bytes {
    match c {
        Cow::Borrowed(b) => slice(frame, b),
        Cow::Owned(o) => Bytes::from(o),
    }
}

fn dec_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

impl Message {
    /// Decodes one ZeroMQ frame with the default [`Limits`]. No payload is copied: every field
    /// is a slice of `frame` (except JSON header values that had to be unescaped).
    ///
    /// # Errors
    /// As [`RawMessage::decode`], plus [`BadField`](crate::ParseErrorKind::BadField) for an
    /// invalid `FLAGS`, `UPLOAD_STREAM` or `DOWNLOAD_CREDITS` value.
    pub fn decode(frame: Bytes) -> Result<Self, ParseError> {
        Self::decode_with(frame, &Limits::default())
    }

    /// Like [`Message::decode`], with explicit limits.
    ///
    /// # Errors
    /// As [`Message::decode`].
    pub fn decode_with(frame: Bytes, limits: &Limits) -> Result<Self, ParseError> {
        let raw = RawMessage::decode_with(&frame, limits)?;
        let mut m = Message {
            sender: slice(&frame, raw.sender),
            conn_id: raw.conn_id,
            path: slice(&frame, raw.path),
            protocol: raw.headers.protocol(),
            kind: MessageKind::Request,
            headers: HeaderMap::new(),
            method: None,
            version: None,
            uri: None,
            req_path: None,
            query: None,
            fragment: None,
            pattern: None,
            url_scheme: None,
            remote_addr: None,
            download_credits: None,
            upload_stream: None,
            upload_stream_done: false,
            extra: Vec::new(),
            body: slice(&frame, raw.body),
        };
        let mut flags: Option<u8> = None;
        let mut stream_done = false;
        let mut upload_start: Option<Bytes> = None;
        let mut upload_done: Option<Bytes> = None;
        let bad = ParseError::new(K::BadField, raw.body_at);
        for (name, value) in raw.headers {
            let v = cow_bytes(&frame, value);
            match name.as_ref() {
                b"METHOD" => m.method = Some(Method::from_bytes(&v).map_err(|_| bad)?),
                b"VERSION" => {
                    m.version = Some(match v.as_ref() {
                        b"HTTP/1.1" => Version::HTTP_11,
                        b"HTTP/1.0" => Version::HTTP_10,
                        b"HTTP/0.9" => Version::HTTP_09,
                        b"HTTP/2.0" => Version::HTTP_2,
                        _ => return Err(bad),
                    })
                }
                b"URI" => m.uri = Some(v),
                b"PATH" => m.req_path = Some(v),
                b"QUERY" => m.query = Some(v),
                b"FRAGMENT" => m.fragment = Some(v),
                b"PATTERN" => m.pattern = Some(v),
                b"URL_SCHEME" => m.url_scheme = Some(v),
                b"REMOTE_ADDR" => m.remote_addr = Some(v),
                b"FLAGS" => {
                    let hex = v.strip_prefix(b"0x").or_else(|| v.strip_prefix(b"0X"));
                    let f = hex
                        .filter(|h| {
                            !h.is_empty() && h.len() <= 2 && h.iter().all(u8::is_ascii_hexdigit)
                        })
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or(bad)?;
                    flags = Some(f);
                }
                b"UPLOAD_STREAM" => m.upload_stream = Some(dec_u64(&v).ok_or(bad)?),
                b"UPLOAD_STREAM_DONE" => stream_done = true,
                b"DOWNLOAD_CREDITS" => m.download_credits = Some(dec_u64(&v).ok_or(bad)?),
                n => {
                    if n == b"x-mongrel2-upload-start" {
                        upload_start = Some(v.clone());
                    } else if n == b"x-mongrel2-upload-done" {
                        upload_done = Some(v.clone());
                    }
                    m.add_header(&frame, name, v);
                }
            }
        }
        m.upload_stream_done = stream_done;
        m.kind = m.classify(flags, stream_done, upload_start, upload_done, bad)?;
        Ok(m)
    }

    fn add_header(&mut self, frame: &Bytes, name: Cow<'_, [u8]>, v: Bytes) {
        // Mongrel2 lower-cases HTTP header names; its own keys are upper case. Anything upper
        // case we do not know is kept in `extra`, like anything `http` refuses.
        let is_http = !name.iter().any(u8::is_ascii_uppercase);
        if is_http {
            if let (Ok(n), Ok(val)) = (
                HeaderName::from_bytes(&name),
                HeaderValue::from_maybe_shared(v.clone()),
            ) {
                self.headers.append(n, val);
                return;
            }
        }
        self.extra.push((cow_bytes(frame, name), v));
    }

    fn classify(
        &self,
        flags: Option<u8>,
        stream_done: bool,
        upload_start: Option<Bytes>,
        upload_done: Option<Bytes>,
        bad: ParseError,
    ) -> Result<MessageKind, ParseError> {
        let method = self.method.as_ref().map(Method::as_str);
        Ok(match method {
            None => match self.upload_stream {
                Some(offset) => MessageKind::UploadStream {
                    offset,
                    done: stream_done,
                },
                None => return Err(bad),
            },
            Some("JSON") if self.path.as_ref() == b"@*" => {
                if let Some(bytes) = self.download_credits {
                    MessageKind::Credits { bytes }
                } else {
                    MessageKind::Disconnect
                }
            }
            Some("JSON") => MessageKind::Json,
            Some("XML") => MessageKind::Xml,
            Some("WEBSOCKET_HANDSHAKE") => MessageKind::WebSocketHandshake,
            Some("WEBSOCKET") => {
                let flags = flags.ok_or(bad)?;
                MessageKind::WebSocketFrame {
                    opcode: Opcode::from_u8(flags & 0x0f).ok_or(bad)?,
                    flags,
                }
            }
            Some(_) => match (upload_start, upload_done) {
                (Some(start), Some(done)) => MessageKind::UploadDone { start, done },
                (Some(path), None) => MessageKind::UploadStart { path },
                (None, Some(done)) => MessageKind::UploadDone {
                    start: Bytes::new(),
                    done,
                },
                (None, None) => MessageKind::Request,
            },
        })
    }

    /// The sender UUID: the handler's own `send_ident`.
    pub fn sender(&self) -> &Bytes {
        &self.sender
    }

    /// Mongrel2's connection id for the client.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The PATH field of the message (`@*` for notices, `@name` for JSON socket messages).
    pub fn path(&self) -> &Bytes {
        &self.path
    }

    /// Which header encoding the message used.
    pub fn protocol(&self) -> HeaderProtocol {
        self.protocol
    }

    /// What this message is.
    pub fn kind(&self) -> &MessageKind {
        &self.kind
    }

    /// The HTTP headers (lower-case names), every value kept, in wire order per name.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `METHOD`: the HTTP method, or Mongrel2's `JSON`, `XML`, `WEBSOCKET_HANDSHAKE`, `WEBSOCKET`.
    pub fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }

    /// `VERSION`: the request's HTTP version.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// `URI`: the raw request target, without the fragment.
    pub fn uri(&self) -> Option<&Bytes> {
        self.uri.as_ref()
    }

    /// `PATH` header: the path part of the URI, still percent-encoded.
    pub fn request_path(&self) -> Option<&Bytes> {
        self.req_path.as_ref()
    }

    /// `QUERY`: the raw text after `?`, present only if the request had a `?`.
    pub fn query(&self) -> Option<&Bytes> {
        self.query.as_ref()
    }

    /// `FRAGMENT`: the text after `#`.
    pub fn fragment(&self) -> Option<&Bytes> {
        self.fragment.as_ref()
    }

    /// `PATTERN`: the route pattern that matched.
    pub fn pattern(&self) -> Option<&Bytes> {
        self.pattern.as_ref()
    }

    /// `URL_SCHEME`: `http` or `https`.
    pub fn url_scheme(&self) -> Option<&Bytes> {
        self.url_scheme.as_ref()
    }

    /// `REMOTE_ADDR`: the client's IP address as text.
    pub fn remote_addr(&self) -> Option<&Bytes> {
        self.remote_addr.as_ref()
    }

    /// `DOWNLOAD_CREDITS`: the initial window on a request, or bytes written on a credits notice.
    pub fn download_credits(&self) -> Option<u64> {
        self.download_credits
    }

    /// `UPLOAD_STREAM`: the body offset of this message's slice, when the body is streamed.
    pub fn upload_stream(&self) -> Option<u64> {
        self.upload_stream
    }

    /// `UPLOAD_STREAM_DONE`: this message carries the last slice of a streamed body.
    pub fn upload_stream_done(&self) -> bool {
        self.upload_stream_done
    }

    /// Keys kept as they came because they are unknown upper-case Mongrel2 keys, or headers
    /// whose name or value `http` rejects (control bytes, for example).
    pub fn extra(&self) -> &[(Bytes, Bytes)] {
        &self.extra
    }

    /// The body: inline request body, WebSocket payload, JSON text, or a notice's JSON.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether this message is an HTTP request a handler is expected to answer
    /// ([`MessageKind::Request`], [`MessageKind::UploadStart`] or [`MessageKind::UploadDone`]).
    pub fn is_request(&self) -> bool {
        matches!(
            self.kind,
            MessageKind::Request | MessageKind::UploadStart { .. } | MessageKind::UploadDone { .. }
        )
    }

    /// Whether the client asked to close after this request: HTTP/1.0 without keep-alive, or
    /// `Connection: close`.
    pub fn wants_close(&self) -> bool {
        let conn = |word: &str| {
            self.headers
                .get_all(http::header::CONNECTION)
                .iter()
                .any(|v| {
                    v.as_bytes()
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(word.as_bytes()))
                })
        };
        match self.version {
            Some(Version::HTTP_10) | Some(Version::HTTP_09) => !conn("keep-alive"),
            _ => conn("close"),
        }
    }
}
