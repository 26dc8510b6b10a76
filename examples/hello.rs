//! Hello world: the smallest complete handler. Every HTTP request is answered `200 OK` with the
//! 13 bytes `Hello, world!`.
//!
//! Mongrel2 config (load with `m2sh load -config hello.conf -db config.sqlite`, then start
//! `mongrel2 config.sqlite main` from the same directory):
//!
//! ```text
//! hello = Handler(send_spec='tcp://127.0.0.1:9999', send_ident='54c6755b-9628-40a4-9a2d-cc82a816345e',
//!                 recv_spec='tcp://127.0.0.1:9998', recv_ident='', protocol='tnetstring')
//! main = Server(uuid='main', chroot='./', access_log='/logs/access.log', error_log='/logs/error.log',
//!               pid_file='/run/mongrel2.pid', default_host='localhost', name='main', port=6767,
//!               hosts=[Host(name='localhost', routes={'/hello': hello})])
//! settings = {'server.daemonize': 0}
//! servers = [main]
//! ```
//!
//! Run it and ask:
//!
//! ```text
//! cargo run --release --example hello -- tcp://127.0.0.1:9999 tcp://127.0.0.1:9998 --workers 4
//! curl http://127.0.0.1:6767/hello
//! ```
//!
//! Ctrl-C or SIGTERM drains: requests already received are answered, then it exits 0; a second
//! signal exits at once. With `--device ENDPOINT` it takes requests from an `m2wsgi-device`
//! instead of from Mongrel2 directly. `--allow-sleep` makes it honour `?sleep=MS` (at most 10 s)
//! before answering: a slow request on demand, for shutdown and fairness tests; `--delay-ms MS`
//! makes every answer that slow (a worker that lags behind the others).

mod support;

use clap::Parser;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use m2wsgi::{MessageKind, Server};
use std::time::Duration;

/// Hello world behind Mongrel2: every request is answered `200 OK` with `Hello, world!`.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    handler: support::HandlerArgs,
    /// Honour `?sleep=MS` (at most 10 s) before answering: a slow request on demand.
    #[arg(long)]
    allow_sleep: bool,
    /// Answer with a body of this many bytes (`x` repeated) instead of `Hello, world!`: for
    /// benchmarks of large responses.
    #[arg(long, value_name = "N")]
    body_bytes: Option<usize>,
    /// Make every answer this slow (a worker that lags behind the others).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
    /// How long in-flight requests may take to finish once shutdown starts.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    shutdown_timeout: u64,
}

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = Args::parse();
    let conn = args.handler.builder().connect()?;
    let workers = args.handler.workers.unwrap_or(4);
    let allow_sleep = args.allow_sleep;
    let delay = Duration::from_millis(args.delay_ms);
    let body = args
        .body_bytes
        .map_or_else(|| b"Hello, world!".to_vec(), |n| vec![b'x'; n]);
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    tracing::info!("hello: {workers} workers, replying to {}", conn.recv_spec());
    Server::new(conn)
        .workers(workers)
        .shutdown_timeout(Duration::from_secs(args.shutdown_timeout))
        .handle_signals(true)
        .serve(move |req| {
            if req.kind() != &MessageKind::Request {
                return; // disconnect notices and the like need no answer
            }
            std::thread::sleep(delay);
            if allow_sleep {
                let ms: u64 = support::query_param(req.query().map(|q| &q[..]), "sleep")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if ms > 0 {
                    tracing::info!("sleeping {ms} ms before answering");
                }
                std::thread::sleep(Duration::from_millis(ms.min(10_000)));
            }
            if let Err(e) = req.reply_http(StatusCode::OK, &headers, &body) {
                tracing::warn!("reply failed: {e}");
            }
        })?;
    tracing::info!("hello: stopped");
    Ok(())
}
