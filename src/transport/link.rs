//! Mongrel2 restarts and reconnects, as the sockets see them.
//!
//! Mongrel2 numbers client connections from 1 again when it restarts, so an id from before a
//! restart names some other client afterwards. The connection therefore counts *epochs*: every
//! message is received in the current epoch, per-connection state remembers it, and a reply is
//! sent only while its epoch is still current. The epoch advances whenever Mongrel2 is seen to go
//! away:
//!
//! - the reply socket (an XPUB with `ZMQ_IMMEDIATE`, so nothing queued for a dead peer survives
//!   into the next connection) reports Mongrel2's subscription withdrawn, or a second one;
//! - the request socket's monitor reports its peer disconnected (direct mode), or the device
//!   reports that its own link to Mongrel2 broke (device mode, the `R` notice).
//!
//! The reply socket runs in `ZMQ_XPUB_MANUAL` mode: a new Mongrel2's subscription takes effect
//! only when this code applies it, after the epoch has advanced and once the request side can
//! hold nothing more from the old server (direct mode: the request socket has shaken hands with
//! the new one, and frames read before that are dropped; device mode: the device's `R` notice
//! came, which it sends after it dropped its queue). So no byte for an old connection id can
//! reach the new server.

use super::socket::{attach, zerr};
use crate::error::Result;
use crate::spec::SocketSpec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// ZeroMQ's reconnect interval, set explicitly: a new Mongrel2 can reach a socket at the
/// earliest this long after the old one's connection broke.
pub(super) const RECONNECT_IVL_MS: i32 = 100;
/// Behind a device: how long a new Mongrel2's subscription waits for the device to confirm that
/// it dropped everything from the old one (its `R` notice) before it is taken anyway.
const DEVICE_RESET_WAIT: Duration = Duration::from_secs(2);

/// The connection's epoch: it advances whenever Mongrel2 is seen to go away.
#[derive(Debug, Default)]
pub(super) struct Epoch(AtomicU64);

impl Epoch {
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub(super) fn advance(&self, why: &str) {
        let e = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::warn!(
            "{why}: Mongrel2 restarted or reconnected; every client connection from before is \
             treated as gone, and nothing more is sent to them (epoch {e})"
        );
    }
}

/// How long closing the reply socket waits for queued replies to leave.
const LINGER_MS: i32 = 1000;

/// Opens the reply socket to Mongrel2's `recv_spec` (see the module docs). It has its own
/// ZeroMQ context, so that closing it can wait for what it still has to send.
pub(super) fn reply_socket(recv: &SocketSpec) -> Result<zmq::Socket> {
    let mut publ = zmq::Context::new()
        .socket(zmq::XPUB)
        .map_err(zerr("socket"))?;
    publ.set_linger(LINGER_MS).map_err(zerr("setsockopt"))?;
    publ.set_sndhwm(0).map_err(zerr("setsockopt"))?;
    // Nothing is queued for a Mongrel2 that is not connected, and a broken connection drops
    // what was queued for it: a restarted Mongrel2 must never receive replies written for the
    // connections of the old one.
    publ.set_immediate(true).map_err(zerr("setsockopt"))?;
    publ.set_reconnect_ivl(RECONNECT_IVL_MS)
        .map_err(zerr("setsockopt"))?;
    set_xpub_manual(&mut publ)?;
    if let Some(id) = recv.identity() {
        publ.set_identity(id.as_bytes())
            .map_err(zerr("setsockopt"))?;
    }
    attach(&publ, recv)?;
    Ok(publ)
}

/// Puts the reply socket in `ZMQ_XPUB_MANUAL` mode (see the module docs).
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
pub(super) fn monitor(ctx: &zmq::Context, sock: &zmq::Socket, name: &str) -> Result<zmq::Socket> {
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
pub(super) struct LinkEvents {
    pub(super) disconnected: bool,
    /// A handshake completed after the last disconnect in this batch.
    pub(super) connected: bool,
}

/// Reads every pending event from a monitor socket.
pub(super) fn read_link_events(mon: &zmq::Socket) -> LinkEvents {
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

/// The reply socket and what it knows of Mongrel2's subscription (see the module docs).
pub(super) struct Publisher {
    /// `None` once closed. The socket is alone in its ZeroMQ context, so closing it waits
    /// (up to its linger time) until what was queued has left.
    sock: Option<zmq::Socket>,
    /// Behind a device (which confirms losses with `R` notices), rather than direct.
    device: bool,
    /// The reply endpoint, for the log.
    name: String,
    /// A subscription is applied and not withdrawn: a Mongrel2 receives what is sent.
    pub(super) live: bool,
    /// A subscription read but not applied yet (its topic). Nothing more is read from the
    /// socket until it is applied, since ZeroMQ applies it to the pipe read last.
    pending: Option<Vec<u8>>,
    /// Direct mode: the request socket may still hold messages from an earlier server, so
    /// `pending` waits.
    hold: bool,
    /// The topic of the subscription applied last: the prefix Mongrel2 filters replies by
    /// (empty when it takes every reply).
    topic: Vec<u8>,
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
    pub(super) fn new(sock: zmq::Socket, device: bool, name: String) -> Self {
        Self {
            sock: Some(sock),
            device,
            name,
            live: false,
            pending: None,
            hold: false,
            topic: Vec::new(),
            losses: 0,
            resets: 0,
            held_since: None,
        }
    }

    /// Direct mode: the request socket lost Mongrel2 (`true`) or shook hands with a new one.
    pub(super) fn hold_for_request_side(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Device mode: the device confirmed a loss (its `R` notice). One notice may come before
    /// the loss it confirms, no more.
    pub(super) fn device_reset(&mut self) {
        self.resets = (self.resets + 1).min(self.losses + 1);
    }

    /// Device mode: Mongrel2 was seen to go and the device has not confirmed it yet (a new
    /// subscription waits).
    pub(super) fn awaiting_reset(&self) -> bool {
        self.device && self.losses > self.resets
    }

    /// The topic of Mongrel2's subscription (see the field).
    pub(super) fn topic(&self) -> &[u8] {
        &self.topic
    }

    /// Sends one frame.
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed) once closed.
    pub(super) fn send(&mut self, frame: Vec<u8>) -> Result<()> {
        let Some(sock) = &self.sock else {
            return Err(crate::Error::Closed);
        };
        sock.send(zmq::Message::from(frame), 0)
            .map_err(zerr("send"))
    }

    /// Waits up to `ms` for the socket to have something to read.
    pub(super) fn poll(&self, ms: i64) -> Result<()> {
        let Some(sock) = &self.sock else {
            return Ok(());
        };
        match sock.poll(zmq::POLLIN, ms) {
            Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
            Err(e) => Err(zerr("poll")(e)),
        }
    }

    /// Closes the socket, waiting up to its linger time for queued replies to leave. Later
    /// sends fail.
    pub(super) fn close(&mut self) {
        self.live = false;
        drop(self.sock.take());
    }

    /// Reads the reply socket's subscription messages (`\x01topic` subscribe, `\x00topic`
    /// unsubscribe), advances `epoch` when a Mongrel2 went away, and applies a subscription
    /// (which takes effect only then) once it is safe.
    pub(super) fn service(&mut self, epoch: &Epoch) {
        loop {
            if let Some(topic) = self.pending.take() {
                if self.holding() {
                    self.pending = Some(topic);
                    return;
                }
                let applied = self.sock.as_ref().map(|s| s.set_subscribe(&topic));
                if let Some(Err(e)) = applied {
                    tracing::error!("applying Mongrel2's subscription: {e}");
                }
                self.live = true;
                self.topic = topic;
                tracing::debug!("Mongrel2 subscribed at {}", self.name);
                continue;
            }
            let Some(Ok(m)) = self.sock.as_ref().map(|s| s.recv_bytes(zmq::DONTWAIT)) else {
                return;
            };
            match m.first() {
                Some(1) => {
                    if self.live {
                        epoch.advance("a second Mongrel2 subscribed to the reply socket");
                    }
                    self.pending = Some(m[1..].to_vec());
                }
                Some(0) if self.live => {
                    self.live = false;
                    epoch.advance("Mongrel2 withdrew its subscription to the reply socket");
                    if self.device {
                        self.losses += 1;
                    }
                }
                _ => {}
            }
        }
    }

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
        tracing::warn!(
            "the device did not confirm within {DEVICE_RESET_WAIT:?} that it dropped the old \
             Mongrel2's messages; taking the new one anyway"
        );
        self.resets = self.losses;
        false
    }
}
