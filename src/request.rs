//! A request received from Mongrel2, and the ways to answer it: whole replies, streamed
//! responses with flow control, WebSocket frames, close.

use crate::codec::response::{
    allows_body, encode_chunk, encode_head, encode_reply_prefix, Ctl, Framing, LAST_CHUNK,
};
use crate::codec::websocket::{encode_frame, Opcode};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::upload::UploadFile;
use crate::{Message, MessageKind};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONNECTION, DATE};
use http::{StatusCode, Version};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Mongrel2's download window with `download.flow_control=1` (`MAX_CREDITS`, fixed in 1.12).
pub const MAX_CREDITS: u64 = 102_400;

/// Largest message a flow-controlled stream sends at once.
const FLOW_PIECE: usize = 64 * 1024;
/// A flow-controlled writer sends once this much credit (or the whole rest) is available.
const MIN_FLOW_PIECE: u64 = 16 * 1024;
/// Without flow control, message `k` of a stream holds at least `FIRST_MESSAGE << k` bytes, so
/// that Mongrel2's 16-message deliver queue (`DELIVER_OUTSTANDING_MSGS`) covers 4 GiB.
const FIRST_MESSAGE: usize = 64 * 1024;
/// How long a flow-controlled writer or a streamed-upload reader waits for Mongrel2 before
/// giving the connection up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Upload credit granted at a time for streamed uploads.
const UPLOAD_GRANT: i64 = 64 * 1024;

/// Per-client-connection state shared by the dispatcher and every handle on that connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub(crate) id: u64,
    /// The connection's epoch (see `Connection::epoch`): the id names this client only while
    /// the epoch is current.
    pub(crate) epoch: u64,
    inner: Mutex<ConnInner>,
    cond: Condvar,
}

#[derive(Debug, Default)]
pub(crate) struct ConnInner {
    pub(crate) disconnected: bool,
    /// Download credits left, once flow control is on for this connection.
    pub(crate) credits: Option<u64>,
    /// `x-mongrel2-upload-start` seen for this connection.
    pub(crate) upload_start: Option<Bytes>,
    /// Streamed upload: slices received and not yet read, whether the last came, credit balance.
    pub(crate) stream: VecDeque<Bytes>,
    pub(crate) stream_done: bool,
    pub(crate) stream_balance: i64,
    /// Dispatch: a worker owns this connection now; messages that came meanwhile.
    pub(crate) busy: bool,
    pub(crate) pending: VecDeque<crate::server::Job>,
    pub(crate) last_seen: Option<Instant>,
}

impl ConnState {
    pub(crate) fn new(id: u64, epoch: u64) -> Self {
        Self {
            id,
            epoch,
            inner: Mutex::new(ConnInner::default()),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ConnInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn notify(&self) {
        self.cond.notify_all();
    }

    fn wait<'a>(&self, g: MutexGuard<'a, ConnInner>, d: Duration) -> MutexGuard<'a, ConnInner> {
        self.cond
            .wait_timeout(g, d)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }
}

/// A handle that answers one client connection, from any thread: `Clone + Send + Sync`.
///
/// With flow control on (`download.flow_control=1`), [`send`](Responder::send) never lets more
/// than [`MAX_CREDITS`] bytes be pending at Mongrel2, and waits for credits to come back.
#[derive(Debug, Clone)]
pub struct Responder {
    conn: Connection,
    state: Arc<ConnState>,
}

impl Responder {
    pub(crate) fn new(conn: Connection, state: Arc<ConnState>) -> Self {
        Self { conn, state }
    }

    /// The client's connection id.
    pub fn conn_id(&self) -> u64 {
        self.state.id
    }

    /// The [`Connection`] this responder sends on.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Whether Mongrel2 reported the client gone. A streaming producer should stop.
    pub fn is_disconnected(&self) -> bool {
        self.state.lock().disconnected || self.state.epoch != self.conn.epoch()
    }

    /// Sends raw bytes to the client, honouring download credits when flow control is on
    /// (the bytes then go in pieces of at most 64 KiB).
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone (or credits stopped coming for a minute),
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn send(&self, body: &[u8]) -> Result<()> {
        if body.is_empty() {
            return Ok(());
        }
        let mut rest = body;
        loop {
            let piece = {
                let mut g = self.state.lock();
                if g.disconnected {
                    return Err(Error::Closed);
                }
                match g.credits {
                    None => rest.len(),
                    Some(_) => {
                        let want = rest.len().min(FLOW_PIECE) as u64;
                        let deadline = Instant::now() + STALL_TIMEOUT;
                        loop {
                            let c = g.credits.unwrap_or(0);
                            if g.disconnected {
                                return Err(Error::Closed);
                            }
                            if c >= want.min(MIN_FLOW_PIECE) {
                                break;
                            }
                            if Instant::now() >= deadline {
                                log::warn!(
                                    "connection {}: no download credits for {:?}; giving up",
                                    self.state.id,
                                    STALL_TIMEOUT
                                );
                                return Err(Error::Closed);
                            }
                            g = self.state.wait(g, Duration::from_millis(200));
                        }
                        // As much of the piece as the window allows (at least 16 KiB).
                        let n = want.min(g.credits.unwrap_or(0));
                        g.credits = Some(g.credits.unwrap_or(0) - n);
                        n as usize
                    }
                }
            };
            self.conn
                .reply_in(self.state.epoch, self.state.id, &rest[..piece])?;
            rest = &rest[piece..];
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Tells Mongrel2 to close the client connection once queued data is written.
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn close(&self) -> Result<()> {
        self.conn.reply_in(self.state.epoch, self.state.id, b"")
    }

    /// Drops the client connection at once (`X ctl cancel`): nothing queued is written.
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn cancel(&self) -> Result<()> {
        self.conn
            .ctl_in(self.state.epoch, self.state.id, &[Ctl::Cancel])
    }

    /// Refreshes the connection's idle timer at Mongrel2 (`limits.min_ping`).
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn keep_alive(&self) -> Result<()> {
        self.conn
            .ctl_in(self.state.epoch, self.state.id, &[Ctl::KeepAlive])
    }

    /// Sends one WebSocket frame (unmasked, FIN set).
    ///
    /// # Errors
    /// As [`send`](Responder::send).
    pub fn send_websocket(&self, opcode: Opcode, payload: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 10);
        encode_frame(&mut out, opcode, payload);
        self.send(&out)
    }
}

/// A message from Mongrel2 handed to a handler, with what it takes to answer it.
///
/// `Request` derefs to its [`Message`] (`req.method()`, `req.headers()`, `req.body()`...). It is
/// `Send`: answer it on any thread. [`Request::responder`] gives a `Clone + Sync` handle for
/// writing from several places.
///
/// A request that expects an answer (an HTTP request, a completed upload, a WebSocket
/// handshake) and is dropped unanswered is logged, and the client gets a 500, so it never hangs.
#[must_use = "a request dropped unanswered gets a 500 and a warning in the log"]
#[derive(Debug)]
pub struct Request {
    msg: Message,
    responder: Responder,
    upload: Option<UploadFile>,
    answered: bool,
}

impl std::ops::Deref for Request {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.msg
    }
}

impl Request {
    pub(crate) fn new(
        msg: Message,
        conn: Connection,
        state: Arc<ConnState>,
        upload: Option<UploadFile>,
    ) -> Self {
        let expects = matches!(
            msg.kind(),
            MessageKind::Request | MessageKind::UploadDone { .. } | MessageKind::WebSocketHandshake
        );
        Self {
            msg,
            responder: Responder::new(conn, state),
            upload,
            answered: !expects,
        }
    }

    /// The decoded message.
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// A handle to answer this client from anywhere.
    pub fn responder(&self) -> Responder {
        self.responder.clone()
    }

    /// Whether the client is gone.
    pub fn is_disconnected(&self) -> bool {
        self.responder.is_disconnected()
    }

    /// Marks the request as answered elsewhere (through a [`Responder`]), or as not needing an
    /// answer, so dropping it is silent.
    pub fn set_answered(&mut self) {
        self.answered = true;
    }

    /// A reader over the request body: the inline body, the async-upload temp file (read in
    /// place, never loaded whole; deleted when the request is dropped), or the slices of a
    /// streamed upload as they arrive (granting Mongrel2 credits as it goes).
    ///
    /// # Errors
    /// [`Error::Io`] if the upload file cannot be opened.
    pub fn body_reader(&self) -> Result<Body> {
        if let Some(up) = &self.upload {
            let (f, len) = up.open()?;
            return Ok(Body {
                len: Some(len),
                kind: BodyKind::File(BufReader::with_capacity(64 * 1024, f).take(len)),
            });
        }
        if self.msg.upload_stream().is_some() && !self.msg.upload_stream_done() {
            let len = self
                .msg
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            return Ok(Body {
                len,
                kind: BodyKind::Stream(StreamBody {
                    responder: self.responder.clone(),
                    current: self.msg.body().clone(),
                    done: false,
                }),
            });
        }
        let b = self.msg.body().clone();
        Ok(Body {
            len: Some(b.len() as u64),
            kind: BodyKind::Inline(io::Cursor::new(b)),
        })
    }

    /// Sends `bytes` verbatim as the whole answer (they must hold the HTTP response).
    ///
    /// # Errors
    /// As [`Responder::send`].
    pub fn reply(mut self, bytes: &[u8]) -> Result<()> {
        self.answered = true;
        self.responder.send(bytes)
    }

    /// Sends a complete HTTP response: status line (the request's HTTP version), `headers`,
    /// `Content-Length`, `Date` when absent, and `body` (left out for HEAD, 1xx, 204 and 304).
    /// Closes the connection after it when the client asked for that.
    ///
    /// # Errors
    /// As [`Responder::send`].
    pub fn reply_http(self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<()> {
        let mut s = self.stream(status, headers, Some(body.len() as u64))?;
        s.write(body)?;
        s.finish()
    }

    /// Starts a streamed HTTP response. With `len`, the body is `Content-Length` delimited;
    /// without it, chunked for HTTP/1.1 and close-delimited for HTTP/1.0.
    ///
    /// Writes are coalesced into few, large messages (see [`ResponseStream`]).
    ///
    /// # Errors
    /// Infallible today; the `Result` leaves room for checks.
    pub fn stream(
        self,
        status: StatusCode,
        headers: &HeaderMap,
        len: Option<u64>,
    ) -> Result<ResponseStream> {
        self.stream_with_reason(status, b"", headers, len)
    }

    /// Like [`stream`](Request::stream), with `reason` as the status line's reason phrase
    /// (for a gateway passing on an application's own, such as WSGI's `"200 Fine"`). An empty
    /// or invalid reason (CR, LF or other control bytes) gives the standard one.
    ///
    /// # Errors
    /// As [`stream`](Request::stream).
    pub fn stream_with_reason(
        mut self,
        status: StatusCode,
        reason: &[u8],
        headers: &HeaderMap,
        len: Option<u64>,
    ) -> Result<ResponseStream> {
        let reason_ok = !reason.is_empty()
            && reason
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        let reason = if reason_ok { Some(reason) } else { None };
        self.answered = true;
        let version = self.msg.version().unwrap_or(Version::HTTP_11);
        let body_ok = allows_body(self.msg.method(), status);
        let framing = match (body_ok, len) {
            (false, _) => Framing::None,
            (true, Some(n)) => Framing::Length(n),
            (true, None) if version == Version::HTTP_11 => Framing::Chunked,
            (true, None) => Framing::Close,
        };
        let wants_close = self.msg.wants_close()
            || framing == Framing::Close
            || headers
                .get_all(CONNECTION)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        // What the head needs beyond the caller's headers is appended to it: the caller's map is
        // never copied.
        let date = (!headers.contains_key(DATE)).then(|| http_date(SystemTime::now()));
        let connection = if headers.contains_key(CONNECTION) {
            None
        } else if wants_close && framing != Framing::Close {
            Some(&b"close"[..])
        } else if version == Version::HTTP_10 && !wants_close {
            Some(&b"keep-alive"[..])
        } else {
            None
        };
        let head_length = len.filter(|_| {
            framing == Framing::None
                && self.msg.method() == Some(&http::Method::HEAD)
                && !headers.contains_key(http::header::CONTENT_LENGTH)
        });
        let extra = Extra {
            date,
            connection,
            head_length,
        };
        let mut buf = Vec::with_capacity(512);
        encode_head(&mut buf, version, status, headers, framing);
        extra.append_to_head(&mut buf);
        if let Some(reason) = reason {
            // "HTTP/1.x NNN " is 13 bytes; the standard reason runs to the first CRLF.
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                if end >= 13 && buf[13..end] != *reason {
                    buf.splice(13..end, reason.iter().copied());
                }
            }
        }
        Ok(ResponseStream {
            responder: self.responder.clone(),
            buf,
            framing,
            written: 0,
            messages: 0,
            close_after: wants_close,
            finished: false,
        })
    }

    /// Answers a WebSocket handshake with `101 Switching Protocols` and the accept key Mongrel2
    /// computed (the message body), and returns the responder for the frames that follow.
    ///
    /// # Errors
    /// [`Error::InvalidResponse`] if this is not a handshake; as [`Responder::send`].
    pub fn accept_websocket(mut self) -> Result<Responder> {
        if self.msg.kind() != &MessageKind::WebSocketHandshake {
            return Err(Error::InvalidResponse(
                "accept_websocket on a message that is not a handshake".into(),
            ));
        }
        self.answered = true;
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: ",
        );
        out.extend_from_slice(self.msg.body());
        out.extend_from_slice(b"\r\n\r\n");
        self.responder.send(&out)?;
        Ok(self.responder.clone())
    }

    /// Closes the client connection without (more of) an answer.
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn close(mut self) -> Result<()> {
        self.answered = true;
        self.responder.close()
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.answered || self.responder.is_disconnected() {
            return;
        }
        log::warn!(
            "request on connection {} ({:?} {:?}) dropped unanswered: sending 500",
            self.responder.conn_id(),
            self.msg.method(),
            self.msg.request_path()
        );
        let version = self.msg.version().unwrap_or(Version::HTTP_11);
        let out = simple_response(version, StatusCode::INTERNAL_SERVER_ERROR, true);
        let _ = self.responder.send(&out);
        let _ = self.responder.close();
    }
}

/// Header lines a response head needs beyond the caller's headers, in this order.
#[derive(Debug)]
struct Extra {
    date: Option<HeaderValue>,
    connection: Option<&'static [u8]>,
    /// `Content-Length` of a HEAD answer whose caller gave the length but not the header.
    head_length: Option<u64>,
}

impl Extra {
    /// Inserts the lines before the blank line that ends `head`.
    fn append_to_head(&self, head: &mut Vec<u8>) {
        if self.date.is_none() && self.connection.is_none() && self.head_length.is_none() {
            return;
        }
        head.truncate(head.len() - 2);
        if let Some(d) = &self.date {
            head.extend_from_slice(b"Date: ");
            head.extend_from_slice(d.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if let Some(c) = self.connection {
            head.extend_from_slice(b"Connection: ");
            head.extend_from_slice(c);
            head.extend_from_slice(b"\r\n");
        }
        if let Some(n) = self.head_length {
            head.extend_from_slice(b"Content-Length: ");
            crate::tnetstring::write_decimal(head, n);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
    }
}

/// A short complete response (`status` with its reason as the body), for errors.
pub(crate) fn simple_response(version: Version, status: StatusCode, close: bool) -> Vec<u8> {
    let body = status.canonical_reason().unwrap_or("Error");
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let mut out = Vec::with_capacity(160);
    encode_head(
        &mut out,
        version,
        status,
        &h,
        Framing::Length(body.len() as u64 + 1),
    );
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
    out
}

/// Sends a short error response straight from a message of `epoch` (used by the dispatcher).
pub(crate) fn reject(conn: &Connection, epoch: u64, msg: &Message, status: StatusCode) {
    let out = simple_response(msg.version().unwrap_or(Version::HTTP_11), status, true);
    let mut frame = Vec::with_capacity(out.len() + 64);
    if encode_reply_prefix(&mut frame, conn.sender_id(), &[msg.conn_id()]).is_ok() {
        frame.extend_from_slice(&out);
        let _ = conn.send_in(Some(epoch), frame);
        let _ = conn.reply_in(epoch, msg.conn_id(), b"");
    }
}

/// A streamed HTTP response body. Implements [`std::io::Write`].
///
/// Writes are framed (chunked, length or close-delimited) and buffered into few, large Mongrel2
/// messages:
/// - with flow control (`download.flow_control=1`), in pieces of up to 64 KiB that never exceed
///   the credit window;
/// - without it, Mongrel2 cuts a client off after 16 queued messages, so message `k` holds at
///   least `64 KiB << k` bytes: 16 messages carry 4 GiB. Call [`flush`](ResponseStream::flush)
///   to push out what is buffered now (each flush costs one of those 16 slots).
///
/// [`finish`](ResponseStream::finish) ends the body. A stream dropped unfinished closes the
/// connection, so the client sees a truncated response rather than waiting.
#[derive(Debug)]
#[must_use = "call finish() to end the response"]
pub struct ResponseStream {
    responder: Responder,
    buf: Vec<u8>,
    framing: Framing,
    written: u64,
    messages: u32,
    close_after: bool,
    finished: bool,
}

impl ResponseStream {
    /// Appends body bytes. For a HEAD answer (or 204/304) they are discarded; past a declared
    /// `Content-Length` they are cut off and logged.
    ///
    /// # Errors
    /// [`Error::Closed`] when the client is gone; as [`Responder::send`].
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            Framing::None => return Ok(()),
            Framing::Length(n) => {
                let room = n.saturating_sub(self.written);
                let take = (data.len() as u64).min(room) as usize;
                if take < data.len() {
                    log::error!(
                        "connection {}: body longer than its Content-Length {n}; extra bytes dropped",
                        self.responder.conn_id()
                    );
                }
                self.buf.extend_from_slice(&data[..take]);
                self.written += take as u64;
            }
            Framing::Chunked => {
                encode_chunk(&mut self.buf, data);
                self.written += data.len() as u64;
            }
            Framing::Close => {
                self.buf.extend_from_slice(data);
                self.written += data.len() as u64;
            }
        }
        if self.responder.state.lock().credits.is_some() {
            while self.buf.len() >= FLOW_PIECE {
                self.send_buffered()?;
            }
        } else if self.buf.len() >= FIRST_MESSAGE << self.messages.min(20) {
            self.send_buffered()?;
        }
        Ok(())
    }

    fn send_buffered(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.responder.send(&self.buf)?;
        self.buf.clear();
        self.messages += 1;
        Ok(())
    }

    /// Sends what is buffered now.
    ///
    /// # Errors
    /// As [`write`](ResponseStream::write).
    pub fn flush(&mut self) -> Result<()> {
        self.send_buffered()
    }

    /// Bytes of body written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether the client is gone.
    pub fn is_disconnected(&self) -> bool {
        self.responder.is_disconnected()
    }

    /// Ends the body: the last chunk for chunked bodies, then a close for close-delimited ones
    /// or when the client asked for it. A body shorter than its `Content-Length` closes the
    /// connection (the client cannot be told otherwise) and is logged.
    ///
    /// # Errors
    /// As [`write`](ResponseStream::write).
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        let mut close = self.close_after;
        match self.framing {
            Framing::Chunked => self.buf.extend_from_slice(LAST_CHUNK),
            Framing::Length(n) if self.written < n => {
                log::error!(
                    "connection {}: body of {} bytes is shorter than its Content-Length {n}; closing",
                    self.responder.conn_id(),
                    self.written
                );
                close = true;
            }
            _ => {}
        }
        self.send_buffered()?;
        if close {
            self.responder.close()?;
        }
        Ok(())
    }
}

impl ResponseStream {
    /// Abandons the response after an error: discards what is buffered and drops the client
    /// connection at once (`X ctl cancel`), so a truncated body never looks complete, even a
    /// close-delimited one.
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn abort(mut self) -> Result<()> {
        self.finished = true;
        self.buf.clear();
        if self.responder.is_disconnected() {
            return Ok(());
        }
        self.responder.cancel()
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if !self.finished && !self.responder.is_disconnected() {
            log::warn!(
                "connection {}: response dropped before finish(); closing",
                self.responder.conn_id()
            );
            let _ = self.send_buffered();
            let _ = self.responder.close();
        }
    }
}

impl io::Write for ResponseStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        ResponseStream::write(self, data).map_err(to_io)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        ResponseStream::flush(self).map_err(to_io)
    }
}

fn to_io(e: Error) -> io::Error {
    match e {
        Error::Io(e) => e,
        Error::Closed => io::Error::new(io::ErrorKind::ConnectionAborted, e),
        e => io::Error::other(e),
    }
}

/// A request body: [`Read`] and [`BufRead`].
#[derive(Debug)]
pub struct Body {
    len: Option<u64>,
    kind: BodyKind,
}

#[derive(Debug)]
enum BodyKind {
    Inline(io::Cursor<Bytes>),
    File(io::Take<BufReader<std::fs::File>>),
    Stream(StreamBody),
}

impl Body {
    /// The body's length when known (`Content-Length` for streamed uploads).
    pub fn len(&self) -> Option<u64> {
        self.len
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len == Some(0)
    }
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Body {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match &mut self.kind {
            BodyKind::Inline(c) => c.fill_buf(),
            BodyKind::File(f) => f.fill_buf(),
            BodyKind::Stream(s) => s.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match &mut self.kind {
            BodyKind::Inline(c) => c.consume(n),
            BodyKind::File(f) => f.consume(n),
            BodyKind::Stream(s) => {
                let _ = s.current.split_to(n.min(s.current.len()));
            }
        }
    }
}

/// The body of a streamed upload (`upload.stream=1`): slices arrive as the dispatcher receives
/// them; the reader grants Mongrel2 credits when it runs dry.
#[derive(Debug)]
struct StreamBody {
    responder: Responder,
    current: Bytes,
    done: bool,
}

impl StreamBody {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.current.is_empty() || self.done {
            return Ok(&self.current);
        }
        let st = Arc::clone(&self.responder.state);
        let deadline = Instant::now() + STALL_TIMEOUT;
        let mut g = st.lock();
        loop {
            if let Some(next) = g.stream.pop_front() {
                g.stream_balance -= next.len() as i64;
                self.current = next;
                if self.current.is_empty() && g.stream.is_empty() && g.stream_done {
                    self.done = true;
                }
                if !self.current.is_empty() || self.done {
                    return Ok(&self.current);
                }
                continue;
            }
            if g.stream_done {
                self.done = true;
                return Ok(&self.current);
            }
            if g.disconnected {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "client disconnected during upload",
                ));
            }
            if g.stream_balance <= 0 {
                let grant = UPLOAD_GRANT - g.stream_balance;
                g.stream_balance += grant;
                drop(g);
                self.responder
                    .conn
                    .ctl_in(st.epoch, st.id, &[Ctl::Credits(grant)])
                    .map_err(to_io)?;
                g = st.lock();
                continue;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "streamed upload stalled",
                ));
            }
            g = st.wait(g, Duration::from_millis(200));
        }
    }
}

/// Formats an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn http_date(t: SystemTime) -> HeaderValue {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let s = format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        d,
        MO[(mo - 1) as usize],
        y,
        h,
        m,
        s
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(t), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn handles_are_send() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<Request>();
        send::<ResponseStream>();
        send::<Body>();
        send::<Responder>();
        sync::<Responder>();
    }
}
