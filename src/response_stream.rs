//! [`ResponseStream`]: a streamed HTTP response body, framed and coalesced into few Mongrel2
//! messages.

use crate::codec::response::{encode_chunk, Framing, LAST_CHUNK};
use crate::conn_state::FLOW_PIECE;
use crate::error::Result;
use crate::responder::Responder;
use std::io;

/// Without flow control, message `k` of a stream holds at least `FIRST_MESSAGE << k` bytes, so
/// that Mongrel2's 16-message deliver queue (`DELIVER_OUTSTANDING_MSGS`) covers 4 GiB.
const FIRST_MESSAGE: usize = 64 * 1024;

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
    /// [`Error::Closed`](crate::Error::Closed) when the client is gone; as [`Responder::send`].
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
                    tracing::error!(
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
        if self.responder.state().flow_controlled() {
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
                tracing::error!(
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
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
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
            tracing::warn!(
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
        ResponseStream::write(self, data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(ResponseStream::flush(self)?)
    }
}

impl ResponseStream {
    /// A stream whose head (`head`, already encoded) goes out with the first body bytes.
    pub(crate) fn new(
        responder: Responder,
        head: Vec<u8>,
        framing: Framing,
        close_after: bool,
    ) -> Self {
        Self {
            responder,
            buf: head,
            framing,
            written: 0,
            messages: 0,
            close_after,
            finished: false,
        }
    }
}
