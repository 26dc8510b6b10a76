//! [`Device`](crate::Device): the ready-based dispatcher between one Mongrel2 handler and several worker
//! processes, and the device's half of the worker protocol.

use super::link::{monitor, read_link_events, reply_socket, Epoch, Publisher, RECONNECT_IVL_MS};
use super::protocol::{DeviceFlag, WorkerMsg};
use super::scheduler::{Class, Route, Scheduler, WorkerId};
use super::socket::{attach, zerr, Frame};
use crate::codec::response::encode_deliver;
use crate::error::Result;
use crate::spec::SocketSpec;
use crate::{Message, MessageKind};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker the device has not heard from for this long is forgotten.
const WORKER_LIVENESS: Duration = Duration::from_secs(3);
/// A client connection the device has not seen a message for in this long is forgotten.
const STICKY_IDLE: Duration = Duration::from_secs(600);
/// The device stops reading from Mongrel2 while this many messages wait for a ready worker.
const DEVICE_QUEUE_MAX: usize = 1024;
/// After a worker's connection broke, the workers are probed at these delays (ZeroMQ drops a
/// broken peer's route a moment after it reports the break).
const PROBE_AFTER_MS: [u64; 4] = [0, 20, 100, 500];
/// How often the reply socket's subscriptions are looked at.
const SERVICE_EVERY: Duration = Duration::from_millis(10);

/// A ready-based dispatcher between one Mongrel2 handler and several worker processes (the
/// `m2wsgi-device` command runs one).
///
/// Mongrel2 PUSHes requests round-robin to whoever is connected, busy or not, and keeps pushing
/// to a handler that hangs. A device instead PULLs everything from Mongrel2's `send_spec` and
/// hands each new client connection to the worker process that has a free thread and was served
/// least recently; the connection then stays with that worker until it closes. Workers connect
/// with [`ConnectionBuilder::device`](crate::ConnectionBuilder::device) and reply straight to
/// Mongrel2's `recv_spec`.
///
/// ```text
///   Mongrel2 --PUSH--> [PULL  Device  ROUTER] <--DEALER-- worker 1 --PUB--> Mongrel2
///                          |                  <--DEALER-- worker 2 --PUB--> Mongrel2
///                          +-------------PUB (closes)---------------------> Mongrel2
/// ```
///
/// Worker protocol (DEALER ↔ ROUTER): a worker sends `READY <free> <seen>` (free request
/// slots; assigned messages received so far) on start, on every change and every 500 ms as a
/// heartbeat, and `BYE` when it drains (repeated as its heartbeat). The device sends two
/// frames: `A` (a new connection assigned to it) or `S` (a connection it already holds), then
/// Mongrel2's frame unchanged; `R` and an empty frame when its link to Mongrel2 broke (Mongrel2
/// restarted: every connection before it is gone, and the device dropped what it still
/// queued); `B` and an empty frame in answer to `BYE`; `P` and an empty frame as a liveness
/// probe.
///
/// No request is lost when workers come and go:
/// - **Leaving** (a worker drains on SIGTERM): after its `BYE` the device assigns it nothing
///   new and sends the next request of each keep-alive connection it held to another worker;
///   it answers `B`, behind everything it sent before. The worker answers what it holds and
///   leaves once it has the `B`, in milliseconds.
/// - **Dying** (a crash, SIGKILL): the device sees the worker's connection break at once
///   (within milliseconds; a silent worker is forgotten after 3 s), puts a request it could
///   not hand over back at the head of its queue, and asks Mongrel2 to close every client
///   connection the dead worker held, so its clients learn at once instead of waiting for
///   their own timeout. (A close rather than a `503`: the device cannot tell whether an answer
///   had already started, or had been sent in full on a keep-alive connection, where a `503`
///   would be read as the answer to the client's next request.)
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
    /// The ROUTER socket's connection events: a worker's connection broke.
    router_monitor: DeviceSocket,
    /// The reply socket to Mongrel2's `recv_spec`, for closing the connections of a worker
    /// that died. Taken by [`Device::run`].
    reply: Mutex<Option<(SocketSpec, zmq::Socket)>>,
    send: SocketSpec,
    endpoint: String,
    status: Arc<Mutex<Vec<WorkerStatus>>>,
}

struct DeviceSocket(zmq::Socket);

/// One worker as a running [`Device`] sees it (see [`DeviceStatus`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// The worker's ZeroMQ identity: the `IDENT@` of its
    /// [`ConnectionBuilder::device`](crate::ConnectionBuilder::device) spec, or one ZeroMQ
    /// picked.
    pub id: Bytes,
    /// It said `BYE`: it gets nothing new.
    pub leaving: bool,
    /// Requests handed to it so far (new requests, not their continuations).
    pub requests: u64,
}

/// What a running [`Device`] knows of its workers, refreshed every 100 ms and whenever a worker
/// comes, leaves or goes; for a supervisor that starts and recycles worker processes. Get one
/// with [`Device::status`] before moving the device to the thread that runs it.
#[derive(Debug, Clone)]
pub struct DeviceStatus(Arc<Mutex<Vec<WorkerStatus>>>);

impl DeviceStatus {
    /// The workers heard from and not gone, by id.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.0.lock().clone()
    }

    /// The worker with this id, when it is connected.
    pub fn worker(&self, id: &[u8]) -> Option<WorkerStatus> {
        self.0.lock().iter().find(|w| w.id == id).cloned()
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("send", &self.send)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Binds the worker socket at `workers` (a ROUTER; `tcp://127.0.0.1:*#bind` picks a free port,
    /// see [`endpoint`](Device::endpoint)) and prepares the PULL socket for Mongrel2's
    /// `send_spec`. The PULL socket connects when the first worker says `READY`, so a device
    /// with no workers takes no requests. The reply socket (for closing the connections of a
    /// worker that died) goes to the `recv_spec` inferred from `send_spec` (the port below it,
    /// see [`default_recv_spec`](crate::default_recv_spec)); use
    /// [`bind_with_reply`](Device::bind_with_reply) to name it.
    ///
    /// # Errors
    /// [`Error::BadSpec`](crate::Error::BadSpec) for an invalid spec, or a `send_spec` no
    /// reply spec can be inferred from; [`Error::Socket`](crate::Error::Socket) when ZeroMQ
    /// refuses.
    pub fn bind(send_spec: &str, workers: &str) -> Result<Device> {
        let recv = crate::default_recv_spec(&SocketSpec::parse(send_spec)?)?;
        Self::bind_with_reply(send_spec, &recv.to_string(), workers)
    }

    /// Like [`bind`](Device::bind), with Mongrel2's `recv_spec` named.
    ///
    /// # Errors
    /// As [`bind`](Device::bind).
    pub fn bind_with_reply(send_spec: &str, recv_spec: &str, workers: &str) -> Result<Device> {
        let send = SocketSpec::parse(send_spec)?;
        let recv = SocketSpec::parse(recv_spec)?;
        let wspec = SocketSpec::parse(workers)?;
        let ctx = zmq::Context::new();
        let pull = ctx.socket(zmq::PULL).map_err(zerr("socket"))?;
        pull.set_linger(0).map_err(zerr("setsockopt"))?;
        pull.set_rcvhwm(1000).map_err(zerr("setsockopt"))?;
        pull.set_immediate(true).map_err(zerr("setsockopt"))?;
        pull.set_reconnect_ivl(RECONNECT_IVL_MS)
            .map_err(zerr("setsockopt"))?;
        let pull_monitor = monitor(&ctx, &pull, "device")?;
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
        let router_monitor = monitor(&ctx, &router, "device-workers")?;
        let endpoint = router
            .get_last_endpoint()
            .map_err(zerr("getsockopt"))?
            .unwrap_or_else(|_| wspec.endpoint().to_string());
        let reply = reply_socket(&recv)?;
        Ok(Device {
            _ctx: ctx,
            pull: DeviceSocket(pull),
            monitor: DeviceSocket(pull_monitor),
            router: DeviceSocket(router),
            router_monitor: DeviceSocket(router_monitor),
            reply: Mutex::new(Some((recv, reply))),
            send,
            endpoint,
            status: Arc::default(),
        })
    }

    /// A live view of the device's workers (see [`DeviceStatus`]).
    pub fn status(&self) -> DeviceStatus {
        DeviceStatus(Arc::clone(&self.status))
    }

    /// The worker endpoint actually bound (with the real port when `*` was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Routes messages until `stop` is set (checked every 100 ms), then returns.
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed) when called a second time,
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
    pub fn run(&self, stop: &AtomicBool) -> Result<()> {
        let (recv, reply) = self.reply.lock().take().ok_or(crate::Error::Closed)?;
        let mut state = Routing {
            sched: Scheduler::new(WORKER_LIVENESS, STICKY_IDLE),
            router: &self.router.0,
            publ: Publisher::new(reply, false, recv.to_string()),
            epoch: Epoch::default(),
            sender: Vec::new(),
            probes: Vec::new(),
            losses: 0,
            stale: false,
        };
        let (pull, mon, wmon) = (&self.pull.0, &self.monitor.0, &self.router_monitor.0);
        let mut attached = false;
        let mut last_expire = Instant::now();
        let mut serviced = Instant::now();
        let mut published = (Instant::now(), u64::MAX);
        while !stop.load(Ordering::SeqCst) {
            self.publish(&state.sched, &mut published);
            let read_m2 = attached && state.sched.queued() < DEVICE_QUEUE_MAX;
            let mut items = [
                self.router.0.as_poll_item(zmq::POLLIN),
                pull.as_poll_item(if read_m2 {
                    zmq::POLLIN
                } else {
                    zmq::PollEvents::empty()
                }),
                mon.as_poll_item(zmq::POLLIN),
                wmon.as_poll_item(zmq::POLLIN),
            ];
            let wait = state.next_probe_ms().unwrap_or(100).min(100);
            match zmq::poll(&mut items, wait) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(zerr("poll")(e)),
            }
            state.check_link(mon);
            let now = Instant::now();
            if now.duration_since(serviced) >= SERVICE_EVERY {
                serviced = now;
                state.publ.service(&state.epoch);
            }
            if read_link_events(wmon).disconnected {
                // Some worker's connection broke: find out which by probing them all.
                state.probes = PROBE_AFTER_MS
                    .iter()
                    .map(|ms| now + Duration::from_millis(*ms))
                    .collect();
            }
            state.run_probes(now);
            if items[0].is_readable() {
                state.read_workers(now);
                if !attached && state.sched.live_workers() > 0 {
                    attach(pull, &self.send)?;
                    attached = true;
                    tracing::info!("taking requests from Mongrel2 at {}", self.send);
                }
            }
            if read_m2 && items[1].is_readable() {
                for _ in 0..256 {
                    let frame = match pull.recv_msg(zmq::DONTWAIT) {
                        Ok(m) => Bytes::from_owner(Frame(m)),
                        Err(_) => break,
                    };
                    // A new server's handshake is reported before its first message.
                    state.check_link(mon);
                    if state.stale {
                        tracing::debug!("dropping a message from a Mongrel2 that has gone away");
                        continue;
                    }
                    let Some((conn, class)) = state.classify(&frame) else {
                        tracing::warn!("dropping a malformed message from Mongrel2");
                        continue;
                    };
                    if let Route::To { worker, assigned } =
                        state.sched.route(conn, class, frame.clone(), now)
                    {
                        state.forward(&worker, assigned, conn, class, frame)?;
                    }
                }
            }
            while let Some((worker, assigned, frame)) = state.sched.next_queued(now) {
                let conn = conn_id_of(&frame);
                state.forward(&worker, assigned, conn, Class::Fresh, frame)?;
            }
            if now.duration_since(last_expire) >= Duration::from_millis(500) {
                last_expire = now;
                for (_, held) in state.sched.expire(now) {
                    tracing::warn!("a worker went silent for {WORKER_LIVENESS:?}; forgetting it");
                    state.close_held(&held);
                }
            }
        }
        state.publ.close();
        self.status.lock().clear();
        Ok(())
    }

    /// Refreshes [`DeviceStatus`] when a worker came, left or went, or every 100 ms (cheap to
    /// call per message otherwise: a comparison and a clock read).
    fn publish(&self, sched: &Scheduler, last: &mut (Instant, u64)) {
        if sched.version() == last.1 && last.0.elapsed() < Duration::from_millis(100) {
            return;
        }
        *last = (Instant::now(), sched.version());
        *self.status.lock() = sched
            .snapshot()
            .into_iter()
            .map(|(id, leaving, requests)| WorkerStatus {
                id: Bytes::from(id),
                leaving,
                requests,
            })
            .collect();
    }
}

/// The device's state while it runs.
struct Routing<'d> {
    sched: Scheduler,
    router: &'d zmq::Socket,
    /// The reply socket to Mongrel2 (for closing the connections of a worker that died), with
    /// the same restart rules as a handler's: nothing reaches a Mongrel2 it was not meant for.
    publ: Publisher,
    epoch: Epoch,
    /// The sender id of the last request: what replies to Mongrel2 carry.
    sender: Vec<u8>,
    /// When to probe the workers next (after a worker's connection broke).
    probes: Vec<Instant>,
    /// How many times the link to Mongrel2 broke.
    losses: u64,
    /// The PULL socket lost Mongrel2 and has not shaken hands with a new one.
    stale: bool,
}

impl Routing<'_> {
    /// Looks at the PULL socket's link; on a break, drops everything from the old server and
    /// tells every worker (`R`), in order behind the frames they already have.
    fn check_link(&mut self, mon: &zmq::Socket) {
        let ev = read_link_events(mon);
        if ev.disconnected {
            // Every worker that has announced itself must get the `R`, even one whose first
            // `READY` is still unread: a worker that saw Mongrel2 go (its subscription
            // withdrawn) waits for it before it takes the new one.
            self.read_workers(Instant::now());
            let dropped = self.sched.forget_connections();
            tracing::warn!(
                "lost the connection to Mongrel2: it restarted or went away; dropped {dropped} \
                 queued message(s) and every connection route, and told the workers"
            );
            for w in self.sched.worker_ids() {
                let _ = self.send_flag(w, DeviceFlag::Reset);
            }
            self.losses += 1;
            self.sched.reset_all(self.losses);
            self.epoch
                .advance("the device lost its connection to Mongrel2");
            self.publ.hold_for_request_side(true);
            self.stale = true;
        }
        if ev.connected {
            self.stale = false;
            self.publ.hold_for_request_side(false);
        }
    }

    /// Reads every message the workers sent.
    fn read_workers(&mut self, now: Instant) {
        while let Ok(parts) = self.router.recv_multipart(zmq::DONTWAIT) {
            let [id, body] = parts.as_slice() else {
                continue;
            };
            match WorkerMsg::parse(body) {
                Some(WorkerMsg::Ready {
                    free,
                    seen,
                    waiting,
                }) => {
                    tracing::trace!(free, seen, waiting, "READY from a worker");
                    if self.sched.live_workers() == 0 {
                        tracing::info!("worker connected");
                    }
                    self.sched.ready(id, free, seen, now);
                    // A worker that saw Mongrel2 go but was not known when the link broke:
                    // with no Mongrel2 connected, all it gets from now on comes from a later
                    // one, so it can take the new subscription.
                    if waiting && self.stale && self.sched.owes_reset(id, self.losses) {
                        tracing::debug!("confirming Mongrel2's loss to a worker that joined since");
                        let _ = self.send_flag(id, DeviceFlag::Reset);
                    }
                }
                Some(WorkerMsg::Bye) => {
                    if !self.sched.is_leaving(id) {
                        tracing::info!("a worker is leaving; its next requests go elsewhere");
                    }
                    self.sched.bye(id, now);
                    // Behind everything sent to it before: once it has this, nothing new comes.
                    if self.send_flag(id, DeviceFlag::ByeAck).is_err() {
                        self.gone(id);
                    }
                }
                None => tracing::warn!(
                    "ignoring a message from a worker: {:?}",
                    String::from_utf8_lossy(body)
                ),
            }
        }
    }

    /// Milliseconds until the next probe is due.
    fn next_probe_ms(&self) -> Option<i64> {
        let next = self.probes.iter().min()?;
        let ms = next.saturating_duration_since(Instant::now()).as_millis();
        Some(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// Probes every worker when a probe is due: ZeroMQ refuses to route to one whose
    /// connection broke.
    fn run_probes(&mut self, now: Instant) {
        let due = self.probes.len();
        self.probes.retain(|t| *t > now);
        if self.probes.len() == due {
            return;
        }
        let ids: Vec<WorkerId> = self.sched.worker_ids().cloned().collect();
        for id in ids {
            if self.send_flag(&id, DeviceFlag::Probe).is_err() {
                self.gone(&id);
            }
        }
    }

    /// Sends a two-frame notice (`flag`, empty) to a worker.
    fn send_flag(&self, worker: &[u8], flag: DeviceFlag) -> std::result::Result<(), zmq::Error> {
        self.router
            .send(worker, zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| {
                self.router
                    .send(flag.as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
            })
            .and_then(|()| self.router.send(&b""[..], zmq::DONTWAIT))
    }

    /// A worker is gone: forgets it and closes the client connections it held (unless it had
    /// said `BYE`).
    fn gone(&mut self, id: &[u8]) {
        let held = self.sched.remove(id);
        self.close_held(&held);
    }

    /// Asks Mongrel2 to close the connections a dead worker held.
    fn close_held(&mut self, held: &[u64]) {
        if held.is_empty() {
            tracing::info!("a worker left");
            return;
        }
        let sender = if self.publ.topic().is_empty() {
            self.sender.clone()
        } else {
            self.publ.topic().to_vec()
        };
        let sent = encode_deliver(&sender, held, b"").map(|frames| {
            frames
                .into_iter()
                .map(|f| self.publ.send(f))
                .all(|r| r.is_ok())
        });
        let how = if matches!(sent, Ok(true)) && self.publ.live {
            "asked Mongrel2 to close"
        } else {
            "could not reach Mongrel2 to close"
        };
        tracing::warn!(
            "a worker died without leaving in order; {how} the {} client connection(s) it held",
            held.len()
        );
    }

    /// The connection id and routing class of a Mongrel2 frame (and remembers its sender).
    fn classify(&mut self, frame: &Bytes) -> Option<(u64, Class)> {
        let msg = Message::decode(frame.clone()).ok()?;
        let class = match msg.kind() {
            MessageKind::Request
            | MessageKind::UploadStart { .. }
            | MessageKind::WebSocketHandshake => Class::Fresh,
            MessageKind::UploadDone { .. } | MessageKind::UploadStream { .. } => {
                Class::Continuation
            }
            MessageKind::Disconnect => Class::Disconnect,
            MessageKind::Credits { .. } => Class::Credits,
            _ => Class::Socket,
        };
        if self.sender.as_slice() != msg.sender().as_ref() {
            self.sender = msg.sender().to_vec();
        }
        Some((msg.conn_id(), class))
    }

    /// Hands a frame to a worker. When the worker is gone, the frame goes back to the head of
    /// the queue if another worker can take it, and the worker's connections are closed.
    fn forward(
        &mut self,
        worker: &[u8],
        assigned: bool,
        conn: u64,
        class: Class,
        frame: Bytes,
    ) -> Result<()> {
        let flag = if assigned {
            DeviceFlag::Assigned
        } else {
            DeviceFlag::Sticky
        }
        .as_bytes();
        let sent = self
            .router
            .send(worker, zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| self.router.send(flag, zmq::SNDMORE | zmq::DONTWAIT))
            .and_then(|()| self.router.send(&frame[..], zmq::DONTWAIT));
        match sent {
            Ok(()) => {
                tracing::trace!(conn, ?class, assigned, "forwarded to a worker");
                if class == Class::Fresh {
                    self.sched.count_request(worker);
                }
                Ok(())
            }
            Err(zmq::Error::EHOSTUNREACH) | Err(zmq::Error::EAGAIN) => {
                let mut held = self.sched.remove(worker);
                if class == Class::Fresh {
                    // Nothing of this request reached anyone: another worker takes it, and its
                    // connection stays open.
                    held.retain(|c| *c != conn);
                    self.sched.requeue(conn, frame);
                }
                self.close_held(&held);
                Ok(())
            }
            Err(e) => Err(zerr("send")(e)),
        }
    }
}

/// The connection id of a Mongrel2 frame (`SENDER SP CONN_ID SP ...`).
fn conn_id_of(frame: &[u8]) -> u64 {
    frame
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
        .unwrap_or(0)
}
