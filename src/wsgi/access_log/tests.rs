//! The format: compiling, every atom, escaping; the writer: buffering, reopening.

use super::format::{Clock, Format, Record, Slot};
use super::*;
use crate::Message;
use http::header::{HeaderMap, HeaderValue};
use jiff::tz::{Offset, TimeZone};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2025-12-01 14:08:26 UTC.
fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_764_598_106)
}

fn clock(hours: i8) -> Clock {
    Clock::new(TimeZone::fixed(Offset::constant(hours)))
}

/// A request as Mongrel2 sends it (tnetstring headers), with `extra` headers.
fn message(method: &str, uri: &str, version: &str, extra: &[(&str, &str)]) -> Message {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut fields: Vec<(&str, &str)> = vec![
        ("REMOTE_ADDR", "192.0.2.7"),
        ("METHOD", method),
        ("URL_SCHEME", "http"),
        ("PATTERN", "/"),
        ("URI", uri),
        ("VERSION", version),
        ("PATH", path),
    ];
    if !query.is_empty() {
        fields.push(("QUERY", query));
    }
    fields.push(("host", "localhost"));
    fields.extend_from_slice(extra);
    let mut headers = Vec::new();
    for (k, v) in &fields {
        // A tnetstring string is a netstring.
        crate::tnetstring::write_netstring(&mut headers, k.as_bytes());
        crate::tnetstring::write_netstring(&mut headers, v.as_bytes());
    }
    let mut frame = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 12 ".to_vec();
    frame.extend_from_slice(path.as_bytes());
    frame.push(b' ');
    frame.extend_from_slice(format!("{}:", headers.len()).as_bytes());
    frame.extend_from_slice(&headers);
    frame.extend_from_slice(b"}0:,");
    Message::decode(bytes::Bytes::from(frame)).expect("a valid frame")
}

fn line(format: &str, rec: &Record) -> String {
    let f = Format::compile(format).expect("compiles");
    let mut out = Vec::new();
    f.write(rec, &mut clock(1), at(), &mut out);
    String::from_utf8(out).expect("utf-8")
}

/// A record for `msg` answered `status` with `bytes` in `elapsed`.
fn record(f: &Format, msg: &Message, status: Option<u16>, bytes: u64, elapsed: Duration) -> Record {
    let mut rec = Record::default();
    f.capture_request(msg, &mut rec);
    rec.status = status;
    rec.bytes = bytes;
    rec.elapsed = elapsed;
    rec
}

fn render(format: &str, msg: &Message, status: Option<u16>, bytes: u64) -> String {
    let f = Format::compile(format).expect("compiles");
    let rec = record(&f, msg, status, bytes, Duration::from_micros(1_234_567));
    let mut out = Vec::new();
    f.write(&rec, &mut clock(1), at(), &mut out);
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn the_default_format_is_the_combined_log_format() {
    let msg = message(
        "GET",
        "/caf%C3%A9?a=1&b=%26",
        "HTTP/1.1",
        &[
            ("referer", "http://example.com/"),
            ("user-agent", "curl/8.0"),
        ],
    );
    assert_eq!(
        render(DEFAULT_FORMAT, &msg, Some(200), 13),
        "192.0.2.7 - - [01/Dec/2025:15:08:26 +0100] \"GET /caf%C3%A9?a=1&b=%26 HTTP/1.1\" 200 13 \
         \"http://example.com/\" \"curl/8.0\"\n"
    );
    // Without Referer and User-Agent, and when nothing was sent.
    let msg = message("HEAD", "/", "HTTP/1.0", &[]);
    assert_eq!(
        render(DEFAULT_FORMAT, &msg, None, 0),
        "192.0.2.7 - - [01/Dec/2025:15:08:26 +0100] \"HEAD / HTTP/1.0\" - - \"-\" \"-\"\n"
    );
}

#[test]
fn every_atom() {
    let msg = message(
        "POST",
        "/app/caf%C3%A9%20x?q=1%202",
        "HTTP/1.1",
        &[
            ("authorization", "Basic dXNlcjpwYXNz"), // user:pass
            ("referer", "/from"),
            ("user-agent", "UA"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ],
    );
    let one = |atom: &str| {
        let format = format!("%({atom})s");
        let f = Format::compile(&format).unwrap();
        let mut rec = record(&f, &msg, Some(201), 42, Duration::from_micros(2_003_004));
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/html"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        f.capture_response(&h, &mut rec);
        rec.environ = f
            .environ_keys()
            .iter()
            .map(|k| (k == "remote_user").then(|| "alice".to_string()))
            .collect();
        let mut out = Vec::new();
        f.write(&rec, &mut clock(-5), at(), &mut out);
        let s = String::from_utf8(out).unwrap();
        s.strip_suffix('\n').unwrap().to_string()
    };
    let pid = format!("<{}>", std::process::id());
    for (atom, want) in [
        ("h", "192.0.2.7"),
        ("l", "-"),
        ("u", "user"),
        ("t", "[01/Dec/2025:09:08:26 -0500]"),
        ("r", "POST /app/caf%C3%A9%20x?q=1%202 HTTP/1.1"),
        ("m", "POST"),
        ("U", "/app/café x"),
        ("q", "q=1%202"),
        ("H", "HTTP/1.1"),
        ("s", "201"),
        ("B", "42"),
        ("b", "42"),
        ("f", "/from"),
        ("a", "UA"),
        ("T", "2"),
        ("M", "2003"),
        ("D", "2003004"),
        ("L", "2.003004"),
        ("p", pid.as_str()),
        ("{x-forwarded-for}i", "10.0.0.1"),
        ("{X-Forwarded-For}i", "10.0.0.1"),
        ("{host}i", "localhost"),
        ("{x-multi}i", "a, b"),
        ("{x-absent}i", "-"),
        ("{content-type}o", "text/html"),
        ("{Set-Cookie}o", "a=1, b=2"),
        ("{x-absent}o", "-"),
        ("{remote_user}e", "alice"),
        ("{REMOTE_USER}e", "alice"),
        ("{absent}e", "-"),
        ("x", "-"),
        ("{x}y", "-"),
        ("hh", "-"),
    ] {
        assert_eq!(one(atom), want, "%({atom})s");
    }
}

#[test]
fn literals_percent_signs_and_conversions() {
    let msg = message("GET", "/", "HTTP/1.1", &[]);
    assert_eq!(
        render(
            "100%% %(s)d [%(m)-10s] %(B)05d %(L).3f %(h)r|",
            &msg,
            Some(404),
            7
        ),
        "100% 404 [GET] 7 1.234567 192.0.2.7|\n"
    );
    assert_eq!(render("", &msg, Some(200), 0), "\n");
    assert_eq!(render("plain", &msg, Some(200), 0), "plain\n");
    // A key holding parentheses runs to the matching one, as in Python.
    let f = Format::compile("%(a(b)c)s").unwrap();
    assert_eq!(f.unknown_atoms(), ["a(b)c"]);
}

#[test]
fn bad_formats_are_refused_with_the_place() {
    for (format, at, what) in [
        ("%s", 0, "a % that starts no %(atom)s"),
        ("abc %", 4, "a % that starts no %(atom)s"),
        ("x %(h", 2, "without its closing )"),
        ("%(h)", 4, "followed by a conversion"),
        ("%(h)z", 4, "followed by a conversion"),
        ("%(h)s %(s)", 10, "followed by a conversion"),
    ] {
        let e = Format::compile(format).unwrap_err();
        assert_eq!(e.at, at, "{format}: {e}");
        assert!(e.to_string().contains(what), "{format}: {e}");
        assert!(e.to_string().contains(&format!("{format:?}")), "{e}");
    }
}

#[test]
fn unknown_atoms_are_dashes_and_reported() {
    let f = Format::compile("%(h)s %(zz)s %({a}x)s %({}i)s %(Z)s").unwrap();
    assert_eq!(f.unknown_atoms(), ["zz", "{a}x", "{}i", "Z"]);
    let msg = message("GET", "/", "HTTP/1.1", &[]);
    assert_eq!(
        render("%(h)s %(zz)s %({a}x)s %(Z)s", &msg, Some(200), 0),
        "192.0.2.7 - - -\n"
    );
}

#[test]
fn values_cannot_break_quotes_or_lines() {
    let msg = message(
        "GET",
        "/%0Aevil%22%01%7F?q=\"x\\y",
        "HTTP/1.1",
        &[("user-agent", "a \"quoted\" \\ agent\té")],
    );
    assert_eq!(
        render("%(U)s|%(q)s|%(a)s|%(r)s", &msg, Some(200), 0),
        "/\\x0aevil\\\"\\x01\\x7f|q=\\\"x\\\\y|a \\\"quoted\\\" \\\\ agent\\x09é|\
         GET /%0Aevil%22%01%7F?q=\\\"x\\\\y HTTP/1.1\n"
    );
}

#[test]
fn basic_auth_user_as_gunicorn_finds_it() {
    let user = |auth: &str| {
        let msg = message("GET", "/", "HTTP/1.1", &[("authorization", auth)]);
        render("%(u)s", &msg, Some(200), 0).trim_end().to_string()
    };
    assert_eq!(user("Basic dXNlcjpwYXNz"), "user");
    assert_eq!(user("basic   dXNlcjpwYXNz  "), "user");
    assert_eq!(user("Basic dXNlcg=="), "user"); // no colon
    assert_eq!(user("Basic OnBhc3M="), "-"); // ":pass": empty user
    assert_eq!(user("Basic !!!"), "-");
    assert_eq!(user("Basic /w=="), "-"); // not UTF-8
    assert_eq!(user("Bearer dXNlcjpwYXNz"), "-");
    assert_eq!(user("Basic"), "-");
    let msg = message("GET", "/", "HTTP/1.1", &[]);
    assert_eq!(render("%(u)s", &msg, Some(200), 0), "-\n");
}

#[test]
fn the_request_line_without_uri_and_version() {
    // What a format sees for a message without URI and VERSION.
    let f = Format::compile("%(r)s %(H)s %(U)s").unwrap();
    let rec = Record {
        method: None,
        path: Some(bytes::Bytes::from_static(b"/p")),
        query: Some(bytes::Bytes::from_static(b"a=1")),
        ..Record::default()
    };
    let mut out = Vec::new();
    f.write(&rec, &mut clock(0), at(), &mut out);
    assert_eq!(out, b"- /p?a=1 - - /p\n");
    assert_eq!(
        line("%(h)s %(s)s %(b)s %(B)s", &Record::default()),
        "- - - 0\n"
    );
}

#[test]
fn time_is_formatted_once_a_second_in_the_zone() {
    let mut c = clock(0);
    assert_eq!(c.stamp(at()), "[01/Dec/2025:14:08:26 +0000]");
    assert_eq!(
        c.stamp(at() + Duration::from_millis(999)),
        "[01/Dec/2025:14:08:26 +0000]"
    );
    assert_eq!(
        c.stamp(at() + Duration::from_secs(1)),
        "[01/Dec/2025:14:08:27 +0000]"
    );
    let mut c = Clock::new(TimeZone::fixed(
        Offset::from_seconds(5 * 3600 + 45 * 60).unwrap(),
    ));
    assert_eq!(c.stamp(at()), "[01/Dec/2025:19:53:26 +0545]");
    let mut c = Clock::new(TimeZone::get("America/New_York").unwrap_or(TimeZone::UTC));
    if c.stamp(at()) != "[01/Dec/2025:14:08:26 +0000]" {
        // With the zone database: winter time, then summer time.
        assert_eq!(c.stamp(at()), "[01/Dec/2025:09:08:26 -0500]");
        let july = UNIX_EPOCH + Duration::from_secs(1_751_378_906); // 2025-07-01 14:08:26 UTC
        assert_eq!(c.stamp(july), "[01/Jul/2025:10:08:26 -0400]");
    }
    assert_eq!(clock(0).stamp(UNIX_EPOCH), "[01/Jan/1970:00:00:00 +0000]");
}

#[test]
fn slots_join_repeated_values() {
    let mut h = HeaderMap::new();
    h.append("x", HeaderValue::from_static("1"));
    h.append("x", HeaderValue::from_static("2"));
    h.append("x", HeaderValue::from_static("3"));
    let f = Format::compile("%({x}o)s %({y}o)s").unwrap();
    let mut rec = Record::default();
    f.capture_response(&h, &mut rec);
    assert!(matches!(rec.response_headers[0], Slot::Joined(_)));
    assert!(matches!(rec.response_headers[1], Slot::Absent));
    let mut out = Vec::new();
    f.write(&rec, &mut clock(0), at(), &mut out);
    assert_eq!(out, b"1, 2, 3 -\n");
}

// ------------------------------------------------------------------------------------------------
// the writer

#[test]
fn lines_go_out_within_a_second_and_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&path, DEFAULT_FORMAT).unwrap();
    assert!(path.exists(), "created at once");
    log.inner().write(b"one\n");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "buffered");
    let deadline = std::time::Instant::now() + FLUSH_EVERY * 3;
    while std::fs::read_to_string(&path).unwrap() != "one\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "not written within a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A full buffer goes out at once, whole lines only.
    let big = "x".repeat(99) + "\n";
    for _ in 0..400 {
        log.inner().write(big.as_bytes());
    }
    let now = std::fs::read_to_string(&path).unwrap();
    assert!(now.len() >= 4 + FLUSH_AT, "{}", now.len());
    assert!(now.ends_with('\n'));
    log.flush();
    assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 4 + 400 * 100);
}

#[test]
fn dropping_the_log_writes_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&path, DEFAULT_FORMAT).unwrap();
    log.inner().write(b"last\n");
    drop(log);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "last\n");
}

#[test]
fn reopen_after_rename_writes_to_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let moved = dir.path().join("access.log.1");
    let log = AccessLog::open(&path, DEFAULT_FORMAT).unwrap();
    log.inner().write(b"before\n");
    log.flush();
    std::fs::rename(&path, &moved).unwrap();
    log.reopen();
    // The flusher reopens within a second, even with nothing to write.
    let deadline = std::time::Instant::now() + FLUSH_EVERY * 3;
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "not reopened");
        std::thread::sleep(Duration::from_millis(20));
    }
    log.inner().write(b"after\n");
    log.flush();
    assert_eq!(std::fs::read_to_string(&moved).unwrap(), "before\n");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
}

#[test]
fn open_errors_name_the_file_and_the_format() {
    let e = AccessLog::open("/nonexistent-dir/x/access.log", DEFAULT_FORMAT).unwrap_err();
    assert!(matches!(e, AccessLogError::Open { .. }));
    assert!(
        e.to_string()
            .starts_with("access log /nonexistent-dir/x/access.log: "),
        "{e}"
    );
    let e = AccessLog::open("-", "%(h)s %").unwrap_err();
    assert!(matches!(e, AccessLogError::Format(_)), "{e}");
    // Standard output needs no file.
    let log = AccessLog::open("-", "%(h)s %(bogus)s").unwrap();
    assert_eq!(log.unknown_atoms(), ["bogus"]);
}

#[test]
fn a_released_record_holds_nothing_of_the_request() {
    let msg = message("GET", "/x?y=1", "HTTP/1.1", &[("user-agent", "UA")]);
    let f = Format::compile(DEFAULT_FORMAT).unwrap();
    let mut rec = record(&f, &msg, Some(200), 5, Duration::ZERO);
    rec.release();
    assert!(rec.uri.is_none() && rec.path.is_none() && rec.remote.is_none());
    assert!(rec.headers.is_empty() && rec.headers.capacity() >= 3);
    let mut out = Vec::new();
    f.write(&rec, &mut clock(0), at(), &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "- - - [01/Dec/2025:14:08:26 +0000] \"- - HTTP/1.1\" 200 5 \"-\" \"-\"\n"
    );
}
