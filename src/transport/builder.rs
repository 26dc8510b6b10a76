//! [`ConnectionBuilder`]: the options of a [`Connection`] and the sockets it opens.

use super::connection::{Connection, Inner, Rx, SUBSCRIBE_FIRST_WARN};
use super::link::{monitor, reply_socket, Epoch, Publisher, RECONNECT_IVL_MS};
use super::socket::zerr;
use crate::error::Result;
use crate::spec::SocketSpec;
use crate::tnetstring::Limits;
use crate::upload::{StreamLimits, UploadPolicy};
use bytes::Bytes;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Linger on close: replies still queued get this long to leave.
/// Builds a [`Connection`]. Made by [`Connection::builder`] or
/// [`Connection::from_config`](crate::Connection::from_config).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .connect() is called"]
pub struct ConnectionBuilder {
    send_spec: String,
    recv_spec: Option<String>,
    send_ident: Option<String>,
    recv_ident: Option<String>,
    device: Option<String>,
    uploads: UploadPolicy,
    flow_control: bool,
    stream_limits: StreamLimits,
    limits: Limits,
}

impl ConnectionBuilder {
    /// A builder with every default; see [`Connection::builder`].
    pub(super) fn new(send_spec: String) -> Self {
        Self {
            send_spec,
            recv_spec: None,
            send_ident: None,
            recv_ident: None,
            device: None,
            uploads: UploadPolicy {
                upload_dir: None,
                chroot: PathBuf::from("/"),
            },
            flow_control: false,
            stream_limits: StreamLimits::default(),
            limits: Limits::default(),
        }
    }
}

impl ConnectionBuilder {
    /// Mongrel2's send and recv specs as this builder would connect to them (the recv spec
    /// inferred when not given).
    ///
    /// # Errors
    /// [`Error::BadSpec`](crate::Error::BadSpec) for an invalid spec.
    pub fn specs(&self) -> Result<(SocketSpec, SocketSpec)> {
        let send = SocketSpec::parse(&self.send_spec)?;
        let recv = match &self.recv_spec {
            Some(s) => SocketSpec::parse(s)?,
            None => crate::default_recv_spec(&send)?,
        };
        Ok((send, recv))
    }

    /// Mongrel2's `recv_spec`, where replies go. Default: the host of `send_spec` with the port
    /// one lower (as the Python m2wsgi 0.5.2 did).
    pub fn recv_spec(mut self, spec: impl Into<String>) -> Self {
        self.recv_spec = Some(spec.into());
        self
    }

    /// The handler's identity, Mongrel2's `send_ident`. Default: the identity in the send spec
    /// (`tcp://IDENT@host:port`), else a random UUID. Replies carry it as their sender.
    pub fn send_ident(mut self, ident: impl Into<String>) -> Self {
        self.send_ident = Some(ident.into());
        self
    }

    /// Mongrel2's `recv_ident`: when not empty, Mongrel2 subscribes to it, so replies must start
    /// with it; they then use it as their sender.
    pub fn recv_ident(mut self, ident: impl Into<String>) -> Self {
        self.recv_ident = Some(ident.into());
        self
    }

    /// Receive requests from a [`Device`](crate::Device) at `endpoint` (its worker socket, such as
    /// `tcp://127.0.0.1:9997`) instead of pulling from Mongrel2's `send_spec` directly. Replies
    /// still go straight to Mongrel2's `recv_spec`. A [`Server`](crate::Server) works unchanged;
    /// it tells the device how many requests it can start
    /// ([`set_capacity`](Connection::set_capacity)). `tcp://IDENT@host:port` gives this worker
    /// the ZeroMQ identity `IDENT` (unique among the device's workers), by which
    /// [`DeviceStatus`](crate::DeviceStatus) knows it.
    pub fn device(mut self, endpoint: impl Into<String>) -> Self {
        self.device = Some(endpoint.into());
        self
    }

    /// The directory of Mongrel2's `upload.temp_store`, as Mongrel2 sees it. Without it, async
    /// uploads are refused with 413.
    pub fn upload_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.uploads.upload_dir = Some(dir.into());
        self
    }

    /// Mongrel2's chroot on this host (default `/`): where to find the paths in its messages.
    pub fn chroot(mut self, dir: impl Into<PathBuf>) -> Self {
        self.uploads.chroot = dir.into();
        self
    }

    /// Whether Mongrel2 runs with `download.flow_control=1`. Requests that carry
    /// `DOWNLOAD_CREDITS` turn flow control on for their connection in any case.
    pub fn flow_control(mut self, on: bool) -> Self {
        self.flow_control = on;
        self
    }

    /// How slow a streamed upload (`upload.stream=1`) may be before the client gets 408 and
    /// the worker is freed (see [`StreamLimits`]).
    pub fn stream_limits(mut self, limits: StreamLimits) -> Self {
        self.stream_limits = limits;
        self
    }

    /// Parser limits for incoming messages.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Creates the sockets and connects (or binds, for `#bind` specs) them.
    ///
    /// The reply socket connects first. The request socket (or the device link) is attached only
    /// once Mongrel2 has subscribed to the reply socket, so no reply to an early request is lost
    /// to ZeroMQ's PUB/SUB start-up window; until then [`Connection::recv`] returns `None`.
    ///
    /// # Errors
    /// [`Error::BadSpec`](crate::Error::BadSpec) for an invalid spec, [`Error::Socket`](crate::Error::Socket) when ZeroMQ refuses.
    pub fn connect(self) -> Result<Connection> {
        self.uploads.check_at_start();
        let (send, recv) = self.specs()?;
        let device = self.device.as_deref().map(SocketSpec::parse).transpose()?;
        let ident = self
            .send_ident
            .clone()
            .or_else(|| send.identity().map(str::to_string))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let reply_as = match &self.recv_ident {
            Some(r) if !r.is_empty() => r.clone(),
            _ => ident.clone(),
        };
        let ctx = zmq::Context::new();
        let sock = if device.is_some() {
            let s = ctx.socket(zmq::DEALER).map_err(zerr("socket"))?;
            s.set_linger(0).map_err(zerr("setsockopt"))?;
            // The device knows a worker by this (`tcp://IDENT@host:port`).
            if let Some(id) = device.as_ref().and_then(SocketSpec::identity) {
                s.set_identity(id.as_bytes()).map_err(zerr("setsockopt"))?;
            }
            s.set_rcvhwm(0).map_err(zerr("setsockopt"))?;
            s.set_sndhwm(0).map_err(zerr("setsockopt"))?;
            // A `READY` is queued only once the device is there, so it says what holds when
            // it arrives (not when this worker started, before the device was up).
            s.set_immediate(true).map_err(zerr("setsockopt"))?;
            s
        } else {
            let s = ctx.socket(zmq::PULL).map_err(zerr("socket"))?;
            s.set_linger(0).map_err(zerr("setsockopt"))?;
            s.set_identity(ident.as_bytes())
                .map_err(zerr("setsockopt"))?;
            // Keep the prefetch small: what sits in our queue is ours to answer at shutdown.
            s.set_rcvhwm(64).map_err(zerr("setsockopt"))?;
            // A broken connection takes its unread messages with it: they came from a server
            // that is gone.
            s.set_immediate(true).map_err(zerr("setsockopt"))?;
            s.set_reconnect_ivl(RECONNECT_IVL_MS)
                .map_err(zerr("setsockopt"))?;
            s
        };
        let pull_monitor = if device.is_none() {
            Some(monitor(&ctx, &sock, "pull")?)
        } else {
            None
        };
        let publ = reply_socket(&recv)?;
        let wake = if device.is_some() {
            static N: AtomicU64 = AtomicU64::new(0);
            let ep = format!("inproc://m2wsgi-wake-{}", N.fetch_add(1, Ordering::Relaxed));
            let rx = ctx.socket(zmq::PULL).map_err(zerr("socket"))?;
            rx.bind(&ep).map_err(zerr("bind"))?;
            let tx = ctx.socket(zmq::PUSH).map_err(zerr("socket"))?;
            tx.set_linger(0).map_err(zerr("setsockopt"))?;
            tx.connect(&ep).map_err(zerr("connect"))?;
            Some((rx, Mutex::new(tx)))
        } else {
            None
        };
        let (wake_rx, wake_tx) = match wake {
            Some((rx, tx)) => (Some(rx), Some(tx)),
            None => (None, None),
        };
        Ok(Connection::from_inner(Arc::new(Inner {
            _ctx: ctx,
            rx: Mutex::new(Rx {
                sock: Some(sock),
                monitor: pull_monitor,
                stale: false,
                serviced: Instant::now(),
                attached: false,
                stopped: false,
                wake: wake_rx,
                announced: None,
                seen: 0,
                next_warn: Instant::now() + SUBSCRIBE_FIRST_WARN,
                bye_sent: None,
                bye_acked: false,
                held: std::collections::VecDeque::new(),
            }),
            publ: Mutex::new(Publisher::new(publ, device.is_some(), recv.to_string())),
            epoch: Epoch::default(),
            wake: wake_tx,
            capacity: AtomicUsize::new(1),
            send,
            recv,
            device,
            ident: Bytes::from(reply_as.into_bytes()),
            uploads: self.uploads,
            flow_control: self.flow_control,
            stream_limits: self.stream_limits,
            limits: self.limits,
        })))
    }
}
