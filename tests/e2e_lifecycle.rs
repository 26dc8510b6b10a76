//! Process lifecycle of a handler: graceful drain on SIGTERM with requests in flight, a second
//! signal exiting at once, and malformed frames from Mongrel2 that must not kill it.
#![cfg(feature = "runtime")]

mod support;

use std::process::Output;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::Proc;

fn hello(m2: &Mongrel2, workers: &str) -> Proc {
    hello_with(m2, workers, &[])
}

fn hello_with(m2: &Mongrel2, workers: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        m2.send_spec("app"),
        m2.recv_spec("app"),
        "--send-ident",
        m2.send_ident("app"),
        "--workers",
        workers,
        "--allow-sleep",
    ];
    args.extend_from_slice(extra);
    Proc::example("hello", &args)
}

#[test]
fn a_request_still_running_at_the_shutdown_deadline_is_answered_503() {
    let m2 = Mongrel2::builder()
        .handler("/hello", &Handler::tcp("app"))
        .start();
    let mut p = hello_with(&m2, "1", &["--shutdown-timeout", "1"]);
    assert_eq!(curl(&["-s", &m2.url("/hello")]).stdout, b"Hello, world!");
    let client = background_curl(m2.url("/hello?sleep=8000"));
    assert!(
        p.wait_for_log("sleeping 8000 ms", Duration::from_secs(10)),
        "{}",
        p.log()
    );
    let t = Instant::now();
    p.signal("TERM");
    let out = client.join().unwrap();
    let waited = t.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Service Unavailable\n 503",
        "{}",
        p.log()
    );
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
    let status = p.wait_timeout(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status}");
}

fn background_curl(url: String) -> JoinHandle<Output> {
    std::thread::spawn(move || curl(&["-s", "-w", " %{http_code}", "--max-time", "20", &url]))
}

#[test]
fn sigterm_drains_every_started_request_then_exits_0() {
    let m2 = Mongrel2::builder()
        .handler("/hello", &Handler::tcp("app"))
        .start();
    let mut p = hello(&m2, "2");
    assert_eq!(curl(&["-s", &m2.url("/hello")]).stdout, b"Hello, world!");
    // 6 requests of 1 s on 2 workers. The signal comes after 1.5 s: 2 answered, 2 running and
    // 2 received and queued. (The wait is long so that, even on a loaded machine, every request
    // has reached the handler before it stops taking new ones: a request that reaches Mongrel2
    // after that is meant for another handler process, not this one.)
    let clients: Vec<_> = (0..6)
        .map(|_| background_curl(m2.url("/hello?sleep=1000")))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    p.signal("TERM");
    let status = p
        .wait_timeout(Duration::from_secs(15))
        .expect("exited after draining");
    assert!(status.success(), "exit status {status}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "exited before the queued requests could be answered"
    );
    for c in clients {
        let out = c.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Hello, world! 200",
            "a request in flight was not answered"
        );
    }
    assert!(p.log().contains("draining"), "{}", p.log());
}

#[test]
fn second_sigint_exits_at_once() {
    let m2 = Mongrel2::builder()
        .handler("/hello", &Handler::tcp("app"))
        .start();
    let mut p = hello(&m2, "1");
    assert_eq!(curl(&["-s", &m2.url("/hello")]).stdout, b"Hello, world!");
    let _slow = background_curl(m2.url("/hello?sleep=8000"));
    std::thread::sleep(Duration::from_millis(300));
    p.signal("INT");
    assert!(
        p.wait_for_log("shutting down", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    assert!(
        p.is_running(),
        "the first signal drains: the slow request is still running"
    );
    let t = Instant::now();
    p.signal("INT");
    let status = p
        .wait_timeout(Duration::from_secs(2))
        .expect("the second signal exits at once");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(!status.success(), "exit status {status}");
}

#[test]
fn malformed_frames_do_not_kill_the_handler() {
    // A fake Mongrel2: PUSH and SUB bound on loopback.
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_sndtimeo(5000).unwrap();
    push.bind("tcp://127.0.0.1:*").unwrap();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.bind("tcp://127.0.0.1:*").unwrap();
    let send = push.get_last_endpoint().unwrap().unwrap();
    let recv = sub.get_last_endpoint().unwrap().unwrap();
    // Keep the SUB busy (a bound socket attaches peers only when used) and collect replies.
    let collector = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if sub.poll(zmq::POLLIN, 20).unwrap() > 0 {
                let m = sub.recv_bytes(0).unwrap();
                let done = m.windows(13).any(|w| w == b"Hello, world!");
                got.push(m);
                if done {
                    break;
                }
            }
        }
        got
    });
    let mut p = Proc::example(
        "hello",
        &[&send, &recv, "--send-ident", "fake-ident", "--workers", "2"],
    );
    let good = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/get_simple.bin"
    ))
    .unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"garbage".to_vec(),
        b"uuid 1 /x 3:abc,".to_vec(),
        b"uuid notanumber /x 2:{}0:,".to_vec(),
        b"uuid 1 /x 99999999999999999999:".to_vec(),
        b"uuid 1 /x 13:6:METHOD,3:GET,0:,trailing".to_vec(),
        b"uuid 1 /x 21:6:METHOD,9:WEBSOCKET,}0:,".to_vec(), // no FLAGS
        (0..=255u8).cycle().take(4096).collect(),
        [&good[..], b"extra bytes"].concat(),
        good[..good.len() - 3].to_vec(),
    ];
    for g in &garbage {
        push.send(&g[..], 0).expect("the handler takes frames");
    }
    push.send(&good[..], 0).unwrap();
    let replies = collector.join().unwrap();
    let last = replies
        .last()
        .map(|r| String::from_utf8_lossy(r).into_owned());
    let last = last.unwrap_or_default();
    assert!(
        last.starts_with("fake-ident 1:1, HTTP/1.1 200 OK\r\n") && last.ends_with("Hello, world!"),
        "no answer to the good frame after the garbage: {replies:?}\n{}",
        p.log()
    );
    assert!(p.is_running(), "handler died: {}", p.log());
    assert!(p.log().contains("malformed"), "{}", p.log());
}
