//! Test a handler without Mongrel2: the exact frames Mongrel2 sends, and a fake Mongrel2 that a
//! [`Connection`](m2wsgi::Connection) can be pointed at.
//!
//! - [`RequestBuilder`] builds request frames byte for byte as Mongrel2 1.12 writes them, in both
//!   header protocols (tnetstring and the legacy JSON): plain HTTP requests, async uploads
//!   (`x-mongrel2-upload-start` / `-done`), streamed uploads (`UPLOAD_STREAM`), WebSocket
//!   handshakes and frames, JSON-socket messages. [`disconnect`], [`credits`] and
//!   [`upload_slice`] build the other messages Mongrel2 sends.
//! - [`FakeMongrel2`] binds Mongrel2's two sockets (a PUSH for requests, a SUB for replies) on
//!   loopback TCP ports chosen by the system, [`send`](FakeMongrel2::send)s frames and collects
//!   the handler's replies ([`Reply`]), and reads whole HTTP responses per client connection id
//!   ([`HttpResponse`]).
//!
//! Header order: Mongrel2 writes the headers in the order of its hash table, which is not
//! stable. The builder writes Mongrel2's own keys first in the order seen on the wire and the
//! HTTP headers in the order they were added; [`RequestBuilder::order`] pins any other order (to
//! reproduce a captured frame, say). A handler must not depend on the order.
//!
//! # Example: a handler tested in a few lines
//!
//! ```
//! use m2wsgi::testing::{FakeMongrel2, RequestBuilder};
//! use m2wsgi::{Connection, Server};
//! use std::time::Duration;
//!
//! let m2 = FakeMongrel2::new();
//! let conn = Connection::builder(m2.send_spec())
//!     .recv_spec(m2.recv_spec())
//!     .send_ident(m2.sender())
//!     .connect()?;
//! let server = Server::new(conn);
//! let stop = server.shutdown_handle();
//! let thread = std::thread::spawn(move || {
//!     server.serve(|req| {
//!         let _ = req.reply_http(http::StatusCode::OK, &http::HeaderMap::new(), b"hi");
//!     })
//! });
//!
//! m2.send(RequestBuilder::get("/hello").conn_id(7).build());
//! let resp = m2.read_response(7, Duration::from_secs(10)).expect("a response");
//! assert_eq!(resp.status, 200);
//! assert_eq!(resp.body, b"hi");
//!
//! stop.shutdown();
//! thread.join().unwrap()?;
//! # Ok::<(), m2wsgi::Error>(())
//! ```

mod fake;
mod http;
mod request;

pub use fake::FakeMongrel2;
pub use http::{ClientOutput, HttpResponse, Reply};
pub use request::{credits, disconnect, upload_slice, websocket_accept, RequestBuilder};

/// The sender UUID of the captured tnetstring frames, used when none is given.
pub const DEFAULT_SENDER: &str = "34f9ceee-cd52-4b7f-b197-88bf2f0ec378";
