//! [`serve`] and [`Serve`]: a `tower::Service` answering Mongrel2's requests on tokio.
//!
//! One dispatcher thread per Mongrel2 connection reads the request socket, keeps the state of
//! every client connection (download credits, upload slices, disconnects, ownership), checks
//! uploads and body limits, and sends each message to the serving task through a channel:
//! the same dispatcher as the threaded [`Server`](crate::Server). The serving task waits for
//! a free slot and the service's readiness, calls the service, and spawns a task that writes
//! the response, then answers the connection's later messages in order (one owner per client
//! connection, as in the threaded server).

use super::body::RequestBody;
use super::feed::{Fed, Feed};
use super::request::http_request;
use super::respond::{write_response, BoxError, Sent};
use super::websocket::{Sockets, WebSocketUpgrade};
use crate::conn_state::{ConnState, Job};
use crate::dispatcher::Dispatcher;
use crate::error::{Error, Result};
use crate::responder::{simple_response, Responder};
use crate::server::{install_signal_handlers, ShutdownHandle};
use crate::transport::Connection;
use crate::upload::UploadFile;
use crate::{Message, MessageKind};
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use std::future::{Future, IntoFuture};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

/// A request's first poll runs on the serving task while first polls take less than this.
const SLOW_FIRST_POLL: Duration = Duration::from_millis(1);

/// A service [`serve`] runs: any [`tower::Service`](tower_service::Service) taking an
/// `http::Request<RequestBody>` and returning an `http::Response<B>`, `Clone + Send + 'static`,
/// with a `Send + 'static` future and an error that converts into a boxed error (an axum
/// `Router`, a `tower::ServiceBuilder` stack, a `service_fn`). Implemented for every such
/// service; nothing to implement by hand.
pub trait HttpService<B>:
    Service<
        Request<RequestBody>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<
            Request<RequestBody>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body [`serve`] can send: any [`http_body::Body`] that is `Send + 'static`, with
/// `Send` data and an error that converts into a boxed error. Implemented for every such body.
pub trait ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> ResponseBody for B where B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

/// The most requests handled at once unless [`Serve::concurrency_limit`] says otherwise.
const DEFAULT_LIMIT: usize = 1024;

/// Serves `service` over `conn` until shutdown: every HTTP request Mongrel2 sends (inline
/// bodies, async uploads, streamed uploads, WebSocket handshakes) is turned into an
/// [`http::Request<RequestBody>`](RequestBody), and the [`http::Response`] the service
/// returns is written back, its body streamed.
///
/// `service` is any [`tower::Service`](tower_service::Service) over `http` types: an axum
/// `Router`, a `tower::ServiceBuilder` stack, a `service_fn`. It is cloned for each request
/// that cannot use the first (a later request on a busy client connection).
///
/// Returns a [`Serve`], to configure and then `.await`:
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use m2wsgi::Connection;
///
/// # async fn run() -> m2wsgi::Result<()> {
/// let app = Router::new().route("/", get(|| async { "Hello, world!" }));
/// let conn = Connection::builder("tcp://127.0.0.1:9999").connect()?;
/// m2wsgi::serve(conn, app)
///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
pub fn serve<S, B>(conn: Connection, service: S) -> Serve<S>
where
    S: HttpService<B>,
    B: ResponseBody,
{
    Serve {
        conns: vec![conn],
        service,
        limit: DEFAULT_LIMIT,
        grace: Duration::from_secs(30),
        signals: false,
        stop: Arc::new(AtomicBool::new(false)),
        shutdown: None,
        max_body: None,
        max_streams: None,
    }
}

/// A service being set up to serve over Mongrel2; `.await` it to serve until shutdown. Made
/// by [`serve`].
#[must_use = "nothing is served until the Serve is awaited"]
pub struct Serve<S> {
    conns: Vec<Connection>,
    service: S,
    limit: usize,
    grace: Duration,
    signals: bool,
    stop: Arc<AtomicBool>,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    max_body: Option<u64>,
    max_streams: Option<usize>,
}

impl<S> std::fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("conns", &self.conns)
            .field("limit", &self.limit)
            .field("grace", &self.grace)
            .field("signals", &self.signals)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl<S> Serve<S> {
    /// Also take requests from another Mongrel2 server (see [`Server::also`](crate::Server::also)).
    pub fn also(mut self, conn: Connection) -> Self {
        self.conns.push(conn);
        self
    }

    /// The most requests handled at once (at least 1; default 1024). Beyond it, requests
    /// wait in arrival order; behind a [`Device`](crate::Device) the device is told, and sends
    /// them to other workers.
    pub fn concurrency_limit(mut self, n: usize) -> Self {
        self.limit = n.max(1);
        self
    }

    /// How long in-flight requests may take to finish once shutdown starts (default 30 s).
    /// Past it, a request not yet answered gets `503` and one whose answer had started is
    /// dropped.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Install SIGINT/SIGTERM handlers when serving starts: the first signal starts a
    /// graceful shutdown, a second exits at once (see
    /// [`install_signal_handlers`](crate::install_signal_handlers)).
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Starts a graceful shutdown when `signal` completes, as axum's `with_graceful_shutdown`:
    /// no new requests are taken (behind a device, the leave handshake; directly on
    /// Mongrel2, the request socket is disconnected), what was already received is answered,
    /// in-flight requests get until the [`shutdown_timeout`](Serve::shutdown_timeout), then
    /// the future returns.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// A handle that starts the graceful shutdown from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(Arc::clone(&self.stop))
    }

    /// The largest request body taken (see [`Server::max_body`](crate::Server::max_body)).
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = Some(bytes);
        self
    }

    /// The most streamed uploads read at once; more get `503` (default: half the concurrency
    /// limit).
    pub fn max_streamed_uploads(mut self, n: usize) -> Self {
        self.max_streams = Some(n.max(1));
        self
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    // `Response = Response<B>` names `B` for the impl.
    S: HttpService<B> + Service<Request<RequestBody>, Response = Response<B>>,
    B: ResponseBody,
{
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// What every task of one [`Serve`] shares.
struct Ctx {
    feed: Arc<Feed>,
    sockets: Arc<Sockets>,
}

impl<S> Serve<S> {
    async fn run<B>(self) -> Result<()>
    where
        S: HttpService<B>,
        B: ResponseBody,
    {
        if self.signals {
            install_signal_handlers(&self.stop)?;
        }
        let (feed, mut rx) = Feed::new(self.conns.clone(), self.limit);
        let ctx = Arc::new(Ctx {
            feed: Arc::clone(&feed),
            sockets: Arc::default(),
        });
        // The shutdown signal sets the flag the dispatchers watch.
        let watcher = self.shutdown.map(|signal| {
            let stop = Arc::clone(&self.stop);
            tokio::spawn(async move {
                signal.await;
                stop.store(true, Ordering::SeqCst);
            })
        });
        let max_streams = self.max_streams.unwrap_or((self.limit / 2).max(1));
        let mut dispatchers = Vec::new();
        for (i, conn) in self.conns.iter().enumerate() {
            let (feed, stop, grace, max_body) = (
                Arc::clone(&feed),
                Arc::clone(&self.stop),
                self.grace,
                self.max_body,
            );
            let mut d = Dispatcher::new(conn.clone(), feed.clone(), max_streams, max_body);
            let spawned = std::thread::Builder::new()
                .name(format!("m2wsgi-dispatch-{i}"))
                .spawn(move || {
                    let deadline = d.run(&stop, grace);
                    feed.stopped(deadline, d.take_states());
                });
            match spawned {
                Ok(t) => dispatchers.push(t),
                Err(e) => {
                    self.stop.store(true, Ordering::SeqCst);
                    tracing::error!("cannot start a dispatcher: {e}");
                }
            }
        }
        let slots = Arc::new(Semaphore::new(self.limit));
        let mut service = self.service;
        let mut tasks = tokio::task::JoinSet::new();
        let mut inline = true;
        let (mut stopped, mut deadline, mut states) = (0, Instant::now(), Vec::new());
        while stopped < dispatchers.len() {
            let Some(fed) = rx.recv().await else { break };
            let (st, job) = match fed {
                Fed::Stopped(d, s) => {
                    stopped += 1;
                    deadline = deadline.max(d);
                    states.extend(s);
                    continue;
                }
                Fed::Job(st, job) => (st, job),
            };
            feed.taken();
            let Some(job) = ctx.notices(&st, job) else {
                continue;
            };
            // Back-pressure: a free slot, then the service's readiness, before taking more.
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    feed.set_ready(false);
                    Arc::clone(&slots)
                        .acquire_owned()
                        .await
                        .map_err(|_| Error::Closed)?
                }
            };
            let ready = std::future::poll_fn(|cx| match service.poll_ready(cx) {
                Poll::Pending => {
                    feed.set_ready(false);
                    Poll::Pending
                }
                other => other,
            })
            .await
            .map_err(Into::<BoxError>::into);
            feed.set_ready(true);
            if let Err(e) = ready {
                tracing::error!("the service failed and cannot take requests: {e}; stopping");
                ctx.refuse(&st, job);
                self.stop.store(true, Ordering::SeqCst);
                continue;
            }
            let call = ctx.call(&mut service, &st, job);
            feed.running(true);
            let mut task: Pin<Box<dyn Future<Output = ()> + Send>> =
                Box::pin(owner(service.clone(), Arc::clone(&ctx), st, call, permit));
            if inline {
                // The request's first poll runs here: a hello world is answered without a
                // task of its own, which on a multi-thread runtime saves waking a second
                // worker thread per request (the async bench: 1.07x the spawning version). A
                // service whose first poll is slow would hold up the requests behind it, so
                // one slow poll ends this for good.
                let started = Instant::now();
                let done =
                    std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx).is_ready())).await;
                let took = started.elapsed();
                if took > SLOW_FIRST_POLL {
                    inline = false;
                    tracing::info!(
                        "a request's first poll took {took:?}: every request gets a task of its \
                         own from now on, so that a slow one cannot hold up the others"
                    );
                }
                if !done {
                    tasks.spawn(task);
                }
            } else {
                tasks.spawn(task);
            }
            while tasks.try_join_next().is_some() {}
        }
        if let Some(w) = watcher {
            w.abort();
        }
        for t in dispatchers {
            let _ = t.join();
        }
        // Every dispatcher is done: what is still running gets until the deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        let drained =
            tokio::time::timeout(left, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                "shutdown deadline passed with {} request(s) still running; answering them 503 \
                 (or dropping the connections whose answer had started)",
                tasks.len()
            );
            tasks.abort_all();
            for st in states {
                st.abandon(&st.conn);
            }
        }
        for conn in &self.conns {
            conn.close_receiving();
            conn.close_sending();
        }
        tracing::info!("server stopped");
        Ok(())
    }
}

/// A request on its way through the service: the message, its responder, and the service's
/// future (`None` when the request was answered without the service).
struct Call<F> {
    msg: Message,
    responder: Responder,
    future: Option<F>,
    /// Set when the service accepted a WebSocket: its response is not sent.
    upgraded: Option<Arc<AtomicBool>>,
}

impl Ctx {
    /// Passes on a message that is not for the service (a WebSocket frame, a disconnect
    /// notice) and takes the connection's next one, until one is for the service; `None`
    /// when the connection has nothing more for now (its ownership is released).
    fn notices(&self, st: &Arc<ConnState>, mut job: Job) -> Option<Job> {
        loop {
            match job.msg.kind() {
                MessageKind::Request
                | MessageKind::UploadDone { .. }
                | MessageKind::WebSocketHandshake => return Some(job),
                MessageKind::WebSocketFrame { .. } | MessageKind::Disconnect => {
                    if !self.sockets.deliver(st, job.msg) {
                        tracing::debug!("connection {}: a frame or notice nobody reads", st.id);
                    }
                }
                other => {
                    static ONCE: std::sync::Once = std::sync::Once::new();
                    ONCE.call_once(|| {
                        tracing::warn!(
                            "ignoring a {other:?} message: a tower service answers HTTP requests \
                             and WebSockets only (use the threaded Server for JSON and XML \
                             sockets)"
                        )
                    });
                }
            }
            job = st.next_pending()?;
        }
    }

    /// Answers `job` and every message of its connection still waiting with `503` (the
    /// service broke), then gives the connection up, so that no drain waits for it.
    fn refuse(&self, st: &Arc<ConnState>, job: Job) {
        let responder = Responder::new(st.conn.clone(), Arc::clone(st));
        let mut next = Some(job);
        while let Some(job) = next {
            answer_error(
                &responder,
                job.msg.version(),
                StatusCode::SERVICE_UNAVAILABLE,
            );
            next = st.next_pending().and_then(|job| self.notices(st, job));
        }
    }

    /// Turns `job` into the service's request and calls the (ready) service.
    fn call<S, B>(&self, service: &mut S, st: &Arc<ConnState>, job: Job) -> Call<S::Future>
    where
        S: Service<Request<RequestBody>, Response = Response<B>>,
    {
        let responder = Responder::new(st.conn.clone(), Arc::clone(st));
        let msg = job.msg;
        let body = match job.upload {
            Some(path) => {
                let upload = UploadFile::new(path);
                match upload.open() {
                    Ok((f, len)) => RequestBody::file(f, len, upload),
                    Err(e) => {
                        tracing::error!("connection {}: cannot open the upload: {e}; 500", st.id);
                        answer_error(&responder, msg.version(), StatusCode::INTERNAL_SERVER_ERROR);
                        return Call {
                            msg,
                            responder,
                            future: None,
                            upgraded: None,
                        };
                    }
                }
            }
            None if msg.upload_stream().is_some() && !msg.upload_stream_done() => {
                let len = msg.content_length();
                RequestBody::stream(len, responder.clone(), msg.body().clone())
            }
            None if msg.kind() == &MessageKind::WebSocketHandshake => RequestBody::empty(),
            None => RequestBody::from_bytes(msg.body().clone()),
        };
        let Some(mut req) = http_request(&msg, body, &responder) else {
            tracing::warn!("connection {}: a request URI http cannot hold; 400", st.id);
            answer_error(&responder, msg.version(), StatusCode::BAD_REQUEST);
            return Call {
                msg,
                responder,
                future: None,
                upgraded: None,
            };
        };
        let upgraded = (msg.kind() == &MessageKind::WebSocketHandshake).then(|| {
            let accepted = Arc::new(AtomicBool::new(false));
            req.extensions_mut().insert(WebSocketUpgrade {
                responder: responder.clone(),
                accept_key: msg.body().clone(),
                sockets: Arc::clone(&self.sockets),
                accepted: Arc::clone(&accepted),
            });
            accepted
        });
        let future = Some(service.call(req));
        Call {
            msg,
            responder,
            future,
            upgraded,
        }
    }
}

/// Owns a client connection: answers `first`, then the connection's later messages in order,
/// then gives the connection up (and its slot).
async fn owner<S, B>(
    mut service: S,
    ctx: Arc<Ctx>,
    st: Arc<ConnState>,
    first: Call<S::Future>,
    _slot: OwnedSemaphorePermit,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let mut call = first;
    loop {
        answer(call).await;
        let Some(job) = st.next_pending().and_then(|job| ctx.notices(&st, job)) else {
            break;
        };
        if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
            let e: BoxError = e.into();
            tracing::error!("connection {}: the service failed: {e}; 503", st.id);
            ctx.refuse(&st, job);
            break;
        }
        call = ctx.call(&mut service, &st, job);
    }
    ctx.feed.running(false);
}

/// Awaits the service's response and writes it; a failing or panicking service gets the
/// client a `500` (or, once an answer has started, a dropped connection).
async fn answer<F, B, E>(call: Call<F>)
where
    F: Future<Output = std::result::Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let Some(future) = call.future else { return };
    let (msg, responder) = (&call.msg, &call.responder);
    let work = async {
        let result = future.await.map_err(Into::<BoxError>::into);
        match result {
            Ok(resp) => {
                if call.upgraded.is_some_and(|a| a.load(Ordering::SeqCst)) {
                    return;
                }
                if write_response(responder, msg, resp).await == Sent::Gone {
                    tracing::debug!(
                        "connection {}: the client left during the response",
                        responder.conn_id()
                    );
                }
            }
            Err(e) => {
                tracing::error!(
                    "connection {}: the service failed: {e}; 500",
                    responder.conn_id()
                );
                answer_error(responder, msg.version(), StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    };
    if CatchUnwind(std::pin::pin!(work)).await.is_err() {
        tracing::error!(
            "connection {}: the service panicked; 500",
            responder.conn_id()
        );
        answer_error(responder, msg.version(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

/// Answers `status` and closes, if nothing of an answer went out yet; else drops the
/// connection (a truncated body must not look complete).
fn answer_error(responder: &Responder, version: Option<Version>, status: StatusCode) {
    if responder.is_disconnected() {
        return;
    }
    if responder.state().lock().answering {
        let _ = responder.cancel();
        return;
    }
    let out = simple_response(version.unwrap_or(Version::HTTP_11), status, true);
    let _ = responder.send(&out);
    let _ = responder.close();
}

/// Polls a future, turning a panic into `Err`.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}
