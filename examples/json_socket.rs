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

use m2wsgi::{Connection, MessageKind, Server};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const USAGE: &str = "usage: json_socket SEND_SPEC RECV_SPEC [--workers N] [--send-ident UUID]";

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = support::Args::parse(USAGE, &[]);
    let mut builder =
        Connection::builder(args.pos(0, "SEND_SPEC")).recv_spec(args.pos(1, "RECV_SPEC"));
    if let Some(ident) = args.get("send-ident") {
        builder = builder.send_ident(ident);
    }
    let conn = builder.connect()?;
    let members: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let count = Arc::new(AtomicU64::new(0));
    Server::new(conn.clone())
        .workers(args.num("workers", 2usize))
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
                        log::info!("json socket {id}: {e}");
                    }
                }
                MessageKind::Disconnect => {
                    members.lock().unwrap().remove(&id);
                }
                _ => drop(req),
            }
        })
}
