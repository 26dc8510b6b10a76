//! The ZeroMQ side: a PULL socket for requests (or a DEALER to a [`Device`]), an XPUB socket for
//! replies. The only file in the crate that touches ZeroMQ.

use crate::codec::response::{encode_ctl, encode_deliver, encode_reply, Ctl};
use crate::device::{Class, Scheduler, Send as Route};
use crate::error::{Error, Result};
use crate::spec::SocketSpec;
use crate::tnetstring::Limits;
use crate::Message;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Linger on close: replies still queued get this long to leave.
const LINGER_MS: i32 = 1000;
/// How often a worker behind a device repeats its `READY` (the device's liveness signal).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A worker the device has not heard from for this long is forgotten.
const WORKER_LIVENESS: Duration = Duration::from_secs(3);
/// A client connection the device has not seen a message for in this long is forgotten.
const STICKY_IDLE: Duration = Duration::from_secs(600);
/// The device stops reading from Mongrel2 while this many messages wait for a ready worker.
const DEVICE_QUEUE_MAX: usize = 1024;
/// Log a warning this often while Mongrel2 has not subscribed to the reply socket.
const SUBSCRIBE_WARN: Duration = Duration::from_secs(10);

fn zerr(op: &'static str) -> impl Fn(zmq::Error) -> Error {
    move |e| Error::Socket {
        op,
        errno: e.to_raw(),
        message: e.message().to_string(),
    }
}

/// Where Mongrel2 writes async uploads, so the handler can tell a genuine upload from a client
/// header that merely claims to be one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadPolicy {
    /// The directory of Mongrel2's `upload.temp_store`, as Mongrel2 sees it (inside its chroot),
    /// for example `/tmp`. `None` refuses every async upload with 413.
    pub upload_dir: Option<PathBuf>,
    /// Mongrel2's chroot on this host (`/` when it does not chroot). Paths in messages are
    /// inside it.
    pub chroot: PathBuf,
}

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
    limits: Limits,
}

impl ConnectionBuilder {
    /// Mongrel2's `recv_spec`, where replies go. Default: the host of `send_spec` with the port
    /// one lower (as the seed m2wsgi did).
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

    /// Receive requests from a [`Device`] at `endpoint` (its worker socket, such as
    /// `tcp://127.0.0.1:9997`) instead of pulling from Mongrel2's `send_spec` directly. Replies
    /// still go straight to Mongrel2's `recv_spec`. A [`Server`](crate::Server) works unchanged;
    /// it tells the device how many requests it can start
    /// ([`set_capacity`](Connection::set_capacity)).
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
    /// [`Error::BadSpec`] for an invalid spec, [`Error::Socket`] when ZeroMQ refuses.
    pub fn connect(self) -> Result<Connection> {
        let send = SocketSpec::parse(&self.send_spec)?;
        let recv = match &self.recv_spec {
            Some(s) => SocketSpec::parse(s)?,
            None => crate::default_recv_spec(&send)?,
        };
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
            s.set_rcvhwm(0).map_err(zerr("setsockopt"))?;
            s.set_sndhwm(0).map_err(zerr("setsockopt"))?;
            s
        } else {
            let s = ctx.socket(zmq::PULL).map_err(zerr("socket"))?;
            s.set_linger(0).map_err(zerr("setsockopt"))?;
            s.set_identity(ident.as_bytes())
                .map_err(zerr("setsockopt"))?;
            // Keep the prefetch small: what sits in our queue is ours to answer at shutdown.
            s.set_rcvhwm(64).map_err(zerr("setsockopt"))?;
            s
        };
        let publ = ctx.socket(zmq::XPUB).map_err(zerr("socket"))?;
        publ.set_linger(LINGER_MS).map_err(zerr("setsockopt"))?;
        publ.set_sndhwm(0).map_err(zerr("setsockopt"))?;
        if let Some(id) = recv.identity() {
            publ.set_identity(id.as_bytes())
                .map_err(zerr("setsockopt"))?;
        }
        attach(&publ, &recv)?;
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
        Ok(Connection {
            inner: Arc::new(Inner {
                _ctx: ctx,
                rx: Mutex::new(Rx {
                    sock: Some(sock),
                    attached: false,
                    stopped: false,
                    wake: wake_rx,
                    announced: None,
                    seen: 0,
                    waiting_since: Instant::now(),
                }),
                publ: Mutex::new(publ),
                wake: wake_tx,
                capacity: AtomicUsize::new(1),
                send,
                recv,
                device,
                ident: Bytes::from(reply_as.into_bytes()),
                uploads: self.uploads,
                flow_control: self.flow_control,
                limits: self.limits,
            }),
        })
    }
}

fn attach(s: &zmq::Socket, spec: &SocketSpec) -> Result<()> {
    if spec.is_bind() {
        s.bind(spec.endpoint()).map_err(zerr("bind"))
    } else {
        s.connect(spec.endpoint()).map_err(zerr("connect"))
    }
}

/// The receiving side, owned by whoever calls `recv` (one thread at a time).
struct Rx {
    /// PULL from Mongrel2, or DEALER to a device. `None` once closed.
    sock: Option<zmq::Socket>,
    /// Whether `sock` is connected yet (it waits for Mongrel2's subscription).
    attached: bool,
    /// `stop_receiving` was called.
    stopped: bool,
    /// Device mode: woken by `set_capacity` from other threads.
    wake: Option<zmq::Socket>,
    /// Device mode: the last `READY` sent (capacity, seen) and when.
    announced: Option<(usize, u64, Instant)>,
    /// Device mode: assigned messages received so far.
    seen: u64,
    waiting_since: Instant,
}

struct Inner {
    _ctx: zmq::Context,
    rx: Mutex<Rx>,
    publ: Mutex<zmq::Socket>,
    wake: Option<Mutex<zmq::Socket>>,
    capacity: AtomicUsize,
    send: SocketSpec,
    recv: SocketSpec,
    device: Option<SocketSpec>,
    ident: Bytes,
    uploads: UploadPolicy,
    flow_control: bool,
    limits: Limits,
}

/// A handler's link to Mongrel2: PULL from its `send_spec` (or from a [`Device`]), PUB to its
/// `recv_spec`.
///
/// `Connection` is a cheap handle (`Clone`, `Send`, `Sync`): every clone shares the same
/// sockets. Replies may be sent from any thread. Receiving is meant for one thread at a time
/// (a [`Server`](crate::Server) does it for you).
///
/// ```no_run
/// use m2wsgi::Connection;
/// use std::time::Duration;
///
/// let conn = Connection::builder("tcp://127.0.0.1:9999")
///     .recv_spec("tcp://127.0.0.1:9998")
///     .send_ident("54c6755b-9628-40a4-9a2d-cc82a816345e")
///     .connect()?;
/// loop {
///     match conn.recv(Duration::from_millis(500)) {
///         Ok(Some(msg)) if msg.is_request() => {
///             conn.reply(msg.conn_id(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")?;
///         }
///         Ok(_) => {}                             // a timeout, or a notice
///         Err(m2wsgi::Error::Parse(_)) => {}      // a malformed frame: skip it
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok::<(), m2wsgi::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remaining(deadline: Instant) -> i64 {
    let d = deadline.saturating_duration_since(Instant::now());
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Connection {
    /// Starts building a connection that receives requests from `send_spec` (Mongrel2's
    /// `send_spec`: `tcp://127.0.0.1:9999`, `tcp://IDENT@127.0.0.1:9999`, `...#bind`).
    pub fn builder(send_spec: impl Into<String>) -> ConnectionBuilder {
        ConnectionBuilder {
            send_spec: send_spec.into(),
            recv_spec: None,
            send_ident: None,
            recv_ident: None,
            device: None,
            uploads: UploadPolicy {
                upload_dir: None,
                chroot: PathBuf::from("/"),
            },
            flow_control: false,
            limits: Limits::default(),
        }
    }

    /// A builder filled from Mongrel2's config database: send and receive specs and idents,
    /// the upload directory (from `upload.temp_store`), the chroot, and `download.flow_control`.
    ///
    /// A relative chroot (`./`, what `m2sh` configs usually say) is taken relative to the
    /// directory holding `db`, since Mongrel2 is normally started there. When Mongrel2 does not
    /// run as root it does not chroot: then call `.chroot("/")` on the builder.
    ///
    /// ```no_run
    /// use m2wsgi::{Connection, HandlerSelector};
    ///
    /// let conn = Connection::from_config("config.sqlite", &HandlerSelector::RoutePath("/app".into()))?
    ///     .connect()?;
    /// # Ok::<(), m2wsgi::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`load_handler`](crate::load_handler).
    #[cfg(feature = "config-db")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config-db")))]
    pub fn from_config(
        db: impl AsRef<std::path::Path>,
        selector: &crate::HandlerSelector,
    ) -> Result<ConnectionBuilder> {
        let db = db.as_ref();
        let cfg = crate::load_handler(db, selector)?;
        Ok(Self::builder_from(&cfg, db.parent()))
    }

    /// A builder from an already loaded [`HandlerConfig`](crate::HandlerConfig); a relative
    /// chroot is taken relative to `base` (the current directory when `None`).
    #[cfg(feature = "config-db")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config-db")))]
    pub fn builder_from(
        cfg: &crate::HandlerConfig,
        base: Option<&std::path::Path>,
    ) -> ConnectionBuilder {
        let mut b = Self::builder(cfg.send_spec.clone())
            .recv_spec(cfg.recv_spec.clone())
            .flow_control(cfg.flow_control);
        if !cfg.send_ident.is_empty() {
            b = b.send_ident(cfg.send_ident.clone());
        }
        if !cfg.recv_ident.is_empty() {
            b = b.recv_ident(cfg.recv_ident.clone());
        }
        if let Some(dir) = &cfg.upload_dir {
            b = b.upload_dir(dir.clone());
        }
        if let Some(root) = &cfg.chroot {
            let root = if root.is_absolute() {
                root.clone()
            } else {
                let base = match base {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let joined = base.join(root);
                std::fs::canonicalize(&joined).unwrap_or(joined)
            };
            b = b.chroot(root);
        }
        b
    }

    /// The sender id replies carry (`recv_ident` when set, else `send_ident`).
    pub fn sender_id(&self) -> &Bytes {
        &self.inner.ident
    }

    /// The request socket's spec (Mongrel2's `send_spec`).
    pub fn send_spec(&self) -> &SocketSpec {
        &self.inner.send
    }

    /// The reply socket's spec.
    pub fn recv_spec(&self) -> &SocketSpec {
        &self.inner.recv
    }

    /// The device's worker endpoint, when requests come through a [`Device`].
    pub fn device_spec(&self) -> Option<&SocketSpec> {
        self.inner.device.as_ref()
    }

    /// Where genuine async uploads live.
    pub fn upload_policy(&self) -> &UploadPolicy {
        &self.inner.uploads
    }

    /// Whether the builder declared `download.flow_control=1`.
    pub fn flow_control(&self) -> bool {
        self.inner.flow_control
    }

    /// Tells a [`Device`] how many more requests this process can start right now (a
    /// [`Server`](crate::Server) keeps it up to date: idle workers minus queued jobs). Without a
    /// device this does nothing. The default is 1.
    pub fn set_capacity(&self, free: usize) {
        let old = self.inner.capacity.swap(free, Ordering::SeqCst);
        if old != free {
            if let Some(tx) = &self.inner.wake {
                let _ = lock(tx).send(&b""[..], zmq::DONTWAIT);
            }
        }
    }

    /// Waits up to `timeout` for the next message and decodes it.
    ///
    /// Returns `Ok(None)` on timeout, when interrupted by a signal, and once
    /// [`stop_receiving`](Connection::stop_receiving) has been called and the prefetched
    /// messages are drained; the caller then checks its stop flag. A thread is never stuck here
    /// longer than `timeout`.
    ///
    /// # Errors
    /// [`Error::Parse`] for a malformed frame (the frame is consumed: call again for the next),
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Message>> {
        match self.recv_frame(timeout)? {
            Some(frame) => Ok(Some(Message::decode_with(frame, &self.inner.limits)?)),
            None => Ok(None),
        }
    }

    /// Like [`recv`](Connection::recv), without decoding.
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn recv_frame(&self, timeout: Duration) -> Result<Option<Bytes>> {
        let deadline = Instant::now() + timeout;
        let mut rx = lock(&self.inner.rx);
        if rx.sock.is_none() {
            return Ok(None);
        }
        if !rx.attached {
            if rx.stopped || !self.wait_subscribed(&mut rx, deadline)? {
                return Ok(None);
            }
            let spec = self.inner.device.as_ref().unwrap_or(&self.inner.send);
            if let Some(s) = rx.sock.as_ref() {
                attach(s, spec)?;
            }
            rx.attached = true;
        }
        if self.inner.device.is_some() {
            return self.recv_device(&mut rx, deadline);
        }
        let Some(pull) = rx.sock.as_ref() else {
            return Ok(None);
        };
        match pull.poll(zmq::POLLIN, remaining(deadline)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return Ok(None),
            Err(e) => return Err(zerr("poll")(e)),
        }
        match pull.recv_msg(zmq::DONTWAIT) {
            Ok(m) => Ok(Some(Bytes::from_owner(Frame(m)))),
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => Ok(None),
            Err(e) => Err(zerr("recv")(e)),
        }
    }

    /// Waits until Mongrel2's SUB socket has subscribed to our reply socket (an XPUB, which sees
    /// subscriptions), or until `deadline`.
    fn wait_subscribed(&self, rx: &mut Rx, deadline: Instant) -> Result<bool> {
        loop {
            {
                let publ = lock(&self.inner.publ);
                let wait = remaining(deadline).min(50);
                match publ.poll(zmq::POLLIN, wait) {
                    Ok(n) if n > 0 => {
                        while let Ok(m) = publ.recv_msg(zmq::DONTWAIT) {
                            if m.first() == Some(&1) {
                                log::debug!("Mongrel2 subscribed at {}", self.inner.recv);
                                return Ok(true);
                            }
                        }
                    }
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(zerr("poll")(e)),
                }
            }
            if rx.waiting_since.elapsed() >= SUBSCRIBE_WARN {
                rx.waiting_since = Instant::now();
                log::warn!(
                    "Mongrel2 has not subscribed to the reply socket {} yet: is it running, and \
                     is this its recv_spec? Not taking requests until it does.",
                    self.inner.recv
                );
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    fn announce(&self, rx: &mut Rx, force: bool) -> Result<()> {
        if rx.stopped {
            return Ok(());
        }
        let cap = self.inner.capacity.load(Ordering::SeqCst);
        let due = match rx.announced {
            None => true,
            Some((c, s, at)) => force || c != cap || s != rx.seen || at.elapsed() >= HEARTBEAT,
        };
        if !due {
            return Ok(());
        }
        if let Some(sock) = rx.sock.as_ref() {
            let msg = format!("READY {cap} {}", rx.seen);
            match sock.send(msg.as_bytes(), zmq::DONTWAIT) {
                Ok(()) | Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(zerr("send")(e)),
            }
        }
        rx.announced = Some((cap, rx.seen, Instant::now()));
        Ok(())
    }

    fn recv_device(&self, rx: &mut Rx, deadline: Instant) -> Result<Option<Bytes>> {
        loop {
            self.announce(rx, false)?;
            let (Some(sock), Some(wake)) = (rx.sock.as_ref(), rx.wake.as_ref()) else {
                return Ok(None);
            };
            let wait = remaining(deadline).min(HEARTBEAT.as_millis() as i64);
            let mut items = [
                sock.as_poll_item(zmq::POLLIN),
                wake.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, wait) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(zerr("poll")(e)),
            }
            let (data, woken) = (items[0].is_readable(), items[1].is_readable());
            if woken {
                while wake.recv_msg(zmq::DONTWAIT).is_ok() {}
            }
            if data {
                match sock.recv_multipart(zmq::DONTWAIT) {
                    Ok(mut parts) if parts.len() == 2 => {
                        let frame = parts.pop().unwrap_or_default();
                        if parts[0] == b"A" {
                            rx.seen += 1;
                        }
                        return Ok(Some(Bytes::from(frame)));
                    }
                    Ok(parts) => {
                        log::warn!("ignoring a {}-part message from the device", parts.len())
                    }
                    Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(zerr("recv")(e)),
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Stops taking new requests: disconnects (or unbinds) the request socket so Mongrel2 sends
    /// the next ones to other handlers (behind a [`Device`]: tells the device, which then sends
    /// only messages for clients this process already serves). Messages already received stay
    /// readable: keep calling [`recv`](Connection::recv) until it returns `None`.
    pub fn stop_receiving(&self) {
        let mut rx = lock(&self.inner.rx);
        if rx.stopped {
            return;
        }
        rx.stopped = true;
        if !rx.attached {
            return;
        }
        let Some(sock) = rx.sock.as_ref() else {
            return;
        };
        if self.inner.device.is_some() {
            let _ = sock.send(&b"BYE"[..], zmq::DONTWAIT);
            return;
        }
        let spec = &self.inner.send;
        let r = if spec.is_bind() {
            sock.unbind(spec.endpoint())
        } else {
            sock.disconnect(spec.endpoint())
        };
        if let Err(e) = r {
            log::debug!("disconnecting {}: {e}", spec.endpoint());
        }
    }

    /// Closes the request socket for good; later `recv` calls return `None`.
    pub fn close_receiving(&self) {
        let mut rx = lock(&self.inner.rx);
        rx.stopped = true;
        rx.sock.take();
    }

    /// Sends one raw, already encoded frame to Mongrel2.
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn send_frame(&self, frame: Vec<u8>) -> Result<()> {
        lock(&self.inner.publ)
            .send(zmq::Message::from(frame), 0)
            .map_err(zerr("send"))
    }

    /// Sends `body` verbatim to one client connection.
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn reply(&self, conn_id: u64, body: &[u8]) -> Result<()> {
        let mut out = Vec::new();
        encode_reply(&mut out, &self.inner.ident, &[conn_id], body)?;
        self.send_frame(out)
    }

    /// Sends `body` to every connection in `ids`, in as many messages as Mongrel2's 128-target
    /// limit needs.
    ///
    /// # Errors
    /// [`Error::InvalidResponse`] for no ids, [`Error::Socket`] when ZeroMQ fails.
    pub fn deliver(&self, ids: &[u64], body: &[u8]) -> Result<()> {
        for frame in encode_deliver(&self.inner.ident, ids, body)? {
            self.send_frame(frame)?;
        }
        Ok(())
    }

    /// Tells Mongrel2 to close these client connections (after writing what is queued).
    ///
    /// # Errors
    /// As [`deliver`](Connection::deliver).
    pub fn close(&self, ids: &[u64]) -> Result<()> {
        self.deliver(ids, b"")
    }

    /// Sends an `X ctl` message (credits, keep-alive, cancel) for these connections.
    ///
    /// # Errors
    /// As [`deliver`](Connection::deliver).
    pub fn ctl(&self, ids: &[u64], ctls: &[Ctl]) -> Result<()> {
        for chunk in ids.chunks(crate::codec::response::MAX_TARGETS) {
            let mut out = Vec::new();
            encode_ctl(&mut out, &self.inner.ident, chunk, ctls)?;
            self.send_frame(out)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("send", &self.send)
            .field("recv", &self.recv)
            .field("device", &self.device)
            .field("ident", &self.ident)
            .field("uploads", &self.uploads)
            .field("flow_control", &self.flow_control)
            .finish_non_exhaustive()
    }
}

/// A received ZeroMQ message, owned by a [`Bytes`] without a copy.
struct Frame(zmq::Message);

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A ready-based dispatcher between one Mongrel2 handler and several worker processes (the
/// `m2wsgi-device` command runs one).
///
/// Mongrel2 PUSHes requests round-robin to whoever is connected, busy or not, and keeps pushing
/// to a handler that hangs. A device instead PULLs everything from Mongrel2's `send_spec` and
/// hands each new client connection to the worker process that has a free thread and was served
/// least recently; the connection then stays with that worker until it closes. Workers connect
/// with [`ConnectionBuilder::device`] and reply straight to Mongrel2's `recv_spec`.
///
/// ```text
///   Mongrel2 --PUSH--> [PULL  Device  ROUTER] <--DEALER-- worker 1 --PUB--> Mongrel2
///                                             <--DEALER-- worker 2 --PUB--> Mongrel2
/// ```
///
/// Worker protocol (DEALER ↔ ROUTER, one frame each way): a worker sends `READY <free> <seen>`
/// (free request slots; assigned messages received so far) on start, on every change and every
/// 500 ms as a heartbeat, and `BYE` when it drains. The device sends two frames: `A` (a new
/// connection assigned to it) or `S` (a connection it already holds), then Mongrel2's frame
/// unchanged. A worker silent for 3 s is forgotten.
///
/// ```no_run
/// use m2wsgi::Device;
/// use std::sync::{atomic::AtomicBool, Arc};
///
/// let device = Device::bind("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9997")?;
/// device.run(&Arc::new(AtomicBool::new(false)))?;
/// # Ok::<(), m2wsgi::Error>(())
/// ```
pub struct Device {
    _ctx: zmq::Context,
    pull: DeviceSocket,
    router: DeviceSocket,
    send: SocketSpec,
    endpoint: String,
}

struct DeviceSocket(zmq::Socket);

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("send", &self.send)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Binds the worker socket at `workers` (a ROUTER; `tcp://127.0.0.1:*` picks a free port,
    /// see [`endpoint`](Device::endpoint)) and prepares the PULL socket for Mongrel2's
    /// `send_spec`. The PULL socket connects when the first worker says `READY`, so a device
    /// with no workers takes no requests.
    ///
    /// # Errors
    /// [`Error::BadSpec`] for an invalid spec, [`Error::Socket`] when ZeroMQ refuses.
    pub fn bind(send_spec: &str, workers: &str) -> Result<Device> {
        let send = SocketSpec::parse(send_spec)?;
        let wspec = SocketSpec::parse(workers)?;
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).map_err(zerr("socket"))?;
        pull.set_linger(0).map_err(zerr("setsockopt"))?;
        pull.set_rcvhwm(1000).map_err(zerr("setsockopt"))?;
        if let Some(id) = send.identity() {
            pull.set_identity(id.as_bytes())
                .map_err(zerr("setsockopt"))?;
        }
        let router = ctx.socket(zmq::ROUTER).map_err(zerr("socket"))?;
        router.set_linger(0).map_err(zerr("setsockopt"))?;
        router
            .set_router_mandatory(true)
            .map_err(zerr("setsockopt"))?;
        router.set_sndhwm(0).map_err(zerr("setsockopt"))?;
        router.set_rcvhwm(0).map_err(zerr("setsockopt"))?;
        if wspec.is_bind() || !workers.contains("#connect") {
            router.bind(wspec.endpoint()).map_err(zerr("bind"))?;
        } else {
            router.connect(wspec.endpoint()).map_err(zerr("connect"))?;
        }
        let endpoint = router
            .get_last_endpoint()
            .map_err(zerr("getsockopt"))?
            .unwrap_or_else(|_| wspec.endpoint().to_string());
        Ok(Device {
            _ctx: ctx,
            pull: DeviceSocket(pull),
            router: DeviceSocket(router),
            send,
            endpoint,
        })
    }

    /// The worker endpoint actually bound (with the real port when `*` was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Routes messages until `stop` is set (checked every 100 ms), then returns.
    ///
    /// # Errors
    /// [`Error::Socket`] when ZeroMQ fails.
    pub fn run(&self, stop: &AtomicBool) -> Result<()> {
        let (pull, router) = (&self.pull.0, &self.router.0);
        let mut sched = Scheduler::new(WORKER_LIVENESS, STICKY_IDLE);
        let mut attached = false;
        let mut last_expire = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let read_m2 = attached && sched.queued() < DEVICE_QUEUE_MAX;
            let mut items = [
                router.as_poll_item(zmq::POLLIN),
                pull.as_poll_item(if read_m2 {
                    zmq::POLLIN
                } else {
                    zmq::PollEvents::empty()
                }),
            ];
            match zmq::poll(&mut items, 100) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(zerr("poll")(e)),
            }
            let now = Instant::now();
            if items[0].is_readable() {
                while let Ok(parts) = router.recv_multipart(zmq::DONTWAIT) {
                    let [id, body] = parts.as_slice() else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(body);
                    let mut words = text.split_ascii_whitespace();
                    match (words.next(), words.next(), words.next()) {
                        (Some("READY"), Some(free), Some(seen)) => {
                            let free = free.parse().unwrap_or(0);
                            let seen = seen.parse().unwrap_or(0);
                            if sched.live_workers() == 0 {
                                log::info!("worker connected");
                            }
                            sched.ready(id, free, seen, now);
                        }
                        (Some("BYE"), _, _) => sched.bye(id),
                        _ => log::warn!("ignoring a message from a worker: {text:?}"),
                    }
                }
                if !attached && sched.live_workers() > 0 {
                    attach(pull, &self.send)?;
                    attached = true;
                    log::info!("taking requests from Mongrel2 at {}", self.send);
                }
            }
            if read_m2 && items[1].is_readable() {
                for _ in 0..256 {
                    let frame = match pull.recv_msg(zmq::DONTWAIT) {
                        Ok(m) => Bytes::from_owner(Frame(m)),
                        Err(_) => break,
                    };
                    let Some((conn, class)) = classify(&frame) else {
                        log::warn!("dropping a malformed message from Mongrel2");
                        continue;
                    };
                    if let Route::To { worker, assigned } =
                        sched.route(conn, class, frame.clone(), now)
                    {
                        forward(router, &mut sched, &worker, assigned, conn, frame)?;
                    }
                }
            }
            while let Some((worker, assigned, frame)) = sched.next_queued(now) {
                let conn = conn_id_of(&frame);
                forward(router, &mut sched, &worker, assigned, conn, frame)?;
            }
            if now.duration_since(last_expire) >= Duration::from_millis(500) {
                last_expire = now;
                for _ in sched.expire(now) {
                    log::warn!("a worker went silent; forgetting it and its connections");
                }
            }
        }
        Ok(())
    }
}

/// The connection id and routing class of a Mongrel2 frame, without decoding the headers:
/// `SENDER SP CONN_ID SP PATH SP ...`, where PATH `@*` marks a notice.
fn classify(frame: &[u8]) -> Option<(u64, Class)> {
    let mut fields = frame.splitn(4, |&b| b == b' ');
    let (_, id, path) = (fields.next()?, fields.next()?, fields.next()?);
    let conn = std::str::from_utf8(id).ok()?.parse().ok()?;
    let class = if path != b"@*" {
        Class::Work
    } else if frame.windows(16).any(|w| w == b"DOWNLOAD_CREDITS") {
        Class::Credits
    } else {
        Class::Disconnect
    };
    Some((conn, class))
}

fn conn_id_of(frame: &[u8]) -> u64 {
    frame
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
        .unwrap_or(0)
}

fn forward(
    router: &zmq::Socket,
    sched: &mut Scheduler,
    worker: &[u8],
    assigned: bool,
    conn: u64,
    frame: Bytes,
) -> Result<()> {
    let flag: &[u8] = if assigned { b"A" } else { b"S" };
    let sent = router
        .send(worker, zmq::SNDMORE | zmq::DONTWAIT)
        .and_then(|()| router.send(flag, zmq::SNDMORE | zmq::DONTWAIT))
        .and_then(|()| router.send(&frame[..], zmq::DONTWAIT));
    match sent {
        Ok(()) => Ok(()),
        Err(zmq::Error::EHOSTUNREACH) | Err(zmq::Error::EAGAIN) => {
            log::warn!("a worker vanished; forgetting it");
            sched.remove(worker);
            if assigned {
                sched.requeue(conn, frame);
            }
            Ok(())
        }
        Err(e) => Err(zerr("send")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn connection_is_send_and_sync() {
        assert_send_sync::<Connection>();
    }

    #[test]
    fn round_trip_against_a_fake_mongrel2() {
        // A stand-in for Mongrel2 (PUSH bound at send_spec, SUB bound at recv_spec) over TCP on
        // loopback with port 0, so the test never collides with another.
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.bind("tcp://127.0.0.1:*").unwrap();
        let sub = ctx.socket(zmq::SUB).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.bind("tcp://127.0.0.1:*").unwrap();
        let send_ep = push.get_last_endpoint().unwrap().unwrap();
        let recv_ep = sub.get_last_endpoint().unwrap().unwrap();
        let conn = Connection::builder(send_ep)
            .recv_spec(recv_ep)
            .send_ident("test-ident")
            .connect()
            .unwrap();
        // Like Mongrel2, keep using the SUB socket (a bound socket attaches new peers only when
        // its owner calls into it), and collect what arrives.
        let subscriber = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if sub.poll(zmq::POLLIN, 20).unwrap() > 0 {
                    return Some(sub.recv_bytes(0).unwrap());
                }
            }
            None
        });
        // The PULL socket connects only once the SUB has subscribed: until then a PUSH has no
        // peer and blocks, so send from another thread.
        let frame = std::fs::read("tests/data/get_simple.bin").unwrap();
        let sender = std::thread::spawn(move || {
            push.send(frame, 0).unwrap();
            push.send(&b"garbage"[..], 0).unwrap();
            push
        });
        let msg = conn
            .recv(Duration::from_secs(5))
            .unwrap()
            .expect("a message");
        assert_eq!(msg.conn_id(), 1);
        let _push = sender.join().unwrap();
        // Garbage is a typed error, and the next frame still arrives.
        assert!(matches!(
            conn.recv(Duration::from_secs(5)),
            Err(Error::Parse(_))
        ));
        assert!(conn.recv(Duration::from_millis(50)).unwrap().is_none());
        // The subscription was seen before any request came in, so the first reply arrives.
        conn.reply(1, b"hello").unwrap();
        assert_eq!(
            subscriber.join().unwrap().as_deref(),
            Some(&b"test-ident 1:1, hello"[..])
        );
        conn.stop_receiving();
        assert!(conn.recv(Duration::from_millis(10)).unwrap().is_none());
    }
}
