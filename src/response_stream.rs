//! [`ResponseStream`]: a streamed HTTP response body, framed and coalesced into few Mongrel2
//! messages.

use crate::codec::response::Framing;
use crate::error::Result;
use crate::framer::Framer;
use crate::responder::Responder;
use std::io;

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
    framer: Framer,
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
        self.framer.push(data, self.responder.conn_id());
        if self.framer.ready(self.responder.state().flow_controlled()) {
            self.send_buffered()?;
        }
        Ok(())
    }

    fn send_buffered(&mut self) -> Result<()> {
        if self.framer.buffered().is_empty() {
            return Ok(());
        }
        self.responder.send(self.framer.buffered())?;
        self.framer.sent();
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
        self.framer.written()
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
        let short = self.framer.finish(self.responder.conn_id());
        self.send_buffered()?;
        if self.close_after || short {
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
        self.framer.discard();
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
            framer: Framer::new(head, framing),
            close_after,
            finished: false,
        }
    }
}
