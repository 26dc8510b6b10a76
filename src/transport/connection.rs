//! [`Connection`]: a handler's sockets to Mongrel2 (or to a device), receiving and sending.

use super::builder::ConnectionBuilder;
use super::link::{Epoch, Publisher};
use super::protocol::WorkerMsg;
use crate::codec::response::{encode_ctl, encode_deliver, encode_reply, Ctl};
use crate::error::{Error, Result};
use crate::spec::SocketSpec;
use crate::tnetstring::Limits;
use crate::upload::{StreamLimits, UploadPolicy};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Warn this soon after connecting when Mongrel2 has not subscribed to the reply socket yet,
/// then this often.
pub(super) const SUBSCRIBE_FIRST_WARN: Duration = Duration::from_secs(1);

/// The receiving side, owned by whoever calls `recv` (one thread at a time).
pub(super) struct Rx {
    /// PULL from Mongrel2, or DEALER to a device. `None` once closed.
    pub(super) sock: Option<zmq::Socket>,
    /// Direct mode: the PULL socket's connection events.
    pub(super) monitor: Option<zmq::Socket>,
    /// Direct mode: the PULL socket lost Mongrel2 and has not shaken hands with a new one, so
    /// whatever it still yields came from the old server and is dropped.
    pub(super) stale: bool,
    /// When `Connection::service` last ran.
    pub(super) serviced: Instant,
    /// Whether `sock` is connected yet (it waits for Mongrel2's subscription).
    pub(super) attached: bool,
    /// `stop_receiving` was called.
    pub(super) stopped: bool,
    /// Device mode: woken by `set_capacity` from other threads.
    pub(super) wake: Option<zmq::Socket>,
    /// Device mode: the last `READY` or `BYE` sent, and when.
    pub(super) announced: Option<(WorkerMsg, Instant)>,
    /// Device mode: assigned messages received so far.
    pub(super) seen: u64,
    /// When to warn next that Mongrel2 has not subscribed yet.
    pub(super) next_warn: Instant,
    /// Device mode: when the first `BYE` went out (it is repeated as the heartbeat).
    pub(super) bye_sent: Option<Instant>,
    /// Device mode: the device answered `BYE`: nothing new comes after this.
    pub(super) bye_acked: bool,
    /// Device mode: frames that came while no Mongrel2 could be answered (its subscription
    /// withdrawn, the new one not taken yet). They are handed out once one can be, or dropped
    /// when the device's `R` says they came from the Mongrel2 that went away.
    pub(super) held: std::collections::VecDeque<Bytes>,
}

pub(super) struct Inner {
    pub(super) _ctx: zmq::Context,
    pub(super) rx: Mutex<Rx>,
    pub(super) publ: Mutex<Publisher>,
    /// Advances whenever Mongrel2 is seen to go away (see the `link` module).
    pub(super) epoch: Epoch,
    pub(super) wake: Option<Mutex<zmq::Socket>>,
    pub(super) capacity: AtomicUsize,
    pub(super) send: SocketSpec,
    pub(super) recv: SocketSpec,
    pub(super) device: Option<SocketSpec>,
    pub(super) ident: Bytes,
    pub(super) uploads: UploadPolicy,
    pub(super) flow_control: bool,
    pub(super) stream_limits: StreamLimits,
    pub(super) limits: Limits,
}

/// A handler's link to Mongrel2: PULL from its `send_spec` (or from a [`Device`](crate::Device)), PUB to its
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
    pub(super) inner: Arc<Inner>,
}

impl Connection {
    pub(super) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Starts building a connection that receives requests from `send_spec` (Mongrel2's
    /// `send_spec`: `tcp://127.0.0.1:9999`, `tcp://IDENT@127.0.0.1:9999`, `...#bind`).
    pub fn builder(send_spec: impl Into<String>) -> ConnectionBuilder {
        ConnectionBuilder::new(send_spec.into())
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

    /// A builder for each handler `selector` matches (see
    /// [`load_handlers`](crate::load_handlers)): with a send_ident, one per Mongrel2 server
    /// that routes to this handler. Give the first to [`Server`](crate::Server) and the others
    /// to [`Server::also`](crate::Server::also).
    ///
    /// # Errors
    /// As [`from_config`](Connection::from_config).
    #[cfg(feature = "config-db")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config-db")))]
    pub fn all_from_config(
        db: impl AsRef<std::path::Path>,
        selector: &crate::HandlerSelector,
    ) -> Result<Vec<ConnectionBuilder>> {
        let db = db.as_ref();
        Ok(crate::load_handlers(db, selector)?
            .iter()
            .map(|cfg| Self::builder_from(cfg, db.parent()))
            .collect())
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
                    _ => std::path::PathBuf::from("."),
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

    /// The device's worker endpoint, when requests come through a [`Device`](crate::Device).
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

    /// How slow a streamed upload may be (see [`ConnectionBuilder::stream_limits`]).
    pub fn stream_limits(&self) -> StreamLimits {
        self.inner.stream_limits
    }

    /// Tells a [`Device`](crate::Device) how many more requests this process can start right now (a
    /// [`Server`](crate::Server) keeps it up to date: idle workers minus queued jobs). Without a
    /// device this does nothing. The default is 1.
    pub fn set_capacity(&self, free: usize) {
        let old = self.inner.capacity.swap(free, Ordering::SeqCst);
        if old != free {
            if let Some(tx) = &self.inner.wake {
                let _ = tx.lock().send(&b""[..], zmq::DONTWAIT);
            }
        }
    }

    /// The current epoch: it advances whenever Mongrel2 is seen to restart or reconnect, and a
    /// connection id means the same client only within one epoch. Only the receiving thread
    /// advances it, so right after [`recv`](Connection::recv) it is the epoch of the message
    /// returned.
    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.get()
    }

    /// Sends one raw, already encoded frame to Mongrel2.
    ///
    /// # Errors
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
    pub fn send_frame(&self, frame: Vec<u8>) -> Result<()> {
        self.send_in(None, frame)
    }

    /// Sends a frame written for connections of `epoch` (any epoch when `None`): refused with
    /// [`Error::Closed`](crate::Error::Closed) once the epoch has passed, under the same lock that applies a new
    /// Mongrel2's subscription, so it can never reach a server that reuses those ids.
    pub(crate) fn send_in(&self, epoch: Option<u64>, frame: Vec<u8>) -> Result<()> {
        let mut pb = self.inner.publ.lock();
        if !pb.live {
            // Nobody subscribed yet (or any more): a pure sender learns of a subscriber here.
            pb.service(&self.inner.epoch);
        }
        if epoch.is_some_and(|e| e != self.inner.epoch.get()) {
            return Err(Error::Closed);
        }
        pb.send(frame)
    }

    /// Closes the reply socket, waiting up to a second for replies still queued to reach
    /// Mongrel2 (a process that exits right after would lose them). Later sends fail with
    /// [`Error::Closed`]. [`Server::serve`](crate::Server::serve) calls it when it returns.
    pub fn close_sending(&self) {
        self.inner.publ.lock().close();
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
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
    pub fn reply(&self, conn_id: u64, body: &[u8]) -> Result<()> {
        let mut out = Vec::new();
        encode_reply(&mut out, &self.inner.ident, &[conn_id], body)?;
        self.send_frame(out)
    }

    /// Sends `body` to every connection in `ids`, in as many messages as Mongrel2's 128-target
    /// limit needs.
    ///
    /// # Errors
    /// [`Error::Encode`](crate::Error::Encode) for no ids, [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
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
