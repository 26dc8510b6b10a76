//! Async handlers: any [`tower::Service`](tower_service::Service) over `http` types (an
//! unmodified axum `Router`) behind Mongrel2, on tokio (feature `tower`).
//!
//! ```no_run
//! use axum::{extract::Path, routing::get, Json, Router};
//! use m2wsgi::Connection;
//!
//! async fn item(Path(id): Path<u32>) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({ "id": id }))
//! }
//!
//! #[tokio::main]
//! async fn main() -> m2wsgi::Result<()> {
//!     let app = Router::new().route("/items/{id}", get(item));
//!     let conn = Connection::builder("tcp://127.0.0.1:9999").connect()?;
//!     m2wsgi::serve(conn, app).handle_signals(true).await
//! }
//! ```
//!
//! What a request carries:
//! - the method, URI (path and query), version and headers of the client's request;
//! - a [`RequestBody`]: the inline body, an async upload's temp file read in pieces, or a
//!   streamed upload's slices, Mongrel2 being granted credit as they are read;
//! - in its extensions: [`ClientInfo`] (connection id, sender, route pattern, the client's
//!   address), [`ClientGone`] (fires when the client leaves), with feature `axum` axum's
//!   `ConnectInfo<SocketAddr>`, and for a WebSocket handshake a [`WebSocketUpgrade`].
//!
//! The response's body is any [`http_body::Body`]: an exact size hint (or a `Content-Length`
//! header) makes a `Content-Length` response, anything else is chunked (close-delimited for
//! HTTP/1.0). Frames that are ready together go out as one message; when the body has
//! nothing ready, what is buffered goes out, so a slow stream reaches the client as it is made.
//! With `download.flow_control=1` no more than Mongrel2's window is ever outstanding, so a
//! stream of any size holds little memory anywhere; without it Mongrel2 queues at most 16
//! messages per client, and messages grow to fit (as with [`ResponseStream`](crate::ResponseStream)).
//! A response still streaming when the client leaves is dropped at once.
//!
//! Requests run as tokio tasks on the runtime that awaits [`Serve`]; Mongrel2's socket is read
//! by one dispatcher thread per connection, the same code as the threaded
//! [`Server`](crate::Server) (flow control, upload checks, body limits, restart detection).
//!
//! Testing: a tower service needs no Mongrel2 to be unit-tested (`tower::ServiceExt::oneshot`
//! on the `Router`). To test it together with this runtime, point [`serve`] at the fake
//! Mongrel2 of [`testing`](crate::testing) (feature `testing`).

mod body;
mod extensions;
mod feed;
mod request;
mod respond;
mod serve;
mod websocket;

pub use body::RequestBody;
pub use extensions::{ClientGone, ClientInfo};
pub use respond::BoxError;
pub use serve::{serve, HttpService, ResponseBody, Serve};
pub use websocket::{Frames, WebSocketUpgrade};
