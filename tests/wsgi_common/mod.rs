//! Shared helpers for the WSGI tests: the embedded interpreter (once per test process), a log
//! capture, a fake Mongrel2 (PUSH + SUB over loopback TCP, port 0) that speaks the wire format
//! byte for byte, and an HTTP response parser.
//!
//! Nothing here skips: a missing venv or Python is a panic that says how to fix it.
#![allow(dead_code, unreachable_pub)]

use m2wsgi::wsgi::{self, WsgiServer};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test venv's interpreter; panics with the fix when it is missing.
pub fn venv_python() -> PathBuf {
    let py = repo().join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/install-deps.sh (it creates the venv with Flask, Django, \
         Werkzeug)",
        py.display()
    );
    py
}

// ------------------------------------------------------------------------------------------------
// Log capture

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info || m.target().starts_with("m2wsgi::wsgi")
    }
    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!("{} {}: {}", r.level(), r.target(), r.args());
        if std::env::var_os("M2WSGI_TEST_LOG").is_some() {
            eprintln!("{line}");
        }
        LOGS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

/// Waits up to `timeout` for a captured log line containing every one of `needles`.
pub fn wait_log(needles: &[&str], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = LOGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Some(l.clone());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ------------------------------------------------------------------------------------------------
// Python

/// Initialises Python once (as the venv's interpreter) and loads `tests/apps/probe.py`.
pub fn python() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Debug);
        wsgi::initialize(Some(&venv_python())).expect("initialise Python");
    });
}

/// Loads an application from tests/apps.
pub fn app(name: &str) -> Py<PyAny> {
    python();
    wsgi::load_app(name, &[repo().join("tests/apps")])
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

// ------------------------------------------------------------------------------------------------
// tnetstrings

fn tnet(out: &mut Vec<u8>, payload: &[u8], tag: u8) {
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(tag);
}

/// A request to send through the fake Mongrel2.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Raw path (percent-encoding kept), without the query.
    pub path: Vec<u8>,
    pub query: Option<Vec<u8>>,
    pub version: String,
    pub pattern: String,
    pub scheme: String,
    /// Lower-case names; several values make a tnetstring list.
    pub headers: Vec<(String, Vec<Vec<u8>>)>,
    /// Extra Mongrel2 keys (upper case) or odd headers, as they are.
    pub raw: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn get(path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q.as_bytes().to_vec())),
            None => (path_and_query, None),
        };
        Req {
            method: "GET".into(),
            path: path.as_bytes().to_vec(),
            query,
            version: "HTTP/1.1".into(),
            pattern: "/".into(),
            scheme: "http".into(),
            headers: vec![
                ("host".into(), vec![b"localhost:6767".to_vec()]),
                ("x-forwarded-for".into(), vec![b"127.0.0.1".to_vec()]),
            ],
            raw: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post(path_and_query: &str, body: &[u8]) -> Self {
        let mut r = Self::get(path_and_query);
        r.method = "POST".into();
        r.body = body.to_vec();
        r.headers.push((
            "content-length".into(),
            vec![body.len().to_string().into_bytes()],
        ));
        r
    }

    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }

    pub fn header(mut self, name: &str, values: &[&[u8]]) -> Self {
        self.headers.retain(|(n, _)| n != name);
        self.headers
            .push((name.into(), values.iter().map(|v| v.to_vec()).collect()));
        self
    }

    pub fn version(mut self, v: &str) -> Self {
        self.version = v.into();
        self
    }

    pub fn pattern(mut self, p: &str) -> Self {
        self.pattern = p.into();
        self
    }

    pub fn scheme(mut self, s: &str) -> Self {
        self.scheme = s.into();
        self
    }

    pub fn raw(mut self, k: &str, v: &[u8]) -> Self {
        self.raw.push((k.into(), v.to_vec()));
        self
    }

    /// The Mongrel2 message (tnetstring headers).
    pub fn encode(&self, sender: &str, id: u64) -> Vec<u8> {
        let mut uri = self.path.clone();
        if let Some(q) = &self.query {
            uri.push(b'?');
            uri.extend_from_slice(q);
        }
        let mut h = Vec::new();
        let mut kv = |k: &str, v: &[u8]| {
            tnet(&mut h, k.as_bytes(), b',');
            tnet(&mut h, v, b',');
        };
        kv("PATH", &self.path);
        kv("METHOD", self.method.as_bytes());
        kv("VERSION", self.version.as_bytes());
        kv("URI", &uri);
        if let Some(q) = &self.query {
            kv("QUERY", q);
        }
        kv("PATTERN", self.pattern.as_bytes());
        kv("URL_SCHEME", self.scheme.as_bytes());
        kv("REMOTE_ADDR", b"127.0.0.1");
        for (k, v) in &self.raw {
            kv(k, v);
        }
        for (name, values) in &self.headers {
            tnet(&mut h, name.as_bytes(), b',');
            if values.len() == 1 {
                tnet(&mut h, &values[0], b',');
            } else {
                let mut list = Vec::new();
                for v in values {
                    tnet(&mut list, v, b',');
                }
                tnet(&mut h, &list, b']');
            }
        }
        let mut out = format!("{sender} {id} ").into_bytes();
        out.extend_from_slice(&self.path);
        out.push(b' ');
        tnet(&mut out, &h, b'}');
        tnet(&mut out, &self.body, b',');
        out
    }
}

// ------------------------------------------------------------------------------------------------
// The fake Mongrel2

#[derive(Debug, Default, Clone)]
pub struct ConnOut {
    pub data: Vec<u8>,
    pub messages: usize,
    pub closed: bool,
    pub ctl: Vec<Vec<u8>>,
}

impl ConnOut {
    pub fn cancelled(&self) -> bool {
        self.ctl
            .iter()
            .any(|c| c.windows(6).any(|w| w == b"cancel"))
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub chunked: bool,
    /// The head as sent (status line and headers, up to the blank line).
    pub head: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses one complete response from `data`; `None` while incomplete. `head_only` for HEAD
/// requests (no body whatever the headers say); `closed` lets a close-delimited body end.
pub fn parse_response(data: &[u8], head_only: bool, closed: bool) -> Option<Resp> {
    let mut hbuf = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hbuf);
    let n = match r.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(e) => panic!(
            "bad HTTP response ({e}): {:?}",
            String::from_utf8_lossy(data)
        ),
    };
    let status = r.code.unwrap_or(0);
    let reason = r.reason.unwrap_or("").to_string();
    let headers: Vec<(String, Vec<u8>)> = r
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let rest = &data[n..];
    let head = data[..n].to_vec();
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    let mk = |body: Vec<u8>, chunked| Resp {
        status,
        reason: reason.clone(),
        headers: headers.clone(),
        body,
        chunked,
        head: head.clone(),
    };
    if no_body {
        return Some(mk(Vec::new(), false));
    }
    if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut p = rest;
        loop {
            let line_end = p.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&p[..line_end])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .unwrap_or_else(|_| panic!("bad chunk size in {:?}", String::from_utf8_lossy(p)));
            p = &p[line_end + 2..];
            if size == 0 {
                if p.len() < 2 {
                    return None;
                }
                return Some(mk(body, true));
            }
            if p.len() < size + 2 {
                return None;
            }
            body.extend_from_slice(&p[..size]);
            p = &p[size + 2..];
        }
    }
    if let Some(len) = get("content-length") {
        let len: usize = len.trim().parse().expect("numeric Content-Length");
        if rest.len() >= len {
            return Some(mk(rest[..len].to_vec(), false));
        }
        // A short body followed by a close is complete as far as the server goes.
        return closed.then(|| mk(rest.to_vec(), false));
    }
    closed.then(|| mk(rest.to_vec(), false))
}

pub struct FakeM2 {
    _ctx: zmq::Context,
    push: zmq::Socket,
    sub: zmq::Socket,
    pub send_spec: String,
    pub recv_spec: String,
    pub sender: String,
    pub out: HashMap<u64, ConnOut>,
    /// Every reply frame as received, in order.
    pub frames: Vec<Vec<u8>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Default for FakeM2 {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeM2 {
    pub fn new() -> Self {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_linger(0).unwrap();
        push.set_sndtimeo(10_000).unwrap();
        push.bind("tcp://127.0.0.1:*").unwrap();
        // Mongrel2 binds its SUB socket and the handler connects. Within one process, libzmq
        // 4.3.4 here never completes a PUB-connects-to-bound-SUB handshake (across processes
        // it does), so the fake connects its SUB to a handler that binds (`#bind`).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sub = ctx.socket(zmq::SUB).unwrap();
        sub.set_linger(0).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
        let send_spec = push.get_last_endpoint().unwrap().unwrap();
        let recv_spec = format!("tcp://127.0.0.1:{port}#bind");
        FakeM2 {
            _ctx: ctx,
            push,
            sub,
            send_spec,
            recv_spec,
            sender: "34f9ceee-cd52-4b7f-b197-88bf2f0ec378".into(),
            out: HashMap::new(),
            frames: Vec::new(),
        }
    }

    /// Sends a request on a fresh connection id; returns the id.
    pub fn send(&self, req: &Req) -> u64 {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.send_on(id, req);
        id
    }

    pub fn send_on(&self, id: u64, req: &Req) {
        self.push
            .send(req.encode(&self.sender, id), 0)
            .expect("push");
    }

    pub fn send_raw(&self, frame: Vec<u8>) {
        self.push.send(frame, 0).expect("push");
    }

    /// Mongrel2's disconnect notice for `id`.
    pub fn disconnect(&self, id: u64) {
        self.send_raw(
            format!(
                "{} {id} @* 16:6:METHOD,4:JSON,}}21:{{\"type\":\"disconnect\"}},",
                self.sender
            )
            .into_bytes(),
        );
    }

    /// Receives reply frames for up to `wait`.
    pub fn pump(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let ms = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as i64;
            if self.sub.poll(zmq::POLLIN, ms).unwrap() == 0 {
                return;
            }
            while let Ok(frame) = self.sub.recv_bytes(zmq::DONTWAIT) {
                self.take(frame);
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }

    fn take(&mut self, frame: Vec<u8>) {
        // SENDER SP LEN:IDS, SP BODY
        let sp = frame.iter().position(|&b| b == b' ').expect("sender");
        let rest = &frame[sp + 1..];
        let colon = rest.iter().position(|&b| b == b':').expect("ids length");
        let len: usize = std::str::from_utf8(&rest[..colon])
            .unwrap()
            .parse()
            .unwrap();
        let ids = &rest[colon + 1..colon + 1 + len];
        assert_eq!(rest[colon + 1 + len], b',', "ids netstring");
        assert_eq!(rest[colon + 2 + len], b' ', "space after ids");
        let body = &rest[colon + 3 + len..];
        let (ctl, ids) = match ids.strip_prefix(b"X ") {
            Some(i) => (true, i),
            None => (false, ids),
        };
        for id in ids.split(|&b| b == b' ').filter(|s| !s.is_empty()) {
            let id: u64 = std::str::from_utf8(id).unwrap().parse().unwrap();
            let c = self.out.entry(id).or_default();
            if ctl {
                c.ctl.push(body.to_vec());
            } else if body.is_empty() {
                c.closed = true;
            } else {
                c.data.extend_from_slice(body);
                c.messages += 1;
            }
        }
        self.frames.push(frame);
    }

    pub fn conn(&self, id: u64) -> ConnOut {
        self.out.get(&id).cloned().unwrap_or_default()
    }

    /// Waits for a complete response on `id`.
    pub fn response(&mut self, id: u64) -> Resp {
        self.response_with(id, false, TIMEOUT)
    }

    pub fn head_response(&mut self, id: u64) -> Resp {
        self.response_with(id, true, TIMEOUT)
    }

    pub fn response_with(&mut self, id: u64, head_only: bool, timeout: Duration) -> Resp {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.out.get(&id) {
                if let Some(r) = parse_response(&c.data, head_only, c.closed || c.cancelled()) {
                    return r;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no complete response on connection {id} after {timeout:?}; got {:?}",
                    self.out
                        .get(&id)
                        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
                );
            }
            self.pump(Duration::from_millis(20));
        }
    }

    /// Waits until `id` was closed or cancelled.
    pub fn wait_end(&mut self, id: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.conn(id);
            if c.closed || c.cancelled() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.pump(Duration::from_millis(20));
        }
    }

    /// Sends `req` and waits for its response.
    pub fn roundtrip(&mut self, req: &Req) -> (u64, Resp) {
        let id = self.send(req);
        let r = self.response_with(id, req.method == "HEAD", TIMEOUT);
        (id, r)
    }
}

/// A bridge serving an app from tests/apps through a [`FakeM2`], stopped on drop.
pub struct Running {
    pub m2: FakeM2,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<m2wsgi::Result<()>>>,
}

impl Running {
    pub fn start(app_name: &str, configure: impl FnOnce(WsgiServer) -> WsgiServer) -> Self {
        let app = app(app_name);
        let m2 = FakeM2::new();
        let stop = Arc::new(AtomicBool::new(false));
        let conn = m2wsgi::Connection::builder(m2.send_spec.clone())
            .recv_spec(m2.recv_spec.clone())
            .send_ident(m2.sender.clone())
            .connect()
            .expect("connect");
        let server = configure(WsgiServer::new(app).stop_flag(Arc::clone(&stop)))
            .shutdown_timeout(Duration::from_secs(5));
        let thread = std::thread::spawn(move || server.serve(conn));
        Running {
            m2,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the server and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("serve");
        }
    }
}

impl std::ops::Deref for Running {
    type Target = FakeM2;
    fn deref(&self) -> &FakeM2 {
        &self.m2
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut FakeM2 {
        &mut self.m2
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lines `KEY=value` of the probe's `/environ` case.
pub fn environ_lines(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

// ------------------------------------------------------------------------------------------------
// The m2wsgi command as a child process

pub const BIN: &str = env!("CARGO_BIN_EXE_m2wsgi");

/// A running `m2wsgi`, killed on drop. stdout and stderr go to files.
pub struct Proc {
    pub child: std::process::Child,
    pub dir: PathBuf,
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "m2wsgi-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Proc {
    /// `m2wsgi args...` from tests/apps with VIRTUAL_ENV set to the test venv, plus `env`
    /// (`None` removes a variable). `clear_env` starts from an empty environment.
    pub fn spawn(args: &[&str], env: &[(&str, Option<&str>)], clear_env: bool) -> Proc {
        let venv = venv_python();
        let dir = temp_dir("proc");
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args)
            .current_dir(repo().join("tests/apps"))
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
        if clear_env {
            cmd.env_clear();
        }
        cmd.env("VIRTUAL_ENV", venv.parent().unwrap().parent().unwrap())
            .env_remove("PYTHONUNBUFFERED")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME");
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        Proc { child, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("stderr")).unwrap_or_default())
            .into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("stdout")).unwrap_or_default())
            .into_owned()
    }

    /// Waits until the log says it is serving; panics with its stderr otherwise.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.stderr().contains(" serving ") {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("m2wsgi exited ({st}) before serving:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "m2wsgi not serving after {TIMEOUT:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs to completion (for commands that exit by themselves).
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let st = self.wait_exit(TIMEOUT).expect("m2wsgi did not exit");
        (st, self.stdout(), self.stderr())
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM first, so the application's atexit handlers run (they clean up).
            self.signal("TERM");
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- m2wsgi stderr ---\n{}", self.stderr());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
