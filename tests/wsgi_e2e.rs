//! End to end: curl → a real Mongrel2 → the `m2wsgi` command → Python applications (the probe
//! wrapped in `wsgiref.validate.validator`, Werkzeug's test app, Flask, Django). Bodies and
//! header values are compared byte for byte (header names case-insensitively: m2wsgi writes
//! them title-cased).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::Proc;
use support::testing::HttpResponse;
use support::wsgi::{environ_lines, m2wsgi};

struct Served {
    m2: Mongrel2,
    proc: Proc,
    handler: Handler,
}

fn chroot_arg(m2: &Mongrel2) -> String {
    if m2.chrooted() {
        m2.chroot().display().to_string()
    } else {
        "/".into()
    }
}

fn start(app: &str, extra: &[&str], settings: &[(&str, &str)]) -> Served {
    let h = Handler::tcp("wsgi");
    let mut b = Mongrel2::builder()
        .handler("/", &h)
        .setting("limits.content_length", 4096)
        .setting("upload.temp_store", "/tmp/upload.XXXXXX");
    for (k, v) in settings {
        b = match v.parse::<i64>() {
            Ok(n) => b.setting(k, n),
            Err(_) => b.setting(k, *v),
        };
    }
    let m2 = b.start();
    let chroot = chroot_arg(&m2);
    let mut args = vec![
        app,
        &h.send_spec,
        &h.recv_spec,
        "--upload-dir",
        "/tmp",
        "--mongrel2-chroot",
        &chroot,
    ];
    args.extend_from_slice(extra);
    let mut proc = m2wsgi(&args, &[], false);
    proc.wait_ready();
    Served {
        m2,
        proc,
        handler: h,
    }
}

/// curl with `-i --raw` (chunked framing kept), parsed.
fn fetch(s: &Served, path: &str, args: &[&str]) -> HttpResponse {
    let url = s.m2.url(path);
    let mut all = vec!["-i", "--raw"];
    all.extend_from_slice(args);
    all.push(&url);
    let out = curl(&all);
    assert!(
        out.status.success(),
        "curl {all:?}: {}\n--- m2wsgi ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.proc.stderr()
    );
    let head_only = args.contains(&"-I") || args.windows(2).any(|w| w == ["-X", "HEAD"]);
    // curl prints "HTTP/1.1 100 Continue" first when it sent Expect: 100-continue.
    let mut data = out.stdout.as_slice();
    while data.starts_with(b"HTTP/1.1 100") {
        let end = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        data = &data[end..];
    }
    HttpResponse::parse(data, head_only, true)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("incomplete response: {:?}", String::from_utf8_lossy(data)))
}

fn get(s: &Served, path: &str) -> HttpResponse {
    fetch(s, path, &[])
}

fn sha256(data: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A file with `data` in a temporary directory, removed (with its directory) on drop.
struct TempFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempFile {
    fn display(&self) -> std::path::Display<'_> {
        self.path.display()
    }
}

fn temp_file(name: &str, data: &[u8]) -> TempFile {
    let dir = tempfile::Builder::new()
        .prefix("m2wsgi-e2e-")
        .tempdir()
        .unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    TempFile { _dir: dir, path }
}

fn pattern(n: usize, mul: usize, modulo: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * mul) % modulo) as u8).collect()
}

fn no_upload_files_left(m2: &Mongrel2) {
    let tmp = m2.host_path("/tmp");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "upload temp files left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn validated_probe_through_mongrel2() {
    let s = start("validated:application", &["--num-threads", "2"], &[]);

    // GET with a query: raw QUERY_STRING, CGI values from Mongrel2.
    let r = get(&s, "/environ/x?a=%26&b=%3D");
    assert_eq!(r.status, 200, "{}", r.text());
    let env = environ_lines(&r.text());
    assert_eq!(env["QUERY_STRING"], "'a=%26&b=%3D'");
    assert_eq!(env["PATH_INFO"], "'/environ/x'");
    assert_eq!(env["SCRIPT_NAME"], "''");
    assert_eq!(env["REMOTE_ADDR"], "'127.0.0.1'");
    assert_eq!(env["SERVER_NAME"], "'127.0.0.1'");
    assert_eq!(env["SERVER_PORT"], format!("'{}'", s.m2.http_port()));
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "'127.0.0.1'");
    assert_eq!(env["wsgi.multithread"], "True");

    // POST with an inline body, read in pieces.
    let r = fetch(&s, "/input?op=readn&n=4", &["--data-binary", "0123456789"]);
    assert_eq!(r.text(), "b'0123'\nb'4567'\nb'89'\nb''\n");

    // A chunked response, chunk framing on the wire.
    let r = get(&s, "/gen?n=3&size=4");
    assert!(r.chunked, "{:?}", String::from_utf8_lossy(&r.head));
    assert_eq!(r.text(), "aaaabbbbcccc");

    // HEAD: the length, no body.
    let r = fetch(&s, "/hello", &["-I"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header_str("content-length").as_deref(), Some("13"));

    // An async upload (above limits.content_length), read in chunks by the app.
    let big = pattern(300_000, 13, 256);
    let f = temp_file("upload.bin", &big);
    let r = fetch(
        &s,
        "/input?op=hash",
        &["--data-binary", &format!("@{}", f.display())],
    );
    assert_eq!(r.text(), format!("b'300000 {}'\n", sha256(&big)));

    // A chunked request body: Mongrel2 de-chunks it into a file; CONTENT_LENGTH is its size,
    // Transfer-Encoding and Mongrel2's upload headers are not passed on.
    let r = fetch(
        &s,
        "/environ",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", f.display()),
        ],
    );
    let env = environ_lines(&r.text());
    assert_eq!(env["CONTENT_LENGTH"], "'300000'");
    assert!(!env.contains_key("HTTP_TRANSFER_ENCODING"), "{env:?}");
    assert!(env.keys().all(|k| !k.contains("MONGREL2")), "{env:?}");
    no_upload_files_left(&s.m2);

    // Many requests in a row, all valid.
    for i in 0..50 {
        let r = get(&s, &format!("/list?n={}", i % 5 + 1));
        assert_eq!(r.status, 200);
    }
    assert!(
        !s.proc.stderr().contains("AssertionError"),
        "{}",
        s.proc.stderr()
    );
}

#[test]
fn werkzeug_test_app() {
    let s = start("werkzeug.testapp:test_app", &[], &[]);
    let r = get(&s, "/some/path?x=1");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header_str("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        r.header_str("content-length"),
        Some(r.body.len().to_string())
    );
    let text = r.text();
    assert!(text.contains("Werkzeug"), "{text}");
    assert!(text.contains("wsgi.input_terminated"), "{text}");
    assert!(text.contains("/some/path"), "{text}");
    let venv = support::wsgi::venv_dir().display().to_string();
    assert!(text.contains(&venv), "the venv's sys.path ({venv}): {text}");
}

#[test]
fn flask_app() {
    let s = start("flask_app:app", &["--num-threads", "2"], &[]);
    let r = get(&s, "/");
    assert_eq!((r.status, r.text().as_str()), (200, "flask ok"));

    // Form post.
    let r = fetch(&s, "/form", &["-d", "name=caf%C3%A9&n=1&n=2"]);
    assert_eq!(r.text(), "name=caf\u{e9} n=1,2");

    // Multipart upload above the inline limit (an async upload through a temp file).
    let data = pattern(1 << 20, 7, 253);
    let f = temp_file("flask-upload.bin", &data);
    let r = fetch(
        &s,
        "/upload",
        &[
            "-F",
            &format!("file=@{};filename=data.bin", f.display()),
            "-F",
            "note=hi",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        format!("data.bin 1048576 {} note=hi", sha256(&data))
    );
    no_upload_files_left(&s.m2);

    // A chunked request body through Werkzeug (wsgi.input_terminated).
    let r = fetch(
        &s,
        "/raw",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", f.display()),
        ],
    );
    assert_eq!(r.text(), format!("1048576 {} cl=1048576", sha256(&data)));

    // send_file: bytes, length, type.
    let r = get(&s, "/file");
    assert_eq!(r.status, 200);
    assert_eq!(r.header_str("content-length").as_deref(), Some("300000"));
    assert_eq!(
        r.header_str("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(r.body == pattern(300_000, 1, 251));

    // Streaming response.
    let r = get(&s, "/stream");
    assert!(r.chunked);
    assert_eq!(r.text(), "chunk0;chunk1;chunk2;chunk3;chunk4;");

    // Flask's own 500 page, then business as usual.
    let r = get(&s, "/fail");
    assert_eq!(r.status, 500);
    let r = get(&s, "/env");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("\"input_terminated\":true"),
        "{}",
        r.text()
    );
}

#[test]
fn django_app() {
    let s = start("django_app", &["--num-threads", "2"], &[]);

    // CSRF: GET the form (cookie + token), POST it back; without them, 403.
    let jar_file = temp_file("django-cookies.txt", b"");
    let jar = jar_file.display().to_string();
    let r = fetch(&s, "/form/", &["-c", &jar]);
    assert_eq!(r.status, 200);
    let page = r.text();
    let token = page
        .split("name=\"csrfmiddlewaretoken\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("csrf token in the form")
        .to_string();
    assert!(r
        .all("set-cookie")
        .iter()
        .any(|c| c.starts_with("csrftoken=")));
    let r = fetch(
        &s,
        "/form/",
        &[
            "-b",
            &jar,
            "-d",
            &format!("csrfmiddlewaretoken={token}&name=ok"),
        ],
    );
    assert_eq!((r.status, r.text().as_str()), (200, "posted ok"));
    let r = fetch(&s, "/form/", &["-d", "name=nope"]);
    assert_eq!(r.status, 403);

    // FileHttpResponseonse (through wsgi.file_wrapper).
    let r = get(&s, "/file/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header_str("content-length").as_deref(), Some("200000"));
    assert!(r.body == pattern(200_000, 7, 256));

    // StreamingHttpHttpResponseonse.
    let r = get(&s, "/stream/");
    assert!(r.chunked);
    assert_eq!(r.text(), "part0;part1;part2;part3;part4;");

    // A non-ASCII path: UTF-8 percent-encoded, decoded by Django from latin-1 PATH_INFO.
    let r = get(&s, "/p/caf%C3%A9/%E2%82%AC");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "path=/p/caf\u{e9}/\u{20ac} info=/p/caf\u{e9}/\u{20ac} rest=caf\u{e9}/\u{20ac}"
    );
    assert_eq!(
        r.header_str("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
}

#[test]
fn app_errors_give_500_and_the_next_request_is_served() {
    let s = start("probe:application", &[], &[]);
    for case in [
        "/raise",
        "/str_chunk",
        "/non_iterable",
        "/no_start",
        "/badheader?kind=crlf",
    ] {
        let r = get(&s, case);
        assert_eq!(r.status, 500, "{case}: {}", r.text());
        let r = get(&s, "/hello");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Hello, world!"),
            "after {case}"
        );
    }
    let log = s.proc.stderr();
    assert!(
        log.contains("RuntimeError: probe: the application failed on purpose"),
        "{log}"
    );
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    assert!(
        !log.contains("HTTP_HOST"),
        "environ leaked into the log: {log}"
    );
}

#[test]
fn config_db_selects_the_handler() {
    let h = Handler::tcp("wsgi");
    let m2 = Mongrel2::builder()
        .handler("/app", &h)
        .setting("limits.content_length", 4096)
        .setting("upload.temp_store", "/tmp/upload.XXXXXX")
        .start();
    let db = m2.db_path().display().to_string();
    let mut proc = m2wsgi(
        &["--config-db", &db, "--route", "/app", "probe"],
        &[],
        false,
    );
    proc.wait_ready();
    let s = Served {
        m2,
        proc,
        handler: h,
    };
    // SCRIPT_NAME from the route; the upload directory and chroot from the database.
    let r = get(&s, "/app/environ");
    let env = environ_lines(&r.text());
    assert_eq!(env["SCRIPT_NAME"], "'/app'");
    assert_eq!(env["PATH_INFO"], "'/environ'");
    let big = pattern(50_000, 3, 256);
    let f = temp_file("db-upload.bin", &big);
    let r = fetch(
        &s,
        "/app/input?op=hash",
        &["--data-binary", &format!("@{}", f.display())],
    );
    assert_eq!(r.text(), format!("b'50000 {}'\n", sha256(&big)));
    let _ = &s.handler;
}

#[test]
fn cli_errors_are_clear() {
    let (st, _, err) = m2wsgi(&["m2wsgi_no_such_module", "tcp://127.0.0.1:1"], &[], false).finish();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("no module named \"m2wsgi_no_such_module\""),
        "{err}"
    );
    let (st, _, err) = m2wsgi(&["broken_import", "tcp://127.0.0.1:1"], &[], false).finish();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("its module was found, but importing \"broken_import\" raised"),
        "{err}"
    );
    assert!(
        err.contains("No module named 'm2wsgi_no_such_dependency'"),
        "{err}"
    );
    let (st, _, err) = m2wsgi(&["probe:nothing_here", "tcp://127.0.0.1:1"], &[], false).finish();
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("has no attribute `nothing_here`"), "{err}");
    let (st, _, err) = m2wsgi(&["probe:CLOSED", "tcp://127.0.0.1:1"], &[], false).finish();
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("is not callable"), "{err}");
    let (st, _, err) = m2wsgi(&["--io=gevent", "probe", "tcp://127.0.0.1:1"], &[], false).finish();
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("--io=gevent is not supported"), "{err}");
    let (st, out, _) = m2wsgi(&["--help"], &[], false).finish();
    assert!(st.success());
    for opt in [
        "--num-threads",
        "--send-ident",
        "--recv-ident",
        "--config-db",
        "--handler-id",
        "--route",
        "--chdir",
        "--pythonpath",
        "--log-level",
        "--shutdown-timeout",
        "--mongrel2-chroot",
        "--upload-dir",
        "--script-name",
        "--io",
        "--multiprocess",
        "--flow-control",
    ] {
        assert!(out.contains(opt), "--help lacks {opt}");
    }
    // The seed's dotted form: module path then attribute.
    let (st, out, err) = m2wsgi(&["--python-info"], &[], false).finish();
    assert!(st.success(), "{err}");
    assert!(out.contains("python: 3."), "{out}");
}

/// A virtualenv for another Python minor than the embedded one is refused at start, before the
/// application is imported, with one error line naming both versions (exit status 1, as for
/// the other startup errors). The fake virtualenv needs no other Python: it is never run.
#[test]
fn virtualenv_for_another_python_is_refused_at_start() {
    let embedded = pyo3::Python::version_str()
        .split_whitespace()
        .next()
        .expect("Py_GetVersion starts with the version")
        .to_string();
    let mut parts = embedded.split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).expect("major");
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).expect("minor");
    let other = format!("{major}.{}", minor + 1);

    let venv = tempfile::Builder::new()
        .prefix("m2wsgi-other-venv-")
        .tempdir()
        .expect("temporary directory");
    std::fs::create_dir_all(venv.path().join("bin")).unwrap();
    std::fs::write(venv.path().join("bin/python"), b"").unwrap();
    let venv_dir = venv.path().display().to_string();
    let refused = |cfg: &str, found_in: &str| {
        std::fs::write(venv.path().join("pyvenv.cfg"), cfg).unwrap();
        // An app that does not exist: were the venv not checked first, this would be the
        // ModuleNotFoundError the check replaces.
        let (st, _, err) = m2wsgi(
            &["m2wsgi_no_such_module", "tcp://127.0.0.1:9"],
            &[("VIRTUAL_ENV", Some(&venv_dir))],
            false,
        )
        .finish();
        assert_eq!(st.code(), Some(1), "{err}");
        let line = err
            .lines()
            .find(|l| l.contains("the virtualenv"))
            .unwrap_or_else(|| panic!("no virtualenv error line in:\n{err}"));
        for needle in [
            format!("the virtualenv {venv_dir} is for Python {other} ({found_in})"),
            format!("this m2wsgi embeds Python {embedded}"),
            format!("recreate the venv with python{major}.{minor}"),
            format!("PYO3_PYTHON pointing at a {other} interpreter"),
        ] {
            assert!(line.contains(&needle), "{needle:?} not in {line:?}");
        }
        assert!(line.contains(" ERROR "), "{line}");
        assert_eq!(err.matches(" ERROR ").count(), 1, "one error line:\n{err}");
        assert!(
            !err.contains("no module named"),
            "imported the app first:\n{err}"
        );
    };
    refused(
        &format!(
            "home = /nonexistent/bin\ninclude-system-site-packages = false\nversion = {other}.1\n"
        ),
        "its pyvenv.cfg",
    );
    // uv and virtualenv write version_info instead.
    refused(
        &format!(
            "home = /nonexistent/bin\nimplementation = CPython\nversion_info = {other}.0.final.0\n"
        ),
        "its pyvenv.cfg",
    );
    // No version in pyvenv.cfg: the name of lib/pythonX.Y/site-packages tells.
    std::fs::create_dir_all(venv.path().join(format!("lib/python{other}/site-packages"))).unwrap();
    refused(
        "home = /nonexistent/bin\n",
        &format!("its lib/python{other}/site-packages"),
    );
}

#[test]
fn seed_style_dotted_app_name_and_pythonpath() {
    // `hello_app.application` (module.attr) found through --pythonpath.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wsgi");
    let ex = examples.display().to_string();
    let s = start("hello_app.application", &["--pythonpath", &ex], &[]);
    let r = get(&s, "/");
    assert_eq!(r.text(), "Hello, world!\n");
}

/// 1 GiB up and 1 GiB down through Mongrel2, read and produced in chunks by the app: the
/// m2wsgi process stays under 64 MiB of peak RSS (download with download.flow_control=1).
#[test]
fn one_gib_each_way_in_bounded_memory() {
    let s = start(
        "probe:application",
        &["--flow-control"],
        &[("download.flow_control", "1")],
    );
    const GIB: u64 = 1 << 30;
    // Download: the probe's /big streams 64 KiB blocks with a Content-Length.
    let url = s.m2.url("/big?mb=1024");
    let out = curl(&[
        "--max-time",
        "300",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("200 {GIB}"));
    // Upload: a sparse 1 GiB file, hashed by the app 64 KiB at a time.
    let dir = tempfile::Builder::new()
        .prefix("m2wsgi-gib-")
        .tempdir()
        .unwrap();
    let f = dir.path().join("gib.bin");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(GIB).unwrap();
    drop(file);
    let url = s.m2.url("/input?op=hash");
    let out = curl(&[
        "--max-time",
        "300",
        "-sS",
        "-X",
        "POST",
        "-H",
        "Expect:",
        "-T",
        &f.display().to_string(),
        &url,
    ]);
    drop(dir);
    let text = String::from_utf8_lossy(&out.stdout);
    // sha256 of 1 GiB of zeros.
    assert_eq!(
        text,
        "b'1073741824 49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14'\n"
    );
    let hwm = s.proc.vm_hwm_kib();
    eprintln!("m2wsgi peak RSS after 1 GiB down + 1 GiB up: {} KiB", hwm);
    assert!(hwm > 0 && hwm <= 64 * 1024, "peak RSS {hwm} KiB > 64 MiB");
    no_upload_files_left(&s.m2);
}

#[test]
fn streamed_uploads_with_upload_stream_1() {
    // upload.stream=1: no temp file; the body arrives in slices, credits granted as the app reads.
    let s = start("probe:application", &[], &[("upload.stream", "1")]);
    let data = pattern(700_000, 11, 256);
    let f = temp_file("stream-upload.bin", &data);
    let r = fetch(
        &s,
        "/input?op=hash",
        &["--data-binary", &format!("@{}", f.display())],
    );
    assert_eq!(r.text(), format!("b'700000 {}'\n", sha256(&data)));
    let r = fetch(
        &s,
        "/environ",
        &["--data-binary", &format!("@{}", f.display())],
    );
    let env = environ_lines(&r.text());
    assert_eq!(env["CONTENT_LENGTH"], "'700000'");
}

#[test]
fn big_generator_without_flow_control_is_not_cut() {
    // Without download.flow_control, Mongrel2 drops a client with 16 messages queued: the
    // stream must coalesce 64 MiB of 64 KiB chunks into few, growing messages.
    let s = start("probe:application", &[], &[]);
    let url = s.m2.url("/big?mb=64");
    let out = curl(&[
        "--max-time",
        "120",
        "--limit-rate",
        "20M",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        &url,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("200 {}", 64u64 << 20)
    );
    assert!(
        !s.m2.error_log().contains("closing them"),
        "{}",
        s.m2.error_log()
    );
}

// ------------------------------------------------------------------------------------------------
// Access log and metrics

/// The lines of `path` once there are `n` of them (up to 5 s: lines go out within a second).
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = support::process::wait_until(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.len() >= n
    });
    assert!(
        ok,
        "{} has {} lines, not {n}: {lines:#?}",
        path.display(),
        lines.len()
    );
    lines
}

/// A line with its `[time]` replaced by `[T]`, after checking that it looks like
/// `[01/Dec/2025:14:08:26 +0100]`.
fn without_time(line: &str) -> String {
    let start = line.find('[').expect("a [time]");
    let end = start + line[start..].find(']').expect("a [time]") + 1;
    let t = &line[start..end];
    let b = t.as_bytes();
    assert!(
        t.len() == 28
            && b[3] == b'/'
            && b[7] == b'/'
            && b[12] == b':'
            && b[21] == b' '
            && matches!(b[22], b'+' | b'-'),
        "{t}"
    );
    format!("{}[T]{}", &line[..start], &line[end..])
}

/// The access log through Mongrel2: gunicorn's combined format plus a response header, an
/// environ variable and the time, one line per request with its final status and body bytes;
/// then logrotate's way: rename the file, SIGUSR1, and the next lines go to a new file.
#[test]
fn access_log_lines_and_reopen_on_sigusr1() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let log_arg = log.display().to_string();
    let format = format!(
        "{} %({{content-type}}o)s %({{wsgi.url_scheme}}e)s %(D)s",
        m2wsgi::wsgi::DEFAULT_FORMAT
    );
    let mut s = start(
        "probe:application",
        &[
            "--num-threads",
            "2",
            "--access-log",
            &log_arg,
            "--access-log-format",
            &format,
        ],
        &[],
    );
    let r = fetch(
        &s,
        "/hello",
        &["-A", "probe-agent", "-e", "http://ref.example/"],
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(&s, "/nope?x=1&y=%22").status, 404);
    assert_eq!(fetch(&s, "/hello", &["-I"]).status, 200);
    assert_eq!(get(&s, "/raise").status, 500);
    assert_eq!(
        fetch(&s, "/hello", &["-u", "alice:secret", "-A", ""]).status,
        200
    );
    let lines = wait_lines(&log, 5);
    let mut got: Vec<String> = lines.iter().map(|l| without_time(l)).collect();
    // The request time (microseconds) ends each line.
    for l in &mut got {
        let (rest, micros) = l.rsplit_once(' ').unwrap();
        assert!(micros.parse::<u64>().is_ok_and(|us| us > 0), "{l}");
        *l = rest.to_string();
    }
    // Two threads: lines may come in either order.
    got.sort();
    let mut want = vec![
        "127.0.0.1 - - [T] \"GET /hello HTTP/1.1\" 200 13 \"http://ref.example/\" \
         \"probe-agent\" text/plain; charset=utf-8 http",
        "127.0.0.1 - - [T] \"GET /nope?x=1&y=%22 HTTP/1.1\" 404 14 \"-\" \"curl/*\" \
         text/plain; charset=utf-8 http",
        "127.0.0.1 - - [T] \"HEAD /hello HTTP/1.1\" 200 0 \"-\" \"curl/*\" \
         text/plain; charset=utf-8 http",
        "127.0.0.1 - - [T] \"GET /raise HTTP/1.1\" 500 22 \"-\" \"curl/*\" \
         text/plain; charset=utf-8 http",
        "127.0.0.1 - alice [T] \"GET /hello HTTP/1.1\" 200 13 \"-\" \"-\" \
         text/plain; charset=utf-8 http",
    ];
    want.sort();
    let curl_ua = |l: &str| {
        // curl's version varies: compare up to it.
        match l.find("\"curl/") {
            Some(i) => {
                let end = i + 1 + l[i + 1..].find('"').unwrap();
                format!("{}\"curl/*{}", &l[..i], &l[end..])
            }
            None => l.to_string(),
        }
    };
    let mut got: Vec<String> = got.iter().map(|l| curl_ua(l)).collect();
    got.sort();
    assert_eq!(got, want);

    // logrotate: move the file, signal, and the process writes to a new one.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.proc.signal("USR1");
    assert!(
        support::process::wait_until(Duration::from_secs(5), || log.exists()),
        "no new access log after SIGUSR1:\n{}",
        s.proc.stderr()
    );
    assert_eq!(get(&s, "/hello").status, 200);
    let after = wait_lines(&log, 1);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0].contains("\"GET /hello HTTP/1.1\" 200 13 "),
        "{after:?}"
    );
    assert_eq!(wait_lines(&rotated, 5).len(), 5);
    assert!(s.proc.stderr().contains("reopened"), "{}", s.proc.stderr());
    // A clean stop writes what is buffered.
    assert_eq!(get(&s, "/hello").status, 200);
    assert_eq!(s.proc.stop().and_then(|st| st.code()), Some(0));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
}

/// The value of the sample written exactly as `series`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn scrape(port: u16) -> String {
    let out = curl(&[
        "-s",
        "--max-time",
        "5",
        &format!("http://127.0.0.1:{port}/metrics"),
    ]);
    assert!(out.status.success(), "scrape failed");
    String::from_utf8(out.stdout).unwrap()
}

/// `--metrics`: the Prometheus endpoint counts what went through Mongrel2.
#[test]
fn metrics_endpoint_counts_requests_through_mongrel2() {
    let port = support::mongrel2::free_port();
    let addr = format!("127.0.0.1:{port}");
    let s = start(
        "probe:application",
        &["--num-threads", "2", "--metrics", &addr],
        &[],
    );
    assert!(s
        .proc
        .stderr()
        .contains(&format!("metrics at http://{addr}/metrics")));
    let mut before = String::new();
    let idle = support::process::wait_until(Duration::from_secs(5), || {
        before = scrape(port);
        metric(&before, "m2wsgi_threads{state=\"idle\"}") == Some(2.0)
    });
    assert!(idle, "{before}");
    assert_eq!(
        metric(&before, "m2wsgi_requests_total{status=\"2xx\"}"),
        Some(0.0)
    );
    for _ in 0..3 {
        assert_eq!(get(&s, "/hello").status, 200);
    }
    assert_eq!(get(&s, "/nope").status, 404);
    assert_eq!(get(&s, "/raise").status, 500);
    // Above limits.content_length (4096): an async upload.
    let data = pattern(10_000, 7, 251);
    let f = temp_file("metrics-upload.bin", &data);
    let r = fetch(
        &s,
        "/input?op=hash",
        &["--data-binary", &format!("@{}", f.display())],
    );
    assert_eq!(r.status, 200);
    // A request's counters are added just after its response went out.
    let mut text = String::new();
    let settled = support::process::wait_until(Duration::from_secs(5), || {
        text = scrape(port);
        metric(&text, "m2wsgi_request_duration_seconds_count") == Some(6.0)
            && metric(&text, "m2wsgi_threads{state=\"idle\"}") == Some(2.0)
    });
    assert!(settled, "{text}");
    for (series, want) in [
        ("m2wsgi_requests_total{status=\"2xx\"}", 4.0),
        ("m2wsgi_requests_total{status=\"4xx\"}", 1.0),
        ("m2wsgi_requests_total{status=\"5xx\"}", 1.0),
        ("m2wsgi_requests_total{status=\"none\"}", 0.0),
        ("m2wsgi_request_duration_seconds_bucket{le=\"+Inf\"}", 6.0),
        ("m2wsgi_gil_wait_seconds_count", 6.0),
        ("m2wsgi_requests_in_flight", 0.0),
        ("m2wsgi_threads{state=\"busy\"}", 0.0),
        ("m2wsgi_queue_length", 0.0),
        ("m2wsgi_uploads_total{kind=\"async\"}", 1.0),
        ("m2wsgi_uploads_total{kind=\"stream\"}", 0.0),
        ("m2wsgi_timeouts_total", 0.0),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series}:\n{text}");
    }
    let sum = metric(&text, "m2wsgi_request_duration_seconds_sum").unwrap();
    assert!(sum > 0.0 && sum < 30.0, "{sum}");
    assert!(text.contains("# TYPE m2wsgi_request_duration_seconds histogram\n"));
    // Anything but GET /metrics gets little.
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{addr}/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

/// A bad access log, format or metrics address stops the command before the application is
/// loaded, with exit status 1 and one line saying what is wrong.
#[test]
fn observability_options_fail_fast() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (args, needle) in [
        (
            vec!["--access-log", "/nonexistent-dir/access.log"],
            "access log /nonexistent-dir/access.log: ",
        ),
        (
            vec!["--access-log", "-", "--access-log-format", "%(h)s %d"],
            "a % that starts no %(atom)s",
        ),
        (vec!["--metrics", addr.as_str()], "--metrics "),
        (
            vec!["--metrics", "not-an-address"],
            "--metrics not-an-address: ",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["m2wsgi_no_such_module", "tcp://127.0.0.1:1"]);
        let (st, _, err) = m2wsgi(&all, &[], false).finish();
        assert_eq!(st.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !err.contains("m2wsgi_no_such_module"),
            "{args:?}: loaded the app: {err}"
        );
    }
    // An unknown atom is a warning, not an error.
    let (st, _, err) = m2wsgi(
        &[
            "--access-log",
            "-",
            "--access-log-format",
            "%(zz)s",
            "m2wsgi_no_such_module",
            "tcp://127.0.0.1:1",
        ],
        &[],
        false,
    )
    .finish();
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("%(zz)s is not a known atom"), "{err}");
    let (st, out, _) = m2wsgi(&["--help"], &[], false).finish();
    assert!(st.success());
    for opt in ["--access-log", "--access-log-format", "--metrics"] {
        assert!(out.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn timeout_gives_504_and_the_other_thread_serves() {
    // --timeout 1: the sleeping request is answered 504 at once; its thread stays stuck while
    // the other one serves.
    let s = start(
        "probe:application",
        &[
            "--num-threads",
            "2",
            "--timeout",
            "1",
            "--shutdown-timeout",
            "1",
        ],
        &[],
    );
    let sent = Instant::now();
    let r = get(&s, "/sleep?t=4");
    let took = sent.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    let r = get(&s, "/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world!"));
    assert!(sent.elapsed() < Duration::from_secs(4), "still asleep");
    // Logged after the client was answered: the stack is taken with the GIL.
    assert!(
        s.proc
            .wait_for_log(", in sleep_case\n", Duration::from_secs(5)),
        "the app's stack: {}",
        s.proc.stderr()
    );
    let log = s.proc.stderr();
    assert!(
        log.contains("GET /sleep: the application is still running"),
        "{log}"
    );
    assert!(log.contains("answered 504 Gateway Timeout"), "{log}");
}

#[test]
fn max_body_gives_413_inline_and_for_async_uploads() {
    // limits.content_length is 4096: 2,000 bytes come inline, 300,000 as an async upload.
    let s = start("probe:application", &["--max-body", "1000"], &[]);
    let r = fetch(&s, "/input?op=hash", &["--data-binary", &"x".repeat(2000)]);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = fetch(&s, "/input?op=hash", &["--data-binary", &"x".repeat(1000)]);
    assert_eq!(r.status, 200, "{}", r.text());

    // The async upload is refused at its start message, while Mongrel2 is still reading the
    // body; curl may see the connection close under its upload, so only the answer counts.
    let big = pattern(300_000, 13, 256);
    let f = temp_file("too-big.bin", &big);
    let url = s.m2.url("/input?op=hash");
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        &format!("@{}", f.display()),
        &url,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "413",
        "curl: {}\n--- m2wsgi ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.proc.stderr()
    );
    no_upload_files_left(&s.m2);
    assert!(
        s.proc
            .wait_for_log("(async upload) is above the limit", Duration::from_secs(5)),
        "{}",
        s.proc.stderr()
    );
    // And the server goes on.
    let r = get(&s, "/hello");
    assert_eq!(r.status, 200);
}

#[test]
fn max_body_gives_413_for_streamed_uploads() {
    // upload.stream=1: refused at the first message by its Content-Length; a chunked body has
    // none, and is stopped once the slices received pass the limit.
    let s = start(
        "probe:application",
        &["--max-body", "100000"],
        &[("upload.stream", "1")],
    );
    let big = pattern(300_000, 13, 256);
    let f = temp_file("too-big-stream.bin", &big);
    let data = format!("@{}", f.display());
    let url = s.m2.url("/input?op=hash");
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"]] {
        let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--data-binary", &data, &url]);
        let out = curl(&args);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "413",
            "{extra:?}: {}\n--- m2wsgi ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.proc.stderr()
        );
    }
    for line in [
        "(streamed upload) is above the limit",
        "streamed request body passed the limit",
    ] {
        assert!(
            s.proc.wait_for_log(line, Duration::from_secs(5)),
            "{line}: {}",
            s.proc.stderr()
        );
    }
    let r = get(&s, "/hello");
    assert_eq!(r.status, 200);
}
