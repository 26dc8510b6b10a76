//! JSON sockets: Mongrel2's raw-TCP message protocol. A client opens a plain TCP connection to
//! Mongrel2's port and sends `@path {json}\0`; the handler gets it with `METHOD=JSON` and the
//! JSON text as the body. Replies are written back on the same connection; Mongrel2 base64s
//! them unless the handler row has `raw_payload=1`.
//!
//! This example answers `{"type":"echo","count":N,"msg":<the message>}` to the sender, and a
//! message `{"type":"broadcast",...}` goes to every connection that has spoken on the route so
//! far, in one [`Connection::deliver`](m2wsgi::Connection::deliver) call.
//!
//! Mongrel2 config: as for `hello`, with the route `'@chat': handler` (JSON socket routes start
//! with `@`).
//!
//! ```text
//! cargo run --release --example json_socket -- tcp://127.0.0.1:9999 tcp://127.0.0.1:9998
//! printf '@chat {"type":"hi"}\0' | nc -q1 127.0.0.1 6767 | base64 -d
//! ```

mod support;

use clap::Parser;
use m2wsgi::{MessageKind, Server};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Mongrel2's JSON sockets (Flash-style XML/JSON messages) behind a handler.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    handler: support::HandlerArgs,
}

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = Args::parse();
    let conn = args.handler.builder().connect()?;
    let members: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let count = Arc::new(AtomicU64::new(0));
    Server::new(conn.clone())
        .workers(args.handler.workers.unwrap_or(2))
        .handle_signals(true)
        .serve(move |req| {
            let id = req.conn_id();
            match req.kind() {
                MessageKind::Json => {
                    members.lock().unwrap().insert(id);
                    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                    let msg = String::from_utf8_lossy(req.body());
                    let broadcast = msg.replace(' ', "").contains(r#""type":"broadcast""#);
                    let reply = format!(r#"{{"type":"echo","count":{n},"msg":{msg}}}"#);
                    let result = if broadcast {
                        let ids: Vec<u64> = members.lock().unwrap().iter().copied().collect();
                        conn.deliver(&ids, reply.as_bytes())
                    } else {
                        req.responder().send(reply.as_bytes())
                    };
                    if let Err(e) = result {
                        tracing::info!("json socket {id}: {e}");
                    }
                }
                MessageKind::Disconnect => {
                    members.lock().unwrap().remove(&id);
                }
                _ => drop(req),
            }
        })
}
