//! The access log: one line per request in gunicorn's format, written by the worker threads
//! (in Rust, touching no Python object) into a shared buffer that goes to the file when it fills and at least
//! once a second, and reopened on SIGUSR1 for logrotate.

mod format;

pub(crate) use format::{Clock, Format, Record};
pub use format::{FormatError, DEFAULT_FORMAT};

use jiff::tz::TimeZone;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::Thread;
use std::time::Duration;

/// What is buffered goes out once this much is there...
const FLUSH_AT: usize = 32 * 1024;
/// ...or this long after it was written, whichever comes first.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Why an access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessLogError {
    /// The format string is not valid.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The file cannot be opened for appending.
    #[error("access log {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// An access log: where the lines go and their format. Cheap to clone (the clones share one
/// buffer and file).
///
/// The format is gunicorn's (`--access-logformat`): `%(atom)s` atoms in literal text, `%%` for
/// a percent sign; [`DEFAULT_FORMAT`] is gunicorn's default. The atoms:
///
/// | atom | value |
/// |---|---|
/// | `h` | the client address (Mongrel2's `REMOTE_ADDR`, the environ's `REMOTE_ADDR`) |
/// | `l` | `-` |
/// | `u` | the user name of HTTP Basic authentication, else `-` |
/// | `t` | when the line is written, `[01/Dec/2025:14:08:26 +0100]`, in the local time zone |
/// | `r` | the request line: method, raw target (Mongrel2's `URI`), protocol |
/// | `m` | the method |
/// | `U` | the path, without the query string, percent-decoded |
/// | `q` | the query string (`""` when there is none) |
/// | `H` | the protocol, `HTTP/1.1` |
/// | `s` | the status sent, `-` when none was |
/// | `B` | the body bytes sent (0 for HEAD) |
/// | `b` | the same, `-` when no response was sent |
/// | `f` | the `Referer` header |
/// | `a` | the `User-Agent` header |
/// | `T`, `M`, `D` | the request's time in whole seconds, milliseconds, microseconds |
/// | `L` | the request's time in seconds with six decimals, `0.000153` |
/// | `p` | the process id, `<1234>` |
/// | `{name}i` | the request header `name` |
/// | `{name}o` | the response header `name` |
/// | `{name}e` | the environ variable `name` after the application ran (`{remote_user}e`) |
///
/// Names in braces are case-insensitive, as in gunicorn. An absent header or variable gives
/// `-`, and so does an atom gunicorn does not know (m2wsgi warns about it at start); a repeated
/// header's values are joined with `, `. In values, `"` is written `\"`, `\` as `\\` and
/// control characters as `\xHH`, so a value cannot break its quotes or the line. The request's
/// time runs from a worker thread taking it to the end of its response.
#[derive(Debug, Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) format: Format,
    tz: TimeZone,
    /// `None`: standard output.
    path: Option<PathBuf>,
    buf: Mutex<Vec<u8>>,
    out: Mutex<Out>,
    reopen: Arc<AtomicBool>,
    flusher: Option<Thread>,
}

#[derive(Debug)]
struct Out {
    file: Option<File>,
    /// The buffer being written; swapped with the shared one, so neither is reallocated.
    spare: Vec<u8>,
    /// Whether the last write failed (logged once until one succeeds).
    failing: bool,
}

fn open_append(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl AccessLog {
    /// Opens (for appending, created if missing) the access log `target`, `-` for standard
    /// output, with lines in `format`. The local time zone for `%(t)s` is read now, once.
    ///
    /// Starts a thread that writes what is buffered once a second and reopens the file when
    /// asked ([`reopen_on_sigusr1`](Self::reopen_on_sigusr1), [`reopen`](Self::reopen)).
    ///
    /// # Errors
    /// [`AccessLogError::Format`] for a bad format, [`AccessLogError::Open`] when the file
    /// cannot be opened.
    pub fn open(target: impl AsRef<Path>, format: &str) -> Result<AccessLog, AccessLogError> {
        let format = Format::compile(format)?;
        let target = target.as_ref();
        let path = (target != Path::new("-")).then(|| target.to_path_buf());
        let file = path.as_deref().map(open_append).transpose()?;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            let flusher = std::thread::Builder::new()
                .name("m2wsgi-access-log".into())
                .spawn(move || loop {
                    std::thread::park_timeout(FLUSH_EVERY);
                    match weak.upgrade() {
                        Some(log) => log.flush(),
                        None => return,
                    }
                })
                .map_err(|e| {
                    tracing::warn!("no access log thread ({e}): lines go out in 32 KiB batches")
                })
                .ok()
                .map(|h| h.thread().clone());
            Inner {
                format,
                tz: TimeZone::system(),
                path,
                buf: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
                out: Mutex::new(Out {
                    file,
                    spare: Vec::with_capacity(FLUSH_AT * 2),
                    failing: false,
                }),
                reopen: Arc::new(AtomicBool::new(false)),
                flusher,
            }
        });
        Ok(AccessLog { inner })
    }

    /// The atoms of the format that are not gunicorn's (they are written as `-`).
    pub fn unknown_atoms(&self) -> &[String] {
        self.inner.format.unknown_atoms()
    }

    /// Reopens the file (by its name: a new file after logrotate moved the old one) at the next
    /// write, within a second.
    pub fn reopen(&self) {
        self.inner.reopen.store(true, Ordering::SeqCst);
        if let Some(t) = &self.inner.flusher {
            t.unpark();
        }
    }

    /// Makes SIGUSR1 reopen the file ([`reopen`](Self::reopen)), as gunicorn does. Like the
    /// SIGINT/SIGTERM handlers, install it before starting Python.
    ///
    /// # Errors
    /// When the handler cannot be installed.
    pub fn reopen_on_sigusr1(&self) -> io::Result<()> {
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&self.inner.reopen))
            .map(drop)
    }

    /// Writes out what is buffered now.
    pub fn flush(&self) {
        self.inner.flush();
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Inner {
    /// A clock for `%(t)s` in the log's time zone (one per worker thread).
    pub(crate) fn clock(&self) -> Clock {
        Clock::new(self.tz.clone())
    }

    /// Appends whole lines; they go out when the buffer fills, else within a second.
    pub(crate) fn write(&self, lines: &[u8]) {
        let mut buf = self.buf.lock();
        buf.extend_from_slice(lines);
        if buf.len() >= FLUSH_AT {
            self.write_out(buf);
        }
    }

    fn flush(&self) {
        let buf = self.buf.lock();
        if buf.is_empty() && !self.reopen.load(Ordering::Relaxed) {
            return;
        }
        self.write_out(buf);
    }

    /// Writes the buffer out. The file's lock is taken before the buffer's is released, so
    /// batches go out in order, and the buffer is free again while the write runs.
    fn write_out(&self, mut buf: parking_lot::MutexGuard<'_, Vec<u8>>) {
        let mut out = self.out.lock();
        let out = &mut *out;
        std::mem::swap(&mut *buf, &mut out.spare);
        drop(buf);
        if self.reopen.swap(false, Ordering::SeqCst) {
            if let Some(path) = &self.path {
                match open_append(path) {
                    Ok(f) => {
                        out.file = Some(f);
                        tracing::info!("access log {} reopened", path.display());
                    }
                    Err(e) => tracing::warn!("{e}; still writing to the old file"),
                }
            }
        }
        if out.spare.is_empty() {
            return;
        }
        let written = match &mut out.file {
            Some(f) => f.write_all(&out.spare),
            None => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(&out.spare).and_then(|()| stdout.flush())
            }
        };
        match written {
            Ok(()) => out.failing = false,
            Err(e) => {
                if !out.failing {
                    let to = self
                        .path
                        .as_deref()
                        .map_or_else(|| "standard output".into(), |p| p.display().to_string());
                    tracing::warn!("access log {to}: {e}; lines dropped until writing works again");
                }
                out.failing = true;
            }
        }
        out.spare.clear();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush();
        if let Some(t) = &self.flusher {
            t.unpark();
        }
    }
}

#[cfg(test)]
mod tests;
