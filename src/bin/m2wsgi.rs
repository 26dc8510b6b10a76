//! `m2wsgi`: serve a Python WSGI application behind Mongrel2.
//!
//! ```text
//! m2wsgi [OPTIONS] APP SEND_SPEC [RECV_SPEC]
//! m2wsgi [OPTIONS] --config-db FILE (--handler-id N | --send-ident UUID | --route PATH) APP
//! ```
//!
//! Run `m2wsgi --help` for the options.

use m2wsgi::wsgi::{self, WsgiError, WsgiServer};
use m2wsgi::{Connection, HandlerSelector};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::exit;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const USAGE: &str = "\
Usage: m2wsgi [OPTIONS] APP SEND_SPEC [RECV_SPEC]
       m2wsgi [OPTIONS] --config-db FILE SELECTOR APP

Serve the Python WSGI application APP behind Mongrel2.

Arguments:
  APP        the application: pkg.module:attr (attr may be dotted), pkg.module.attr, or
             pkg.module (its `application`, else its `app`). The working directory and
             every --pythonpath are put at the front of sys.path.
  SEND_SPEC  Mongrel2's send_spec: where requests come from, e.g. tcp://127.0.0.1:9999.
             tcp://IDENT@host:port sets the identity; a #bind suffix binds instead of
             connecting.
  RECV_SPEC  Mongrel2's recv_spec: where replies go. Default: SEND_SPEC's port minus one.

Options:
  --num-threads N        worker threads calling the application (default 1). Each keeps
                         the GIL only while running Python code.
  --send-ident UUID      the handler's identity (Mongrel2's send_ident). With --config-db,
                         selects the handler with this send_ident instead.
  --recv-ident ID        Mongrel2's recv_ident, when it is not empty: replies carry it.
  --config-db FILE       read the handler from Mongrel2's config database (what `m2sh load`
                         writes): specs, identities, upload directory, chroot and
                         download.flow_control. Needs one selector:
  --handler-id N           the handler's row id,
  --send-ident UUID        its send_ident,
  --route PATH             the handler a route path leads to (e.g. /app), narrowed with
  --server-uuid UUID       and --host NAME when several servers or hosts have that route.
  --host NAME
  --chdir DIR            change to DIR before loading the application.
  --pythonpath DIR       put DIR at the front of sys.path (repeatable; in order).
  --log-level LEVEL      error, warn, info (default), debug, trace or off. Logs go to stderr;
                         wsgi.errors output is logged at level error.
  --shutdown-timeout S   on SIGINT/SIGTERM, stop taking requests and give the ones in
                         flight S seconds to finish (default 30), then exit 0. A second signal
                         exits at once.
  --mongrel2-chroot DIR  where Mongrel2's chroot is on this host (default /; from the config
                         database with --config-db): upload temp files are found there.
  --upload-dir DIR       the directory of Mongrel2's upload.temp_store, as Mongrel2 sees it
                         (e.g. /tmp for /tmp/upload.XXXXXX). Needed for request bodies above
                         limits.content_length (async uploads); without it they get 413.
                         Read from the config database with --config-db.
  --flow-control         Mongrel2 runs with download.flow_control=1 (recommended for large
                         downloads: memory stays bounded). Read from the config database.
  --script-name PATH     SCRIPT_NAME for every request (the mount point); the request path
                         loses it in PATH_INFO. Default: the literal prefix of the Mongrel2
                         route pattern that matched (up to the first `(`), e.g. /app for
                         route /app or /app/(.*). --script-name '' passes the whole path.
  --multiprocess         declare that other processes serve the same handler (sets
                         wsgi.multiprocess; Mongrel2 spreads requests over all of them).
  --io BACKEND           only `threads` (alias `standard`): N OS threads, the GIL released
                         whenever one waits. The seed's eventlet/gevent backends are not
                         supported: the network I/O is in Rust and never blocks Python.
  --python-info          print which Python is embedded (version, prefix, libpython) and exit.
  -h, --help             print this help.
  -V, --version          print the version.

Examples:
  m2wsgi hello:application tcp://127.0.0.1:9999 --num-threads=4
  m2wsgi --config-db config.sqlite --route /app myproject.wsgi

Python: the embedded interpreter is the one m2wsgi was built with, or $VIRTUAL_ENV/bin/python
when VIRTUAL_ENV is set (its packages are then importable).
";

#[derive(Debug)]
struct Opts {
    positional: Vec<String>,
    num_threads: usize,
    send_ident: Option<String>,
    recv_ident: Option<String>,
    config_db: Option<PathBuf>,
    handler_id: Option<i64>,
    route: Option<String>,
    server_uuid: Option<String>,
    host: Option<String>,
    chdir: Option<PathBuf>,
    pythonpath: Vec<PathBuf>,
    log_level: log::LevelFilter,
    shutdown_timeout: Duration,
    chroot: Option<PathBuf>,
    upload_dir: Option<PathBuf>,
    flow_control: bool,
    script_name: Option<String>,
    multiprocess: bool,
    python_info: bool,
}

fn usage_error(msg: &str) -> ! {
    eprintln!("m2wsgi: error: {msg}\nTry 'm2wsgi --help'.");
    exit(2)
}

fn parse_args(args: impl Iterator<Item = String>) -> Opts {
    let mut o = Opts {
        positional: Vec::new(),
        num_threads: 1,
        send_ident: None,
        recv_ident: None,
        config_db: None,
        handler_id: None,
        route: None,
        server_uuid: None,
        host: None,
        chdir: None,
        pythonpath: Vec::new(),
        log_level: log::LevelFilter::Info,
        shutdown_timeout: Duration::from_secs(30),
        chroot: None,
        upload_dir: None,
        flow_control: false,
        script_name: None,
        multiprocess: false,
        python_info: false,
    };
    let mut args = args.peekable();
    let mut only_positional = false;
    while let Some(arg) = args.next() {
        if only_positional || !arg.starts_with('-') || arg == "-" {
            o.positional.push(arg);
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> String {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage_error(&format!("{name} needs {what}")))
        };
        match name.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                exit(0)
            }
            "-V" | "--version" => {
                println!("m2wsgi {}", env!("CARGO_PKG_VERSION"));
                exit(0)
            }
            "--num-threads" => {
                o.num_threads = value("a number")
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .unwrap_or_else(|| usage_error("--num-threads needs a number >= 1"))
            }
            "--send-ident" => o.send_ident = Some(value("an identity")),
            "--recv-ident" => o.recv_ident = Some(value("an identity")),
            "--config-db" => o.config_db = Some(value("a file").into()),
            "--handler-id" => {
                o.handler_id = Some(
                    value("a number")
                        .parse()
                        .unwrap_or_else(|_| usage_error("--handler-id needs a number")),
                )
            }
            "--route" => o.route = Some(value("a route path")),
            "--server-uuid" => o.server_uuid = Some(value("a server uuid")),
            "--host" => o.host = Some(value("a host name")),
            "--chdir" => o.chdir = Some(value("a directory").into()),
            "--pythonpath" => o.pythonpath.push(value("a directory").into()),
            "--log-level" => {
                o.log_level = value("a level").parse().unwrap_or_else(|_| {
                    usage_error("--log-level must be error, warn, info, debug, trace or off")
                })
            }
            "--shutdown-timeout" => {
                let v = value("seconds");
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .unwrap_or_else(|| usage_error("--shutdown-timeout needs seconds (>= 0)"));
                o.shutdown_timeout = Duration::from_secs_f64(secs);
            }
            "--mongrel2-chroot" => o.chroot = Some(value("a directory").into()),
            "--upload-dir" => o.upload_dir = Some(value("a directory").into()),
            "--flow-control" => o.flow_control = true,
            "--script-name" => o.script_name = Some(value("a path")),
            "--multiprocess" => o.multiprocess = true,
            "--python-info" => o.python_info = true,
            "--io" => match value("a backend").as_str() {
                "threads" | "standard" => {}
                other @ ("eventlet" | "gevent") => usage_error(&format!(
                    "--io={other} is not supported: m2wsgi serves with OS threads \
                     (--num-threads); its network I/O runs in Rust and releases the GIL, so \
                     green threads would gain nothing"
                )),
                other => usage_error(&format!("unknown --io backend {other:?} (only `threads`)")),
            },
            other => usage_error(&format!("unknown option {other}")),
        }
        if inline.is_some()
            && matches!(
                name.as_str(),
                "--flow-control" | "--multiprocess" | "--python-info"
            )
        {
            usage_error(&format!("{name} takes no value"));
        }
    }
    o
}

// ------------------------------------------------------------------------------------------------
// A small stderr logger.

struct StderrLogger {
    level: log::LevelFilter,
}

fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        now.subsec_millis()
    )
}

impl log::Log for StderrLogger {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} {}: {}\n",
            timestamp(),
            record.level(),
            record.target(),
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn die(msg: impl std::fmt::Display) -> ! {
    log::error!("{msg}");
    wsgi::flush_stdio();
    exit(1)
}

fn main() {
    let o = parse_args(std::env::args().skip(1));
    let logger = Box::leak(Box::new(StderrLogger { level: o.log_level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(o.log_level);
    }

    if let Some(dir) = &o.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            usage_error(&format!("--chdir {}: {e}", dir.display()));
        }
    }

    // SIGINT/SIGTERM belong to Rust; install the handlers before Python exists, or its `signal`
    // module would install its own SIGINT handler on first import.
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = m2wsgi::install_signal_handlers(&stop) {
        die(format!("cannot install signal handlers: {e}"));
    }
    if let Err(e) = wsgi::initialize(None) {
        die(e);
    }
    if o.python_info {
        print!("{}", wsgi::python_info());
        let _ = std::io::stdout().flush();
        exit(0);
    }

    let mut positional = o.positional.iter();
    let Some(app_name) = positional.next() else {
        usage_error("missing APP (and SEND_SPEC)");
    };
    let send_spec = positional.next();
    let recv_spec = positional.next();
    if let Some(extra) = positional.next() {
        usage_error(&format!("unexpected argument {extra:?}"));
    }

    let builder = match &o.config_db {
        Some(db) => {
            let selector = match (&o.handler_id, &o.send_ident, &o.route) {
                (Some(id), None, None) => HandlerSelector::Id(*id),
                (None, Some(ident), None) => HandlerSelector::SendIdent(ident.clone()),
                (None, None, Some(path)) => match (&o.server_uuid, &o.host) {
                    (Some(server_uuid), Some(host)) => HandlerSelector::Route {
                        server_uuid: server_uuid.clone(),
                        host: host.clone(),
                        path: path.clone(),
                    },
                    (None, None) => HandlerSelector::RoutePath(path.clone()),
                    _ => usage_error("--server-uuid and --host go together"),
                },
                _ => usage_error(
                    "--config-db needs exactly one of --handler-id, --send-ident, --route",
                ),
            };
            if send_spec.is_some() {
                usage_error("SEND_SPEC and RECV_SPEC come from the database with --config-db");
            }
            Connection::from_config(db, &selector).unwrap_or_else(|e| die(e))
        }
        None => {
            if o.handler_id.is_some() || o.route.is_some() {
                usage_error("--handler-id and --route need --config-db");
            }
            let Some(send) = send_spec else {
                usage_error("missing SEND_SPEC (or use --config-db)");
            };
            let mut b = Connection::builder(send.clone());
            if let Some(r) = recv_spec {
                b = b.recv_spec(r.clone());
            }
            if let Some(ident) = &o.send_ident {
                b = b.send_ident(ident.clone());
            }
            b
        }
    };
    let mut builder = builder;
    if let Some(ident) = &o.recv_ident {
        builder = builder.recv_ident(ident.clone());
    }
    if let Some(dir) = &o.upload_dir {
        builder = builder.upload_dir(dir.clone());
    }
    if let Some(root) = &o.chroot {
        builder = builder.chroot(root.clone());
    }
    if o.flow_control {
        builder = builder.flow_control(true);
    }

    let cwd = std::env::current_dir().unwrap_or_else(|e| die(format!("current directory: {e}")));
    let mut sys_path = o.pythonpath.clone();
    sys_path.push(cwd);
    let app = match wsgi::load_app(app_name, &sys_path) {
        Ok(app) => app,
        Err(e @ WsgiError::ModuleNotFound { .. }) => {
            die(format!("cannot load the application: {e}"))
        }
        Err(e @ WsgiError::ImportFailed { .. }) => die(format!(
            "cannot load the application: its module was found, but {e}"
        )),
        Err(e) => die(format!("cannot load the application: {e}")),
    };

    let conn = builder.connect().unwrap_or_else(|e| die(e));
    log::info!(
        "serving {app_name} (pid {}): requests from {}, replies to {}, {} thread(s)",
        std::process::id(),
        conn.send_spec(),
        conn.recv_spec(),
        o.num_threads
    );
    let mut server = WsgiServer::new(app)
        .threads(o.num_threads)
        .multiprocess(o.multiprocess)
        .shutdown_timeout(o.shutdown_timeout)
        .stop_flag(Arc::clone(&stop));
    if let Some(s) = &o.script_name {
        server = server.script_name(s.clone());
    }
    if let Err(e) = server.serve(conn) {
        die(format!("serving: {e}"));
    }
    wsgi::run_exit_handlers();
    log::info!("stopped");
    exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Opts {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn options_and_positionals() {
        let o = parse(&[
            "--num-threads=5",
            "app:application",
            "tcp://127.0.0.1:9999",
            "--pythonpath",
            "a",
            "--pythonpath=b",
            "--script-name",
            "",
            "--io=threads",
            "--shutdown-timeout=2.5",
        ]);
        assert_eq!(o.num_threads, 5);
        assert_eq!(o.positional, ["app:application", "tcp://127.0.0.1:9999"]);
        assert_eq!(o.pythonpath, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(o.script_name.as_deref(), Some(""));
        assert_eq!(o.shutdown_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn timestamps_look_right() {
        let t = timestamp();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z'));
    }
}
