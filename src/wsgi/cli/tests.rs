//! Parsing the `m2wsgi` options: values, defaults, and the usage errors.

use super::*;
use clap::error::ErrorKind;
use clap::FromArgMatches as _;

fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("m2wsgi").chain(args.iter().copied()))
}

#[test]
fn definition_is_consistent() {
    Args::command().debug_assert();
}

#[test]
fn options_and_positionals() {
    let o = parse(&[
        "--num-threads=5",
        "app:application",
        "tcp://127.0.0.1:9999",
        "--pythonpath",
        "a",
        "--pythonpath=b",
        "--script-name",
        "",
        "--io=threads",
        "--shutdown-timeout=2.5",
    ])
    .unwrap();
    assert_eq!(o.num_threads, 5);
    assert_eq!(o.app.as_deref(), Some("app:application"));
    assert_eq!(o.send_spec.as_deref(), Some("tcp://127.0.0.1:9999"));
    assert_eq!(o.recv_spec, None);
    assert_eq!(o.pythonpath, [PathBuf::from("a"), PathBuf::from("b")]);
    assert_eq!(o.script_name.as_deref(), Some(""));
    assert_eq!(o.shutdown_timeout, Duration::from_millis(2500));
    assert_eq!(o.io, IoBackend::Threads);
}

#[test]
fn defaults() {
    let o = parse(&["app", "tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"]).unwrap();
    assert_eq!(o.num_threads, 1);
    assert_eq!(o.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(o.recv_spec.as_deref(), Some("tcp://127.0.0.1:9998"));
    assert_eq!(o.log_level, None);
    assert!(!o.flow_control && !o.multiprocess && !o.python_info);
    let o = parse(&["--python-info"]).unwrap();
    assert!(o.python_info && o.app.is_none());
    let o = parse(&["--log-level", "DEBUG", "--python-info"]).unwrap();
    assert_eq!(o.log_level, Some(LogLevel::Debug));
}

#[test]
fn config_db_and_its_selectors() {
    let o = parse(&["--config-db", "m2.sqlite", "--route=/app", "probe"]).unwrap();
    assert_eq!(o.route.as_deref(), Some("/app"));
    assert_eq!(o.app.as_deref(), Some("probe"));
    let o = parse(&["--config-db=m2.sqlite", "--send-ident", "u", "probe"]).unwrap();
    assert_eq!(o.send_ident.as_deref(), Some("u"));
    let o = parse(&[
        "--config-db=m2.sqlite",
        "--route=/",
        "--server-uuid=s",
        "--host=localhost",
        "probe",
    ])
    .unwrap();
    assert_eq!(o.host.as_deref(), Some("localhost"));
}

#[test]
fn bad_usage_is_a_usage_error() {
    for (args, kind) in [
        (
            &["--num-threads=0", "a", "tcp://x:1"][..],
            ErrorKind::ValueValidation,
        ),
        (
            &["--num-threads=many", "a", "tcp://x:1"],
            ErrorKind::ValueValidation,
        ),
        (
            &["--shutdown-timeout=-1", "a", "tcp://x:1"],
            ErrorKind::ValueValidation,
        ),
        (
            &["--log-level=loud", "a", "tcp://x:1"],
            ErrorKind::InvalidValue,
        ),
        (
            &["--io=gevent", "a", "tcp://x:1"],
            ErrorKind::ValueValidation,
        ),
        (
            &["--io=fibers", "a", "tcp://x:1"],
            ErrorKind::ValueValidation,
        ),
        (
            &["--flow-control=yes", "a", "tcp://x:1"],
            ErrorKind::TooManyValues,
        ),
        (
            &["--no-such-option", "a", "tcp://x:1"],
            ErrorKind::UnknownArgument,
        ),
        (
            &["a", "tcp://x:1", "tcp://x:2", "extra"],
            ErrorKind::UnknownArgument,
        ),
        (&[], ErrorKind::MissingRequiredArgument),
        (&["a"], ErrorKind::MissingRequiredArgument),
        (
            &["--config-db=m2.sqlite", "a"],
            ErrorKind::MissingRequiredArgument,
        ),
        (
            &["--handler-id=1", "a", "tcp://x:1"],
            ErrorKind::ArgumentConflict,
        ),
        (
            &["--route=/", "a", "tcp://x:1"],
            ErrorKind::ArgumentConflict,
        ),
        (&["--handler-id=1", "a"], ErrorKind::MissingRequiredArgument),
        (
            &["--config-db=m2.sqlite", "--handler-id=1", "--route=/", "a"],
            ErrorKind::ArgumentConflict,
        ),
        (
            &["--config-db=m2.sqlite", "--handler-id=1", "a", "tcp://x:1"],
            ErrorKind::ArgumentConflict,
        ),
        (
            &["--config-db=m2.sqlite", "--route=/", "--host=h", "a"],
            ErrorKind::MissingRequiredArgument,
        ),
    ] {
        let e = parse(args).expect_err(&format!("{args:?} parsed"));
        assert_eq!(e.kind(), kind, "{args:?}: {e}");
        assert_eq!(e.exit_code(), 2, "{args:?}");
    }
    let e = parse(&["--io=gevent", "a", "tcp://x:1"]).unwrap_err();
    assert!(
        e.to_string().contains("--io=gevent is not supported"),
        "{e}"
    );
}

#[test]
fn help_and_version_exit_zero() {
    for flag in ["--help", "-h", "--version", "-V"] {
        let e = parse(&[flag]).unwrap_err();
        assert_eq!(e.exit_code(), 0, "{flag}");
    }
}

#[test]
fn flags_are_flags() {
    let o = parse(&["--flow-control", "--multiprocess", "a", "tcp://x:1"]).unwrap();
    assert!(o.flow_control && o.multiprocess);
}

#[test]
fn environment_defaults() {
    let cmd = Args::command();
    let env = |id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
    };
    for (id, var) in [
        ("num_threads", "M2WSGI_NUM_THREADS"),
        ("log_level", "M2WSGI_LOG_LEVEL"),
        ("shutdown_timeout", "M2WSGI_SHUTDOWN_TIMEOUT"),
        ("mongrel2_chroot", "M2WSGI_MONGREL2_CHROOT"),
        ("upload_dir", "M2WSGI_UPLOAD_DIR"),
        ("flow_control", "M2WSGI_FLOW_CONTROL"),
        ("multiprocess", "M2WSGI_MULTIPROCESS"),
    ] {
        assert_eq!(env(id).as_deref(), Some(var), "{id}");
    }
}

/// Parses with a `--config` file holding `toml`.
fn parse_with_file(toml: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Args, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m2wsgi.toml");
    std::fs::write(&path, toml).unwrap();
    let mut argv: Vec<OsString> = vec!["m2wsgi".into(), "--config".into(), path.clone().into()];
    argv.extend(args.iter().map(OsString::from));
    // clap reads the environment when the command is built: set, build, parse, restore.
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let cmd = Args::command();
    let got = matches_from(&cmd, &argv);
    for (k, _) in env {
        std::env::remove_var(k);
    }
    match got {
        Ok(m) => Args::from_arg_matches(&m).map_err(|e| e.to_string()),
        Err(ParseFailure::Clap(e)) => Err(e.to_string()),
        Err(ParseFailure::Config(e)) => Err(e.to_string()),
    }
}

#[test]
fn config_file_options_positionals_and_precedence() {
    let file = r#"
app = "myproject.wsgi:application"
send_spec = "tcp://127.0.0.1:9999"
num-threads = 4
pythonpath = ["src", "lib"]
flow_control = true
shutdown-timeout = 2.5
max-requests = 100
"#;
    let a = parse_with_file(file, &[], &[]).unwrap();
    assert_eq!(a.app.as_deref(), Some("myproject.wsgi:application"));
    assert_eq!(a.send_spec.as_deref(), Some("tcp://127.0.0.1:9999"));
    assert_eq!(a.num_threads, 4);
    assert_eq!(a.pythonpath, [PathBuf::from("src"), PathBuf::from("lib")]);
    assert!(a.flow_control);
    assert_eq!(a.shutdown_timeout, Duration::from_millis(2500));
    assert_eq!(a.max_requests, 100);
    // The command line wins over the file, positionals included.
    let a = parse_with_file(file, &["other:app", "--num-threads=2"], &[]).unwrap();
    assert_eq!(a.app.as_deref(), Some("other:app"));
    assert_eq!(a.send_spec.as_deref(), Some("tcp://127.0.0.1:9999"));
    assert_eq!(a.num_threads, 2);
    // The environment wins over the file. (A variable no other test looks at: tests run in
    // parallel, and clap reads the environment whenever a command is built.)
    let a = parse_with_file(
        "app = \"a\"\nsend_spec = \"tcp://127.0.0.1:1\"\nlifetime-jitter = 7\n",
        &[],
        &[("M2WSGI_LIFETIME_JITTER", "3")],
    )
    .unwrap();
    assert_eq!(a.lifetime_jitter, Duration::from_secs(3));
}

#[test]
fn config_file_errors_name_the_key() {
    let e = parse_with_file("num_thread = 4\n", &[], &[]).unwrap_err();
    assert!(e.contains("unknown key \"num_thread\""), "{e}");
    let e = parse_with_file("num-threads = [1, 2]\n", &[], &[]).unwrap_err();
    assert!(e.contains("takes one value"), "{e}");
    let e = parse_with_file("flow-control = \"yes\"\n", &[], &[]).unwrap_err();
    assert!(e.contains("is a flag"), "{e}");
    let e = parse_with_file("num-threads = \n", &[], &[]).unwrap_err();
    assert!(e.contains("not valid TOML"), "{e}");
    let e = parse_with_file(
        "num-threads = 0\napp = \"a\"\nsend_spec = \"tcp://127.0.0.1:1\"\n",
        &[],
        &[],
    )
    .unwrap_err();
    assert!(e.contains("needs a number >= 1"), "{e}");
}

#[test]
fn print_config_renders_what_parses_back() {
    let cmd = Args::command();
    let argv: Vec<OsString> = [
        "m2wsgi",
        "app:x",
        "tcp://127.0.0.1:9999",
        "--num-threads=3",
        "--pythonpath=a",
        "--flow-control",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let Ok(m) = matches_from(&cmd, &argv) else {
        panic!("parse failed")
    };
    let text = config_file::render(&cmd, &m);
    assert!(text.contains("num_threads = \"3\"\n"), "{text}");
    assert!(text.contains("pythonpath = [\"a\"]\n"), "{text}");
    assert!(text.contains("flow_control = true\n"), "{text}");
    assert!(text.contains("app = \"app:x\"\n"), "{text}");
    // The rendered file parses back to the same options.
    let a = parse_with_file(&text, &[], &[]).unwrap();
    assert_eq!(a.num_threads, 3);
    assert_eq!(a.app.as_deref(), Some("app:x"));
    assert!(a.flow_control);
}

#[test]
fn access_log_and_metrics_options() {
    let o = parse(&["a", "tcp://x:1"]).unwrap();
    assert_eq!(o.access_log, None);
    assert_eq!(o.access_log_format, crate::wsgi::DEFAULT_FORMAT);
    assert_eq!(o.metrics, None);
    let o = parse(&[
        "--access-log=-",
        "--access-log-format",
        "%(h)s %(s)s",
        "--metrics=127.0.0.1:9101",
        "a",
        "tcp://x:1",
    ])
    .unwrap();
    assert_eq!(o.access_log, Some(PathBuf::from("-")));
    assert_eq!(o.access_log_format, "%(h)s %(s)s");
    assert_eq!(o.metrics.as_deref(), Some("127.0.0.1:9101"));
    let cmd = Args::command();
    for (id, var) in [
        ("access_log", "M2WSGI_ACCESS_LOG"),
        ("access_log_format", "M2WSGI_ACCESS_LOG_FORMAT"),
        ("metrics", "M2WSGI_METRICS"),
    ] {
        let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(var), "{id}");
    }
}

#[test]
fn timeout_option() {
    let o = parse(&["a", "tcp://x:1"]).unwrap();
    assert_eq!(o.timeout, Duration::ZERO, "off by default");
    let o = parse(&["--timeout=2.5", "a", "tcp://x:1"]).unwrap();
    assert_eq!(o.timeout, Duration::from_millis(2500));
    let e = parse(&["--timeout=-1", "a", "tcp://x:1"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueValidation, "{e}");
    assert_eq!(env_var("timeout").as_deref(), Some("M2WSGI_TIMEOUT"));
}

#[test]
fn max_body_option() {
    let o = parse(&["a", "tcp://x:1"]).unwrap();
    assert_eq!(o.max_body, None, "no limit by default");
    let o = parse(&["--max-body", "10M", "a", "tcp://x:1"]).unwrap();
    assert_eq!(o.max_body, Some(10 << 20));
    for (text, bytes) in [
        ("0", 0),
        ("4096", 4096),
        ("1k", 1024),
        ("2KiB", 2048),
        ("3mb", 3 << 20),
        ("1G", 1 << 30),
    ] {
        assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
    }
    for bad in [
        "",
        "-1",
        "1.5M",
        "10X",
        "M",
        "99999999999999999999",
        "20000000000G",
    ] {
        assert!(parse_bytes(bad).is_err(), "{bad:?}");
    }
    let e = parse(&["--max-body=lots", "a", "tcp://x:1"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueValidation, "{e}");
    assert_eq!(env_var("max_body").as_deref(), Some("M2WSGI_MAX_BODY"));
}

/// The environment variable option `id` defaults from.
fn env_var(id: &str) -> Option<String> {
    Args::command()
        .get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
}
