//! The receiving side of a [`Connection`]: waiting for Mongrel2's subscription, reading
//! requests (from Mongrel2 directly, or from a device with the worker side of its protocol),
//! watching for restarts, and stopping.

use super::connection::{Connection, Rx};
use super::link::read_link_events;
use super::protocol::{DeviceFlag, WorkerMsg};
use super::socket::{attach, remaining, zerr, Frame};
use crate::error::Result;
use crate::Message;
use bytes::Bytes;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What the reply socket's state allows, as [`Connection::service`] last found it.
#[derive(Debug, Clone, Copy)]
struct ReplySide {
    /// A Mongrel2 is subscribed: what is sent reaches it.
    live: bool,
    /// Device mode: Mongrel2 was seen to go and the device has not confirmed it yet.
    awaiting_reset: bool,
}

/// How often a worker behind a device repeats its `READY` (the device's liveness signal).
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How soon a `READY` that could not be sent (no connection to the device yet) is tried again.
const ANNOUNCE_RETRY_MS: i64 = 5;
/// How often to warn, after the first time, that Mongrel2 has not subscribed yet.
const SUBSCRIBE_WARN: Duration = Duration::from_secs(10);
/// The longest a receive wait goes without looking at the reply socket's subscriptions and the
/// request socket's connection events.
const SERVICE_MS: i64 = 100;
/// How often a busy receiver looks at the reply socket's subscriptions.
const SERVICE_EVERY: Duration = Duration::from_millis(10);
/// Behind a device: how long a draining worker waits for the answer to its `BYE` before it
/// takes the device for gone.
const BYE_WAIT: Duration = Duration::from_secs(2);

impl Connection {
    /// Waits up to `timeout` for the next message and decodes it.
    ///
    /// Returns `Ok(None)` on timeout, when interrupted by a signal, and once
    /// [`stop_receiving`](Connection::stop_receiving) has been called and the prefetched
    /// messages are drained; the caller then checks its stop flag. A thread is never stuck here
    /// longer than `timeout`.
    ///
    /// # Errors
    /// [`Error::Parse`](crate::Error::Parse) for a malformed frame (the frame is consumed: call again for the next),
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Message>> {
        match self.recv_frame(timeout)? {
            Some(frame) => Ok(Some(Message::decode_with(frame, &self.inner.limits)?)),
            None => Ok(None),
        }
    }

    /// Like [`recv`](Connection::recv), without decoding.
    ///
    /// # Errors
    /// [`Error::Socket`](crate::Error::Socket) when ZeroMQ fails.
    pub fn recv_frame(&self, timeout: Duration) -> Result<Option<Bytes>> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.inner.rx.lock();
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
            let from = if self.inner.device.is_some() {
                "the device at"
            } else {
                "Mongrel2 at"
            };
            tracing::info!(
                "Mongrel2 subscribed to {}; taking requests from {from} {spec}",
                self.inner.recv
            );
        }
        if self.inner.device.is_some() {
            return self.recv_device(&mut rx, deadline);
        }
        self.recv_direct(&mut rx, deadline)
    }

    /// Looks at the request socket's connection events and the reply socket's subscriptions;
    /// advances the epoch and applies a new subscription when it is safe. Called by the
    /// receiving thread. Returns the reply side's state as it is now.
    fn service(&self, rx: &mut Rx) -> Result<ReplySide> {
        rx.serviced = Instant::now();
        let link = rx
            .monitor
            .as_ref()
            .map(read_link_events)
            .unwrap_or_default();
        let mut pb = self.inner.publ.lock();
        if link.disconnected {
            self.inner
                .epoch
                .advance("the request socket lost its connection to Mongrel2");
            rx.stale = true;
            pb.hold_for_request_side(true);
        }
        if link.connected && rx.stale {
            rx.stale = false;
            pb.hold_for_request_side(false);
        }
        pb.service(&self.inner.epoch);
        Ok(ReplySide {
            live: pb.live,
            awaiting_reset: pb.awaiting_reset(),
        })
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
            // Under load a message is already waiting: take it without a poll (a system call)
            // when the monitor has no news (a restart is looked at first, as below).
            let quiet = !rx.stale && mon.get_events().is_ok_and(|e| !e.contains(zmq::POLLIN));
            if quiet {
                match pull.recv_msg(zmq::DONTWAIT) {
                    Ok(m) => return Ok(Some(Bytes::from_owner(Frame(m)))),
                    Err(zmq::Error::EAGAIN) => {}
                    Err(zmq::Error::EINTR) => return Ok(None),
                    Err(e) => return Err(zerr("recv")(e)),
                }
            }
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
                        tracing::debug!("dropping a message from a Mongrel2 that has gone away");
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
                let mut pb = self.inner.publ.lock();
                pb.service(&self.inner.epoch);
                if pb.live {
                    return Ok(true);
                }
                pb.poll(remaining(deadline).min(50))?;
                pb.service(&self.inner.epoch);
                if pb.live {
                    return Ok(true);
                }
            }
            if Instant::now() >= rx.next_warn {
                rx.next_warn = Instant::now() + SUBSCRIBE_WARN;
                tracing::warn!(
                    "Mongrel2 has not subscribed to the reply socket {} yet: is it running, and \
                     is this its recv_spec? Not taking requests from {} until it does.",
                    self.inner.recv,
                    self.inner.device.as_ref().unwrap_or(&self.inner.send)
                );
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Sends the device a `READY` when it changed or the heartbeat is due (a `BYE` while
    /// draining). A worker that cannot answer (Mongrel2 has not subscribed to its reply
    /// socket, or it waits for the device to confirm a restart) announces no free slots, so
    /// the device gives it nothing new meanwhile.
    fn announce(&self, rx: &mut Rx, reply: ReplySide) -> Result<()> {
        let heartbeat_due = rx.announced.is_none_or(|(_, at)| at.elapsed() >= HEARTBEAT);
        if rx.stopped {
            // A draining worker's heartbeat: the device keeps routing the continuations of
            // what it holds, and never takes it for dead.
            if rx.bye_sent.is_some() && heartbeat_due {
                if let Some(sock) = rx.sock.as_ref() {
                    let _ = sock.send(WorkerMsg::Bye.encode(), zmq::DONTWAIT);
                }
                rx.announced = Some((WorkerMsg::Bye, Instant::now()));
            }
            return Ok(());
        }
        let cap = if reply.live {
            self.inner.capacity.load(Ordering::SeqCst)
        } else {
            0
        };
        let msg = WorkerMsg::Ready {
            free: i64::try_from(cap).unwrap_or(i64::MAX),
            seen: rx.seen,
            waiting: reply.awaiting_reset,
        };
        if !heartbeat_due && rx.announced.is_some_and(|(last, _)| last == msg) {
            return Ok(());
        }
        if let Some(sock) = rx.sock.as_ref() {
            match sock.send(msg.encode(), zmq::DONTWAIT) {
                Ok(()) => {}
                // Not connected to the device yet: try again in a moment (until the device
                // knows this worker it cannot tell it that Mongrel2 went away).
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                    rx.announced = None;
                    return Ok(());
                }
                Err(e) => return Err(zerr("send")(e)),
            }
        }
        tracing::trace!(?msg, "told the device");
        rx.announced = Some((msg, Instant::now()));
        Ok(())
    }

    fn recv_device(&self, rx: &mut Rx, deadline: Instant) -> Result<Option<Bytes>> {
        let mut reply = self.service(rx)?;
        loop {
            if reply.live {
                if let Some(frame) = rx.held.pop_front() {
                    return Ok(Some(frame));
                }
            }
            self.announce(rx, reply)?;
            let (Some(sock), Some(wake)) = (rx.sock.as_ref(), rx.wake.as_ref()) else {
                return Ok(None);
            };
            // An unsent `READY` is retried soon, and a worker without a subscription looks at
            // its reply socket often; otherwise the heartbeat sets the pace.
            let pace = if rx.announced.is_none() && !rx.stopped {
                ANNOUNCE_RETRY_MS
            } else if !reply.live {
                SERVICE_MS
            } else {
                HEARTBEAT.as_millis() as i64
            };
            let wait = remaining(deadline).min(pace);
            let mut items = [
                sock.as_poll_item(zmq::POLLIN),
                wake.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, wait) {
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(e) => return Err(zerr("poll")(e)),
            }
            let (data, woken) = (items[0].is_readable(), items[1].is_readable());
            // Whether Mongrel2 is still subscribed is judged after the wait, so that a frame
            // that came meanwhile is not answered into a reply socket nobody listens to.
            reply = self.service(rx)?;
            if woken {
                if let Some(wake) = rx.wake.as_ref() {
                    while wake.recv_msg(zmq::DONTWAIT).is_ok() {}
                }
            }
            if data {
                match self.read_device(rx, reply.live)? {
                    ControlFlow::Break(out) => return Ok(out),
                    // A notice may have changed the reply side (the device's `R`).
                    ControlFlow::Continue(()) => reply = self.service(rx)?,
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Reads one message from the device. `Break` with a frame to hand out, or with nothing
    /// when the caller should look at its state (the device answered `BYE`); `Continue` after
    /// a notice acted on here or a frame held because it cannot be answered yet.
    /// `live`: Mongrel2 is subscribed to the reply socket (as `service` just found).
    fn read_device(&self, rx: &mut Rx, live: bool) -> Result<ControlFlow<Option<Bytes>>> {
        let Some(sock) = rx.sock.as_ref() else {
            return Ok(ControlFlow::Break(None));
        };
        let mut parts = match sock.recv_multipart(zmq::DONTWAIT) {
            Ok(parts) if parts.len() == 2 => parts,
            Ok(parts) => {
                tracing::warn!("ignoring a {}-part message from the device", parts.len());
                return Ok(ControlFlow::Continue(()));
            }
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                return Ok(ControlFlow::Continue(()))
            }
            Err(e) => return Err(zerr("recv")(e)),
        };
        let frame = Bytes::from(parts.pop().unwrap_or_default());
        match DeviceFlag::parse(&parts[0]) {
            Some(DeviceFlag::Reset) => {
                // Everything the device sent before this came from a Mongrel2 that is gone;
                // the device dropped what it still held.
                self.inner
                    .epoch
                    .advance("the device lost its connection to Mongrel2");
                if !rx.held.is_empty() {
                    tracing::debug!(
                        "dropping {} message(s) from a Mongrel2 that has gone away",
                        rx.held.len()
                    );
                    rx.held.clear();
                }
                let mut pb = self.inner.publ.lock();
                pb.device_reset();
                pb.service(&self.inner.epoch);
                Ok(ControlFlow::Continue(()))
            }
            Some(DeviceFlag::ByeAck) => {
                if !rx.bye_acked {
                    tracing::debug!("the device answered BYE: nothing new comes");
                }
                rx.bye_acked = true;
                // The caller looks at `is_drained` now.
                Ok(ControlFlow::Break(None))
            }
            Some(DeviceFlag::Probe) => Ok(ControlFlow::Continue(())),
            Some(flag) => {
                if flag == DeviceFlag::Assigned {
                    rx.seen += 1;
                }
                if live && rx.held.is_empty() {
                    return Ok(ControlFlow::Break(Some(frame)));
                }
                // Mongrel2's subscription is gone and the new one not taken yet: whoever sent
                // this cannot be answered now. It waits (see `held`).
                tracing::debug!("holding a message until Mongrel2 subscribes again");
                rx.held.push_back(frame);
                Ok(ControlFlow::Continue(()))
            }
            None => {
                tracing::warn!("ignoring a message from the device with an unknown flag");
                Ok(ControlFlow::Continue(()))
            }
        }
    }

    /// Stops taking new requests.
    ///
    /// Behind a [`Device`](crate::Device) this is lossless: it sends the device `BYE`; the
    /// device assigns nothing new, sends the next request of every keep-alive connection
    /// elsewhere and answers, behind everything it sent before. Keep calling
    /// [`recv`](Connection::recv) (messages for the requests in flight still come: download
    /// credits, upload slices) until [`is_drained`](Connection::is_drained) and nothing is in
    /// flight.
    ///
    /// Directly on Mongrel2 it disconnects (or unbinds) the request socket so Mongrel2 sends
    /// the next requests to other handlers. ZeroMQ's PUSH/PULL has no acknowledgement: the
    /// messages Mongrel2 had already pushed toward this socket (in its queue and in the
    /// network) when it disconnects are discarded by ZeroMQ, not sent to another handler, so a
    /// rolling restart of direct handlers under load can lose the few requests in flight at
    /// that instant. Put a device in front for restarts that lose nothing.
    pub fn stop_receiving(&self) {
        let mut rx = self.inner.rx.lock();
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
            let _ = sock.send(WorkerMsg::Bye.encode(), zmq::DONTWAIT);
            rx.bye_sent = Some(Instant::now());
            rx.announced = Some((WorkerMsg::Bye, Instant::now()));
            return;
        }
        let spec = &self.inner.send;
        let r = if spec.is_bind() {
            sock.unbind(spec.endpoint())
        } else {
            sock.disconnect(spec.endpoint())
        };
        if let Err(e) = r {
            tracing::debug!("disconnecting {}: {e}", spec.endpoint());
        }
    }

    /// Whether, after [`stop_receiving`](Connection::stop_receiving), nothing new can arrive:
    /// directly on Mongrel2 at once; behind a device once it answered `BYE` (or did not answer
    /// within 2 s: it is taken for gone). Messages for requests in flight may still come.
    pub fn is_drained(&self) -> bool {
        let rx = self.inner.rx.lock();
        if !rx.stopped {
            return false;
        }
        if self.inner.device.is_none() || !rx.attached || rx.bye_acked {
            return true;
        }
        match rx.bye_sent {
            Some(t) if t.elapsed() >= BYE_WAIT => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    tracing::warn!(
                        "the device did not answer BYE within {BYE_WAIT:?}; leaving anyway"
                    )
                });
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Closes the request socket for good; later `recv` calls return `None`.
    pub fn close_receiving(&self) {
        let mut rx = self.inner.rx.lock();
        rx.stopped = true;
        rx.sock.take();
    }
}
