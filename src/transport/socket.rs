//! Small helpers over the `zmq` crate shared by the connection and the device.

use crate::error::{Error, Result};
use crate::spec::SocketSpec;
use std::time::Instant;

/// Maps a ZeroMQ error to [`Error::Socket`], naming the operation.
pub(super) fn zerr(op: &'static str) -> impl Fn(zmq::Error) -> Error {
    move |e| Error::Socket {
        op,
        errno: e.to_raw(),
        message: e.message().to_string(),
    }
}

/// Connects `s` to `spec`, or binds it for `#bind` specs.
pub(super) fn attach(s: &zmq::Socket, spec: &SocketSpec) -> Result<()> {
    if spec.is_bind() {
        s.bind(spec.endpoint()).map_err(zerr("bind"))
    } else {
        s.connect(spec.endpoint()).map_err(zerr("connect"))
    }
}

/// Milliseconds left until `deadline`, for `zmq::poll`.
pub(super) fn remaining(deadline: Instant) -> i64 {
    let d = deadline.saturating_duration_since(Instant::now());
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A received ZeroMQ message, owned by a [`bytes::Bytes`] without a copy.
pub(super) struct Frame(pub(super) zmq::Message);

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
