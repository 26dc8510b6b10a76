//! Child processes for the integration tests (examples, the device, the `m2wsgi` command), each
//! stopped on drop, and small loopback clients (raw HTTP, WebSocket).
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(feature = "runtime")]
use super::testing::HttpResponse;

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

/// A child process whose stdout and stderr go to files in its own temporary directory; stopped
/// (SIGTERM, then SIGKILL after 5 s) on drop, and its output printed if the test is failing.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `program` with `args` (and `M2WSGI_LOG=info`, or what `M2WSGI_TEST_LOG` says,
    /// unless `env` overrides it).
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(program);
        let level = std::env::var("M2WSGI_TEST_LOG").unwrap_or_else(|_| "info".into());
        cmd.args(args).env("M2WSGI_LOG", level);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::from_command(cmd)
    }

    /// Starts `cmd` (stdin from /dev/null, stdout and stderr to files).
    pub fn from_command(mut cmd: Command) -> Proc {
        let program = PathBuf::from(cmd.get_program());
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = tempfile::Builder::new()
            .prefix(&format!("m2wsgi-proc-{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        let out = fs::File::create(dir.path().join("stdout")).expect("create stdout file");
        let err = fs::File::create(dir.path().join("stderr")).expect("create stderr file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Proc {
            name,
            child: Some(child),
            dir,
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

    /// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`); panics if `kill` fails while it runs.
    pub fn signal(&mut self, sig: &str) {
        if !self.is_running() {
            return;
        }
        if let Some(c) = &self.child {
            let st = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status()
                .expect("run kill");
            assert!(st.success(), "kill -{sig} {} failed", c.id());
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

    /// Same as [`wait_timeout`](Self::wait_timeout).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.wait_timeout(timeout)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn read(&self, file: &str) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.path().join(file)).unwrap_or_default())
            .into_owned()
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.read("stdout")
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.read("stderr")
    }

    /// Everything it printed so far: stderr (where the logs go), then stdout.
    pub fn log(&self) -> String {
        self.stderr() + &self.stdout()
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

    /// Waits until its log says it is serving (`" serving "`); panics with its output when it
    /// exits first or does not get there within 10 s.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.stderr().contains(" serving ") {
                return;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited ({st}) before serving:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not serving after 10 s:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 10 s) for a command that exits by itself; returns its status, stdout and
    /// stderr.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let st = self
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} did not exit", self.name));
        (st, self.stdout(), self.stderr())
    }

    /// Peak resident set size (VmHWM) in KiB (0 when unknown).
    pub fn vm_hwm_kib(&self) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM (so that atexit handlers run), up to 5 s, then SIGKILL.
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
            // All of it when the level was raised for a look at a failure.
            let tail = if std::env::var_os("M2WSGI_TEST_LOG").is_some() {
                lines.len()
            } else {
                40
            };
            eprintln!(
                "--- {} output (tail) ---\n{}",
                self.name,
                lines[lines.len().saturating_sub(tail)..].join("\n")
            );
        }
        // self.dir is removed when it is dropped.
    }
}

/// Polls `cond` every 10 ms until it holds (true) or `timeout` passes (false): the way to wait
/// for something to happen instead of sleeping a fixed time.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
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

/// Reads one response from `s` (parsed by [`HttpResponse::parse`]) a byte at a time, so that
/// nothing after it is consumed, leaving the connection open. `head_only` is for answers to
/// HEAD. Panics when none is complete within `timeout`.
#[cfg(feature = "runtime")]
pub fn read_response(s: &mut TcpStream, head_only: bool, timeout: Duration) -> HttpResponse {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1];
    loop {
        let closed = match s.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) => panic!(
                "reading a response: {e} after {:?}",
                String::from_utf8_lossy(&buf)
            ),
        };
        match HttpResponse::parse(&buf, head_only, closed) {
            Ok(Some(r)) => return r,
            Ok(None) if closed => panic!(
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(None) => {}
            Err(e) => panic!("{e}"),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no complete response after {timeout:?}: {:?}",
            String::from_utf8_lossy(&buf)
        );
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("set_read_timeout");
    }
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
    crc32fast::hash(data)
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
