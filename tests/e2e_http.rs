//! End to end through a real Mongrel2: the `hello` and `streaming` examples, and in-process
//! handlers, driven by curl and raw loopback sockets. Every process is stopped on drop; every
//! wait is bounded.
#![cfg(feature = "runtime")]

mod support;

use http::{HeaderMap, StatusCode};
use m2wsgi::MessageKind;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::{dechunk, raw_http, read_response, read_until_close, wait_until, Proc};
use support::runtime::{builder, InProcess};

const T: Duration = Duration::from_secs(10);

fn mongrel2(route: &str) -> Mongrel2 {
    Mongrel2::builder()
        .handler(route, &Handler::tcp("app"))
        .start()
}

fn example(m2: &Mongrel2, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        m2.send_spec("app"),
        m2.recv_spec("app"),
        "--send-ident",
        m2.send_ident("app"),
    ];
    args.extend_from_slice(extra);
    Proc::example(name, &args)
}

#[test]
fn hello_is_byte_exact() {
    let m2 = mongrel2("/hello");
    let _hello = example(&m2, "hello", &["--workers", "2"]);
    let out = curl(&["-o", "-", "-w", "\n%{http_code}", &m2.url("/hello")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"Hello, world!\n200");

    // The whole response, byte for byte but for the date.
    let (raw, _) = raw_http(
        m2.addr(),
        b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        T,
    );
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "Hello, world!");
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    assert_eq!(lines.remove(0), "HTTP/1.1 200 OK");
    // Header names compare case-insensitively.
    for l in &mut lines {
        let (k, v) = l.split_once(": ").unwrap();
        *l = format!("{}: {v}", k.to_ascii_lowercase());
    }
    lines.sort_unstable();
    assert_eq!(lines.len(), 4, "{head}");
    assert_eq!(lines[0], "connection: close");
    assert_eq!(lines[1], "content-length: 13");
    assert_eq!(lines[2], "content-type: text/plain");
    assert!(
        lines[3].starts_with("date: ") && lines[3].ends_with(" GMT"),
        "{head}"
    );
}

#[test]
fn keep_alive_http10_and_head() {
    let m2 = mongrel2("/hello");
    let _hello = example(&m2, "hello", &["--workers", "2"]);
    // Warm up: the handler attaches once Mongrel2 has subscribed.
    assert_eq!(curl(&["-s", &m2.url("/hello")]).stdout, b"Hello, world!");

    // Two requests on one connection.
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let r = read_response(&mut s, false, T);
        assert_eq!(r.status, 200, "{}", r.head_str());
        assert_eq!(r.body, b"Hello, world!");
        assert_eq!(r.header("connection"), None, "{}", r.head_str());
    }

    // HEAD: the length of the body that GET would send, and no body; the connection stays
    // usable, so no stray body bytes were sent.
    s.write_all(b"HEAD /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, true, T);
    assert_eq!(r.status, 200);
    assert_eq!(r.header_str("content-length").as_deref(), Some("13"));
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, false, T);
    assert_eq!(r.body, b"Hello, world!", "nothing after the HEAD answer");

    // HTTP/1.0 without keep-alive: answered as 1.0 and the connection is closed after.
    let start = Instant::now();
    let (raw, closed) = raw_http(m2.addr(), b"GET /hello HTTP/1.0\r\n\r\n", T);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        closed,
        "connection not closed after an HTTP/1.0 answer: {text}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nHello, world!"), "{text}");

    // HTTP/1.0 with keep-alive: kept open.
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    s.write_all(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, false, T);
    assert!(r.head.starts_with(b"HTTP/1.0 200 OK"), "{}", r.head_str());
    assert_eq!(r.header_str("connection").as_deref(), Some("keep-alive"));
    s.write_all(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s, false, T).body, b"Hello, world!");
}

#[test]
fn chunked_streaming_response() {
    let m2 = mongrel2("/stream");
    let _s = example(&m2, "streaming", &[]);
    let out = curl(&[
        "-s",
        "--raw",
        "-i",
        &m2.url("/stream?chunks=5&size=16&delay_ms=20"),
    ]);
    let text = out.stdout;
    let split = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&text[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let body = dechunk(&text[split + 4..]);
    let want: Vec<u8> = (0..5)
        .flat_map(|i| format!("chunk {i:06}\n..\n").into_bytes())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&want)
    );

    // curl decodes it too.
    let out = curl(&["-s", &m2.url("/stream?chunks=3&size=16&delay_ms=0")]);
    assert_eq!(out.stdout.len(), 48);
}

#[test]
fn disconnect_notice_reaches_a_streaming_producer() {
    let m2 = mongrel2("/stream");
    let stopped = Arc::new(AtomicBool::new(false));
    let notices = Arc::new(AtomicU64::new(0));
    let (stopped2, notices2) = (Arc::clone(&stopped), Arc::clone(&notices));
    let _server = InProcess::start(builder(&m2, "app").connect().unwrap(), 2, move |req| {
        if req.kind() == &MessageKind::Disconnect {
            notices2.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let mut body = req.stream(StatusCode::OK, &HeaderMap::new(), None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if body.is_disconnected() || body.write(b"tick\n").and_then(|()| body.flush()).is_err()
            {
                stopped2.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = body.finish();
    });
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (got, _) = read_until_close(&mut s, Duration::from_millis(500));
    assert!(
        String::from_utf8_lossy(&got).contains("tick"),
        "streaming started"
    );
    drop(s); // the client hangs up
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stopped.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        stopped.load(Ordering::SeqCst),
        "producer still running 5 s after the client left"
    );
    wait_until(Duration::from_secs(5), || {
        notices.load(Ordering::SeqCst) >= 1
    });
    // A duplicate notice would come right behind the first.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        notices.load(Ordering::SeqCst),
        1,
        "the handler saw the notice"
    );

    // The streaming example logs the same.
    drop(_server);
    let example = example(&m2, "streaming", &[]);
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    s.write_all(b"GET /stream?chunks=1000&size=8&delay_ms=20 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (got, _) = read_until_close(&mut s, Duration::from_millis(500));
    assert!(!got.is_empty());
    drop(s);
    assert!(
        example.wait_for_log("producer stopped: client gone", Duration::from_secs(5)),
        "{}",
        example.log()
    );
}

#[test]
fn deliver_to_many_connections() {
    // 130 clients: more than Mongrel2 takes in one message (128), so deliver batches.
    const N: usize = 130;
    let m2 = mongrel2("/wait");
    let waiting: Arc<Mutex<Vec<u64>>> = Arc::default();
    let w2 = Arc::clone(&waiting);
    let server = InProcess::start(builder(&m2, "app").connect().unwrap(), 2, move |mut req| {
        if req.kind() == &MessageKind::Request {
            req.set_answered(); // answered below, all at once
            w2.lock().unwrap().push(req.conn_id());
        }
    });
    let clients: Vec<TcpStream> = (0..N)
        .map(|_| {
            let mut s = TcpStream::connect(m2.addr()).unwrap();
            s.write_all(b"GET /wait HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let deadline = Instant::now() + T;
    while waiting.lock().unwrap().len() < N && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ids = waiting.lock().unwrap().clone();
    assert_eq!(ids.len(), N, "every request reached the handler");
    server
        .conn
        .deliver(
            &ids,
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\ndelivered",
        )
        .unwrap();
    server.conn.close(&ids).unwrap();
    for mut c in clients {
        let (got, closed) = read_until_close(&mut c, T);
        assert!(closed);
        assert!(
            got.ends_with(b"\r\n\r\ndelivered"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
}
