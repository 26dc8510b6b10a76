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
/// ZeroMQ's reconnect interval, set explicitly: a new Mongrel2 can reach a socket at the
/// earliest this long after the old one's connection broke.
const RECONNECT_IVL_MS: i32 = 100;
/// The longest a receive wait goes without looking at the reply socket's subscriptions and the
/// request socket's connection events.
const SERVICE_MS: i64 = 100;
/// How often a busy receiver looks at the reply socket's subscriptions.
const SERVICE_EVERY: Duration = Duration::from_millis(10);
/// Behind a device: how long a new Mongrel2's subscription waits for the device to confirm that
/// it dropped everything from the old one (its `R` notice) before it is taken anyway.
const DEVICE_RESET_WAIT: Duration = Duration::from_secs(2);

/// Mongrel2 restarts and reconnects, as the sockets see them.
///
/// Mongrel2 numbers client connections from 1 again when it restarts, so an id from before a
/// restart names some other client afterwards. The connection therefore counts *epochs*: every
/// message is received in the current epoch, per-connection state remembers it, and a reply is
/// sent only while its epoch is still current. The epoch advances whenever Mongrel2 is seen to go
/// away:
///
/// - the reply socket (an XPUB with `ZMQ_IMMEDIATE`, so nothing queued for a dead peer survives
///   into the next connection) reports Mongrel2's subscription withdrawn, or a second one;
/// - the request socket's monitor reports its peer disconnected (direct mode), or the device
///   reports that its own link to Mongrel2 broke (device mode, the `R` notice).
///
/// The reply socket runs in `ZMQ_XPUB_MANUAL` mode: a new Mongrel2's subscription takes effect
/// only when this code applies it, after the epoch has advanced and once the request side can
/// hold nothing more from the old server (direct mode: the request socket has shaken hands with
/// the new one, and frames read before that are dropped; device mode: the device's `R` notice
/// came, which it sends after it dropped its queue). So no byte for an old connection id can
/// reach the new server.
#[allow(unsafe_code)]
fn set_xpub_manual(sock: &mut zmq::Socket) -> Result<()> {
    let on: std::os::raw::c_int = 1;
    // SAFETY: `as_mut_ptr` is the live socket handle owned by `sock`, borrowed mutably for the
    // call; the option value points at a c_int that outlives the call, and its size is passed.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            sock.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_MANUAL as std::os::raw::c_int,
            (&on as *const std::os::raw::c_int).cast(),
            std::mem::size_of::<std::os::raw::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: reads the calling thread's ZeroMQ error number; no pointers involved.
        let errno = unsafe { zmq_sys::zmq_errno() };
        Err(zerr("setsockopt")(zmq::Error::from_raw(errno)))
    }
}

/// Attaches a monitor to `sock` for disconnects and completed handshakes, and returns the PAIR
/// socket its events arrive on.
fn monitor(ctx: &zmq::Context, sock: &zmq::Socket, name: &str) -> Result<zmq::Socket> {
    static N: AtomicU64 = AtomicU64::new(0);
    let ep = format!(
        "inproc://m2wsgi-monitor-{name}-{}",
        N.fetch_add(1, Ordering::Relaxed)
    );
    let events =
        zmq::SocketEvent::DISCONNECTED as i32 | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32;
    sock.monitor(&ep, events).map_err(zerr("monitor"))?;
    let pair = ctx.socket(zmq::PAIR).map_err(zerr("socket"))?;
    pair.set_linger(0).map_err(zerr("setsockopt"))?;
    pair.connect(&ep).map_err(zerr("connect"))?;
    Ok(pair)
}

/// What a socket monitor reported since the last look.
#[derive(Debug, Default, Clone, Copy)]
struct LinkEvents {
    disconnected: bool,
    /// A handshake completed after the last disconnect in this batch.
    connected: bool,
}

/// Reads every pending event from a monitor socket.
fn read_link_events(mon: &zmq::Socket) -> LinkEvents {
    let mut ev = LinkEvents::default();
    while let Ok(parts) = mon.recv_multipart(zmq::DONTWAIT) {
        let Some(head) = parts.first().filter(|h| h.len() >= 2) else {
            continue;
        };
        match zmq::SocketEvent::from_raw(u16::from_ne_bytes([head[0], head[1]])) {
            zmq::SocketEvent::DISCONNECTED => {
                ev.disconnected = true;
                ev.connected = false;
            }
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED => ev.connected = true,
            _ => {}
        }
    }
    ev
}

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
        let mut publ = ctx.socket(zmq::XPUB).map_err(zerr("socket"))?;
        publ.set_linger(LINGER_MS).map_err(zerr("setsockopt"))?;
        publ.set_sndhwm(0).map_err(zerr("setsockopt"))?;
        // Nothing is queued for a Mongrel2 that is not connected, and a broken connection drops
        // what was queued for it: a restarted Mongrel2 must never receive replies written for
        // the connections of the old one.
        publ.set_immediate(true).map_err(zerr("setsockopt"))?;
        publ.set_reconnect_ivl(RECONNECT_IVL_MS)
            .map_err(zerr("setsockopt"))?;
        set_xpub_manual(&mut publ)?;
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
                    monitor: pull_monitor,
                    stale: false,
                    serviced: Instant::now(),
                    attached: false,
                    stopped: false,
                    wake: wake_rx,
                    announced: None,
                    seen: 0,
                    waiting_since: Instant::now(),
                }),
                publ: Mutex::new(Publisher {
                    sock: publ,
                    live: false,
                    pending: None,
                    hold: false,
                    losses: 0,
                    resets: 0,
                    held_since: None,
                }),
                epoch: AtomicU64::new(0),
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
    /// Direct mode: the PULL socket's connection events.
    monitor: Option<zmq::Socket>,
    /// Direct mode: the PULL socket lost Mongrel2 and has not shaken hands with a new one, so
    /// whatever it still yields came from the old server and is dropped.
    stale: bool,
    /// When [`Connection::service`] last ran.
    serviced: Instant,
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

/// The reply socket and what it knows of Mongrel2's subscription. See [`set_xpub_manual`].
struct Publisher {
    sock: zmq::Socket,
    /// A subscription is applied and not withdrawn: a Mongrel2 receives what is sent.
    live: bool,
    /// A subscription read but not applied yet (its topic). Nothing more is read from the
    /// socket until it is applied, since ZeroMQ applies it to the pipe read last.
    pending: Option<Vec<u8>>,
    /// Direct mode: the request socket may still hold messages from an earlier server, so
    /// `pending` waits.
    hold: bool,
    /// Device mode: subscriptions withdrawn (Mongrel2 gone, seen from the reply socket) and `R`
    /// notices from the device (Mongrel2 gone, seen from the device, which dropped what it
    /// held), so far. `pending` waits while the device has not confirmed every loss; the two
    /// arrive in either order.
    losses: u64,
    resets: u64,
    /// Device mode: when the wait for the device's confirmation started (it is given up after
    /// [`DEVICE_RESET_WAIT`]).
    held_since: Option<Instant>,
}

impl Publisher {
    /// Whether a new subscription must wait.
    fn holding(&mut self) -> bool {
        if self.hold {
            return true;
        }
        if self.resets >= self.losses {
            self.held_since = None;
            return false;
        }
        let since = *self.held_since.get_or_insert_with(Instant::now);
        if since.elapsed() < DEVICE_RESET_WAIT {
            return true;
        }
        log::warn!(
            "the device did not confirm within {DEVICE_RESET_WAIT:?} that it dropped the old \
             Mongrel2's messages; taking the new one anyway"
        );
        self.resets = self.losses;
        false
    }
}

struct Inner {
    _ctx: zmq::Context,
    rx: Mutex<Rx>,
    publ: Mutex<Publisher>,
    /// Advances whenever Mongrel2 is seen to go away; see [`set_xpub_manual`].
    epoch: AtomicU64,
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
        self.recv_direct(&mut rx, deadline)
    }

    /// The current epoch: it advances whenever Mongrel2 is seen to restart or reconnect, and a
    /// connection id means the same client only within one epoch. Only the receiving thread
    /// advances it, so right after [`recv`](Connection::recv) it is the epoch of the message
    /// returned.
    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    fn advance_epoch(&self, why: &str) {
        let e = self.inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        log::warn!(
            "{why}: Mongrel2 restarted or reconnected; every client connection from before is \
             treated as gone, and nothing more is sent to them (epoch {e})"
        );
    }

    /// Looks at the request socket's connection events and the reply socket's subscriptions;
    /// advances the epoch and applies a new subscription when it is safe. Called by the
    /// receiving thread.
    fn service(&self, rx: &mut Rx) -> Result<()> {
        rx.serviced = Instant::now();
        let link = rx
            .monitor
            .as_ref()
            .map(read_link_events)
            .unwrap_or_default();
        let mut pb = lock(&self.inner.publ);
        if link.disconnected {
            self.advance_epoch("the request socket lost its connection to Mongrel2");
            rx.stale = true;
            pb.hold = true;
        }
        if link.connected && rx.stale {
            rx.stale = false;
            pb.hold = false;
        }
        self.service_publisher(&mut pb);
        Ok(())
    }

    /// Reads the reply socket's subscription messages (`\x01topic` subscribe, `\x00topic`
    /// unsubscribe) and applies subscriptions, which take effect only then (`ZMQ_XPUB_MANUAL`).
    fn service_publisher(&self, pb: &mut Publisher) {
        loop {
            if let Some(topic) = pb.pending.take() {
                if pb.holding() {
                    pb.pending = Some(topic);
                    return;
                }
                if let Err(e) = pb.sock.set_subscribe(&topic) {
                    log::error!("applying Mongrel2's subscription: {e}");
                }
                pb.live = true;
                log::debug!("Mongrel2 subscribed at {}", self.inner.recv);
                continue;
            }
            let Ok(m) = pb.sock.recv_bytes(zmq::DONTWAIT) else {
                return;
            };
            match m.first() {
                Some(1) => {
                    if pb.live {
                        self.advance_epoch("a second Mongrel2 subscribed to the reply socket");
                    }
                    pb.pending = Some(m[1..].to_vec());
                }
                Some(0) if pb.live => {
                    pb.live = false;
                    self.advance_epoch("Mongrel2 withdrew its subscription to the reply socket");
                    if self.inner.device.is_some() {
                        pb.losses += 1;
                    }
                }
                _ => {}
            }
        }
    }

    fn recv_direct(&self, rx: &mut Rx, deadline: Instant) -> Result<Option<Bytes>> {
        loop {
            // Off the hot path: the monitor is read when it has news, the subscriptions every
            // few milliseconds (a new subscription waits for this code in any case).
            if rx.serviced.elapsed() >= SERVICE_EVERY {
                self.service(rx)?;
            }
            let (Some(pull), Some(mon)) = (rx.sock.as_ref(), rx.monitor.as_ref()) else {
                return Ok(None);
            };
            let mut items = [
                pull.as_poll_item(zmq::POLLIN),
                mon.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, remaining(deadline).min(SERVICE_MS)) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => return Ok(None),
                Err(e) => return Err(zerr("poll")(e)),
            }
            let (data, news) = (items[0].is_readable(), items[1].is_readable());
            if news {
                self.service(rx)?;
            }
            if data {
                let Some(pull) = rx.sock.as_ref() else {
                    return Ok(None);
                };
                match pull.recv_msg(zmq::DONTWAIT) {
                    Ok(m) => {
                        if rx.stale {
                            // A new server's handshake is reported before its first message,
                            // so look once more before judging where this one came from.
                            self.service(rx)?;
                        }
                        if !rx.stale {
                            return Ok(Some(Bytes::from_owner(Frame(m))));
                        }
                        log::debug!("dropping a message from a Mongrel2 that has gone away");
                    }
                    Err(zmq::Error::EAGAIN) => {}
                    Err(zmq::Error::EINTR) => return Ok(None),
                    Err(e) => return Err(zerr("recv")(e)),
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Waits until Mongrel2's SUB socket has subscribed to our reply socket (an XPUB, which sees
    /// subscriptions), or until `deadline`.
    fn wait_subscribed(&self, rx: &mut Rx, deadline: Instant) -> Result<bool> {
        loop {
            {
                let mut pb = lock(&self.inner.publ);
                self.service_publisher(&mut pb);
                if pb.live {
                    return Ok(true);
                }
                let wait = remaining(deadline).min(50);
                match pb.sock.poll(zmq::POLLIN, wait) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(zerr("poll")(e)),
                }
                self.service_publisher(&mut pb);
                if pb.live {
                    return Ok(true);
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
            self.service(rx)?;
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
                    Ok(parts) if parts.len() == 2 && parts[0] == DEVICE_RESET => {
                        // Everything the device sent before this came from a Mongrel2 that is
                        // gone; the device dropped what it still held.
                        self.advance_epoch("the device lost its connection to Mongrel2");
                        let mut pb = lock(&self.inner.publ);
                        // One notice may come before the loss it confirms, no more.
                        pb.resets = (pb.resets + 1).min(pb.losses + 1);
                        self.service_publisher(&mut pb);
                    }
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
        self.send_in(None, frame)
    }

    /// Sends a frame written for connections of `epoch` (any epoch when `None`): refused with
    /// [`Error::Closed`] once the epoch has passed, under the same lock that applies a new
    /// Mongrel2's subscription, so it can never reach a server that reuses those ids.
    pub(crate) fn send_in(&self, epoch: Option<u64>, frame: Vec<u8>) -> Result<()> {
        let mut pb = lock(&self.inner.publ);
        if !pb.live {
            // Nobody subscribed yet (or any more): a pure sender learns of a subscriber here.
            self.service_publisher(&mut pb);
        }
        if epoch.is_some_and(|e| e != self.inner.epoch.load(Ordering::SeqCst)) {
            return Err(Error::Closed);
        }
        pb.sock
            .send(zmq::Message::from(frame), 0)
            .map_err(zerr("send"))
    }

    /// [`reply`](Connection::reply) for a connection of `epoch`.
    pub(crate) fn reply_in(&self, epoch: u64, conn_id: u64, body: &[u8]) -> Result<()> {
        let mut out = Vec::new();
        encode_reply(&mut out, &self.inner.ident, &[conn_id], body)?;
        self.send_in(Some(epoch), out)
    }

    /// [`ctl`](Connection::ctl) for one connection of `epoch`.
    pub(crate) fn ctl_in(&self, epoch: u64, conn_id: u64, ctls: &[Ctl]) -> Result<()> {
        let mut out = Vec::new();
        encode_ctl(&mut out, &self.inner.ident, &[conn_id], ctls)?;
        self.send_in(Some(epoch), out)
    }

    /// Sends `body` verbatim to one client connection.
    ///
    /// This low-level call does not know which Mongrel2 the id came from: after a restart of
    /// Mongrel2 the same id names another client. [`Request`](crate::Request),
    /// [`Responder`](crate::Responder) and [`Server`](crate::Server) check that for you.
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
    /// [`Error::Encode`] for no ids, [`Error::Socket`] when ZeroMQ fails.
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

/// The device's routing flag for "Mongrel2 went away; everything before this was from it".
const DEVICE_RESET: &[u8] = b"R";

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
/// unchanged; or `R` and an empty frame when its link to Mongrel2 broke (Mongrel2 restarted:
/// every connection before it is gone, and the device dropped what it still queued). A worker
/// silent for 3 s is forgotten.
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
    /// The PULL socket's connection events: a broken link to Mongrel2 means every queued
    /// frame and every connection route belongs to a server that is gone.
    monitor: DeviceSocket,
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
        pull.set_immediate(true).map_err(zerr("setsockopt"))?;
        pull.set_reconnect_ivl(RECONNECT_IVL_MS)
            .map_err(zerr("setsockopt"))?;
        let monitor = monitor(&ctx, &pull, "device")?;
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
            monitor: DeviceSocket(monitor),
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
        let (pull, router, mon) = (&self.pull.0, &self.router.0, &self.monitor.0);
        let mut sched = Scheduler::new(WORKER_LIVENESS, STICKY_IDLE);
        let mut attached = false;
        // The PULL socket lost Mongrel2 and has not shaken hands with a new one.
        let mut stale = false;
        let mut last_expire = Instant::now();
        // Looks at the PULL socket's link; on a break, drops everything from the old server and
        // tells every worker (`R`), in order behind the frames they already have.
        let check_link = |sched: &mut Scheduler, stale: &mut bool| {
            let ev = read_link_events(mon);
            if ev.disconnected {
                let dropped = sched.forget_connections();
                log::warn!(
                    "lost the connection to Mongrel2: it restarted or went away; dropped {dropped} \
                     queued message(s) and every connection route, and told the workers"
                );
                for w in sched.worker_ids() {
                    let _ = router
                        .send(&w[..], zmq::SNDMORE | zmq::DONTWAIT)
                        .and_then(|()| router.send(DEVICE_RESET, zmq::SNDMORE | zmq::DONTWAIT))
                        .and_then(|()| router.send(&b""[..], zmq::DONTWAIT));
                }
                *stale = true;
            }
            if ev.connected {
                *stale = false;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            let read_m2 = attached && sched.queued() < DEVICE_QUEUE_MAX;
            let mut items = [
                router.as_poll_item(zmq::POLLIN),
                pull.as_poll_item(if read_m2 {
                    zmq::POLLIN
                } else {
                    zmq::PollEvents::empty()
                }),
                mon.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, 100) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(zerr("poll")(e)),
            }
            check_link(&mut sched, &mut stale);
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
                    // A new server's handshake is reported before its first message.
                    check_link(&mut sched, &mut stale);
                    if stale {
                        log::debug!("dropping a message from a Mongrel2 that has gone away");
                        continue;
                    }
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
