//! `m2wsgi --workers N`: one supervisor process, N worker processes, and the ready-based
//! [`Device`] between them and Mongrel2, built in.
//!
//! The supervisor never starts Python. It binds a [`Device`] on a loopback port, runs it on a
//! thread, and starts N copies of the same command as workers behind it (each with its own
//! `--num-threads`), telling them apart by their device identity (`w<serial>`). A worker is
//! *serving* once the device has heard its `READY`. Every change of workers is a handoff that
//! loses nothing: the replacement is started first, and the old worker is sent SIGTERM only
//! once the replacement serves; the old one then leaves through the device's `BYE` handshake.
//!
//! - **Crashes**: a worker that exits without being asked is started again, at once the first
//!   time and with a back-off (100 ms doubling, up to 10 s) while workers keep dying within
//!   5 s of their start; five such deaths in a row stop the supervisor with an error (exit 1)
//!   instead of spinning. A worker that dies before it ever served, while the server starts,
//!   stops it at once (the application does not load). The device closes the client
//!   connections a dead worker held.
//! - **Recycling**: `--max-requests` (plus a random `--max-requests-jitter` per worker),
//!   `--max-rss` (sampled every second), `--lifetime` (plus `--lifetime-jitter`), and a worker
//!   with more than half its threads stuck past `--timeout` (it asks, through the run
//!   directory). Each is logged with its cause and counted.
//! - **Reload**: SIGHUP replaces every worker (fresh processes: new application code), and so
//!   does a change to a `.py` file under the working directory or a `--pythonpath` directory
//!   with `--reload` (for development).
//! - **Shutdown**: SIGINT/SIGTERM send SIGTERM to every worker, which drains (in-flight
//!   requests answered); the supervisor waits for them (up to `--shutdown-timeout` and 5 s
//!   more, then SIGKILL), stops the device and exits 0. A second signal exits at once; the
//!   workers notice their parent is gone and drain on their own.

use crate::spec::SocketSpec;
use crate::Device;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable that makes a process started by the supervisor a worker; its value
/// is the worker's device identity.
pub(super) const WORKER_ENV: &str = "M2WSGI_WORKER_ID";

/// Whether this process is a worker started by a supervisor.
pub(super) fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}
/// A worker that dies this soon after its start counts toward a crash loop.
const QUICK_DEATH: Duration = Duration::from_secs(5);
/// Quick deaths in a row that stop the supervisor.
const CRASH_LOOP: u32 = 5;
/// The longest back-off between restarts of dying workers.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a new worker may take to serve before it is given up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the supervisor looks at its workers.
const TICK: Duration = Duration::from_millis(50);

/// What `--workers` and the recycling options ask for.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Worker processes.
    pub(super) workers: usize,
    /// Recycle a worker after this many requests (0: never), plus up to `max_requests_jitter`.
    pub(super) max_requests: u64,
    pub(super) max_requests_jitter: u64,
    /// Recycle a worker above this resident set size, in KiB.
    pub(super) max_rss_kib: Option<u64>,
    /// Recycle a worker after this long, plus up to `lifetime_jitter`.
    pub(super) lifetime: Option<Duration>,
    pub(super) lifetime_jitter: Duration,
    /// The workers' `--shutdown-timeout`.
    pub(super) shutdown_timeout: Duration,
    /// `--metrics ADDR`: the supervisor serves every worker's metrics, merged, at ADDR.
    pub(super) metrics: Option<String>,
    /// `--access-log`: SIGUSR1 is passed on to the workers (which reopen their log files).
    pub(super) forward_usr1: bool,
}

/// The environment variable naming the supervisor's run directory, where a worker writes the
/// address of its private metrics endpoint (a file named after its id, with `--metrics`) and
/// asks to be recycled (`<id>.recycle`, with `--timeout`, when most of its threads are stuck).
pub(super) const RUN_DIR_ENV: &str = "M2WSGI_RUN_DIR";

/// The environment variable naming, for a worker, the device of each `--also` server (comma
/// separated, in the order of the options, each with the worker's identity).
pub(super) const ALSO_DEVICES_ENV: &str = "M2WSGI_ALSO_DEVICES";

/// How to start a worker: this program with these arguments (the supervisor's own command
/// line; the worker role comes from [`WORKER_ENV`] and `M2WSGI_DEVICE`).
#[derive(Debug, Clone)]
pub(super) struct WorkerCommand {
    pub(super) program: OsString,
    pub(super) args: Vec<OsString>,
    /// What `ps` shows as the workers' command (`m2wsgi: worker w3 APP`), before the id;
    /// `None` leaves `argv[0]` alone (a Python interpreter finds its virtualenv from it).
    pub(super) title: Option<String>,
    /// Run the workers as this user and group (`--user`, `--group`).
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
}

/// Why a worker was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    MaxRequests,
    MaxRss,
    Lifetime,
    Reload,
    Timeout,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::MaxRequests => "max-requests",
            Cause::MaxRss => "max-rss",
            Cause::Lifetime => "lifetime",
            Cause::Reload => "reload",
            Cause::Timeout => "timeout",
        }
    }
}

#[derive(Debug)]
struct Worker {
    serial: u64,
    child: Child,
    started: Instant,
    /// The device has heard it.
    serving: bool,
    /// Sent SIGTERM: it is leaving.
    stopping: bool,
    /// The serial of the worker started to replace this one, and why.
    replaced_by: Option<(u64, Cause)>,
    /// The worker this one replaces.
    replaces: Option<u64>,
    /// Recycle after this many requests.
    request_limit: Option<u64>,
    /// Recycle at this time.
    retire_at: Option<Instant>,
    last_rss_check: Instant,
}

impl Worker {
    fn id(&self) -> String {
        format!("w{}", self.serial)
    }
}

/// One device per Mongrel2 server, each on its own thread; every worker takes requests from
/// all of them.
struct Devices {
    /// Each device's worker endpoint and its live view of the workers.
    running: Vec<(String, crate::DeviceStatus)>,
    threads: Vec<std::thread::JoinHandle<crate::Result<()>>>,
    stop: Arc<AtomicBool>,
}

impl Devices {
    /// Starts a device for each `(send_spec, recv_spec)`.
    fn start(servers: &[(SocketSpec, SocketSpec)]) -> Result<Devices, String> {
        let mut devices = Devices {
            running: Vec::new(),
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        for (send, recv) in servers {
            let device = Device::bind_with_reply(
                &send.to_string(),
                &recv.to_string(),
                "tcp://127.0.0.1:*#bind",
            )
            .map_err(|e| format!("cannot start the device for {send}: {e}"))?;
            devices
                .running
                .push((device.endpoint().to_string(), device.status()));
            let flag = Arc::clone(&devices.stop);
            let thread = std::thread::Builder::new()
                .name("m2wsgi-device".into())
                .spawn(move || device.run(&flag))
                .map_err(|e| format!("cannot start the device thread: {e}"))?;
            devices.threads.push(thread);
        }
        Ok(devices)
    }

    /// Worker `id`'s endpoint on each device (`tcp://ID@host:port`).
    fn endpoints_for(&self, id: &str) -> Vec<String> {
        self.running
            .iter()
            .map(|(ep, _)| ep.replacen("tcp://", &format!("tcp://{id}@"), 1))
            .collect()
    }

    /// Whether every device has heard worker `id` and it is not leaving.
    fn serving(&self, id: &str) -> bool {
        self.running
            .iter()
            .all(|(_, status)| status.worker(id.as_bytes()).is_some_and(|w| !w.leaving))
    }

    /// The requests worker `id` was handed, over every device.
    fn requests(&self, id: &str) -> u64 {
        self.running
            .iter()
            .filter_map(|(_, status)| status.worker(id.as_bytes()))
            .map(|w| w.requests)
            .sum()
    }

    /// Stops every device and waits for it.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("a device stopped: {e}"),
                Err(_) => tracing::error!("a device thread panicked"),
            }
        }
    }
}

/// The supervisor's state.
struct Supervisor<'p> {
    plan: &'p Plan,
    cmd: &'p WorkerCommand,
    devices: &'p Devices,
    workers: Vec<Worker>,
    next_serial: u64,
    /// Restarts owed after crashes, and when each is due.
    respawns: VecDeque<Instant>,
    quick_deaths: u32,
    /// Whether the first workers all served yet.
    booted: bool,
    recycles: [u64; 5],
    crashes: u64,
    /// The run directory (see [`RUN_DIR_ENV`]).
    run_dir: std::path::PathBuf,
}

/// Runs the supervisor until SIGINT/SIGTERM (`stop`); SIGHUP (`reload`) replaces every worker.
///
/// # Errors
/// A message for the log when the device cannot start, a worker cannot be started, the
/// application does not load, or workers keep dying.
pub(super) fn supervise(
    plan: &Plan,
    servers: &[(SocketSpec, SocketSpec)],
    cmd: &WorkerCommand,
    stop: &Arc<AtomicBool>,
    reload: &Arc<AtomicBool>,
    usr1: &Arc<AtomicBool>,
) -> Result<(), String> {
    let run_dir = std::env::temp_dir().join(format!("m2wsgi-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)
        .map_err(|e| format!("cannot create the run directory {}: {e}", run_dir.display()))?;
    let _endpoint = match &plan.metrics {
        Some(addr) => {
            let dir = run_dir.clone();
            let l = super::metrics::Listener::bind(addr.as_str(), move || scrape_all(&dir))
                .map_err(|e| format!("--metrics {addr}: {e}"))?;
            tracing::info!(
                "metrics of every worker at http://{}/metrics",
                l.local_addr()
            );
            Some(l)
        }
        _ => None,
    };
    let devices = Devices::start(servers)?;
    for ((send, recv), (endpoint, _)) in servers.iter().zip(&devices.running) {
        tracing::info!(
            "supervisor (pid {}): {} worker process(es) behind a device at {endpoint}; requests \
             from {send}, replies to {recv}",
            std::process::id(),
            plan.workers
        );
    }
    let mut sup = Supervisor {
        plan,
        cmd,
        devices: &devices,
        workers: Vec::new(),
        next_serial: 1,
        respawns: VecDeque::new(),
        quick_deaths: 0,
        booted: false,
        recycles: [0; 5],
        crashes: 0,
        run_dir,
    };
    let result = sup.run(stop, reload, usr1);
    sup.shutdown();
    let run_dir = sup.run_dir.clone();
    let summary = format!(
        "supervisor stopped: {} crash(es); recycled {} for max-requests, {} for max-rss, {} for \
         lifetime, {} for reload, {} for stuck threads",
        sup.crashes,
        sup.recycles[0],
        sup.recycles[1],
        sup.recycles[2],
        sup.recycles[3],
        sup.recycles[4]
    );
    drop(sup);
    devices.stop();
    let _ = std::fs::remove_dir_all(&run_dir);
    tracing::info!("{summary}");
    result
}

impl Supervisor<'_> {
    fn run(
        &mut self,
        stop: &AtomicBool,
        reload: &AtomicBool,
        usr1: &AtomicBool,
    ) -> Result<(), String> {
        for _ in 0..self.plan.workers {
            self.spawn(None)?;
        }
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(TICK);
            if usr1.swap(false, Ordering::SeqCst) && self.plan.forward_usr1 {
                tracing::info!("SIGUSR1: the workers reopen their log files");
                for w in &mut self.workers {
                    signal(&mut w.child, rustix::process::Signal::USR1);
                }
            }
            if reload.swap(false, Ordering::SeqCst) {
                tracing::info!("reload: replacing every worker");
                self.replace_all(Cause::Reload)?;
            }
            self.reap()?;
            self.check_serving();
            self.check_recycling()?;
            let now = Instant::now();
            while self.respawns.front().is_some_and(|t| *t <= now) {
                self.respawns.pop_front();
                self.spawn(None)?;
            }
        }
        tracing::info!("shutting down: draining every worker");
        Ok(())
    }

    /// Starts a worker (replacing `replaces`, if given).
    fn spawn(&mut self, replaces: Option<u64>) -> Result<u64, String> {
        let serial = self.next_serial;
        self.next_serial += 1;
        let id = format!("w{serial}");
        let devices = self.devices.endpoints_for(&id);
        let mut command = Command::new(&self.cmd.program);
        command.args(&self.cmd.args);
        if let Some(title) = &self.cmd.title {
            command.arg0(format!("m2wsgi: worker {id} {title}"));
        }
        command
            .env(WORKER_ENV, &id)
            .env("M2WSGI_DEVICE", &devices[0])
            .env(ALSO_DEVICES_ENV, devices[1..].join(","));
        command.env(RUN_DIR_ENV, &self.run_dir);
        if let Some(gid) = self.cmd.gid {
            command.gid(gid);
        }
        if let Some(uid) = self.cmd.uid {
            command.uid(uid);
        }
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot start a worker ({}): {e}",
                self.cmd.program.to_string_lossy()
            )
        })?;
        let now = Instant::now();
        let jitter = |max: u64| {
            if max == 0 {
                0
            } else {
                (uuid::Uuid::new_v4().as_u128() % u128::from(max + 1)) as u64
            }
        };
        let plan = self.plan;
        let request_limit =
            (plan.max_requests > 0).then(|| plan.max_requests + jitter(plan.max_requests_jitter));
        let retire_at = plan.lifetime.map(|l| {
            let j = jitter(u64::try_from(plan.lifetime_jitter.as_millis()).unwrap_or(u64::MAX));
            now + l + Duration::from_millis(j)
        });
        tracing::info!("worker {id} started (pid {})", child.id());
        self.workers.push(Worker {
            serial,
            child,
            started: now,
            serving: false,
            stopping: false,
            replaced_by: None,
            replaces,
            request_limit,
            retire_at,
            last_rss_check: now,
        });
        Ok(serial)
    }

    /// Starts a replacement for every worker not already being replaced.
    fn replace_all(&mut self, cause: Cause) -> Result<(), String> {
        let serials: Vec<u64> = self
            .workers
            .iter()
            .filter(|w| !w.stopping && w.replaced_by.is_none() && w.replaces.is_none())
            .map(|w| w.serial)
            .collect();
        for s in serials {
            self.replace(s, cause)?;
        }
        Ok(())
    }

    fn replace(&mut self, serial: u64, cause: Cause) -> Result<(), String> {
        let new = self.spawn(Some(serial))?;
        if let Some(w) = self.workers.iter_mut().find(|w| w.serial == serial) {
            w.replaced_by = Some((new, cause));
            tracing::info!(
                "recycling worker {} ({}): w{new} takes over once it serves",
                w.id(),
                cause.as_str()
            );
        }
        Ok(())
    }

    /// Collects workers that exited; restarts the ones that were not asked to.
    fn reap(&mut self) -> Result<(), String> {
        let mut i = 0;
        while i < self.workers.len() {
            let exited = self.workers[i].child.try_wait().ok().flatten();
            let Some(st) = exited else {
                i += 1;
                continue;
            };
            let w = self.workers.remove(i);
            let _ = std::fs::remove_file(self.run_dir.join(w.id()));
            let _ = std::fs::remove_file(self.run_dir.join(format!("{}.recycle", w.id())));
            if w.stopping {
                tracing::info!("worker {} left ({st})", w.id());
                continue;
            }
            self.crashes += 1;
            super::metrics::count_restart(super::metrics::RestartCause::Crash);
            if !w.serving && !self.booted {
                return Err(format!(
                    "worker {} exited ({st}) before it served: the application did not start \
                     (see the log above)",
                    w.id()
                ));
            }
            // A replacement that died: the worker it was to replace stays.
            if let Some(old) = w.replaces {
                if let Some(o) = self.workers.iter_mut().find(|o| o.serial == old) {
                    o.replaced_by = None;
                }
            }
            let quick = w.started.elapsed() < QUICK_DEATH;
            self.quick_deaths = if quick { self.quick_deaths + 1 } else { 0 };
            if self.quick_deaths >= CRASH_LOOP {
                return Err(format!(
                    "workers keep dying within {QUICK_DEATH:?} of their start ({CRASH_LOOP} in a \
                     row, the last {st}): stopping instead of restarting them again; see the log \
                     above"
                ));
            }
            let backoff = if self.quick_deaths <= 1 {
                Duration::ZERO
            } else {
                (Duration::from_millis(100) * 2u32.pow(self.quick_deaths - 2)).min(MAX_BACKOFF)
            };
            tracing::error!(
                "worker {} (pid {}) died ({st}); starting another in {backoff:?}",
                w.id(),
                w.child.id()
            );
            if w.replaces.is_none() {
                self.respawns.push_back(Instant::now() + backoff);
            }
        }
        Ok(())
    }

    /// Marks workers every device has heard as serving; a replacement that serves retires the
    /// worker it replaces.
    fn check_serving(&mut self) {
        let mut retire = Vec::new();
        for w in &mut self.workers {
            if w.serving || w.stopping {
                continue;
            }
            let id = w.id();
            if self.devices.serving(&id) {
                w.serving = true;
                tracing::info!("worker {id} (pid {}) serving", w.child.id());
                if let Some(old) = w.replaces.take() {
                    retire.push(old);
                }
            } else if w.started.elapsed() > BOOT_TIMEOUT {
                tracing::error!("worker {id} did not serve within {BOOT_TIMEOUT:?}; stopping it");
                terminate(&mut w.child);
                w.stopping = true;
            }
        }
        for old in retire {
            if let Some(o) = self.workers.iter_mut().find(|o| o.serial == old) {
                if let Some((_, cause)) = o.replaced_by {
                    self.recycles[cause as usize] += 1;
                    super::metrics::count_restart(match cause {
                        Cause::MaxRequests => super::metrics::RestartCause::MaxRequests,
                        Cause::MaxRss => super::metrics::RestartCause::Memory,
                        Cause::Lifetime => super::metrics::RestartCause::Lifetime,
                        Cause::Reload => super::metrics::RestartCause::Reload,
                        Cause::Timeout => super::metrics::RestartCause::Timeout,
                    });
                }
                terminate(&mut o.child);
                o.stopping = true;
            }
        }
        if !self.booted && self.workers.iter().filter(|w| w.serving).count() >= self.plan.workers {
            self.booted = true;
            tracing::info!("all {} workers serving", self.plan.workers);
        }
    }

    /// Starts replacements for workers past a recycling limit.
    fn check_recycling(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let mut due = Vec::new();
        for w in &mut self.workers {
            if !w.serving || w.stopping || w.replaced_by.is_some() {
                continue;
            }
            let id = w.id();
            let requests = self.devices.requests(&id);
            let asked = self.run_dir.join(format!("{id}.recycle"));
            if std::fs::remove_file(&asked).is_ok() {
                due.push((w.serial, Cause::Timeout));
            } else if w.request_limit.is_some_and(|l| requests >= l) {
                due.push((w.serial, Cause::MaxRequests));
            } else if w.retire_at.is_some_and(|t| now >= t) {
                due.push((w.serial, Cause::Lifetime));
            } else if let Some(max) = self.plan.max_rss_kib {
                if now.duration_since(w.last_rss_check) >= Duration::from_secs(1) {
                    w.last_rss_check = now;
                    if rss_kib(w.child.id()).is_some_and(|r| r > max) {
                        due.push((w.serial, Cause::MaxRss));
                    }
                }
            }
        }
        for (serial, cause) in due {
            self.replace(serial, cause)?;
        }
        Ok(())
    }

    /// Sends SIGTERM to every worker and waits for them (SIGKILL after the drain deadline).
    fn shutdown(&mut self) {
        for w in &mut self.workers {
            if w.child.try_wait().ok().flatten().is_none() {
                terminate(&mut w.child);
            }
        }
        let deadline = Instant::now() + self.plan.shutdown_timeout + Duration::from_secs(5);
        for w in &mut self.workers {
            loop {
                match w.child.try_wait() {
                    Ok(Some(st)) => {
                        tracing::info!("worker {} left ({st})", w.id());
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(TICK),
                    _ => {
                        tracing::error!(
                            "worker {} did not leave within the shutdown deadline; killing it",
                            w.id()
                        );
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                }
            }
        }
        self.workers.clear();
    }
}

/// Sends SIGTERM (the worker drains).
fn terminate(child: &mut Child) {
    signal(child, rustix::process::Signal::TERM);
}

fn signal(child: &mut Child, sig: rustix::process::Signal) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        if let Err(e) = rustix::process::kill_process(pid, sig) {
            tracing::warn!("{sig:?} to pid {pid:?}: {e}");
        }
    }
}

/// The supervisor's `/metrics`: its own samples and every worker's (each scraped from the
/// private endpoint whose address it wrote into `dir`), merged.
fn scrape_all(dir: &std::path::Path) -> String {
    let mut texts = vec![super::metrics::render_supervisor(&[])];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let addr = std::fs::read_to_string(e.path()).unwrap_or_default();
            if let Some(text) = scrape(addr.trim()) {
                texts.push(text);
            }
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    super::metrics::merge(&refs)
}

/// `GET /metrics` from a worker's endpoint (1 s at most).
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let limit = Duration::from_secs(1);
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.take(16 << 20).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A process's resident set size in KiB (VmRSS).
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `--reload`: sets `reload` whenever a `.py` file under one of `dirs` is written, created,
/// renamed or removed. The watcher works while the returned value lives.
///
/// # Errors
/// A message for the log when a directory cannot be watched.
pub(super) fn watch_sources(
    dirs: &[std::path::PathBuf],
    reload: Arc<AtomicBool>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::{EventKind, RecursiveMode, Watcher as _};
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let relevant = matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) && ev
            .paths
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "py"));
        if relevant && !reload.swap(true, Ordering::SeqCst) {
            tracing::info!("--reload: {} changed", ev.paths[0].display());
        }
    })
    .map_err(|e| format!("--reload: cannot watch files: {e}"))?;
    for d in dirs {
        watcher
            .watch(d, RecursiveMode::Recursive)
            .map_err(|e| format!("--reload: cannot watch {}: {e}", d.display()))?;
    }
    Ok(watcher)
}

/// The id of a user (`--user`): a number, or a name from `/etc/passwd`; with its primary
/// group.
///
/// # Errors
/// A message when the user is unknown.
pub(super) fn lookup_user(user: &str) -> Result<(u32, u32), String> {
    lookup(user, "/etc/passwd", "user").map(|f| (f.0, f.1.unwrap_or(f.0)))
}

/// The id of a group (`--group`): a number, or a name from `/etc/group`.
///
/// # Errors
/// A message when the group is unknown.
pub(super) fn lookup_group(group: &str) -> Result<u32, String> {
    lookup(group, "/etc/group", "group").map(|f| f.0)
}

/// `name:x:id:gid:...` lines (passwd) or `name:x:id:...` (group): the id, and the gid field.
fn lookup(name: &str, file: &str, what: &str) -> Result<(u32, Option<u32>), String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && (f[0] == name || f[2] == name) {
            if let Ok(id) = f[2].parse() {
                return Ok((id, f.get(3).and_then(|g| g.parse().ok())));
            }
        }
    }
    match name.parse() {
        Ok(id) => Ok((id, None)),
        Err(_) => Err(format!("no {what} {name:?} in {file}")),
    }
}

/// In a worker of a supervisor: asks to be replaced (most of its threads are stuck in requests
/// past `--timeout`). Returns whether there is a supervisor to ask.
pub(super) fn request_recycle() -> bool {
    let (Some(id), Some(dir)) = (std::env::var_os(WORKER_ENV), std::env::var_os(RUN_DIR_ENV))
    else {
        return false;
    };
    let file = std::path::Path::new(&dir).join(format!("{}.recycle", id.to_string_lossy()));
    std::fs::write(file, b"stuck threads\n").is_ok()
}

/// In a worker: sets `stop` when the supervisor that started it is gone (the worker then
/// drains and exits).
pub(super) fn watch_parent(stop: Arc<AtomicBool>) {
    let parent = std::os::unix::process::parent_id();
    let _ = std::thread::Builder::new()
        .name("m2wsgi-parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            if std::os::unix::process::parent_id() != parent {
                tracing::warn!("the supervisor is gone; draining");
                stop.store(true, Ordering::SeqCst);
                return;
            }
        });
}
