//! Shared helpers for the integration tests. Use with `mod support;` in a test file.
#![allow(dead_code, unreachable_pub)]

pub mod mongrel2;
pub mod process;
#[cfg(feature = "runtime")]
pub mod runtime;
