//! `WsgiServer::timeout` and `WsgiServer::max_body` driven in-process (Python embedded in this
//! test binary, tests/apps/probe.py, a fake Mongrel2): a request running past the timeout is
//! answered `504` (or its connection dropped once its response started), its Python stack is
//! logged, and what the thread sends after that never reaches the client; a body above the
//! limit gets `413` before the application sees it. The same through the real `m2wsgi` command
//! and Mongrel2 is in tests/wsgi_e2e.rs.

mod support;

use std::time::{Duration, Instant};
use support::wsgi::{get, post, wait_log, Running, TIMEOUT};

const LIMIT: Duration = Duration::from_millis(500);

#[test]
fn past_the_timeout_504_the_stack_is_logged_and_the_late_response_is_discarded() {
    let mut r = Running::start("probe:application", |s| s.threads(2).timeout(LIMIT));
    let sent = Instant::now();
    let id = r.send(&get("/sleep/late504?t=2.5"));
    let resp = r.response_with(id, false, TIMEOUT);
    let took = sent.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.head_str());
    assert!(
        took < LIMIT + Duration::from_secs(1),
        "answered after {took:?}"
    );
    assert!(r.wait_end(id, TIMEOUT), "the connection is closed");
    let logged = wait_log(
        &["/sleep/late504", "504", "sleep_case", "time.sleep"],
        TIMEOUT,
    )
    .expect("the timeout is logged with the thread's Python stack");
    assert!(logged.contains("1 of 2 thread(s) stuck"), "{logged}");

    // The other thread serves while this one sleeps.
    let (_, hello) = r.roundtrip(&get("/hello"));
    assert_eq!(hello.status, 200);
    assert!(sent.elapsed() < Duration::from_millis(2500), "still asleep");

    // When the application returns, its response goes nowhere and the thread serves again.
    assert!(
        wait_log(
            &["/sleep/late504", "returned after", "serves again"],
            TIMEOUT
        )
        .is_some(),
        "the late return is logged"
    );
    let seen = r.conn(id);
    assert_eq!(
        seen.data.len(),
        resp.head.len() + resp.body.len(),
        "nothing reached the client after the 504: {:?}",
        String::from_utf8_lossy(&seen.data)
    );
    for _ in 0..4 {
        let (_, again) = r.roundtrip(&get("/hello"));
        assert_eq!(again.status, 200);
    }
}

#[test]
fn past_the_timeout_a_started_response_is_cut_off() {
    let mut r = Running::start("probe:application", |s| s.threads(1).timeout(LIMIT));
    let id = r.send(&get("/stream_forever/cut?token=tcut"));
    assert!(r.wait_end(id, TIMEOUT), "the connection ends");
    let out = r.conn(id);
    assert!(out.cancelled(), "dropped, not closed: {:?}", out.ctl);
    assert!(out.data.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(wait_log(
        &["/stream_forever/cut", "connection is dropped", "in gen"],
        TIMEOUT
    )
    .is_some());
    // One thread, stuck: more than half.
    assert!(wait_log(&["1 of 1 worker thread(s) are stuck", "recycled"], TIMEOUT).is_some());
    // The generator stops at its next write (the client counts as gone) and close() is called;
    // the thread serves again.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, s) = r.roundtrip(&get("/stats?token=tcut"));
        if s.text().starts_with("closed=1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "close() not called: {}",
            s.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn body_above_max_body_gets_413_before_the_application() {
    let mut r = Running::start("probe:application", |s| s.max_body(16));
    let (id, resp) = r.roundtrip(&post("/input/big?op=read", &[b'x'; 17]));
    assert_eq!(resp.status, 413, "{}", resp.head_str());
    assert!(r.wait_end(id, TIMEOUT));
    let (_, resp) = r.roundtrip(&post("/input/ok?op=read", &[b'x'; 16]));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), format!("b'{}'\nb''\n", "x".repeat(16)));
}
