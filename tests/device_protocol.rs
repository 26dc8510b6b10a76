//! The worker protocol between a `Device` and its workers across a Mongrel2 restart, with
//! ZeroMQ sockets standing in for Mongrel2 and for the other side (no Mongrel2 needed).
//!
//! The frames are spelled out as docs/protocol.md §12 describes them: a worker sends
//! `READY <free> <seen> <waiting>`; the device sends `[flag, frame]`, `R` when its link to
//! Mongrel2 broke.
#![cfg(feature = "runtime")]

mod support;

use m2wsgi::{Connection, Device};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::testing::RequestBuilder;

const T: Duration = Duration::from_secs(10);

/// Binds `kind` at `endpoint`, retrying while the port is still held by a socket just closed.
fn bind(ctx: &zmq::Context, kind: zmq::SocketType, endpoint: &str) -> zmq::Socket {
    let deadline = Instant::now() + T;
    loop {
        let s = ctx.socket(kind).unwrap();
        s.set_linger(0).unwrap();
        match s.bind(endpoint) {
            Ok(()) => return s,
            Err(_) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("bind {endpoint}: {e}"),
        }
    }
}

fn endpoint(s: &zmq::Socket) -> String {
    s.get_last_endpoint().unwrap().unwrap()
}

/// The next multipart message on `s` within `T`.
fn next(s: &zmq::Socket) -> Vec<Vec<u8>> {
    assert!(
        s.poll(zmq::POLLIN, T.as_millis() as i64).unwrap() > 0,
        "nothing arrived within {T:?}"
    );
    s.recv_multipart(0).unwrap()
}

/// A worker's DEALER socket, spoken to by hand.
struct Worker {
    sock: zmq::Socket,
    /// Assigned messages received (the `seen` of `READY`).
    seen: std::cell::Cell<u64>,
}

impl Worker {
    fn connect(ctx: &zmq::Context, device: &str) -> Self {
        let sock = ctx.socket(zmq::DEALER).unwrap();
        sock.set_linger(0).unwrap();
        sock.connect(device).unwrap();
        Worker {
            sock,
            seen: std::cell::Cell::new(0),
        }
    }

    fn ready(&self, free: i64, waiting: bool) {
        let msg = format!("READY {free} {} {}", self.seen.get(), u8::from(waiting));
        self.sock.send(msg.as_bytes(), 0).unwrap();
    }

    /// The flag and frame of the next message, skipping liveness probes.
    fn next_flag(&self) -> (String, Vec<u8>) {
        loop {
            let parts = next(&self.sock);
            assert_eq!(parts.len(), 2, "{parts:?}");
            let flag = String::from_utf8_lossy(&parts[0]).into_owned();
            if flag == "A" {
                self.seen.set(self.seen.get() + 1);
            }
            if flag != "P" {
                return (flag, parts[1].clone());
            }
        }
    }
}

/// A device on a thread, stopped on drop.
struct RunningDevice {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    endpoint: String,
}

impl RunningDevice {
    fn start(send_spec: &str, recv_spec: &str) -> Self {
        let device =
            Device::bind_with_reply(send_spec, recv_spec, "tcp://127.0.0.1:*#bind").unwrap();
        let endpoint = device.endpoint().to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || device.run(&flag).unwrap());
        RunningDevice {
            stop,
            thread: Some(thread),
            endpoint,
        }
    }
}

impl Drop for RunningDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A worker that starts while Mongrel2 is down gets the restart confirmed when it says it is
/// waiting for it, once, and only while the device has no Mongrel2; a worker that does not
/// say so gets nothing; a worker with no free slots gets no request.
#[test]
fn a_worker_that_joined_during_a_restart_gets_the_loss_confirmed_once() {
    let ctx = zmq::Context::new();
    let push = bind(&ctx, zmq::PUSH, "tcp://127.0.0.1:*");
    let send_spec = endpoint(&push);
    let sub = bind(&ctx, zmq::SUB, "tcp://127.0.0.1:*");
    let recv_spec = endpoint(&sub);
    let device = RunningDevice::start(&send_spec, &recv_spec);
    let request = |conn: u64| RequestBuilder::get("/x").conn_id(conn).build();

    // A worker is known, and the device reads from Mongrel2.
    let a = Worker::connect(&ctx, &device.endpoint);
    a.ready(1, false);
    push.send(request(1), 0).unwrap();
    assert_eq!(a.next_flag(), ("A".to_owned(), request(1)));

    // Mongrel2 goes: the known worker gets `R`.
    drop(push);
    assert_eq!(a.next_flag().0, "R");

    // A worker that joins now and waits for the confirmation gets it, once, however often it
    // asks; one that does not wait gets none.
    let b = Worker::connect(&ctx, &device.endpoint);
    b.ready(0, true);
    assert_eq!(b.next_flag().0, "R");
    b.ready(0, true);
    let c = Worker::connect(&ctx, &device.endpoint);
    c.ready(0, false);

    // A new Mongrel2 on the same port. B and C still announce no free slots; the request goes
    // to A (which then has none), and nothing else reached B or C before what follows.
    let push = bind(&ctx, zmq::PUSH, &send_spec);
    a.ready(1, false);
    push.send(request(2), 0).unwrap();
    assert_eq!(a.next_flag(), ("A".to_owned(), request(2)));
    b.ready(1, false);
    c.ready(1, false);
    push.send(request(3), 0).unwrap();
    push.send(request(4), 0).unwrap();
    let mut got = [b.next_flag(), c.next_flag()];
    got.sort();
    assert_eq!(
        got,
        [("A".to_owned(), request(3)), ("A".to_owned(), request(4))]
    );

    // With Mongrel2 connected, a worker that joins and says it waits gets no `R`: the device
    // cannot tell which restart it means (it sends one when its own link breaks).
    let d = Worker::connect(&ctx, &device.endpoint);
    d.ready(1, true);
    push.send(request(5), 0).unwrap();
    assert_eq!(d.next_flag(), ("A".to_owned(), request(5)));
}

/// A worker behind a device announces no free slots from the moment Mongrel2's subscription
/// is withdrawn until it can answer again, and says it waits until the device confirms the
/// loss. What comes meanwhile waits: dropped if the device's `R` says it came from the old
/// Mongrel2, handed out once the new one has subscribed otherwise.
#[test]
fn a_worker_holds_what_it_cannot_answer_and_announces_no_slots() {
    let ctx = zmq::Context::new();
    let router = bind(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    let push = bind(&ctx, zmq::PUSH, "tcp://127.0.0.1:*");
    let recv_spec = {
        let probe = bind(&ctx, zmq::SUB, "tcp://127.0.0.1:*");
        endpoint(&probe)
    };
    let conn = Connection::builder(endpoint(&push))
        .recv_spec(recv_spec.clone())
        .device(endpoint(&router))
        .connect()
        .unwrap();
    conn.set_capacity(4);
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(Arc::clone(&stop));
    let (tx, received) = std::sync::mpsc::channel();
    let receiver = {
        let (conn, stop) = (conn.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(Some(msg)) = conn.recv(Duration::from_millis(20)) {
                    let _ = tx.send(msg.conn_id());
                }
            }
        })
    };
    // Mongrel2's SUB: the worker attaches to the device once it has subscribed. A bound
    // socket takes new peers only when its owner calls into it, so it is polled meanwhile.
    let subscribe = || {
        let sub = bind(&ctx, zmq::SUB, &recv_spec);
        sub.set_subscribe(b"").unwrap();
        sub
    };
    let ready_until = |want: &str, sub: Option<&zmq::Socket>| -> Vec<u8> {
        let deadline = Instant::now() + T;
        loop {
            assert!(Instant::now() < deadline, "no {want:?} within {T:?}");
            if let Some(s) = sub {
                let _ = s.poll(zmq::POLLIN, 0);
            }
            if router.poll(zmq::POLLIN, 10).unwrap() == 0 {
                continue;
            }
            let parts = router.recv_multipart(0).unwrap();
            if parts[1] == want.as_bytes() {
                return parts[0].clone();
            }
        }
    };
    let send = |id: &[u8], flag: &[u8], frame: &[u8]| {
        router.send(id, zmq::SNDMORE).unwrap();
        router.send(flag, zmq::SNDMORE).unwrap();
        router.send(frame, 0).unwrap();
    };
    let request = |c: u64| RequestBuilder::get("/x").conn_id(c).build();

    let sub = subscribe();
    let id = ready_until("READY 4 0 0", Some(&sub));
    drop(sub);
    ready_until("READY 0 0 1", None);
    // From the Mongrel2 that went away (the device's `R` follows it): never handed out.
    send(&id, b"A", &request(1));
    ready_until("READY 0 1 1", None);
    send(&id, b"R", b"");
    ready_until("READY 0 1 0", None);
    // From the new Mongrel2, before it subscribed: handed out once it has.
    send(&id, b"A", &request(2));
    ready_until("READY 0 2 0", None);
    assert!(
        received.try_recv().is_err(),
        "handed out before Mongrel2 subscribed"
    );
    let sub = subscribe();
    ready_until("READY 4 2 0", Some(&sub));
    assert_eq!(received.recv_timeout(T), Ok(2));
    stop.store(true, Ordering::SeqCst);
    receiver.join().unwrap();
    assert_eq!(received.try_iter().collect::<Vec<_>>(), Vec::<u64>::new());
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
