//! Shared helpers for the integration tests. Use with `mod support;` in a test file.
//!
//! - [`testing`]: the crate's own `m2wsgi::testing` module (`src/testing/`), compiled into
//!   this tree so that plain `cargo test` can use it without enabling feature `testing`: the
//!   request builder, the fake Mongrel2, the HTTP response parser.
//! - [`client`]: a keep-alive HTTP/1.1 client with deadlines that reports failures instead of
//!   panicking (the soak's).
//! - [`mongrel2`]: a real Mongrel2 in a temporary chroot (tests with feature `e2e`).
//! - [`process`]: child processes stopped on drop, loopback clients, small helpers.
//! - [`runtime`]: a `Server` on a thread of the test.
//! - [`websocket`]: a minimal WebSocket client.
//! - `wsgi` (feature `wsgi`): the embedded interpreter, a log capture, the bridge on a fake
//!   Mongrel2, and the `m2wsgi` command as a child process.
#![allow(dead_code, unreachable_pub)]

pub mod client;
#[cfg(feature = "runtime")]
pub mod load;
pub mod mongrel2;
pub mod process;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "runtime")]
#[path = "../../src/testing/mod.rs"]
#[allow(unused_imports)] // each test binary uses a part of it
pub mod testing;
pub mod websocket;
#[cfg(feature = "wsgi")]
pub mod wsgi;
