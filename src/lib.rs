//! # m2wsgi
//!
//! Mongrel2 handlers in Rust, and a PEP 3333 bridge that serves Python WSGI applications behind
//! Mongrel2.
//!
//! [Mongrel2](https://mongrel2.org) speaks HTTP and WebSocket to clients and hands each request to
//! *handlers* over ZeroMQ. It PUSHes requests, one frame each,
//!
//! ```text
//! SENDER_UUID SP CONN_ID SP PATH SP TNETSTRING_HEADERS NETSTRING_BODY
//! ```
//!
//! and handlers PUBlish replies `SENDER_UUID SP LEN:ID ID ..., SP BODY` back to it, where BODY is
//! the raw bytes to write to those clients.
//!
//! This crate is layered:
//!
//! - [`tnetstring`]: a strict, zero-copy tnetstring and netstring parser and encoder.
//! - [`codec`]: the Mongrel2 message format in both directions ([`RawMessage`], [`Message`],
//!   [`codec::response`], [`codec::websocket`]). Pure: bytes in, values out, fuzzed.
//! - [`SocketSpec`] and, with feature `config-db` (default), [`config`]: where the sockets are,
//!   from specs (`tcp://IDENT@127.0.0.1:9999#bind`) or from Mongrel2's config database.
//! - With feature `runtime` (default; links the system libzmq): `Connection` (the only code that
//!   touches ZeroMQ), `Request` / `Responder` / `ResponseStream` / `Body` (answer from any thread,
//!   stream with flow control, read uploads in place), `Server` (N workers, fair dispatch,
//!   graceful drain) and `Device` (one Mongrel2, several handler processes).
//! - With feature `wsgi`: the PEP 3333 bridge and the `m2wsgi` command.
//! - With feature `testing`: `testing`, Mongrel2's exact frames and a fake
//!   Mongrel2, to unit-test a handler without running Mongrel2.
//!
//! A complete native handler (feature `runtime`) is in the README and in `examples/hello.rs`.
//! - `wsgi` (feature `wsgi`): a PEP 3333 bridge serving Python WSGI applications, embedding
//!   CPython through PyO3; the `m2wsgi` command is built on it.
//!
//! ## Decoding a request
//!
//! ```
//! use m2wsgi::{Message, MessageKind};
//!
//! let frame = bytes::Bytes::from_static(
//!     b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 1 /handler 190:11:REMOTE_ADDR,9:127.0.0.1,\
//!       6:METHOD,3:GET,10:URL_SCHEME,4:http,7:PATTERN,8:/handler,3:URI,8:/handler,\
//!       7:VERSION,8:HTTP/1.1,4:PATH,8:/handler,4:host,9:localhost,15:x-forwarded-for,\
//!       9:127.0.0.1,}0:,",
//! );
//! let msg = Message::decode(frame)?;
//! assert_eq!(msg.kind(), &MessageKind::Request);
//! assert_eq!(msg.method(), Some(&http::Method::GET));
//! assert_eq!(msg.headers()["host"], "localhost");
//!
//! // Answer it: an HTTP response head and body, addressed to the client's connection id.
//! use m2wsgi::codec::response::{encode_head, encode_reply_prefix, Framing};
//! let mut out = Vec::new();
//! encode_reply_prefix(&mut out, msg.sender(), &[msg.conn_id()])?;
//! encode_head(&mut out, http::Version::HTTP_11, http::StatusCode::OK,
//!             &http::HeaderMap::new(), Framing::Length(5));
//! out.extend_from_slice(b"hello");
//! assert!(out.starts_with(b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 1:1, HTTP/1.1 200 OK\r\n"));
//! # Ok::<(), m2wsgi::Error>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

// `m2wsgi::` paths inside the crate: `testing.rs` is also compiled into the integration tests'
// support tree (tests/support/mod.rs), where `crate::` would be the test crate.
extern crate self as m2wsgi;

pub mod codec;
#[cfg(feature = "config-db")]
#[cfg_attr(docsrs, doc(cfg(feature = "config-db")))]
pub mod config;
#[cfg(feature = "runtime")]
mod connection;
#[cfg(feature = "runtime")]
mod device;
mod error;
#[cfg(feature = "runtime")]
mod request;
#[cfg(feature = "runtime")]
mod server;
mod spec;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod tnetstring;
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub mod upload;
#[cfg(feature = "wsgi")]
#[cfg_attr(docsrs, doc(cfg(feature = "wsgi")))]
pub mod wsgi;

pub use codec::{HeaderProtocol, Message, MessageKind, RawMessage};
#[cfg(feature = "config-db")]
#[cfg_attr(docsrs, doc(cfg(feature = "config-db")))]
pub use config::{load_handler, HandlerConfig, HandlerSelector};
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use connection::{Connection, ConnectionBuilder, Device, UploadPolicy};
pub use error::{Error, ParseError, ParseErrorKind, Result};
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use request::{Body, Request, Responder, ResponseStream, MAX_CREDITS};
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use server::{install_signal_handlers, Server, ShutdownHandle, Worker};
pub use spec::{default_recv_spec, SocketSpec};

#[cfg(all(doctest, feature = "runtime"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::Message>();
        assert_send_sync::<crate::RawMessage<'static>>();
        assert_send_sync::<crate::Error>();
        assert_send_sync::<crate::tnetstring::Value<'static>>();
    }
}
