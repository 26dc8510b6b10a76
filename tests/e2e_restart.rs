//! Mongrel2 restarted under a handler: nothing written for a connection of the old server may
//! reach a client of the new one (Mongrel2 numbers its client connections from 1 again after a
//! restart, so a stale id names somebody else).
#![cfg(feature = "runtime")]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::mongrel2::{free_port, Handler, Mongrel2};
use support::process::Proc;

const T: Duration = Duration::from_secs(10);

fn streaming(m2: &Mongrel2, extra: &[&str]) -> Proc {
    let mut args = vec![
        m2.send_spec("app"),
        m2.recv_spec("app"),
        "--send-ident",
        m2.send_ident("app"),
        "--workers",
        "4",
    ];
    args.extend_from_slice(extra);
    Proc::example("streaming", &args)
}

/// Opens a client that starts a long chunked stream and reads its first chunk.
fn start_stream(m2: &Mongrel2) -> TcpStream {
    let mut s = TcpStream::connect(m2.addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"GET /stream?chunks=100&size=32&delay_ms=700 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + T;
    while !got.windows(12).any(|w| w == b"chunk 000000") {
        assert!(Instant::now() < deadline, "the stream never started");
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed before it started");
        got.extend_from_slice(&buf[..n]);
    }
    s
}

/// One client of the new server: connects as soon as the server listens, asks for a 10-byte
/// body and keeps its connection open a while, so that any chunk of an old stream addressed to
/// its connection id would arrive behind its answer. Returns what it received.
fn new_client(addr: SocketAddr, go: Arc<AtomicBool>) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + T;
    while !go.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            return Err("never told to start".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("connect: {e}")),
        }
    };
    s.write_all(b"GET /stream?bytes=10 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    // Wait (up to the deadline) for the answer, then read until the connection has been quiet
    // for 1.5 s (or closes): whatever else arrives for this connection id.
    s.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = |got: &[u8]| {
        got.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|end| got.len() >= end + 4 + 10)
    };
    while Instant::now() < deadline {
        if answered(&got) {
            s.set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Ok(got)
}

/// After a restart with `sig`, the first clients of the new server get their own short answers
/// and nothing else, while the old streams' producers learn that their clients are gone.
fn restart_mid_stream(sig: &str, behind_device: bool) {
    let mut m2 = Mongrel2::builder()
        .handler("/stream", &Handler::tcp("app"))
        .start();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let (_device, handlers) = if behind_device {
        let device = Proc::spawn(
            Path::new(env!("CARGO_BIN_EXE_m2wsgi-device")),
            &[m2.send_spec("app"), &endpoint],
            &[],
        );
        let extra = ["--device", endpoint.as_str()];
        let workers = vec![streaming(&m2, &extra), streaming(&m2, &extra)];
        assert!(device.wait_for_log("taking requests from Mongrel2", T));
        (Some(device), workers)
    } else {
        (None, vec![streaming(&m2, &[])])
    };
    // Several streams in flight, on the first connection ids of the old server.
    let old: Vec<TcpStream> = (0..3).map(|_| start_stream(&m2)).collect();
    let go = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let (addr, go) = (m2.addr(), Arc::clone(&go));
            std::thread::spawn(move || new_client(addr, go))
        })
        .collect();
    let _ = m2.kill_with(sig);
    // The new server's first clients connect the moment it listens.
    go.store(true, Ordering::SeqCst);
    m2.start_again();
    for (i, c) in clients.into_iter().enumerate() {
        let got = c
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n"),
            "client {i}: {text:?}"
        );
        assert!(
            text.contains("\r\nContent-Length: 10\r\n"),
            "client {i}: {text:?}"
        );
        assert!(
            text.ends_with("\r\n\r\nabcdefghij"),
            "client {i} of the new server received bytes meant for a client of the old one: \
             {text:?}"
        );
        assert!(!text.contains("chunk"), "client {i}: {text:?}");
    }
    drop(old);
    // The producers of the old streams were told their clients are gone.
    let deadline = Instant::now() + T;
    let logs = || {
        handlers
            .iter()
            .map(Proc::log)
            .collect::<Vec<_>>()
            .join("\n")
    };
    while logs().matches("producer stopped: client gone").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "the old streams' producers never stopped:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_restart_mid_stream_leaks_nothing_to_new_clients() {
    restart_mid_stream("KILL", false);
}

#[test]
fn sigint_restart_mid_stream_leaks_nothing_to_new_clients() {
    restart_mid_stream("INT", false);
}

#[test]
fn sigkill_restart_behind_the_device_leaks_nothing_to_new_clients() {
    restart_mid_stream("KILL", true);
}
