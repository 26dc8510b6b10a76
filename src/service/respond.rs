//! Writing an [`http::Response`] with any [`http_body::Body`] to the client: framed and
//! coalesced by the same rules as [`ResponseStream`](crate::ResponseStream), sent as the
//! download window allows, and dropped the moment the client leaves.

use crate::codec::response::content_length;
use crate::conn_state::STALL_TIMEOUT;
use crate::error::{Error, Result};
use crate::framer::Framer;
use crate::request::response_head;
use crate::responder::Responder;
use crate::Message;
use bytes::Buf;
use http_body::Body;
use std::pin::pin;
use std::task::Poll;

/// A boxed error, as `tower` services return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a response ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// Completely.
    Done,
    /// The client left (or Mongrel2 restarted): the body was dropped unfinished.
    Gone,
    /// The body failed: the connection was dropped, so the truncated body does not look
    /// complete.
    Failed,
}

/// Sends `resp` as the answer to `msg`.
pub(super) async fn write_response<B>(
    responder: &Responder,
    msg: &Message,
    resp: http::Response<B>,
) -> Sent
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = resp.into_parts();
    let len = body
        .size_hint()
        .exact()
        .or_else(|| content_length(&parts.headers));
    let (head, framing, close) = response_head(msg, parts.status, b"", &parts.headers, len);
    let mut framer = Framer::new(head, framing);
    let id = responder.conn_id();
    let flow = responder.state().flow_controlled();
    let mut body = pin!(body);
    while !body.is_end_stream() {
        // A frame that is there now is coalesced with what is buffered; when the body has
        // nothing yet, what is buffered goes out first (a slow producer's bytes reach the
        // client as they are made), then the task waits for the body or for the client to go.
        let mut frame = std::future::poll_fn(|cx| Poll::Ready(poll_frame(body.as_mut(), cx))).await;
        if frame.is_pending() {
            if send(responder, &mut framer).await.is_err() {
                return Sent::Gone;
            }
            frame = std::future::poll_fn(|cx| {
                if client_gone(responder, cx) {
                    return Poll::Ready(Poll::Pending);
                }
                poll_frame(body.as_mut(), cx).map(Poll::Ready)
            })
            .await;
        }
        let frame = match frame {
            // The client left while the body was waiting.
            Poll::Pending => return Sent::Gone,
            Poll::Ready(frame) => frame,
        };
        match frame {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    while data.has_remaining() {
                        let chunk = data.chunk();
                        let n = chunk.len();
                        framer.push(chunk, id);
                        data.advance(n);
                    }
                }
                // Trailers have no place in an HTTP/1 response without `TE: trailers`; they
                // are dropped, as hyper does.
            }
            Some(Err(e)) => {
                tracing::error!(
                    "connection {id}: response body failed: {e}; dropping the connection"
                );
                let _ = responder.cancel();
                return Sent::Failed;
            }
        }
        if responder.is_disconnected() {
            return Sent::Gone;
        }
        if framer.ready(flow) && send(responder, &mut framer).await.is_err() {
            return Sent::Gone;
        }
    }
    let short = framer.finish(id);
    if send(responder, &mut framer).await.is_err() {
        return Sent::Gone;
    }
    if (close || short) && responder.close().is_err() {
        return Sent::Gone;
    }
    Sent::Done
}

/// The body's next frame, its error boxed (a boxed error is `Send`, so the task stays `Send`
/// whatever the body's error type).
fn poll_frame<B>(
    body: std::pin::Pin<&mut B>,
    cx: &mut std::task::Context<'_>,
) -> Poll<Option<std::result::Result<http_body::Frame<B::Data>, BoxError>>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    body.poll_frame(cx)
        .map(|f| f.map(|r| r.map_err(Into::into)))
}

/// Whether the client is gone; if not, `cx` is woken when it goes.
fn client_gone(responder: &Responder, cx: &mut std::task::Context<'_>) -> bool {
    let st = responder.state();
    let mut g = st.lock();
    if g.disconnected || responder.stale() {
        return true;
    }
    g.register(cx.waker());
    false
}

/// Sends what `framer` has buffered, in pieces the download window allows.
///
/// # Errors
/// [`Error::Closed`] when the client is gone or credits stopped coming for
/// [`STALL_TIMEOUT`]; [`Error::Socket`] when ZeroMQ fails.
async fn send(responder: &Responder, framer: &mut Framer) -> Result<()> {
    let st = responder.state();
    let mut rest = framer.buffered();
    while !rest.is_empty() {
        let want = rest.len();
        let credits = std::future::poll_fn(|cx| st.poll_credits(cx, want, responder.stale()));
        let n = match tokio::time::timeout(STALL_TIMEOUT, credits).await {
            Ok(n) => n?,
            Err(_) => {
                st.warn_stalled();
                return Err(Error::Closed);
            }
        };
        responder
            .connection()
            .reply_in(st.epoch, st.id, &rest[..n])?;
        rest = &rest[n..];
    }
    framer.sent();
    Ok(())
}
