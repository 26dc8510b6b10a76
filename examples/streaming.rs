//! Streaming responses: a chunked body produced over time, and a large body of a given size,
//! both stopping as soon as the client goes away.
//!
//! - `GET /stream?chunks=N&size=B&delay_ms=D`: `Transfer-Encoding: chunked` (HTTP/1.1; HTTP/1.0
//!   gets a close-delimited body), N chunks of B bytes, one every D ms, each flushed at once.
//! - `GET /stream?bytes=TOTAL`: a `Content-Length: TOTAL` body written as fast as Mongrel2 takes
//!   it (with `--flow-control`, paced by Mongrel2's download credits).
//!
//! Between writes the producer checks [`ResponseStream::is_disconnected`](m2wsgi::ResponseStream):
//! when Mongrel2 reports the client gone it stops and logs
//! `producer stopped: client gone after K bytes`.
//!
//! With `--device ENDPOINT` it takes requests from an `m2wsgi-device` instead of Mongrel2.
//!
//! Mongrel2 config: as for `hello`, with the route `'/stream': handler`. For large bodies to slow
//! clients set `'download.flow_control': 1` in `settings` and pass `--flow-control`.
//!
//! ```text
//! cargo run --release --example streaming -- tcp://127.0.0.1:9999 tcp://127.0.0.1:9998
//! curl -N 'http://127.0.0.1:6767/stream?chunks=10&size=16&delay_ms=200'
//! ```

mod support;

use clap::Parser;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use m2wsgi::{MessageKind, Request, Server};
use std::time::Duration;

/// Streaming responses behind Mongrel2 (see the module docs for the query parameters).
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    handler: support::HandlerArgs,
    /// Mongrel2 runs with `download.flow_control=1`: pace large bodies by its credits.
    #[arg(long)]
    flow_control: bool,
}

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = Args::parse();
    let builder = args.handler.builder().flow_control(args.flow_control);
    Server::new(builder.connect()?)
        .workers(args.handler.workers.unwrap_or(4))
        .handle_signals(true)
        .serve(|req| {
            if req.kind() == &MessageKind::Request {
                if let Err(e) = stream(req) {
                    tracing::info!("stream ended early: {e}");
                }
            }
        })
}

fn stream(req: Request) -> m2wsgi::Result<()> {
    let q = req.query().map(|q| q.to_vec());
    let param = |k: &str, d: u64| -> u64 {
        support::query_param(q.as_deref(), k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let total = param("bytes", 0);
    if total > 0 {
        let mut body = req.stream(StatusCode::OK, &headers, Some(total))?;
        // Built once: a 64 KiB loop per request would cost more than the request.
        static PIECE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let piece = PIECE.get_or_init(|| (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect());
        while body.written() < total {
            if body.is_disconnected() {
                tracing::info!(
                    "producer stopped: client gone after {} bytes",
                    body.written()
                );
                return Ok(());
            }
            let n = (total - body.written()).min(piece.len() as u64) as usize;
            body.write(&piece[..n])?;
        }
        return body.finish();
    }
    let (chunks, size, delay) = (
        param("chunks", 10),
        param("size", 16),
        param("delay_ms", 100),
    );
    let mut body = req.stream(StatusCode::OK, &headers, None)?;
    for i in 0..chunks {
        if body.is_disconnected() {
            tracing::info!(
                "producer stopped: client gone after {} bytes",
                body.written()
            );
            return Ok(());
        }
        let line = format!("chunk {i:06}\n");
        let mut chunk = line.into_bytes();
        chunk.resize(size.max(1) as usize, b'.');
        if let Some(last) = chunk.last_mut() {
            *last = b'\n';
        }
        body.write(&chunk)?;
        body.flush()?;
        std::thread::sleep(Duration::from_millis(delay));
    }
    body.finish()
}
