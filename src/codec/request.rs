//! Messages from Mongrel2 to a handler, under their original path.
//!
//! The types live in `codec/raw.rs` ([`RawMessage`]), `codec/message.rs` ([`Message`]) and
//! `codec/kind.rs` ([`MessageKind`]), and are re-exported from [`codec`](super); this module
//! re-exports them too, so that `m2wsgi::codec::request::Message` and the like keep working.

pub use super::kind::MessageKind;
pub use super::message::Message;
pub use super::raw::RawMessage;
