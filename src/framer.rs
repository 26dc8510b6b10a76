//! [`Framer`]: a response body being framed (`Content-Length`, chunked or close-delimited)
//! and cut into few, large Mongrel2 messages. No I/O: [`ResponseStream`](crate::ResponseStream)
//! and the async runtime both send what it says is ready.

use crate::codec::response::{encode_chunk, Framing, LAST_CHUNK};
use crate::conn_state::FLOW_PIECE;

/// Without flow control, message `k` of a stream holds at least `FIRST_MESSAGE << k` bytes, so
/// that Mongrel2's 16-message deliver queue (`DELIVER_OUTSTANDING_MSGS`) covers 4 GiB.
const FIRST_MESSAGE: usize = 64 * 1024;

/// The bytes of a response waiting to go out, and how they are framed.
#[derive(Debug)]
pub(crate) struct Framer {
    buf: Vec<u8>,
    framing: Framing,
    written: u64,
    messages: u32,
}

impl Framer {
    /// A body whose head (`head`, already encoded) goes out with its first bytes.
    pub(crate) fn new(head: Vec<u8>, framing: Framing) -> Self {
        Self {
            buf: head,
            framing,
            written: 0,
            messages: 0,
        }
    }

    /// Appends body bytes, framed. For a body that must be empty (HEAD, 204, 304) they are
    /// discarded; past a declared `Content-Length` they are cut off and logged.
    pub(crate) fn push(&mut self, data: &[u8], conn_id: u64) {
        if data.is_empty() {
            return;
        }
        match self.framing {
            Framing::None => {}
            Framing::Length(n) => {
                let room = n.saturating_sub(self.written);
                let take = (data.len() as u64).min(room) as usize;
                if take < data.len() {
                    tracing::error!(
                        "connection {conn_id}: body longer than its Content-Length {n}; extra \
                         bytes dropped"
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
    }

    /// Whether enough is buffered for a message to go out now: a 64 KiB piece with flow
    /// control (`flow`), else the next size of the doubling series.
    pub(crate) fn ready(&self, flow: bool) -> bool {
        if flow {
            self.buf.len() >= FLOW_PIECE
        } else {
            self.buf.len() >= FIRST_MESSAGE << self.messages.min(20)
        }
    }

    /// What is buffered (the next message's payload).
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The buffered bytes went out as one message.
    pub(crate) fn sent(&mut self) {
        if !self.buf.is_empty() {
            self.buf.clear();
            self.messages += 1;
        }
    }

    /// Drops what is buffered (the response is abandoned).
    pub(crate) fn discard(&mut self) {
        self.buf.clear();
    }

    /// Bytes of body taken so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Ends the body: the last chunk of a chunked one. Returns whether the connection must be
    /// closed after it because the body is shorter than its `Content-Length` (logged: the
    /// client cannot be told otherwise).
    pub(crate) fn finish(&mut self, conn_id: u64) -> bool {
        match self.framing {
            Framing::Chunked => {
                self.buf.extend_from_slice(LAST_CHUNK);
                false
            }
            Framing::Length(n) if self.written < n => {
                tracing::error!(
                    "connection {conn_id}: body of {} bytes is shorter than its Content-Length \
                     {n}; closing",
                    self.written
                );
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_with_the_last_chunk() {
        let mut f = Framer::new(b"HEAD".to_vec(), Framing::Chunked);
        f.push(b"hello", 1);
        assert!(!f.finish(1));
        assert_eq!(f.buffered(), b"HEAD5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn length_bodies_are_cut_and_short_ones_close() {
        let mut f = Framer::new(Vec::new(), Framing::Length(3));
        f.push(b"abcdef", 1);
        assert_eq!((f.buffered(), f.written()), (&b"abc"[..], 3));
        assert!(!f.finish(1));
        let mut short = Framer::new(Vec::new(), Framing::Length(10));
        short.push(b"abc", 1);
        assert!(short.finish(1));
    }

    #[test]
    fn messages_grow_without_flow_control() {
        let mut f = Framer::new(Vec::new(), Framing::Close);
        f.push(&vec![0; FIRST_MESSAGE], 1);
        assert!(f.ready(false));
        f.sent();
        f.push(&vec![0; FIRST_MESSAGE], 1);
        assert!(!f.ready(false), "the second message holds at least 128 KiB");
        assert!(f.ready(true), "with flow control, 64 KiB pieces");
    }
}
