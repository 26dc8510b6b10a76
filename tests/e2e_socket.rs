//! WebSocket and JSON sockets through a real Mongrel2, with the `websocket` and `json_socket`
//! examples and raw loopback clients (frames decoded with the crate's own codec).
#![cfg(feature = "runtime")]

mod support;

use m2wsgi::codec::websocket::Opcode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::mongrel2::{Handler, Mongrel2};
use support::process::Proc;
use support::websocket::Ws;

const T: Duration = Duration::from_secs(10);

fn start(example: &str, routes: &[&str]) -> (Mongrel2, Proc) {
    let h = Handler::tcp("app");
    let mut b = Mongrel2::builder();
    for r in routes {
        b = b.handler(r, &h);
    }
    let m2 = b.start();
    let p = Proc::example(
        example,
        &[
            m2.send_spec("app"),
            m2.recv_spec("app"),
            "--send-ident",
            m2.send_ident("app"),
        ],
    );
    (m2, p)
}

#[test]
fn websocket_echo_ping_close() {
    let (m2, _p) = start("websocket", &["/ws", "/chat"]);
    let mut ws = Ws::connect(m2.addr(), "/ws");
    ws.send(Opcode::Text, b"hello text");
    let f = ws.recv();
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (Opcode::Text, &b"hello text"[..])
    );
    let bin: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    ws.send(Opcode::Binary, &bin);
    let f = ws.recv();
    assert_eq!(f.opcode, Opcode::Binary);
    assert_eq!(f.payload, bin);
    ws.send(Opcode::Ping, b"are you there");
    let f = ws.recv();
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (Opcode::Pong, &b"are you there"[..])
    );
    ws.send(Opcode::Close, &[0x03, 0xe8]);
    let f = ws.recv();
    assert_eq!(f.opcode, Opcode::Close);
    assert_eq!(&f.payload[..2], &[0x03, 0xe8], "close code 1000 echoed");
    assert!(ws.closed(), "connection closed after the close handshake");
}

#[test]
fn websocket_chat_broadcasts_to_every_member() {
    let (m2, p) = start("websocket", &["/ws", "/chat"]);
    let mut members: Vec<Ws> = (0..3).map(|_| Ws::connect(m2.addr(), "/chat")).collect();
    members[1].send(Opcode::Text, b"hi all");
    for m in &mut members {
        let f = m.recv();
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (Opcode::Text, &b"hi all"[..])
        );
    }
    // One leaves by hanging up; the others still get messages.
    drop(members.remove(0));
    assert!(
        p.wait_for_log("left the chat", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    members[0].send(Opcode::Binary, b"\x00\x01bye");
    for m in &mut members {
        assert_eq!(m.recv().payload, b"\x00\x01bye");
    }
}

fn b64decode(s: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {:?}", String::from_utf8_lossy(s)))
}

fn read_reply(s: &mut TcpStream) -> String {
    // Mongrel2 writes each reply base64-encoded, with no terminator: read what arrives.
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(_) if !got.is_empty() => break,
            Err(_) => assert!(Instant::now() < deadline, "no reply within {T:?}"),
        }
    }
    String::from_utf8(b64decode(&got)).unwrap()
}

#[test]
fn json_socket_message_reply_and_broadcast() {
    let (m2, _p) = start("json_socket", &["@chat"]);
    let mut a = TcpStream::connect(m2.addr()).unwrap();
    a.write_all(b"@chat {\"type\":\"hi\",\"n\":1}\0").unwrap();
    assert_eq!(
        read_reply(&mut a),
        r#"{"type":"echo","count":1,"msg":{"type":"hi","n":1}}"#
    );
    let mut b = TcpStream::connect(m2.addr()).unwrap();
    b.write_all(b"@chat {\"type\":\"hi\"}\0").unwrap();
    assert!(read_reply(&mut b).contains(r#""count":2"#));
    // A broadcast reaches both connections, in one deliver.
    a.write_all(b"@chat {\"type\":\"broadcast\",\"text\":\"x\"}\0")
        .unwrap();
    let want = r#"{"type":"echo","count":3,"msg":{"type":"broadcast","text":"x"}}"#;
    assert_eq!(read_reply(&mut a), want);
    assert_eq!(read_reply(&mut b), want);
}
