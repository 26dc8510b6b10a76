//! [`Device`](crate::Device): the ready-based dispatcher between one Mongrel2 handler and several worker
//! processes, and the device's half of the worker protocol.

use super::link::{monitor, read_link_events, RECONNECT_IVL_MS};
use super::protocol::{DeviceFlag, WorkerMsg};
use super::scheduler::{Class, Route, Scheduler};
use super::socket::{attach, zerr, Frame};
use crate::error::Result;
use crate::spec::SocketSpec;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A worker the device has not heard from for this long is forgotten.
const WORKER_LIVENESS: Duration = Duration::from_secs(3);
/// A client connection the device has not seen a message for in this long is forgotten.
const STICKY_IDLE: Duration = Duration::from_secs(600);
/// The device stops reading from Mongrel2 while this many messages wait for a ready worker.
const DEVICE_QUEUE_MAX: usize = 1024;

/// A ready-based dispatcher between one Mongrel2 handler and several worker processes (the
/// `m2wsgi-device` command runs one).
///
/// Mongrel2 PUSHes requests round-robin to whoever is connected, busy or not, and keeps pushing
/// to a handler that hangs. A device instead PULLs everything from Mongrel2's `send_spec` and
/// hands each new client connection to the worker process that has a free thread and was served
/// least recently; the connection then stays with that worker until it closes. Workers connect
/// with [`ConnectionBuilder::device`](crate::ConnectionBuilder::device) and reply straight to Mongrel2's `recv_spec`.
///
/// ```text
///   Mongrel2 --PUSH--> [PULL  Device  ROUTER] <--DEALER-- worker 1 --PUB--> Mongrel2
///                                             <--DEALER-- worker 2 --PUB--> Mongrel2
/// ```
///
/// Worker protocol (DEALER ↔ ROUTER): a worker sends `READY <free> <seen>`
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
    /// [`Error::BadSpec`](crate::Error::BadSpec) for an invalid spec, [`Error::Socket`](crate::Error::Socket) when ZeroMQ refuses.
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
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
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
                tracing::warn!(
                    "lost the connection to Mongrel2: it restarted or went away; dropped {dropped} \
                     queued message(s) and every connection route, and told the workers"
                );
                for w in sched.worker_ids() {
                    let _ = router
                        .send(&w[..], zmq::SNDMORE | zmq::DONTWAIT)
                        .and_then(|()| {
                            router.send(DeviceFlag::Reset.as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
                        })
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
                    match WorkerMsg::parse(body) {
                        Some(WorkerMsg::Ready { free, seen }) => {
                            if sched.live_workers() == 0 {
                                tracing::info!("worker connected");
                            }
                            sched.ready(id, free, seen, now);
                        }
                        Some(WorkerMsg::Bye) => sched.bye(id),
                        None => tracing::warn!(
                            "ignoring a message from a worker: {:?}",
                            String::from_utf8_lossy(body)
                        ),
                    }
                }
                if !attached && sched.live_workers() > 0 {
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
                    check_link(&mut sched, &mut stale);
                    if stale {
                        tracing::debug!("dropping a message from a Mongrel2 that has gone away");
                        continue;
                    }
                    let Some((conn, class)) = classify(&frame) else {
                        tracing::warn!("dropping a malformed message from Mongrel2");
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
                    tracing::warn!("a worker went silent; forgetting it and its connections");
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
    let flag = if assigned {
        DeviceFlag::Assigned
    } else {
        DeviceFlag::Sticky
    }
    .as_bytes();
    let sent = router
        .send(worker, zmq::SNDMORE | zmq::DONTWAIT)
        .and_then(|()| router.send(flag, zmq::SNDMORE | zmq::DONTWAIT))
        .and_then(|()| router.send(&frame[..], zmq::DONTWAIT));
    match sent {
        Ok(()) => Ok(()),
        Err(zmq::Error::EHOSTUNREACH) | Err(zmq::Error::EAGAIN) => {
            tracing::warn!("a worker vanished; forgetting it");
            sched.remove(worker);
            if assigned {
                sched.requeue(conn, frame);
            }
            Ok(())
        }
        Err(e) => Err(zerr("send")(e)),
    }
}
