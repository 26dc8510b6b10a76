//! WebSocket: an echo service on `/ws` and a chat room on `/chat`.
//!
//! Mongrel2 does the RFC 6455 handshake arithmetic and unmasks frames; the handler sends the
//! `101 Switching Protocols` answer ([`Request::accept_websocket`](m2wsgi::Request::accept_websocket))
//! and writes server frames itself. This example:
//! - echoes text and binary messages on `/ws`;
//! - on `/chat`, sends every text or binary message to every member of the room in one
//!   [`Connection::deliver`](m2wsgi::Connection::deliver) call (up to 128 clients per Mongrel2
//!   message, batched beyond that);
//! - answers a ping with a pong carrying the same payload, and a close with a close frame,
//!   then closes the connection; members leave on close or when Mongrel2 reports them gone.
//!
//! Mongrel2 config: as for `hello`, with the routes `'/ws': handler, '/chat': handler`.
//!
//! ```text
//! cargo run --release --example websocket -- tcp://127.0.0.1:9999 tcp://127.0.0.1:9998
//! python3 -m websocket ws://127.0.0.1:6767/chat     # (websocket-client's wsdump), in two terminals
//! ```

mod support;

use clap::Parser;
use m2wsgi::codec::websocket::{encode_close, encode_frame, parse_close, Opcode};
use m2wsgi::{Connection, MessageKind, Request, Server};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// WebSocket echo and chat behind Mongrel2.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    handler: support::HandlerArgs,
}

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = Args::parse();
    let conn = args.handler.builder().connect()?;
    let room: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    Server::new(conn.clone())
        .workers(args.handler.workers.unwrap_or(4))
        .handle_signals(true)
        .serve(move |req| {
            if let Err(e) = handle(&conn, &room, req) {
                tracing::info!("websocket: {e}");
            }
        })
}

fn is_chat(req: &Request) -> bool {
    req.pattern().is_some_and(|p| p.starts_with(b"/chat"))
}

fn handle(conn: &Connection, room: &Mutex<BTreeSet<u64>>, req: Request) -> m2wsgi::Result<()> {
    let id = req.conn_id();
    match req.kind().clone() {
        MessageKind::WebSocketHandshake => {
            // Join before answering, so a message sent right after the handshake reaches it.
            if is_chat(&req) {
                room.lock().unwrap().insert(id);
                tracing::info!("connection {id} joined the chat");
            }
            if let Err(e) = req.accept_websocket() {
                room.lock().unwrap().remove(&id);
                return Err(e);
            }
        }
        MessageKind::WebSocketFrame { opcode, .. } => {
            let out = req.responder();
            match opcode {
                Opcode::Text | Opcode::Binary if is_chat(&req) => {
                    let mut frame = Vec::with_capacity(req.body().len() + 10);
                    encode_frame(&mut frame, opcode, req.body());
                    let members: Vec<u64> = room.lock().unwrap().iter().copied().collect();
                    conn.deliver(&members, &frame)?;
                }
                Opcode::Text | Opcode::Binary => out.send_websocket(opcode, req.body())?,
                Opcode::Ping => out.send_websocket(Opcode::Pong, req.body())?,
                Opcode::Close => {
                    room.lock().unwrap().remove(&id);
                    let code = parse_close(req.body())
                        .ok()
                        .flatten()
                        .map_or(1000, |(c, _)| c);
                    let mut frame = Vec::new();
                    encode_close(&mut frame, code, "");
                    out.send(&frame)?;
                    out.close()?;
                }
                _ => {} // pongs and continuations (Mongrel2 reassembles fragments) need nothing
            }
        }
        MessageKind::Disconnect if room.lock().unwrap().remove(&id) => {
            tracing::info!("connection {id} left the chat");
        }
        MessageKind::Request => {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            req.reply_http(http::StatusCode::BAD_REQUEST, &h, b"WebSocket only\n")?;
        }
        _ => {}
    }
    Ok(())
}
