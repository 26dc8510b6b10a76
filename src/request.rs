//! [`Request`]: a message from Mongrel2 handed to a handler, and the ways to answer it.

use crate::body::Body;
use crate::codec::response::{allows_body, encode_head, Framing, HeadExtras};
use crate::conn_state::ConnState;
use crate::error::{Error, Result};
use crate::responder::{simple_response, Responder};
use crate::response_stream::ResponseStream;
use crate::transport::Connection;
use crate::upload::UploadFile;
use crate::{Message, MessageKind};
use http::header::{HeaderMap, HeaderValue, CONNECTION, DATE};
use http::{StatusCode, Version};
use std::sync::Arc;
use std::time::SystemTime;

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
            return Ok(Body::file(f, len));
        }
        if self.msg.upload_stream().is_some() && !self.msg.upload_stream_done() {
            let len = self.msg.content_length();
            return Ok(Body::stream(
                len,
                self.responder.clone(),
                self.msg.body().clone(),
            ));
        }
        Ok(Body::inline(self.msg.body().clone()))
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
        self.answered = true;
        let (head, framing, wants_close) = response_head(&self.msg, status, reason, headers, len);
        Ok(ResponseStream::new(
            self.responder.clone(),
            head,
            framing,
            wants_close,
        ))
    }

    /// Answers a WebSocket handshake with `101 Switching Protocols` and the accept key Mongrel2
    /// computed (the message body), and returns the responder for the frames that follow.
    ///
    /// # Errors
    /// [`Error::NotAHandshake`] if this is not a handshake; as [`Responder::send`].
    pub fn accept_websocket(mut self) -> Result<Responder> {
        if self.msg.kind() != &MessageKind::WebSocketHandshake {
            return Err(Error::NotAHandshake);
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
        tracing::warn!(
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

/// The head of a response to `msg` (`status`, `reason`, `headers`, a body of `len` bytes
/// when known), how its body is framed, and whether the connection closes after it.
pub(crate) fn response_head(
    msg: &Message,
    status: StatusCode,
    reason: &[u8],
    headers: &HeaderMap,
    len: Option<u64>,
) -> (Vec<u8>, Framing, bool) {
    let version = msg.version().unwrap_or(Version::HTTP_11);
    let body_ok = allows_body(msg.method(), status);
    let framing = match (body_ok, len) {
        (false, _) => Framing::None,
        (true, Some(n)) => Framing::Length(n),
        (true, None) if version == Version::HTTP_11 => Framing::Chunked,
        (true, None) => Framing::Close,
    };
    let wants_close = msg.wants_close()
        || framing == Framing::Close
        || headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    // What the head needs beyond the caller's headers goes in as extras: the caller's map is
    // never copied.
    let date = (!headers.contains_key(DATE)).then(|| http_date(SystemTime::now()));
    let connection = if headers.contains_key(CONNECTION) {
        None
    } else if wants_close && framing != Framing::Close {
        Some("close")
    } else if version == Version::HTTP_10 && !wants_close {
        Some("keep-alive")
    } else {
        None
    };
    let content_length = len.filter(|_| {
        framing == Framing::None
            && msg.method() == Some(&http::Method::HEAD)
            && !headers.contains_key(http::header::CONTENT_LENGTH)
    });
    let extras = HeadExtras {
        reason: Some(reason),
        date: date.as_ref(),
        connection,
        content_length,
    };
    let mut buf = Vec::with_capacity(512);
    encode_head(&mut buf, version, status, headers, framing, &extras);
    (buf, framing, wants_close)
}

/// Formats an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
