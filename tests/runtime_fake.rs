//! The handler runtime (`Connection`, `Server`, `Request`) against the fake Mongrel2 of
//! `m2wsgi::testing`: no Mongrel2 needed, so these run under plain `cargo test`.
#![cfg(feature = "runtime")]

mod support;

use http::{HeaderMap, StatusCode};
use m2wsgi::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use support::runtime::connect_fake as connect;
use support::runtime::InProcess;
use support::testing::{FakeMongrel2, HttpResponse, RequestBuilder};

const T: Duration = Duration::from_secs(10);

fn hello(req: m2wsgi::Request) {
    let body = format!("hello {}", String::from_utf8_lossy(req.message().path()));
    req.reply_http(StatusCode::OK, &HeaderMap::new(), body.as_bytes())
        .expect("reply");
}

#[test]
fn hello_reply() {
    let m2 = FakeMongrel2::new();
    let _server = InProcess::start(connect(&m2), 2, hello);
    m2.send(RequestBuilder::get("/hello").conn_id(3).build());
    let r = m2.read_response(3, T).expect("a response");
    assert_eq!(r.status, 200, "{}", r.head_str());
    assert_eq!(r.text(), "hello /hello");
    assert_eq!(r.header_str("content-length").as_deref(), Some("12"));
    // The reply is addressed to the client with the handler's sender id.
    let reply = m2.recv_reply(T).expect("the reply frame");
    assert_eq!(reply.sender, m2.sender());
    assert_eq!(reply.conn_ids, [3]);
    assert!(reply.body.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[test]
fn keep_alive_two_requests() {
    let m2 = FakeMongrel2::new();
    let _server = InProcess::start(connect(&m2), 1, hello);
    m2.send(RequestBuilder::get("/one").conn_id(5).build());
    let first = m2.read_response(5, T).expect("first response");
    assert_eq!(first.text(), "hello /one");
    m2.send(RequestBuilder::get("/two").conn_id(5).build());
    let consumed = first.head.len() + first.body.len();
    let mut second = None;
    m2.wait_client(5, T, |c| {
        second = HttpResponse::parse(&c.data[consumed..], false, c.ended()).unwrap();
        second.is_some()
    })
    .expect("second response on the same connection");
    let second = second.unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "hello /two");
    assert!(
        !m2.client(5).closed,
        "keep-alive: the connection stays open"
    );
}

#[test]
fn forged_upload_start_is_refused_with_400() {
    let m2 = FakeMongrel2::new();
    let uploads = tempfile::tempdir().unwrap();
    let conn = Connection::builder(m2.send_spec())
        .recv_spec(m2.recv_spec())
        .send_ident(m2.sender())
        .upload_dir(uploads.path())
        .connect()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let _server = InProcess::start(conn, 1, move |req| {
        seen.fetch_add(1, Ordering::SeqCst);
        hello(req);
    });
    // A path outside the upload directory cannot come from Mongrel2.
    m2.send(
        RequestBuilder::get("/x")
            .upload_start("/etc/passwd")
            .conn_id(8)
            .build(),
    );
    let r = m2.read_response(8, T).expect("a response");
    assert_eq!(r.status, 400, "{}", r.head_str());
    // Uploads off: a done header with no start before it is forged as well.
    m2.send(
        RequestBuilder::get("/y")
            .upload_done("/tmp/upload.forged")
            .conn_id(10)
            .build(),
    );
    let r = m2.read_response(10, T).expect("a response");
    assert_eq!(r.status, 400, "{}", r.head_str());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler never sees them"
    );
}

#[test]
fn async_upload_body_is_read_from_the_temp_file() {
    use std::io::Read as _;
    let m2 = FakeMongrel2::new();
    let uploads = tempfile::tempdir().unwrap();
    let file = uploads.path().join("upload.AbC123");
    std::fs::write(&file, b"the uploaded body").unwrap();
    let conn = Connection::builder(m2.send_spec())
        .recv_spec(m2.recv_spec())
        .send_ident(m2.sender())
        .upload_dir(uploads.path())
        .connect()
        .unwrap();
    let _server = InProcess::start(conn, 1, |req| {
        let mut body = Vec::new();
        req.body_reader()
            .expect("body")
            .read_to_end(&mut body)
            .expect("read");
        req.reply_http(StatusCode::OK, &HeaderMap::new(), &body)
            .expect("reply");
    });
    let path = file.to_str().unwrap();
    let req = RequestBuilder::new("POST", "/up")
        .header("content-length", "17")
        .conn_id(14);
    m2.send(req.clone().upload_start(path).build());
    m2.send(req.upload_done(path).build());
    let r = m2.read_response(14, T).expect("a response");
    assert_eq!(r.status, 200, "{}", r.head_str());
    assert_eq!(r.text(), "the uploaded body");
}

#[test]
fn streamed_response_is_chunked() {
    let m2 = FakeMongrel2::new();
    let _server = InProcess::start(connect(&m2), 1, |req| {
        let mut s = req
            .stream(StatusCode::OK, &HeaderMap::new(), None)
            .expect("stream");
        for part in [&b"one,"[..], b"two,", b"three"] {
            s.write(part).expect("write");
            s.flush().expect("flush");
        }
        s.finish().expect("finish");
    });
    m2.send(RequestBuilder::get("/stream").conn_id(9).build());
    let r = m2.read_response(9, T).expect("a response");
    assert_eq!(r.status, 200);
    assert!(r.chunked, "{}", r.head_str());
    assert_eq!(r.text(), "one,two,three");
}

#[test]
fn disconnect_notice_reaches_is_disconnected() {
    let m2 = FakeMongrel2::new();
    let (started_tx, started_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel();
    let _server = InProcess::start(connect(&m2), 1, move |req| {
        let responder = req.responder();
        started_tx.send(()).unwrap();
        let deadline = Instant::now() + T;
        while !responder.is_disconnected() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        seen_tx.send(responder.is_disconnected()).unwrap();
        let _ = req.close();
    });
    m2.send(RequestBuilder::get("/wait").conn_id(11).build());
    started_rx
        .recv_timeout(T)
        .expect("the handler got the request");
    m2.disconnect(11);
    assert!(
        seen_rx.recv_timeout(T).expect("the handler finished"),
        "is_disconnected() after Mongrel2's notice"
    );
}

#[test]
fn malformed_frame_is_skipped() {
    let m2 = FakeMongrel2::new();
    let _server = InProcess::start(connect(&m2), 1, hello);
    m2.send(&b"garbage"[..]);
    m2.send(&b"uuid 1 /x 3:abc,"[..]);
    m2.send(RequestBuilder::get("/after").conn_id(12).build());
    let r = m2.read_response(12, T).expect("the next request is served");
    assert_eq!(r.text(), "hello /after");
}

#[test]
fn head_request_has_no_body() {
    let m2 = FakeMongrel2::new();
    let _server = InProcess::start(connect(&m2), 1, hello);
    m2.send(RequestBuilder::head("/h").conn_id(13).build());
    let r = m2
        .read_response_with(13, true, T)
        .expect("a response to HEAD");
    assert_eq!(r.status, 200);
    assert_eq!(r.header_str("content-length").as_deref(), Some("8"));
    // Nothing follows the head.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(m2.client(13).data.len(), r.head.len());
}

/// One server, two Mongrel2s (`Server::also`): the same connection id on both gets each its
/// own answer, through its own Mongrel2.
#[test]
fn one_server_two_mongrel2s_keep_their_clients_apart() {
    let (a, b) = (FakeMongrel2::new(), FakeMongrel2::new());
    let server = m2wsgi::Server::new(connect(&a))
        .also(connect(&b))
        .workers(2);
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.serve(hello));
    a.send(RequestBuilder::get("/from-a").conn_id(1).build());
    b.send(RequestBuilder::get("/from-b").conn_id(1).build());
    assert_eq!(
        a.read_response(1, T).expect("a's answer").text(),
        "hello /from-a"
    );
    assert_eq!(
        b.read_response(1, T).expect("b's answer").text(),
        "hello /from-b"
    );
    // Nothing crossed over: each fake got exactly one reply.
    assert!(a.recv_reply(T).is_some() && a.recv_reply(Duration::from_millis(200)).is_none());
    assert!(b.recv_reply(T).is_some() && b.recv_reply(Duration::from_millis(200)).is_none());
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

/// `Server::stats`: messages queued behind busy workers, and idle and busy workers, live.
#[test]
fn server_stats_show_the_queue_and_the_workers() {
    let m2 = FakeMongrel2::new();
    let server = m2wsgi::Server::new(connect(&m2))
        .workers(2)
        .shutdown_timeout(Duration::from_secs(5));
    let stats = server.stats();
    assert_eq!((stats.workers(), stats.queued()), (0, 0), "not serving yet");
    let stop = server.shutdown_handle();
    let (release, gate) = mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let thread = std::thread::spawn(move || {
        server.serve(move |req| {
            if req.message().path().as_ref() == b"/hold" {
                let _ = gate.lock().unwrap().recv_timeout(T);
            }
            hello(req);
        })
    });
    let settle = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + T;
        while !cond() {
            assert!(Instant::now() < deadline, "{what}: {stats:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    settle("both workers idle", &|| {
        stats.workers() == 2 && stats.idle_workers() == 2
    });
    // One worker holds /hold (the other waits for the gate's lock); the third waits in the
    // queue.
    for id in 1..=3 {
        m2.send(RequestBuilder::get("/hold").conn_id(id).build());
    }
    settle("two busy, one queued", &|| {
        stats.busy_workers() == 2 && stats.queued() == 1
    });
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    for id in 1..=3 {
        assert_eq!(m2.read_response(id, T).expect("a response").status, 200);
    }
    settle("idle again", &|| {
        stats.idle_workers() == 2 && stats.queued() == 0
    });
    stop.shutdown();
    thread.join().unwrap().unwrap();
}

/// With several worker threads and one request at a time, the next request goes to the thread
/// that became idle last: the same thread serves them (a pool that woke the longest-idle thread
/// would rotate over all four).
#[test]
fn one_request_at_a_time_stays_on_one_thread() {
    let m2 = FakeMongrel2::new();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let _server = InProcess::start(connect(&m2), 4, move |req| {
        tx.lock()
            .unwrap()
            .send(std::thread::current().id())
            .unwrap();
        hello(req);
    });
    let mut threads = Vec::new();
    for conn in 1..=20 {
        m2.send_request(&RequestBuilder::get("/same").conn_id(conn));
        m2.read_response(conn, T).expect("a response");
        threads.push(rx.recv_timeout(T).unwrap());
    }
    let most = threads
        .iter()
        .map(|t| threads.iter().filter(|u| *u == t).count())
        .max()
        .unwrap();
    assert!(most >= 15, "requests spread over the threads: {threads:?}");
}

/// While a worker answers a slow request, the next request is read and answered by another
/// worker (the thread that was reading is busy: the reading goes to an idle one), and the slow
/// one still sees its client's disconnect notice (read by whoever reads while it is busy).
#[test]
fn a_slow_request_holds_neither_the_next_one_nor_its_own_notices() {
    let m2 = FakeMongrel2::new();
    let (started_tx, started_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel();
    let started_tx = std::sync::Mutex::new(started_tx);
    let seen_tx = std::sync::Mutex::new(seen_tx);
    let _server = InProcess::start(connect(&m2), 2, move |req| {
        if req.message().path().as_ref() != b"/slow" {
            return hello(req);
        }
        let responder = req.responder();
        started_tx.lock().unwrap().send(()).unwrap();
        let deadline = Instant::now() + T;
        while !responder.is_disconnected() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        seen_tx
            .lock()
            .unwrap()
            .send(responder.is_disconnected())
            .unwrap();
    });
    m2.send(RequestBuilder::get("/slow").conn_id(1).build());
    started_rx
        .recv_timeout(T)
        .expect("the slow request started");
    for id in 2..=4 {
        m2.send(RequestBuilder::get("/quick").conn_id(id).build());
        let r = m2.read_response(id, T).expect("answered while /slow runs");
        assert_eq!(r.text(), "hello /quick");
    }
    assert!(
        seen_rx.try_recv().is_err(),
        "/slow is still running (its client has not left)"
    );
    m2.disconnect(1);
    assert!(
        seen_rx.recv_timeout(T).expect("the slow request finished"),
        "the slow request saw its client leave"
    );
}
