//! `m2wsgi-device`: a ready-based dispatcher between one Mongrel2 handler and several worker
//! processes (see [`m2wsgi::Device`]).
//!
//! ```text
//! m2wsgi-device SEND_SPEC WORKER_ENDPOINT
//! m2wsgi-device tcp://127.0.0.1:9999 tcp://127.0.0.1:9997
//! ```
//!
//! It PULLs every request from Mongrel2's `send_spec` and hands each new client connection to
//! the worker with a free thread that was served least recently; workers connect with
//! `ConnectionBuilder::device(WORKER_ENDPOINT)` (the examples: `--device WORKER_ENDPOINT`) and
//! reply to Mongrel2's `recv_spec` themselves. SIGINT/SIGTERM stop it. Log level from
//! `M2WSGI_LOG` (`error`, `warn`, `info`, `debug`; default `info`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const USAGE: &str = "usage: m2wsgi-device SEND_SPEC WORKER_ENDPOINT

  SEND_SPEC        Mongrel2's send_spec, e.g. tcp://127.0.0.1:9999 (the device connects a PULL socket)
  WORKER_ENDPOINT  where workers connect, e.g. tcp://127.0.0.1:9997 (the device binds a ROUTER socket)";

struct Stderr(log::LevelFilter);

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{}] m2wsgi-device: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

fn main() -> ExitCode {
    let level = std::env::var("M2WSGI_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    if log::set_logger(Box::leak(Box::new(Stderr(level)))).is_ok() {
        log::set_max_level(level);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let [send, workers] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = m2wsgi::install_signal_handlers(&stop) {
        eprintln!("m2wsgi-device: {e}");
        return ExitCode::FAILURE;
    }
    let device = match m2wsgi::Device::bind(send, workers) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("m2wsgi-device: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "workers connect to {}; requests from {send}",
        device.endpoint()
    );
    match device.run(&stop) {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("m2wsgi-device: {e}");
            ExitCode::FAILURE
        }
    }
}
