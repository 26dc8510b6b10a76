//! The Python package (pyproject.toml, built by maturin) installed from its wheel into a
//! fresh venv: what only the package has. `scripts/wheel-test.sh` builds the wheels, makes the
//! venvs, and runs this suite and the m2wsgi command's own suites (`wsgi_e2e`, `wsgi_traps`,
//! `wsgi_workers`) against each, with `M2WSGI_TEST_VENV` (the venv) and `M2WSGI_TEST_COMMAND`
//! (its `bin/m2wsgi`) set. Without them every test here fails, saying so.
#![cfg(feature = "wheel")]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::{wait_until, Proc};
use support::wsgi::{command, repo, venv_dir, BIN};

const T: Duration = Duration::from_secs(10);

/// The wheel's venv; panics with the fix when the suite runs without one.
fn venv() -> PathBuf {
    assert!(
        std::env::var_os("M2WSGI_TEST_VENV").is_some()
            && std::env::var_os("M2WSGI_TEST_COMMAND").is_some(),
        "M2WSGI_TEST_VENV and M2WSGI_TEST_COMMAND are not set: run scripts/wheel-test.sh"
    );
    venv_dir()
}

fn output(program: &PathBuf, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_console_script_and_python_m_are_the_binarys_command() {
    let venv = venv();
    let binary = output(&PathBuf::from(BIN), &["--help"]);
    assert!(binary.0, "{}", binary.1);
    let script = output(&command(), &["--help"]);
    assert_eq!(
        script, binary,
        "the console script's --help differs from the binary's"
    );
    let python = venv.join("bin/python");
    let module = output(&python, &["-m", "m2wsgi", "--help"]);
    assert_eq!(
        module, binary,
        "python -m m2wsgi --help differs from the binary's"
    );
    // A usage error: status 2, as the binary's.
    let bad = Command::new(command())
        .arg("--no-such-option")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unexpected argument"));
}

#[test]
fn the_extension_links_no_libpython_and_nothing_outside_manylinux() {
    let venv = venv();
    let so = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .flatten()
        .map(|d| d.path().join("site-packages/m2wsgi"))
        .find(|p| p.is_dir())
        .and_then(|dir| {
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "so"))
        })
        .expect("the extension module in the venv");
    let out = Command::new("ldd").arg(&so).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    // The manylinux allow-list's libraries this extension may use (libzmq is linked in).
    const ALLOWED: &[&str] = &[
        "linux-vdso.so.1",
        "libstdc++.so.6",
        "libgcc_s.so.1",
        "libm.so.6",
        "libc.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "ld-linux-x86-64.so.2",
    ];
    for line in text.lines() {
        let lib = line.split_whitespace().next().unwrap_or_default();
        let name = lib.rsplit('/').next().unwrap_or(lib);
        assert!(
            ALLOWED.contains(&name),
            "{} links {lib}:\n{text}",
            so.display()
        );
    }
}

#[test]
fn python_code_serves_an_app_with_m2wsgi_serve() {
    let venv = venv();
    let m2 = Mongrel2::builder()
        .handler("/", &Handler::tcp("app"))
        .start();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(repo().join("tests/apps/serve_api.py"))
        .args([
            m2.send_spec("app"),
            m2.recv_spec("app"),
            m2.send_ident("app"),
        ])
        .current_dir(repo().join("tests/apps"));
    let mut p = Proc::from_command(cmd);
    let url = m2.url("/environ?x=1");
    let mut body = String::new();
    assert!(
        wait_until(T, || {
            let out = curl(&["-f", "-s", &url]);
            body = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
        }),
        "no answer from m2wsgi.serve:\n{}",
        p.log()
    );
    assert!(body.contains("QUERY_STRING='x=1'"), "{body}");
    // SIGTERM drains and serve() returns to the Python code after it.
    p.signal("TERM");
    let st = p.wait_exit(T).expect("exits after SIGTERM");
    assert!(st.success(), "{st}\n{}", p.log());
    assert!(p.stdout().contains("serve_api: returned"), "{}", p.log());
}

#[test]
fn a_second_signal_exits_at_once() {
    venv();
    let m2 = Mongrel2::builder()
        .handler("/", &Handler::tcp("app"))
        .start();
    let h = m2.handler("app");
    let mut p = support::wsgi::m2wsgi(&["probe", &h.send_spec, &h.recv_spec], &[], false);
    p.wait_ready();
    let url = m2.url("/sleep?t=8");
    let _slow = std::thread::spawn(move || curl(&["-s", &url]));
    std::thread::sleep(Duration::from_millis(300)); // the request is in the app now
    p.signal("INT");
    assert!(p.wait_for_log("shutting down", T), "{}", p.log());
    assert!(
        p.is_running(),
        "the first signal drains: the request is still running"
    );
    let t = std::time::Instant::now();
    p.signal("INT");
    let status = p
        .wait_timeout(Duration::from_secs(2))
        .expect("the second signal exits at once");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(!status.success(), "exit status {status}");
}
