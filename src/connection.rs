//! The ZeroMQ side: a PULL socket for requests, a PUB socket for replies. The only file in the
//! crate that touches ZeroMQ.

use crate::codec::response::{encode_ctl, encode_deliver, encode_reply, Ctl};
use crate::error::{Error, Result};
use crate::spec::SocketSpec;
use crate::tnetstring::Limits;
use crate::Message;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Linger on close: replies still queued get this long to leave.
const LINGER_MS: i32 = 1000;

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
    /// # Errors
    /// [`Error::BadSpec`] for an invalid spec, [`Error::Socket`] when ZeroMQ refuses.
    pub fn connect(self) -> Result<Connection> {
        let send = SocketSpec::parse(&self.send_spec)?;
        let recv = match &self.recv_spec {
            Some(s) => SocketSpec::parse(s)?,
            None => crate::default_recv_spec(&send)?,
        };
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
        let pull = ctx.socket(zmq::PULL).map_err(zerr("socket"))?;
        pull.set_linger(0).map_err(zerr("setsockopt"))?;
        pull.set_identity(ident.as_bytes())
            .map_err(zerr("setsockopt"))?;
        // Keep the prefetch small: what sits in our queue is ours to answer at shutdown.
        pull.set_rcvhwm(64).map_err(zerr("setsockopt"))?;
        let publ = ctx.socket(zmq::PUB).map_err(zerr("socket"))?;
        publ.set_linger(LINGER_MS).map_err(zerr("setsockopt"))?;
        publ.set_sndhwm(0).map_err(zerr("setsockopt"))?;
        if let Some(id) = recv.identity() {
            publ.set_identity(id.as_bytes()).map_err(zerr("setsockopt"))?;
        }
        attach(&pull, &send)?;
        attach(&publ, &recv)?;
        Ok(Connection {
            inner: Arc::new(Inner {
                _ctx: ctx,
                pull: Mutex::new(Some(pull)),
                publ: Mutex::new(publ),
                send,
                recv,
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

struct Inner {
    _ctx: zmq::Context,
    pull: Mutex<Option<zmq::Socket>>,
    publ: Mutex<zmq::Socket>,
    send: SocketSpec,
    recv: SocketSpec,
    ident: Bytes,
    uploads: UploadPolicy,
    flow_control: bool,
    limits: Limits,
}

/// A handler's link to Mongrel2: PULL from its `send_spec`, PUB to its `recv_spec`.
///
/// `Connection` is a cheap handle (`Clone`, `Send`, `Sync`): every clone shares the same two
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
/// while let Some(msg) = conn.recv(Duration::from_millis(500))? {
///     if msg.is_request() {
///         conn.reply(msg.conn_id(), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")?;
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

impl Connection {
    /// Starts building a connection that receives requests from `send_spec` (Mongrel2's
    /// `send_spec`: `tcp://127.0.0.1:9999`, `tcp://IDENT@127.0.0.1:9999`, `...#bind`).
    pub fn builder(send_spec: impl Into<String>) -> ConnectionBuilder {
        ConnectionBuilder {
            send_spec: send_spec.into(),
            recv_spec: None,
            send_ident: None,
            recv_ident: None,
            uploads: UploadPolicy {
                upload_dir: None,
                chroot: PathBuf::from("/"),
            },
            flow_control: false,
            limits: Limits::default(),
        }
    }

    /// The sender id replies carry (`recv_ident` when set, else `send_ident`).
    pub fn sender_id(&self) -> &Bytes {
        &self.inner.ident
    }

    /// The request socket's spec.
    pub fn send_spec(&self) -> &SocketSpec {
        &self.inner.send
    }

    /// The reply socket's spec.
    pub fn recv_spec(&self) -> &SocketSpec {
        &self.inner.recv
    }

    /// Where genuine async uploads live.
    pub fn upload_policy(&self) -> &UploadPolicy {
        &self.inner.uploads
    }

    /// Whether the builder declared `download.flow_control=1`.
    pub fn flow_control(&self) -> bool {
        self.inner.flow_control
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
        let guard = lock(&self.inner.pull);
        let Some(pull) = guard.as_ref() else {
            return Ok(None);
        };
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        match pull.poll(zmq::POLLIN, ms) {
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

    /// Stops taking new requests: disconnects (or unbinds) the request socket so Mongrel2 sends
    /// the next ones to other handlers. Messages ZeroMQ already prefetched stay readable:
    /// keep calling [`recv`](Connection::recv) until it returns `None` with a zero timeout.
    pub fn stop_receiving(&self) {
        let guard = lock(&self.inner.pull);
        if let Some(pull) = guard.as_ref() {
            let spec = &self.inner.send;
            let r = if spec.is_bind() {
                pull.unbind(spec.endpoint())
            } else {
                pull.disconnect(spec.endpoint())
            };
            if let Err(e) = r {
                log::debug!("disconnecting {}: {e}", spec.endpoint());
            }
        }
    }

    /// Closes the request socket for good; later `recv` calls return `None`.
    pub fn close_receiving(&self) {
        lock(&self.inner.pull).take();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn connection_is_send_and_sync() {
        assert_send_sync::<Connection>();
    }

    #[test]
    fn inproc_round_trip_against_a_fake_mongrel2() {
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
        let frame = std::fs::read("tests/data/get_simple.bin").unwrap();
        push.send(frame, 0).unwrap();
        let msg = conn.recv(Duration::from_secs(5)).unwrap().expect("a message");
        assert_eq!(msg.conn_id(), 1);
        // Garbage is a typed error, and the next frame still arrives.
        push.send(&b"garbage"[..], 0).unwrap();
        assert!(matches!(
            conn.recv(Duration::from_secs(5)),
            Err(Error::Parse(_))
        ));
        assert!(conn.recv(Duration::from_millis(50)).unwrap().is_none());
        // PUB/SUB: retry until the subscription has propagated.
        let mut got = None;
        for _ in 0..100 {
            conn.reply(1, b"hello").unwrap();
            if sub.poll(zmq::POLLIN, 50).unwrap() > 0 {
                got = Some(sub.recv_bytes(0).unwrap());
                break;
            }
        }
        assert_eq!(got.unwrap(), b"test-ident 1:1, hello");
        conn.stop_receiving();
        assert!(conn.recv(Duration::from_millis(10)).unwrap().is_none());
    }
}
