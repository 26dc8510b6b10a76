//! Uploads: reads each request body in 64 KiB pieces, never whole, and answers with its size and
//! CRC-32: `size=N crc32=XXXXXXXX`.
//!
//! Bodies above Mongrel2's `limits.content_length` arrive one of two ways, and the same code
//! reads both through [`Request::body_reader`](m2wsgi::Request::body_reader):
//! - async upload (`upload.temp_store` set): Mongrel2 writes the body to a temp file and says
//!   so when done; the handler reads the file in place and it is deleted after the answer. A
//!   temp-file header that a client forged gets 400 and nothing on disk is touched.
//! - streamed upload (`upload.stream=1`): the body arrives in slices, each one asked for with
//!   upload credits.
//!
//! Mongrel2 config: as for `hello`, with the route `'/upload': handler` and
//!
//! ```text
//! settings = {'server.daemonize': 0, 'limits.content_length': 4096,
//!             'upload.temp_store': '/tmp/upload.XXXXXX'}
//! ```
//!
//! `--upload-dir` is the directory of `upload.temp_store` as Mongrel2 sees it (`/tmp`), and
//! `--chroot` is Mongrel2's chroot on this host (the directory it was started in when it runs as
//! root with `chroot='./'`). Without `--upload-dir`, async uploads are refused with 413.
//!
//! ```text
//! cargo run --release --example upload -- tcp://127.0.0.1:9999 tcp://127.0.0.1:9998 \
//!     --upload-dir /tmp --chroot /srv/mongrel2
//! curl --data-binary @big.iso http://127.0.0.1:6767/upload
//! ```

mod support;

use clap::Parser;
use http::{HeaderMap, StatusCode};
use m2wsgi::{MessageKind, Request, Server};
use std::io::Read;
use std::path::PathBuf;

/// Uploads behind Mongrel2: reads request bodies however they arrive and reports their size
/// and CRC-32.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    handler: support::HandlerArgs,
    /// The directory of Mongrel2's upload.temp_store, as Mongrel2 sees it (inside its chroot).
    /// Without it, async uploads are refused with 413.
    #[arg(long, value_name = "DIR")]
    upload_dir: Option<PathBuf>,
    /// Mongrel2's chroot on this host (default /).
    #[arg(long, value_name = "DIR")]
    chroot: Option<PathBuf>,
    /// A streamed upload that sends nothing for this long gets 408 (default 10000).
    #[arg(long, value_name = "MS")]
    stream_idle_ms: Option<u64>,
    /// The most streamed uploads read at once; more get 503 (default: half the workers).
    #[arg(long, value_name = "N")]
    max_streamed_uploads: Option<usize>,
}

fn main() -> m2wsgi::Result<()> {
    support::init_logging();
    let args = Args::parse();
    let mut builder = args.handler.builder();
    if let Some(dir) = &args.upload_dir {
        builder = builder.upload_dir(dir);
    }
    if let Some(dir) = &args.chroot {
        builder = builder.chroot(dir);
    }
    if let Some(ms) = args.stream_idle_ms {
        builder = builder.stream_limits(m2wsgi::StreamLimits {
            idle: std::time::Duration::from_millis(ms),
            ..Default::default()
        });
    }
    let mut server = Server::new(builder.connect()?);
    if let Some(n) = args.max_streamed_uploads {
        server = server.max_streamed_uploads(n);
    }
    server
        .workers(args.handler.workers.unwrap_or(4))
        .handle_signals(true)
        .serve(|req| {
            if matches!(
                req.kind(),
                MessageKind::Request | MessageKind::UploadDone { .. }
            ) {
                if let Err(e) = answer(req) {
                    tracing::warn!("upload failed: {e}");
                }
            }
        })
}

fn answer(req: Request) -> m2wsgi::Result<()> {
    let mut body = req.body_reader()?;
    tracing::info!(
        "connection {}: reading a body of {:?} bytes",
        req.conn_id(),
        body.len()
    );
    let mut buf = vec![0u8; 64 * 1024];
    let (mut size, mut crc) = (0u64, crc32fast::Hasher::new());
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        crc.update(&buf[..n]);
    }
    tracing::info!("connection {}: {size} bytes", req.conn_id());
    let text = format!("size={size} crc32={:08x}\n", crc.finalize());
    req.reply_http(StatusCode::OK, &HeaderMap::new(), text.as_bytes())
}
