//! [`FakeMongrel2`]: Mongrel2's two sockets on loopback, for a handler under test.

use super::http::{ClientOutput, HttpResponse, Reply};
use super::request::{disconnect, RequestBuilder};
use super::DEFAULT_SENDER;
use m2wsgi::codec::HeaderProtocol;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the fake's SUB socket is polled (a bound socket attaches new peers only when its
/// owner calls into it, so it is polled all the time, as Mongrel2 does).
const POLL_MS: i64 = 10;

/// Stands in for Mongrel2: a PUSH socket (requests) and a SUB socket (replies, subscribed to
/// everything) bound on `tcp://127.0.0.1:*`. Point a [`Connection`](m2wsgi::Connection) at
/// [`send_spec`](Self::send_spec) and [`recv_spec`](Self::recv_spec).
///
/// A thread polls the SUB socket from the start, so the handler's subscription is seen (the
/// runtime connects its request socket only after that) and replies are collected. Everything
/// is stopped on drop. Loopback TCP rather than `inproc://`: with libzmq 4.3 a PUB connecting to
/// a bound SUB in the same process never completes its handshake over `inproc://`.
pub struct FakeMongrel2 {
    push: Mutex<zmq::Socket>,
    send_spec: String,
    recv_spec: String,
    sender: String,
    replies: Mutex<Receiver<Vec<u8>>>,
    state: Mutex<Collected>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _ctx: zmq::Context,
}

#[derive(Debug, Default)]
struct Collected {
    /// Replies received but not yet handed out by `recv_reply`.
    pending: std::collections::VecDeque<Reply>,
    /// What each connection id received (every reply counts, handed out or not).
    clients: HashMap<u64, ClientOutput>,
}

impl std::fmt::Debug for FakeMongrel2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMongrel2")
            .field("send_spec", &self.send_spec)
            .field("recv_spec", &self.recv_spec)
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl Default for FakeMongrel2 {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeMongrel2 {
    /// Binds both sockets on loopback ports chosen by the system and starts polling.
    ///
    /// # Panics
    /// When ZeroMQ cannot create or bind the sockets.
    pub fn new() -> Self {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).expect("PUSH socket");
        push.set_linger(0).expect("linger");
        // A handler that never connects makes `send` fail instead of hanging.
        push.set_sndtimeo(10_000).expect("sndtimeo");
        push.bind("tcp://127.0.0.1:*").expect("bind PUSH");
        let sub = ctx.socket(zmq::SUB).expect("SUB socket");
        sub.set_linger(0).expect("linger");
        sub.set_subscribe(b"").expect("subscribe");
        sub.bind("tcp://127.0.0.1:*").expect("bind SUB");
        let send_spec = push.get_last_endpoint().expect("endpoint").expect("utf-8");
        let recv_spec = sub.get_last_endpoint().expect("endpoint").expect("utf-8");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("fake-mongrel2".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match sub.poll(zmq::POLLIN, POLL_MS) {
                            Ok(n) if n > 0 => {
                                while let Ok(frame) = sub.recv_bytes(zmq::DONTWAIT) {
                                    if tx.send(frame).is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(_) | Err(zmq::Error::EINTR) => {}
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn the fake Mongrel2's thread")
        };
        FakeMongrel2 {
            push: Mutex::new(push),
            send_spec,
            recv_spec,
            sender: DEFAULT_SENDER.to_owned(),
            replies: Mutex::new(rx),
            state: Mutex::new(Collected::default()),
            stop,
            thread: Some(thread),
            _ctx: ctx,
        }
    }

    /// Where requests come from (Mongrel2's `send_spec`): connect the handler's PULL here.
    pub fn send_spec(&self) -> &str {
        &self.send_spec
    }

    /// Where replies go (Mongrel2's `recv_spec`): connect the handler's PUB here.
    pub fn recv_spec(&self) -> &str {
        &self.recv_spec
    }

    /// The sender the builder uses by default ([`DEFAULT_SENDER`]); give it to the handler as
    /// its `send_ident`.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// Pushes one frame to the handler (from [`RequestBuilder::build`], [`disconnect`], or any
    /// bytes at all).
    ///
    /// # Panics
    /// When the frame cannot be sent within 10 s (no handler connected).
    pub fn send(&self, frame: impl Into<Vec<u8>>) {
        let frame: Vec<u8> = frame.into();
        self.push
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(frame, 0)
            .expect("the fake Mongrel2 could not push a frame (is a handler connected?)");
    }

    /// Pushes a request and returns its connection id.
    pub fn send_request(&self, req: &RequestBuilder) -> u64 {
        self.send(req.build());
        req.id()
    }

    /// Sends Mongrel2's disconnect notice for `conn_id` (tnetstring headers).
    pub fn disconnect(&self, conn_id: u64) {
        self.send(disconnect(
            &self.sender,
            conn_id,
            HeaderProtocol::Tnetstring,
        ));
    }

    /// Moves replies that arrived into the collected state; waits up to `wait` for the first.
    fn pump(&self, wait: Duration) {
        let rx = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        let mut frames = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(f) => frames.push(f),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        frames.extend(rx.try_iter());
        drop(rx);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for frame in frames {
            let reply = Reply::parse(&frame).unwrap_or_else(|| {
                panic!(
                    "the handler sent a malformed reply: {:?}",
                    String::from_utf8_lossy(&frame)
                )
            });
            for &id in &reply.conn_ids {
                let c = st.clients.entry(id).or_default();
                if reply.extended {
                    c.ctl.push(reply.body.to_vec());
                } else if reply.body.is_empty() {
                    c.closed = true;
                } else {
                    c.data.extend_from_slice(&reply.body);
                    c.messages += 1;
                }
            }
            st.pending.push_back(reply);
        }
    }

    /// The next reply the handler published, waiting up to `timeout`; `None` if none came.
    ///
    /// # Panics
    /// When the handler published something that is not a reply frame.
    pub fn recv_reply(&self, timeout: Duration) -> Option<Reply> {
        let deadline = Instant::now() + timeout;
        let mut last = false;
        loop {
            let next = self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pending
                .pop_front();
            if next.is_some() || last {
                return next;
            }
            // Looks at least once, so a zero timeout still takes what has arrived.
            let left = deadline.saturating_duration_since(Instant::now());
            self.pump(left.min(Duration::from_millis(50)));
            last = Instant::now() >= deadline;
        }
    }

    /// What client `conn_id` received so far (every reply counts, whether or not
    /// [`recv_reply`](Self::recv_reply) handed it out).
    pub fn client(&self, conn_id: u64) -> ClientOutput {
        self.pump(Duration::ZERO);
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clients
            .get(&conn_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for `done` to hold for client `conn_id`'s output.
    pub fn wait_client(
        &self,
        conn_id: u64,
        timeout: Duration,
        mut done: impl FnMut(&ClientOutput) -> bool,
    ) -> Option<ClientOutput> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.client(conn_id);
            if done(&c) {
                return Some(c);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.pump(left.min(Duration::from_millis(20)));
        }
    }

    /// Waits up to `timeout` for a whole HTTP response to client `conn_id`.
    ///
    /// # Panics
    /// When what the client received is not an HTTP response.
    pub fn read_response(&self, conn_id: u64, timeout: Duration) -> Option<HttpResponse> {
        self.read_response_with(conn_id, false, timeout)
    }

    /// [`read_response`](Self::read_response) for an answer to `HEAD` when `head_only`.
    ///
    /// # Panics
    /// When what the client received is not an HTTP response.
    pub fn read_response_with(
        &self,
        conn_id: u64,
        head_only: bool,
        timeout: Duration,
    ) -> Option<HttpResponse> {
        let mut resp = None;
        self.wait_client(conn_id, timeout, |c| {
            resp = HttpResponse::parse(&c.data, head_only, c.ended())
                .unwrap_or_else(|e| panic!("connection {conn_id}: {e}"));
            resp.is_some()
        })?;
        resp
    }
}

impl Drop for FakeMongrel2 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
