//! Async uploads: telling a genuine Mongrel2 temp file from a spoofed header, and owning the file.
//!
//! Mongrel2 forwards client headers verbatim, so a client can send its own
//! `X-Mongrel2-Upload-Start: /etc/passwd`. A file is accepted only when the start message for the
//! connection came first, start equals done, the path is absolute and normal (no `.`/`..`), lies
//! inside the configured upload directory, and is a regular file (not a link) on this host.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where Mongrel2 writes async uploads, so the handler can tell a genuine upload from a client
/// header that merely claims to be one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadPolicy {
    /// The directory of Mongrel2's `upload.temp_store`, as Mongrel2 sees it (inside its chroot),
    /// for example `/tmp`. `None` refuses every async upload with 413.
    pub upload_dir: Option<PathBuf>,
    /// Mongrel2's chroot on this host (`/` when it does not chroot). Paths in messages are
    /// inside it.
    pub chroot: PathBuf,
}

impl UploadPolicy {
    /// Where an upload path Mongrel2 sent is on this host.
    pub fn host_path(&self, reported: &Path) -> PathBuf {
        self.chroot
            .join(reported.strip_prefix("/").unwrap_or(reported))
    }

    /// Says in one line at start whether async uploads can work: the upload directory must
    /// exist on this host under the chroot.
    pub(crate) fn check_at_start(&self) {
        let Some(dir) = &self.upload_dir else {
            return;
        };
        if dir.is_relative() {
            tracing::warn!(
                "upload directory {} is relative: Mongrel2 resolves upload.temp_store inside its \
                 chroot, so give it as Mongrel2 sees it, absolute (for example /tmp)",
                dir.display()
            );
        }
        let host = self.host_path(dir);
        if host.is_dir() {
            tracing::info!(
                "async uploads: Mongrel2's {} is {} on this host",
                dir.display(),
                host.display()
            );
        } else {
            tracing::warn!(
                "async uploads will be refused: Mongrel2's upload directory {} is {} on this \
                 host, which is not a directory; pass Mongrel2's chroot on this host (--chroot, \
                 ConnectionBuilder::chroot; now {}) and the directory of its upload.temp_store \
                 as Mongrel2 sees it (--upload-dir, ConnectionBuilder::upload_dir)",
                dir.display(),
                host.display(),
                self.chroot.display()
            );
        }
    }

    /// A log-ready explanation of a refused upload path: what Mongrel2 sent, what was looked at
    /// here, and what would fix it if it is a genuine upload.
    pub(crate) fn explain(&self, reported: &[u8]) -> String {
        let path = Path::new(std::ffi::OsStr::from_bytes(reported));
        format!(
            "Mongrel2 sent {:?}, looked at {} on this host (upload directory {}, chroot {}); if \
             this is Mongrel2's own temp file, set --upload-dir to the directory of its \
             upload.temp_store as Mongrel2 sees it and --chroot to its chroot on this host",
            String::from_utf8_lossy(reported),
            self.host_path(path).display(),
            self.upload_dir
                .as_deref()
                .map_or_else(|| "none".into(), |d| d.display().to_string()),
            self.chroot.display()
        )
    }
}

/// How long a streamed upload (`upload.stream=1`) may take, so that a client that starts one and
/// stalls, or trickles, cannot hold a worker: a reader waiting for the next slice gives up when
/// no slice came for `idle`, or when the body has fallen behind `min_rate` bytes per second
/// (counted after a `grace` period from its first slice). The client then gets `408 Request
/// Timeout` and the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// The longest wait for one slice. Default 10 s.
    pub idle: std::time::Duration,
    /// The slowest average rate accepted, in bytes per second. Default 16 KiB/s.
    pub min_rate: u64,
    /// How long a body may take before `min_rate` applies. Default 5 s.
    pub grace: std::time::Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            idle: std::time::Duration::from_secs(10),
            min_rate: 16 * 1024,
            grace: std::time::Duration::from_secs(5),
        }
    }
}

impl StreamLimits {
    /// When a body that started at `started`, got its last slice at `last` and has `received`
    /// bytes so far is too slow.
    pub(crate) fn deadline(
        &self,
        started: std::time::Instant,
        last: std::time::Instant,
        received: u64,
    ) -> std::time::Instant {
        let paid =
            std::time::Duration::from_secs_f64(received as f64 / self.min_rate.max(1) as f64);
        (last + self.idle).min(started + self.grace + paid)
    }
}

/// Why an async upload was refused (the client then gets 400, or 413 when uploads are off).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UploadRefusal {
    /// No upload directory is configured, so no upload can be told from a forged header.
    #[error(
        "async uploads are disabled: set the upload directory (upload_dir / --upload-dir) to \
         the directory of Mongrel2's upload.temp_store"
    )]
    Disabled,
    /// A done message came for a connection with no start message before it.
    #[error("upload done without a matching start")]
    NoStart,
    /// The start and done messages name different files (or none).
    #[error("upload start and done paths differ")]
    StartDoneDiffer,
    /// The path is relative or has `.`, `..` or empty segments.
    #[error("upload path is not absolute and normal")]
    NotNormal,
    /// The path is not directly inside the upload directory.
    #[error("upload path is outside the upload directory")]
    OutsideUploadDir,
    /// The path is a directory, a link or something else that is not a regular file.
    #[error("upload path is not a regular file")]
    NotRegularFile,
    /// The file cannot be looked at on this host.
    #[error("upload file unreadable ({0})")]
    Unreadable(std::io::ErrorKind),
}

/// Checks an upload's start and done paths against `policy`; returns the file's path on this host.
///
/// # Errors
/// [`Error::Upload`] with the [`UploadRefusal`]. Nothing on disk is touched.
pub fn check_upload(policy: &UploadPolicy, start: &[u8], done: &[u8]) -> Result<PathBuf> {
    let Some(dir) = &policy.upload_dir else {
        return Err(Error::Upload(UploadRefusal::Disabled));
    };
    if start.is_empty() || start != done {
        return Err(Error::Upload(UploadRefusal::StartDoneDiffer));
    }
    let path = Path::new(std::ffi::OsStr::from_bytes(start));
    // Check the raw bytes: `Path::components` would quietly drop `.` and `//`.
    let normal = start[0] == b'/'
        && start[1..]
            .split(|&b| b == b'/')
            .all(|seg| !seg.is_empty() && seg != b"." && seg != b"..");
    if !normal {
        return Err(Error::Upload(UploadRefusal::NotNormal));
    }
    let parent_ok = path.parent() == Some(dir.as_path());
    if !parent_ok {
        return Err(Error::Upload(UploadRefusal::OutsideUploadDir));
    }
    let rel = path.strip_prefix("/").unwrap_or(path);
    let host = policy.chroot.join(rel);
    match std::fs::symlink_metadata(&host) {
        Ok(m) if m.file_type().is_file() => Ok(host),
        Ok(_) => Err(Error::Upload(UploadRefusal::NotRegularFile)),
        Err(e) => Err(Error::Upload(UploadRefusal::Unreadable(e.kind()))),
    }
}

/// A verified upload temp file, deleted when dropped.
#[derive(Debug)]
pub(crate) struct UploadFile {
    path: PathBuf,
}

impl UploadFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub(crate) fn open(&self) -> Result<(File, u64)> {
        let f = File::open(&self.path)?;
        let len = f.metadata()?.len();
        Ok((f, len))
    }
}

impl Drop for UploadFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing upload {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofed_and_odd_paths_are_refused() {
        let root = std::env::temp_dir().join(format!("m2wsgi-upload-{}", std::process::id()));
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/upload.abc123"), b"body").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("tmp/upload.link")).unwrap_or(());
        let policy = UploadPolicy {
            upload_dir: Some("/tmp".into()),
            chroot: root.clone(),
        };
        let ok = b"/tmp/upload.abc123";
        assert_eq!(
            check_upload(&policy, ok, ok).unwrap(),
            root.join("tmp/upload.abc123")
        );
        use UploadRefusal::*;
        let bad: &[(&[u8], &[u8], UploadRefusal)] = &[
            (b"/etc/passwd", b"/etc/passwd", OutsideUploadDir),
            (b"/tmp/../etc/passwd", b"/tmp/../etc/passwd", NotNormal),
            (b"/tmp/./upload.abc123", b"/tmp/./upload.abc123", NotNormal),
            (b"tmp/upload.abc123", b"tmp/upload.abc123", NotNormal),
            (b"/tmp/upload.abc123", b"/tmp/upload.other", StartDoneDiffer),
            (
                b"/tmp/upload.missing",
                b"/tmp/upload.missing",
                Unreadable(std::io::ErrorKind::NotFound),
            ),
            (b"/tmp/upload.link", b"/tmp/upload.link", NotRegularFile),
            (b"/tmp", b"/tmp", OutsideUploadDir),
            (b"", b"", StartDoneDiffer),
        ];
        for (s, d, why) in bad {
            match check_upload(&policy, s, d) {
                Err(Error::Upload(got)) => assert_eq!(got, *why, "{}", String::from_utf8_lossy(s)),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(s)),
            }
        }
        let off = UploadPolicy {
            upload_dir: None,
            chroot: root.clone(),
        };
        assert!(matches!(
            check_upload(&off, ok, ok),
            Err(Error::Upload(UploadRefusal::Disabled))
        ));
        assert!(root.join("tmp/upload.abc123").exists(), "nothing touched");
        drop(UploadFile::new(root.join("tmp/upload.abc123")));
        assert!(!root.join("tmp/upload.abc123").exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
