//! `m2wsgi --workers N` through a real Mongrel2: the supervisor starts N worker processes behind
//! its built-in device, restarts one that dies, replaces all on SIGHUP and after
//! `--max-requests` without losing a request under load, stops on a crash loop, and drains on
//! SIGTERM.

mod support;

use std::time::{Duration, Instant};
use support::load::Load;
use support::mongrel2::{curl, Handler, Mongrel2};
use support::process::{wait_until, Proc};
use support::wsgi::m2wsgi;

const T: Duration = Duration::from_secs(20);

fn start(m2: &Mongrel2, extra: &[&str]) -> Proc {
    let mut args = vec![
        "workers_app",
        m2.send_spec("app"),
        m2.recv_spec("app"),
        "--send-ident",
        m2.send_ident("app"),
        "--num-threads",
        "2",
    ];
    args.extend_from_slice(extra);
    m2wsgi(&args, &[], false)
}

fn mongrel2() -> Mongrel2 {
    Mongrel2::builder()
        .handler("/app", &Handler::tcp("app"))
        .start()
}

/// The pids of the workers the supervisor's log says it started.
fn worker_pids(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| l.split(" started (pid ").nth(1))
        .filter_map(|rest| rest.trim_end_matches(')').parse().ok())
        .collect()
}

/// `GET /app/hello` answers "Hello, world!".
fn assert_hello(m2: &Mongrel2) {
    let out = curl(&["-s", "-m", "5", &m2.url("/app/hello")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!");
}

/// SIGTERM, and the process exits 0.
/// Waits until the supervisor logged that each of `ids` left.
fn wait_left(sup: &Proc, ids: &[&str]) {
    assert!(
        wait_until(T, || {
            let log = sup.log();
            ids.iter()
                .all(|id| log.contains(&format!("worker {id} left")))
        }),
        "{}",
        sup.log()
    );
}

fn stop_ok(p: &mut Proc) {
    p.signal("TERM");
    let st = p.wait_exit(T).expect("did not exit");
    assert!(st.success(), "{st}:\n{}", p.log());
}

/// Lets 100 more requests through, stops the load and asserts that none failed.
fn finish_without_loss(load: Load, sup: &Proc, what: &str) {
    let at = load.answered();
    assert!(wait_until(T, || load.answered() >= at + 100));
    let report = load.finish();
    eprintln!("{what} under load: {}", report.summary());
    assert_eq!(report.failed(), 0, "{:?}\n{}", report.failures, sup.log());
}

/// SIGKILL to a process the test did not start.
fn kill9(pid: u32) {
    let mut killer = Proc::spawn(
        std::path::Path::new("/bin/kill"),
        &["-KILL", &pid.to_string()],
        &[],
    );
    killer.wait_exit(T);
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn workers_serve_a_dead_one_is_replaced_and_sigterm_drains_all() {
    let m2 = mongrel2();
    let mut sup = start(&m2, &["--workers", "2"]);
    assert!(
        sup.wait_for_log("all 2 workers serving", T),
        "{}",
        sup.log()
    );
    let pids = worker_pids(&sup.log());
    assert_eq!(pids.len(), 2, "{}", sup.log());
    // Both processes answer (the device spreads new connections over them).
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let out = curl(&["-s", &m2.url("/app/pid")]);
        seen.insert(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert!(seen.len() == 2, "answered by {seen:?}, workers {pids:?}");

    // A worker killed is replaced; requests keep being answered, by the survivor at once and by
    // the replacement within 2 s.
    let killed = Instant::now();
    kill9(pids[0]);
    assert!(sup.wait_for_log("died (signal: 9", T), "{}", sup.log());
    // "worker w3 (pid N) serving": the replacement's first line after "started".
    assert!(sup.wait_for_log("worker w3 (pid", T), "{}", sup.log());
    assert!(sup.log().contains(") serving"), "{}", sup.log());
    let respawned = killed.elapsed();
    assert!(
        respawned < Duration::from_secs(2),
        "the replacement served {respawned:?} after the kill"
    );
    for _ in 0..10 {
        let out = curl(&["-s", &m2.url("/app/hello")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!");
    }
    let all = worker_pids(&sup.log());
    assert_eq!(all.len(), 3, "{}", sup.log());

    // SIGTERM: every worker drains and exits, then the supervisor exits 0.
    sup.signal("TERM");
    let st = sup.wait_exit(T).expect("the supervisor did not exit");
    assert!(st.success(), "{st}:\n{}", sup.log());
    for pid in all {
        assert!(!alive(pid), "worker {pid} still running");
    }
}

#[test]
fn sighup_and_max_requests_replace_workers_without_losing_a_request() {
    let m2 = mongrel2();
    let mut sup = start(
        &m2,
        &[
            "--workers",
            "2",
            "--max-requests",
            "300",
            "--max-requests-jitter",
            "50",
        ],
    );
    assert!(
        sup.wait_for_log("all 2 workers serving", T),
        "{}",
        sup.log()
    );
    let load = Load::start(
        m2.addr(),
        "/app/hello",
        "Hello, world!",
        400,
        4,
        4000,
        Duration::from_secs(30),
    );
    assert!(wait_until(T, || load.answered() >= 100));
    // Reload: every worker replaced (w3, w4 take over; w1, w2 leave).
    sup.signal("HUP");
    wait_left(&sup, &["w1", "w2"]);
    // Past 300-350 requests each, workers are recycled for max-requests.
    assert!(
        wait_until(T, || sup.log().contains("(max-requests)")),
        "{}",
        sup.log()
    );
    finish_without_loss(load, &sup, "reload + max-requests");
    stop_ok(&mut sup);
    assert!(sup.log().contains("recycled"), "{}", sup.log());
}

#[test]
fn a_crash_loop_stops_the_supervisor_and_a_broken_app_stops_it_at_boot() {
    let m2 = mongrel2();
    let mut sup = start(&m2, &["--workers", "1"]);
    assert!(
        sup.wait_for_log("all 1 workers serving", T),
        "{}",
        sup.log()
    );
    // Every worker dies at its first request: five quick deaths in a row stop the supervisor.
    let t = Instant::now();
    while sup.is_running() && t.elapsed() < Duration::from_secs(60) {
        let _ = curl(&["-s", "-m", "2", &m2.url("/app/crash")]);
    }
    let st = sup.wait_exit(T).expect("the supervisor did not stop");
    assert_eq!(st.code(), Some(1), "{}", sup.log());
    assert!(sup.log().contains("workers keep dying"), "{}", sup.log());

    // An application that does not import: exit 1 at boot, saying so.
    let mut broken = m2wsgi(
        &[
            "broken_import",
            m2.send_spec("app"),
            m2.recv_spec("app"),
            "--workers",
            "2",
        ],
        &[],
        false,
    );
    let st = broken.wait_exit(T).expect("the supervisor did not stop");
    assert_eq!(st.code(), Some(1), "{}", broken.log());
    assert!(
        broken.log().contains("before it served"),
        "{}",
        broken.log()
    );
}

#[test]
fn reload_replaces_the_worker_when_a_source_file_changes() {
    let m2 = mongrel2();
    let dir = tempfile::tempdir().unwrap();
    let app = |v: &str| {
        format!(
            "def application(environ, start_response):\n    start_response('200 OK', \
             [('Content-Length', '{}')])\n    return [b'{v}']\n",
            v.len()
        )
    };
    std::fs::write(dir.path().join("reload_app.py"), app("v1")).unwrap();
    let chdir = dir.path().to_str().unwrap().to_string();
    let mut sup = m2wsgi(
        &[
            "reload_app",
            m2.send_spec("app"),
            m2.recv_spec("app"),
            "--chdir",
            &chdir,
            "--reload",
        ],
        &[],
        false,
    );
    assert!(
        sup.wait_for_log("all 1 workers serving", T),
        "{}",
        sup.log()
    );
    let get =
        || String::from_utf8_lossy(&curl(&["-s", "-m", "5", &m2.url("/app/")]).stdout).into_owned();
    assert_eq!(get(), "v1");
    std::fs::write(dir.path().join("reload_app.py"), app("v2")).unwrap();
    assert!(wait_until(T, || get() == "v2"), "{}", sup.log());
    assert!(sup.log().contains("--reload: "), "{}", sup.log());
    sup.signal("TERM");
    let st = sup.wait_exit(T).expect("the supervisor did not exit");
    assert!(st.success(), "{st}");
}

#[test]
fn a_config_file_is_checked_printed_and_served() {
    let m2 = mongrel2();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m2wsgi.toml");
    std::fs::write(
        &file,
        format!(
            "app = \"workers_app\"\nsend_spec = \"{}\"\nrecv_spec = \"{}\"\nsend-ident = \"{}\"\n\
             num-threads = 2\nworkers = 2\n",
            m2.send_spec("app"),
            m2.recv_spec("app"),
            m2.send_ident("app")
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (st, out, err) = m2wsgi(&["--config", file, "--check-config"], &[], false).finish();
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("the configuration is valid and workers_app loads"),
        "{out}"
    );
    let (st, out, _) = m2wsgi(
        &["--config", file, "--print-config", "--num-threads=3"],
        &[],
        false,
    )
    .finish();
    assert!(st.success());
    assert!(
        out.contains("num_threads = \"3\"") && out.contains("workers = \"2\""),
        "{out}"
    );
    // A broken application fails the check.
    let (st, _, err) = m2wsgi(
        &["--config", file, "--check-config", "broken_import"],
        &[],
        false,
    )
    .finish();
    assert_eq!(st.code(), Some(1), "{err}");
    // Served from the file alone, with its two workers.
    let mut sup = m2wsgi(&["--config", file], &[], false);
    assert!(
        sup.wait_for_log("all 2 workers serving", T),
        "{}",
        sup.log()
    );
    assert_hello(&m2);
    stop_ok(&mut sup);
}

/// Sends 16 requests, alternately through `a` and `b`, and checks each answer is its own.
fn echo_through_both(a: &Mongrel2, b: &Mongrel2, proc: &Proc, tag: &str) {
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url(&format!("/app/echo/a-{tag}-{i}"))
            } else {
                b.url(&format!("/app/echo/b-{tag}-{i}"))
            };
            std::thread::spawn(move || {
                let out = curl(&["-s", "-m", "10", &url]);
                (url, String::from_utf8_lossy(&out.stdout).into_owned())
            })
        })
        .collect();
    for c in clients {
        let (url, body) = c.join().unwrap();
        let path = &url[url.find("/app/").unwrap() + 4..];
        assert_eq!(body, path, "{url}:\n{}", proc.log());
    }
}

fn two_servers(extra: &[&str], ready: &str) -> (Mongrel2, Mongrel2, Proc) {
    let (a, b) = (mongrel2(), mongrel2());
    let also = format!("{},{}", b.send_spec("app"), b.recv_spec("app"));
    let mut args = vec![
        "workers_app",
        a.send_spec("app"),
        a.recv_spec("app"),
        "--also",
        &also,
        "--num-threads",
        "4",
    ];
    args.extend_from_slice(extra);
    let proc = m2wsgi(&args, &[], false);
    assert!(proc.wait_for_log(ready, T), "{}", proc.log());
    (a, b, proc)
}

/// Two Mongrel2 servers feed one m2wsgi (`--also`): both number their clients from 1, so the
/// ids overlap, yet every answer reaches its own client.
#[test]
fn one_m2wsgi_serves_two_mongrel2_servers() {
    let (a, b, mut proc) = two_servers(&[], "also serving requests from");
    echo_through_both(&a, &b, &proc, "x");
    proc.signal("TERM");
    assert!(proc.wait_exit(T).expect("did not exit").success());
}

/// The same with worker processes: one device per server, every worker takes requests from
/// both, and a reload replaces them while both servers keep being answered.
#[test]
fn worker_processes_serve_two_mongrel2_servers() {
    let (a, b, mut sup) = two_servers(&["--workers", "2"], "all 2 workers serving");
    assert_eq!(
        sup.log()
            .matches("worker process(es) behind a device at")
            .count(),
        2,
        "{}",
        sup.log()
    );
    echo_through_both(&a, &b, &sup, "before");
    // Reload: w3 and w4 serve only once both devices have heard them; w1 and w2 then leave.
    sup.signal("HUP");
    wait_left(&sup, &["w1", "w2"]);
    echo_through_both(&a, &b, &sup, "after");
    stop_ok(&mut sup);
}

/// Started as root with `--user nobody`: the workers run as nobody, and `ps` shows what each
/// one is.
#[test]
fn workers_run_as_the_given_user_with_a_title() {
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid_line = me
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("0"),
        "this test needs root (the CI machine runs as root): {uid_line}"
    );
    let m2 = mongrel2();
    let mut sup = start(&m2, &["--workers", "1", "--user", "nobody"]);
    assert!(
        sup.wait_for_log("all 1 workers serving", T),
        "{}",
        sup.log()
    );
    let pid = worker_pids(&sup.log())[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().nth(1), Some("65534"), "{uid}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let title = String::from_utf8_lossy(cmdline.split(|b| *b == 0).next().unwrap()).into_owned();
    assert_eq!(title, "m2wsgi: worker w1 workers_app");
    assert_hello(&m2);
    stop_ok(&mut sup);
}

/// `--workers 2 --metrics ADDR`: the supervisor's endpoint merges both workers' samples (each
/// labelled with its id) and counts the restart of a worker killed.
#[test]
fn the_supervisor_serves_every_workers_metrics() {
    let m2 = mongrel2();
    let port = support::mongrel2::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut sup = start(&m2, &["--workers", "2", "--metrics", &addr]);
    assert!(
        sup.wait_for_log("all 2 workers serving", T),
        "{}",
        sup.log()
    );
    for _ in 0..10 {
        let out = curl(&["-s", &m2.url("/app/hello")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!");
    }
    let scrape = || {
        String::from_utf8_lossy(&curl(&["-s", &format!("http://{addr}/metrics")]).stdout)
            .into_owned()
    };
    // Every request of both workers is counted, under each worker's label.
    let total = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("m2wsgi_requests_total{") && l.contains("status=\"2xx\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert!(wait_until(T, || total(&scrape()) == 10), "{}", scrape());
    let text = scrape();
    assert!(
        text.contains("worker=\"w1\"") && text.contains("worker=\"w2\""),
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE m2wsgi_requests_total").count(),
        1,
        "{text}"
    );
    let pid = worker_pids(&sup.log())[0];
    kill9(pid);
    assert!(
        wait_until(T, || scrape()
            .contains("m2wsgi_worker_restarts_total{cause=\"crash\"} 1")),
        "{}",
        scrape()
    );
    stop_ok(&mut sup);
}

/// `--timeout` under a supervisor: the request past it gets 504; the worker whose only thread
/// is stuck asks to be replaced, and its replacement serves the next request at once.
#[test]
fn a_worker_with_stuck_threads_is_replaced() {
    let m2 = mongrel2();
    let mut sup = m2wsgi(
        &[
            "workers_app",
            m2.send_spec("app"),
            m2.recv_spec("app"),
            "--workers",
            "1",
            "--num-threads",
            "1",
            "--timeout",
            "1",
            "--shutdown-timeout",
            "2",
        ],
        &[],
        false,
    );
    assert!(
        sup.wait_for_log("all 1 workers serving", T),
        "{}",
        sup.log()
    );
    let t = Instant::now();
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &m2.url("/app/sleep?t=4"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "504");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        sup.wait_for_log("recycling worker w1 (timeout)", T),
        "{}",
        sup.log()
    );
    assert!(sup.wait_for_log("worker w2 (pid", T), "{}", sup.log());
    let out = curl(&["-s", "-m", "5", &m2.url("/app/hello")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, world!",
        "{}",
        sup.log()
    );
    stop_ok(&mut sup);
    assert!(sup.log().contains("1 for stuck threads"), "{}", sup.log());
}

/// `--lifetime` and `--max-rss` recycle workers under load without losing a request (a
/// 1 MiB limit that every Python process passes: each worker is replaced once it has served
/// for a second).
#[test]
fn lifetime_and_max_rss_recycle_workers_without_losing_a_request() {
    for extra in [["--lifetime", "1"], ["--max-rss", "1"]] {
        let m2 = mongrel2();
        let mut args = vec!["--workers", "2"];
        args.extend(extra);
        let mut sup = start(&m2, &args);
        assert!(
            sup.wait_for_log("all 2 workers serving", T),
            "{}",
            sup.log()
        );
        let load = Load::start(m2.addr(), "/app/hello", "Hello, world!", 300, 3, 3000, T);
        let cause = if extra[0] == "--lifetime" {
            "(lifetime)"
        } else {
            "(max-rss)"
        };
        assert!(
            wait_until(T, || sup.log().matches(cause).count() >= 2
                && sup.log().contains(" left (")),
            "{}",
            sup.log()
        );
        finish_without_loss(load, &sup, &format!("{extra:?}"));
        stop_ok(&mut sup);
    }
}
