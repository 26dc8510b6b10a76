//! The ready-based device (`m2wsgi-device`) with two `hello` worker processes behind a real
//! Mongrel2, one of them slow: the fast one keeps serving. And a handler started from
//! Mongrel2's config database (`config_db` example).
#![cfg(feature = "runtime")]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::mongrel2::{curl, free_port, Handler, Mongrel2};
use support::process::{percentile, Proc};

fn timed_get(url: &str) -> (Duration, String) {
    let t = Instant::now();
    let out = curl(&["-s", "-w", " %{http_code}", url]);
    (
        t.elapsed(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn device_hands_requests_to_ready_workers_only() {
    let m2 = Mongrel2::builder()
        .handler("/hello", &Handler::tcp("app"))
        .start();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let device = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_m2wsgi-device")),
        &[m2.send_spec("app"), &endpoint],
        &[],
    );
    let worker = || {
        Proc::example(
            "hello",
            &[
                m2.send_spec("app"),
                m2.recv_spec("app"),
                "--send-ident",
                m2.send_ident("app"),
                "--device",
                &endpoint,
                "--workers",
                "1",
                "--allow-sleep",
            ],
        )
    };
    let (mut a, mut b) = (worker(), worker());
    assert!(device.wait_for_log("taking requests from Mongrel2", Duration::from_secs(10)));
    // Both workers have announced themselves (heartbeats every 500 ms).
    std::thread::sleep(Duration::from_millis(700));

    // One worker is stuck in a 3 s request; fast requests meanwhile all go to the other one.
    // (Mongrel2's own round-robin would queue every second one behind the slow request.)
    let slow_url = m2.url("/hello?sleep=3000");
    let slow = std::thread::spawn(move || timed_get(&slow_url));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut times = Vec::new();
    while t.elapsed() < Duration::from_millis(2000) {
        let (d, text) = timed_get(&m2.url("/hello"));
        assert_eq!(text, "Hello, world! 200");
        times.push(d);
    }
    let (d, text) = slow.join().unwrap();
    assert_eq!(text, "Hello, world! 200");
    assert!(d >= Duration::from_secs(3));
    let n = times.len();
    let worst = *times.iter().max().unwrap();
    assert!(n >= 20, "only {n} fast requests in 2 s: {times:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a fast request waited {worst:?}: {times:?}"
    );
    eprintln!(
        "device: {n} fast requests while one worker was busy: p50 {:?}, max {worst:?}",
        percentile(&mut times, 50.0)
    );

    // A worker that drains (SIGTERM says BYE) or dies (SIGKILL) gets no more requests, and
    // none is lost: the device only sends to workers it has heard from.
    for (w, sig) in [(&mut a, "TERM"), (&mut b, "KILL")] {
        let mut next = worker();
        assert!(next.wait_for_log("replying to", Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(700));
        w.signal(sig);
        assert!(w.wait_timeout(Duration::from_secs(5)).is_some());
        for _ in 0..10 {
            let (d, text) = timed_get(&m2.url("/hello"));
            assert_eq!(text, "Hello, world! 200", "after SIG{sig}");
            assert!(d < Duration::from_secs(2), "after SIG{sig}: {d:?}");
        }
        std::mem::swap(w, &mut next);
    }

    // Concurrent load: everything is answered.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = m2.url("/hello");
            std::thread::spawn(move || timed_get(&url).1)
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), "Hello, world! 200");
    }
}

#[test]
fn handler_from_the_config_database() {
    let h = Handler::tcp("app");
    let m2 = Mongrel2::builder()
        .handler("/hello", &h)
        .handler("/upload", &h)
        .setting("limits.content_length", 1024)
        .setting("upload.temp_store", "/tmp/upload.XXXXXX")
        .start();
    let db = m2.db_path().display().to_string();
    let mut args = vec![db.as_str(), "--route", "/hello"];
    if !m2.chrooted() {
        args.extend(["--chroot", "/"]);
    }
    let p = Proc::example("config_db", &args);
    let out = curl(&["-s", &m2.url("/hello")]);
    assert_eq!(out.stdout, b"Hello, world!", "{}", p.log());
    assert!(p.log().contains(m2.send_ident("app")), "{}", p.log());
    // Upload directory and chroot came from the database too.
    let body = m2.chroot().join("body.bin");
    std::fs::write(&body, vec![7u8; 50_000]).unwrap();
    let arg = format!("@{}", body.display());
    let out = curl(&["-s", "--data-binary", &arg, &m2.url("/upload")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "size=50000\n",
        "{}",
        p.log()
    );
}
