//! The WSGI bridge driven in-process: Python embedded in this test binary, the application from
//! tests/apps/probe.py, requests injected by a fake Mongrel2 speaking the wire format over
//! loopback ZeroMQ, responses checked byte for byte. One test (or more) per row of the PEP 3333
//! table in docs/wsgi.md; the row numbers are in the test names.

mod support;

use std::time::{Duration, Instant};
use support::wsgi::{environ_lines, get, post, wait_log, Running, TIMEOUT};

fn probe(threads: usize) -> Running {
    Running::start("probe:application", |s| s.threads(threads))
}

fn stats(r: &mut Running, token: &str) -> String {
    let (_, resp) = r.roundtrip(&get(&format!("/stats?token={token}")));
    resp.text()
}

fn wait_stats(r: &mut Running, token: &str, want: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = stats(r, token);
        if s == want || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------------------------------------
// Rows 1-9: environ

#[test]
fn row01_environ_is_a_dict_of_str_cgi_values() {
    let mut r = probe(1);
    let (_, resp) =
        r.roundtrip(&post("/environ", b"abc").header_values("content-type", &[b"text/plain"]));
    assert_eq!(resp.status, 200);
    let env = environ_lines(&resp.text());
    for (k, v) in &env {
        if k.contains('.') {
            continue;
        }
        assert!(v.starts_with('\''), "{k} is not a str: {v}");
    }
    assert_eq!(env["CONTENT_LENGTH"], "'3'");
    assert_eq!(env["CONTENT_TYPE"], "'text/plain'");
}

#[test]
fn row02_cgi_variables() {
    let mut r = probe(1);
    let req = get("/app/environ/x?a=1")
        .pattern("/app/(.*)")
        .header_values("host", &[b"example.com:8080"]);
    let (_, resp) = r.roundtrip(&req);
    let env = environ_lines(&resp.text());
    // The probe routes on PATH_INFO, so SCRIPT_NAME=/app took the prefix away.
    assert_eq!(env["REQUEST_METHOD"], "'GET'");
    assert_eq!(env["SCRIPT_NAME"], "'/app'");
    assert_eq!(env["PATH_INFO"], "'/environ/x'");
    assert_eq!(env["QUERY_STRING"], "'a=1'");
    assert_eq!(env["SERVER_NAME"], "'example.com'");
    assert_eq!(env["SERVER_PORT"], "'8080'");
    assert_eq!(env["SERVER_PROTOCOL"], "'HTTP/1.1'");
    assert_eq!(env["REQUEST_URI"], "'/app/environ/x?a=1'");
    assert_eq!(env["RAW_URI"], "'/app/environ/x?a=1'");
    assert!(env["SERVER_SOFTWARE"].starts_with("'m2wsgi/"));

    // A route whose literal prefix ends inside a segment is no mount point.
    let (_, resp) = r.roundtrip(&get("/environ").pattern("/env"));
    let env = environ_lines(&resp.text());
    assert_eq!(env["SCRIPT_NAME"], "''");
    assert_eq!(env["PATH_INFO"], "'/environ'");

    // No Host (HTTP/1.0): localhost and the scheme's port; HTTP/1.0 kept.
    let req = get("/environ")
        .version("HTTP/1.0")
        .scheme("https")
        .remove_header("host");
    let (_, resp) = r.roundtrip(&req);
    let env = environ_lines(&resp.text());
    assert_eq!(env["SERVER_NAME"], "'localhost'");
    assert_eq!(env["SERVER_PORT"], "'443'");
    assert_eq!(env["SERVER_PROTOCOL"], "'HTTP/1.0'");
    assert_eq!(env["wsgi.url_scheme"], "'https'");
    assert!(!env.contains_key("QUERY_STRING") || env["QUERY_STRING"] == "''");
}

#[test]
fn row02_script_name_option() {
    let mut r = Running::start("probe:application", |s| s.script_name("/mnt/"));
    let (_, resp) = r.roundtrip(&get("/mnt/environ").pattern("/"));
    let env = environ_lines(&resp.text());
    assert_eq!(env["SCRIPT_NAME"], "'/mnt'");
    assert_eq!(env["PATH_INFO"], "'/environ'");
    drop(r);
    let mut r = Running::start("probe:application", |s| s.script_name(""));
    let (_, resp) = r.roundtrip(&get("/environ").pattern("/environ"));
    let env = environ_lines(&resp.text());
    assert_eq!(env["SCRIPT_NAME"], "''");
    assert_eq!(env["PATH_INFO"], "'/environ'");
}

#[test]
fn row03_content_type_and_length_absent_when_absent() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/environ"));
    let env = environ_lines(&resp.text());
    assert!(!env.contains_key("CONTENT_TYPE"), "{env:?}");
    assert!(!env.contains_key("CONTENT_LENGTH"));
    assert!(!env.contains_key("HTTP_CONTENT_TYPE"));
    assert!(!env.contains_key("HTTP_CONTENT_LENGTH"));
    let (_, resp) = r.roundtrip(
        &post("/environ", b"x=1")
            .header_values("content-type", &[b"application/x-www-form-urlencoded"]),
    );
    let env = environ_lines(&resp.text());
    assert_eq!(env["CONTENT_TYPE"], "'application/x-www-form-urlencoded'");
    assert_eq!(env["CONTENT_LENGTH"], "'3'");
    assert!(!env.contains_key("HTTP_CONTENT_LENGTH"));
}

#[test]
fn row04_repeated_headers_joined_cookies_with_semicolons() {
    let mut r = probe(1);
    let req = get("/environ")
        .header_values("cookie", &[b"a=1", b"b=2"])
        .header_values("x-multi", &[b"one", b"two", b"three"])
        .header_values("accept", &[b"*/*"])
        .header_values("x_forwarded_for", &[b"6.6.6.6"]);
    let (_, resp) = r.roundtrip(&req);
    let env = environ_lines(&resp.text());
    assert_eq!(env["HTTP_COOKIE"], "'a=1; b=2'");
    assert_eq!(env["HTTP_X_MULTI"], "'one, two, three'");
    assert_eq!(env["HTTP_ACCEPT"], "'*/*'");
    assert_eq!(env["HTTP_HOST"], "'localhost:6767'");
    // An underscore name would collide with Mongrel2's own X-Forwarded-For: dropped.
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "'127.0.0.1'");
    // (Mongrel2's x-mongrel2-upload-* headers are checked with a real upload in wsgi_e2e.)
}

#[test]
fn row05_path_info_percent_decoded_as_latin1() {
    let mut r = probe(1);
    let req = get("/app/environ/caf%C3%A9/a%2Fb%20c").pattern("/app");
    let (_, resp) = r.roundtrip(&req);
    let env = environ_lines(&resp.text());
    // UTF-8 bytes c3 a9, each one latin-1 code point; %2F decoded like other servers do.
    assert_eq!(env["PATH_INFO"], "'/environ/caf\\xc3\\xa9/a/b c'");
    assert_eq!(env["REQUEST_URI"], "'/app/environ/caf%C3%A9/a%2Fb%20c'");
}

#[test]
fn row06_non_ascii_header_values_latin1_byte_for_byte() {
    let mut r = probe(1);
    let req = get("/environ")
        .header_values("x-latin", &[b"caf\xe9 \xff\x80"])
        .header_values("x-utf8", &["caf\u{e9}".as_bytes()])
        .header_values("x-ctl", &[b"a\x01b"])
        .header_values("x-empty", &[b""]);
    let (_, resp) = r.roundtrip(&req);
    let env = environ_lines(&resp.text());
    assert_eq!(env["HTTP_X_LATIN"], "'caf\\xe9 \\xff\\x80'");
    assert_eq!(env["HTTP_X_UTF8"], "'caf\\xc3\\xa9'");
    // A value `http` refuses (control byte) is still passed on, byte for byte.
    assert_eq!(env["HTTP_X_CTL"], "'a\\x01b'");
    assert_eq!(env["HTTP_X_EMPTY"], "''");
}

#[test]
fn row07_query_string_raw() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/environ?a=%26&b=%3D&c=%zz+d&e=\u{e9}"));
    let env = environ_lines(&resp.text());
    assert_eq!(env["QUERY_STRING"], "'a=%26&b=%3D&c=%zz+d&e=\\xc3\\xa9'");
}

#[test]
fn row08_remote_addr() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/environ"));
    let env = environ_lines(&resp.text());
    assert_eq!(env["REMOTE_ADDR"], "'127.0.0.1'");
}

#[test]
fn row09_wsgi_keys_true_to_the_deployment() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/environ"));
    let env = environ_lines(&resp.text());
    assert_eq!(env["wsgi.version"], "(1, 0)");
    assert_eq!(env["wsgi.url_scheme"], "'http'");
    assert_eq!(env["wsgi.multithread"], "False");
    assert_eq!(env["wsgi.multiprocess"], "False");
    assert_eq!(env["wsgi.run_once"], "False");
    assert_eq!(env["wsgi.input_terminated"], "True");
    assert_eq!(env["wsgi.input"], "<Input>");
    assert_eq!(env["wsgi.errors"], "<ErrorStream>");
    assert_eq!(env["wsgi.file_wrapper"], "<type>");
    drop(r);
    let mut r = Running::start("probe:application", |s| s.threads(3).multiprocess(true));
    let (_, resp) = r.roundtrip(&get("/environ"));
    let env = environ_lines(&resp.text());
    assert_eq!(env["wsgi.multithread"], "True");
    assert_eq!(env["wsgi.multiprocess"], "True");
}

// ------------------------------------------------------------------------------------------------
// Rows 10-13: input, errors

fn input(r: &mut Running, op: &str, body: &[u8]) -> String {
    let (_, resp) = r.roundtrip(&post(&format!("/input?{op}"), body));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.text()
}

#[test]
fn row10_input_read_forms() {
    let mut r = probe(1);
    let body = b"line one\nline two\n\nlast";
    assert_eq!(
        input(&mut r, "op=read", body),
        "b'line one\\nline two\\n\\nlast'\nb''\n"
    );
    assert_eq!(
        input(&mut r, "op=read_neg", body),
        "b'line one\\nline two\\n\\nlast'\n"
    );
    assert_eq!(
        input(&mut r, "op=readn&n=10", body),
        "b'line one\\nl'\nb'ine two\\n\\nl'\nb'ast'\nb''\n"
    );
    assert_eq!(
        input(&mut r, "op=readline", body),
        "b'line one\\n'\nb'line two\\n'\nb'\\n'\nb'last'\nb''\n"
    );
    assert_eq!(
        input(&mut r, "op=readline&size=5", body),
        "b'line '\nb'one\\n'\nb'line '\nb'two\\n'\nb'\\n'\nb'last'\nb''\n"
    );
    assert_eq!(
        input(&mut r, "op=readlines", body),
        "[b'line one\\n', b'line two\\n', b'\\n', b'last']\n[]\n"
    );
    assert_eq!(
        input(&mut r, "op=readlines&hint=12", body),
        "[b'line one\\n', b'line two\\n']\n[b'\\n', b'last']\n"
    );
    assert_eq!(
        input(&mut r, "op=iter", body),
        "b'line one\\n'\nb'line two\\n'\nb'\\n'\nb'last'\nb''\n"
    );
    assert_eq!(
        input(&mut r, "op=readinto", b"abcdefghij"),
        "b'abcd'\nb'efgh'\nb'ij'\nb''\n"
    );
    assert_eq!(
        input(&mut r, "op=buffered", body),
        "b'line one\\nline two\\n\\nlast'\n"
    );
    // Binary bodies are kept byte for byte.
    assert_eq!(
        input(&mut r, "op=read", b"\x00\xff\r\n"),
        "b'\\x00\\xff\\r\\n'\nb''\n"
    );
}

#[test]
fn row11_reading_past_the_end_returns_empty() {
    let mut r = probe(1);
    assert_eq!(input(&mut r, "op=read", b""), "b''\nb''\n");
    assert_eq!(input(&mut r, "op=readline", b""), "b''\n");
    assert_eq!(input(&mut r, "op=readn&n=100", b"ab"), "b'ab'\nb''\n");
}

#[test]
fn row12_input_terminated() {
    // Covered with the other wsgi.* keys; here: no CONTENT_LENGTH, the app may read to b''.
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/input?op=read"));
    assert_eq!(resp.text(), "b''\nb''\n");
}

#[test]
fn row13_wsgi_errors_goes_to_the_log() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/errors?token=e13"));
    assert_eq!(resp.text(), "ok");
    assert!(wait_log(&["wsgi.errors", "errors-line-e13"], TIMEOUT).is_some());
    assert!(wait_log(&["wsgi.errors", "partial-e13-more"], TIMEOUT).is_some());
}

// ------------------------------------------------------------------------------------------------
// Rows 14-18: start_response

#[test]
fn row14_exc_info_replaces_the_status_before_sending() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/exc_replace"));
    assert_eq!(resp.status, 503);
    assert_eq!(resp.reason, "Oops Replaced");
    assert_eq!(resp.header_str("x-replaced").as_deref(), Some("1"));
    assert_eq!(resp.text(), "replaced");
}

#[test]
fn row15_exc_info_reraised_once_sent_and_second_call_raises() {
    let mut r = probe(1);
    let id = r.send(&get("/exc_after_send?token=t15"));
    // The head and first chunk were committed, so the error cannot become a 500: the
    // connection is dropped (what was still buffered is discarded), never completed.
    assert!(r.wait_end(id, TIMEOUT));
    let c = r.conn(id);
    let text = String::from_utf8_lossy(&c.data);
    assert!(
        !text.contains("0\r\n\r\n"),
        "must not look complete: {text}"
    );
    assert!(!text.contains(" 500 "), "{text}");
    assert!(c.cancelled(), "{c:?}");
    assert!(wait_log(
        &[
            "/exc_after_send",
            "the response had started: closing the connection",
            "KeyError"
        ],
        TIMEOUT
    )
    .is_some());
    // The original KeyError came back out of start_response; close() was called.
    assert_eq!(
        wait_stats(&mut r, "t15", "closed=1 seen=1"),
        "closed=1 seen=1"
    );

    let (_, resp) = r.roundtrip(&get("/second_call"));
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        "second call raised AssertionError: start_response() called a second time without exc_info"
    );
}

#[test]
fn row16_write_callable() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/write"));
    assert_eq!(resp.status, 200);
    assert!(resp.chunked);
    assert_eq!(resp.text(), "one,two,three");
}

#[test]
fn row17_headers_go_with_the_first_chunk_late_start_response() {
    let mut r = probe(1);
    let (id, resp) = r.roundtrip(&get("/late"));
    assert_eq!(resp.status, 201);
    assert_eq!(resp.reason, "Created");
    assert_eq!(resp.header_str("x-late").as_deref(), Some("yes"));
    assert_eq!(resp.text(), "created");
    // Head and first chunk in one message.
    let first = r.frames.iter().find(|f| {
        let s = String::from_utf8_lossy(f);
        s.contains(&format!(":{id}, ")) && s.contains("HTTP/1.1 201")
    });
    assert!(String::from_utf8_lossy(first.expect("head frame")).contains("created"));
}

#[test]
fn row17_status_reason_phrase_kept() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/status?s=299+Custom+Thing"));
    assert_eq!((resp.status, resp.reason.as_str()), (299, "Custom Thing"));
    let (_, resp) = r.roundtrip(&get("/status?s=200+Fine"));
    assert!(resp.head.starts_with(b"HTTP/1.1 200 Fine\r\n"));
    let (_, resp) = r.roundtrip(&get("/headers"));
    assert_eq!(resp.header("x-latin"), Some(&b"caf\xe9"[..]));
    assert_eq!(resp.all("set-cookie"), ["a=1; Path=/", "b=2; Path=/"]);
    assert_eq!(resp.header("x-empty"), Some(&b""[..]));
}

#[test]
fn row18_invalid_headers_and_status_give_500_and_a_log_line() {
    let mut r = probe(1);
    for kind in [
        "crlf",
        "lf",
        "nul",
        "name",
        "colon",
        "hop",
        "te",
        "keepalive",
        "upgrade",
        "proxy",
        "nonlatin",
        "nonstr",
        "bytes",
        "triple",
        "notlist",
        "clen",
    ] {
        let (_, resp) = r.roundtrip(&get(&format!("/badheader?kind={kind}")));
        assert_eq!(resp.status, 500, "{kind}: {}", resp.text());
        assert!(
            !String::from_utf8_lossy(&resp.head).contains("Injected"),
            "{kind}"
        );
        assert!(
            wait_log(&["/badheader", "the application raised", "500"], TIMEOUT).is_some(),
            "{kind}"
        );
    }
    for (kind, want) in [
        (
            "crlf",
            "ValueError: response header \"X-Bad\" has a control character",
        ),
        (
            "name",
            "ValueError: invalid response header name \"Bad Name\"",
        ),
        (
            "hop",
            "ValueError: hop-by-hop header \"Connection\" is not allowed",
        ),
        (
            "nonlatin",
            "ValueError: response header \"X-Bad\" has characters outside latin-1",
        ),
        (
            "nonstr",
            "TypeError: response header names and values must be str",
        ),
        ("notlist", "TypeError: response headers must be a list"),
    ] {
        let (_, resp) = r.roundtrip(&get(&format!("/badheader?kind={kind}&catch=1")));
        assert!(resp.text().starts_with(want), "{kind}: {}", resp.text());
    }
    for kind in ["nospace", "short", "letters", "crlf", "bytes", "low"] {
        let (_, resp) = r.roundtrip(&get(&format!("/badstatus?kind={kind}")));
        assert_eq!(resp.status, 500, "{kind}");
    }
}

// ------------------------------------------------------------------------------------------------
// Rows 19-26: bodies

#[test]
fn row19_list_of_bytes_is_one_message_with_length() {
    let mut r = probe(1);
    let (id, resp) = r.roundtrip(&get("/list?n=4"));
    assert_eq!(resp.text(), "part0;part1;part2;part3;");
    assert_eq!(resp.header_str("content-length").as_deref(), Some("24"));
    assert!(!resp.chunked);
    assert_eq!(r.conn(id).messages, 1);
    // The hello case: a one-item list with its own Content-Length.
    let (id, resp) = r.roundtrip(&get("/hello"));
    assert_eq!(resp.text(), "Hello, world!");
    assert_eq!(r.conn(id).messages, 1);
}

#[test]
fn row20_generators_stream_chunked_and_close_is_called() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/gen?n=3&size=4&token=t20a"));
    assert!(resp.chunked);
    assert_eq!(resp.text(), "aaaabbbbcccc");
    assert_eq!(
        wait_stats(&mut r, "t20a", "closed=1 seen=0"),
        "closed=1 seen=0"
    );
    // With a Content-Length from the app: no chunking.
    let (_, resp) = r.roundtrip(&get("/gen?n=3&size=4&cl=1&token=t20b"));
    assert!(!resp.chunked);
    assert_eq!(resp.header_str("content-length").as_deref(), Some("12"));
    // HTTP/1.0 without a length: close-delimited.
    let id = r.send(&get("/gen?n=2&size=3&token=t20c").version("HTTP/1.0"));
    assert!(r.wait_end(id, TIMEOUT));
    let resp = r.response(id);
    assert!(resp.head.starts_with(b"HTTP/1.0 200 OK\r\n"));
    assert_eq!(resp.text(), "aaabbb");
    // A big stream: 8 MiB in 64 KiB chunks arrives whole.
    let (_, resp) = r.roundtrip(&get("/gen?n=128&size=65536&token=t20d"));
    assert_eq!(resp.body.len(), 8 << 20);
}

#[test]
fn row20_a_paused_generator_is_flushed_promptly() {
    let mut r = probe(1);
    let t0 = Instant::now();
    let id = r.send(&get("/slow?delay=1.5&token=t20e"));
    loop {
        r.pump(Duration::from_millis(10));
        if String::from_utf8_lossy(&r.conn(id).data).contains("tick1;") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "tick1 held back while the app sleeps"
        );
    }
    let resp = r.response(id);
    assert_eq!(resp.text(), "tick1;tick2;");
}

#[test]
fn row21_non_bytes_chunk_is_an_error() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/str_chunk?token=t21"));
    assert_eq!(resp.status, 500);
    assert_eq!(
        wait_stats(&mut r, "t21", "closed=1 seen=0"),
        "closed=1 seen=0"
    );
    assert!(wait_log(&["/str_chunk", "must yield bytes, not str"], TIMEOUT).is_some());
    let (_, resp) = r.roundtrip(&get("/non_iterable"));
    assert_eq!(resp.status, 500);
    let (_, resp) = r.roundtrip(&get("/no_start"));
    assert_eq!(resp.status, 500);
    assert!(wait_log(&["/no_start", "without calling start_response"], TIMEOUT).is_some());
}

#[test]
fn row22_close_called_on_error_and_on_disconnect() {
    let mut r = probe(1);
    // Error while streaming: the connection is dropped, close() called.
    let id = r.send(&get("/raise_after?token=t22a"));
    assert!(r.wait_end(id, TIMEOUT));
    assert!(r.conn(id).cancelled());
    assert_eq!(
        wait_stats(&mut r, "t22a", "closed=1 seen=0"),
        "closed=1 seen=0"
    );
    // Client gone mid-stream: iteration stops, close() called.
    let id = r.send(&get("/stream_forever?token=t22b"));
    r.pump(Duration::from_millis(300));
    r.disconnect(id);
    let s = wait_stats(&mut r, "t22b", "closed=1");
    let seen_then: u64 = s
        .strip_prefix("closed=1 seen=")
        .unwrap_or_else(|| panic!("close() not called after a disconnect: {s}"))
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stats(&mut r, "t22b"),
        s,
        "iteration went on after the disconnect ({seen_then})"
    );
    // close() raising is logged; the response itself was complete.
    let (_, resp) = r.roundtrip(&get("/raise_in_close"));
    assert_eq!(resp.text(), "body");
    assert!(wait_log(&["/raise_in_close", "close()", "close() failed"], TIMEOUT).is_some());
}

#[test]
fn row22_disconnect_is_visible_to_the_app() {
    let mut r = probe(2);
    let id = r.send(&get("/wait_disconnect?token=t22c"));
    std::thread::sleep(Duration::from_millis(200));
    r.disconnect(id);
    assert_eq!(
        wait_stats(&mut r, "t22c", "closed=0 seen=1"),
        "closed=0 seen=1"
    );
}

#[test]
fn row23_short_body_against_content_length_closes() {
    let mut r = probe(1);
    let id = r.send(&get("/clen?declared=10&actual=5&token=t23"));
    assert!(r.wait_end(id, TIMEOUT));
    let c = r.conn(id);
    assert!(c.closed);
    let text = String::from_utf8_lossy(&c.data);
    assert!(text.contains("Content-Length: 10\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nxxxxx"), "{text}");
    assert!(wait_log(&["shorter than its Content-Length"], TIMEOUT).is_some());
    assert_eq!(
        wait_stats(&mut r, "t23", "closed=1 seen=0"),
        "closed=1 seen=0"
    );
}

#[test]
fn row24_file_wrapper() {
    let mut r = probe(1);
    let want: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (_, resp) = r.roundtrip(&get("/file?size=1000000&cl=1"));
    assert_eq!(
        resp.header_str("content-length").as_deref(),
        Some("1000000")
    );
    assert!(resp.body == want);
    let (_, resp) = r.roundtrip(&get("/file?size=1000000"));
    assert!(resp.chunked);
    assert!(resp.body == want);
    // Wrapped by a middleware: plain iteration over the wrapper.
    let (_, resp) = r.roundtrip(&get("/file?size=100000&middleware=1"));
    assert!(resp.body == want[..100_000]);
}

#[test]
fn row25_head_204_304_carry_no_body() {
    let mut r = probe(1);
    let (id, resp) = r.roundtrip(&get("/hello").method("HEAD"));
    assert_eq!(resp.header_str("content-length").as_deref(), Some("13"));
    r.pump(Duration::from_millis(100));
    assert!(
        r.conn(id).data.ends_with(b"\r\n\r\n"),
        "HEAD answer carries a body"
    );
    let (id, resp) = r.roundtrip(&get("/gen?n=2&size=3").method("HEAD"));
    assert_eq!(resp.status, 200);
    r.pump(Duration::from_millis(100));
    assert!(r.conn(id).data.ends_with(b"\r\n\r\n"));
    for s in ["204+No+Content", "304+Not+Modified"] {
        let (id, resp) = r.roundtrip(&get(&format!("/nobody?s={s}")));
        assert!(resp.status == 204 || resp.status == 304);
        r.pump(Duration::from_millis(100));
        let data = r.conn(id).data;
        assert!(
            data.ends_with(b"\r\n\r\n"),
            "{}",
            String::from_utf8_lossy(&data)
        );
        assert!(!String::from_utf8_lossy(&data).contains("Transfer-Encoding"));
    }
}

#[test]
fn row26_app_exception_gives_500_and_the_worker_goes_on() {
    let mut r = probe(1);
    let (_, resp) = r.roundtrip(&get("/raise"));
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), "Internal Server Error\n");
    let line = wait_log(
        &["GET /raise", "the application raised; 500", "Traceback"],
        TIMEOUT,
    )
    .expect("traceback logged");
    assert!(line.contains("RuntimeError: probe: the application failed on purpose"));
    assert!(
        !line.contains("HTTP_HOST"),
        "the environ must not be logged"
    );
    // HEAD: the 500 has no body either.
    let (_, resp) = r.roundtrip(&get("/raise").method("HEAD"));
    assert_eq!(resp.status, 500);
    // Same (single) worker, next request fine.
    let (_, resp) = r.roundtrip(&get("/hello"));
    assert_eq!(resp.text(), "Hello, world!");
}

// ------------------------------------------------------------------------------------------------
// Rows 27-30: threads, shutdown

#[test]
fn row27_threads_release_the_gil_while_waiting() {
    let mut r = probe(4);
    let t0 = Instant::now();
    let ids: Vec<u64> = (0..4).map(|_| r.send(&get("/sleep?t=0.6"))).collect();
    let mut names = std::collections::HashSet::new();
    for id in ids {
        let resp = r.response(id);
        names.insert(resp.text().rsplit(' ').next().unwrap().to_string());
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(1800),
        "4 x 0.6 s on 4 threads took {took:?}"
    );
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn row30_shutdown_drains_an_in_flight_request() {
    let mut r = probe(1);
    let id = r.send(&get("/sleep?t=0.5"));
    std::thread::sleep(Duration::from_millis(150));
    let t0 = Instant::now();
    r.stop();
    assert!(t0.elapsed() < Duration::from_secs(3));
    let resp = r.response(id);
    assert_eq!(resp.status, 200);
}

#[test]
fn validator_accepts_the_bridge() {
    let mut r = Running::start("validated:application", |s| s.threads(2));
    for req in [
        get("/hello"),
        get("/environ?x=1"),
        post("/input?op=readn&n=3", b"abcdefg"),
        post("/input?op=readline", b"a\nb\n"),
        post("/input?op=readlines", b"a\nb\n"),
        post("/input?op=iter", b"a\nb\n"),
        get("/gen?n=3&size=2"),
        get("/list?n=2"),
        get("/late"),
        get("/file?size=10000&cl=1"),
        get("/hello").method("HEAD"),
    ] {
        let (_, resp) = r.roundtrip(&req);
        assert!(
            resp.status < 300,
            "{:?}: {}",
            String::from_utf8_lossy(&req.build()),
            resp.text()
        );
    }
}
