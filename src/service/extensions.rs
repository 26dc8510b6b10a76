//! What a request served by [`serve`](crate::serve) carries in its extensions beyond the HTTP
//! request: [`ClientInfo`] (what Mongrel2 knows of the client) and [`ClientGone`] (fires when
//! the client leaves).

use crate::responder::Responder;
use bytes::Bytes;
use std::future::Future;
use std::net::IpAddr;
use std::task::Poll;

/// What Mongrel2 told about a request's client, in the request's extensions
/// (`req.extensions().get::<ClientInfo>()`, or axum's `Extension<ClientInfo>`).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub(crate) conn_id: u64,
    pub(crate) sender: Bytes,
    pub(crate) pattern: Option<Bytes>,
    pub(crate) remote_addr: Option<IpAddr>,
    pub(crate) responder: Responder,
}

impl ClientInfo {
    /// The client's connection id at Mongrel2.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// The sender UUID of the message (the handler's `send_ident`).
    pub fn sender(&self) -> &Bytes {
        &self.sender
    }

    /// The pattern of the Mongrel2 route that matched (`PATTERN`, such as `/app`).
    pub fn pattern(&self) -> Option<&[u8]> {
        self.pattern.as_deref()
    }

    /// The client's address (`REMOTE_ADDR`; Mongrel2 does not pass on the port). With feature
    /// `axum`, the same address is in axum's `ConnectInfo<SocketAddr>`, with port 0.
    pub fn remote_addr(&self) -> Option<IpAddr> {
        self.remote_addr
    }

    /// A handle on the client connection for what an HTTP response cannot say: keep-alive
    /// pings (`limits.min_ping`), or messages to the client outside the response.
    pub fn responder(&self) -> &Responder {
        &self.responder
    }
}

/// Fires when Mongrel2 reports the request's client gone (or Mongrel2 itself restarts), in the
/// request's extensions. `Clone + Send + Sync`; [`gone`](ClientGone::gone) is a future to race
/// against long work (`tokio::select!`).
///
/// A response body still streaming when the client leaves is dropped by the runtime at once,
/// with no help from the app; this is for work that happens before the response.
///
/// ```no_run
/// # async fn expensive() -> String { String::new() }
/// use m2wsgi::service::ClientGone;
///
/// async fn report(gone: ClientGone) -> Option<String> {
///     tokio::select! {
///         out = expensive() => Some(out),
///         () = gone.gone() => None, // nobody would read it
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ClientGone {
    pub(crate) responder: Responder,
}

impl ClientGone {
    /// Whether the client is gone.
    pub fn is_gone(&self) -> bool {
        self.responder.is_disconnected()
    }

    /// Completes once the client is gone.
    pub fn gone(&self) -> impl Future<Output = ()> + Send + 'static {
        let responder = self.responder.clone();
        std::future::poll_fn(move |cx| {
            let st = responder.state();
            let mut g = st.lock();
            if g.disconnected || responder.stale() {
                return Poll::Ready(());
            }
            g.register(cx.waker());
            Poll::Pending
        })
    }
}
