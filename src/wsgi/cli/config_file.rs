//! `--config FILE`: the command's options from a TOML file.
//!
//! Every option has a key: its long name, with `-` or `_` (`num-threads = 4`,
//! `num_threads = 4`); the positional arguments are `app`, `send_spec` and `recv_spec`. Values
//! are strings, numbers or booleans (a flag is set by `true`); `pythonpath` takes an array.
//! Precedence: the command line, then `M2WSGI_*` environment variables, then the file, then
//! the defaults. The file's values become command-line arguments for the options the command
//! line and the environment left unset, so they are checked exactly as typed options are.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use std::ffi::OsString;
use std::path::Path;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("--config {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("--config {path}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// A key that is no option of the command.
    #[error("--config {path}: unknown key {key:?} (the keys are the long option names, and app, send_spec, recv_spec)")]
    UnknownKey {
        /// The file.
        path: String,
        /// The key.
        key: String,
    },
    /// A value of a kind the key cannot take (a table, or an array for a single value).
    #[error("--config {path}: key {key:?}: {problem}")]
    BadValue {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// The positional arguments, in order, and their keys.
const POSITIONALS: [&str; 3] = ["app", "send_spec", "recv_spec"];

/// The arguments the file adds to `argv` (the program name first): options the command line
/// and the environment did not set, then positionals it did not give.
///
/// # Errors
/// [`ConfigFileError`] for an unreadable file, bad TOML, an unknown key or a bad value.
pub(super) fn arguments(
    path: &Path,
    cmd: &Command,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, ConfigFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| ConfigFileError::Syntax {
                path: shown.clone(),
                message: e.to_string(),
            })?;
    let mut options = Vec::new();
    let mut positionals: Vec<(usize, OsString)> = Vec::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == id.as_str()) else {
            return Err(ConfigFileError::UnknownKey {
                path: shown,
                key: key.clone(),
            });
        };
        if id == "config" {
            return Err(ConfigFileError::UnknownKey {
                path: shown,
                key: key.clone(),
            });
        }
        let from_user = matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if from_user {
            continue;
        }
        let bad = |problem| ConfigFileError::BadValue {
            path: shown.clone(),
            key: key.clone(),
            problem,
        };
        if let Some(pos) = POSITIONALS.iter().position(|p| *p == id) {
            positionals.push((
                pos,
                scalar(value).ok_or_else(|| bad("needs a string"))?.into(),
            ));
            continue;
        }
        let long = arg.get_long().ok_or_else(|| bad("has no long option"))?;
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(on) if !takes_value => {
                if *on {
                    options.push(OsString::from(format!("--{long}")));
                }
            }
            toml::Value::Array(items) => {
                if !matches!(arg.get_action(), clap::ArgAction::Append) {
                    return Err(bad("takes one value, not an array"));
                }
                for item in items {
                    let v = scalar(item).ok_or_else(|| bad("array items must be plain values"))?;
                    options.push(OsString::from(format!("--{long}={v}")));
                }
            }
            v => {
                let v = scalar(v).ok_or_else(|| bad("needs a plain value"))?;
                if !takes_value {
                    return Err(bad("is a flag: use true or false"));
                }
                options.push(OsString::from(format!("--{long}={v}")));
            }
        }
    }
    // Positionals fill in order, so the file's come after the command line's.
    positionals.sort_by_key(|(pos, _)| *pos);
    let given = POSITIONALS
        .iter()
        .filter(|p| matches.value_source(p) == Some(ValueSource::CommandLine))
        .count();
    for (pos, v) in positionals {
        if pos >= given {
            options.push(v);
        }
    }
    Ok(options)
}

/// A TOML value as an argument string (strings unquoted).
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        _ => None,
    }
}

/// The effective configuration as TOML (`--print-config`): every option that has a value,
/// from wherever it came, by key.
pub(super) fn render(cmd: &Command, matches: &ArgMatches) -> String {
    let mut out = String::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(
            id,
            "config" | "print_config" | "check_config" | "help" | "version"
        ) {
            continue;
        }
        let Some(raw) = matches.get_raw(id) else {
            continue;
        };
        let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let takes_value = arg.get_action().takes_values();
        let line = if !takes_value {
            if matches.get_flag(id) {
                "true".to_string()
            } else {
                continue;
            }
        } else if matches!(arg.get_action(), clap::ArgAction::Append) {
            let items: Vec<String> = values.iter().map(|v| quote(v)).collect();
            format!("[{}]", items.join(", "))
        } else {
            match values.first() {
                Some(v) => quote(v),
                None => continue,
            }
        };
        out.push_str(&format!("{id} = {line}\n"));
    }
    out
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
