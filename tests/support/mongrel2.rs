//! A real Mongrel2 (Debian `mongrel2-core` 1.12) for integration tests (feature `e2e`).
//!
//! ```ignore
//! mod support;
//! use support::mongrel2::{Handler, Mongrel2, Protocol};
//!
//! let h = Handler::tcp("app").protocol(Protocol::Tnetstring);
//! let m2 = Mongrel2::builder()
//!     .handler("/app", &h)
//!     .dir("/static/", "static/")
//!     .static_file("hello.txt", b"hello world!\n")
//!     .setting("limits.content_length", 4096)
//!     .setting("upload.temp_store", "/tmp/upload.XXXXXX")
//!     .start();
//! // a handler connects PULL -> m2.send_spec("app"), PUB -> m2.recv_spec("app")
//! let out = support::mongrel2::curl(&["-i", &m2.url("/static/hello.txt")]);
//! ```
//!
//! Every server gets a fresh directory under `std::env::temp_dir()` holding `logs/ run/ tmp/
//! static/`, the m2sh config (`mongrel2.conf`) and its database (`config.sqlite`). Mongrel2 is
//! started from that directory with `chroot='./'`; as root it really calls chroot(2), so every path
//! in the config (and every path it reports, such as upload temp files) is relative to that
//! directory. Use [`Mongrel2::host_path`] to map such a path back to the host.
//!
//! The process is always stopped in `Drop` (SIGTERM, then SIGKILL after a bounded wait), also when
//! the test panics, and the directory is removed afterwards (set `M2WSGI_KEEP_HARNESS=1` to keep
//! it for debugging). A missing tool is a test failure, never a skip.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Default bound for startup (config load excluded).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop` waits after SIGTERM before sending SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// After "Running" is logged, how long the listening sockets may still take to show up.
const PORT_GRACE: Duration = Duration::from_secs(2);
/// `--max-time` that [`curl`] always passes.
pub const CURL_MAX_TIME_SECS: u64 = 10;

const HINT: &str = "run scripts/install-deps.sh";
const CONFIG_FILE: &str = "mongrel2.conf";
const DB_FILE: &str = "config.sqlite";
const STDOUT_FILE: &str = "mongrel2.stdout";
const STDERR_FILE: &str = "mongrel2.stderr";
const ERROR_LOG: &str = "logs/error.log";
const ACCESS_LOG: &str = "logs/access.log";
const PID_FILE: &str = "run/mongrel2.pid";
const CONTROL_SOCKET: &str = "run/control";
/// Printed by mongrel2 into the error log once handlers and the control port are bound.
const RUNNING_MARKER: &str = "Running. Copyright";

// ------------------------------------------------------------------------------------------------
// Tools and small helpers

/// Panics unless `name` is an executable on `PATH`; returns its path.
///
/// In CI a missing tool is a failure, never a skip.
pub fn require_tool(name: &str) -> PathBuf {
    if let Some(path) = find_on_path(name) {
        return path;
    }
    let what = match name {
        "mongrel2" | "m2sh" => "mongrel2",
        other => other,
    };
    panic!("{what} not installed ({name} not found on PATH): {HINT}");
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A loopback TCP port that was free a moment ago. Never hands out the same port twice in one
/// test process, so parallel tests in one binary do not collide.
pub fn free_port() -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if taken.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("could not find a free loopback port");
}

/// Runs `curl -sS --noproxy '*' --max-time 10 <args>` and returns its output (status not
/// checked). A later `--max-time N` in `args` overrides the default.
pub fn curl(args: &[&str]) -> Output {
    let curl = require_tool("curl");
    let max_time = CURL_MAX_TIME_SECS.to_string();
    Command::new(curl)
        .args(["-sS", "--noproxy", "*", "--max-time", &max_time])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn curl")
}

/// Runs `sqlite3 -batch <db> <sql>` and returns stdout; panics (with stderr) on failure.
pub fn sqlite3(db: &Path, sql: &str) -> String {
    let tool = require_tool("sqlite3");
    let out = Command::new(tool)
        .arg("-batch")
        .arg(db)
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .expect("spawn sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {} {sql:?} failed ({}): {}",
        db.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh random UUID (v4, lower-case hex).
pub fn random_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// Quotes a string for the m2sh config language (single quotes, no escapes available).
fn quote(s: &str) -> String {
    assert!(
        !s.contains('\'') && !s.contains('\n') && !s.contains('\\'),
        "m2sh config strings cannot hold quotes, backslashes or newlines: {s:?}"
    );
    format!("'{s}'")
}

// ------------------------------------------------------------------------------------------------
// Configuration types

/// The request format a handler gets (`protocol` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `protocol='tnetstring'`.
    Tnetstring,
    /// `protocol='json'` (legacy; Mongrel2's default).
    Json,
}

impl Protocol {
    /// The value stored in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tnetstring => "tnetstring",
            Protocol::Json => "json",
        }
    }
}

/// One `Handler(...)` of the config: what a handler under test connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    /// Harness-side name, used by [`Mongrel2::handler`] and friends.
    pub name: String,
    /// Mongrel2 binds PUSH here; the handler connects PULL.
    pub send_spec: String,
    /// The handler's UUID (ZMQ identity of mongrel2's PUSH socket, SENDER of requests).
    pub send_ident: String,
    /// Mongrel2 binds SUB here; the handler connects PUB.
    pub recv_spec: String,
    /// SUB subscription prefix ('' = everything).
    pub recv_ident: String,
    /// Request format.
    pub protocol: Protocol,
    /// `raw_payload=1` turns off base64 for JSON/XML-socket replies.
    pub raw_payload: bool,
}

impl Handler {
    /// A tnetstring handler on two fresh loopback TCP ports, with a random `send_ident` and an
    /// empty `recv_ident`.
    pub fn tcp(name: &str) -> Self {
        Handler {
            name: name.to_owned(),
            send_spec: format!("tcp://127.0.0.1:{}", free_port()),
            send_ident: random_uuid(),
            recv_spec: format!("tcp://127.0.0.1:{}", free_port()),
            recv_ident: String::new(),
            protocol: Protocol::Tnetstring,
            raw_payload: false,
        }
    }

    /// Sets the protocol.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets `raw_payload`.
    pub fn raw_payload(mut self, raw: bool) -> Self {
        self.raw_payload = raw;
        self
    }

    /// Sets `send_ident`.
    pub fn send_ident(mut self, ident: &str) -> Self {
        ident.clone_into(&mut self.send_ident);
        self
    }

    /// Sets `recv_ident` (the SUB subscription prefix).
    pub fn recv_ident(mut self, ident: &str) -> Self {
        ident.clone_into(&mut self.recv_ident);
        self
    }

    /// Sets `send_spec` (any ZMQ endpoint; `ipc://` paths are relative to the chroot).
    pub fn send_spec(mut self, spec: &str) -> Self {
        spec.clone_into(&mut self.send_spec);
        self
    }

    /// Sets `recv_spec`.
    pub fn recv_spec(mut self, spec: &str) -> Self {
        spec.clone_into(&mut self.recv_spec);
        self
    }

    /// The `Handler(...)` expression. `raw_payload` is left out on purpose: m2sh 1.12 frees a
    /// value twice when it sees `raw_payload=1` (it logs a garbage `Invalid type given` error and
    /// may crash), so [`Builder::start`] sets the column with sqlite3 after `m2sh load` instead.
    fn to_config(&self) -> String {
        format!(
            "Handler(send_spec={}, send_ident={}, recv_spec={}, recv_ident={}, protocol={})",
            quote(&self.send_spec),
            quote(&self.send_ident),
            quote(&self.recv_spec),
            quote(&self.recv_ident),
            quote(self.protocol.as_str()),
        )
    }

    /// The loopback TCP ports of `send_spec`/`recv_spec` (mongrel2 binds them).
    fn tcp_ports(&self) -> Vec<u16> {
        [&self.send_spec, &self.recv_spec]
            .iter()
            .filter_map(|spec| spec.strip_prefix("tcp://"))
            .filter_map(|addr| addr.rsplit(':').next()?.parse().ok())
            .collect()
    }

    fn sql_match(&self) -> String {
        format!(
            "send_spec = {} AND send_ident = {} AND recv_spec = {} AND recv_ident = {} AND protocol = {}",
            quote(&self.send_spec),
            quote(&self.send_ident),
            quote(&self.recv_spec),
            quote(&self.recv_ident),
            quote(self.protocol.as_str()),
        )
    }
}

/// One `Dir(...)` of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirSpec {
    /// Directory relative to the chroot, with a trailing `/` (e.g. `static/`).
    pub base: String,
    /// Served for a directory request.
    pub index_file: String,
    /// Content-Type when the extension is unknown.
    pub default_ctype: String,
}

impl DirSpec {
    /// `base` with `index.html` and `text/plain`.
    pub fn new(base: &str) -> Self {
        DirSpec {
            base: base.to_owned(),
            index_file: "index.html".to_owned(),
            default_ctype: "text/plain".to_owned(),
        }
    }

    fn to_config(&self) -> String {
        format!(
            "Dir(base={}, index_file={}, default_ctype={})",
            quote(&self.base),
            quote(&self.index_file),
            quote(&self.default_ctype)
        )
    }
}

/// A value in the `settings` map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Written unquoted.
    Int(i64),
    /// Written in single quotes.
    Str(String),
}

impl From<i64> for Setting {
    fn from(v: i64) -> Self {
        Setting::Int(v)
    }
}
impl From<i32> for Setting {
    fn from(v: i32) -> Self {
        Setting::Int(v.into())
    }
}
impl From<u32> for Setting {
    fn from(v: u32) -> Self {
        Setting::Int(v.into())
    }
}
impl From<usize> for Setting {
    fn from(v: usize) -> Self {
        Setting::Int(i64::try_from(v).expect("setting fits in i64"))
    }
}
impl From<bool> for Setting {
    fn from(v: bool) -> Self {
        Setting::Int(v.into())
    }
}
impl From<&str> for Setting {
    fn from(v: &str) -> Self {
        Setting::Str(v.to_owned())
    }
}
impl From<String> for Setting {
    fn from(v: String) -> Self {
        Setting::Str(v)
    }
}

impl Setting {
    fn to_config(&self) -> String {
        match self {
            Setting::Int(i) => i.to_string(),
            Setting::Str(s) => quote(s),
        }
    }
}

#[derive(Clone, Debug)]
enum Target {
    Handler(String),
    Dir(DirSpec),
}

// ------------------------------------------------------------------------------------------------
// Builder

/// Builds a config, loads it with `m2sh` and starts `mongrel2`. See the module docs.
#[derive(Debug)]
#[must_use = "call .start() to run mongrel2"]
pub struct Builder {
    server_uuid: String,
    host: String,
    http_port: Option<u16>,
    handlers: Vec<Handler>,
    routes: Vec<(String, Target)>,
    settings: BTreeMap<String, Setting>,
    files: Vec<(String, Vec<u8>)>,
    startup_timeout: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            server_uuid: format!("m2test-{}", random_uuid()),
            host: "localhost".to_owned(),
            http_port: None,
            handlers: Vec::new(),
            routes: Vec::new(),
            settings: BTreeMap::new(),
            files: Vec::new(),
            startup_timeout: STARTUP_TIMEOUT,
        }
    }
}

impl Builder {
    /// Routes `path` (a mongrel2 route pattern such as `/app` or `@chat`) to `handler`. The same
    /// handler may be routed from several paths; two different handlers must not share a name.
    pub fn handler(mut self, path: &str, handler: &Handler) -> Self {
        match self.handlers.iter().find(|h| h.name == handler.name) {
            Some(existing) => assert_eq!(
                existing, handler,
                "two different handlers are both named {:?}",
                handler.name
            ),
            None => self.handlers.push(handler.clone()),
        }
        self.add_route(path, Target::Handler(handler.name.clone()));
        self
    }

    fn add_route(&mut self, path: &str, target: Target) {
        assert!(
            self.routes.iter().all(|(p, _)| p != path),
            "route {path:?} given twice"
        );
        self.routes.push((path.to_owned(), target));
    }

    /// Routes `path` to a `Dir` with `base` (relative to the chroot, e.g. `static/`),
    /// `index.html` and `text/plain`.
    pub fn dir(self, path: &str, base: &str) -> Self {
        self.dir_spec(path, DirSpec::new(base))
    }

    /// Routes `path` to a fully specified `Dir`.
    pub fn dir_spec(mut self, path: &str, dir: DirSpec) -> Self {
        self.add_route(path, Target::Dir(dir));
        self
    }

    /// Adds a `settings` entry, e.g. `("limits.content_length", 4096)` or
    /// `("upload.temp_store", "/tmp/upload.XXXXXX")`. `server.daemonize` is always 0: the harness
    /// must own the process.
    pub fn setting(mut self, key: &str, value: impl Into<Setting>) -> Self {
        let value = value.into();
        if key == "server.daemonize" {
            assert_eq!(
                value,
                Setting::Int(0),
                "the harness needs server.daemonize = 0"
            );
        }
        self.settings.insert(key.to_owned(), value);
        self
    }

    /// Writes `contents` to `static/<rel>` in the chroot before starting.
    pub fn static_file(mut self, rel: &str, contents: &[u8]) -> Self {
        self.files.push((
            format!("static/{}", rel.trim_start_matches('/')),
            contents.to_vec(),
        ));
        self
    }

    /// Writes `contents` to `<rel>` in the chroot before starting.
    pub fn file(mut self, rel: &str, contents: &[u8]) -> Self {
        self.files
            .push((rel.trim_start_matches('/').to_owned(), contents.to_vec()));
        self
    }

    /// Uses this HTTP port instead of a fresh one.
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// Sets the server uuid (the second argument of `mongrel2`).
    pub fn server_uuid(mut self, uuid: &str) -> Self {
        uuid.clone_into(&mut self.server_uuid);
        self
    }

    /// Sets the host name (also the default host).
    pub fn host(mut self, name: &str) -> Self {
        name.clone_into(&mut self.host);
        self
    }

    /// Bounds the wait for the server to come up (default 10 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    fn settings_with_defaults(&self) -> BTreeMap<String, Setting> {
        let mut settings = self.settings.clone();
        settings.insert("server.daemonize".to_owned(), Setting::Int(0));
        settings
    }

    /// The m2sh config text for `http_port`.
    pub fn config_text(&self, http_port: u16) -> String {
        let mut c = String::new();
        let var = |i: usize| format!("handler_{i}");
        for (i, h) in self.handlers.iter().enumerate() {
            if h.raw_payload {
                let _ = writeln!(c, "# raw_payload=1: set with sqlite3 after m2sh load");
            }
            let _ = writeln!(c, "{} = {}", var(i), h.to_config());
        }
        let mut routes = Vec::new();
        for (path, target) in &self.routes {
            let value = match target {
                Target::Handler(name) => var(self
                    .handlers
                    .iter()
                    .position(|h| &h.name == name)
                    .expect("handler")),
                Target::Dir(dir) => dir.to_config(),
            };
            routes.push(format!("        {}: {}", quote(path), value));
        }
        let _ = writeln!(
            c,
            "main = Server(uuid={uuid}, name='main', chroot='./', bind_addr='127.0.0.1', port={port},\n    \
             access_log='/{ACCESS_LOG}', error_log='/{ERROR_LOG}', pid_file='/{PID_FILE}',\n    \
             control_port='ipc://{CONTROL_SOCKET}', default_host={host},\n    \
             hosts=[Host(name={host}, routes={{\n{routes}\n    }})])",
            uuid = quote(&self.server_uuid),
            port = http_port,
            host = quote(&self.host),
            routes = routes.join(",\n"),
        );
        let settings: Vec<String> = self
            .settings_with_defaults()
            .iter()
            .map(|(k, v)| format!("    {}: {}", quote(k), v.to_config()))
            .collect();
        let _ = writeln!(c, "settings = {{\n{}\n}}", settings.join(",\n"));
        c.push_str("servers = [main]\n");
        c
    }

    /// Creates the chroot, loads the config and starts mongrel2; panics with logs on any failure.
    pub fn start(self) -> Mongrel2 {
        let m2sh = require_tool("m2sh");
        let mongrel2 = require_tool("mongrel2");
        require_tool("sqlite3");
        assert!(
            !self.routes.is_empty(),
            "a mongrel2 config needs at least one route"
        );
        let http_port = self.http_port.unwrap_or_else(free_port);
        let keep = std::env::var_os("M2WSGI_KEEP_HARNESS").is_some();
        let dir = tempfile::Builder::new()
            .prefix("m2wsgi-m2-")
            .disable_cleanup(keep)
            .tempdir()
            .expect("create the chroot directory");
        for sub in ["logs", "run", "tmp", "static"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create chroot subdir");
        }
        for (rel, contents) in &self.files {
            let path = dir.path().join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create parent dir");
            }
            fs::write(&path, contents).expect("write file into chroot");
        }
        let config = self.config_text(http_port);
        fs::write(dir.path().join(CONFIG_FILE), &config).expect("write config");

        // m2sh load. It exits 0 even on a syntax error, so check its output and the db too.
        let mut cmd = Command::new(&m2sh);
        cmd.args(["load", "-config", CONFIG_FILE, "-db", DB_FILE])
            .current_dir(dir.path())
            .stdin(Stdio::null());
        if std::env::var_os("LOGNAME").is_none() {
            // otherwise m2sh logs "getlogin failed and no LOGNAME env variable"
            cmd.env("LOGNAME", "root");
        }
        let out = cmd.output().expect("spawn m2sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("[ERROR]") && !l.contains("getlogin"))
            .collect();
        let db = dir.path().join(DB_FILE);
        let fail = |why: &str| -> ! {
            panic!(
                "m2sh load -config {CONFIG_FILE} -db {DB_FILE} failed in {}: {why}\n--- m2sh output\n{text}\n--- config\n{config}",
                dir.path().display()
            )
        };
        if !out.status.success() {
            fail(&format!("exit status {}", out.status));
        }
        if !errors.is_empty() {
            fail("it logged errors");
        }
        if !db.is_file() {
            fail("no database was written");
        }

        // raw_payload=1 (see Handler::to_config).
        for h in self.handlers.iter().filter(|h| h.raw_payload) {
            sqlite3(
                &db,
                &format!(
                    "UPDATE handler SET raw_payload = 1 WHERE {};",
                    h.sql_match()
                ),
            );
        }

        // Check that everything arrived in the database (m2sh exits 0 even on syntax errors).
        let mut sql = format!(
            "SELECT count(*) FROM server WHERE uuid = {} AND port = {http_port};\n\
             SELECT count(*) FROM route;\nSELECT count(*) FROM setting;\n",
            quote(&self.server_uuid)
        );
        let mut want = vec![1, self.routes.len(), self.settings_with_defaults().len()];
        for h in &self.handlers {
            let _ = writeln!(
                sql,
                "SELECT count(*) FROM handler WHERE {} AND raw_payload = {};",
                h.sql_match(),
                u8::from(h.raw_payload)
            );
            want.push(1);
        }
        let got: Vec<usize> = sqlite3(&db, &sql)
            .lines()
            .map(|l| l.trim().parse().unwrap_or(usize::MAX))
            .collect();
        if got.len() != want.len() || got.iter().zip(&want).any(|(g, w)| g < w) {
            fail(&format!(
                "the database does not match the config (row counts {got:?}, expected {want:?} \
                 for server, routes, settings, each handler)"
            ));
        }

        let mut m2 = Mongrel2 {
            dir,
            mongrel2,
            child: None,
            http_port,
            server_uuid: self.server_uuid,
            handlers: self.handlers,
            config,
            startup_timeout: self.startup_timeout,
            chrooted: false,
            logs_shown: false,
        };
        m2.spawn_and_wait();
        m2
    }
}

// ------------------------------------------------------------------------------------------------
// Running server

/// A running mongrel2 in its own chroot directory. Stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Mongrel2 {
    dir: tempfile::TempDir,
    mongrel2: PathBuf,
    child: Option<Child>,
    http_port: u16,
    server_uuid: String,
    handlers: Vec<Handler>,
    config: String,
    startup_timeout: Duration,
    chrooted: bool,
    logs_shown: bool,
}

impl Mongrel2 {
    /// Starts building a server.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The HTTP port on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The chroot (= working) directory on the host.
    pub fn chroot(&self) -> &Path {
        self.dir.path()
    }

    /// The config database on the host.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join(DB_FILE)
    }

    /// The m2sh config file on the host.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// The m2sh config text.
    pub fn config_text(&self) -> &str {
        &self.config
    }

    /// The server uuid.
    pub fn server_uuid(&self) -> &str {
        &self.server_uuid
    }

    /// All handlers, in config order.
    pub fn handlers(&self) -> &[Handler] {
        &self.handlers
    }

    /// The handler named `name`; panics if there is none.
    pub fn handler(&self, name: &str) -> &Handler {
        self.handlers
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no handler named {name:?} in this config"))
    }

    /// The handler's `send_spec` (connect a PULL socket here).
    pub fn send_spec(&self, name: &str) -> &str {
        &self.handler(name).send_spec
    }

    /// The handler's `recv_spec` (connect a PUB socket here).
    pub fn recv_spec(&self, name: &str) -> &str {
        &self.handler(name).recv_spec
    }

    /// The handler's `send_ident`.
    pub fn send_ident(&self, name: &str) -> &str {
        &self.handler(name).send_ident
    }

    /// The control port as a host-side ZMQ endpoint (`ipc://<chroot>/run/control`).
    pub fn control_endpoint(&self) -> String {
        self.host_endpoint(&format!("ipc://{CONTROL_SOCKET}"))
    }

    /// Maps a ZMQ endpoint from the config to one a process on the host can connect to:
    /// `ipc://` paths are resolved against the chroot, anything else is returned unchanged.
    pub fn host_endpoint(&self, spec: &str) -> String {
        match spec.strip_prefix("ipc://") {
            Some(path) if !path.starts_with('/') || self.chrooted => {
                format!("ipc://{}", self.host_path(path).display())
            }
            _ => spec.to_owned(),
        }
    }

    /// Whether mongrel2 really chroot(2)ed into [`chroot`](Self::chroot) (it does when run as
    /// root).
    pub fn chrooted(&self) -> bool {
        self.chrooted
    }

    /// Maps a path as mongrel2 reports it (e.g. `x-mongrel2-upload-start: /tmp/upload.AbC123`) to
    /// the host path.
    pub fn host_path(&self, reported: &str) -> PathBuf {
        if self.chrooted || !reported.starts_with('/') {
            self.dir.path().join(reported.trim_start_matches('/'))
        } else {
            PathBuf::from(reported)
        }
    }

    /// Writes `contents` to `static/<rel>` (served by a `Dir` with base `static/`).
    pub fn put_static(&self, rel: &str, contents: &[u8]) -> PathBuf {
        let path = self
            .dir
            .path()
            .join("static")
            .join(rel.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create static subdir");
        }
        fs::write(&path, contents).expect("write static file");
        path
    }

    /// Contents of `logs/error.log` (lossy UTF-8; empty if missing).
    pub fn error_log(&self) -> String {
        read_lossy(&self.dir.path().join(ERROR_LOG))
    }

    /// Contents of `logs/access.log`.
    pub fn access_log(&self) -> String {
        read_lossy(&self.dir.path().join(ACCESS_LOG))
    }

    /// What mongrel2 wrote to stderr (startup messages before the chroot).
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join(STDERR_FILE))
    }

    /// What mongrel2 wrote to stdout.
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join(STDOUT_FILE))
    }

    /// Waits up to `timeout` for `needle` to appear in the error log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.error_log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops mongrel2: SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL. Returns the exit status
    /// (None if it was not running). Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        eprintln!(
            "mongrel2 (pid {}) ignored SIGTERM for {STOP_TIMEOUT:?}: SIGKILL",
            child.id()
        );
        let _ = child.kill();
        child.wait().ok()
    }

    /// Stops and starts mongrel2 again in the same directory with the same config (the same
    /// ports; a stale pid file is removed first).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait();
    }

    /// Sends `sig` (`"KILL"`, `"INT"`, ...) and waits for mongrel2 to exit (SIGKILL after
    /// [`STOP_TIMEOUT`]), then starts it again in the same directory on the same ports: an
    /// operator's restart, or a crash and a supervisor's restart.
    pub fn restart_with(&mut self, sig: &str) {
        self.kill_with(sig);
        self.spawn_and_wait();
    }

    /// Sends `sig` and waits for mongrel2 to exit (SIGKILL after [`STOP_TIMEOUT`]); start it
    /// again with [`start_again`](Self::start_again). Returns how it exited (None when it had
    /// to be killed, or was not running).
    pub fn kill_with(&mut self, sig: &str) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .stdin(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts mongrel2 again after [`kill_with`](Self::kill_with), in the same directory on the
    /// same ports.
    pub fn start_again(&mut self) {
        self.spawn_and_wait();
    }

    fn spawn_and_wait(&mut self) {
        assert!(self.child.is_none(), "mongrel2 is already running");
        // A pid file left by a killed mongrel2 makes the next one refuse to start when that pid is
        // alive again (or still a zombie). Our child has been reaped, so the file is stale.
        let _ = fs::remove_file(self.dir.path().join(PID_FILE));
        let log_before = self.error_log().len();
        let stdout = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(STDOUT_FILE))
            .expect("open stdout file");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(STDERR_FILE))
            .expect("open stderr file");
        let child = Command::new(&self.mongrel2)
            .arg(DB_FILE) // relative: opened before the chroot, and again on reload inside it
            .arg(&self.server_uuid)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.mongrel2.display()));
        let pid = child.id();
        self.child = Some(child);

        // Ready means: (1) "Running" in the new part of the error log (handlers and control port
        // set up, about 0.5 s after start) and (2) the process listens on the HTTP port and on
        // every tcp:// handler port (read from /proc, so no probe connection reaches mongrel2).
        // A handler port that is taken makes mongrel2 retry the bind for 10 s without exiting,
        // so "Failed to bind" in the log fails fast.
        let mut want_ports: Vec<u16> = vec![self.http_port];
        want_ports.extend(self.handlers.iter().flat_map(Handler::tcp_ports));
        let deadline = Instant::now() + self.startup_timeout;
        let mut running_since: Option<Instant> = None;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                self.fail_startup(&format!("mongrel2 exited during startup with {status}"));
            }
            let log = self.error_log();
            let new_log = log.get(log_before..).unwrap_or("");
            if new_log.contains("Failed to bind") {
                self.stop();
                self.fail_startup("mongrel2 could not bind a handler socket (port in use?)");
            }
            let running = new_log.contains(RUNNING_MARKER);
            let missing: Vec<u16> = match listening_tcp_ports(pid) {
                Some(ports) => want_ports
                    .iter()
                    .copied()
                    .filter(|p| !ports.contains(p))
                    .collect(),
                // no /proc: fall back to a TCP connect to the HTTP port
                None => {
                    match TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)) {
                        Ok(_) => Vec::new(),
                        Err(_) => vec![self.http_port],
                    }
                }
            };
            if running && missing.is_empty() {
                break;
            }
            // Handler sockets are bound before "Running" is logged; a recv_spec bind that fails
            // is retried silently for 10 s, so do not wait that long once "Running" is seen.
            if running && running_since.is_none() {
                running_since = Some(Instant::now());
            }
            if running_since.is_some_and(|t| t.elapsed() > PORT_GRACE) {
                self.stop();
                self.fail_startup(&format!(
                    "mongrel2 is running but does not listen on port(s) {missing:?} \
                     (a handler port in use by another process?)"
                ));
            }
            if Instant::now() >= deadline {
                self.stop();
                self.fail_startup(&format!(
                    "mongrel2 not ready after {:?} (\"Running\" logged: {running}; \
                     ports not listening: {missing:?})",
                    self.startup_timeout
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.chrooted = fs::read_link(format!("/proc/{pid}/root"))
            .ok()
            .and_then(|root| Some(root == fs::canonicalize(self.dir.path()).ok()?))
            .unwrap_or(false);
    }

    fn fail_startup(&mut self, what: &str) -> ! {
        self.logs_shown = true;
        panic!(
            "{what}\nchroot: {}\n--- logs/error.log (tail)\n{}\n--- stderr (tail)\n{}\n--- stdout (tail)\n{}\n--- config\n{}",
            self.dir.path().display(),
            tail(&self.error_log(), 30),
            tail(&self.stderr(), 30),
            tail(&self.stdout(), 10),
            self.config
        );
    }
}

impl Drop for Mongrel2 {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() && !self.logs_shown {
            eprintln!(
                "--- mongrel2 {} logs/error.log (tail) ---\n{}",
                self.dir.path().display(),
                tail(&self.error_log(), 30)
            );
        }
        if std::env::var_os("M2WSGI_KEEP_HARNESS").is_some() {
            eprintln!("M2WSGI_KEEP_HARNESS: keeping {}", self.dir.path().display());
        }
        // self.dir is dropped after this and removes the directory (unless kept).
    }
}

/// TCP ports on which process `pid` has a listening socket, from `/proc` (None if unreadable).
fn listening_tcp_ports(pid: u32) -> Option<HashSet<u16>> {
    let mut inodes = HashSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                if let Ok(inode) = inode.parse::<u64>() {
                    inodes.insert(inode);
                }
            }
        }
    }
    let mut ports = HashSet::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // 0A = LISTEN
            }
            let inode_ok = f[9].parse::<u64>().is_ok_and(|i| inodes.contains(&i));
            let port = f[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if let (true, Some(port)) = (inode_ok, port) {
                ports.insert(port);
            }
        }
    }
    Some(ports)
}
