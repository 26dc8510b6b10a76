//! The WSGI tests' helpers (feature `wsgi`): the embedded interpreter (once per test process),
//! a log capture, the bridge serving an app from tests/apps through the fake Mongrel2 of
//! [`testing`](super::testing), and the `m2wsgi` command as a [`Proc`].
//!
//! Nothing here skips: a missing venv or Python is a panic that says how to fix it.
#![allow(dead_code, unreachable_pub)]

use super::process::Proc;
use super::testing::{ClientOutput, FakeMongrel2, HttpResponse, RequestBuilder};
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

/// The test venv: `.venv` in the repository, or `$M2WSGI_TEST_VENV` (the venv a wheel was
/// installed into, for the suites run against the Python package: `scripts/wheel-test.sh`).
pub fn venv_dir() -> PathBuf {
    std::env::var_os("M2WSGI_TEST_VENV").map_or_else(|| repo().join(".venv"), PathBuf::from)
}

/// The test venv's interpreter; panics with the fix when it is missing.
pub fn venv_python() -> PathBuf {
    let py = venv_dir().join("bin/python");
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
// Requests

/// The `Host` the bridge tests' requests carry by default.
pub const HOST: &str = "localhost:6767";

/// A `GET` as the bridge tests send it (`Host: localhost:6767`, pattern `/`).
pub fn get(path_and_query: &str) -> RequestBuilder {
    RequestBuilder::get(path_and_query).header("host", HOST)
}

/// A `POST` with an inline body, as the bridge tests send it.
pub fn post(path_and_query: &str, body: &[u8]) -> RequestBuilder {
    RequestBuilder::post(path_and_query, body).header("host", HOST)
}

// ------------------------------------------------------------------------------------------------
// The bridge on a fake Mongrel2

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A bridge serving an app from tests/apps through a [`FakeMongrel2`], stopped on drop.
pub struct Running {
    pub m2: FakeMongrel2,
    /// Every reply frame as received, in order (filled by [`pump`](Self::pump)).
    pub frames: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<m2wsgi::Result<()>>>,
}

impl Running {
    pub fn start(app_name: &str, configure: impl FnOnce(WsgiServer) -> WsgiServer) -> Self {
        let app = app(app_name);
        let m2 = FakeMongrel2::new();
        let stop = Arc::new(AtomicBool::new(false));
        let conn = m2wsgi::Connection::builder(m2.send_spec())
            .recv_spec(m2.recv_spec())
            .send_ident(m2.sender())
            .connect()
            .expect("connect");
        let server = configure(WsgiServer::new(app).stop_flag(Arc::clone(&stop)))
            .shutdown_timeout(Duration::from_secs(5));
        let thread = std::thread::spawn(move || server.serve(conn));
        Running {
            m2,
            frames: Vec::new(),
            stop,
            thread: Some(thread),
        }
    }

    /// Sends a request on a fresh connection id; returns the id.
    pub fn send(&self, req: &RequestBuilder) -> u64 {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.send_on(id, req);
        id
    }

    /// Sends a request on connection `id`.
    pub fn send_on(&self, id: u64, req: &RequestBuilder) {
        self.m2.send(req.clone().conn_id(id).build());
    }

    /// Mongrel2's disconnect notice for `id`.
    pub fn disconnect(&self, id: u64) {
        self.m2.disconnect(id);
    }

    /// Collects reply frames for up to `wait`.
    pub fn pump(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(r) = self.m2.recv_reply(left) else {
                return;
            };
            let ids: Vec<String> = r.conn_ids.iter().map(u64::to_string).collect();
            let ids = format!("{}{}", if r.extended { "X " } else { "" }, ids.join(" "));
            let mut frame = r.sender.to_vec();
            frame.push(b' ');
            m2wsgi::tnetstring::write_netstring(&mut frame, ids.as_bytes());
            frame.push(b' ');
            frame.extend_from_slice(&r.body);
            self.frames.push(frame);
        }
    }

    /// What connection `id` received so far.
    pub fn conn(&self, id: u64) -> ClientOutput {
        self.m2.client(id)
    }

    /// Waits for a complete response on `id`.
    pub fn response(&mut self, id: u64) -> HttpResponse {
        self.response_with(id, false, TIMEOUT)
    }

    pub fn head_response(&mut self, id: u64) -> HttpResponse {
        self.response_with(id, true, TIMEOUT)
    }

    pub fn response_with(&mut self, id: u64, head_only: bool, timeout: Duration) -> HttpResponse {
        let r = self.m2.read_response_with(id, head_only, timeout);
        self.pump(Duration::ZERO);
        r.unwrap_or_else(|| {
            panic!(
                "no complete response on connection {id} after {timeout:?}; got {:?}",
                String::from_utf8_lossy(&self.conn(id).data)
            )
        })
    }

    /// Waits until `id` was closed or cancelled.
    pub fn wait_end(&mut self, id: u64, timeout: Duration) -> bool {
        let ended = self
            .m2
            .wait_client(id, timeout, ClientOutput::ended)
            .is_some();
        self.pump(Duration::ZERO);
        ended
    }

    /// Sends `req` and waits for its response.
    pub fn roundtrip(&mut self, req: &RequestBuilder) -> (u64, HttpResponse) {
        let id = self.send(req);
        let head_only = req.value_of("METHOD") == Some(&b"HEAD"[..]);
        let r = self.response_with(id, head_only, TIMEOUT);
        (id, r)
    }

    /// Stops the server and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread").expect("serve");
        }
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

/// The `m2wsgi` command the suites run: the Rust binary, or `$M2WSGI_TEST_COMMAND` (the
/// console script of the Python package, installed in `$M2WSGI_TEST_VENV`).
pub fn command() -> PathBuf {
    std::env::var_os("M2WSGI_TEST_COMMAND").map_or_else(|| PathBuf::from(BIN), PathBuf::from)
}

/// Starts `m2wsgi args...` from tests/apps with VIRTUAL_ENV set to the test venv, plus `env`
/// (`None` removes a variable). `clear_env` starts from an empty environment.
pub fn m2wsgi(args: &[&str], env: &[(&str, Option<&str>)], clear_env: bool) -> Proc {
    let venv = venv_python();
    let mut cmd = std::process::Command::new(command());
    cmd.args(args).current_dir(repo().join("tests/apps"));
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
    Proc::from_command(cmd)
}
