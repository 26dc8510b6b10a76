//! Mongrel2's message as an [`http::Request`], with what Mongrel2 knows in its extensions.

use super::body::RequestBody;
use super::extensions::{ClientGone, ClientInfo};
use crate::responder::Responder;
use crate::{Message, MessageKind};
use http::{Method, Request, Uri, Version};
use std::net::IpAddr;

/// The request for `msg` with `body`, or `None` when its URI is not one `http` can hold.
pub(super) fn http_request(
    msg: &Message,
    body: RequestBody,
    responder: &Responder,
) -> Option<Request<RequestBody>> {
    let uri = match msg.uri() {
        Some(raw) => Uri::from_maybe_shared(raw.clone()).ok()?,
        None => Uri::from_static("/"),
    };
    let mut req = Request::new(body);
    // A WebSocket handshake is a GET (Mongrel2 names its method `WEBSOCKET_HANDSHAKE`).
    *req.method_mut() = match msg.kind() {
        MessageKind::WebSocketHandshake => Method::GET,
        _ => msg.method().cloned().unwrap_or(Method::GET),
    };
    *req.uri_mut() = uri;
    *req.version_mut() = msg.version().unwrap_or(Version::HTTP_11);
    *req.headers_mut() = msg.headers().clone();
    let remote_addr = msg
        .remote_addr()
        .and_then(|a| std::str::from_utf8(a).ok()?.parse::<IpAddr>().ok());
    let ext = req.extensions_mut();
    #[cfg(feature = "axum")]
    if let Some(ip) = remote_addr {
        ext.insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(ip, 0)));
    }
    ext.insert(ClientInfo {
        conn_id: msg.conn_id(),
        sender: msg.sender().clone(),
        pattern: msg.pattern().cloned(),
        remote_addr,
        responder: responder.clone(),
    });
    ext.insert(ClientGone {
        responder: responder.clone(),
    });
    Some(req)
}
