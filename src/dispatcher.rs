//! The dispatcher: the one thread that reads from Mongrel2, keeps per-connection state
//! (download credits, upload progress, disconnects, who owns the connection) and hands each
//! message to the connection's owner or to an idle worker.

use crate::conn_state::{ConnState, GaveUp, Job, MAX_CREDITS};
use crate::error::Error;
use crate::responder::reject;
use crate::transport::Connection;
use crate::upload::{check_upload, UploadFile, UploadRefusal};
use crate::{Message, MessageKind};
use http::StatusCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

/// How often the dispatcher wakes to look at the stop flag (a signal handler can only set a
/// flag): the first step of a drain waits at most this long.
pub(crate) const POLL: Duration = Duration::from_millis(25);
/// How often forgotten connection state is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Connection state untouched this long, with nothing in flight, is forgotten (for clients whose
/// disconnect notice never came).
const IDLE_STATE: Duration = Duration::from_secs(600);
/// Connection state that holds nothing a later message needs (no request in flight, no async
/// upload under way, the download window full again) is forgotten after this long idle: the
/// next message on the connection starts afresh. Mongrel2 sends no disconnect notice for a
/// client that leaves while it writes a response, so without this a busy server would keep the
/// state of every such connection for [`IDLE_STATE`].
const SETTLED_IDLE: Duration = Duration::from_secs(5);

/// Where the dispatcher hands the messages of connections nobody owns: the worker threads'
/// queue of a [`Server`](crate::Server), or the tasks of the async runtime.
pub(crate) trait Handoff: Send + Sync {
    /// Takes the job of a connection the caller has just marked busy (owned); its owner takes
    /// the connection's later messages with [`ConnState::next_pending`].
    fn hand_off(&self, st: Arc<ConnState>, job: Job);
}

/// Reads from Mongrel2 and routes; see the module docs.
pub(crate) struct Dispatcher {
    conn: Connection,
    shared: Arc<dyn Handoff>,
    states: HashMap<u64, Arc<ConnState>>,
    /// The most streamed uploads read at once; more get 503.
    max_streams: usize,
    /// The largest request body taken ([`Server::max_body`](crate::Server::max_body)); larger
    /// ones get 413.
    max_body: Option<u64>,
    /// The connection's epoch the states belong to.
    epoch: u64,
    last_sweep: Instant,
    /// The shutdown deadline, once `stop` was seen.
    stopping: Option<Instant>,
    /// Set once routing is finished (drained, or the deadline passed).
    finished: Option<Instant>,
}

impl Dispatcher {
    pub(crate) fn new(
        conn: Connection,
        shared: Arc<dyn Handoff>,
        max_streams: usize,
        max_body: Option<u64>,
    ) -> Self {
        Self {
            max_streams,
            max_body,
            epoch: conn.epoch(),
            conn,
            shared,
            states: HashMap::new(),
            last_sweep: Instant::now(),
            stopping: None,
            finished: None,
        }
    }

    /// Routes messages until `stop` is set and what was already received is drained; returns
    /// the shutdown deadline (`grace` after `stop` was seen).
    ///
    /// After `stop` it goes on routing while requests are in flight (their download credits,
    /// upload slices and async-upload done messages still come behind a device), until nothing
    /// new can arrive ([`Connection::is_drained`]) and nothing is in flight, or the deadline.
    pub(crate) fn run(&mut self, stop: &AtomicBool, grace: Duration) -> Instant {
        loop {
            if let Some(deadline) = self.step(stop, grace, POLL) {
                return deadline;
            }
        }
    }

    /// One turn of [`run`](Self::run): waits up to `wait` for a message and routes it (a caller
    /// looping waits at most [`POLL`] at a time, so that `stop` is seen). Returns the shutdown deadline once routing is finished (and from then on at once).
    ///
    /// Whoever holds the dispatcher may call it: the thread that reads from Mongrel2 can
    /// change from one message to the next (see `reader`).
    pub(crate) fn step(
        &mut self,
        stop: &AtomicBool,
        grace: Duration,
        wait: Duration,
    ) -> Option<Instant> {
        if self.finished.is_some() {
            return self.finished;
        }
        if self.stopping.is_none() && stop.load(Ordering::SeqCst) {
            self.stopping = Some(Instant::now() + grace);
            tracing::info!("shutting down: no new requests; draining what was received");
            self.conn.stop_receiving();
        }
        let got = self.conn.recv(wait);
        // Only the holder of the dispatcher advances the epoch, inside `recv`: a message just
        // returned belongs to the epoch read now.
        self.check_epoch();
        match got {
            Ok(Some(msg)) => self.route(msg),
            Ok(None) => {
                if let Some(deadline) = self.stopping {
                    let done = self.conn.is_drained() && !self.in_flight();
                    if done || Instant::now() >= deadline {
                        self.finished = Some(deadline);
                        return self.finished;
                    }
                }
            }
            Err(Error::Parse(e)) => {
                tracing::warn!("skipping malformed message from Mongrel2: {e}")
            }
            Err(e) => {
                tracing::error!("receiving from Mongrel2: {e}");
                // A caller that may not wait (a WSGI thread holding the GIL) gets its answer
                // now; the next waiting step backs off.
                if !wait.is_zero() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if self.last_sweep.elapsed() > SWEEP_EVERY {
            self.sweep();
        }
        None
    }

    /// The shutdown deadline, once routing is finished.
    pub(crate) fn finished(&self) -> Option<Instant> {
        self.finished
    }

    /// The connections known when routing stopped (for answering what is still running at the
    /// shutdown deadline), leaving the dispatcher empty.
    pub(crate) fn take_states(&mut self) -> Vec<Arc<ConnState>> {
        self.states.drain().map(|(_, st)| st).collect()
    }

    /// After Mongrel2 restarted, every known connection is gone: its handlers see
    /// `is_disconnected()`, its waits end, its messages still queued are dropped, and the ids
    /// are free for the new server's clients.
    fn check_epoch(&mut self) {
        let epoch = self.conn.epoch();
        if epoch == self.epoch {
            return;
        }
        self.epoch = epoch;
        let n = self.states.len();
        for (_, st) in self.states.drain() {
            let mut g = st.lock();
            g.disconnected = true;
            g.pending.clear();
            drop(g);
            st.notify();
        }
        if n > 0 {
            tracing::warn!("{n} client connection(s) of the previous Mongrel2 dropped");
        }
    }

    /// Whether a request is still being answered, or (behind a device) an async upload's done
    /// message is still to come.
    fn in_flight(&self) -> bool {
        let device = self.conn.device_spec().is_some();
        self.states.values().any(|st| {
            let g = st.lock();
            g.busy || (device && g.upload_start.is_some())
        })
    }

    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        self.states.retain(|_, st| {
            let g = st.lock();
            let settled = g.pending.is_empty()
                && g.upload_start.is_none()
                && g.upload_refused.is_none()
                && g.credits.is_none_or(|c| c >= MAX_CREDITS);
            let keep_for = if settled { SETTLED_IDLE } else { IDLE_STATE };
            Arc::strong_count(st) > 1
                || g.busy
                || g.last_seen.is_some_and(|t| t.elapsed() < keep_for)
        });
    }

    fn state(&mut self, id: u64) -> Arc<ConnState> {
        let st = self
            .states
            .entry(id)
            .or_insert_with(|| Arc::new(ConnState::new(id, self.epoch, self.conn.clone())));
        st.lock().last_seen = Some(Instant::now());
        Arc::clone(st)
    }

    fn route(&mut self, msg: Message) {
        let id = msg.conn_id();
        match msg.kind().clone() {
            MessageKind::Credits { bytes } => {
                if let Some(st) = self.states.get(&id) {
                    st.add_credits(bytes);
                }
            }
            MessageKind::Disconnect => {
                if let Some(st) = self.states.remove(&id) {
                    st.lock().disconnected = true;
                    st.notify();
                    self.enqueue(st, Job { msg, upload: None });
                }
            }
            MessageKind::UploadStream { done, .. } => {
                if let Some(st) = self.states.get(&id) {
                    let received = st.push_upload_slice(msg.body().clone(), done, self.max_body);
                    // A body without a length (chunked) is stopped once it grows past the
                    // limit; the handler reading it gets an error.
                    if self.over_limit(received) {
                        let did = st.give_up(&self.conn, StatusCode::PAYLOAD_TOO_LARGE);
                        if did != GaveUp::Nothing {
                            tracing::warn!(
                                "connection {id}: streamed request body passed the limit of {} \
                                 bytes ({received} received); {}",
                                self.max_body.unwrap_or(0),
                                if did == GaveUp::Answered {
                                    "413"
                                } else {
                                    "dropping the connection (the answer had started)"
                                }
                            );
                        }
                    }
                }
            }
            MessageKind::UploadStart { path } => {
                let st = self.state(id);
                if self.conn.upload_policy().upload_dir.is_none() {
                    static ONCE: Once = Once::new();
                    ONCE.call_once(|| {
                        tracing::error!(
                            "refusing async uploads with 413: no upload directory is set (set \
                             upload_dir on the connection builder, or --upload-dir, to the \
                             directory of Mongrel2's upload.temp_store)"
                        )
                    });
                    reject(&self.conn, self.epoch, &msg, StatusCode::PAYLOAD_TOO_LARGE);
                    // Remembered so the done message that follows is known as answered.
                    st.lock().upload_refused = Some(path);
                    return;
                }
                // Mongrel2 creates the temp file before it sends the start message, which has
                // an empty body. A client can send the header itself (with any path and a body):
                // refuse it here rather than wait for a done message that never comes.
                if let Err(e) = check_upload(self.conn.upload_policy(), &path, &path) {
                    tracing::warn!(
                        "connection {id}: upload start refused: {e}: {}; 400",
                        self.conn.upload_policy().explain(&path)
                    );
                    reject(&self.conn, self.epoch, &msg, StatusCode::BAD_REQUEST);
                    return;
                }
                if !msg.body().is_empty() {
                    tracing::warn!(
                        "connection {id}: upload start with a body (a spoofed header); 400"
                    );
                    reject(&self.conn, self.epoch, &msg, StatusCode::BAD_REQUEST);
                    return;
                }
                // The start message carries the request's headers: a body announced above the
                // limit is refused before Mongrel2 has finished writing it.
                if let Some(len) = msg.content_length().filter(|&n| self.over_limit(n)) {
                    // Verified above, so the file is Mongrel2's: delete it now. Mongrel2 goes
                    // on writing into the unlinked file until it sees the connection closed
                    // (then it unlinks the name itself) or the body is complete (then the done
                    // message comes, and is swallowed); either way nothing is left.
                    self.remove_verified(&path);
                    st.lock().upload_refused = Some(path);
                    self.refuse_too_large(&msg, len, "async upload");
                    return;
                }
                st.lock().upload_start = Some(path);
            }
            MessageKind::UploadDone { start, done } => {
                let st = self.state(id);
                let (expected, refused) = {
                    let mut g = st.lock();
                    (g.upload_start.take(), g.upload_refused.take())
                };
                if refused.as_ref() == Some(&start) {
                    // Answered (413) at its start. Its file was deleted then; deleting again
                    // covers a file that came back under the same name.
                    tracing::debug!("connection {id}: done of an upload refused at its start");
                    self.remove_verified(&start);
                    return;
                }
                if expected.as_ref() != Some(&start) {
                    tracing::warn!(
                        "connection {id}: {} (done names {:?}); 400",
                        UploadRefusal::NoStart,
                        String::from_utf8_lossy(&start)
                    );
                    reject(&self.conn, self.epoch, &msg, StatusCode::BAD_REQUEST);
                    // The start that did come was verified: its file is Mongrel2's, not needed.
                    if let Some(verified) = expected {
                        self.remove_verified(&verified);
                    }
                    return;
                }
                match check_upload(self.conn.upload_policy(), &start, &done) {
                    Ok(path) => {
                        // A body without a length (chunked) is measured once it is complete.
                        if let Some(len) = self.file_over_limit(&path) {
                            drop(UploadFile::new(path));
                            self.refuse_too_large(&msg, len, "async upload, once complete");
                            return;
                        }
                        self.enqueue(
                            st,
                            Job {
                                msg,
                                upload: Some(path),
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(
                            "connection {id}: upload refused: {e}: {}; 400",
                            self.conn.upload_policy().explain(&done)
                        );
                        reject(&self.conn, self.epoch, &msg, StatusCode::BAD_REQUEST);
                        self.remove_verified(&start);
                    }
                }
            }
            _ => {
                if msg.kind() == &MessageKind::Request {
                    // Inline bodies, and the first message of a streamed upload: the declared
                    // length, or what is there.
                    let len = msg
                        .content_length()
                        .unwrap_or(0)
                        .max(msg.body().len() as u64);
                    if self.over_limit(len) {
                        let what = if msg.upload_stream().is_some() {
                            "streamed upload"
                        } else {
                            "inline"
                        };
                        self.refuse_too_large(&msg, len, what);
                        return;
                    }
                }
                let st = self.state(id);
                {
                    let mut g = st.lock();
                    if let Some(c) = msg.download_credits() {
                        if g.credits.is_none() {
                            g.credits = Some(c);
                        }
                    } else if g.credits.is_none() && self.conn.flow_control() && msg.is_request() {
                        g.credits = Some(MAX_CREDITS);
                    }
                }
                if msg.upload_stream().is_some() {
                    if !msg.upload_stream_done() && self.open_streams() >= self.max_streams {
                        tracing::warn!(
                            "connection {id}: {} streamed uploads are open already (the most \
                             this server takes at once); 503",
                            self.max_streams
                        );
                        reject(
                            &self.conn,
                            self.epoch,
                            &msg,
                            StatusCode::SERVICE_UNAVAILABLE,
                        );
                        return;
                    }
                    st.start_upload_stream(msg.upload_stream_done(), msg.body().len());
                }
                self.enqueue(st, Job { msg, upload: None });
            }
        }
    }

    /// Whether a request body of `len` bytes is above the limit.
    fn over_limit(&self, len: u64) -> bool {
        self.max_body.is_some_and(|max| len > max)
    }

    /// The size of a complete upload file, when it is above the limit.
    fn file_over_limit(&self, path: &std::path::Path) -> Option<u64> {
        self.max_body?;
        let len = std::fs::metadata(path).ok()?.len();
        self.over_limit(len).then_some(len)
    }

    /// Answers `413` to a request whose body (of `len` bytes, `what` kind) is above the limit,
    /// before any handler sees it, and closes the connection.
    fn refuse_too_large(&self, msg: &Message, len: u64, what: &str) {
        tracing::warn!(
            "connection {}: request body of {len} bytes ({what}) is above the limit of {} \
             bytes; 413",
            msg.conn_id(),
            self.max_body.unwrap_or(0)
        );
        reject(&self.conn, self.epoch, msg, StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// Deletes the temp file of an upload whose start message was verified (so the file is
    /// Mongrel2's) but that is refused after all.
    fn remove_verified(&self, start: &[u8]) {
        if let Ok(path) = check_upload(self.conn.upload_policy(), start, start) {
            drop(UploadFile::new(path));
        }
    }

    /// Streamed uploads being read now.
    fn open_streams(&self) -> usize {
        self.states.values().filter(|st| st.streaming()).count()
    }

    /// Gives the job to the connection's owner, or to the next idle worker when nobody owns
    /// the connection.
    fn enqueue(&mut self, st: Arc<ConnState>, job: Job) {
        {
            let mut g = st.lock();
            if g.busy {
                g.pending.push_back(job);
                return;
            }
            g.busy = true;
            g.answering = false;
        }
        self.shared.hand_off(st, job);
    }
}
