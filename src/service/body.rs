//! [`RequestBody`]: a request body as an [`http_body::Body`], whichever way Mongrel2 delivered
//! it.

use crate::conn_state::UploadPoll;
use crate::responder::Responder;
use crate::upload::UploadFile;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

/// How much of an async-upload temp file is read at a time.
const FILE_PIECE: usize = 128 * 1024;

/// The body of a request served by [`serve`](crate::serve): an [`http_body::Body`] with
/// `Data = Bytes` and `Error = std::io::Error`, as axum's `Request<Body>` extractors expect
/// (`String`, `Bytes`, `Json`, `axum::body::Body::from_stream`...).
///
/// - A body inline in Mongrel2's message is one frame, without a copy.
/// - An async upload (a body above Mongrel2's `limits.content_length`, written to a temp file
///   first) is read from the file in 128 KiB pieces, never loaded whole; the file is deleted
///   when the body is dropped.
/// - A streamed upload (`upload.stream=1`) yields its slices as Mongrel2 sends them, granting
///   Mongrel2 upload credit as they are read, so the client never sends more than the app has
///   asked for. A client slower than the connection's
///   [`StreamLimits`](crate::StreamLimits) gets `408`, and the read an error.
///
/// [`size_hint`](http_body::Body::size_hint) is exact whenever the length is known (always,
/// but for a streamed upload without `Content-Length`).
#[derive(Debug)]
pub struct RequestBody {
    /// Bytes still to come, when known.
    left: Option<u64>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Inline(Option<Bytes>),
    File {
        file: tokio::fs::File,
        buf: Vec<u8>,
        /// Deletes the temp file when the body is dropped.
        _upload: UploadFile,
    },
    Stream {
        responder: Responder,
        first: Option<Bytes>,
        /// When to look at the upload's pace again.
        timer: Option<Pin<Box<Sleep>>>,
        done: bool,
    },
}

impl RequestBody {
    /// A body that is all in `bytes`.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self {
            left: Some(bytes.len() as u64),
            kind: Kind::Inline((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::from_bytes(Bytes::new())
    }

    /// An async upload's verified temp file of `len` bytes.
    pub(crate) fn file(file: std::fs::File, len: u64, upload: UploadFile) -> Self {
        Self {
            left: Some(len),
            kind: Kind::File {
                file: tokio::fs::File::from_std(file),
                buf: Vec::new(),
                _upload: upload,
            },
        }
    }

    /// A streamed upload: `first` (the slice in the request message), then the slices the
    /// dispatcher collects for `responder`'s connection.
    pub(crate) fn stream(len: Option<u64>, responder: Responder, first: Bytes) -> Self {
        Self {
            left: len,
            kind: Kind::Stream {
                responder,
                first: Some(first),
                timer: None,
                done: false,
            },
        }
    }

    /// Counts `n` bytes handed out.
    fn took(&mut self, n: usize) {
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(n as u64);
        }
    }
}

impl Default for RequestBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> Self {
        Self::from_bytes(bytes)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let next = match &mut this.kind {
            Kind::Inline(bytes) => bytes.take(),
            Kind::File { file, buf, .. } => {
                let want = this.left.unwrap_or(0).min(FILE_PIECE as u64) as usize;
                if want == 0 {
                    None
                } else {
                    if buf.len() != want {
                        buf.resize(want, 0);
                    }
                    let mut rb = ReadBuf::new(buf);
                    ready!(Pin::new(file).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the upload's temp file is shorter than it was",
                        ))));
                    }
                    let mut piece = std::mem::take(buf);
                    piece.truncate(n);
                    Some(Bytes::from(piece))
                }
            }
            Kind::Stream {
                responder,
                first,
                timer,
                done,
            } => loop {
                if let Some(first) = first.take().filter(|b| !b.is_empty()) {
                    break Some(first);
                }
                if *done {
                    break None;
                }
                let st = responder.state();
                match st.poll_upload_slice(cx, responder.connection(), responder.stale())? {
                    UploadPoll::Ready(Some(slice)) => break Some(slice),
                    UploadPoll::Ready(None) => {
                        *done = true;
                        break None;
                    }
                    UploadPoll::Pending(deadline) => {
                        let deadline = tokio::time::Instant::from_std(deadline);
                        let sleep = timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                        if sleep.deadline() != deadline {
                            sleep.as_mut().reset(deadline);
                        }
                        // Woken by a slice, or at the deadline to check the upload's pace.
                        ready!(sleep.as_mut().poll(cx));
                    }
                }
            },
        };
        match next {
            Some(data) => {
                this.took(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inline(bytes) => bytes.is_none(),
            Kind::File { .. } => self.left == Some(0),
            Kind::Stream { done, first, .. } => *done && first.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use std::io::Write;

    async fn collect(mut body: RequestBody) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut frames = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let data = frame.unwrap().into_data().unwrap();
            frames += 1;
            out.extend_from_slice(&data);
        }
        assert!(body.is_end_stream());
        (out, frames)
    }

    #[tokio::test]
    async fn inline_bodies_are_one_frame() {
        let body = RequestBody::from_bytes(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(collect(body).await, (b"hello".to_vec(), 1));
        assert!(RequestBody::empty().is_end_stream());
    }

    #[tokio::test]
    async fn upload_files_are_read_in_pieces_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload.XXXXXX");
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let upload = UploadFile::new(path.clone());
        let (f, len) = upload.open().unwrap();
        let body = RequestBody::file(f, len, upload);
        assert_eq!(body.size_hint().exact(), Some(300_000));
        let (got, frames) = collect(body).await;
        assert_eq!(got, data);
        assert_eq!(frames, 3, "128 KiB pieces");
        assert!(!path.exists(), "the temp file is deleted with the body");
    }
}
