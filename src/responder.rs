//! [`Responder`]: what answers one client connection, from any thread.

use crate::codec::response::{encode_head, encode_reply_prefix, Ctl, Framing, HeadExtras};
use crate::codec::websocket::{encode_frame, Opcode};
use crate::conn_state::{ConnState, GaveUp};
use crate::error::Result;
use crate::transport::Connection;
use crate::Message;
use http::header::{HeaderMap, HeaderValue, CONNECTION};
use http::{StatusCode, Version};
use std::sync::Arc;

/// A handle that answers one client connection, from any thread: `Clone + Send + Sync`.
///
/// With flow control on (`download.flow_control=1`), [`send`](Responder::send) never lets more
/// than [`MAX_CREDITS`](crate::MAX_CREDITS) bytes be pending at Mongrel2, and waits for credits
/// to come back.
///
/// A responder belongs to the Mongrel2 that sent the request: once that Mongrel2 restarts (it
/// then reuses connection ids for other clients), [`is_disconnected`](Responder::is_disconnected)
/// is true and every send fails with [`Error::Closed`](crate::Error::Closed).
#[derive(Debug, Clone)]
pub struct Responder {
    conn: Connection,
    state: Arc<ConnState>,
}

impl Responder {
    pub(crate) fn new(conn: Connection, state: Arc<ConnState>) -> Self {
        Self { conn, state }
    }

    pub(crate) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// Takes the request being handled on this connection out of its handler's hands: the
    /// client gets `status` (or a dropped connection once an answer has started), and every
    /// later write through any handle of this connection fails (see `ConnState::give_up`).
    #[cfg_attr(not(feature = "wsgi"), allow(dead_code))] // used by the WSGI request timeout
    pub(crate) fn give_up(&self, status: StatusCode) -> GaveUp {
        if self.stale() {
            return GaveUp::Nothing;
        }
        self.state.give_up(&self.conn, status)
    }

    /// The client's connection id.
    pub fn conn_id(&self) -> u64 {
        self.state.id
    }

    /// The [`Connection`] this responder sends on.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Whether Mongrel2 reported the client gone (or restarted). A streaming producer should
    /// stop.
    pub fn is_disconnected(&self) -> bool {
        self.state.lock().disconnected || self.stale()
    }

    /// Whether the connection belongs to a Mongrel2 that has since restarted. Takes no lock
    /// (it is called while the connection state is locked).
    pub(crate) fn stale(&self) -> bool {
        self.state.epoch != self.conn.epoch()
    }

    /// Sends raw bytes to the client, honouring download credits when flow control is on
    /// (the bytes then go in pieces of at most 64 KiB).
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed) when the client is gone (or credits stopped
    /// coming for a minute), [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
    pub fn send(&self, body: &[u8]) -> Result<()> {
        let mut rest = body;
        while !rest.is_empty() {
            let piece = self.state.take_credits(rest.len(), || self.stale())?;
            self.conn
                .reply_in(self.state.epoch, self.state.id, &rest[..piece])?;
            rest = &rest[piece..];
        }
        Ok(())
    }

    /// Tells Mongrel2 to close the client connection once queued data is written.
    ///
    /// # Errors
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
    pub fn close(&self) -> Result<()> {
        self.conn.reply_in(self.state.epoch, self.state.id, b"")
    }

    /// Drops the client connection at once (`X ctl cancel`): nothing queued is written.
    ///
    /// # Errors
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
    pub fn cancel(&self) -> Result<()> {
        self.conn
            .ctl_in(self.state.epoch, self.state.id, &[Ctl::Cancel])
    }

    /// Refreshes the connection's idle timer at Mongrel2 (`limits.min_ping`).
    ///
    /// # Errors
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
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
        &HeadExtras::default(),
    );
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
    out
}

/// Sends a short error response straight from a message of `epoch` and closes the connection
/// (used by the dispatcher, before any handler sees the message).
pub(crate) fn reject(conn: &Connection, epoch: u64, msg: &Message, status: StatusCode) {
    let out = simple_response(msg.version().unwrap_or(Version::HTTP_11), status, true);
    let mut frame = Vec::with_capacity(out.len() + 64);
    if encode_reply_prefix(&mut frame, conn.sender_id(), &[msg.conn_id()]).is_ok() {
        frame.extend_from_slice(&out);
        let _ = conn.send_in(Some(epoch), frame);
        let _ = conn.reply_in(epoch, msg.conn_id(), b"");
    }
}
