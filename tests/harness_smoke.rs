//! Smoke test of the real-Mongrel2 harness in `tests/support/mongrel2.rs`: the server starts from a
//! generated config, serves a static file byte for byte, and the config database holds the handler.

mod support;

use support::mongrel2::{curl, sqlite3, Handler, Mongrel2, Protocol};

const HELLO: &[u8] = b"hello world!\n";

fn server() -> (Mongrel2, Handler) {
    let handler = Handler::tcp("app").protocol(Protocol::Tnetstring);
    let m2 = Mongrel2::builder()
        .handler("/handler", &handler)
        .dir("/static/", "static/")
        .static_file("hello.txt", HELLO)
        .setting("limits.content_length", 4096)
        .setting("upload.temp_store", "/tmp/upload.XXXXXX")
        .start();
    (m2, handler)
}

#[test]
fn dir_route_serves_file_byte_exact() {
    let (m2, _) = server();
    assert_eq!(HELLO.len(), 13);

    let out = curl(&[
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        &m2.url("/static/hello.txt"),
    ]);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = out.stdout.split_at(out.stdout.len() - 4);
    assert_eq!(
        status,
        b"\n200",
        "status line; got {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(body, HELLO);

    // Headers come from mongrel2 itself.
    let out = curl(&["-i", &m2.url("/static/hello.txt")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 13\r\n"), "{text}");
    assert!(text.contains("Server: Mongrel2/1.12"), "{text}");

    // A path with no route is answered 404 by mongrel2.
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &m2.url("/nothing-here"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");

    assert!(
        m2.access_log().contains("/static/hello.txt"),
        "{}",
        m2.access_log()
    );
}

#[test]
fn config_db_has_handler_row() {
    let (m2, h) = server();
    let row = sqlite3(
        &m2.db_path(),
        "SELECT h.send_spec, h.send_ident, h.recv_spec, h.recv_ident, h.raw_payload, h.protocol \
         FROM route r JOIN handler h ON h.id = r.target_id \
         WHERE r.target_type = 'handler' AND r.path = '/handler';",
    );
    assert_eq!(
        row.trim_end(),
        format!(
            "{}|{}|{}||0|tnetstring",
            h.send_spec, h.send_ident, h.recv_spec
        )
    );
    assert_eq!(m2.send_spec("app"), h.send_spec);
    assert_eq!(m2.recv_spec("app"), h.recv_spec);

    let settings = sqlite3(
        &m2.db_path(),
        "SELECT key, value FROM setting ORDER BY key;",
    );
    assert!(
        settings.contains("limits.content_length|4096\n"),
        "{settings}"
    );
    assert!(settings.contains("server.daemonize|0\n"), "{settings}");
    assert!(
        settings.contains("upload.temp_store|/tmp/upload.XXXXXX\n"),
        "{settings}"
    );

    let server = sqlite3(
        &m2.db_path(),
        &format!(
            "SELECT control_port, chroot FROM server WHERE uuid = '{}';",
            m2.server_uuid()
        ),
    );
    assert_eq!(server.trim_end(), "ipc://run/control|./");

    // mongrel2 bound the handler sockets and the control port inside the chroot.
    let log = m2.error_log();
    assert!(
        log.contains(&format!("Binding handler PUSH socket {}", h.send_spec)),
        "{log}"
    );
    assert!(m2.chroot().join("run/control").exists());
    assert!(m2.chroot().join("run/mongrel2.pid").exists());
}

#[test]
fn restart_and_drop_clean_up() {
    let (mut m2, _) = server();
    let dir = m2.chroot().to_path_buf();
    let first = m2.pid().expect("running");
    if nix_is_root() {
        assert!(m2.chrooted(), "as root mongrel2 chroots into its directory");
        assert_eq!(m2.host_path("/tmp/upload.abc"), dir.join("tmp/upload.abc"));
    }

    m2.restart();
    assert_ne!(m2.pid(), Some(first));
    let out = curl(&["-o", "-", &m2.url("/static/hello.txt")]);
    assert_eq!(out.stdout, HELLO);

    let status = m2.stop().expect("was running");
    assert!(
        status.success(),
        "mongrel2 exit status after SIGTERM: {status}"
    );
    assert!(
        !dir.join("run/mongrel2.pid").exists(),
        "clean stop removes the pid file"
    );
    assert!(!m2.is_running());

    drop(m2);
    if std::env::var_os("M2WSGI_KEEP_HARNESS").is_none() {
        assert!(!dir.exists(), "drop removes {}", dir.display());
    }
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}
