//! The access log and the metrics, driven in-process like tests/wsgi_bridge.rs (Python embedded
//! in this test binary, tests/apps/probe.py, a fake Mongrel2): every way a response can end
//! gives one line with its final status, body bytes, response headers and environ, and the
//! counters that go with it.

mod support;

use m2wsgi::wsgi::{metrics, AccessLog};
use std::time::{Duration, Instant};
use support::testing::RequestBuilder;
use support::wsgi::{get, Running, TIMEOUT};

/// The value of `series` in this process's exposition.
fn metric(series: &str) -> f64 {
    let text = metrics::render(&[]);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn settle(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}:\n{}",
            metrics::render(&[])
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_ending_gives_one_line_and_its_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let format = "%(U)s %(s)s %(b)s %({x-late}o)s %({x-replaced}o)s %({content-type}o)s \
                  %({wsgi.multithread}e)s";
    let log = AccessLog::open(&path, format).unwrap();
    let disconnects = metric("m2wsgi_client_disconnects_total");
    let mut r = Running::start("probe:application", |s| {
        s.threads(2).metrics(true).access_log(log.clone())
    });
    // start_response during the first iteration: its status and headers are the ones logged.
    assert_eq!(r.roundtrip(&get("/late")).1.status, 201);
    // A generator: body bytes before the chunked framing.
    assert_eq!(r.roundtrip(&get("/gen?n=3&size=5")).1.body.len(), 15);
    // exc_info replaces the status and headers before anything was sent.
    assert_eq!(r.roundtrip(&get("/exc_replace")).1.status, 503);
    // The application raises: the 500 m2wsgi sends, with its own headers.
    assert_eq!(r.roundtrip(&get("/raise")).1.status, 500);
    // HEAD: no body bytes.
    assert_eq!(r.roundtrip(&RequestBuilder::head("/hello")).1.status, 200);
    // WebSocket handshakes are refused before the application is called.
    assert_eq!(
        r.roundtrip(&RequestBuilder::websocket_handshake(
            "/ws",
            "dGhlIHNhbXBsZSBub25jZQ=="
        ))
        .1
        .status,
        400
    );
    // An error after the head went out: the connection is dropped, the bytes so far counted.
    let id = r.send(&get("/raise_after"));
    assert!(r.wait_end(id, TIMEOUT));
    // The client leaves mid-stream.
    let id = r.send(&get("/stream_forever"));
    r.pump(Duration::from_millis(300));
    r.disconnect(id);

    settle("eight requests counted", || {
        metric("m2wsgi_request_duration_seconds_count") == 8.0
            && metric("m2wsgi_threads{state=\"idle\"}") == 2.0
    });
    for (series, want) in [
        ("m2wsgi_requests_total{status=\"2xx\"}", 5.0),
        ("m2wsgi_requests_total{status=\"4xx\"}", 1.0),
        ("m2wsgi_requests_total{status=\"5xx\"}", 2.0),
        ("m2wsgi_requests_total{status=\"none\"}", 0.0),
        ("m2wsgi_gil_wait_seconds_count", 8.0),
        ("m2wsgi_requests_in_flight", 0.0),
        ("m2wsgi_threads{state=\"busy\"}", 0.0),
        ("m2wsgi_queue_length", 0.0),
    ] {
        assert_eq!(metric(series), want, "{series}");
    }
    assert!(metric("m2wsgi_client_disconnects_total") > disconnects);

    r.stop();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    // Two threads: lines in the order the responses ended.
    lines.sort_unstable();
    let (streamed, lines): (Vec<&str>, Vec<&str>) = lines
        .into_iter()
        .partition(|l| l.starts_with("/stream_forever "));
    assert_eq!(
        lines,
        [
            "/exc_replace 503 8 - 1 text/plain True",
            "/gen 200 15 - - application/octet-stream True",
            "/hello 200 0 - - text/plain; charset=utf-8 True",
            "/late 201 7 yes - text/plain True",
            "/raise 500 22 - - text/plain; charset=utf-8 True",
            "/raise_after 200 10 - - text/plain True",
            "/ws 400 31 - - - -",
        ]
    );
    let [streamed] = streamed[..] else {
        panic!("{streamed:?}")
    };
    let fields: Vec<&str> = streamed.split(' ').collect();
    assert_eq!(fields[1], "200", "{streamed}");
    assert!(fields[2].parse::<u64>().unwrap() >= 1024, "{streamed}");
    assert_eq!(fields[3..], ["-", "-", "application/octet-stream", "True"]);
}
