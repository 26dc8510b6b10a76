//! The async runtime end to end: the unmodified axum Router of `examples/axum.rs` behind a real
//! Mongrel2, driven by curl and raw loopback sockets. Every process is stopped on drop; every
//! wait is bounded.
#![cfg(feature = "axum")]

mod support;

use m2wsgi::codec::websocket::Opcode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::{crc32, raw_http, wait_until, Proc};
use support::websocket::Ws;

const T: Duration = Duration::from_secs(10);
/// Below this, bodies are inline in Mongrel2's message; above, an async upload (temp file) or,
/// with `upload.stream=1`, a streamed one.
const LIMIT: usize = 64 * 1024;

/// A Mongrel2 routing `/` to the handler, with extra settings.
fn mongrel2(settings: &[(&str, i64)]) -> Mongrel2 {
    let mut b = Mongrel2::builder()
        .handler("/", &Handler::tcp("app"))
        .setting("limits.content_length", LIMIT)
        .setting("upload.temp_store", "/tmp/upload.XXXXXX");
    for (k, v) in settings {
        b = b.setting(k, *v);
    }
    b.start()
}

fn axum(m2: &Mongrel2, extra: &[&str]) -> Proc {
    let chroot = m2.host_path("/").display().to_string();
    let mut args = vec![
        m2.send_spec("app"),
        m2.recv_spec("app"),
        "--send-ident",
        m2.send_ident("app"),
        "--upload-dir",
        "/tmp",
        "--chroot",
        &chroot,
    ];
    args.extend_from_slice(extra);
    Proc::example("axum", &args)
}

/// `curl` with `args`; returns (status code, body).
fn get(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.rsplit_once('\n') {
        Some((body, code)) if code != "000" => (code.parse().unwrap_or(0), body.to_string()),
        _ => (0, String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The example's counters.
fn stats(m2: &Mongrel2) -> serde_json::Value {
    let (code, body) = get(&[&m2.url("/stats")]);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn an_unmodified_axum_router_answers_through_mongrel2() {
    let m2 = mongrel2(&[]);
    let app = axum(&m2, &[]);
    assert_eq!(
        get(&[&m2.url("/hello")]),
        (200, "Hello, world!".into()),
        "{}",
        app.log()
    );

    // Path parameters and JSON both ways.
    let (code, body) = get(&[&m2.url("/items/7")]);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["id"].as_u64(), v["name"].as_str()),
        (Some(7), Some("item 7"))
    );
    let (code, body) = get(&[
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"pen"}"#,
        &m2.url("/items"),
    ]);
    assert_eq!((code, body.as_str()), (201, r#"{"id":1,"name":"pen"}"#));
    // axum's own rejection of a bad JSON body comes back as axum makes it.
    let (code, _) = get(&[
        "-H",
        "content-type: application/json",
        "-d",
        "{",
        &m2.url("/items"),
    ]);
    assert_eq!(code, 400);
    assert_eq!(get(&[&m2.url("/nowhere")]).0, 404);

    // What Mongrel2 knows of the client: axum's ConnectInfo and the crate's ClientInfo.
    let (code, body) = get(&[&m2.url("/whoami")]);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["addr"], "127.0.0.1:0");
    assert_eq!(v["pattern"], "/");
    assert!(v["conn_id"].as_u64().is_some(), "{body}");

    // A streamed body with no length goes out chunked; tower-http's gzip layer compresses it.
    let (raw, _) = raw_http(
        m2.addr(),
        b"GET /stream?bytes=300000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        T,
    );
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let plain = curl(&["-o", "-", &m2.url("/stream?bytes=300000")]).stdout;
    assert_eq!(plain.len(), 300_000);
    assert!(plain.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    let gz = curl(&[
        "-o",
        "-",
        "-D",
        "-",
        "-H",
        "accept-encoding: gzip",
        &m2.url("/stream?bytes=300000"),
    ]);
    let gz_text = String::from_utf8_lossy(&gz.stdout).to_ascii_lowercase();
    assert!(
        gz_text.contains("content-encoding: gzip"),
        "{}",
        &gz_text[..300.min(gz_text.len())]
    );
    assert!(
        gz.stdout.len() < 100_000,
        "compressed: {} bytes",
        gz.stdout.len()
    );
    let unzipped = curl(&["--compressed", "-o", "-", &m2.url("/stream?bytes=300000")]).stdout;
    assert_eq!(unzipped, plain);

    // HEAD: the head of the GET, no body; HTTP/1.0 keep-alive.
    let (raw, _) = raw_http(
        m2.addr(),
        b"HEAD /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        T,
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("content-length: 13"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n"),
        "no body after a HEAD answer: {text:?}"
    );
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let r = support::process::read_response(&mut s, false, T);
        assert_eq!(r.body, b"Hello, world!");
    }
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

#[test]
fn uploads_stream_through_the_body_whichever_way_mongrel2_delivers_them() {
    let data: Vec<u8> = support::process::pattern(10 * 1024 * 1024, 3);
    for stream in [false, true] {
        let m2 = mongrel2(if stream { &[("upload.stream", 1)] } else { &[] });
        let app = axum(&m2, &[]);
        let file = m2.chroot().join("body.bin");
        std::fs::write(&file, &data).unwrap();
        let at = format!("@{}", file.display());
        for (what, body) in [("inline", &data[..1000]), ("10 MB", &data[..])] {
            std::fs::write(&file, body).unwrap();
            let (code, text) = get(&["--data-binary", &at, &m2.url("/upload")]);
            assert_eq!(code, 200, "{what}, stream={stream}: {text}\n{}", app.log());
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["bytes"].as_u64(),
                Some(body.len() as u64),
                "{what}, stream={stream}"
            );
            assert_eq!(
                v["crc32"].as_u64(),
                Some(crc32(body).into()),
                "{what}, stream={stream}"
            );
        }
        // The async upload's temp file is gone once the body is dropped.
        let left: Vec<_> = std::fs::read_dir(m2.host_path("/tmp"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            wait_until(T, || std::fs::read_dir(m2.host_path("/tmp"))
                .map(|d| d
                    .flatten()
                    .all(|e| !e.file_name().to_string_lossy().starts_with("upload.")))
                .unwrap_or(true)),
            "temp files left: {left:?}"
        );
    }
}

#[test]
fn forged_upload_headers_are_refused() {
    let m2 = mongrel2(&[]);
    let app = axum(&m2, &[]);
    let victim = m2.host_path("/tmp/upload.victim");
    std::fs::write(&victim, b"do not read or delete me").unwrap();
    for headers in [
        vec!["-H", "X-Mongrel2-Upload-Start: /etc/passwd"],
        vec![
            "-H",
            "X-Mongrel2-Upload-Start: /tmp/upload.victim",
            "-H",
            "X-Mongrel2-Upload-Done: /tmp/upload.victim",
        ],
        vec!["-H", "X-Mongrel2-Upload-Done: /tmp/upload.victim"],
    ] {
        let mut args = headers.clone();
        let url = m2.url("/upload");
        args.extend(["--data-binary", "hello", &url]);
        let (code, text) = get(&args);
        assert_eq!(code, 400, "{headers:?}: {text}\n{}", app.log());
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not read or delete me");
}

#[test]
fn a_client_that_leaves_cancels_its_request() {
    let m2 = mongrel2(&[]);
    let app = axum(&m2, &[]);
    assert_eq!(get(&[&m2.url("/hello")]).0, 200);
    // A response that would stream for minutes: the client reads its start and leaves.
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"GET /stream?bytes=100000000&chunk=1000&delay_ms=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(s.read(&mut buf).unwrap() > 0);
    drop(s);
    assert!(
        wait_until(T, || stats(&m2)["streams_dropped"] == 1),
        "the stream was not dropped: {}\n{}",
        stats(&m2),
        app.log()
    );
    // Work before the response: the handler's ClientGone fires.
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    s.write_all(b"GET /wait?ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        wait_until(T, || stats(&m2)["waiting"] == 1),
        "{}",
        app.log()
    );
    drop(s);
    assert!(
        wait_until(T, || stats(&m2)["waits_cancelled"] == 1
            && stats(&m2)["waiting"] == 0),
        "{}\n{}",
        stats(&m2),
        app.log()
    );
}

#[test]
fn the_concurrency_limit_holds_requests_back() {
    let m2 = mongrel2(&[]);
    let _app = axum(&m2, &["--concurrency", "2"]);
    assert_eq!(get(&[&m2.url("/hello")]).0, 200);
    let url = m2.url("/wait?ms=300");
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || get(&[&url]))
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), (200, "waited 300 ms\n".into()));
    }
    // /stats is itself a request: the peak counts only the waits.
    assert_eq!(stats(&m2)["waiting_peak"], 2);
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let m2 = mongrel2(&[]);
    let mut app = axum(&m2, &["--shutdown-timeout", "10"]);
    assert_eq!(get(&[&m2.url("/hello")]).0, 200);
    let url = m2.url("/wait?ms=1500");
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || get(&[&url]))
        })
        .collect();
    assert!(
        wait_until(T, || stats(&m2)["waiting"] == 3),
        "{}",
        app.log()
    );
    app.signal("TERM");
    for c in clients {
        assert_eq!(
            c.join().unwrap(),
            (200, "waited 1500 ms\n".into()),
            "{}",
            app.log()
        );
    }
    let status = app.wait_timeout(T).expect("exits after the drain");
    assert!(status.success(), "{status}\n{}", app.log());
    assert!(app.log().contains("server stopped"), "{}", app.log());
}

#[test]
fn websocket_echo_through_the_crates_upgrade() {
    let m2 = mongrel2(&[]);
    let app = axum(&m2, &[]);
    let mut ws = Ws::connect(m2.addr(), "/ws");
    for (op, payload) in [
        (Opcode::Text, &b"hello"[..]),
        (Opcode::Ping, b"p"),
        (Opcode::Close, b""),
    ] {
        ws.send(op, payload);
        let frame = ws.recv();
        let want = if op == Opcode::Ping { Opcode::Pong } else { op };
        assert_eq!(
            (frame.opcode, &frame.payload[..]),
            (want, payload),
            "{}",
            app.log()
        );
    }
    assert!(ws.closed(), "closed after the close frame");
}

#[test]
fn behind_a_device_a_busy_worker_gets_no_new_request() {
    let m2 = mongrel2(&[]);
    let endpoint = format!("tcp://127.0.0.1:{}", support::mongrel2::free_port());
    let _device = Proc::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_m2wsgi-device")),
        &[m2.send_spec("app"), &endpoint],
        &[],
    );
    // Two workers that take one request at a time: the device learns from each how many more
    // it can take (the concurrency limit less what it is answering).
    let worker = || axum(&m2, &["--device", &endpoint, "--concurrency", "1"]);
    let (a, b) = (worker(), worker());
    let pid = |m2: &Mongrel2| -> u32 {
        let (code, body) = get(&[&m2.url("/whoami")]);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["pid"].as_u64().unwrap() as u32
    };
    let mut pids = std::collections::HashSet::new();
    assert!(wait_until(T, || {
        pids.insert(pid(&m2));
        pids.len() == 2
    }));
    // One worker is busy with a long request; every other request goes to the other one.
    let slow_url = m2.url("/wait?ms=3000");
    let slow = std::thread::spawn(move || get(&[&slow_url]));
    let mut busy = None;
    assert!(wait_until(T, || {
        busy = [&a, &b]
            .into_iter()
            .find(|w| w.log().contains("waiting 3000 ms"));
        busy.is_some()
    }));
    let busy = busy.unwrap().pid();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        assert_ne!(pid(&m2), busy, "a request went to the busy worker");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    assert_eq!(slow.join().unwrap(), (200, "waited 3000 ms\n".into()));
}

#[test]
fn a_gibibyte_each_way_in_bounded_memory() {
    const N: u64 = 1 << 30;
    let m2 = mongrel2(&[("download.flow_control", 1), ("upload.stream", 1)]);
    let app = axum(&m2, &["--flow-control"]);
    // Download: made as it is sent, 64 KiB at a time, under Mongrel2's credit window.
    let url = m2.url(&format!("/stream?bytes={N}"));
    let out = curl(&[
        "--max-time",
        "300",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &url,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("200 {N}"),
        "{}",
        app.log()
    );
    // Upload: streamed to the handler as Mongrel2 reads it, credit granted as it is read.
    let file = m2.chroot().join("big.bin");
    std::fs::File::create(&file).unwrap().set_len(N).unwrap(); // sparse: zeros, no disk
    let path = file.display().to_string();
    // `-T` streams the file (`--data-binary @` would load it whole into curl).
    let (code, text) = get(&[
        "--max-time",
        "300",
        "-X",
        "POST",
        "-T",
        &path,
        &m2.url("/upload"),
    ]);
    assert_eq!(code, 200, "{text}\n{}", app.log());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["bytes"].as_u64(), Some(N));
    let mut zeros = crc32fast::Hasher::new();
    let block = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        zeros.update(&block);
    }
    assert_eq!(v["crc32"].as_u64(), Some(zeros.finalize().into()));
    let peak = app.vm_hwm_kib();
    eprintln!("peak RSS of the handler after 1 GiB each way: {peak} KiB");
    assert!(peak > 0 && peak < 64 * 1024, "peak RSS {peak} KiB");
}
