//! Messages from a handler to Mongrel2 (`UUID SP LEN:IDS, SP BODY`), and the HTTP/1.x bytes a
//! handler puts in their bodies: response heads, chunked framing.

use super::error::EncodeError;
use crate::tnetstring::{write_decimal, write_integer, write_len_prefix, write_string};
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{StatusCode, Version};

/// Most connection ids Mongrel2 accepts in one message (`limits.handler_targets`, default 128);
/// with more, it rejects the whole message.
pub const MAX_TARGETS: usize = 128;

/// The last chunk of a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn ids_len(ids: &[u64]) -> usize {
    ids.iter()
        .map(|&i| {
            let mut d = 1;
            let mut n = i;
            while n >= 10 {
                n /= 10;
                d += 1;
            }
            d
        })
        .sum::<usize>()
        + ids.len().saturating_sub(1)
}

fn check_ids(ids: &[u64]) -> Result<(), EncodeError> {
    if ids.is_empty() {
        return Err(EncodeError::NoTargets);
    }
    if ids.len() > MAX_TARGETS {
        return Err(EncodeError::TooManyTargets { count: ids.len() });
    }
    Ok(())
}

fn check_sender(sender: &[u8]) -> Result<(), EncodeError> {
    if sender.is_empty() || sender.iter().any(|b| *b == b' ' || b.is_ascii_control()) {
        return Err(EncodeError::BadSender);
    }
    Ok(())
}

/// Appends `UUID SP LEN:ID ID ..., SP` (everything before the body) to `out`.
///
/// # Errors
/// [`EncodeError::NoTargets`] for no ids, [`EncodeError::TooManyTargets`] for more than
/// [`MAX_TARGETS`], [`EncodeError::BadSender`] for a bad sender.
pub fn encode_reply_prefix(
    out: &mut Vec<u8>,
    sender: &[u8],
    ids: &[u64],
) -> Result<(), EncodeError> {
    check_sender(sender)?;
    check_ids(ids)?;
    out.extend_from_slice(sender);
    out.push(b' ');
    write_len_prefix(out, ids_len(ids));
    for (n, &id) in ids.iter().enumerate() {
        if n > 0 {
            out.push(b' ');
        }
        write_decimal(out, id);
    }
    out.extend_from_slice(b", ");
    Ok(())
}

/// Appends one reply message: `body` to every id in `ids` (1 to [`MAX_TARGETS`] of them).
/// An empty body tells Mongrel2 to close those connections.
///
/// # Errors
/// As [`encode_reply_prefix`].
pub fn encode_reply(
    out: &mut Vec<u8>,
    sender: &[u8],
    ids: &[u64],
    body: &[u8],
) -> Result<(), EncodeError> {
    out.reserve(sender.len() + 16 + ids.len() * 8 + body.len());
    encode_reply_prefix(out, sender, ids)?;
    out.extend_from_slice(body);
    Ok(())
}

/// Builds the messages that deliver `body` to any number of ids: one message per
/// [`MAX_TARGETS`] ids.
///
/// # Errors
/// [`EncodeError::NoTargets`] for no ids, [`EncodeError::BadSender`] for a bad sender.
pub fn encode_deliver(
    sender: &[u8],
    ids: &[u64],
    body: &[u8],
) -> Result<Vec<Vec<u8>>, EncodeError> {
    check_ids(ids.get(..1).unwrap_or(&[]))?;
    ids.chunks(MAX_TARGETS)
        .map(|chunk| {
            let mut out = Vec::new();
            encode_reply(&mut out, sender, chunk, body)?;
            Ok(out)
        })
        .collect()
}

/// Appends a close message for `ids`: a reply with an empty body.
///
/// # Errors
/// As [`encode_reply_prefix`].
pub fn encode_close(out: &mut Vec<u8>, sender: &[u8], ids: &[u64]) -> Result<(), EncodeError> {
    encode_reply(out, sender, ids, b"")
}

/// One instruction in an extended `X ctl` message (`LEN:X ID ..., [3:ctl, {args}]`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctl {
    /// Grant this many bytes of upload credit (streamed uploads, `upload.stream=1`).
    Credits(i64),
    /// Refresh the connection's idle timer (`limits.min_ping`).
    KeepAlive,
    /// Disconnect the client; Mongrel2 sends no disconnect notice back.
    Cancel,
}

/// Appends `UUID SP LEN:X ID ..., SP [3:ctl, {args}]`.
///
/// # Errors
/// As [`encode_reply_prefix`], and [`EncodeError::NoCtl`] for an empty `ctls`.
pub fn encode_ctl(
    out: &mut Vec<u8>,
    sender: &[u8],
    ids: &[u64],
    ctls: &[Ctl],
) -> Result<(), EncodeError> {
    check_sender(sender)?;
    check_ids(ids)?;
    if ctls.is_empty() {
        return Err(EncodeError::NoCtl);
    }
    out.extend_from_slice(sender);
    out.push(b' ');
    write_len_prefix(out, ids_len(ids) + 2);
    out.extend_from_slice(b"X ");
    for (n, &id) in ids.iter().enumerate() {
        if n > 0 {
            out.push(b' ');
        }
        write_decimal(out, id);
    }
    out.extend_from_slice(b", ");
    let mut dict = Vec::new();
    for ctl in ctls {
        match ctl {
            Ctl::Credits(n) => {
                write_string(&mut dict, b"credits");
                write_integer(&mut dict, *n);
            }
            Ctl::KeepAlive => {
                write_string(&mut dict, b"keep-alive");
                dict.extend_from_slice(b"4:true!");
            }
            Ctl::Cancel => {
                write_string(&mut dict, b"cancel");
                dict.extend_from_slice(b"4:true!");
            }
        }
    }
    let mut list = Vec::with_capacity(dict.len() + 16);
    write_string(&mut list, b"ctl");
    write_len_prefix(&mut list, dict.len());
    list.extend_from_slice(&dict);
    list.push(b'}');
    write_len_prefix(out, list.len());
    out.extend_from_slice(&list);
    out.push(b']');
    Ok(())
}

/// How the body after a response head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (written unless the headers already have it).
    Length(u64),
    /// `Transfer-Encoding: chunked`; the body must then go through [`encode_chunk`] and end with
    /// [`LAST_CHUNK`].
    Chunked,
    /// No length: the body ends when the connection closes (HTTP/1.0 streaming). Adds
    /// `Connection: close`; the handler must close the connection after the body.
    Close,
    /// No body and no framing header (HEAD answers, 1xx, 204, 304): headers as given.
    None,
}

/// The value of a `Content-Length` header in `headers`, when it has a valid one (a request's
/// or a response's).
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a response with this status to this method may carry a body (RFC 9110 6.4.1).
pub fn allows_body(method: Option<&http::Method>, status: StatusCode) -> bool {
    !(method == Some(&http::Method::HEAD)
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// What a response head carries beyond the status, the caller's headers and the framing: the
/// parts a server adds. Written after the caller's headers, in field order. `Default` adds
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadExtras<'a> {
    /// The status line's reason phrase (a gateway passing on an application's own, such as
    /// `Fine` in `200 Fine`). `None`, empty, or holding control bytes (CR, LF, ...): the
    /// standard phrase.
    pub reason: Option<&'a [u8]>,
    /// A `Date` header value.
    pub date: Option<&'a HeaderValue>,
    /// A `Connection` header value (`close`, `keep-alive`).
    pub connection: Option<&'static str>,
    /// A `Content-Length` for an answer without a body whose length is known (a HEAD answer).
    pub content_length: Option<u64>,
}

/// Whether `reason` can stand in a status line.
fn valid_reason(reason: &[u8]) -> bool {
    !reason.is_empty()
        && reason
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Appends an HTTP/1.x response head: status line, `headers`, the framing header, what
/// `extras` adds, blank line.
///
/// The status line's version follows the request (`HTTP/1.0` or `HTTP/1.1`). Header values are
/// written as they are: `http::HeaderValue` cannot hold CR or LF, so no header can be injected.
/// `Content-Length` and `Transfer-Encoding` in `headers` are dropped unless `framing` is
/// [`Framing::None`], so the framing header is always the one that matches the body.
pub fn encode_head(
    out: &mut Vec<u8>,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    extras: &HeadExtras<'_>,
) {
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match extras.reason.filter(|r| valid_reason(r)) {
        Some(reason) => out.extend_from_slice(reason),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let keep_framing = framing == Framing::None;
    let mut has_connection = false;
    for (name, value) in headers {
        if !keep_framing && (name == CONTENT_LENGTH || name == TRANSFER_ENCODING) {
            continue;
        }
        if name == http::header::CONNECTION {
            has_connection = true;
        }
        write_header_name(out, name.as_str());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            write_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close if !has_connection => out.extend_from_slice(b"Connection: close\r\n"),
        Framing::Close | Framing::None => {}
    }
    if let Some(date) = extras.date {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(c) = extras.connection {
        out.extend_from_slice(b"Connection: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = extras.content_length {
        out.extend_from_slice(b"Content-Length: ");
        write_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a header name in the usual title case (`content-type` → `Content-Type`), as clients
/// and the Python m2wsgi 0.5.2 (which this project succeeds) expect to read it; names are case-insensitive either way.
fn write_header_name(out: &mut Vec<u8>, name: &str) {
    let mut up = true;
    for &b in name.as_bytes() {
        out.push(if up { b.to_ascii_uppercase() } else { b });
        up = b == b'-';
    }
}

/// Appends one chunk of a chunked body: `hex-size CRLF data CRLF`. An empty `data` writes
/// nothing (an empty chunk would end the body; use [`LAST_CHUNK`] for that).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    encode_chunk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends only a chunk's size line, for `len` bytes of data the caller writes next, followed by
/// `\r\n`.
pub fn encode_chunk_header(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut pos = buf.len();
    let mut n = len;
    loop {
        pos -= 1;
        buf[pos] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[pos..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const U: &[u8] = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378";

    #[test]
    fn replies_and_batches() {
        let mut out = Vec::new();
        encode_reply(&mut out, U, &[29, 30, 31], b"hi").unwrap();
        assert_eq!(out, b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 8:29 30 31, hi");
        out.clear();
        encode_close(&mut out, U, &[33]).unwrap();
        assert_eq!(out, b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 2:33, ");
        let ids: Vec<u64> = (1..=300).collect();
        let msgs = encode_deliver(U, &ids, b"x").unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(encode_deliver(U, &[], b"x"), Err(EncodeError::NoTargets));
        let mut o = Vec::new();
        assert_eq!(
            encode_reply(&mut o, U, &ids[..129], b"x"),
            Err(EncodeError::TooManyTargets { count: 129 })
        );
        assert!(o.is_empty(), "nothing is written on an error");
        assert!(encode_reply(&mut o, U, &ids[..128], b"x").is_ok());
        assert_eq!(
            encode_reply(&mut o, b"has space", &[1], b"x"),
            Err(EncodeError::BadSender)
        );
        assert_eq!(encode_close(&mut o, b"", &[1]), Err(EncodeError::BadSender));
        assert_eq!(encode_ctl(&mut o, U, &[1], &[]), Err(EncodeError::NoCtl));
        assert_eq!(
            encode_ctl(&mut o, U, &[], &[Ctl::Cancel]),
            Err(EncodeError::NoTargets)
        );
    }

    #[test]
    fn ctl_matches_observed_bytes() {
        let mut out = Vec::new();
        encode_ctl(&mut out, U, &[47], &[Ctl::Cancel]).unwrap();
        assert_eq!(
            out,
            b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 4:X 47, 26:3:ctl,16:6:cancel,4:true!}]"
        );
        out.clear();
        encode_ctl(&mut out, U, &[5, 6], &[Ctl::Credits(4096)]).unwrap();
        let body = &out[out.iter().position(|&b| b == b',').unwrap() + 2..];
        let v = crate::tnetstring::parse(body).unwrap();
        let crate::tnetstring::Value::List(items) = v else {
            panic!()
        };
        assert_eq!(items[0], crate::tnetstring::Value::String(b"ctl"));
        assert_eq!(
            items[1].get(b"credits"),
            Some(&crate::tnetstring::Value::Integer(4096))
        );
    }

    #[test]
    fn head_extras_follow_the_callers_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-app", HeaderValue::from_static("1"));
        let date = HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        let mut out = Vec::new();
        encode_head(
            &mut out,
            Version::HTTP_10,
            StatusCode::OK,
            &h,
            Framing::None,
            &HeadExtras {
                reason: Some(b"Fine"),
                date: Some(&date),
                connection: Some("keep-alive"),
                content_length: Some(12),
            },
        );
        assert_eq!(
            out,
            b"HTTP/1.0 200 Fine\r\nX-App: 1\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
              Connection: keep-alive\r\nContent-Length: 12\r\n\r\n"
        );
        for bad in [&b""[..], b"Fine\r\nX-Injected: 1", b"\x7f"] {
            out.clear();
            let extras = HeadExtras {
                reason: Some(bad),
                ..HeadExtras::default()
            };
            encode_head(
                &mut out,
                Version::HTTP_11,
                StatusCode::OK,
                &h,
                Framing::None,
                &extras,
            );
            assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"), "{bad:?}");
        }
    }

    #[test]
    fn heads_and_chunks() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("content-length", HeaderValue::from_static("999"));
        let mut out = Vec::new();
        encode_head(
            &mut out,
            Version::HTTP_11,
            StatusCode::OK,
            &h,
            Framing::Length(5),
            &HeadExtras::default(),
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        );
        out.clear();
        encode_head(
            &mut out,
            Version::HTTP_10,
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            Framing::Close,
            &HeadExtras::default(),
        );
        assert_eq!(out, b"HTTP/1.0 404 Not Found\r\nConnection: close\r\n\r\n");
        out.clear();
        encode_head(
            &mut out,
            Version::HTTP_11,
            StatusCode::OK,
            &HeaderMap::new(),
            Framing::Chunked,
            &HeadExtras::default(),
        );
        encode_chunk(&mut out, b"chunk1");
        encode_chunk(&mut out, b"");
        encode_chunk(&mut out, &[b'x'; 26]);
        out.extend_from_slice(LAST_CHUNK);
        let want = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nchunk1\r\n1a\r\n{}\r\n0\r\n\r\n",
            "x".repeat(26)
        );
        assert_eq!(out, want.as_bytes());
        assert!(!allows_body(Some(&http::Method::HEAD), StatusCode::OK));
        assert!(!allows_body(None, StatusCode::NOT_MODIFIED));
        assert!(allows_body(Some(&http::Method::GET), StatusCode::OK));
    }
}
