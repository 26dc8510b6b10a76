//! Starting a handler from Mongrel2's config database: no specs on the command line, just the
//! sqlite file `m2sh load` wrote and which handler to be. [`Connection::from_config`] fills in
//! the send and receive specs and idents, the upload directory (from `upload.temp_store`), the
//! chroot and `download.flow_control`.
//!
//! Answers `Hello, world!` to requests, and `size=N` to uploads (read from the temp file).
//!
//! Use the config database of any of the other examples, for instance `hello`'s:
//!
//! ```text
//! cargo run --release --example config_db -- config.sqlite --route /hello
//! cargo run --release --example config_db -- config.sqlite --send-ident 54c6755b-9628-40a4-9a2d-cc82a816345e
//! ```
//!
//! A relative chroot in the database (`./`) is taken relative to the database's directory;
//! `--chroot DIR` overrides it (say `/` when Mongrel2 does not run as root, so does not chroot).

mod support;

use clap::Parser;
use http::{HeaderMap, StatusCode};
use m2wsgi::{Connection, HandlerSelector, MessageKind, Server};
use std::io::Read;
use std::path::PathBuf;

/// A handler started from Mongrel2's config database: name the handler, the rest is read
/// from the file.
#[derive(Parser, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["route", "send_ident", "id"])))]
struct Args {
    /// Mongrel2's config database (what `m2sh load` writes).
    #[arg(value_name = "CONFIG.sqlite")]
    db: PathBuf,
    /// The handler behind this route path.
    #[arg(long, value_name = "PATH")]
    route: Option<String>,
    /// The handler with this send_ident.
    #[arg(long, value_name = "UUID")]
    send_ident: Option<String>,
    /// The handler with this id.
    #[arg(long, value_name = "N")]
    id: Option<i64>,
    /// Mongrel2's chroot on this host, overriding the database's (say / when Mongrel2 does not
    /// run as root, so does not chroot).
    #[arg(long, value_name = "DIR")]
    chroot: Option<PathBuf>,
    /// Worker threads.
    #[arg(long, value_name = "N", default_value_t = 2)]
    workers: usize,
}

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = Args::parse();
    let selector = match (&args.route, &args.send_ident, args.id) {
        (Some(path), _, _) => HandlerSelector::RoutePath(path.clone()),
        (_, Some(ident), _) => HandlerSelector::SendIdent(ident.clone()),
        (_, _, Some(id)) => HandlerSelector::Id(id),
        _ => unreachable!("clap requires one of --route, --send-ident, --id"),
    };
    let mut builder = Connection::from_config(&args.db, &selector)?;
    if let Some(dir) = &args.chroot {
        builder = builder.chroot(dir);
    }
    let conn = builder.connect()?;
    tracing::info!(
        "config_db: {selector}: pulling from {}, replying to {} as {}, uploads {:?}",
        conn.send_spec(),
        conn.recv_spec(),
        String::from_utf8_lossy(conn.sender_id()),
        conn.upload_policy()
    );
    Server::new(conn)
        .workers(args.workers)
        .handle_signals(true)
        .serve(|req| {
            let upload = matches!(req.kind(), MessageKind::UploadDone { .. });
            if !(upload || req.kind() == &MessageKind::Request) {
                return;
            }
            let result = if upload {
                req.body_reader().and_then(|mut body| {
                    let mut n = 0u64;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match body.read(&mut buf)? {
                            0 => break,
                            k => n += k as u64,
                        }
                    }
                    req.reply_http(
                        StatusCode::OK,
                        &HeaderMap::new(),
                        format!("size={n}\n").as_bytes(),
                    )
                })
            } else {
                req.reply_http(StatusCode::OK, &HeaderMap::new(), b"Hello, world!")
            };
            if let Err(e) = result {
                tracing::warn!("config_db: {e}");
            }
        })
}
