//! [`Message`]: a request frame decoded into owned, shared buffers, and its accessors.

use super::headers::HeaderProtocol;
use super::kind::{MessageKind, Signals};
use super::raw::Parts;
use crate::error::{ParseError, ParseErrorKind as K};
use crate::tnetstring::Limits;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

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
///
/// A `Message` is one pointer: the decoded fields live in one heap block, so moving a message
/// (into a request handle, through a channel, out of a `Result`) copies eight bytes,
/// not the four hundred the fields take.
#[derive(Clone)]
pub struct Message(Box<Inner>);

/// The fields of a [`Message`].
#[derive(Clone)]
struct Inner {
    /// The whole frame: the byte fields below are ranges of it.
    frame: Bytes,
    /// `(start, end)` in `frame` of each byte field (see [`Field`]), or [`ABSENT`] / [`OWNED`].
    ranges: [(u32, u32); FIELDS],
    /// The [`Bytes`] handles of the byte fields, made on first access (see [`Field`]).
    cells: OnceLock<Box<[OnceLock<Bytes>; FIELDS]>>,
    conn_id: u64,
    protocol: HeaderProtocol,
    kind: MessageKind,
    headers: HeaderMap,
    method: Option<Method>,
    version: Option<Version>,
    download_credits: Option<u64>,
    upload_stream: Option<u64>,
    upload_stream_done: bool,
    extra: Vec<(Bytes, Bytes)>,
    body: Bytes,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("sender", self.sender())
            .field("conn_id", &self.0.conn_id)
            .field("path", self.path())
            .field("protocol", &self.0.protocol)
            .field("kind", &self.0.kind)
            .field("method", &self.0.method)
            .field("version", &self.0.version)
            .field("uri", &self.uri())
            .field("request_path", &self.request_path())
            .field("query", &self.query())
            .field("fragment", &self.fragment())
            .field("pattern", &self.pattern())
            .field("url_scheme", &self.url_scheme())
            .field("remote_addr", &self.remote_addr())
            .field("download_credits", &self.0.download_credits)
            .field("upload_stream", &self.0.upload_stream)
            .field("upload_stream_done", &self.0.upload_stream_done)
            .field("headers", &self.0.headers)
            .field("extra", &self.0.extra)
            .field("body", &self.0.body)
            .finish()
    }
}

/// The byte fields of a [`Message`], as indices into its `ranges` and `cells`.
///
/// They are kept as ranges of the frame and made into [`Bytes`] handles only when first asked
/// for: every handle is an atomic reference count on the frame, and a dozen of them cost more
/// than all the parsing, while most handlers read only a few fields. The ranges are small, so
/// the `Message` stays small to move.
#[derive(Debug, Clone, Copy)]
enum Field {
    Sender,
    Path,
    Uri,
    RequestPath,
    Query,
    Fragment,
    Pattern,
    UrlScheme,
    RemoteAddr,
}

const FIELDS: usize = 9;
/// The field is not in the message.
const ABSENT: (u32, u32) = (u32::MAX, 0);
/// The field's bytes are not a range of the frame (an unescaped JSON value, or an offset past
/// `u32::MAX`): its cell was filled at decode time.
const OWNED: (u32, u32) = (u32::MAX, 1);

static EMPTY: Bytes = Bytes::new();

impl Message {
    /// Records `value` (a slice of `frame` or owned bytes) as field `f`.
    fn set_field(&mut self, frame: &Bytes, f: Field, value: Cow<'_, [u8]>) {
        if let Cow::Borrowed(part) = value {
            let start = part.as_ptr() as usize - frame.as_ptr() as usize;
            if let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(start + part.len())) {
                if s != u32::MAX {
                    self.0.ranges[f as usize] = (s, e);
                    if let Some(cells) = self.0.cells.get_mut() {
                        cells[f as usize] = OnceLock::new();
                    }
                    return;
                }
            }
        }
        let b = cow_bytes(frame, value);
        self.0.cells.get_or_init(Default::default);
        if let Some(cells) = self.0.cells.get_mut() {
            cells[f as usize] = OnceLock::from(b);
        }
        self.0.ranges[f as usize] = OWNED;
    }

    fn field(&self, f: Field) -> Option<&Bytes> {
        let (s, e) = self.0.ranges[f as usize];
        if (s, e) == ABSENT {
            return None;
        }
        let cells = self.0.cells.get_or_init(Default::default);
        Some(cells[f as usize].get_or_init(|| {
            if s >= e {
                Bytes::new()
            } else {
                self.0.frame.slice(s as usize..e as usize)
            }
        }))
    }
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

/// `FLAGS`: `0x` and one or two hex digits (Mongrel2 writes `"0x%X"`).
fn parse_flags(v: &[u8]) -> Option<u8> {
    let hex = v.strip_prefix(b"0x").or_else(|| v.strip_prefix(b"0X"))?;
    if hex.is_empty() || hex.len() > 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

fn dec_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The state of one [`Message::decode`] while it walks the headers.
struct Builder<'f> {
    m: &'f mut Message,
    frame: &'f Bytes,
    hdr_at: usize,
    flags: Option<u8>,
    stream_done: bool,
    upload_start: Option<Bytes>,
    upload_done: Option<Bytes>,
    /// The first bad Mongrel2 field, reported once the frame is known to be well-formed.
    bad_field: Option<ParseError>,
}

impl Builder<'_> {
    #[inline]
    fn pair(&mut self, name: Cow<'_, [u8]>, value: Cow<'_, [u8]>) {
        // Mongrel2's own keys are upper case; it lower-cases HTTP header names.
        if name.first().is_some_and(u8::is_ascii_uppercase) {
            self.mongrel2_key(name, value);
        } else {
            self.header(name, value);
        }
    }

    fn mongrel2_key(&mut self, name: Cow<'_, [u8]>, value: Cow<'_, [u8]>) {
        let field = match name.as_ref() {
            b"URI" => Field::Uri,
            b"PATH" => Field::RequestPath,
            b"QUERY" => Field::Query,
            b"FRAGMENT" => Field::Fragment,
            b"PATTERN" => Field::Pattern,
            b"URL_SCHEME" => Field::UrlScheme,
            b"REMOTE_ADDR" => Field::RemoteAddr,
            _ => return self.mongrel2_scalar(name, value),
        };
        self.m.set_field(self.frame, field, value);
    }

    fn mongrel2_scalar(&mut self, name: Cow<'_, [u8]>, value: Cow<'_, [u8]>) {
        let m = &mut self.m;
        let v: &[u8] = &value;
        let ok = match name.as_ref() {
            b"METHOD" => Method::from_bytes(v).map(|x| m.0.method = Some(x)).is_ok(),
            b"VERSION" => {
                m.0.version = match v {
                    b"HTTP/1.1" => Some(Version::HTTP_11),
                    b"HTTP/1.0" => Some(Version::HTTP_10),
                    b"HTTP/0.9" => Some(Version::HTTP_09),
                    b"HTTP/2.0" => Some(Version::HTTP_2),
                    _ => None,
                };
                m.0.version.is_some()
            }
            b"FLAGS" => {
                self.flags = parse_flags(v);
                self.flags.is_some()
            }
            b"UPLOAD_STREAM" => {
                m.0.upload_stream = dec_u64(v);
                m.0.upload_stream.is_some()
            }
            b"UPLOAD_STREAM_DONE" => {
                self.stream_done = true;
                true
            }
            b"DOWNLOAD_CREDITS" => {
                m.0.download_credits = dec_u64(v);
                m.0.download_credits.is_some()
            }
            _ => {
                // An upper-case key this crate does not know.
                let v = cow_bytes(self.frame, value);
                m.0.extra.push((cow_bytes(self.frame, name), v));
                return;
            }
        };
        if !ok && self.bad_field.is_none() {
            // Where the value sits in the frame (an unescaped JSON value does not).
            let at = (v.as_ptr() as usize).wrapping_sub(self.frame.as_ptr() as usize);
            let at = if at < self.frame.len() {
                at
            } else {
                self.hdr_at
            };
            self.bad_field = Some(ParseError::new(K::BadField, at));
        }
    }

    fn header(&mut self, name: Cow<'_, [u8]>, value: Cow<'_, [u8]>) {
        let n: &[u8] = &name;
        if n == b"x-mongrel2-upload-start" {
            self.upload_start = Some(cow_bytes(self.frame, value.clone()));
        } else if n == b"x-mongrel2-upload-done" {
            self.upload_done = Some(cow_bytes(self.frame, value.clone()));
        }
        // Lower-case names `http` accepts, with values it accepts, go to the HeaderMap; anything
        // else (an upper-case letter further on, a control byte) is kept in `extra`.
        if !n.iter().any(u8::is_ascii_uppercase) {
            if let Ok(hn) = HeaderName::from_bytes(n) {
                // `value.clone()` copies a reference (or, for an unescaped JSON value, a short
                // vector), so `value` is still there for `extra` should `http` refuse it.
                if let Ok(hv) = HeaderValue::from_maybe_shared(cow_bytes(self.frame, value.clone()))
                {
                    self.m.0.headers.append(hn, hv);
                    return;
                }
            }
        }
        let v = cow_bytes(self.frame, value);
        self.m.0.extra.push((cow_bytes(self.frame, name), v));
    }
}

impl Message {
    /// Decodes one ZeroMQ frame with the default [`Limits`]. No payload is copied: every field
    /// is a slice of `frame` (except JSON header values that had to be unescaped).
    ///
    /// # Errors
    /// As [`RawMessage::decode`](super::RawMessage::decode), plus [`BadField`](crate::ParseErrorKind::BadField) for an
    /// invalid `FLAGS`, `UPLOAD_STREAM` or `DOWNLOAD_CREDITS` value.
    pub fn decode(frame: Bytes) -> Result<Self, ParseError> {
        Self::decode_with(frame, &Limits::default())
    }

    /// Like [`Message::decode`], with explicit limits.
    ///
    /// # Errors
    /// As [`Message::decode`].
    pub fn decode_with(frame: Bytes, limits: &Limits) -> Result<Self, ParseError> {
        let parts = Parts::split(&frame, limits)?;
        let mut m = Message(Box::new(Inner {
            frame: Bytes::new(),
            ranges: [ABSENT; FIELDS],
            cells: OnceLock::new(),
            conn_id: parts.conn_id,
            protocol: parts.headers.protocol(),
            kind: MessageKind::Request,
            headers: HeaderMap::new(),
            method: None,
            version: None,
            download_credits: None,
            upload_stream: None,
            upload_stream_done: false,
            extra: Vec::new(),
            body: Bytes::new(),
        }));
        m.set_field(&frame, Field::Sender, Cow::Borrowed(parts.sender));
        m.set_field(&frame, Field::Path, Cow::Borrowed(parts.path));
        let mut b = Builder {
            m: &mut m,
            frame: &frame,
            hdr_at: parts.hdr_at,
            flags: None,
            stream_done: false,
            upload_start: None,
            upload_done: None,
            bad_field: None,
        };
        // One pass over the headers, checking them as it goes. A bad Mongrel2 field is reported
        // only once the whole frame is known to be well-formed, so that `Message::decode` fails
        // with the same error as `RawMessage::decode` wherever that one fails.
        match parts.headers.protocol() {
            HeaderProtocol::Tnetstring => parts
                .headers
                .for_each_tnet(|k, v| b.pair(Cow::Borrowed(k), Cow::Borrowed(v)))?,
            HeaderProtocol::Json => {
                for item in parts.headers.try_iter() {
                    let (k, v) = item?;
                    b.pair(k, v);
                }
            }
        }
        let (body, _) = parts.body?;
        if let Some(e) = b.bad_field {
            return Err(e);
        }
        let (flags, stream_done, upload_start, upload_done) =
            (b.flags, b.stream_done, b.upload_start, b.upload_done);
        m.0.body = slice(&frame, body);
        m.0.upload_stream_done = stream_done;
        m.0.kind = MessageKind::classify(
            Signals {
                path: parts.path,
                method: m.0.method.as_ref(),
                flags,
                upload_stream: m.0.upload_stream,
                stream_done,
                download_credits: m.0.download_credits,
                upload_start,
                upload_done,
            },
            ParseError::new(K::BadField, parts.hdr_at),
        )?;
        m.0.frame = frame;
        Ok(m)
    }

    /// The sender UUID: the handler's own `send_ident`.
    pub fn sender(&self) -> &Bytes {
        self.field(Field::Sender).unwrap_or(&EMPTY)
    }

    /// Mongrel2's connection id for the client.
    pub fn conn_id(&self) -> u64 {
        self.0.conn_id
    }

    /// The PATH field of the message (`@*` for notices, `@name` for JSON socket messages).
    pub fn path(&self) -> &Bytes {
        self.field(Field::Path).unwrap_or(&EMPTY)
    }

    /// Which header encoding the message used.
    pub fn protocol(&self) -> HeaderProtocol {
        self.0.protocol
    }

    /// What this message is.
    pub fn kind(&self) -> &MessageKind {
        &self.0.kind
    }

    /// The HTTP headers (lower-case names), every value kept, in wire order per name.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// `METHOD`: the HTTP method, or Mongrel2's `JSON`, `XML`, `WEBSOCKET_HANDSHAKE`, `WEBSOCKET`.
    pub fn method(&self) -> Option<&Method> {
        self.0.method.as_ref()
    }

    /// `VERSION`: the request's HTTP version.
    pub fn version(&self) -> Option<Version> {
        self.0.version
    }

    /// `URI`: the raw request target, without the fragment.
    pub fn uri(&self) -> Option<&Bytes> {
        self.field(Field::Uri)
    }

    /// `PATH` header: the path part of the URI, still percent-encoded.
    pub fn request_path(&self) -> Option<&Bytes> {
        self.field(Field::RequestPath)
    }

    /// `QUERY`: the raw text after `?`, present only if the request had a `?`.
    pub fn query(&self) -> Option<&Bytes> {
        self.field(Field::Query)
    }

    /// `FRAGMENT`: the text after `#`.
    pub fn fragment(&self) -> Option<&Bytes> {
        self.field(Field::Fragment)
    }

    /// `PATTERN`: the route pattern that matched.
    pub fn pattern(&self) -> Option<&Bytes> {
        self.field(Field::Pattern)
    }

    /// `URL_SCHEME`: `http` or `https`.
    pub fn url_scheme(&self) -> Option<&Bytes> {
        self.field(Field::UrlScheme)
    }

    /// `REMOTE_ADDR`: the client's IP address as text.
    pub fn remote_addr(&self) -> Option<&Bytes> {
        self.field(Field::RemoteAddr)
    }

    /// `DOWNLOAD_CREDITS`: the initial window on a request, or bytes written on a credits notice.
    pub fn download_credits(&self) -> Option<u64> {
        self.0.download_credits
    }

    /// `UPLOAD_STREAM`: the body offset of this message's slice, when the body is streamed.
    pub fn upload_stream(&self) -> Option<u64> {
        self.0.upload_stream
    }

    /// `UPLOAD_STREAM_DONE`: this message carries the last slice of a streamed body.
    pub fn upload_stream_done(&self) -> bool {
        self.0.upload_stream_done
    }

    /// Keys kept as they came because they are unknown upper-case Mongrel2 keys, or headers
    /// whose name or value `http` rejects (control bytes, for example).
    pub fn extra(&self) -> &[(Bytes, Bytes)] {
        &self.0.extra
    }

    /// The body: inline request body, WebSocket payload, JSON text, or a notice's JSON.
    pub fn body(&self) -> &Bytes {
        &self.0.body
    }

    /// Whether this message is an HTTP request a handler is expected to answer
    /// ([`MessageKind::Request`], [`MessageKind::UploadStart`] or [`MessageKind::UploadDone`]).
    pub fn is_request(&self) -> bool {
        matches!(
            self.0.kind,
            MessageKind::Request | MessageKind::UploadStart { .. } | MessageKind::UploadDone { .. }
        )
    }

    /// The request's `Content-Length`, when it has a valid one (for an async upload or a streamed
    /// one, the length of the body still to come).
    pub fn content_length(&self) -> Option<u64> {
        super::response::content_length(&self.0.headers)
    }

    /// Whether the client asked to close after this request: HTTP/1.0 without keep-alive, or
    /// `Connection: close`.
    pub fn wants_close(&self) -> bool {
        let conn = |word: &str| {
            self.0
                .headers
                .get_all(http::header::CONNECTION)
                .iter()
                .any(|v| {
                    v.as_bytes()
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(word.as_bytes()))
                })
        };
        match self.0.version {
            Some(Version::HTTP_10) | Some(Version::HTTP_09) => !conn("keep-alive"),
            _ => conn("close"),
        }
    }
}
