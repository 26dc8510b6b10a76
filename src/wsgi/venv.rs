//! Checking, before the interpreter starts, that a virtualenv is for the embedded Python.
//!
//! A virtualenv belongs to one Python major.minor (its packages are in `lib/pythonX.Y/`). When
//! the embedded interpreter is another one, CPython still starts, from the build interpreter's
//! standard library, but finds none of the virtualenv's packages, and the application fails
//! with a `ModuleNotFoundError` that says nothing about versions. [`check_virtualenv`] reads
//! the version the virtualenv was made for and refuses a mismatch with [`VenvError::Mismatch`].

use super::error::{PyVersion, VenvError, VersionSource};
use pyo3::Python;
use std::path::Path;

/// The major.minor at the start of a version: `3.12.1`, `3.12`, `3.12.1.final.0`, `3.13.0rc1`,
/// `3.13t` all give 3.12 or 3.13. `None` when it does not start with `<digits>.<digits>`.
fn parse_version(s: &str) -> Option<PyVersion> {
    let (major, rest) = s.trim().split_once('.')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(PyVersion {
        major: major.parse().ok()?,
        minor: rest[..digits].parse().ok()?,
    })
}

/// The version a `pyvenv.cfg` names: its `version` key (the standard library's `venv` writes
/// `version = 3.12.1`), else its `version_info` (uv writes `version_info = 3.12.1`, virtualenv
/// `version_info = 3.12.1.final.0`). Keys are matched without regard to case or spaces, as
/// CPython reads the file.
fn version_in_pyvenv_cfg(text: &str) -> Option<(PyVersion, VersionSource)> {
    ["version", "version_info"].into_iter().find_map(|wanted| {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            if !key.trim().eq_ignore_ascii_case(wanted) {
                return None;
            }
            Some((
                parse_version(value)?,
                VersionSource::PyvenvCfg {
                    key: wanted.to_string(),
                },
            ))
        })
    })
}

/// Decides whether a virtualenv fits the embedded interpreter: the pure part of
/// [`check_virtualenv`].
///
/// - `pyvenv_cfg`: the text of the virtualenv's `pyvenv.cfg` (`None` when absent or unreadable);
/// - `lib_dirs`: the names of the directories under its `lib/` that hold a `site-packages`
///   (`python3.12`), looked at only when `pyvenv.cfg` names no version;
/// - `embedded` and `embedded_full`: the embedded interpreter's major.minor and its full
///   version (`3.11.7`), for the message.
///
/// Returns the virtualenv's version and where it was read when its major.minor is the embedded
/// one, `Ok(None)` when nothing names a version.
///
/// # Errors
/// [`VenvError::Mismatch`] when the virtualenv is for another major.minor. Of several
/// `lib/pythonX.Y` directories, one for the embedded version is enough; otherwise the highest
/// is named.
pub(crate) fn check_version(
    venv: &Path,
    pyvenv_cfg: Option<&str>,
    lib_dirs: &[String],
    embedded: PyVersion,
    embedded_full: &str,
) -> Result<Option<(PyVersion, VersionSource)>, VenvError> {
    let found = pyvenv_cfg.and_then(version_in_pyvenv_cfg).or_else(|| {
        let mut libs: Vec<(PyVersion, &String)> = lib_dirs
            .iter()
            .filter_map(|name| Some((parse_version(name.strip_prefix("python")?)?, name)))
            .collect();
        libs.sort();
        let pick = libs
            .iter()
            .find(|(v, _)| *v == embedded)
            .or_else(|| libs.last())?;
        Some((
            pick.0,
            VersionSource::LibDir {
                name: pick.1.clone(),
            },
        ))
    });
    match found {
        Some((v, found_in)) if v != embedded => Err(VenvError::Mismatch {
            venv: venv.to_path_buf(),
            venv_python: v,
            found_in,
            embedded,
            embedded_full: embedded_full.to_string(),
        }),
        found => Ok(found),
    }
}

/// Checks that the virtualenv at `venv` is for the embedded interpreter's major.minor
/// ([`Python::version_str`], which needs no initialised interpreter): reads its `pyvenv.cfg`,
/// else the names of its `lib/pythonX.Y/site-packages` directories. A virtualenv that names no
/// version gets a warning and passes.
///
/// # Errors
/// [`VenvError::Mismatch`], whose message names both versions and the two ways out.
pub(crate) fn check_virtualenv(venv: &Path) -> Result<(), VenvError> {
    let version_str = Python::version_str();
    let embedded_full = version_str.split_whitespace().next().unwrap_or(version_str);
    let Some(embedded) = parse_version(embedded_full) else {
        tracing::warn!(
            "cannot read the embedded Python's version from {version_str:?}; the virtualenv {} \
             is not checked",
            venv.display()
        );
        return Ok(());
    };
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok();
    let lib_dirs: Vec<String> = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("site-packages").is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match check_version(venv, cfg.as_deref(), &lib_dirs, embedded, embedded_full)? {
        Some((v, from)) => tracing::debug!(
            "the virtualenv {} is for Python {v} ({from}), as embedded",
            venv.display()
        ),
        None => tracing::warn!(
            "the virtualenv {} names no Python version (no version or version_info in a \
             pyvenv.cfg, no lib/pythonX.Y/site-packages): cannot check that it is for the \
             embedded Python {embedded_full}; going on",
            venv.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY311: PyVersion = PyVersion {
        major: 3,
        minor: 11,
    };
    const PY312: PyVersion = PyVersion {
        major: 3,
        minor: 12,
    };

    fn check(
        cfg: Option<&str>,
        libs: &[&str],
    ) -> Result<Option<(PyVersion, VersionSource)>, VenvError> {
        let libs: Vec<String> = libs.iter().map(|s| s.to_string()).collect();
        check_version(Path::new("/srv/venv"), cfg, &libs, PY311, "3.11.7")
    }

    fn cfg_key(key: &str) -> VersionSource {
        VersionSource::PyvenvCfg { key: key.into() }
    }

    #[test]
    fn versions_parse() {
        for s in ["3.12", "3.12.1", " 3.12.1.final.0 ", "3.12.0rc1", "3.12t"] {
            assert_eq!(parse_version(s), Some(PY312), "{s:?}");
        }
        for s in ["", "3", "3.", ".12", "x3.12", "3.x", "-3.12"] {
            assert_eq!(parse_version(s), None, "{s:?}");
        }
    }

    #[test]
    fn matching_version_passes() {
        let cfg = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.7\n";
        assert_eq!(check(Some(cfg), &[]), Ok(Some((PY311, cfg_key("version")))));
        // A matching pyvenv.cfg wins over a stray lib directory.
        assert_eq!(
            check(Some(cfg), &["python3.12"]),
            Ok(Some((PY311, cfg_key("version"))))
        );
    }

    #[test]
    fn mismatching_version_is_refused_naming_both() {
        let err = check(Some("version = 3.12.1\n"), &["python3.11"]).unwrap_err();
        assert_eq!(
            err,
            VenvError::Mismatch {
                venv: "/srv/venv".into(),
                venv_python: PY312,
                found_in: cfg_key("version"),
                embedded: PY311,
                embedded_full: "3.11.7".into(),
            }
        );
        assert_eq!(
            err.to_string(),
            "the virtualenv /srv/venv is for Python 3.12 (its pyvenv.cfg), but this m2wsgi \
             embeds Python 3.11.7: recreate the venv with python3.11, or rebuild m2wsgi with \
             PYO3_PYTHON pointing at a 3.12 interpreter"
        );
    }

    /// The standard library's `venv` writes `version`.
    #[test]
    fn stdlib_venv_style_version_key() {
        let cfg = "home = /opt/py/bin\nversion = 3.12.1\nexecutable = /opt/py/bin/python3.12\n";
        assert!(matches!(
            check(Some(cfg), &[]),
            Err(VenvError::Mismatch { venv_python: PY312, found_in, .. })
                if found_in == cfg_key("version")
        ));
    }

    /// uv writes `version_info = 3.12.1` (older uv: `3.12`); virtualenv
    /// `version_info = 3.12.1.final.0`. Keys are matched as CPython matches them.
    #[test]
    fn uv_and_virtualenv_style_version_info_key() {
        for cfg in [
            "home = /opt/py/bin\nimplementation = CPython\nuv = 0.5.1\nversion_info = 3.12.1\n",
            "implementation = CPython\nversion_info = 3.12\n",
            "home = /usr/bin\nversion_info = 3.12.1.final.0\nvirtualenv = 20.26.3\n",
            "Version_Info=3.12.1\n",
        ] {
            assert!(
                matches!(
                    check(Some(cfg), &[]),
                    Err(VenvError::Mismatch { venv_python: PY312, ref found_in, .. })
                        if *found_in == cfg_key("version_info")
                ),
                "{cfg:?}"
            );
        }
        assert_eq!(
            check(Some("version_info = 3.11.4\n"), &[]),
            Ok(Some((PY311, cfg_key("version_info"))))
        );
    }

    #[test]
    fn missing_key_falls_back_to_lib_python_dir() {
        let cfg = "home = /opt/py/bin\ninclude-system-site-packages = false\n";
        let err = check(Some(cfg), &["python3.12"]).unwrap_err();
        assert!(
            matches!(&err, VenvError::Mismatch { venv_python: PY312, found_in, .. }
                if *found_in == VersionSource::LibDir { name: "python3.12".into() }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("is for Python 3.12 (its lib/python3.12/site-packages)"),
            "{err}"
        );
        // No pyvenv.cfg at all, or one whose version is unreadable: the same fallback.
        assert_eq!(
            check(None, &["python3.11"]),
            Ok(Some((
                PY311,
                VersionSource::LibDir {
                    name: "python3.11".into()
                }
            )))
        );
        assert!(check(Some("version = unknown\n"), &["python3.12"]).is_err());
        // Of several, one for the embedded version is enough; otherwise the highest is named.
        assert!(check(None, &["python3.10", "python3.11", "python3.12"]).is_ok());
        assert!(matches!(
            check(None, &["python3.13", "python3.12", "pypy3.10"]),
            Err(VenvError::Mismatch {
                venv_python: PyVersion {
                    major: 3,
                    minor: 13
                },
                ..
            })
        ));
    }

    #[test]
    fn nothing_found_passes_without_a_version() {
        assert_eq!(check(None, &[]), Ok(None));
        assert_eq!(check(Some(""), &[]), Ok(None));
        assert_eq!(
            check(
                Some("home = /usr/bin\nversion =\n"),
                &["site-packages", "pythonx"]
            ),
            Ok(None)
        );
    }
}
