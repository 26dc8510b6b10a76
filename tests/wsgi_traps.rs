//! The four traps of embedding CPython in a Rust binary (docs/wsgi.md), each checked on the
//! real `m2wsgi` command behind a real Mongrel2.

mod support;

use std::time::{Duration, Instant};
use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::Proc;
use support::wsgi::{m2wsgi, repo};

fn mongrel2() -> (Mongrel2, Handler) {
    let h = Handler::tcp("wsgi");
    let m2 = Mongrel2::builder().handler("/", &h).start();
    (m2, h)
}

fn serve(h: &Handler, app: &str, env: &[(&str, Option<&str>)], clear: bool) -> Proc {
    let mut p = m2wsgi(&[app, &h.send_spec, &h.recv_spec], env, clear);
    p.wait_ready();
    p
}

fn body(m2: &Mongrel2, path: &str) -> String {
    let out = curl(&["-f", &m2.url(path)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Trap 1: the binary loads the build interpreter's libpython (rpath), not Debian's.
#[test]
fn trap1_libpython_is_the_build_interpreters() {
    let libdir = std::process::Command::new(env!("M2WSGI_PYTHON"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
        ])
        .output()
        .expect("run the build interpreter");
    let libdir = String::from_utf8_lossy(&libdir.stdout).trim().to_string();
    assert!(!libdir.is_empty());
    // From a plain shell environment (no LD_LIBRARY_PATH, minimal PATH).
    let (st, out, err) =
        m2wsgi(&["--python-info"], &[("PATH", Some("/usr/bin:/bin"))], true).finish();
    assert!(st.success(), "{err}");
    let lib = out
        .lines()
        .find_map(|l| l.strip_prefix("libpython: "))
        .expect("libpython line");
    assert!(
        lib.starts_with(&libdir),
        "libpython {lib} is not under {libdir}"
    );

    // And in a serving process, from /proc/PID/maps.
    let (m2, h) = mongrel2();
    let p = serve(&h, "traps", &[("PATH", Some("/usr/bin:/bin"))], true);
    assert!(body(&m2, "/").contains("prefix="));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid())).unwrap();
    let libs: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains("libpython"))
        .collect();
    assert!(!libs.is_empty());
    assert!(libs.iter().all(|l| l.starts_with(&libdir)), "{libs:?}");
}

/// Trap 2: from a plain shell (PATH=/usr/bin:/bin, where `python3` is Debian's) with
/// VIRTUAL_ENV set, the venv's packages import and sys.prefix is the venv.
#[test]
fn trap2_virtualenv_honoured_from_a_plain_shell() {
    let venv = repo().join(".venv");
    let (m2, h) = mongrel2();
    let _p = serve(&h, "traps", &[("PATH", Some("/usr/bin:/bin"))], true);
    let text = body(&m2, "/");
    assert!(
        text.contains(&format!("prefix={}\n", venv.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "flask={}/lib/python3.11/site-packages/flask",
            venv.display()
        )),
        "{text}"
    );
    drop(_p);
    // Without VIRTUAL_ENV: the build interpreter's prefix, not Debian's /usr (which the PATH
    // lookup would find).
    let prefix = std::process::Command::new(env!("M2WSGI_PYTHON"))
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .unwrap();
    let prefix = String::from_utf8_lossy(&prefix.stdout).trim().to_string();
    assert_ne!(prefix, "/usr");
    let _p = serve(
        &h,
        "traps",
        &[("PATH", Some("/usr/bin:/bin")), ("VIRTUAL_ENV", None)],
        true,
    );
    let text = body(&m2, "/");
    assert!(text.contains(&format!("prefix={prefix}\n")), "{text}");
}

/// Trap 3: SIGINT and SIGTERM are handled by Rust: exit 0 promptly while idle, and after
/// finishing the request in flight.
#[test]
fn trap3_signals_exit_zero_idle_and_in_flight() {
    let (m2, h) = mongrel2();
    for sig in ["INT", "TERM"] {
        let mut p = serve(&h, "traps", &[], false);
        assert!(body(&m2, "/").contains("prefix="));
        let t0 = Instant::now();
        p.signal(sig);
        let st = p.wait_exit(Duration::from_secs(5)).expect("exits");
        assert!(st.success(), "SIG{sig} while idle: {st}\n{}", p.stderr());
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "SIG{sig} idle took {:?}",
            t0.elapsed()
        );
    }
    for sig in ["INT", "TERM"] {
        let mut p = serve(&h, "traps", &[], false);
        let url = m2.url("/sleep");
        let client = std::thread::spawn(move || curl(&["-f", "-s", &url]));
        std::thread::sleep(Duration::from_millis(500)); // the request is in the app now
        let t0 = Instant::now();
        p.signal(sig);
        let out = client.join().unwrap();
        assert!(out.status.success(), "in-flight request cut by SIG{sig}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("prefix="));
        let st = p.wait_exit(Duration::from_secs(5)).expect("exits");
        assert!(st.success(), "SIG{sig} in flight: {st}\n{}", p.stderr());
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
}

/// Trap 4: print() without a newline at import, stdout to a file (fully buffered),
/// PYTHONUNBUFFERED unset: the text is there after a SIGTERM exit, and so is what an `atexit`
/// handler printed.
#[test]
fn trap4_python_stdout_flushed_at_exit() {
    let (m2, h) = mongrel2();
    let mut p = serve(&h, "traps", &[("PYTHONUNBUFFERED", None)], false);
    assert!(body(&m2, "/").contains("prefix="));
    assert_eq!(p.stdout(), "", "stdout is a file: Python buffers it");
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(st.success());
    assert_eq!(p.stdout(), "traps-imported-without-newline;atexit-ran");
}
