//! `load_handler` against config databases written by the real `m2sh load` (Debian
//! `mongrel2-core`), so what is read is what Mongrel2 itself would read. Feature `e2e`.
#![cfg(feature = "config-db")]

use m2wsgi::{load_handler, load_handlers, ConfigError, Error, HandlerSelector, HeaderProtocol};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

const TNET_IDENT: &str = "34f9ceee-cd52-4b7f-b197-88bf2f0ec378";
const JSON_IDENT: &str = "9ed3a9c8-0e45-4b3c-8a5a-1c3c9d4e2f10";

/// Two handlers on two servers; `/handler` leads to a different handler on each server, and
/// the Dir route gets directory id 1, the same number as the tnet handler's id.
const CONFIG: &str = r#"
tnet = Handler(send_spec='tcp://127.0.0.1:6701', send_ident='34f9ceee-cd52-4b7f-b197-88bf2f0ec378',
               recv_spec='tcp://127.0.0.1:6702', recv_ident='', protocol='tnetstring')
json = Handler(send_spec='ipc://run/json-send', send_ident='9ed3a9c8-0e45-4b3c-8a5a-1c3c9d4e2f10',
               recv_spec='ipc://run/json-recv', recv_ident='9ed3a9c8-0e45-4b3c-8a5a-1c3c9d4e2f10',
               raw_payload=1)
main = Server(uuid='m2-main', chroot='/srv/main', access_log='/logs/access.log',
              error_log='/logs/error.log', pid_file='/run/mongrel2.pid', default_host='localhost',
              name='main', port=6780,
              hosts=[Host(name='localhost', routes={'/handler': tnet, '/ws': tnet, '@tnet': tnet,
                                                    '/json': json})])
other = Server(uuid='m2-other', chroot='./', access_log='/logs/access.log',
               error_log='/logs/error.log', pid_file='/run/mongrel2.pid', default_host='example.com',
               name='other', port=6781,
               hosts=[Host(name='example.com', routes={'/handler': json,
                          '/static/': Dir(base='static/', index_file='index.html',
                                          default_ctype='text/plain')})])
settings = {'limits.content_length': 4096, 'upload.temp_store': '/tmp/upload.XXXXXX',
            'upload.stream': 1, 'download.flow_control': 1}
servers = [main, other]
"#;

/// One handler, one server, no settings.
const MINIMAL: &str = r#"
app = Handler(send_spec='tcp://127.0.0.1:7701', send_ident='app', recv_spec='tcp://127.0.0.1:7702',
              recv_ident='')
main = Server(uuid='solo', chroot='', access_log='/a.log', error_log='/e.log', pid_file='/p.pid',
              default_host='localhost', name='solo', port=7780,
              hosts=[Host(name='localhost', routes={'/': app})])
servers = [main]
"#;

/// Writes `config` and loads it with the real `m2sh load`; returns the database path.
fn m2sh_load(dir: &TempDir, config: &str) -> PathBuf {
    let conf = dir.path().join("mongrel2.conf");
    let db = dir.path().join("config.sqlite");
    std::fs::write(&conf, config).unwrap();
    let out = match Command::new("m2sh")
        .arg("load")
        .arg("-config")
        .arg(&conf)
        .arg("-db")
        .arg(&db)
        .current_dir(dir.path())
        .env("LOGNAME", "m2wsgi-test")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("m2sh not installed: run scripts/install-deps.sh")
        }
        Err(e) => panic!("running m2sh: {e}"),
    };
    // m2sh exits 0 even when it cannot read the config: check the database too.
    assert!(
        out.status.success() && db.is_file(),
        "m2sh load failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

fn fixture() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = m2sh_load(&dir, CONFIG);
    (dir, db)
}

fn id_of(db: &Path, send_ident: &str) -> i64 {
    load_handler(db, &HandlerSelector::SendIdent(send_ident.into()))
        .unwrap()
        .id
}

fn route(server: &str, host: &str, path: &str) -> HandlerSelector {
    HandlerSelector::Route {
        server_uuid: server.into(),
        host: host.into(),
        path: path.into(),
    }
}

fn config_err(db: &Path, selector: &HandlerSelector) -> ConfigError {
    match load_handler(db, selector) {
        Err(Error::Config(e)) => *e,
        other => panic!("{selector}: expected Error::Config, got {other:?}"),
    }
}

fn config_error(db: &Path, selector: &HandlerSelector) -> String {
    config_err(db, selector).to_string()
}

#[test]
fn by_send_ident_tnetstring_handler() {
    let (_dir, db) = fixture();
    let cfg = load_handler(&db, &HandlerSelector::SendIdent(TNET_IDENT.into())).unwrap();
    assert_eq!(cfg.send_spec, "tcp://127.0.0.1:6701");
    assert_eq!(cfg.send_ident, TNET_IDENT);
    assert_eq!(cfg.recv_spec, "tcp://127.0.0.1:6702");
    assert_eq!(cfg.recv_ident, "");
    assert!(!cfg.raw_payload);
    assert_eq!(cfg.protocol, HeaderProtocol::Tnetstring);
    // Only `main` has handler routes to it; `other`'s Dir route has the same target id.
    assert_eq!(cfg.chroot, Some(PathBuf::from("/srv/main")));
    assert_eq!(cfg.upload_temp_store.as_deref(), Some("/tmp/upload.XXXXXX"));
    assert_eq!(cfg.upload_dir, Some(PathBuf::from("/tmp")));
    assert!(cfg.upload_stream);
    assert!(cfg.flow_control);
    assert_eq!(cfg.content_length_limit, Some(4096));
}

#[test]
fn dir_route_target_id_collides_with_tnet_handler() {
    // Guards the chroot assertion above: it only tests the target_type filter if the Dir's
    // id really equals the tnet handler's id.
    let (_dir, db) = fixture();
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let dir_id: i64 = conn
        .query_row(
            "SELECT target_id FROM route WHERE target_type = 'dir'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dir_id, id_of(&db, TNET_IDENT));
}

#[test]
fn by_send_ident_json_handler() {
    let (_dir, db) = fixture();
    let cfg = load_handler(&db, &HandlerSelector::SendIdent(JSON_IDENT.into())).unwrap();
    assert_eq!(cfg.send_spec, "ipc://run/json-send");
    assert_eq!(cfg.recv_spec, "ipc://run/json-recv");
    assert_eq!(cfg.recv_ident, JSON_IDENT);
    assert!(cfg.raw_payload);
    assert_eq!(cfg.protocol, HeaderProtocol::Json);
    // Routed by `main` (/srv/main) and `other` (./): no single chroot.
    assert_eq!(cfg.chroot, None);
}

#[test]
fn by_id() {
    let (_dir, db) = fixture();
    for ident in [TNET_IDENT, JSON_IDENT] {
        let id = id_of(&db, ident);
        let cfg = load_handler(&db, &HandlerSelector::Id(id)).unwrap();
        assert_eq!(cfg.id, id);
        assert_eq!(cfg.send_ident, ident);
    }
    assert_ne!(id_of(&db, TNET_IDENT), id_of(&db, JSON_IDENT));
}

#[test]
fn by_route() {
    let (_dir, db) = fixture();
    let cfg = load_handler(&db, &route("m2-main", "localhost", "/handler")).unwrap();
    assert_eq!(cfg.send_ident, TNET_IDENT);
    assert_eq!(cfg.chroot, Some(PathBuf::from("/srv/main")));

    let cfg = load_handler(&db, &route("m2-main", "localhost", "@tnet")).unwrap();
    assert_eq!(cfg.send_ident, TNET_IDENT);

    // The same handler through the other server carries that server's chroot.
    let cfg = load_handler(&db, &route("m2-other", "example.com", "/handler")).unwrap();
    assert_eq!(cfg.send_ident, JSON_IDENT);
    assert_eq!(cfg.chroot, Some(PathBuf::from("./")));
    let cfg = load_handler(&db, &route("m2-main", "localhost", "/json")).unwrap();
    assert_eq!(cfg.send_ident, JSON_IDENT);
    assert_eq!(cfg.chroot, Some(PathBuf::from("/srv/main")));
}

/// One handler process behind two Mongrel2 servers: each server has its own handler row (its
/// own sockets) with the same send_ident.
const TWO_SERVERS: &str = r#"
east = Handler(send_spec='tcp://127.0.0.1:7801', send_ident='shared-app',
               recv_spec='tcp://127.0.0.1:7802', recv_ident='')
west = Handler(send_spec='tcp://127.0.0.1:7811', send_ident='shared-app',
               recv_spec='tcp://127.0.0.1:7812', recv_ident='')
one = Server(uuid='east', chroot='/srv/east', access_log='/a.log', error_log='/e.log',
             pid_file='/p.pid', default_host='localhost', name='east', port=7880,
             hosts=[Host(name='localhost', routes={'/': east})])
two = Server(uuid='west', chroot='/srv/west', access_log='/a.log', error_log='/e.log',
             pid_file='/p.pid', default_host='localhost', name='west', port=7881,
             hosts=[Host(name='localhost', routes={'/': west})])
servers = [one, two]
"#;

#[test]
fn every_server_that_routes_to_a_send_ident() {
    let dir = tempfile::tempdir().unwrap();
    let db = m2sh_load(&dir, TWO_SERVERS);
    let sel = HandlerSelector::SendIdent("shared-app".into());
    let all = load_handlers(&db, &sel).unwrap();
    let got: Vec<_> = all
        .iter()
        .map(|c| (c.send_spec.as_str(), c.recv_spec.as_str(), c.chroot.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "tcp://127.0.0.1:7801",
                "tcp://127.0.0.1:7802",
                Some(PathBuf::from("/srv/east"))
            ),
            (
                "tcp://127.0.0.1:7811",
                "tcp://127.0.0.1:7812",
                Some(PathBuf::from("/srv/west"))
            ),
        ]
    );
    // One handler alone is still ambiguous, and a selector of one handler gives one.
    assert!(matches!(
        config_err(&db, &sel),
        ConfigError::Ambiguous { .. }
    ));
    let one = load_handlers(&db, &HandlerSelector::Id(all[1].id)).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].send_spec, "tcp://127.0.0.1:7811");
    // Several handlers behind one route path may be different applications: still an error.
    let (_d, fixture_db) = fixture();
    assert!(load_handlers(&fixture_db, &HandlerSelector::RoutePath("/handler".into())).is_err());
}

#[test]
fn by_route_path() {
    let (_dir, db) = fixture();
    for (path, ident) in [
        ("/ws", TNET_IDENT),
        ("@tnet", TNET_IDENT),
        ("/json", JSON_IDENT),
    ] {
        let cfg = load_handler(&db, &HandlerSelector::RoutePath(path.into())).unwrap();
        assert_eq!(cfg.send_ident, ident, "{path}");
    }
}

#[test]
fn route_path_to_several_handlers_is_an_error() {
    let (_dir, db) = fixture();
    let sel = HandlerSelector::RoutePath("/handler".into());
    match config_err(&db, &sel) {
        ConfigError::Ambiguous {
            selector,
            candidates,
            ..
        } => {
            assert_eq!(selector, sel);
            let (a, b) = (id_of(&db, TNET_IDENT), id_of(&db, JSON_IDENT));
            assert_eq!(candidates, vec![a.min(b), a.max(b)]);
        }
        other => panic!("{other:?}"),
    }
    let msg = config_error(&db, &sel);
    let (a, b) = (id_of(&db, TNET_IDENT), id_of(&db, JSON_IDENT));
    let ids = format!("(ids {}, {})", a.min(b), a.max(b));
    assert!(
        msg.starts_with("route path \"/handler\" matches several different handlers"),
        "{msg}"
    );
    assert!(msg.contains(&ids), "{msg}");
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(msg.contains("HandlerSelector::Route"), "{msg}");
}

#[test]
fn not_found_errors() {
    let (_dir, db) = fixture();
    let at = db.display();
    let table = [
        (
            HandlerSelector::Id(999),
            format!("no handler with id 999 in {at}"),
        ),
        (
            HandlerSelector::SendIdent("x".into()),
            format!("no handler with send_ident \"x\" in {at}"),
        ),
        (
            route("nope", "localhost", "/handler"),
            format!("no server with uuid \"nope\" in {at}"),
        ),
        (
            route("m2-main", "example.com", "/handler"),
            format!("server \"m2-main\" has no host named \"example.com\" in {at}"),
        ),
        (
            route("m2-main", "localhost", "/nope"),
            format!("no route \"/nope\" on host \"localhost\" of server \"m2-main\" in {at}"),
        ),
        (
            route("m2-other", "example.com", "/static/"),
            format!(
                "route \"/static/\" on host \"example.com\" of server \"m2-other\" is a dir \
                 route, not a handler route in {at}"
            ),
        ),
        (
            HandlerSelector::RoutePath("/nope".into()),
            format!("no route path \"/nope\" in {at}"),
        ),
        (
            HandlerSelector::RoutePath("/static/".into()),
            format!("route path \"/static/\" is a dir route, not a handler route in {at}"),
        ),
    ];
    for (selector, want) in table {
        assert!(
            matches!(
                config_err(&db, &selector),
                ConfigError::NotFound { selector: ref s, .. } if *s == selector
            ),
            "{selector}"
        );
        assert_eq!(config_error(&db, &selector), want);
        let err = load_handler(&db, &selector).unwrap_err();
        assert_eq!(err.to_string(), format!("mongrel2 config: {want}"));
    }
}

#[test]
fn defaults_without_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = m2sh_load(&dir, MINIMAL);
    let cfg = load_handler(&db, &HandlerSelector::RoutePath("/".into())).unwrap();
    assert_eq!(cfg.send_ident, "app");
    assert_eq!(cfg.protocol, HeaderProtocol::Json);
    assert!(!cfg.raw_payload);
    assert_eq!(cfg.chroot, None, "an empty chroot is no chroot");
    assert_eq!(cfg.upload_temp_store, None);
    assert_eq!(cfg.upload_dir, None);
    assert!(!cfg.upload_stream);
    assert!(!cfg.flow_control);
    assert_eq!(cfg.content_length_limit, None);
}

#[test]
fn settings_read_like_mongrel2() {
    let (dir, db) = fixture();
    // Rewrite the settings by hand, as a user might with sqlite3.
    let hand = dir.path().join("hand.sqlite");
    std::fs::copy(&db, &hand).unwrap();
    Connection::open(&hand)
        .unwrap()
        .execute_batch(
            "DELETE FROM setting;
             INSERT INTO setting (key, value) VALUES ('upload.stream', ' 2 ');
             INSERT INTO setting (key, value) VALUES ('download.flow_control', 'yes');
             INSERT INTO setting (key, value) VALUES ('limits.content_length', 100);
             INSERT INTO setting (key, value) VALUES ('limits.content_length', 200);
             INSERT INTO setting (key, value) VALUES ('upload.temp_store', 'upload.XXXXXX');
             UPDATE handler SET protocol = 'TNETSTRING', raw_payload = NULL;",
        )
        .unwrap();
    let cfg = load_handler(&hand, &HandlerSelector::SendIdent(TNET_IDENT.into())).unwrap();
    assert!(cfg.upload_stream);
    assert!(!cfg.flow_control, "atoi(\"yes\") is 0");
    assert_eq!(cfg.content_length_limit, Some(100), "the first row wins");
    assert_eq!(cfg.upload_dir, Some(PathBuf::from(".")));
    assert_eq!(
        cfg.protocol,
        HeaderProtocol::Json,
        "only exactly 'tnetstring' is tnetstring"
    );
    assert!(!cfg.raw_payload);
}

#[test]
fn missing_specs_are_errors() {
    let (dir, db) = fixture();
    let hand = dir.path().join("hand.sqlite");
    std::fs::copy(&db, &hand).unwrap();
    Connection::open(&hand)
        .unwrap()
        .execute_batch("UPDATE handler SET recv_spec = NULL;")
        .unwrap();
    let id = id_of(&db, TNET_IDENT);
    assert!(matches!(
        config_err(&hand, &HandlerSelector::Id(id)),
        ConfigError::MissingSpec {
            field: "recv_spec",
            ..
        }
    ));
    assert_eq!(
        config_error(&hand, &HandlerSelector::Id(id)),
        format!("handler id {id} has no recv_spec in {}", hand.display())
    );
}
