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
//! ## Where things are
//!
//! The layers depend only downwards:
//!
//! | layer | files | what |
//! |---|---|---|
//! | codec (always; pure, no I/O, fuzzed) | [`tnetstring`], [`codec`] | tnetstrings and netstrings; the Mongrel2 message format both ways ([`RawMessage`], [`Message`], [`MessageKind`], [`codec::response`], [`codec::websocket`]) |
//! | where the sockets are | `spec.rs`, [`config`] (`config-db`) | socket specs (`tcp://IDENT@127.0.0.1:9999#bind`) and Mongrel2's config database |
//! | ZeroMQ (`runtime`) | `transport/` | [`Connection`] and its builder, restart detection (`link.rs`), [`Device`] with its scheduler and worker protocol; nothing else touches ZeroMQ |
//! | per-connection state (`runtime`) | `conn_state.rs` | credits, upload slices, disconnects, ownership: flow control in both directions |
//! | answering (`runtime`) | `request.rs`, `responder.rs`, `response_stream.rs`, `body.rs`, [`upload`] | [`Request`], [`Responder`], [`ResponseStream`], [`Body`], upload checks ([`UploadPolicy`], [`UploadRefusal`]) |
//! | serving (`runtime`) | `server.rs`, `dispatcher.rs`, `reader.rs`, `worker.rs` | [`Server`]: N workers reading in turn (idle ones read, busy ones answer), fair dispatch, graceful drain |
//! | WSGI (`wsgi`) | `wsgi/` | the PEP 3333 bridge over PyO3 and the `m2wsgi` command |
//! | testing kit (`testing`) | `testing/` | Mongrel2's exact frames and a fake Mongrel2, to unit-test a handler without Mongrel2 |
//!
//! Errors are one [`Error`] with typed causes ([`ParseError`], [`ConfigError`],
//! [`UploadRefusal`], ...). With feature `runtime` the `zmq` crate builds libzmq from source
//! (its `zmq-sys` vendors it): a C++ compiler is needed, no system libzmq. A complete native
//! handler is in the README and in `examples/hello.rs`.
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
//! use m2wsgi::codec::response::{encode_head, encode_reply_prefix, Framing, HeadExtras};
//! let mut out = Vec::new();
//! encode_reply_prefix(&mut out, msg.sender(), &[msg.conn_id()])?;
//! encode_head(&mut out, http::Version::HTTP_11, http::StatusCode::OK,
//!             &http::HeaderMap::new(), Framing::Length(5), &HeadExtras::default());
//! out.extend_from_slice(b"hello");
//! assert!(out.starts_with(b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 1:1, HTTP/1.1 200 OK\r\n"));
//! # Ok::<(), m2wsgi::Error>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

// `m2wsgi::` paths inside the crate: `testing.rs` is also compiled into the integration tests'
// support tree (tests/support/mod.rs), where `crate::` would be the test crate.
extern crate self as m2wsgi;

#[cfg(feature = "runtime")]
mod body;
pub mod codec;
#[cfg(feature = "config-db")]
#[cfg_attr(docsrs, doc(cfg(feature = "config-db")))]
pub mod config;
#[cfg(feature = "runtime")]
mod conn_state;
#[cfg(feature = "runtime")]
mod dispatcher;
mod error;
#[cfg(feature = "runtime")]
mod framer;
#[cfg(feature = "runtime")]
mod reader;
#[cfg(feature = "runtime")]
mod request;
#[cfg(feature = "runtime")]
mod responder;
#[cfg(feature = "runtime")]
mod response_stream;
#[cfg(feature = "runtime")]
mod server;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod service;
mod spec;
#[cfg(feature = "runtime")]
mod stats;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod tnetstring;
#[cfg(feature = "runtime")]
mod transport;
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub mod upload;
#[cfg(feature = "runtime")]
mod worker;
#[cfg(feature = "wsgi")]
#[cfg_attr(docsrs, doc(cfg(feature = "wsgi")))]
pub mod wsgi;

pub use codec::{HeaderProtocol, Message, MessageKind, RawMessage};
#[cfg(feature = "config-db")]
#[cfg_attr(docsrs, doc(cfg(feature = "config-db")))]
pub use config::{
    load_handler, load_handlers, ConfigError, HandlerConfig, HandlerSelector, NotFoundReason,
};
pub use error::{Error, ParseError, ParseErrorKind, Result};
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use server::{install_signal_handlers, Server, ShutdownHandle};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use service::serve;
pub use spec::{default_recv_spec, SocketSpec};
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use stats::ServerStats;

/// The `http` crate, whose types ([`http::HeaderMap`], [`http::StatusCode`], ...) this crate's
/// API speaks, re-exported so that a handler needs no other dependency.
pub use http;

/// The `bytes` crate, whose [`bytes::Bytes`] holds message bodies without copies, re-exported.
pub use bytes;
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use transport::{Connection, ConnectionBuilder, Device, DeviceStatus, WorkerStatus};
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use upload::{StreamLimits, UploadPolicy, UploadRefusal};
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use worker::{NotReady, Worker};
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use {
    body::Body, conn_state::MAX_CREDITS, request::Request, responder::Responder,
    response_stream::ResponseStream,
};

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
