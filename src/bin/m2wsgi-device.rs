//! `m2wsgi-device`: a ready-based dispatcher between one Mongrel2 handler and several worker
//! processes (see [`m2wsgi::Device`]).

use clap::Parser;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A ready-based dispatcher between one Mongrel2 handler and several worker processes.
///
/// It PULLs every request from Mongrel2's send_spec and hands each new client connection to the
/// worker with a free thread that was served least recently; the connection then stays with that
/// worker. Workers connect with `ConnectionBuilder::device(WORKER_ENDPOINT)` (`m2wsgi --device
/// WORKER_ENDPOINT`, the examples' `--device WORKER_ENDPOINT`) and reply to Mongrel2's recv_spec
/// themselves. A worker that drains (SIGTERM) leaves without losing a request; when one dies,
/// the device asks Mongrel2 to close the client connections it held. When its link to Mongrel2
/// breaks (Mongrel2 restarted), it drops what it queued and tells the workers. SIGINT/SIGTERM
/// stop it.
///
/// Example: m2wsgi-device tcp://127.0.0.1:9999 tcp://127.0.0.1:9997
#[derive(Parser, Debug)]
#[command(name = "m2wsgi-device", version)]
struct Args {
    /// Mongrel2's send_spec, e.g. tcp://127.0.0.1:9999 (the device connects a PULL socket).
    #[arg(value_name = "SEND_SPEC")]
    send_spec: String,
    /// Where workers connect, e.g. tcp://127.0.0.1:9997 (the device binds a ROUTER socket).
    #[arg(value_name = "WORKER_ENDPOINT")]
    workers: String,
    /// Mongrel2's recv_spec, where the device sends the closes for a dead worker's clients
    /// (default: the port below SEND_SPEC's, as for handlers).
    #[arg(long, value_name = "RECV_SPEC")]
    recv_spec: Option<String>,
    /// Log level: error, warn, info or debug (RUST_LOG, when set, wins).
    #[arg(long, value_name = "LEVEL", env = "M2WSGI_LOG", default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = m2wsgi::install_signal_handlers(&stop) {
        eprintln!("m2wsgi-device: {e}");
        return ExitCode::FAILURE;
    }
    let bound = match &args.recv_spec {
        Some(recv) => m2wsgi::Device::bind_with_reply(&args.send_spec, recv, &args.workers),
        None => m2wsgi::Device::bind(&args.send_spec, &args.workers),
    };
    let device = match bound {
        Ok(d) => d,
        Err(e) => {
            eprintln!("m2wsgi-device: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "workers connect to {}; requests from {}",
        device.endpoint(),
        args.send_spec
    );
    match device.run(&stop) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("m2wsgi-device: {e}");
            ExitCode::FAILURE
        }
    }
}
