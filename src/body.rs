//! [`Body`]: a request body as a reader, whichever way Mongrel2 delivered it.

use crate::responder::Responder;
use bytes::Bytes;
use std::io::{self, BufRead, BufReader, Read};

/// A request body: [`Read`] and [`BufRead`]. Made by
/// [`Request::body_reader`](crate::Request::body_reader).
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
    /// The body carried in the message itself.
    pub(crate) fn inline(body: Bytes) -> Self {
        Self {
            len: Some(body.len() as u64),
            kind: BodyKind::Inline(io::Cursor::new(body)),
        }
    }

    /// An async upload's temp file of `len` bytes, read in place.
    pub(crate) fn file(f: std::fs::File, len: u64) -> Self {
        Self {
            len: Some(len),
            kind: BodyKind::File(BufReader::with_capacity(64 * 1024, f).take(len)),
        }
    }

    /// A streamed upload: `first` (the slice in the request message), then the slices the
    /// dispatcher collects for the responder's connection.
    pub(crate) fn stream(len: Option<u64>, responder: Responder, first: Bytes) -> Self {
        Self {
            len,
            kind: BodyKind::Stream(StreamBody {
                responder,
                current: first,
                done: false,
            }),
        }
    }

    /// The body's length when known (`Content-Length` for streamed uploads).
    pub fn len(&self) -> Option<u64> {
        self.len
    }

    /// Whether the body is known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len == Some(0)
    }

    /// The bytes still to come, when known (a body in the message or in a temp file).
    #[cfg_attr(not(feature = "wsgi"), allow(dead_code))] // `wsgi.input.read(n)`
    pub(crate) fn remaining(&self) -> Option<u64> {
        match &self.kind {
            BodyKind::Inline(c) => Some((c.get_ref().len() as u64).saturating_sub(c.position())),
            BodyKind::File(f) => Some(f.limit()),
            BodyKind::Stream(_) => None,
        }
    }
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.kind {
            // A large read of a temp file goes past the reader's buffer, straight into `out`.
            BodyKind::Inline(c) => c.read(out),
            BodyKind::File(f) => f.read(out),
            BodyKind::Stream(_) => {
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
/// them; the connection state grants Mongrel2 credits when the reader runs dry.
#[derive(Debug)]
struct StreamBody {
    responder: Responder,
    current: Bytes,
    done: bool,
}

impl StreamBody {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.current.is_empty() && !self.done {
            let r = &self.responder;
            match r.state().next_upload_slice(r.connection(), || r.stale())? {
                Some(next) => self.current = next,
                None => self.done = true,
            }
        }
        Ok(&self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn remaining_counts_down_for_inline_and_file_bodies() {
        let mut inline = Body::inline(Bytes::from_static(b"hello world"));
        let mut buf = [0u8; 5];
        assert_eq!(inline.remaining(), Some(11));
        inline.read_exact(&mut buf).unwrap();
        assert_eq!((&buf, inline.remaining()), (b"hello", Some(6)));

        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 200_000]).unwrap();
        io::Seek::rewind(&mut f).unwrap();
        // A declared length shorter than the file: only that much is read.
        let mut file = Body::file(f, 150_000);
        let mut big = vec![0u8; 100_000];
        file.read_exact(&mut big).unwrap();
        assert_eq!(file.remaining(), Some(50_000));
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).unwrap();
        assert_eq!((rest.len(), file.remaining()), (50_000, Some(0)));
    }
}
