//! Every captured frame in `tests/data/*.bin` decodes to what its scenario's `.txt` says.
//!
//! The `.txt` files were written by the capture handler, one per scenario run against a real
//! Mongrel2 1.12. For each message a handler received they hold the frame's Python repr and,
//! parsed by the capture tool, the sender, connection id, PATH, the headers as a Python dict
//! (bytes for tnetstring handlers, str for JSON ones; a repeated header is a list) and the body. `control.txt` holds the
//! control-port replies (`control_*.bin`): tnetstring dicts, not handler messages.
//!
//! `generic_every_handler_message_matches_its_txt` checks all of them against the `.txt`, read
//! with a small parser for those Python literals (`vectors/txt.rs`); the table tests below spell
//! out the interesting ones by hand.

#[path = "vectors/txt.rs"]
mod txt;

use txt::{control_replies, data_dir, expectations, expected_kind, read, Expected};

use bytes::Bytes;
use http::{Method, Version};
use m2wsgi::codec::Opcode;
use m2wsgi::tnetstring::{self, Value};
use m2wsgi::{HeaderProtocol, Message, MessageKind, RawMessage};
use std::collections::BTreeMap;

fn opt(b: Option<&Bytes>) -> Option<&[u8]> {
    b.map(|b| b.as_ref())
}

/// Checks one frame against its description, with both decoders.
fn check(e: &Expected) {
    let frame = read(&e.bin);
    let name = &e.bin;
    assert_eq!(frame.len(), e.size, "{name}: size");
    assert_eq!(frame, e.repr, "{name}: the repr line is the file");

    // The borrowed decoder: every pair, grouped by name in wire order.
    let raw = RawMessage::decode(&frame).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(raw.sender(), e.sender.as_slice(), "{name}");
    assert_eq!(raw.conn_id(), e.id, "{name}");
    assert_eq!(raw.path(), e.path.as_slice(), "{name}");
    assert_body(name, raw.body(), &e.body);
    let want_protocol = if e.json {
        HeaderProtocol::Json
    } else {
        HeaderProtocol::Tnetstring
    };
    assert_eq!(raw.headers().protocol(), want_protocol, "{name}");
    let mut got: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (k, v) in raw.headers() {
        got.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    assert_eq!(got, e.headers, "{name}: headers");
    for (k, vs) in &e.headers {
        assert_eq!(raw.headers().get(k).as_deref(), Some(vs[0].as_slice()));
    }

    // The owned decoder.
    let frame = Bytes::from(frame);
    let m = Message::decode(frame.clone()).unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(m.sender().as_ref(), e.sender.as_slice(), "{name}");
    assert_eq!(m.conn_id(), e.id, "{name}");
    assert_eq!(m.path().as_ref(), e.path.as_slice(), "{name}");
    assert_eq!(m.protocol(), want_protocol, "{name}");
    assert_body(name, m.body(), &e.body);
    if !m.body().is_empty() {
        // A slice of the frame, not a copy.
        assert!(frame.as_ptr_range().contains(&m.body().as_ptr()), "{name}");
    }
    let h = |k: &str| e.headers.get(k.as_bytes()).map(|v| v[0].as_slice());
    assert_eq!(
        m.method().map(|x| x.as_str().as_bytes()),
        h("METHOD"),
        "{name}"
    );
    let version = h("VERSION").map(|v| match v {
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/1.0" => Version::HTTP_10,
        other => panic!("{other:?}"),
    });
    assert_eq!(m.version(), version, "{name}");
    assert_eq!(opt(m.uri()), h("URI"), "{name}: URI");
    assert_eq!(opt(m.request_path()), h("PATH"), "{name}: PATH");
    assert_eq!(opt(m.query()), h("QUERY"), "{name}: QUERY");
    assert_eq!(opt(m.fragment()), h("FRAGMENT"), "{name}: FRAGMENT");
    assert_eq!(opt(m.pattern()), h("PATTERN"), "{name}: PATTERN");
    assert_eq!(opt(m.url_scheme()), h("URL_SCHEME"), "{name}: URL_SCHEME");
    assert_eq!(
        opt(m.remote_addr()),
        h("REMOTE_ADDR"),
        "{name}: REMOTE_ADDR"
    );
    let num = |k: &str| h(k).map(|v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap());
    assert_eq!(m.upload_stream(), num("UPLOAD_STREAM"), "{name}");
    assert_eq!(
        m.upload_stream_done(),
        h("UPLOAD_STREAM_DONE").is_some(),
        "{name}"
    );
    assert_eq!(m.download_credits(), num("DOWNLOAD_CREDITS"), "{name}");
    assert_eq!(m.kind(), &expected_kind(e), "{name}: kind");

    // Lower-case names are HTTP headers, in the HeaderMap with every value in order; the
    // upper-case ones are all known Mongrel2 keys, so nothing is left for `extra`.
    let mut http_values = 0;
    for (k, vs) in &e.headers {
        if k[0].is_ascii_uppercase() {
            continue;
        }
        let got: Vec<&[u8]> = m
            .headers()
            .get_all(http::HeaderName::from_bytes(k).unwrap())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let want: Vec<&[u8]> = vs.iter().map(Vec::as_slice).collect();
        assert_eq!(got, want, "{name}: header {}", String::from_utf8_lossy(k));
        http_values += vs.len();
    }
    assert_eq!(m.headers().len(), http_values, "{name}: no header too many");
    assert!(m.extra().is_empty(), "{name}: extra {:?}", m.extra());
}

/// The `.txt` cuts long bodies to their first 200 bytes.
fn assert_body(name: &str, got: &[u8], want: &[u8]) {
    if got.len() == want.len() {
        assert_eq!(got, want, "{name}: body");
    } else {
        assert_eq!(
            want.len(),
            200,
            "{name}: body length {} in the .txt",
            want.len()
        );
        assert!(got.starts_with(want), "{name}: body");
    }
}

#[test]
fn generic_every_handler_message_matches_its_txt() {
    let all = expectations();
    // Every .bin is described exactly once: the handler messages here, the control replies in
    // control.txt.
    let mut bins: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    bins.sort();
    let mut described: Vec<String> = all.iter().map(|e| e.bin.clone()).collect();
    described.extend(control_replies().into_iter().map(|(n, _)| n));
    described.sort();
    assert_eq!(described, bins);
    assert_eq!(all.len(), 122);
    for e in &all {
        check(e);
    }
    // Both header protocols and every kind appear.
    let kinds: Vec<String> = all
        .iter()
        .map(|e| format!("{:?}", expected_kind(e)))
        .map(|k| k.split([' ', '{']).next().unwrap().to_string())
        .collect();
    for k in [
        "Request",
        "UploadStart",
        "UploadDone",
        "UploadStream",
        "Disconnect",
        "Credits",
        "WebSocketHandshake",
        "WebSocketFrame",
        "Json",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no vector of kind {k}");
    }
    assert!(all.iter().any(|e| e.json) && all.iter().any(|e| !e.json));
}

// ---------------------------------------------------------------------------------------------
// Control-port replies.

#[test]
fn control_replies_are_canonical_tnetstring_dicts() {
    let replies = control_replies();
    assert_eq!(replies.len(), 7);
    for (name, repr) in &replies {
        let bytes = read(name);
        assert_eq!(&bytes, repr, "{name}");
        let v = tnetstring::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.to_vec(), bytes, "{name}: re-encodes byte for byte");
        let Value::Dict(items) = &v else {
            panic!("{name}: not a dict")
        };
        let keys: Vec<&[u8]> = items.iter().map(|(k, _)| *k).collect();
        if keys == [&b"headers"[..], b"rows"] {
            let Some(Value::List(headers)) = v.get(b"headers") else {
                panic!("{name}")
            };
            let Some(Value::List(rows)) = v.get(b"rows") else {
                panic!("{name}")
            };
            for row in rows {
                let Value::List(cells) = row else {
                    panic!("{name}: a row is not a list")
                };
                assert_eq!(cells.len(), headers.len(), "{name}");
            }
        } else {
            assert_eq!(keys, [&b"code"[..], b"error"], "{name}");
        }
        // Nor is it a handler message.
        assert!(RawMessage::decode(&bytes).is_err(), "{name}");
    }
    let get = |name: &str| {
        let bytes = read(name);
        let v = tnetstring::parse(&bytes).unwrap();
        let Some(Value::List(rows)) = v.get(b"rows") else {
            panic!()
        };
        let Value::List(row) = &rows[0] else { panic!() };
        format!("{row:?}")
    };
    assert_eq!(
        get("control_uuid.bin"),
        r#"[String([109, 50, 112, 114, 111, 116, 111, 45, 109, 97, 105, 110])]"#
    );
    // `#` integers appear only here.
    let info = read("control_info.bin");
    let v = tnetstring::parse(&info).unwrap();
    let Some(Value::List(rows)) = v.get(b"rows") else {
        panic!()
    };
    let Value::List(row) = &rows[0] else { panic!() };
    assert_eq!(row[0], Value::Integer(6780));
    assert_eq!(row[2], Value::String(b"m2proto-main"));
    let status_bytes = read("control_status_net.bin");
    let status = tnetstring::parse(&status_bytes).unwrap();
    let Some(Value::List(rows)) = status.get(b"rows") else {
        panic!()
    };
    let Value::List(row) = &rows[0] else { panic!() };
    assert!(row.iter().all(|c| matches!(c, Value::Integer(_))));
    let bogus_bytes = read("control_bogus.bin");
    let bogus = tnetstring::parse(&bogus_bytes).unwrap();
    assert_eq!(
        bogus.get(b"code"),
        Some(&Value::String(b"CALLBACK_NOT_FOUND"))
    );
}

// ---------------------------------------------------------------------------------------------
// Table tests for the interesting vectors, spelled out by hand.

fn msg(name: &str) -> Message {
    Message::decode(Bytes::from(read(name))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn hdr<'m>(m: &'m Message, k: &str) -> Vec<&'m [u8]> {
    m.headers()
        .get_all(k)
        .iter()
        .map(|v| v.as_bytes())
        .collect()
}

const TNET: &[u8] = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378";
const JSON: &[u8] = b"9ed3a9c8-0e45-4b3c-8a5a-1c3c9d4e2f10";

#[test]
fn kinds_of_every_interesting_vector() {
    let up = |p: &str| Bytes::copy_from_slice(p.as_bytes());
    let table: &[(&str, MessageKind)] = &[
        ("get_simple.bin", MessageKind::Request),
        ("get_simple_2.bin", MessageKind::Disconnect),
        ("head_request.bin", MessageKind::Request),
        (
            "post_upload.bin",
            MessageKind::UploadStart {
                path: up("/tmp/upload.4i0T8Y"),
            },
        ),
        (
            "post_upload_2.bin",
            MessageKind::UploadDone {
                start: up("/tmp/upload.4i0T8Y"),
                done: up("/tmp/upload.4i0T8Y"),
            },
        ),
        (
            "chunked_request.bin",
            MessageKind::UploadStart {
                path: up("/tmp/upload.W1JsSn"),
            },
        ),
        (
            "chunked_request_2.bin",
            MessageKind::UploadDone {
                start: up("/tmp/upload.W1JsSn"),
                done: up("/tmp/upload.W1JsSn"),
            },
        ),
        (
            "disconnect_mid_upload.bin",
            MessageKind::UploadStart {
                path: up("/tmp/upload.EFQ60E"),
            },
        ),
        ("disconnect_mid_upload_2.bin", MessageKind::Disconnect),
        (
            "json_upload.bin",
            MessageKind::UploadStart {
                path: up("/tmp/upload.vNPCfh"),
            },
        ),
        (
            "json_upload_2.bin",
            MessageKind::UploadDone {
                start: up("/tmp/upload.vNPCfh"),
                done: up("/tmp/upload.vNPCfh"),
            },
        ),
        ("json_upload_3.bin", MessageKind::Disconnect),
        (
            "flow_download_credits_json_2.bin",
            MessageKind::Credits { bytes: 75 },
        ),
        ("flow_download_credits_json_3.bin", MessageKind::Disconnect),
        ("flow_upload_stream.bin", MessageKind::Request),
        (
            "flow_upload_stream_2.bin",
            MessageKind::UploadStream {
                offset: 4023,
                done: false,
            },
        ),
        (
            "flow_upload_stream_3.bin",
            MessageKind::UploadStream {
                offset: 7023,
                done: false,
            },
        ),
        (
            "flow_upload_stream_4.bin",
            MessageKind::UploadStream {
                offset: 10023,
                done: true,
            },
        ),
        (
            "flow_upload_stream_5.bin",
            MessageKind::Credits { bytes: 72 },
        ),
        ("flow_upload_stream_6.bin", MessageKind::Disconnect),
        ("flow_chunked_stream.bin", MessageKind::Request),
        (
            "flow_chunked_stream_2.bin",
            MessageKind::UploadStream {
                offset: 0,
                done: false,
            },
        ),
        (
            "flow_chunked_stream_3.bin",
            MessageKind::UploadStream {
                offset: 5,
                done: false,
            },
        ),
        (
            "flow_chunked_stream_4.bin",
            MessageKind::UploadStream {
                offset: 12,
                done: true,
            },
        ),
        (
            "flow_chunked_stream_5.bin",
            MessageKind::Credits { bytes: 66 },
        ),
        ("socket_json_msg.bin", MessageKind::Json),
        ("socket_json_msg_jsonproto.bin", MessageKind::Json),
        ("websocket.bin", MessageKind::WebSocketHandshake),
        (
            "websocket_2.bin",
            MessageKind::WebSocketFrame {
                opcode: Opcode::Text,
                flags: 0x81,
            },
        ),
        (
            "websocket_3.bin",
            MessageKind::WebSocketFrame {
                opcode: Opcode::Binary,
                flags: 0x82,
            },
        ),
        (
            "websocket_4.bin",
            MessageKind::WebSocketFrame {
                opcode: Opcode::Ping,
                flags: 0x89,
            },
        ),
        (
            "websocket_5.bin",
            MessageKind::WebSocketFrame {
                opcode: Opcode::Pong,
                flags: 0x8A,
            },
        ),
        (
            "websocket_6.bin",
            MessageKind::WebSocketFrame {
                opcode: Opcode::Text,
                flags: 0x81,
            },
        ),
        (
            "websocket_7.bin",
            MessageKind::WebSocketFrame {
                opcode: Opcode::Text,
                flags: 0x81,
            },
        ),
        (
            "websocket_8.bin",
            MessageKind::WebSocketFrame {
                opcode: Opcode::Close,
                flags: 0x88,
            },
        ),
        ("websocket_9.bin", MessageKind::Disconnect),
    ];
    for (name, kind) in table {
        let m = msg(name);
        assert_eq!(m.kind(), kind, "{name}");
        let answerable = matches!(
            kind,
            MessageKind::Request | MessageKind::UploadStart { .. } | MessageKind::UploadDone { .. }
        );
        assert_eq!(m.is_request(), answerable, "{name}");
    }
}

#[test]
fn get_simple_field_by_field() {
    let m = msg("get_simple.bin");
    assert_eq!(m.sender().as_ref(), TNET);
    assert_eq!(m.conn_id(), 1);
    assert_eq!(m.path().as_ref(), b"/handler");
    assert_eq!(m.protocol(), HeaderProtocol::Tnetstring);
    assert_eq!(m.method(), Some(&Method::GET));
    assert_eq!(m.version(), Some(Version::HTTP_11));
    assert_eq!(opt(m.uri()), Some(&b"/handler"[..]));
    assert_eq!(opt(m.request_path()), Some(&b"/handler"[..]));
    assert_eq!(opt(m.pattern()), Some(&b"/handler"[..]));
    assert_eq!(opt(m.url_scheme()), Some(&b"http"[..]));
    assert_eq!(opt(m.remote_addr()), Some(&b"127.0.0.1"[..]));
    assert_eq!(m.query(), None);
    assert_eq!(m.fragment(), None);
    assert_eq!(m.download_credits(), None);
    assert_eq!(m.upload_stream(), None);
    assert_eq!(hdr(&m, "host"), [b"localhost"]);
    assert_eq!(hdr(&m, "x-forwarded-for"), [b"127.0.0.1"]);
    assert_eq!(m.headers().len(), 2);
    assert!(m.body().is_empty());
    assert!(!m.wants_close());

    let d = msg("get_simple_2.bin");
    assert_eq!((d.conn_id(), d.path().as_ref()), (1, &b"@*"[..]));
    assert_eq!(d.method().map(Method::as_str), Some("JSON"));
    assert_eq!(d.body().as_ref(), br#"{"type":"disconnect"}"#);
}

#[test]
fn query_fragment_and_percent_encoding_are_raw() {
    let m = msg("get_query_fragment.bin");
    assert_eq!(
        opt(m.uri()),
        Some(&b"/handler/sub/path.txt?a=1&b=two%20x&c=%7Bq%7D"[..])
    );
    assert_eq!(opt(m.request_path()), Some(&b"/handler/sub/path.txt"[..]));
    assert_eq!(opt(m.query()), Some(&b"a=1&b=two%20x&c=%7Bq%7D"[..]));
    assert_eq!(opt(m.fragment()), Some(&b"frag-1"[..]));
    assert_eq!(hdr(&m, "host"), [b"localhost:6780"]);
}

#[test]
fn repeated_headers_keep_every_value_in_order() {
    let m = msg("repeated_headers.bin");
    assert_eq!(hdr(&m, "cookie"), [&b"a=1"[..], b"b=2"]);
    assert_eq!(
        hdr(&m, "accept"),
        [&b"text/html"[..], b"text/plain", b"*/*"]
    );
    let raw_frame = read("repeated_headers.bin");
    let raw = RawMessage::decode(&raw_frame).unwrap();
    let cookies: Vec<_> = raw
        .headers()
        .iter()
        .filter(|(k, _)| k.as_ref() == b"cookie")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(cookies, [b"a=1".to_vec(), b"b=2".to_vec()]);
    // Mongrel2 keeps five and drops the rest.
    let m = msg("repeated_headers_overflow.bin");
    assert_eq!(hdr(&m, "x-dup"), [&b"v0"[..], b"v1", b"v2", b"v3", b"v4"]);
}

#[test]
fn header_casing_and_client_lookalikes() {
    let m = msg("header_casing.bin");
    // A client's `Method:` and `PATH:` headers are lower-cased HTTP headers, not Mongrel2's keys.
    assert_eq!(m.method(), Some(&Method::GET));
    assert_eq!(hdr(&m, "method"), [b"fake"]);
    assert_eq!(opt(m.request_path()), Some(&b"/handler"[..]));
    assert_eq!(hdr(&m, "path"), [b"/fake"]);
    assert_eq!(hdr(&m, "x-empty"), [b""]);
    assert_eq!(hdr(&m, "x-spaces"), [b"lead and trail   "]);
    assert_eq!(hdr(&m, "x-mixed-case"), [b"Value With CAPS"]);
}

#[test]
fn json_protocol_escapes_and_arrays() {
    let m = msg("json_get.bin");
    assert_eq!(m.protocol(), HeaderProtocol::Json);
    assert_eq!(m.sender().as_ref(), JSON);
    assert_eq!(m.conn_id(), 19);
    // `"b=\"q\"\\"` on the wire: only `\"` and `\\` are escapes.
    assert_eq!(hdr(&m, "cookie"), [&b"a=1"[..], br#"b="q"\"#]);
    assert_eq!(opt(m.query()), Some(&b"q=1"[..]));
    assert_eq!(opt(m.fragment()), Some(&b"f"[..]));
    assert_eq!(opt(m.pattern()), Some(&b"/json"[..]));
    let d = msg("json_get_2.bin");
    assert_eq!(d.kind(), &MessageKind::Disconnect);
    assert_eq!(d.protocol(), HeaderProtocol::Json);
    let p = msg("json_post.bin");
    assert_eq!(p.method(), Some(&Method::POST));
    assert_eq!(p.body().as_ref(), b"hello world");
}

#[test]
fn binary_bodies_are_byte_exact() {
    let m = msg("post_small.bin");
    assert_eq!(m.body().as_ref(), b"hello=world&x=%00\xff");
    assert_eq!(hdr(&m, "content-length"), [b"18"]);
    let w = msg("websocket_3.bin");
    assert_eq!(
        w.body().as_ref(),
        b"\x00\x11\x223DUfw\x88\x99\xaa\xbb\xcc\xdd\xee\xff"
    );
    assert_eq!(msg("websocket_7.bin").body().as_ref(), &[b'M'; 300][..]);
    assert_eq!(msg("websocket_8.bin").body().as_ref(), b"\x03\xe8bye");
    assert_eq!(
        msg("websocket.bin").body().as_ref(),
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    let z = msg("post_zero_length.bin");
    assert!(z.body().is_empty());
}

#[test]
fn streamed_upload_reassembles() {
    // `bytes(range(256)) * 40` in four messages, each continuation carrying only UPLOAD_STREAM.
    let want: Vec<u8> = (0..40).flat_map(|_| 0u8..=255).collect();
    let mut body = Vec::new();
    for name in [
        "flow_upload_stream.bin",
        "flow_upload_stream_2.bin",
        "flow_upload_stream_3.bin",
        "flow_upload_stream_4.bin",
    ] {
        let m = msg(name);
        assert_eq!(m.upload_stream(), Some(body.len() as u64), "{name}");
        body.extend_from_slice(m.body());
        assert_eq!(m.conn_id(), 3);
        assert_eq!(m.path().as_ref(), b"/handler/stream");
    }
    assert_eq!(body, want);
    let first = msg("flow_upload_stream.bin");
    assert_eq!(first.download_credits(), Some(102_400));
    assert_eq!(hdr(&first, "content-length"), [b"10240"]);
    let last = msg("flow_upload_stream_4.bin");
    assert!(last.upload_stream_done());
    assert_eq!(last.method(), None);
    assert!(last.headers().is_empty());

    let chunks: Vec<Bytes> = (2..=4)
        .map(|i| msg(&format!("flow_chunked_stream_{i}.bin")).body().clone())
        .collect();
    assert_eq!(chunks.concat(), b"hello, world");
}

#[test]
fn http10_and_keepalive() {
    let m = msg("http10.bin");
    assert_eq!(m.version(), Some(Version::HTTP_10));
    assert!(m.headers().get("host").is_none());
    assert!(m.wants_close());
    let a = msg("keepalive_two.bin");
    let b = msg("keepalive_two_2.bin");
    assert_eq!(a.conn_id(), b.conn_id());
    assert!(a.is_request() && b.is_request());
}
