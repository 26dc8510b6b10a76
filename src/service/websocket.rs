//! WebSockets under the async runtime: the handshake reaches the service as a `GET` with a
//! [`WebSocketUpgrade`] in its extensions; accepting it answers `101` and turns the frames
//! Mongrel2 sends for that connection into a [`Frames`] receiver.
//!
//! axum's own `WebSocketUpgrade` cannot work behind Mongrel2: it needs the raw TCP connection
//! (hyper's upgrade), and Mongrel2 keeps that, parsing the frames itself and sending each one
//! to the handler as a message. This is the same exchange in Mongrel2's terms.

use crate::codec::websocket::Opcode;
use crate::conn_state::ConnState;
use crate::error::Result;
use crate::responder::Responder;
use crate::{Message, MessageKind};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The open WebSockets: the connections whose frames go to a [`Frames`] receiver.
#[derive(Debug, Default)]
pub(super) struct Sockets {
    open: Mutex<Vec<(Arc<ConnState>, mpsc::UnboundedSender<Message>)>>,
}

impl Sockets {
    /// Passes a frame (or a disconnect notice) of `st`'s connection on; returns `false` when
    /// nobody accepted a WebSocket on it.
    pub(super) fn deliver(&self, st: &Arc<ConnState>, msg: Message) -> bool {
        let mut open = self.open.lock();
        let Some(at) = open.iter().position(|(s, _)| Arc::ptr_eq(s, st)) else {
            return false;
        };
        let ends = match msg.kind() {
            MessageKind::Disconnect => true,
            MessageKind::WebSocketFrame { opcode, .. } => *opcode == Opcode::Close,
            _ => false,
        };
        let delivered = match msg.kind() {
            MessageKind::Disconnect => true,
            _ => open[at].1.send(msg).is_ok(),
        };
        if ends || !delivered {
            // The receiver sees the end of the stream once its sender is dropped.
            open.swap_remove(at);
        }
        true
    }

    fn open(&self, st: Arc<ConnState>) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut open = self.open.lock();
        open.retain(|(s, _)| !Arc::ptr_eq(s, &st));
        open.push((st, tx));
        rx
    }
}

/// A WebSocket handshake, in the extensions of the request that carries it
/// (`Extension<WebSocketUpgrade>` in axum). Call [`accept`](WebSocketUpgrade::accept) to take
/// the connection over; the response the service then returns is not sent (the `101` was).
///
/// ```no_run
/// use axum::{routing::get, Extension, Router};
/// use m2wsgi::codec::websocket::Opcode;
/// use m2wsgi::service::WebSocketUpgrade;
///
/// async fn echo(Extension(ws): Extension<WebSocketUpgrade>) {
///     let Ok((out, mut frames)) = ws.accept() else { return };
///     tokio::spawn(async move {
///         while let Some(frame) = frames.recv().await {
///             if out.send_websocket(Opcode::Text, frame.body()).is_err() {
///                 break;
///             }
///         }
///     });
/// }
///
/// let app: Router = Router::new().route("/ws", get(echo));
/// ```
#[derive(Debug, Clone)]
pub struct WebSocketUpgrade {
    pub(super) responder: Responder,
    pub(super) accept_key: Bytes,
    pub(super) sockets: Arc<Sockets>,
    pub(super) accepted: Arc<AtomicBool>,
}

impl WebSocketUpgrade {
    /// Answers the handshake (`101 Switching Protocols`, with the accept key Mongrel2
    /// computed) and returns the responder for frames to the client
    /// ([`Responder::send_websocket`]) and the receiver of the client's frames.
    ///
    /// # Errors
    /// As [`Responder::send`].
    pub fn accept(self) -> Result<(Responder, Frames)> {
        let st = Arc::clone(self.responder.state());
        // Registered before the 101 goes out: the client's first frame may follow at once.
        let rx = self.sockets.open(st);
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: ",
        );
        out.extend_from_slice(&self.accept_key);
        out.extend_from_slice(b"\r\n\r\n");
        self.accepted.store(true, Ordering::SeqCst);
        self.responder.send(&out)?;
        Ok((self.responder, Frames { rx }))
    }
}

/// The client's WebSocket frames, as Mongrel2 parsed them (each a [`Message`] of kind
/// [`MessageKind::WebSocketFrame`], its body the unmasked payload).
#[derive(Debug)]
pub struct Frames {
    rx: mpsc::UnboundedReceiver<Message>,
}

impl Frames {
    /// The next frame; `None` once the client closed the socket or left (a close frame is
    /// returned first, when the client sent one).
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }
}
