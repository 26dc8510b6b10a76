//! Fair dispatch through a real Mongrel2: with 4 workers and 3 clients that keep 2-second
//! requests running, fast requests still go straight to the idle worker: none of them waits behind
//! a slow one. This is a behaviour test, with a bound far from any timing noise (a fast request
//! stuck behind a slow one takes about 2 s); the latency figures themselves (goal p99 ≤ 50 ms)
//! are measured by `bench/e2e.sh` and reported in BENCHMARKS.md.
#![cfg(feature = "runtime")]

mod support;

use http::{HeaderMap, StatusCode};
use m2wsgi::MessageKind;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::mongrel2::{Handler, Mongrel2};
use support::process::{percentile, read_response};
use support::runtime::{builder, InProcess};

const T: Duration = Duration::from_secs(10);

fn get(m2: &Mongrel2, path: &str) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s, false, T);
    assert_eq!(r.status, 200);
    t.elapsed()
}

#[test]
fn fast_requests_are_not_stuck_behind_slow_ones() {
    let m2 = Mongrel2::builder()
        .handler("/", &Handler::tcp("app"))
        .start();
    let _server = InProcess::start(builder(&m2, "app").connect().unwrap(), 4, |req| {
        if req.kind() != &MessageKind::Request {
            return;
        }
        if req.request_path().is_some_and(|p| p.starts_with(b"/slow")) {
            std::thread::sleep(Duration::from_secs(2));
        }
        let _ = req.reply_http(StatusCode::OK, &HeaderMap::new(), b"ok");
    });
    get(&m2, "/fast"); // warm up
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let (stop, addr) = (Arc::clone(&stop), m2.url("/slow"));
            let m2addr = m2.addr();
            std::thread::spawn(move || {
                let _ = addr;
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let mut s = TcpStream::connect(m2addr).unwrap();
                    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .unwrap();
                    assert_eq!(read_response(&mut s, false, T).status, 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200)); // the slow ones are running
    let t = Instant::now();
    let mut fast = Vec::new();
    while t.elapsed() < Duration::from_secs(4) {
        fast.push(get(&m2, "/fast"));
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    let slow_done: usize = slow.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(slow_done >= 3, "the slow requests ran ({slow_done})");
    let n = fast.len();
    let p50 = percentile(&mut fast, 50.0);
    let p99 = percentile(&mut fast, 99.0);
    eprintln!("fast requests during slow ones: n={n} p50={p50:?} p99={p99:?}");
    assert!(n >= 50, "only {n} fast requests in 4 s");
    assert!(
        p99 < Duration::from_millis(1000),
        "fast p99 {p99:?} (p50 {p50:?})"
    );
}
