//! What the examples share: a stderr logger and a small argument parser, so that they need no
//! dependency beyond the crate itself. Not an example on its own.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::process::exit;
use std::str::FromStr;

/// Command-line arguments: positional ones in order, and `--name value` / `--name=value` flags
/// (`--name` alone is a switch).
pub struct Args {
    usage: &'static str,
    pub positional: Vec<String>,
    flags: HashMap<String, Option<String>>,
}

impl Args {
    /// Parses `std::env::args()`; `--help` prints `usage` and exits. `switches` are the flags
    /// that take no value.
    pub fn parse(usage: &'static str, switches: &[&str]) -> Args {
        let mut positional = Vec::new();
        let mut flags = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                println!("{usage}");
                exit(0);
            }
            if let Some(name) = a.strip_prefix("--") {
                if let Some((k, v)) = name.split_once('=') {
                    flags.insert(k.to_string(), Some(v.to_string()));
                } else if switches.contains(&name) {
                    flags.insert(name.to_string(), None);
                } else {
                    let v = it
                        .next()
                        .unwrap_or_else(|| die(usage, &format!("--{name} needs a value")));
                    flags.insert(name.to_string(), Some(v));
                }
            } else {
                positional.push(a);
            }
        }
        Args {
            usage,
            positional,
            flags,
        }
    }

    /// The `i`-th positional argument, or exit with the usage text.
    pub fn pos(&self, i: usize, what: &str) -> &str {
        self.positional
            .get(i)
            .map(String::as_str)
            .unwrap_or_else(|| die(self.usage, &format!("missing {what}")))
    }

    /// A flag's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags.get(name).and_then(|v| v.as_deref())
    }

    /// Whether a switch was given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }

    /// A flag parsed as a number (or anything `FromStr`), with a default.
    pub fn num<T: FromStr>(&self, name: &str, default: T) -> T {
        match self.get(name) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(self.usage, &format!("--{name}: bad value {v:?}"))),
        }
    }
}

fn die(usage: &str, why: &str) -> ! {
    eprintln!("error: {why}\n\n{usage}");
    exit(2)
}

struct Stderr(log::LevelFilter);

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{}] {}: {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

/// Logs to stderr at the level in `M2WSGI_LOG` (`error`, `warn`, `info`, `debug`; default
/// `info`).
pub fn init_logging() {
    let level = std::env::var("M2WSGI_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    let _ = log::set_logger(Box::leak(Box::new(Stderr(level))));
    log::set_max_level(level);
}

/// The value of `key` in a query string such as `a=1&b=2`.
pub fn query_param<'a>(query: Option<&'a [u8]>, key: &str) -> Option<&'a str> {
    let q = std::str::from_utf8(query?).ok()?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}
