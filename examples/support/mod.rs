//! What the examples share: the options every handler takes and a stderr logger. Not an
//! example on its own.
#![allow(dead_code, unreachable_pub)]

use m2wsgi::{Connection, ConnectionBuilder};

/// Where Mongrel2's sockets are, and how this handler attaches to them.
#[derive(clap::Args, Debug)]
pub struct HandlerArgs {
    /// Mongrel2's send_spec: where requests come from (e.g. tcp://127.0.0.1:9999).
    pub send_spec: String,
    /// Mongrel2's recv_spec: where replies go (e.g. tcp://127.0.0.1:9998).
    pub recv_spec: String,
    /// The handler's identity, Mongrel2's send_ident (default: a random UUID).
    #[arg(long, value_name = "UUID")]
    pub send_ident: Option<String>,
    /// Take requests from an m2wsgi-device listening at ENDPOINT instead of from Mongrel2.
    #[arg(long, value_name = "ENDPOINT")]
    pub device: Option<String>,
    /// Worker threads.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

impl HandlerArgs {
    /// A connection builder for these sockets.
    pub fn builder(&self) -> ConnectionBuilder {
        let mut b = Connection::builder(&self.send_spec).recv_spec(&self.recv_spec);
        if let Some(ident) = &self.send_ident {
            b = b.send_ident(ident);
        }
        if let Some(device) = &self.device {
            b = b.device(device);
        }
        b
    }
}

/// Logs to stderr at the level in `M2WSGI_LOG` (`error`, `warn`, `info`, `debug`; default
/// `info`), or as `RUST_LOG` says when it is set.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(
                std::env::var("M2WSGI_LOG").unwrap_or_else(|_| "info".into()),
            )
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The value of `key` in a query string such as `a=1&b=2`.
pub fn query_param<'a>(query: Option<&'a [u8]>, key: &str) -> Option<&'a str> {
    let q = std::str::from_utf8(query?).ok()?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}
