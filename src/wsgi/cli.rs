//! The `m2wsgi` command: its options ([`Args`]) and its `main` ([`run`]), kept in the library so
//! that every front door to the command (the `m2wsgi` binary, or a console script of a Python
//! package embedding this crate) parses the same options and runs the same code.
//!
//! The binary's `main` is `m2wsgi::wsgi::cli::main()`; with arguments from elsewhere (or
//! [`Args`], a [`clap::Parser`], and [`run`]):
//!
//! ```no_run
//! let status: std::process::ExitCode =
//!     m2wsgi::wsgi::cli::main_from(["m2wsgi", "hello:app", "tcp://127.0.0.1:9999"]);
//! ```
//!
//! Where Python is the host process (the command as a console script of a Python package, the
//! extension module calling in), [`main_hosted`] runs the same command: the interpreter is
//! the one already running, and `--workers` starts its workers with the command line it is
//! given.

use super::WsgiError;
use crate::{Connection, HandlerSelector};
use clap::builder::{ArgGroup, BoolishValueParser};
use clap::{CommandFactory as _, Parser, ValueEnum};
use std::ffi::OsString;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

const USAGE: &str = "\
m2wsgi [OPTIONS] APP SEND_SPEC [RECV_SPEC]
       m2wsgi [OPTIONS] --config-db FILE SELECTOR APP";

const AFTER_HELP: &str = "\
Examples:
  m2wsgi hello:application tcp://127.0.0.1:9999 --num-threads=4
  m2wsgi --config-db config.sqlite --route /app myproject.wsgi

Python: the embedded interpreter is the one m2wsgi was built with, or $VIRTUAL_ENV/bin/python
when VIRTUAL_ENV is set (its packages are then importable). A virtualenv made for another
Python X.Y than the embedded one is refused at start.

Environment: an option shown with [env: M2WSGI_...] takes its default from that variable
(for --flow-control and --multiprocess: 1, true, yes or on; 0, false, no or off).
Logging: without --log-level, RUST_LOG is honoured (e.g. RUST_LOG=info,m2wsgi::wsgi=debug).";

const DB_HEADING: &str = "Handler from Mongrel2's config database";
const WORKERS_HEADING: &str = "Worker processes (--workers)";

/// The options of the `m2wsgi` command: serve the Python WSGI application APP behind Mongrel2.
///
/// Every option takes its value as `--option value` or `--option=value`; the options marked
/// `env` in `--help` also default from the environment variable `M2WSGI_<OPTION>`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "m2wsgi",
    version,
    about = "Serve the Python WSGI application APP behind Mongrel2.",
    long_about = None,
    override_usage = USAGE,
    after_help = AFTER_HELP,
    group(
        ArgGroup::new("selector")
            .args(["handler_id", "send_ident", "route"])
            .multiple(false)
    )
)]
#[non_exhaustive]
pub struct Args {
    /// The application: pkg.module:attr (attr may be dotted), pkg.module.attr, or pkg.module
    /// (its `application`, else its `app`).
    ///
    /// The working directory and every --pythonpath are put at the front of sys.path.
    #[arg(value_name = "APP", required_unless_present_any = ["python_info", "config"])]
    pub app: Option<String>,

    /// Mongrel2's send_spec: where requests come from, e.g. tcp://127.0.0.1:9999.
    ///
    /// tcp://IDENT@host:port sets the identity; a #bind suffix binds instead of connecting.
    #[arg(
        value_name = "SEND_SPEC",
        required_unless_present_any = ["config_db", "python_info", "config"],
        conflicts_with = "config_db"
    )]
    pub send_spec: Option<String>,

    /// Mongrel2's recv_spec: where replies go. Default: SEND_SPEC's port minus one.
    #[arg(value_name = "RECV_SPEC", conflicts_with = "config_db")]
    pub recv_spec: Option<String>,

    /// Worker threads calling the application.
    ///
    /// Each keeps the GIL only while running Python code.
    #[arg(
        long,
        value_name = "N",
        default_value = "1",
        env = "M2WSGI_NUM_THREADS",
        value_parser = parse_threads
    )]
    pub num_threads: usize,

    /// The handler's identity (Mongrel2's send_ident).
    ///
    /// With --config-db, selects the handler with this send_ident instead.
    #[arg(long, value_name = "UUID")]
    pub send_ident: Option<String>,

    /// Mongrel2's recv_ident, when it is not empty: replies carry it.
    #[arg(long, value_name = "ID")]
    pub recv_ident: Option<String>,

    /// Also take requests from another Mongrel2 server: its handler's SEND_SPEC, and its
    /// RECV_SPEC after a comma (default: the port below). Repeatable.
    ///
    /// Each reply goes back to the server its request came from; the two servers' client ids
    /// never mix. The upload directory, chroot and flow-control options apply to every server.
    /// With --workers, the supervisor runs one device per server and every worker takes
    /// requests from all of them.
    #[arg(long, value_name = "SEND_SPEC[,RECV_SPEC]")]
    pub also: Vec<String>,

    /// Take requests from an m2wsgi-device listening at ENDPOINT instead of from Mongrel2's
    /// send_spec (replies still go to Mongrel2's recv_spec).
    ///
    /// Behind a device, requests go to the process with a free thread, and a process that
    /// drains (SIGTERM) or dies loses no request that another one can answer.
    #[arg(long, value_name = "ENDPOINT", env = "M2WSGI_DEVICE")]
    pub device: Option<String>,

    /// Run a supervisor and N worker processes (each with --num-threads threads), with a
    /// ready-based device between them and Mongrel2: a request goes to a process with a free
    /// thread.
    ///
    /// Workers that die are restarted (with a back-off; a crash loop stops the supervisor).
    /// SIGHUP replaces every worker (new application code) without losing a request: the new
    /// ones serve before the old ones drain. SIGINT/SIGTERM drain all and exit 0.
    #[arg(long, short = 'w', value_name = "N", env = "M2WSGI_WORKERS", value_parser = parse_threads,
          help_heading = WORKERS_HEADING)]
    pub workers: Option<usize>,

    /// With --workers: replace a worker after it was handed N requests (0: never).
    #[arg(long, value_name = "N", default_value = "0", env = "M2WSGI_MAX_REQUESTS",
          help_heading = WORKERS_HEADING)]
    pub max_requests: u64,

    /// With --max-requests: add a random 0..=J to each worker's limit, so that workers are not
    /// all replaced at once.
    #[arg(long, value_name = "J", default_value = "0", env = "M2WSGI_MAX_REQUESTS_JITTER",
          help_heading = WORKERS_HEADING)]
    pub max_requests_jitter: u64,

    /// With --workers: replace a worker whose resident memory passes MIB mebibytes (sampled
    /// every second).
    #[arg(long, value_name = "MIB", env = "M2WSGI_MAX_RSS", help_heading = WORKERS_HEADING)]
    pub max_rss: Option<u64>,

    /// With --workers: replace a worker after it has run S seconds.
    #[arg(long, value_name = "S", env = "M2WSGI_LIFETIME", value_parser = parse_seconds,
          help_heading = WORKERS_HEADING)]
    pub lifetime: Option<Duration>,

    /// With --lifetime: add a random 0..=S seconds to each worker's lifetime.
    #[arg(long, value_name = "S", default_value = "0", env = "M2WSGI_LIFETIME_JITTER",
          value_parser = parse_seconds, help_heading = WORKERS_HEADING)]
    pub lifetime_jitter: Duration,

    /// Development: replace the workers whenever a .py file changes under the working
    /// directory (after --chdir) or a --pythonpath directory. Implies --workers 1 when
    /// --workers is not given.
    #[arg(long, env = "M2WSGI_RELOAD", value_parser = BoolishValueParser::new(),
          help_heading = WORKERS_HEADING)]
    pub reload: bool,

    /// With --workers, started as root: run the worker processes as USER (a name or a number;
    /// its primary group unless --group is given).
    #[arg(long, value_name = "USER", env = "M2WSGI_USER", help_heading = WORKERS_HEADING)]
    pub user: Option<String>,

    /// With --workers, started as root: run the worker processes in GROUP (a name or a number).
    #[arg(long, value_name = "GROUP", env = "M2WSGI_GROUP", help_heading = WORKERS_HEADING)]
    pub group: Option<String>,

    /// Write the process id (the supervisor's, with --workers) to FILE; removed at exit.
    #[arg(long, value_name = "FILE", env = "M2WSGI_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// Read the handler from Mongrel2's config database (what `m2sh load` writes).
    ///
    /// Specs, identities, upload directory, chroot and download.flow_control come from it.
    /// Needs one selector: --handler-id, --send-ident or --route.
    #[arg(long, value_name = "FILE", requires = "selector", help_heading = DB_HEADING)]
    pub config_db: Option<PathBuf>,

    /// With --config-db: the handler's row id.
    #[arg(
        long,
        value_name = "N",
        requires = "config_db",
        conflicts_with = "send_spec",
        help_heading = DB_HEADING
    )]
    pub handler_id: Option<i64>,

    /// With --config-db: the handler a route path leads to (e.g. /app).
    ///
    /// Narrowed with --server-uuid and --host when several servers or hosts have that route.
    #[arg(
        long,
        value_name = "PATH",
        requires = "config_db",
        conflicts_with = "send_spec",
        help_heading = DB_HEADING
    )]
    pub route: Option<String>,

    /// With --route: the server whose route is meant (goes with --host).
    #[arg(
        long,
        value_name = "UUID",
        requires_all = ["route", "host"],
        help_heading = DB_HEADING
    )]
    pub server_uuid: Option<String>,

    /// With --route: the host whose route is meant (goes with --server-uuid).
    #[arg(
        long,
        value_name = "NAME",
        requires_all = ["route", "server_uuid"],
        help_heading = DB_HEADING
    )]
    pub host: Option<String>,

    /// Change to DIR before loading the application.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Put DIR at the front of sys.path (repeatable; in order).
    #[arg(long, value_name = "DIR")]
    pub pythonpath: Vec<PathBuf>,

    /// Log level: error, warn, info (the default), debug, trace or off.
    ///
    /// Logs go to stderr; wsgi.errors output is logged at level error. Without this option,
    /// the RUST_LOG filter applies when it is set.
    #[arg(
        long,
        value_name = "LEVEL",
        env = "M2WSGI_LOG_LEVEL",
        ignore_case = true,
        hide_possible_values = true
    )]
    pub log_level: Option<LogLevel>,

    /// On SIGINT/SIGTERM, stop taking requests and give the ones in flight S seconds to
    /// finish, then exit 0.
    ///
    /// A second signal exits at once.
    #[arg(
        long,
        value_name = "S",
        default_value = "30",
        env = "M2WSGI_SHUTDOWN_TIMEOUT",
        value_parser = parse_seconds
    )]
    pub shutdown_timeout: Duration,

    /// Where Mongrel2's chroot is on this host (default /; from the config database with
    /// --config-db): upload temp files are found there.
    #[arg(long, value_name = "DIR", env = "M2WSGI_MONGREL2_CHROOT")]
    pub mongrel2_chroot: Option<PathBuf>,

    /// The directory of Mongrel2's upload.temp_store, as Mongrel2 sees it (e.g. /tmp for
    /// /tmp/upload.XXXXXX).
    ///
    /// Needed for request bodies above limits.content_length (async uploads); without it they
    /// get 413. Read from the config database with --config-db.
    #[arg(long, value_name = "DIR", env = "M2WSGI_UPLOAD_DIR")]
    pub upload_dir: Option<PathBuf>,

    /// Mongrel2 runs with download.flow_control=1 (recommended for large downloads: memory
    /// stays bounded).
    ///
    /// Read from the config database with --config-db.
    #[arg(long, env = "M2WSGI_FLOW_CONTROL", value_parser = BoolishValueParser::new())]
    pub flow_control: bool,

    /// SCRIPT_NAME for every request (the mount point); the request path loses it in
    /// PATH_INFO.
    ///
    /// Default: the literal prefix of the Mongrel2 route pattern that matched (up to the
    /// first `(`), e.g. /app for route /app or /app/(.*). --script-name '' passes the whole
    /// path.
    #[arg(long, value_name = "PATH")]
    pub script_name: Option<String>,

    /// Declare that other processes serve the same handler (sets wsgi.multiprocess; Mongrel2
    /// spreads requests over all of them).
    #[arg(long, env = "M2WSGI_MULTIPROCESS", value_parser = BoolishValueParser::new())]
    pub multiprocess: bool,

    /// Only `threads` (alias `standard`): N OS threads, the GIL released whenever one waits.
    ///
    /// The eventlet and gevent backends of the Python m2wsgi are not supported: the network
    /// I/O is in Rust and never blocks Python.
    #[arg(long, value_name = "BACKEND", default_value = "threads", value_parser = parse_io)]
    pub io: IoBackend,

    // Access log and metrics.
    /// Write an access log line per request to FILE (`-`: standard output); off by default.
    ///
    /// One line after each response, with the final status and the body bytes sent, written by
    /// the worker threads without the GIL and flushed at least once a second. The file is
    /// opened for appending (relative to --chdir); SIGUSR1 reopens it (for logrotate).
    #[arg(long, value_name = "FILE", env = "M2WSGI_ACCESS_LOG")]
    pub access_log: Option<PathBuf>,

    /// The access log's line format, in gunicorn's syntax: %(atom)s, %% for a percent sign.
    ///
    /// Atoms: h client address, l -, u Basic auth user, t time [01/Dec/2025:14:08:26 +0100],
    /// r request line, m method, U path (decoded), q query, H protocol, s status, B body
    /// bytes, b body bytes or -, f referer, a user agent, T / M / D request time in seconds /
    /// ms / microseconds, L in seconds with 6 decimals, p process id, {name}i request header,
    /// {name}o response header, {name}e environ variable. The default is gunicorn's, the
    /// combined log format: %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s".
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = super::DEFAULT_FORMAT,
        env = "M2WSGI_ACCESS_LOG_FORMAT",
        hide_default_value = true
    )]
    pub access_log_format: String,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101); off by default.
    ///
    /// From a thread of its own: requests by status class, request durations, requests in
    /// flight, busy and idle threads, GIL waits, the queue, uploads, client disconnects,
    /// timeouts. Collecting them costs a few atomic additions per request.
    #[arg(long, value_name = "ADDR", env = "M2WSGI_METRICS")]
    pub metrics: Option<String>,
    /// Answer 504 Gateway Timeout when the application has not finished a request (its call
    /// and the iteration of its response) after S seconds; 0, the default, never does.
    ///
    /// A response whose headers went out already has its connection closed instead. The
    /// thread's Python stack is logged. Python threads cannot be stopped: the thread stays
    /// busy until the application returns (nothing it sends then reaches the client), and
    /// when more than half the threads are stuck an error says to restart the process. Long
    /// downloads count: set S above the longest one.
    #[arg(
        long,
        value_name = "S",
        default_value = "0",
        env = "M2WSGI_TIMEOUT",
        value_parser = parse_seconds
    )]
    pub timeout: Duration,

    /// Answer 413 Payload Too Large to request bodies above BYTES (a number, or with a K, M or
    /// G suffix: KiB, MiB, GiB); 0, like the default, means no limit.
    ///
    /// Checked before the application runs, for every kind of body: inline ones and async
    /// uploads by their Content-Length (the upload's temp file is deleted), streamed uploads
    /// (upload.stream=1) by their Content-Length or, chunked, as soon as they grow past it.
    #[arg(long, value_name = "BYTES", env = "M2WSGI_MAX_BODY", value_parser = parse_bytes)]
    pub max_body: Option<u64>,

    /// Print which Python is embedded (version, prefix, libpython) and exit.
    #[arg(long)]
    pub python_info: bool,

    /// Read options from a TOML file: every option's long name is a key (`num-threads = 4`,
    /// `pythonpath = ["src"]`, `flow-control = true`; the positionals are `app`, `send_spec`,
    /// `recv_spec`).
    ///
    /// The command line wins over M2WSGI_* variables, which win over the file.
    #[arg(long, short = 'c', value_name = "FILE", env = "M2WSGI_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (command line, environment and --config merged) as
    /// TOML, and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Check the configuration and that the application loads, then exit (0 when both hold).
    #[arg(long)]
    pub check_config: bool,
}

/// The `--log-level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Also what the server does: starting, stopping, clients that went away.
    Info,
    /// Also details for debugging.
    Debug,
    /// Everything.
    Trace,
    /// No logging.
    Off,
}

/// `"info"`, `"debug"`, ... (as `--log-level` takes them, any case).
impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <Self as ValueEnum>::from_str(s, true)
    }
}

impl From<LogLevel> for LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Off => LevelFilter::OFF,
        }
    }
}

/// The `--io` values: how requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IoBackend {
    /// `--num-threads` OS threads.
    #[default]
    Threads,
}

fn parse_threads(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| "needs a number >= 1".to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| "needs seconds (>= 0)".to_string())
}

/// A size in bytes: digits, optionally followed by `K`, `M` or `G` (powers of 1024, either
/// case, an optional `iB`/`B` after it).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err("needs bytes: a number, or one with K, M or G (e.g. 10M)".into()),
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| "needs bytes: a number, or one with K, M or G (e.g. 10M)".into())
}

fn parse_io(s: &str) -> Result<IoBackend, String> {
    match s {
        "threads" | "standard" => Ok(IoBackend::Threads),
        "eventlet" | "gevent" => Err(format!(
            "--io={s} is not supported: m2wsgi serves with OS threads (--num-threads); its \
             network I/O runs in Rust and releases the GIL, so green threads would gain nothing"
        )),
        other => Err(format!("unknown --io backend {other:?} (only `threads`)")),
    }
}

/// Why [`run`] stopped early.
enum Stop {
    /// Bad usage found after parsing: printed like clap's errors, exit 2.
    Usage(String),
    /// Something failed: logged, exit 1.
    Fatal(String),
}

fn fatal(msg: impl std::fmt::Display) -> Stop {
    Stop::Fatal(msg.to_string())
}

/// Parses the process's arguments and runs the command: all a `main` needs to do.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Parses `argv` (the program name first) and runs the command. `--help`, `--version` and
/// usage errors are printed as clap prints them (exit status 0, 0 and 2).
pub fn main_from<I, T>(argv: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    ExitCode::from(status_from(argv))
}

/// [`main_from`] in a process where Python is the host (it is initialised already, this
/// thread must not hold the GIL): the command runs in that interpreter, and `--workers`
/// starts each worker as `relaunch` followed by the worker's arguments (for a Python
/// package, `[sys.executable, "-m", "m2wsgi"]`). Returns the exit status.
pub fn main_hosted<I, T>(argv: I, relaunch: Vec<OsString>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let _ = RELAUNCH.set(relaunch);
    status_from(argv)
}

/// How worker processes are started when it is not this program itself ([`main_hosted`]).
static RELAUNCH: std::sync::OnceLock<Vec<OsString>> = std::sync::OnceLock::new();

/// [`main_from`], returning the exit status as a number.
fn status_from<I, T>(argv: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let _ = ARGV.set(argv.clone());
    let clap_exit = |e: clap::Error| {
        let _ = e.print();
        u8::try_from(e.exit_code()).unwrap_or(2)
    };
    let cmd = Args::command();
    let matches = match matches_from(&cmd, &argv) {
        Ok(m) => m,
        Err(ParseFailure::Clap(e)) => return clap_exit(e),
        Err(ParseFailure::Config(e)) => {
            eprintln!("m2wsgi: {e}");
            return 2;
        }
    };
    if matches.get_flag("print_config") {
        print!("{}", config_file::render(&cmd, &matches));
        let _ = std::io::stdout().flush();
        return 0;
    }
    match <Args as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(args) => run_status(args),
        Err(e) => clap_exit(e),
    }
}

/// Why the command line (with its `--config` file) was refused.
enum ParseFailure {
    Clap(clap::Error),
    Config(ConfigFileError),
}

/// Parses `argv`, merging in the `--config` file's options (see [`ConfigFileError`] for the
/// rules).
fn matches_from(cmd: &clap::Command, argv: &[OsString]) -> Result<clap::ArgMatches, ParseFailure> {
    let matches = cmd
        .clone()
        .try_get_matches_from(argv)
        .map_err(ParseFailure::Clap)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok(matches);
    };
    let extra = config_file::arguments(&path, cmd, &matches).map_err(ParseFailure::Config)?;
    let merged: Vec<OsString> = argv.iter().cloned().chain(extra).collect();
    cmd.clone()
        .try_get_matches_from(merged)
        .map_err(ParseFailure::Clap)
}

/// Runs the command: sets up logging, installs the SIGINT/SIGTERM handlers, starts Python,
/// loads the application and serves it until a signal, then runs the application's `atexit`
/// handlers.
///
/// Returns the exit status: 0 after a clean stop (or `--python-info`), 1 when something failed
/// (the reason is logged), 2 for bad usage found after parsing (`--chdir` to a missing
/// directory).
pub fn run(args: Args) -> ExitCode {
    ExitCode::from(run_status(args))
}

/// [`run`], returning the exit status as a number.
fn run_status(args: Args) -> u8 {
    init_logging(args.log_level);
    match serve(&args) {
        Ok(()) => 0,
        Err(Stop::Usage(msg)) => {
            let e = Args::command().error(clap::error::ErrorKind::ValueValidation, msg);
            let _ = e.print();
            2
        }
        Err(Stop::Fatal(msg)) => {
            tracing::error!("{msg}");
            super::flush_stdio();
            1
        }
    }
}

/// Logs to stderr through a `tracing` subscriber that also receives the `log` records of this
/// crate (and of any other library), as the command does: at `level`, or as `RUST_LOG` says
/// (default `info`). Does nothing if a subscriber is installed already.
pub fn init_logging(level: Option<LogLevel>) {
    let filter = match level {
        Some(l) => EnvFilter::default().add_directive(LevelFilter::from(l).into()),
        None => EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .from_env_lossy(),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The handler's sockets and settings, from the options or the config database.
///
/// Returns the main connection and the others, each with what names it in messages: every
/// other server that routes to the handler (`--config-db` with `--send-ident`: one handler row
/// per Mongrel2 server), then each `--also`.
fn connections(
    a: &Args,
) -> Result<
    (
        crate::ConnectionBuilder,
        Vec<(String, crate::ConnectionBuilder)>,
    ),
    Stop,
> {
    let mut more = Vec::new();
    let mut builder = match &a.config_db {
        Some(db) => {
            let selector = match (&a.handler_id, &a.send_ident, &a.route) {
                (Some(id), None, None) => HandlerSelector::Id(*id),
                (None, Some(ident), None) => HandlerSelector::SendIdent(ident.clone()),
                (None, None, Some(path)) => match (&a.server_uuid, &a.host) {
                    (Some(server_uuid), Some(host)) => HandlerSelector::Route {
                        server_uuid: server_uuid.clone(),
                        host: host.clone(),
                        path: path.clone(),
                    },
                    _ => HandlerSelector::RoutePath(path.clone()),
                },
                _ => {
                    return Err(Stop::Usage(
                        "--config-db needs exactly one of --handler-id, --send-ident, --route"
                            .into(),
                    ))
                }
            };
            let mut all = Connection::all_from_config(db, &selector)
                .map_err(fatal)?
                .into_iter();
            let first = all
                .next()
                .ok_or_else(|| fatal(format!("no handler for {selector} in {}", db.display())))?;
            for b in all {
                let (send, _) = b.specs().map_err(fatal)?;
                more.push((
                    format!("{selector} in {} (requests from {send})", db.display()),
                    extra_options(a, b),
                ));
            }
            first
        }
        None => {
            if a.handler_id.is_some() || a.route.is_some() {
                return Err(Stop::Usage(
                    "--handler-id and --route need --config-db".into(),
                ));
            }
            let Some(send) = &a.send_spec else {
                return Err(Stop::Usage("missing SEND_SPEC (or use --config-db)".into()));
            };
            let mut b = Connection::builder(send.clone());
            if let Some(r) = &a.recv_spec {
                b = b.recv_spec(r.clone());
            }
            if let Some(ident) = &a.send_ident {
                b = b.send_ident(ident.clone());
            }
            b
        }
    };
    if let Some(ident) = &a.recv_ident {
        builder = builder.recv_ident(ident.clone());
    }
    if let Some(endpoint) = &a.device {
        builder = builder.device(endpoint.clone());
    }
    for pair in &a.also {
        let (send, recv) = match pair.split_once(',') {
            Some((s, r)) => (s, Some(r)),
            None => (pair.as_str(), None),
        };
        let mut b = extra_options(a, Connection::builder(send));
        if let Some(r) = recv {
            b = b.recv_spec(r);
        }
        more.push((format!("--also {pair}"), b));
    }
    let worker_of_supervisor = super::supervisor::is_worker();
    if a.device.is_some() && !more.is_empty() && !worker_of_supervisor {
        return Err(Stop::Usage(format!(
            "--device with several Mongrel2 servers ({}): a device takes requests from one \
             server; use --workers (one device per server), or no device",
            more[0].0
        )));
    }
    Ok((extra_options(a, builder), more))
}

/// The options every Mongrel2 connection of the command shares (the main one and `--also`).
fn extra_options(a: &Args, mut builder: crate::ConnectionBuilder) -> crate::ConnectionBuilder {
    if let Some(dir) = &a.upload_dir {
        builder = builder.upload_dir(dir.clone());
    }
    if let Some(root) = &a.mongrel2_chroot {
        builder = builder.chroot(root.clone());
    }
    if a.flow_control {
        builder = builder.flow_control(true);
    }
    builder
}

/// The command line the process was started with, for starting worker processes (set by
/// [`main_from`]; [`run`] alone uses the process's own).
static ARGV: std::sync::OnceLock<Vec<OsString>> = std::sync::OnceLock::new();

/// Writes the pid file, and removes it when dropped.
struct PidFile(Option<PathBuf>);

impl PidFile {
    fn write(path: Option<&PathBuf>) -> Result<PidFile, Stop> {
        if let Some(p) = path {
            std::fs::write(p, format!("{}\n", std::process::id()))
                .map_err(|e| fatal(format!("--pid-file {}: {e}", p.display())))?;
        }
        Ok(PidFile(path.cloned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `--workers N`: the supervisor (no Python in this process).
fn run_supervisor(a: &Args, workers: usize) -> Result<(), Stop> {
    let _pid = PidFile::write(a.pid_file.as_ref())?;
    let stop = Arc::new(AtomicBool::new(false));
    crate::install_signal_handlers(&stop)
        .map_err(|e| fatal(format!("cannot install signal handlers: {e}")))?;
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| fatal(format!("cannot install the SIGHUP handler: {e}")))?;
    let usr1 = Arc::new(AtomicBool::new(false));
    if a.access_log.is_some() {
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&usr1))
            .map_err(|e| fatal(format!("cannot install the SIGUSR1 handler: {e}")))?;
    }
    let _watcher = if a.reload {
        let mut dirs = vec![match &a.chdir {
            Some(d) => d.clone(),
            None => {
                std::env::current_dir().map_err(|e| fatal(format!("current directory: {e}")))?
            }
        }];
        dirs.extend(a.pythonpath.iter().cloned());
        Some(super::supervisor::watch_sources(&dirs, Arc::clone(&reload)).map_err(fatal)?)
    } else {
        None
    };
    let (main, more) = connections(a)?;
    let mut servers = vec![main.specs().map_err(fatal)?];
    for (what, b) in more {
        servers.push(b.specs().map_err(|e| fatal(format!("{what}: {e}")))?);
    }
    let argv = ARGV
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().collect());
    // A worker is this program again with the same arguments; where Python is the host, the
    // command that starts it (`python -m m2wsgi`).
    let (program, mut args) = match RELAUNCH.get().and_then(|r| r.split_first()) {
        Some((program, prefix)) => (program.clone(), prefix.to_vec()),
        None => (
            std::env::current_exe()
                .map(OsString::from)
                .map_err(|e| fatal(format!("cannot find this program to start workers: {e}")))?,
            Vec::new(),
        ),
    };
    args.extend(argv.into_iter().skip(1));
    let user = a
        .user
        .as_deref()
        .map(super::supervisor::lookup_user)
        .transpose()
        .map_err(fatal)?;
    let group = a
        .group
        .as_deref()
        .map(super::supervisor::lookup_group)
        .transpose()
        .map_err(fatal)?;
    let cmd = super::supervisor::WorkerCommand {
        program,
        args,
        title: RELAUNCH
            .get()
            .is_none()
            .then(|| a.app.clone().unwrap_or_default()),
        uid: user.map(|(uid, _)| uid),
        gid: group.or(user.map(|(_, gid)| gid)),
    };
    let plan = super::supervisor::Plan {
        workers,
        max_requests: a.max_requests,
        max_requests_jitter: a.max_requests_jitter,
        max_rss_kib: a.max_rss.map(|m| m * 1024),
        lifetime: a.lifetime,
        lifetime_jitter: a.lifetime_jitter,
        shutdown_timeout: a.shutdown_timeout,
        metrics: a.metrics.clone(),
        forward_usr1: a.access_log.is_some(),
    };
    super::supervisor::supervise(&plan, &servers, &cmd, &stop, &reload, &usr1).map_err(fatal)
}

fn serve(a: &Args) -> Result<(), Stop> {
    let worker_of_supervisor = super::supervisor::is_worker();
    let workers = a
        .workers
        .or(a.reload.then_some(1))
        .filter(|_| !a.check_config);
    if let (Some(n), false) = (workers, worker_of_supervisor) {
        if a.device.is_some() {
            return Err(Stop::Usage(
                "--workers runs its own device between Mongrel2 and the workers: drop --device \
                 (or run m2wsgi-device and start the workers yourself)"
                    .into(),
            ));
        }
        return run_supervisor(a, n);
    }
    if !worker_of_supervisor && (a.max_requests > 0 || a.max_rss.is_some() || a.lifetime.is_some())
    {
        tracing::warn!(
            "--max-requests, --max-rss and --lifetime recycle worker processes: they take effect \
             with --workers"
        );
    }
    let _pid = if worker_of_supervisor || a.check_config {
        PidFile(None)
    } else {
        PidFile::write(a.pid_file.as_ref())?
    };
    if let Some(dir) = &a.chdir {
        std::env::set_current_dir(dir)
            .map_err(|e| Stop::Usage(format!("--chdir {}: {e}", dir.display())))?;
    }

    // SIGINT/SIGTERM belong to Rust; install the handlers before Python exists, or its `signal`
    // module would install its own SIGINT handler on first import.
    let stop = Arc::new(AtomicBool::new(false));
    crate::install_signal_handlers(&stop)
        .map_err(|e| fatal(format!("cannot install signal handlers: {e}")))?;
    if worker_of_supervisor {
        super::supervisor::watch_parent(Arc::clone(&stop));
        // A terminal's hangup reaches the whole process group: only the supervisor acts on it.
        let _ = signal_hook::flag::register(
            signal_hook::consts::SIGHUP,
            Arc::new(AtomicBool::new(false)),
        );
    }
    // Before Python too: SIGUSR1, and the time zone read from the environment.
    let observability = if a.python_info {
        None
    } else {
        Some(observability(a)?)
    };
    // Embedded, Python starts here; where Python is the host ([`main_hosted`]), it runs already.
    if RELAUNCH.get().is_none() || !super::is_initialized() {
        super::initialize(None).map_err(fatal)?;
    }
    if a.python_info {
        print!("{}", super::python_info());
        let _ = std::io::stdout().flush();
        return Ok(());
    }
    let Some(app_name) = &a.app else {
        return Err(Stop::Usage("missing APP (and SEND_SPEC)".into()));
    };
    let (builder, more) = connections(a)?;

    let cwd = std::env::current_dir().map_err(|e| fatal(format!("current directory: {e}")))?;
    let mut sys_path = a.pythonpath.clone();
    sys_path.push(cwd);
    let app = super::load_app(app_name, &sys_path).map_err(|e| match e {
        e @ WsgiError::ImportFailed { .. } => fatal(format!(
            "cannot load the application: its module was found, but {e}"
        )),
        e => fatal(format!("cannot load the application: {e}")),
    })?;
    if a.check_config {
        let (send, recv) = builder.specs().map_err(fatal)?;
        let mut also = String::new();
        for (what, b) in &more {
            let (s, r) = b.specs().map_err(|e| fatal(format!("{what}: {e}")))?;
            also.push_str(&format!("; also from {s}, replying to {r}"));
        }
        println!(
            "m2wsgi: the configuration is valid and {app_name} loads; it would take requests \
             from {send} and reply to {recv}{also}"
        );
        let _ = std::io::stdout().flush();
        return Ok(());
    }

    // A worker of a supervisor takes each server's requests from that server's device.
    let devices = std::env::var(super::supervisor::ALSO_DEVICES_ENV).unwrap_or_default();
    let mut devices = devices.split(',').filter(|d| !d.is_empty());
    let more = more
        .into_iter()
        .map(|(what, mut b)| {
            if worker_of_supervisor {
                let device = devices.next().ok_or_else(|| {
                    fatal(format!("{what}: the supervisor named no device for it"))
                })?;
                b = b.device(device);
            }
            b.connect().map_err(|e| fatal(format!("{what}: {e}")))
        })
        .collect::<Result<Vec<_>, Stop>>()?;
    let conn = builder.connect().map_err(fatal)?;
    tracing::info!(
        "serving {app_name} (pid {}): requests from {}, replies to {}, {} thread(s)",
        std::process::id(),
        conn.send_spec(),
        conn.recv_spec(),
        a.num_threads
    );
    let mut server = super::WsgiServer::new(app)
        .threads(a.num_threads)
        .multiprocess(a.multiprocess)
        .shutdown_timeout(a.shutdown_timeout)
        .stop_flag(Arc::clone(&stop));
    if let Some(s) = &a.script_name {
        server = server.script_name(s.clone());
    }
    for c in more {
        tracing::info!(
            "also serving requests from {}, replies to {}",
            c.send_spec(),
            c.recv_spec()
        );
        server = server.also(c);
    }
    let (access_log, metrics_endpoint) = observability.unwrap_or_default();
    if let Some(log) = access_log {
        server = server.access_log(log);
    }
    server = server.metrics(metrics_endpoint.is_some());
    server = server.timeout(a.timeout);
    if let Some(bytes) = a.max_body.filter(|&n| n > 0) {
        server = server.max_body(bytes);
    }
    let lost = server.lost_threads();
    server
        .serve(conn)
        .map_err(|e| fatal(format!("serving: {e}")))?;
    if lost.total() > 0 {
        tracing::warn!(
            "{} request(s) ran past --timeout; {} thread(s) still stuck at exit",
            lost.total(),
            lost.stuck()
        );
    }
    super::run_exit_handlers();
    tracing::info!("stopped");
    Ok(())
}

mod config_file;
pub use config_file::ConfigFileError;
/// `--access-log` and `--metrics`: the log opened (SIGUSR1 reopening it) and the endpoint bound,
/// so that a bad file, format or address stops the command before the application is loaded.
fn observability(
    a: &Args,
) -> Result<(Option<super::AccessLog>, Option<super::metrics::Listener>), Stop> {
    let log = match &a.access_log {
        None => None,
        Some(target) => {
            let log = super::AccessLog::open(target, &a.access_log_format).map_err(fatal)?;
            log.reopen_on_sigusr1()
                .map_err(|e| fatal(format!("cannot install the SIGUSR1 handler: {e}")))?;
            for atom in log.unknown_atoms() {
                tracing::warn!("access log format: %({atom})s is not a known atom; written as -");
            }
            Some(log)
        }
    };
    let supervised = std::env::var_os(super::supervisor::WORKER_ENV)
        .zip(std::env::var_os(super::supervisor::RUN_DIR_ENV));
    let endpoint = match (&a.metrics, supervised) {
        (None, _) => None,
        // A worker of a supervisor: a private endpoint, its address where the supervisor
        // (which serves ADDR) looks, every sample labelled with the worker's id.
        (Some(_), Some((id, dir))) => {
            let id = id.to_string_lossy().into_owned();
            let label = id.clone();
            let l = super::metrics::Listener::bind("127.0.0.1:0", move || {
                super::metrics::render(&[("worker", label.as_str())])
            })
            .map_err(|e| fatal(format!("metrics endpoint: {e}")))?;
            let file = std::path::Path::new(&dir).join(&id);
            std::fs::write(&file, l.local_addr().to_string())
                .map_err(|e| fatal(format!("{}: {e}", file.display())))?;
            Some(l)
        }
        (Some(addr), None) => {
            let l = super::metrics::Listener::bind(addr.as_str(), || super::metrics::render(&[]))
                .map_err(|e| fatal(format!("--metrics {addr}: {e}")))?;
            tracing::info!("metrics at http://{}/metrics", l.local_addr());
            Some(l)
        }
    };
    Ok((log, endpoint))
}

#[cfg(test)]
mod tests;
