//! `m2wsgi::testing`'s request builder reproduces captured Mongrel2 frames (`tests/data/*.bin`)
//! byte for byte. Mongrel2 writes header keys in hash-table order, so where a capture's order
//! differs from the builder's default the test pins it with `order`.
#![cfg(feature = "runtime")]

mod support;

use m2wsgi::codec::Opcode;
use m2wsgi::{HeaderProtocol, Message};
use support::testing::{
    credits, disconnect, upload_slice, websocket_accept, FakeMongrel2, HttpResponse, Reply,
    RequestBuilder, DEFAULT_SENDER,
};

const JSON_SENDER: &str = "9ed3a9c8-0e45-4b3c-8a5a-1c3c9d4e2f10";
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn capture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}.bin", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn same(name: &str, built: &[u8]) {
    let want = capture(name);
    assert!(
        built == want.as_slice(),
        "{name}: the builder's frame differs from the capture\n built: {:?}\n  want: {:?}",
        String::from_utf8_lossy(built),
        String::from_utf8_lossy(&want)
    );
}

/// The body of a captured frame (streamed-upload payloads are long binary runs).
fn body_of(name: &str) -> Vec<u8> {
    Message::decode(capture(name).into())
        .expect("a captured frame decodes")
        .body()
        .to_vec()
}

const FIXED: [&str; 9] = [
    "REMOTE_ADDR",
    "METHOD",
    "URL_SCHEME",
    "PATTERN",
    "FRAGMENT",
    "QUERY",
    "URI",
    "VERSION",
    "PATH",
];

fn with_fixed(rest: &[&'static str]) -> Vec<&'static str> {
    FIXED.iter().chain(rest).copied().collect()
}

#[test]
fn tnetstring_requests() {
    same(
        "get_simple",
        &RequestBuilder::get("/handler").pattern("/handler").build(),
    );
    same(
        "get_query_fragment",
        &RequestBuilder::get("/handler/sub/path.txt?a=1&b=two%20x&c=%7Bq%7D#frag-1")
            .pattern("/handler")
            .header("host", "localhost:6780")
            .conn_id(2)
            .build(),
    );
    same(
        "http10",
        &RequestBuilder::get("/handler")
            .pattern("/handler")
            .version("HTTP/1.0")
            .remove_header("host")
            .conn_id(10)
            .build(),
    );
    same(
        "keepalive_two_2",
        &RequestBuilder::get("/handler/two")
            .pattern("/handler")
            .conn_id(11)
            .build(),
    );
    same(
        "repeated_headers",
        &RequestBuilder::get("/handler")
            .pattern("/handler")
            .header_values("cookie", &[b"a=1", b"b=2"])
            .header_values("accept", &[b"text/html", b"text/plain", b"*/*"])
            .order(&with_fixed(&["cookie", "host", "accept"]))
            .conn_id(7)
            .build(),
    );
}

#[test]
fn async_upload_start_and_done() {
    let req = RequestBuilder::new("POST", "/handler/upload")
        .pattern("/handler")
        .header("content-length", "10000")
        .header("content-type", "application/octet-stream")
        .conn_id(6);
    let order = with_fixed(&[
        "x-mongrel2-upload-start",
        "host",
        "content-length",
        "content-type",
        "x-mongrel2-upload-done",
    ]);
    same(
        "post_upload",
        &req.clone()
            .upload_start("/tmp/upload.4i0T8Y")
            .order(&order)
            .build(),
    );
    same(
        "post_upload_2",
        &req.upload_done("/tmp/upload.4i0T8Y").order(&order).build(),
    );
    same(
        "post_upload_3",
        &disconnect(DEFAULT_SENDER, 6, HeaderProtocol::Tnetstring),
    );
}

#[test]
fn streamed_upload() {
    let first = body_of("flow_upload_stream");
    same(
        "flow_upload_stream",
        &RequestBuilder::new("POST", "/handler/stream")
            .pattern("/handler")
            .download_credits(102_400)
            .header("content-length", "10240")
            .upload_stream(first, false)
            .conn_id(3)
            .build(),
    );
    same(
        "flow_upload_stream_2",
        &upload_slice(
            DEFAULT_SENDER,
            3,
            "/handler/stream",
            4023,
            &body_of("flow_upload_stream_2"),
            false,
        ),
    );
    same(
        "flow_chunked_stream_2",
        &upload_slice(DEFAULT_SENDER, 4, "/handler/cs", 0, b"hello", false),
    );
}

#[test]
fn notices() {
    same(
        "get_simple_2",
        &disconnect(DEFAULT_SENDER, 1, HeaderProtocol::Tnetstring),
    );
    same(
        "json_get_2",
        &disconnect(JSON_SENDER, 19, HeaderProtocol::Json),
    );
    same(
        "flow_download_credits_2",
        &credits(DEFAULT_SENDER, 1, 1067, HeaderProtocol::Tnetstring),
    );
    same(
        "flow_download_credits_json_2",
        &credits(JSON_SENDER, 2, 75, HeaderProtocol::Json),
    );
}

#[test]
fn websocket_handshake_and_frames() {
    let order = with_fixed(&[
        "upgrade",
        "host",
        "sec-websocket-key",
        "sec-websocket-version",
        "connection",
        "origin",
        "FLAGS",
    ]);
    same(
        "websocket",
        &RequestBuilder::websocket_handshake("/ws/chat", WS_KEY)
            .pattern("/ws")
            .header("origin", "http://localhost")
            .order(&order)
            .conn_id(25)
            .build(),
    );
    same(
        "websocket_2",
        &RequestBuilder::websocket_frame("/ws/chat", WS_KEY, Opcode::Text, "hello text")
            .pattern("/ws")
            .header("origin", "http://localhost")
            .order(&order)
            .conn_id(25)
            .build(),
    );
}

#[test]
fn json_protocol_and_json_sockets() {
    same(
        "json_get",
        &RequestBuilder::get("/json/x?q=1#f")
            .json()
            .sender(JSON_SENDER)
            .pattern("/json")
            .header_values("cookie", &[b"a=1", b"b=\"q\"\\"])
            .conn_id(19)
            .build(),
    );
    same(
        "json_post",
        &RequestBuilder::post("/json", "hello world")
            .json()
            .sender(JSON_SENDER)
            .pattern("/json")
            .order(&["PATH", "x-forwarded-for", "content-length"])
            .conn_id(20)
            .build(),
    );
    same(
        "socket_json_msg",
        &RequestBuilder::json_socket("@tnet", r#"{"type":"hello","n":1}"#)
            .conn_id(48)
            .build(),
    );
    same(
        "socket_json_msg_jsonproto",
        &RequestBuilder::json_socket("@jsonh", r#"{"type":"hello"}"#)
            .json()
            .sender(JSON_SENDER)
            .conn_id(24)
            .build(),
    );
}

#[test]
fn built_frames_decode() {
    // Whatever the order, the crate's decoder reads back what was built.
    let msg = Message::decode(
        RequestBuilder::post("/p?x=1", "body")
            .header("X-Odd", "v")
            .conn_id(42)
            .build_bytes(),
    )
    .unwrap();
    assert_eq!(msg.conn_id(), 42);
    assert_eq!(msg.method(), Some(&http::Method::POST));
    assert_eq!(msg.query().map(|q| &q[..]), Some(&b"x=1"[..]));
    assert_eq!(msg.body(), "body");
}

#[test]
fn websocket_accept_matches_rfc6455() {
    assert_eq!(websocket_accept(WS_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn reply_parse() {
    let r = Reply::parse(b"abc 5:1 2 3, body").unwrap();
    assert_eq!(r.sender, "abc");
    assert_eq!(r.conn_ids, [1, 2, 3]);
    assert!(!r.extended);
    assert_eq!(r.body, "body");
    let r = Reply::parse(b"abc 4:X 47, 3:x,]").unwrap();
    assert!(r.extended);
    assert_eq!(r.conn_ids, [47]);
    assert!(Reply::parse(b"abc 2:1,body").is_none());
    assert!(Reply::parse(b"abc 1:a, body").is_none());
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FakeMongrel2>();
    assert_send_sync::<RequestBuilder>();
    assert_send_sync::<Reply>();
    assert_send_sync::<HttpResponse>();
}
