//! The Mongrel2 wire format, both directions: bytes in, values out, and back. No I/O.
//!
//! - [`RawMessage`] decodes a request frame in place; [`Message`] is the owned form with an
//!   [`http::HeaderMap`] and a [`MessageKind`].
//! - [`response`] encodes replies to one or many connections, close and `X ctl` messages, HTTP/1.x
//!   response heads and chunked framing.
//! - [`websocket`] builds server frames.

pub mod headers;
pub mod request;
pub mod response;
pub mod websocket;

pub use headers::{HeaderIter, HeaderProtocol, RawHeaders, TryHeaderIter};
pub use request::{Message, MessageKind, RawMessage};
pub use response::{Ctl, Framing};
pub use websocket::Opcode;
