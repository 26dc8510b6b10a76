//! Child processes for the integration tests (examples, the device), each stopped on drop, and
//! small loopback clients (raw HTTP, WebSocket). Only `std` and the crate's codec are used.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The directory holding this test binary's sibling build outputs (`target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The path of the built example `name`. `cargo test` builds every example before running the
/// tests; a filtered run (`cargo test --test e2e_http`) does not, so a missing binary is a
/// failure that says what to run, and one older than this test binary gets a warning.
pub fn example(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(name);
    let built = fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "example {name} is not built ({}): run `cargo build --examples` (plain `cargo \
                 test` does it) before a filtered test run",
                path.display()
            )
        });
    let me = std::env::current_exe()
        .and_then(fs::metadata)
        .and_then(|m| m.modified());
    if me.is_ok_and(|t| t > built) {
        eprintln!(
            "warning: example {name} is older than this test binary; `cargo build --examples` \
             if the library changed"
        );
    }
    path
}

/// A child process whose stdout and stderr go to a log file; stopped (SIGTERM, then SIGKILL) on
/// drop, and its log printed if the test is failing.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args` (and `M2WSGI_LOG=info` unless `env` overrides it).
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = std::env::temp_dir().join(format!(
            "m2wsgi-proc-{}-{}-{name}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let out = fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("M2WSGI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Proc {
            name,
            child: Some(child),
            log,
        }
    }

    /// Starts the example `name`.
    pub fn example(name: &str, args: &[&str]) -> Proc {
        Proc::spawn(&example(name), args, &[])
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits up to `timeout` for `needle` in its output.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, up to 5 s, then SIGKILL.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if !self.is_running() {
            return self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
        }
        self.signal("TERM");
        if let Some(st) = self.wait_timeout(Duration::from_secs(5)) {
            return Some(st);
        }
        let c = self.child.as_mut()?;
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- {} output (tail) ---\n{}",
                self.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// Sends `request` on a new loopback connection and reads until the server closes or `timeout`
/// passes. Returns what was read and whether the server closed the connection.
pub fn raw_http(addr: SocketAddr, request: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.write_all(request).expect("write request");
    read_until_close(&mut s, timeout)
}

/// Reads until EOF (returns true) or until `timeout` passes (returns false).
pub fn read_until_close(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("set_read_timeout");
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
    }
}

/// One HTTP/1.x response read from a keep-alive connection: head text and body.
#[derive(Debug)]
pub struct Response {
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one `Content-Length` response (or one with no body, for HEAD) from `s`, leaving the
/// connection open. `head_only` is for answers to HEAD.
pub fn read_response(s: &mut TcpStream, head_only: bool, timeout: Duration) -> Response {
    s.set_read_timeout(Some(timeout)).expect("set_read_timeout");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!(
                "reading a response head: {other:?} after {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut r = Response {
        head,
        body: Vec::new(),
    };
    if !head_only {
        let len: usize = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("a Content-Length");
        r.body.resize(len, 0);
        s.read_exact(&mut r.body).expect("read body");
    }
    r
}

/// Decodes a chunked body; panics on bad framing.
pub fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end]).expect("ascii size"),
            16,
        )
        .expect("hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            assert!(data.starts_with(b"\r\n"), "last chunk ends with CRLF");
            return out;
        }
        out.extend_from_slice(&data[..size]);
        assert_eq!(&data[size..size + 2], b"\r\n", "chunk ends with CRLF");
        data = &data[size + 2..];
    }
}

/// CRC-32 (IEEE), the same as the upload example's.
pub fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut v = !0u32;
    for &b in data {
        v = table[((v ^ u32::from(b)) & 0xff) as usize] ^ (v >> 8);
    }
    !v
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The value at percentile `p` (0..=100) of `samples`, sorted in place.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty());
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}
