//! The Mongrel2 wire format, both directions: bytes in, values out, and back. No I/O.
//!
//! Where things are, so that a change goes to the right file:
//!
//! | file | holds |
//! |---|---|
//! | `raw.rs` | frame splitting: [`RawMessage`], the zero-copy decode of `SENDER SP CONN_ID SP PATH SP HEADERS BODY` (sender, connection id, path, body netstring, no trailing bytes) |
//! | [`headers`] | [`RawHeaders`]: the one walk over both header encodings (tnetstring dictionary, legacy JSON), checked or not ([`TryHeaderIter`], [`HeaderIter`]) |
//! | `message.rs` | [`Message`]: the owned decode (an [`http::HeaderMap`], Mongrel2's fields typed) and its accessors |
//! | `kind.rs` | [`MessageKind`] and how a decoded message is classified |
//! | [`request`] | the original path of the three types above, re-exported |
//! | [`response`] | replies to one or many connections, close and `X ctl` messages, HTTP/1.x response heads, chunked framing |
//! | [`websocket`] | server frames, close payloads, a frame decoder for tests and tools |
//! | `error.rs` | [`EncodeError`], what the encoders refuse |
//!
//! The modules depend one way only: `raw` → `headers`; `message` → `raw`, `headers`, `kind`,
//! `response`;
//! `kind` → `websocket`; nothing imports `message`.

mod error;
pub mod headers;
mod kind;
mod message;
mod raw;
pub mod request;
pub mod response;
pub mod websocket;

pub use error::EncodeError;
pub use headers::{HeaderIter, HeaderProtocol, RawHeaders, TryHeaderIter};
pub use kind::MessageKind;
pub use message::Message;
pub use raw::RawMessage;
pub use response::{Ctl, Framing};
pub use websocket::Opcode;
