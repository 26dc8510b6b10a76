//! An unmodified axum `Router` behind Mongrel2 (feature `axum`): JSON in and out, path
//! parameters, a streamed response, an upload read as a stream, WebSocket echo, and tower-http
//! layers (gzip compression, request tracing).
//!
//! ```text
//! cargo run --release --features axum --example axum -- tcp://127.0.0.1:9999 tcp://127.0.0.1:9998
//! curl http://127.0.0.1:6767/items/7
//! curl -d '{"name":"pen"}' -H 'content-type: application/json' http://127.0.0.1:6767/items
//! curl --compressed 'http://127.0.0.1:6767/stream?bytes=1000000' | wc -c
//! curl --data-binary @big.file http://127.0.0.1:6767/upload
//! ```
//!
//! (The Mongrel2 config is the one of `examples/hello.rs`, with the route `/` to the handler.)
//! Routes:
//! - `GET /hello`: `Hello, world!`
//! - `GET /items/{id}`, `POST /items` (JSON): a path parameter, JSON extractor and response
//! - `GET /stream?bytes=N[&chunk=N][&delay_ms=MS]`: a body made as it is sent, `chunk` bytes
//!   at a time (default 64 KiB), never held whole
//! - `POST /upload`: reads the body as a stream, answers its size and CRC-32 as JSON
//! - `GET /wait?ms=MS`: answers after MS milliseconds, unless the client leaves first
//! - `GET /whoami`: what Mongrel2 said about the client (`ConnectInfo`, `ClientInfo`)
//! - `GET /stats`: counters the end-to-end tests read (streams dropped, waits cancelled)
//! - `GET /ws`: WebSocket echo, through the crate's `WebSocketUpgrade`
//!
//! Ctrl-C or SIGTERM drains (requests in flight finish, up to `--shutdown-timeout`); a
//! second signal exits at once.

mod support;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use clap::Parser;
use http_body::Frame;
use http_body_util::BodyExt;
use m2wsgi::codec::websocket::Opcode;
use m2wsgi::service::{ClientGone, ClientInfo, WebSocketUpgrade};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// An axum Router behind Mongrel2.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    handler: support::HandlerArgs,
    /// The most requests handled at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    concurrency: usize,
    /// How long in-flight requests may take to finish once shutdown starts.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    shutdown_timeout: u64,
    /// Mongrel2 runs with `download.flow_control=1`.
    #[arg(long)]
    flow_control: bool,
    /// The directory of Mongrel2's upload.temp_store, as Mongrel2 sees it (inside its chroot):
    /// async uploads are taken (else refused with 413).
    #[arg(long, value_name = "DIR")]
    upload_dir: Option<std::path::PathBuf>,
    /// Mongrel2's chroot on this host (default /).
    #[arg(long, value_name = "DIR")]
    chroot: Option<std::path::PathBuf>,
    /// Serve the routes under this prefix too (`/axum/hello` with `--nest /axum`), for a
    /// Mongrel2 route that is not `/`.
    #[arg(long, value_name = "PREFIX")]
    nest: Option<String>,
    /// Serve the same Router directly over HTTP at this address with axum's own server
    /// (hyper), instead of behind Mongrel2: the comparison in `bench/e2e.sh`. The socket specs
    /// are then not used.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// tokio worker threads (default: one per core); 1 runs everything on the main thread
    /// (tokio's current-thread runtime).
    #[arg(long, value_name = "N")]
    runtime_threads: Option<usize>,
}

/// Counters for the end-to-end tests.
static STREAMS_DROPPED: AtomicU64 = AtomicU64::new(0);
static WAITS_CANCELLED: AtomicU64 = AtomicU64::new(0);
static WAITING: AtomicU64 = AtomicU64::new(0);
static WAITING_PEAK: AtomicU64 = AtomicU64::new(0);

#[derive(Serialize, Deserialize)]
struct Item {
    #[serde(default)]
    id: u32,
    name: String,
}

async fn get_item(Path(id): Path<u32>) -> Json<Item> {
    Json(Item {
        id,
        name: format!("item {id}"),
    })
}

async fn create_item(Json(mut item): Json<Item>) -> (http::StatusCode, Json<Item>) {
    item.id = 1;
    (http::StatusCode::CREATED, Json(item))
}

#[derive(Deserialize)]
struct StreamQuery {
    bytes: u64,
    chunk: Option<usize>,
    delay_ms: Option<u64>,
}

/// A body made as it is sent: `left` bytes of a repeating pattern.
struct Pattern {
    left: u64,
    chunk: usize,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
    every: Duration,
    sent: u64,
}

impl http_body::Body for Pattern {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if !self.every.is_zero() {
            let every = self.every;
            let sleep = self
                .delay
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.delay = None;
        }
        let n = self.left.min(self.chunk as u64) as usize;
        let start = self.sent;
        let data: Vec<u8> = (0..n as u64).map(|i| ((start + i) % 251) as u8).collect();
        self.left -= n as u64;
        self.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // Unknown on purpose (the length is known, but a real generator would not know it): the
        // response goes out chunked.
        http_body::SizeHint::default()
    }
}

impl Drop for Pattern {
    fn drop(&mut self) {
        if self.left > 0 {
            STREAMS_DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn stream(Query(q): Query<StreamQuery>) -> Body {
    Body::new(Pattern {
        left: q.bytes,
        chunk: q.chunk.unwrap_or(64 * 1024).clamp(1, 1 << 20),
        delay: None,
        every: Duration::from_millis(q.delay_ms.unwrap_or(0)),
        sent: 0,
    })
}

#[derive(Serialize)]
struct Received {
    bytes: u64,
    crc32: u32,
}

async fn upload(body: Body) -> Result<Json<Received>, (http::StatusCode, String)> {
    let mut body = body;
    let (mut bytes, mut crc) = (0u64, crc32fast::Hasher::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| (http::StatusCode::BAD_REQUEST, e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            bytes += data.len() as u64;
            crc.update(&data);
        }
    }
    Ok(Json(Received {
        bytes,
        crc32: crc.finalize(),
    }))
}

#[derive(Deserialize)]
struct WaitQuery {
    ms: u64,
}

async fn wait(Query(q): Query<WaitQuery>, Extension(gone): Extension<ClientGone>) -> String {
    tracing::info!("waiting {} ms", q.ms);
    let now = WAITING.fetch_add(1, Ordering::SeqCst) + 1;
    WAITING_PEAK.fetch_max(now, Ordering::SeqCst);
    let _done = Finally(|| {
        WAITING.fetch_sub(1, Ordering::SeqCst);
    });
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(q.ms)) => format!("waited {} ms\n", q.ms),
        () = gone.gone() => {
            WAITS_CANCELLED.fetch_add(1, Ordering::SeqCst);
            String::new() // nobody reads it
        }
    }
}

/// Runs its closure when dropped (also when the request's future is dropped).
struct Finally<F: FnMut()>(F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

async fn whoami(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(info): Extension<ClientInfo>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "addr": addr.to_string(),
        "conn_id": info.conn_id(),
        "pattern": info.pattern().map(String::from_utf8_lossy),
        "pid": std::process::id(),
    }))
}

async fn stats() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "streams_dropped": STREAMS_DROPPED.load(Ordering::SeqCst),
        "waits_cancelled": WAITS_CANCELLED.load(Ordering::SeqCst),
        "waiting": WAITING.load(Ordering::SeqCst),
        "waiting_peak": WAITING_PEAK.load(Ordering::SeqCst),
    }))
}

async fn ws_echo(Extension(ws): Extension<WebSocketUpgrade>) {
    let Ok((out, mut frames)) = ws.accept() else {
        return;
    };
    tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            let m2wsgi::MessageKind::WebSocketFrame { opcode, .. } = *frame.kind() else {
                continue;
            };
            let reply = match opcode {
                Opcode::Close => {
                    let _ = out.send_websocket(Opcode::Close, frame.body());
                    let _ = out.close();
                    break;
                }
                Opcode::Ping => Opcode::Pong,
                Opcode::Pong => continue,
                other => other,
            };
            if out.send_websocket(reply, frame.body()).is_err() {
                break;
            }
        }
    });
}

fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "Hello, world!" }))
        .route("/items/{id}", get(get_item))
        .route("/items", post(create_item))
        .route("/stream", get(stream))
        .route("/upload", post(upload))
        .route("/wait", get(wait))
        .route("/whoami", get(whoami))
        .route("/stats", get(stats))
        .route("/ws", get(ws_echo))
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = Args::parse();
    let runtime = match args.runtime_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = n {
                b.worker_threads(n.max(1));
            }
            b.enable_all().build()?
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> m2wsgi::Result<()> {
    let app = match &args.nest {
        Some(prefix) => app().merge(Router::new().nest(prefix, app())),
        None => app(),
    };
    if let Some(addr) = args.listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!("axum: serving HTTP directly at {addr}");
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        return Ok(());
    }
    let mut builder = args.handler.builder().flow_control(args.flow_control);
    if let Some(dir) = &args.upload_dir {
        builder = builder.upload_dir(dir);
    }
    if let Some(dir) = &args.chroot {
        builder = builder.chroot(dir);
    }
    let conn = builder.connect()?;
    tracing::info!("axum: replying to {}", conn.recv_spec());
    m2wsgi::serve(conn, app)
        .concurrency_limit(args.concurrency)
        .shutdown_timeout(Duration::from_secs(args.shutdown_timeout))
        .handle_signals(true)
        .await?;
    tracing::info!("axum: stopped");
    Ok(())
}
