//! The registry's exposition, the merge of several expositions, and the endpoint.

use super::listener::{MAX_REQUEST, READ_TIMEOUT};
use super::*;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The value of the sample written exactly as `series` in `text`.
fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
    })
}

/// Checks the rules of the text format that a merge must keep: each family's HELP and TYPE at
/// most once and before its samples, and the samples of a family in one group. Returns the
/// family names in order.
fn check_valid(text: &str) -> Vec<String> {
    let mut families: Vec<String> = Vec::new();
    let mut closed: HashSet<String> = HashSet::new();
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    for line in text.lines() {
        let fam = if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kw, name) = (w.next().unwrap(), w.next().unwrap().to_string());
            if kw == "TYPE" {
                assert!(
                    typed
                        .insert(name.clone(), w.next().unwrap().into())
                        .is_none(),
                    "TYPE of {name} twice:\n{text}"
                );
            }
            name
        } else {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let series_end = line.rfind(' ').unwrap();
            assert!(
                series.insert(line[..series_end].to_string()),
                "series twice: {line}\n{text}"
            );
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|b| typed.get(*b).is_some_and(|t| t == "histogram"))
                })
                .map(str::to_string);
            base.unwrap_or(name)
        };
        if current.as_deref() != Some(&fam) {
            assert!(!closed.contains(&fam), "family {fam} split:\n{text}");
            if let Some(c) = current.take() {
                closed.insert(c);
            }
            families.push(fam.clone());
            current = Some(fam);
        }
    }
    families
}

#[test]
fn a_fresh_registry_renders_every_family_at_zero() {
    let r = Registry::new();
    let text = r.render(&[]);
    assert_eq!(
        value(&text, "m2wsgi_requests_total{status=\"2xx\"}"),
        Some("0")
    );
    assert_eq!(
        value(&text, "m2wsgi_requests_total{status=\"none\"}"),
        Some("0")
    );
    assert_eq!(
        value(&text, "m2wsgi_request_duration_seconds_bucket{le=\"+Inf\"}"),
        Some("0")
    );
    assert_eq!(
        value(&text, "m2wsgi_request_duration_seconds_sum"),
        Some("0")
    );
    assert_eq!(value(&text, "m2wsgi_requests_in_flight"), Some("0"));
    assert_eq!(
        value(&text, "m2wsgi_uploads_total{kind=\"stream\"}"),
        Some("0")
    );
    assert_eq!(value(&text, "m2wsgi_client_disconnects_total"), Some("0"));
    assert_eq!(value(&text, "m2wsgi_timeouts_total"), Some("0"));
    // No server watched: no thread or queue gauges.
    assert!(!text.contains("m2wsgi_threads") && !text.contains("m2wsgi_queue_length"));
    assert!(text.contains("# TYPE m2wsgi_gil_wait_seconds histogram\n"));
    assert!(text.contains("# HELP m2wsgi_requests_total Requests answered"));
    let families = check_valid(&text);
    assert_eq!(
        families,
        [
            "m2wsgi_requests_total",
            "m2wsgi_request_duration_seconds",
            "m2wsgi_requests_in_flight",
            "m2wsgi_gil_wait_seconds",
            "m2wsgi_uploads_total",
            "m2wsgi_client_disconnects_total",
            "m2wsgi_timeouts_total",
        ]
    );
    assert!(text.ends_with('\n'));
}

#[test]
fn requests_counted_by_status_class_with_cumulative_buckets() {
    let r = Registry::new();
    r.started(Duration::from_micros(20), None);
    r.started(ms(2), Some(Upload::Async));
    r.started(Duration::ZERO, Some(Upload::Stream));
    r.started(Duration::ZERO, None);
    let text = r.render(&[]);
    assert_eq!(value(&text, "m2wsgi_requests_in_flight"), Some("4"));
    r.finished(Some(200), Duration::from_micros(300));
    r.finished(Some(404), ms(3));
    r.finished(Some(503), Duration::from_secs(100));
    r.finished(None, ms(1));
    let text = r.render(&[]);
    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(v("m2wsgi_requests_total{status=\"1xx\"}"), "0");
    assert_eq!(v("m2wsgi_requests_total{status=\"2xx\"}"), "1");
    assert_eq!(v("m2wsgi_requests_total{status=\"4xx\"}"), "1");
    assert_eq!(v("m2wsgi_requests_total{status=\"5xx\"}"), "1");
    assert_eq!(v("m2wsgi_requests_total{status=\"none\"}"), "1");
    assert_eq!(v("m2wsgi_requests_in_flight"), "0");
    // 0.3 ms, 1 ms (le is inclusive), 3 ms, 100 s.
    assert_eq!(
        v("m2wsgi_request_duration_seconds_bucket{le=\"0.0005\"}"),
        "1"
    );
    assert_eq!(
        v("m2wsgi_request_duration_seconds_bucket{le=\"0.001\"}"),
        "2"
    );
    assert_eq!(
        v("m2wsgi_request_duration_seconds_bucket{le=\"0.0025\"}"),
        "2"
    );
    assert_eq!(
        v("m2wsgi_request_duration_seconds_bucket{le=\"0.005\"}"),
        "3"
    );
    assert_eq!(v("m2wsgi_request_duration_seconds_bucket{le=\"60\"}"), "3");
    assert_eq!(
        v("m2wsgi_request_duration_seconds_bucket{le=\"+Inf\"}"),
        "4"
    );
    assert_eq!(v("m2wsgi_request_duration_seconds_count"), "4");
    assert_eq!(v("m2wsgi_request_duration_seconds_sum"), "100.0043");
    assert_eq!(v("m2wsgi_gil_wait_seconds_bucket{le=\"0.00001\"}"), "2");
    assert_eq!(v("m2wsgi_gil_wait_seconds_bucket{le=\"0.00005\"}"), "3");
    assert_eq!(v("m2wsgi_gil_wait_seconds_bucket{le=\"0.0025\"}"), "4");
    assert_eq!(v("m2wsgi_gil_wait_seconds_count"), "4");
    assert_eq!(v("m2wsgi_uploads_total{kind=\"async\"}"), "1");
    assert_eq!(v("m2wsgi_uploads_total{kind=\"stream\"}"), "1");
    check_valid(&text);
}

#[test]
fn constant_labels_go_first_on_every_sample_and_are_escaped() {
    let r = Registry::new();
    let text = r.render(&[("worker", "3"), ("app", "a\"b\\c\nd")]);
    let labels = "worker=\"3\",app=\"a\\\"b\\\\c\\nd\"";
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.contains(&format!("{{{labels}")),
            "{line} lacks the constant labels"
        );
    }
    assert_eq!(
        value(
            &text,
            &format!("m2wsgi_requests_total{{{labels},status=\"2xx\"}}")
        ),
        Some("0")
    );
    assert_eq!(
        value(&text, &format!("m2wsgi_timeouts_total{{{labels}}}")),
        Some("0")
    );
    assert_eq!(
        value(
            &text,
            &format!("m2wsgi_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}}")
        ),
        Some("0")
    );
}

#[test]
#[should_panic(expected = "invalid Prometheus label name")]
fn a_bad_label_name_is_refused() {
    let _ = Registry::new().render(&[("wor-ker", "1")]);
}

#[test]
fn server_stats_give_thread_and_queue_gauges() {
    let r = Registry::new();
    let stats = ServerStats::default();
    stats.0.workers.store(4, Ordering::Relaxed);
    stats.0.idle.store(1, Ordering::Relaxed);
    stats.0.queued.store(7, Ordering::Relaxed);
    *r.server.lock().unwrap() = Some(stats);
    let text = r.render(&[]);
    assert_eq!(value(&text, "m2wsgi_threads{state=\"busy\"}"), Some("3"));
    assert_eq!(value(&text, "m2wsgi_threads{state=\"idle\"}"), Some("1"));
    assert_eq!(value(&text, "m2wsgi_queue_length"), Some("7"));
    check_valid(&text);
}

#[test]
fn restarts_by_cause_in_the_supervisor_exposition() {
    let r = Registry::new();
    r.restarts[RestartCause::Crash.index()].fetch_add(2, Ordering::Relaxed);
    r.restarts[RestartCause::MaxRequests.index()].fetch_add(1, Ordering::Relaxed);
    let text = r.render_supervisor(&[]);
    assert_eq!(
        text.lines().next(),
        Some(
            "# HELP m2wsgi_worker_restarts_total Worker processes restarted or recycled, by cause."
        )
    );
    assert!(text.contains("# TYPE m2wsgi_worker_restarts_total counter\n"));
    for cause in RestartCause::ALL {
        let want = match cause {
            RestartCause::Crash => "2",
            RestartCause::MaxRequests => "1",
            _ => "0",
        };
        let series = format!(
            "m2wsgi_worker_restarts_total{{cause=\"{}\"}}",
            cause.as_str()
        );
        assert_eq!(value(&text, &series), Some(want), "{series}");
    }
    check_valid(&text);
}

#[test]
fn the_process_registry_counts_rare_events_always() {
    let before = |s: &str| {
        value(&render(&[]), s)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    let d0 = before("m2wsgi_client_disconnects_total");
    let t0 = before("m2wsgi_timeouts_total");
    count_disconnect();
    count_timeout();
    assert!(before("m2wsgi_client_disconnects_total") > d0);
    assert!(before("m2wsgi_timeouts_total") > t0);
    let r0 = value(
        &render_supervisor(&[]),
        "m2wsgi_worker_restarts_total{cause=\"reload\"}",
    )
    .and_then(|v| v.parse::<u64>().ok())
    .unwrap();
    count_restart(RestartCause::Reload);
    let r1 = value(
        &render_supervisor(&[]),
        "m2wsgi_worker_restarts_total{cause=\"reload\"}",
    )
    .and_then(|v| v.parse::<u64>().ok())
    .unwrap();
    assert!(r1 > r0);
}

// ------------------------------------------------------------------------------------------------
// merge

#[test]
fn merging_workers_keeps_help_and_type_once_and_groups_samples() {
    let w = |i: u64| {
        let r = Registry::new();
        for _ in 0..i {
            r.started(Duration::ZERO, None);
            r.finished(Some(200), ms(2));
        }
        let stats = ServerStats::default();
        stats.0.workers.store(2, Ordering::Relaxed);
        *r.server.lock().unwrap() = Some(stats);
        r.render(&[("worker", &i.to_string())])
    };
    let (w0, w1, w2) = (w(0), w(1), w(2));
    let sup = Registry::new().render_supervisor(&[]);
    let merged = merge(&[&w0, &w1, &w2, &sup]);
    let families = check_valid(&merged);
    assert_eq!(
        families,
        [
            "m2wsgi_requests_total",
            "m2wsgi_request_duration_seconds",
            "m2wsgi_requests_in_flight",
            "m2wsgi_threads",
            "m2wsgi_gil_wait_seconds",
            "m2wsgi_queue_length",
            "m2wsgi_uploads_total",
            "m2wsgi_client_disconnects_total",
            "m2wsgi_timeouts_total",
            "m2wsgi_worker_restarts_total",
        ]
    );
    assert_eq!(
        merged
            .matches("# TYPE m2wsgi_requests_total counter\n")
            .count(),
        1
    );
    assert_eq!(merged.matches("# HELP m2wsgi_requests_total ").count(), 1);
    for i in 0..3 {
        let s = format!("m2wsgi_requests_total{{worker=\"{i}\",status=\"2xx\"}}");
        assert_eq!(value(&merged, &s), Some(i.to_string().as_str()));
    }
    // A histogram's lines stay together per worker, in input order.
    let lines: Vec<&str> = merged
        .lines()
        .filter(|l| l.starts_with("m2wsgi_request_duration_seconds"))
        .collect();
    assert_eq!(lines.len(), 3 * 19);
    assert!(lines[0].contains("worker=\"0\"") && lines[18].contains("worker=\"0\""));
    assert!(lines[18].starts_with("m2wsgi_request_duration_seconds_count"));
    assert!(lines[19].contains("worker=\"1\""));
    // Every sample of every input is there once.
    let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        samples(&merged),
        samples(&w0) + samples(&w1) + samples(&w2) + samples(&sup)
    );
}

#[test]
fn merging_adds_up_identical_series() {
    let a = "# HELP c Things.\n# TYPE c counter\nc{x=\"1\"} 2\nc{x=\"2\"} 1.5\n\
             # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.25\nh_count 2\n";
    let b = "# HELP c Other help, ignored.\n# TYPE c counter\nc{x=\"1\"} 3\nc{x=\"3\"} 7 1700000000000\n\
             # TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
    let merged = merge(&[a, b]);
    assert_eq!(
        merged,
        "# HELP c Things.\n# TYPE c counter\nc{x=\"1\"} 5\nc{x=\"2\"} 1.5\nc{x=\"3\"} 7 1700000000000\n\
         # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 3\nh_sum 0.75\nh_count 3\n"
    );
    check_valid(&merged);
}

#[test]
fn merging_places_samples_by_family_and_drops_what_is_not_a_sample() {
    let a = "# A comment\n\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\n\
             loose_metric 4\nnot a sample\n{bad=\"1\"} 2\n9starts_with_digit 1\nnovalue\n\
             g{path=\"/a}b\",q=\"x\\\"y\"} 1\n";
    let b =
        "# TYPE g gauge\ng{path=\"/c\"} 2\nloose_metric{w=\"1\"} 5\n# TYPE s summary\ns_count 1\n";
    let merged = merge(&[a, b]);
    assert_eq!(
        merged,
        "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 3\n\
         loose_metric 4\nloose_metric{w=\"1\"} 5\n\
         # TYPE g gauge\ng{path=\"/a}b\",q=\"x\\\"y\"} 1\ng{path=\"/c\"} 2\n"
    );
    check_valid(&merged);
}

#[test]
fn merging_special_values_and_nothing() {
    assert_eq!(merge(&[]), "");
    assert_eq!(merge(&["", "# only a comment\n"]), "");
    let merged = merge(&["x +Inf\ny NaN\nz -Inf\nw 1e3\n", "x 1\nw 0.5\n"]);
    assert_eq!(merged, "x +Inf\ny NaN\nz -Inf\nw 1000.5\n");
    // CRLF line ends are read too.
    assert_eq!(
        merge(&["# TYPE a gauge\r\na 1\r\n"]),
        "# TYPE a gauge\na 1\n"
    );
}

// ------------------------------------------------------------------------------------------------
// the endpoint

fn http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_endpoint_serves_metrics_and_little_else() {
    let l = Listener::bind("127.0.0.1:0", || "a 1\n".to_string()).unwrap();
    let addr = l.local_addr();
    let r = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert!(
        r.contains("Content-Length: 4\r\n") && r.ends_with("\r\n\r\na 1\n"),
        "{r}"
    );
    let r = http(addr, b"GET /metrics?x=1 HTTP/1.0\n\n");
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("a 1\n"),
        "{r}"
    );
    let r = http(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        r.contains("Content-Length: 4\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    let r = http(addr, b"GET / HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX_REQUEST + 100, b'a');
    let r = http(addr, &big);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    drop(l);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn a_silent_scraper_holds_the_endpoint_for_the_read_timeout_at_most() {
    let l = Listener::bind("127.0.0.1:0", || "a 1\n".to_string()).unwrap();
    let addr = l.local_addr();
    let _silent = TcpStream::connect(addr).unwrap();
    let t = std::time::Instant::now();
    let r = http(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(r.ends_with("a 1\n"), "{r}");
    assert!(
        t.elapsed() < READ_TIMEOUT + Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}
