//! Frame splitting: `SENDER SP CONN_ID SP PATH SP HEADERS BODY` cut into borrowed fields
//! ([`RawMessage`]), with the headers left for [`RawHeaders`] to walk.

use super::headers::{HeaderProtocol, RawHeaders};
use crate::error::{ParseError, ParseErrorKind as K};
use crate::tnetstring::{split, Limits};

/// A Mongrel2 message decoded in place: every field borrows from the frame.
///
/// This is the zero-copy form, good for routing and filtering; [`Message`](super::Message) is
/// the owned form with an [`http::HeaderMap`].
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
}

impl<'a> RawMessage<'a> {
    /// Decodes a frame with the default [`Limits`]. The header encoding (tnetstring or JSON) is
    /// recognised from the bytes.
    ///
    /// Only the frame's top-level structure is checked here: sender, connection id, path, the
    /// headers element's length prefix and tag, the body netstring, and that nothing follows
    /// it. The entries inside the headers are checked while they are walked, in that single
    /// pass: use [`RawHeaders::try_iter`] (each entry a `Result`) or [`RawHeaders::validate`];
    /// [`RawHeaders::iter`] stops silently at a malformed entry.
    /// [`Message::decode`](super::Message::decode) checks everything.
    ///
    /// # Errors
    /// A [`ParseError`] with the offset of the first problem: a missing space, a bad connection
    /// id, a headers element that is not a dictionary (or JSON netstring), a malformed body, or
    /// bytes after the body.
    pub fn decode(frame: &'a [u8]) -> Result<Self, ParseError> {
        Self::decode_with(frame, &Limits::default())
    }

    /// Like [`RawMessage::decode`], with explicit limits.
    ///
    /// # Errors
    /// As [`RawMessage::decode`].
    pub fn decode_with(frame: &'a [u8], limits: &Limits) -> Result<Self, ParseError> {
        let parts = Parts::split(frame, limits)?;
        let (body, _) = parts.body?;
        Ok(Self {
            sender: parts.sender,
            conn_id: parts.conn_id,
            path: parts.path,
            headers: parts.headers,
            body,
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

/// A frame cut into its fields, with the headers not yet walked. The body is split too, but its
/// error is held back: a header error earlier in the frame takes precedence over it.
pub(super) struct Parts<'a> {
    pub(super) sender: &'a [u8],
    pub(super) conn_id: u64,
    pub(super) path: &'a [u8],
    /// Offset of the headers element in the frame.
    pub(super) hdr_at: usize,
    pub(super) headers: RawHeaders<'a>,
    /// The body and its offset in the frame.
    pub(super) body: Result<(&'a [u8], usize), ParseError>,
}

/// Whether `b` may be in a sender UUID: `[A-Za-z0-9._-]`. Branch-free, so that the check of a
/// whole block vectorises.
#[inline]
fn sender_byte(b: u8) -> bool {
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'_')
        | (b == b'.')
}

/// The length of the sender field: the bytes before the first space, which must all be
/// [`sender_byte`]s.
#[inline]
fn sender_len(frame: &[u8]) -> Result<usize, ParseError> {
    let mut at = 0;
    // A UUID is 36 bytes: check 16 at a time, then find the space one byte at a time.
    while let Some(block) = frame.get(at..at + 16) {
        if !block.iter().fold(true, |ok, &b| ok & sender_byte(b)) {
            break;
        }
        at += 16;
    }
    loop {
        match frame.get(at) {
            Some(b' ') if at > 0 => return Ok(at),
            Some(&b) if sender_byte(b) => at += 1,
            _ => {
                missing_space(frame, at)?;
                return Err(ParseError::new(K::BadSender, 0));
            }
        }
    }
}

impl<'a> Parts<'a> {
    /// Cuts `frame` into its fields; see [`RawMessage::decode`] for what is checked.
    #[inline]
    pub(super) fn split(frame: &'a [u8], limits: &Limits) -> Result<Self, ParseError> {
        let at = sender_len(frame)?;
        let sender = &frame[..at];
        // CONN_ID: decimal, at most i64::MAX.
        let id_at = at + 1;
        let mut conn_id: u64 = 0;
        let mut i = id_at;
        loop {
            match frame.get(i) {
                Some(b' ') if i > id_at => break,
                Some(&b) if b.is_ascii_digit() => {
                    conn_id = conn_id
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(b - b'0')))
                        .filter(|&n| n <= i64::MAX as u64)
                        .ok_or(ParseError::new(K::BadConnId, id_at))
                        .or_else(|e| missing_space(frame, i).and(Err(e)))?;
                    i += 1;
                }
                _ => {
                    missing_space(frame, i)?;
                    return Err(ParseError::new(K::BadConnId, id_at));
                }
            }
        }
        // PATH: anything up to the next space.
        let path_at = i + 1;
        let path_len = frame[path_at..]
            .iter()
            .position(|&b| b == b' ')
            .ok_or(ParseError::new(K::MissingSpace, frame.len()))?;
        if path_len == 0 {
            return Err(ParseError::new(K::BadField, path_at));
        }
        let path = &frame[path_at..path_at + path_len];
        let hdr_at = path_at + path_len + 1;
        let el = split(&frame[hdr_at..], limits).map_err(|e| e.shift(hdr_at))?;
        let protocol = match el.tag {
            b'}' => HeaderProtocol::Tnetstring,
            b',' if el.payload.first() == Some(&b'{') => HeaderProtocol::Json,
            _ => return Err(ParseError::new(K::BadHeaders, hdr_at)),
        };
        let headers = RawHeaders::new(el.payload, hdr_at + el.payload_at, protocol, path, *limits);
        let body_el_at = hdr_at + el.len;
        let body = split(&frame[body_el_at..], limits)
            .map_err(|e| e.shift(body_el_at))
            .and_then(|body| {
                if body.tag != b',' {
                    return Err(ParseError::new(K::BadBody, body_el_at));
                }
                let end = body_el_at + body.len;
                if end != frame.len() {
                    return Err(ParseError::new(K::TrailingBytes, end));
                }
                Ok((body.payload, body_el_at + body.payload_at))
            });
        Ok(Parts {
            sender,
            conn_id,
            path,
            hdr_at,
            headers,
            body,
        })
    }
}

/// `Err(MissingSpace)` if no space follows `at`: a field that runs to the end of the frame is
/// reported as the missing separator, whatever it holds.
fn missing_space(frame: &[u8], at: usize) -> Result<(), ParseError> {
    if frame[at..].contains(&b' ') {
        Ok(())
    } else {
        Err(ParseError::new(K::MissingSpace, frame.len()))
    }
}
