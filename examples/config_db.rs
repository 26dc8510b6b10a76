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

use http::{HeaderMap, StatusCode};
use m2wsgi::{Connection, HandlerSelector, MessageKind, Server};
use std::io::Read;

const USAGE: &str = "usage: config_db CONFIG.sqlite (--route PATH | --send-ident UUID | --id N) \
                     [--chroot DIR] [--workers N]";

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = support::Args::parse(USAGE, &[]);
    let db = args.pos(0, "CONFIG.sqlite");
    let selector = if let Some(path) = args.get("route") {
        HandlerSelector::RoutePath(path.to_string())
    } else if let Some(ident) = args.get("send-ident") {
        HandlerSelector::SendIdent(ident.to_string())
    } else if let Some(id) = args.get("id") {
        HandlerSelector::Id(id.parse().unwrap_or(0))
    } else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mut builder = Connection::from_config(db, &selector)?;
    if let Some(dir) = args.get("chroot") {
        builder = builder.chroot(dir);
    }
    let conn = builder.connect()?;
    log::info!(
        "config_db: {selector}: pulling from {}, replying to {} as {}, uploads {:?}",
        conn.send_spec(),
        conn.recv_spec(),
        String::from_utf8_lossy(conn.sender_id()),
        conn.upload_policy()
    );
    Server::new(conn)
        .workers(args.num("workers", 2usize))
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
                log::warn!("config_db: {e}");
            }
        })
}
