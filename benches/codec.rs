//! Codec benchmarks: decoding Mongrel2 request frames against parsing the same request as
//! HTTP/1.1 with `httparse`. Results and the goals are in `BENCHMARKS.md`.
//!
//! ```text
//! cargo bench --bench codec
//! ```
//!
//! - `raw/*`: `RawMessage::decode` (borrowed) and a checked walk over every header
//!   (`RawHeaders::try_iter`), against
//!   `httparse::Request::parse` with a 16-entry header array and a walk over its headers.
//! - `owned/*`: `Message::decode` (an `http::HeaderMap` and typed Mongrel2 fields), against
//!   `httparse` plus building an `http::Request<()>` with the same method, URI and `HeaderMap`.
//! - `body/*`: `Message::decode` of the same message with a 1 MiB body and with an empty one:
//!   the body is a slice of the frame, never a copy, so the two should cost the same.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use m2wsgi::{Message, RawMessage};
use std::time::Duration;

/// `tests/data/get_simple.bin`: `GET /handler HTTP/1.1` with `Host: localhost`, as Mongrel2 sent it.
const GET_SIMPLE: &[u8] = include_bytes!("../tests/data/get_simple.bin");
/// The same request as a client sends it (with the `X-Forwarded-For` Mongrel2 adds).
const HTTP_GET: &[u8] =
    b"GET /handler HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n";

fn raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw");
    g.bench_function("m2wsgi_RawMessage", |b| {
        b.iter(|| {
            let msg = RawMessage::decode(black_box(GET_SIMPLE)).unwrap();
            let mut n = 0;
            // `try_iter`: every entry checked, in the one walk.
            for item in msg.headers().try_iter() {
                let (k, v) = item.unwrap();
                n += k.len() + v.len();
            }
            black_box((n, msg.body().len()))
        })
    });
    // For the breakdown in BENCHMARKS.md: the decode (top-level structure only) alone.
    g.bench_function("m2wsgi_RawMessage_decode_only", |b| {
        b.iter(|| black_box(RawMessage::decode(black_box(GET_SIMPLE)).unwrap()))
    });
    g.bench_function("httparse", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(black_box(HTTP_GET)).unwrap();
            let mut n = 0;
            for h in req.headers.iter() {
                n += h.name.len() + h.value.len();
            }
            black_box((n, status.unwrap()))
        })
    });
    g.finish();
}

fn http_request(buf: &[u8]) -> http::Request<()> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(buf).unwrap();
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        map.append(
            HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(h.value).unwrap(),
        );
    }
    let mut out = http::Request::new(());
    *out.method_mut() = http::Method::from_bytes(req.method.unwrap().as_bytes()).unwrap();
    *out.uri_mut() = req.path.unwrap().parse().unwrap();
    *out.version_mut() = http::Version::HTTP_11;
    *out.headers_mut() = map;
    out
}

fn owned(c: &mut Criterion) {
    let frame = Bytes::from(GET_SIMPLE.to_vec());
    let mut g = c.benchmark_group("owned");
    g.bench_function("m2wsgi_Message", |b| {
        b.iter(|| black_box(Message::decode(black_box(frame.clone())).unwrap()))
    });
    g.bench_function("httparse_http_Request", |b| {
        b.iter(|| black_box(http_request(black_box(HTTP_GET))))
    });
    g.finish();
}

/// `get_simple.bin` with its empty body replaced by `body`.
fn with_body(body: &[u8]) -> Bytes {
    let head = GET_SIMPLE.strip_suffix(b"0:,").unwrap();
    let mut f = head.to_vec();
    f.extend_from_slice(format!("{}:", body.len()).as_bytes());
    f.extend_from_slice(body);
    f.push(b',');
    Bytes::from(f)
}

fn body(c: &mut Criterion) {
    let empty = with_body(b"");
    let big = with_body(&vec![0xA5; 1 << 20]);
    let mut g = c.benchmark_group("body");
    for (name, frame) in [("empty", empty), ("1MiB", big)] {
        g.bench_function(name, |b| {
            // Decoding consumes a `Bytes` handle; cloning one is a reference count bump, the
            // same for both sizes.
            b.iter(|| black_box(Message::decode(black_box(frame.clone())).unwrap()))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60)
}

criterion_group! {
    name = benches;
    config = config();
    targets = raw, owned, body
}
criterion_main!(benches);
