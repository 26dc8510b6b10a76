//! The reliability soak: long mixed traffic through a real Mongrel2, first to the raw Rust
//! handlers (examples/streaming.rs, and examples/upload.rs for the uploads), then to the
//! `m2wsgi` command with `--num-threads 2` serving tests/apps/soak.py, which answers byte for byte
//! like them. One client checks both, with the same requests in the same order.
//!
//! The mix, drawn per request from its number: small GETs (1 B to 4 KiB), 1 MiB responses,
//! 100 KiB POST bodies (above `limits.content_length` = 64 KiB: Mongrel2's async upload through
//! a temp file), chunked streamed responses (generators), and clients that leave mid-response
//! (read a part of a 1 MiB or of a long streamed response, then close the socket). Several
//! client threads on keep-alive connections (a fresh one after a leave, after a failure, or
//! after a random number of requests); every request has a 5 s deadline (connect, send and the
//! whole response). The requests are split into a warm-up and phases; after each, once the
//! handlers are quiet, one summary line: sent, answered, client-left, failed by reason, each
//! handler's RSS (`VmRSS`) and open descriptors against their values after the warm-up, and the
//! temp files in the upload directory; the end adds the totals and the exit on SIGTERM.
//!
//! # Mongrel2's own losses
//!
//! Mongrel2 1.12 sometimes loses a request after a client leaves mid-response, whatever the
//! handler: when a reply for the client that left cannot be delivered, Mongrel2 closes that
//! connection from its handler task (error log: `Failed to deliver to connection N on socket F`),
//! and the next connection it accepts, on descriptor F again, may never have its request read:
//! usually the first one, sometimes a later one, and now and then the bytes are parsed into
//! Mongrel2's own `400 Bad Request`. A failed request is counted in this **Mongrel2 class** when
//! all of this holds:
//!
//! 1. Mongrel2 never handed it to a handler: its access log, which Mongrel2 writes right after
//!    the hand-over, has no line for the request's path (each request carries its number in the
//!    path), and the log is complete (as many lines as requests Mongrel2 handed over);
//! 2. the client got no response byte (deadline passed, or the connection was closed or reset
//!    first), or an answer Mongrel2 wrote itself (its `Server` header; no handler saw the
//!    request, by 1);
//! 3. its connection was opened after a client had left mid-response.
//!
//! Everything else is a failure outside the class. For each Mongrel2-class failure the soak also
//! notes the descriptor Mongrel2 serves the connection on and whether the error log reported a
//! failed delivery on that descriptor around the connect (printed, not asserted). The raw
//! handlers' run measures the class under the same traffic.
//!
//! # Assertions
//!
//! Every run must send all its requests (the time bound, or 200 failures outside the class, stop
//! it early and fail the test). m2wsgi: no failure outside the Mongrel2 class, and not more in
//! it than the raw handlers (scaled to the same number of requests) plus a margin (see
//! [`margin`]); its RSS grew less than 5 % from the end of the warm-up to the end; its
//! descriptor count at the end is within 2 of the count after the warm-up (both taken when quiet;
//! the slack is for a ZeroMQ reconnect or a worker still closing an upload's temp file at that
//! instant); no temp file left; still running at the end, and exit status 0 on SIGTERM. The raw handlers: the same, except the RSS trend
//! (printed only: a few hundred KiB of allocator slack are 5 % of their 7 to 10 MiB).
//!
//! # Running
//!
//! `cargo test --features e2e,wsgi --test soak` runs the short variant (20,000 requests to m2wsgi
//! and 10,000 to the raw handlers, under a minute on 2 cores; `scripts/test.sh` runs it);
//! `scripts/soak.sh` runs the same test with larger figures (1,000,000 requests to each by
//! default) through these variables:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SOAK_REQUESTS` | requests to m2wsgi, warm-up included | 20000 |
//! | `SOAK_RAW_REQUESTS` | requests to the raw handlers (0: skip them) | half of `SOAK_REQUESTS` |
//! | `SOAK_THREADS` | client threads | 4 |
//! | `SOAK_PHASES` | phases after the warm-up (one summary line each) | 4, or one per 100,000 requests |
//! | `SOAK_WARMUP` | warm-up requests | 5 % (at least 500, at most 20,000) |
//! | `SOAK_LEAVES` | per mille of requests that leave mid-response | 80 |
//! | `SOAK_MAX_SECS` | time bound per handler | 60 + requests / 100 |
//! | `SOAK_DEFAULT_MALLOC` | `1`: leave glibc's malloc tuning alone (see [`handler_env`]) | unset |
#![cfg(all(feature = "e2e", feature = "wsgi"))]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::client::{ClientError, Conn, Head};
use support::mongrel2::{Handler, Mongrel2};
use support::process::{crc32, pattern, Proc};

/// Every request's deadline: connect, send, and the whole response.
const DEADLINE: Duration = Duration::from_secs(5);
/// Mongrel2's `limits.content_length`: bodies above it are async uploads.
const CONTENT_LIMIT: usize = 64 * 1024;
const UPLOAD_SIZE: usize = 100 * 1024;
const BIG: usize = 1 << 20;
/// A handler's run stops early after this many failures outside the Mongrel2 class.
const MAX_FAILURES: u64 = 200;
/// Worker threads of every handler.
const HANDLER_THREADS: &str = "2";
/// The RSS growth allowed to m2wsgi after the warm-up, in percent.
const RSS_TREND_LIMIT: f64 = 5.0;
/// Descriptors that may differ between the quiet samples (see the module docs).
const FD_SLACK: usize = 2;
/// Lines of Mongrel2's access log written for the two probes of each run.
const PROBES: u64 = 2;

/// Prints a line to stderr past the test harness's capture, so that the figures are in the
/// output of a passing `cargo test` too.
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

// ------------------------------------------------------------------------------------------------
// Settings

#[derive(Debug, Clone)]
struct Settings {
    requests: u64,
    raw_requests: u64,
    threads: usize,
    phases: u64,
    warmup: u64,
    weights: [(Kind, u64); 6],
    max_time: Duration,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

impl Settings {
    fn from_env() -> Settings {
        let requests = env_u64("SOAK_REQUESTS").unwrap_or(20_000).max(10);
        let raw_requests = env_u64("SOAK_RAW_REQUESTS").unwrap_or(requests / 2);
        let threads = env_u64("SOAK_THREADS").unwrap_or(4).clamp(1, 64) as usize;
        let phases = env_u64("SOAK_PHASES")
            .unwrap_or((requests / 100_000).max(4))
            .clamp(1, 10_000);
        let warmup = env_u64("SOAK_WARMUP").unwrap_or((requests / 20).clamp(500, 20_000));
        let leaves = env_u64("SOAK_LEAVES").unwrap_or(80).min(1000);
        let max_time = Duration::from_secs(
            env_u64("SOAK_MAX_SECS").unwrap_or(60 + requests.max(raw_requests) / 100),
        );
        Settings {
            requests,
            raw_requests,
            threads,
            phases,
            warmup,
            weights: weights(leaves),
            max_time,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The mix

/// A 64-bit mix (splitmix64's finaliser): request number -> pseudo-random bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// GET, 1 B to 4 KiB with a Content-Length.
    Small,
    /// GET, 1 MiB with a Content-Length.
    Big,
    /// POST of 100 KiB: an async upload.
    Upload,
    /// GET, a chunked stream of 4 to 12 chunks of 4 KiB (examples/streaming.rs sends each chunk
    /// as a message of its own, and Mongrel2 closes a client with 16 messages queued for it).
    Stream,
    /// GET 1 MiB, read 1 B to 256 KiB of the body, close.
    LeaveBig,
    /// GET a stream of 2,000 chunks of 1 KiB, one every 15 ms (30 s unless the handler stops
    /// when the client goes), read 1 B to 3 KiB, close. (m2wsgi sends what a generator yielded
    /// once it pauses for 10 ms, so each chunk goes out at once.)
    LeaveStream,
}

/// Per mille of each kind: `leaves` for the two that leave (half each), the rest in the
/// proportions 690 : 50 : 70 : 110 of the default mix (which has 80 leaving).
fn weights(leaves: u64) -> [(Kind, u64); 6] {
    let rest = 1000 - leaves;
    let big = 50 * rest / 920;
    let upload = 70 * rest / 920;
    let stream = 110 * rest / 920;
    [
        (Kind::Small, rest - big - upload - stream),
        (Kind::Big, big),
        (Kind::Upload, upload),
        (Kind::Stream, stream),
        (Kind::LeaveBig, leaves / 2),
        (Kind::LeaveStream, leaves - leaves / 2),
    ]
}

fn kind_of(i: u64, weights: &[(Kind, u64); 6]) -> Kind {
    let mut r = mix(i) % 1000;
    for (k, w) in weights {
        if r < *w {
            return *k;
        }
        r -= w;
    }
    unreachable!("the weights add up to 1000")
}

/// The upload bodies (a few, so that the client does not generate 100 KiB per request) and the
/// answers they get.
fn uploads() -> &'static [(Vec<u8>, String)] {
    static UPLOADS: OnceLock<Vec<(Vec<u8>, String)>> = OnceLock::new();
    UPLOADS.get_or_init(|| {
        (0..8)
            .map(|s| {
                let b = pattern(UPLOAD_SIZE, s + 1);
                let answer = format!("size={} crc32={:08x}\n", b.len(), crc32(&b));
                (b, answer)
            })
            .collect()
    })
}

/// What the client expects back.
enum Expect {
    /// `?bytes=N`: the 64 KiB [`block`] repeated, cut to N bytes.
    Bytes(usize),
    /// `?chunks=N&size=B`: the chunks of examples/streaming.rs.
    Chunks { chunks: usize, size: usize },
    /// The upload answer.
    Text(&'static str),
}

struct Planned {
    path: String,
    request: Vec<u8>,
    expect: Expect,
    /// For the kinds that leave: how many body bytes to read first.
    leave_after: Option<usize>,
}

fn plan(i: u64, kind: Kind) -> Planned {
    let r = mix(i ^ 0x5EED);
    let get = |path: &str, query: String| -> Vec<u8> {
        format!("GET {path}?{query} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
    };
    let (path, request, expect, leave_after) = match kind {
        Kind::Small => {
            let n = 1 + (r % 4096) as usize;
            let path = format!("/s/{i}");
            let req = get(&path, format!("bytes={n}"));
            (path, req, Expect::Bytes(n), None)
        }
        Kind::Big => {
            let path = format!("/b/{i}");
            let req = get(&path, format!("bytes={BIG}"));
            (path, req, Expect::Bytes(BIG), None)
        }
        Kind::Upload => {
            let all = uploads();
            let (body, answer) = &all[(r % all.len() as u64) as usize];
            let path = format!("/up/{i}");
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(body);
            (path, req, Expect::Text(answer.as_str()), None)
        }
        Kind::Stream => {
            let chunks = 4 + (r % 9) as usize;
            let path = format!("/c/{i}");
            let req = get(&path, format!("chunks={chunks}&size=4096&delay_ms=0"));
            (path, req, Expect::Chunks { chunks, size: 4096 }, None)
        }
        Kind::LeaveBig => {
            let path = format!("/lb/{i}");
            let req = get(&path, format!("bytes={BIG}"));
            let after = 1 + (r % (256 * 1024)) as usize;
            (path, req, Expect::Bytes(BIG), Some(after))
        }
        Kind::LeaveStream => {
            let path = format!("/ls/{i}");
            let req = get(&path, "chunks=2000&size=1024&delay_ms=15".to_owned());
            let after = 1 + (r % 3072) as usize;
            let expect = Expect::Chunks {
                chunks: 2000,
                size: 1024,
            };
            (path, req, expect, Some(after))
        }
    };
    Planned {
        path,
        request,
        expect,
        leave_after,
    }
}

/// The 64 KiB block that `?bytes=N` bodies repeat: byte k is `a` + k % 26.
fn block() -> &'static [u8] {
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK.get_or_init(|| (0..65536).map(|k| b'a' + (k % 26) as u8).collect())
}

/// Chunk `i` of examples/streaming.rs: `chunk %06d\n`, cut or padded with `.`, last byte `\n`.
fn stream_chunk(i: usize, size: usize) -> Vec<u8> {
    let mut c = format!("chunk {i:06}\n").into_bytes();
    c.resize(size.max(1), b'.');
    if let Some(last) = c.last_mut() {
        *last = b'\n';
    }
    c
}

fn expected_len(e: &Expect) -> usize {
    match e {
        Expect::Bytes(n) => *n,
        Expect::Chunks { chunks, size } => chunks * size,
        Expect::Text(t) => t.len(),
    }
}

/// Whether `body` is the expected body (`whole`) or a beginning of it.
fn body_ok(expect: &Expect, body: &[u8], whole: bool) -> bool {
    let len = expected_len(expect);
    if body.len() > len || (whole && body.len() != len) {
        return false;
    }
    match expect {
        Expect::Bytes(_) => {
            let block = block();
            body.chunks(block.len())
                .all(|piece| piece == &block[..piece.len()])
        }
        Expect::Chunks { size, .. } => body
            .chunks(*size)
            .enumerate()
            .all(|(i, got)| stream_chunk(i, *size).starts_with(got)),
        Expect::Text(t) => t.as_bytes().starts_with(body),
    }
}

// ------------------------------------------------------------------------------------------------
// Outcomes and counts

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Reason {
    Timeout,
    WrongStatus,
    ShortBody,
    BadBody,
    ConnectionError,
}

const REASONS: [(Reason, &str); 5] = [
    (Reason::Timeout, "timeout"),
    (Reason::WrongStatus, "wrong status"),
    (Reason::ShortBody, "short body"),
    (Reason::BadBody, "bad body"),
    (Reason::ConnectionError, "connection error"),
];

/// Where Mongrel2's error log stood at some moment: its length in bytes.
type LogMark = u64;

#[derive(Debug, Clone)]
struct Failure {
    reason: Reason,
    kind: Kind,
    path: String,
    /// Response bytes received.
    received: usize,
    /// The response came from Mongrel2 itself (its `Server` header).
    mongrel2_answer: bool,
    /// The first request on its connection.
    first_on_conn: bool,
    /// Its connection was opened right after this client thread left mid-response.
    after_own_leave: bool,
    /// Leaves by any client before its connection was opened.
    leaves_before_connect: u64,
    /// Milliseconds from the latest leave (any client) to the connect.
    ms_since_leave: Option<u64>,
    local_port: u16,
    /// The descriptor Mongrel2 served the connection on, when it still had it at the failure.
    mongrel2_fd: Option<u32>,
    /// Mongrel2's error log at the connect and at the failure.
    error_log_span: (LogMark, LogMark),
    detail: String,
}

impl Failure {
    /// Conditions 2 and 3 of the Mongrel2 class (the access log decides condition 1).
    fn mongrel2_shape(&self) -> bool {
        let nothing_or_mongrel2 = match self.reason {
            Reason::Timeout | Reason::ConnectionError => self.received == 0,
            Reason::WrongStatus => self.mongrel2_answer,
            _ => false,
        };
        nothing_or_mongrel2 && self.leaves_before_connect > 0
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct KindTime {
    n: u64,
    total: Duration,
    max: Duration,
}

#[derive(Debug, Default, Clone)]
struct Counts {
    sent: u64,
    answered: u64,
    left: u64,
    failures: Vec<Failure>,
    /// Requests and their time (whatever the outcome), by kind.
    by_kind: HashMap<Kind, KindTime>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.left += other.left;
        self.failures.extend(other.failures.iter().cloned());
        for (k, t) in &other.by_kind {
            let e = self.by_kind.entry(*k).or_default();
            e.n += t.n;
            e.total += t.total;
            e.max = e.max.max(t.max);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Mongrel2's logs

/// Mongrel2's access log, read as it grows: which failed requests' paths it names, and how
/// many lines it has (one per request Mongrel2 handed to a handler).
#[derive(Debug, Default)]
struct AccessLog {
    offset: u64,
    lines: u64,
    /// Paths of failed requests -> whether a line names them.
    failed: HashMap<String, bool>,
}

impl AccessLog {
    fn watch(&mut self, failures: &[Failure]) {
        for f in failures {
            self.failed.entry(f.path.clone()).or_insert(false);
        }
    }

    fn handed_over(&self, path: &str) -> bool {
        self.failed.get(path).copied().unwrap_or(false)
    }

    /// Reads the new complete lines (each a tnetstring list whose path element is `N:/path`).
    fn scan(&mut self, log: &Path) {
        let Ok(mut f) = std::fs::File::open(log) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(f);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(n) if n > 0 && line.last() == Some(&b'\n') => {
                    self.offset += n as u64;
                    self.lines += 1;
                    if self.failed.is_empty() {
                        continue;
                    }
                    for piece in line.split(|b| *b == b',') {
                        let value = piece.splitn(2, |b| *b == b':').nth(1).unwrap_or(&[]);
                        if value.first() != Some(&b'/') {
                            continue;
                        }
                        if let Some(seen) = std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| self.failed.get_mut(v))
                        {
                            *seen = true;
                        }
                    }
                }
                _ => break, // the end, or a line still being written: read it next time
            }
        }
    }
}

fn log_mark(log: &Path) -> LogMark {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// Whether Mongrel2's error log, between a little before `span.0` and `span.1`, reports a failed
/// delivery to a client on descriptor `fd` (handler.c: `Error sending raw message to HTTP
/// listener on FD F, closing them` / `Failed to deliver to connection N on socket F`).
fn delivery_failed_on(error_log: &Path, span: (LogMark, LogMark), fd: u32) -> bool {
    let from = span.0.saturating_sub(4096);
    let Ok(mut f) = std::fs::File::open(error_log) else {
        return false;
    };
    let mut text = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err()
        || f.take(span.1.saturating_sub(from) + 4096)
            .read_to_end(&mut text)
            .is_err()
    {
        return false;
    }
    let text = String::from_utf8_lossy(&text);
    let a = format!("HTTP listener on FD {fd}, closing them");
    let b = format!(" on socket {fd}\n");
    text.lines().any(|l| l.contains(&a)) || text.contains(&b)
}

/// The descriptor Mongrel2 (process `m2_pid`, listening on `http_port`) holds the loopback
/// connection from `client_port` on, from /proc.
fn mongrel2_fd(m2_pid: u32, http_port: u16, client_port: u16) -> Option<u32> {
    let tcp = std::fs::read_to_string(format!("/proc/{m2_pid}/net/tcp")).ok()?;
    let (local, remote) = (
        format!("0100007F:{http_port:04X}"),
        format!("0100007F:{client_port:04X}"),
    );
    let inode = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2] == remote && f[9] != "0").then(|| f[9].to_owned())
    })?;
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{m2_pid}/fd"))
        .ok()?
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == target))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
}

/// Failures sorted by what they are, once Mongrel2's logs have been read.
#[derive(Debug, Default, Clone)]
struct Classified {
    /// The Mongrel2 class (see the module docs).
    mongrel2: u64,
    /// ... of which on the first request of the connection.
    mongrel2_first: u64,
    /// ... of which answered by Mongrel2 itself.
    mongrel2_answered: u64,
    /// ... of which on a connection opened right after the same client's leave.
    mongrel2_own_leave: u64,
    /// ... of which on a descriptor Mongrel2's error log had just reported a failed delivery on.
    mongrel2_fd_reused: u64,
    /// ... the longest time from the latest leave to the connect.
    mongrel2_max_ms: u64,
    /// Everything else, by reason.
    other: HashMap<Reason, u64>,
    other_total: u64,
    /// The access log has fewer lines than the requests Mongrel2 answered through a handler:
    /// condition 1 cannot be checked, so nothing is put in the Mongrel2 class.
    log_incomplete: bool,
}

fn classify(
    counts: &Counts,
    access: &AccessLog,
    error_log: &Path,
    handed_over_at_least: u64,
) -> Classified {
    let mut c = Classified {
        log_incomplete: access.lines < handed_over_at_least,
        ..Classified::default()
    };
    for f in &counts.failures {
        if !c.log_incomplete && f.mongrel2_shape() && !access.handed_over(&f.path) {
            c.mongrel2 += 1;
            c.mongrel2_first += u64::from(f.first_on_conn);
            c.mongrel2_answered += u64::from(f.reason == Reason::WrongStatus);
            c.mongrel2_own_leave += u64::from(f.after_own_leave);
            c.mongrel2_max_ms = c.mongrel2_max_ms.max(f.ms_since_leave.unwrap_or(0));
            let reused = f
                .mongrel2_fd
                .is_some_and(|fd| delivery_failed_on(error_log, f.error_log_span, fd));
            c.mongrel2_fd_reused += u64::from(reused);
        } else {
            *c.other.entry(f.reason).or_default() += 1;
            c.other_total += 1;
        }
    }
    c
}

// ------------------------------------------------------------------------------------------------
// The client threads

/// What all client threads of a run share.
struct Shared {
    addr: SocketAddr,
    m2_pid: u32,
    error_log: PathBuf,
    weights: [(Kind, u64); 6],
    start: Instant,
    /// When the run must stop (the time bound).
    stop_at: Instant,
    /// Set when the run stops early (time bound, too many failures).
    stop: AtomicBool,
    /// Leaves so far, by any client.
    leaves: AtomicU64,
    /// Microseconds from `start` to the latest leave.
    last_leave_us: AtomicU64,
    /// Failures that cannot be in the Mongrel2 class, so far.
    bad: AtomicU64,
}

/// A client thread's connection and what it knows about it.
#[derive(Default)]
struct ClientState {
    conn: Option<Conn>,
    /// Requests the connection may still carry before the client closes it.
    budget: u64,
    /// The previous request ended with a leave.
    just_left: bool,
    /// About the current connection, from its connect:
    after_own_leave: bool,
    leaves_at_connect: u64,
    ms_since_leave: Option<u64>,
    error_log_at_connect: LogMark,
}

/// Sends request `i` and reads its answer: Ok(true) answered as expected, Ok(false) the client
/// left mid-response as planned.
fn one_request(shared: &Shared, state: &mut ClientState, i: u64) -> Result<bool, Failure> {
    let kind = kind_of(i, &shared.weights);
    let p = plan(i, kind);
    let deadline = Instant::now() + DEADLINE;
    if state.budget == 0 {
        state.conn = None;
    }
    let fail = |state: &mut ClientState, reason: Reason, head: Option<&Head>, detail: String| {
        let conn = state.conn.take();
        let received = conn.as_ref().map_or(0, Conn::received);
        let local_port = conn.as_ref().map_or(0, |c| c.local_port);
        // While the connection is still open: which descriptor Mongrel2 has it on.
        let mongrel2_fd = conn
            .as_ref()
            .and_then(|c| mongrel2_fd(shared.m2_pid, shared.addr.port(), c.local_port));
        let f = Failure {
            reason,
            kind,
            path: p.path.clone(),
            received,
            mongrel2_answer: head
                .and_then(|h| h.header("server"))
                .is_some_and(|s| s.starts_with(b"Mongrel2")),
            first_on_conn: conn.as_ref().is_none_or(|c| c.requests <= 1),
            after_own_leave: state.after_own_leave,
            leaves_before_connect: state.leaves_at_connect,
            ms_since_leave: state.ms_since_leave,
            local_port,
            mongrel2_fd,
            error_log_span: (state.error_log_at_connect, log_mark(&shared.error_log)),
            detail,
        };
        state.just_left = false;
        f
    };
    let reason_of = |e: &ClientError, head_seen: bool| -> Reason {
        match e {
            ClientError::Timeout { .. } => Reason::Timeout,
            ClientError::Malformed { .. } => Reason::BadBody,
            ClientError::Closed { .. } | ClientError::Io { .. } if head_seen => Reason::ShortBody,
            ClientError::Closed { .. } | ClientError::Io { .. } => Reason::ConnectionError,
        }
    };
    if state.conn.is_none() {
        state.after_own_leave = state.just_left;
        state.leaves_at_connect = shared.leaves.load(Ordering::SeqCst);
        state.ms_since_leave = (state.leaves_at_connect > 0).then(|| {
            let now = shared.start.elapsed().as_micros() as u64;
            now.saturating_sub(shared.last_leave_us.load(Ordering::SeqCst)) / 1000
        });
        state.error_log_at_connect = log_mark(&shared.error_log);
        state.budget = 1 + mix(i ^ 0xC0FFEE) % 64;
        match Conn::connect(shared.addr, deadline) {
            Ok(c) => state.conn = Some(c),
            Err(e) => {
                let r = reason_of(&e, false);
                return Err(fail(state, r, None, format!("connect: {e}")));
            }
        }
    }
    state.budget -= 1;
    let conn = state.conn.as_mut().expect("connected");
    if let Err(e) = conn.send(&p.request, deadline) {
        let r = reason_of(&e, false);
        return Err(fail(state, r, None, format!("send: {e}")));
    }
    let head = match conn.read_head(deadline) {
        Ok(h) => h,
        Err(e) => {
            let r = reason_of(&e, false);
            return Err(fail(state, r, None, format!("head: {e}")));
        }
    };
    let mut body = Vec::new();
    if head.status != 200 {
        // Who answered (Mongrel2 or the handler) shows in the head and the body.
        let soon = deadline.min(Instant::now() + Duration::from_secs(1));
        let _ = conn.read_body(&head, &mut body, Some(512), soon);
        body.truncate(512);
        let text = String::from_utf8_lossy(&[&head.raw[..], &body[..]].concat()).into_owned();
        let detail = format!("status {}: {text:?}", head.status);
        return Err(fail(state, Reason::WrongStatus, Some(&head), detail));
    }
    if let Err(e) = conn.read_body(&head, &mut body, p.leave_after, deadline) {
        let r = reason_of(&e, true);
        let detail = format!("body ({} bytes read): {e}", body.len());
        return Err(fail(state, r, Some(&head), detail));
    }
    if let Some(after) = p.leave_after {
        if body.len() < after || !body_ok(&p.expect, &body, false) {
            let detail = format!("{} bytes before leaving, not the expected ones", body.len());
            return Err(fail(state, Reason::BadBody, Some(&head), detail));
        }
        // Leave mid-response: close with the rest of the response unread.
        state.conn = None;
        state.just_left = true;
        shared.leaves.fetch_add(1, Ordering::SeqCst);
        let now = shared.start.elapsed().as_micros() as u64;
        shared.last_leave_us.store(now, Ordering::SeqCst);
        return Ok(false);
    }
    if !body_ok(&p.expect, &body, true) {
        let short = body.len() < expected_len(&p.expect);
        let reason = if short {
            Reason::ShortBody
        } else {
            Reason::BadBody
        };
        let detail = format!("{} body bytes, not the expected ones", body.len());
        return Err(fail(state, reason, Some(&head), detail));
    }
    state.just_left = false;
    if head.close {
        state.conn = None;
    }
    Ok(true)
}

/// Runs requests `from..to` on one client thread per entry of `states` (each takes the next
/// number), keeping each thread's connection in its state.
fn run_requests(shared: &Shared, states: &mut [ClientState], from: u64, to: u64) -> Counts {
    let next = AtomicU64::new(from);
    let all = Mutex::new(Counts::default());
    std::thread::scope(|s| {
        for state in states.iter_mut() {
            let (next, all) = (&next, &all);
            s.spawn(move || {
                let mut c = Counts::default();
                while !shared.stop.load(Ordering::SeqCst) {
                    if Instant::now() >= shared.stop_at {
                        shared.stop.store(true, Ordering::SeqCst);
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= to {
                        break;
                    }
                    c.sent += 1;
                    let t0 = Instant::now();
                    let result = one_request(shared, state, i);
                    let took = t0.elapsed();
                    let e = c.by_kind.entry(kind_of(i, &shared.weights)).or_default();
                    e.n += 1;
                    e.total += took;
                    e.max = e.max.max(took);
                    match result {
                        Ok(true) => c.answered += 1,
                        Ok(false) => c.left += 1,
                        Err(f) => {
                            if !f.mongrel2_shape()
                                && shared.bad.fetch_add(1, Ordering::SeqCst) + 1 >= MAX_FAILURES
                            {
                                shared.stop.store(true, Ordering::SeqCst);
                            }
                            c.failures.push(f);
                        }
                    }
                }
                all.lock().unwrap_or_else(|e| e.into_inner()).add(&c);
            });
        }
    });
    all.into_inner().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------------------------------------
// What is measured on the handlers

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// CPU time (user + system) of process `pid` so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("upload."))
            .count()
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: usize,
}

/// Waits (at most 3 s) until the run is quiet: no temp file in the upload directory and every
/// handler's descriptor count the same twice 100 ms apart (a worker that has sent its last
/// answer may still be closing the upload it read); then samples each handler and counts the
/// temp files.
fn settle_and_sample(pids: &[u32], upload_dir: &Path) -> (Vec<Sample>, usize) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last: Vec<usize> = pids.iter().map(|p| fd_count(*p)).collect();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now: Vec<usize> = pids.iter().map(|p| fd_count(*p)).collect();
        let quiet = now == last && temp_files(upload_dir) == 0;
        last = now;
        if quiet || Instant::now() >= deadline {
            break;
        }
    }
    let samples = pids
        .iter()
        .map(|p| Sample {
            rss_kib: rss_kib(*p),
            fds: fd_count(*p),
        })
        .collect();
    (samples, temp_files(upload_dir))
}

// ------------------------------------------------------------------------------------------------
// A target: Mongrel2 and the handlers under test

struct Target {
    name: &'static str,
    m2: Mongrel2,
    /// The handler processes, by name.
    procs: Vec<(&'static str, Proc)>,
    upload_dir: PathBuf,
}

/// glibc's `M_MMAP_THRESHOLD` for the handlers (see [`handler_env`]).
const MMAP_THRESHOLD: &str = "131072";

/// The handlers' environment: `MALLOC_MMAP_THRESHOLD_=131072` unless `SOAK_DEFAULT_MALLOC=1`.
/// By default glibc raises its mmap threshold each time a large buffer is freed (up to 32 MiB),
/// after which 1 MiB buffers come from, and go back to, per-thread arenas that keep up to twice
/// the threshold untrimmed; which arena holds a freed buffer when RSS is read then moves the
/// figure by a MiB or two (10 % of m2wsgi's 20 MiB) without any memory being held. A fixed
/// threshold turns that adjustment off: buffers of 128 KiB and more are mapped and unmapped, so
/// RSS counts what the process holds, and a leak of any size still shows.
fn handler_env() -> Vec<(&'static str, &'static str)> {
    if std::env::var("SOAK_DEFAULT_MALLOC").is_ok_and(|v| v == "1") {
        Vec::new()
    } else {
        vec![("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)]
    }
}

/// Mongrel2 with `/` routed to `main` and `/up` to `uploads` (which may be the same handler),
/// async uploads above 64 KiB.
fn mongrel2(main: &Handler, uploads: &Handler) -> Mongrel2 {
    Mongrel2::builder()
        .handler("/", main)
        .handler("/up", uploads)
        .setting("limits.content_length", CONTENT_LIMIT)
        .setting("upload.temp_store", "/tmp/upload.XXXXXX")
        .start()
}

/// One request (a GET, or a small POST to `/up`) that must be answered within 20 s: the handler
/// is connected and Mongrel2's subscription has reached it. (Not counted: one access-log line.)
fn probe(addr: SocketAddr, p: &Proc, post: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let (req, want): (&[u8], &[u8]) = if post {
        (
            b"POST /up/probe HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\na",
            b"size=1 crc32=e8b7be43\n",
        )
    } else {
        (
            b"GET /probe?bytes=3 HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"abc",
        )
    };
    let answer = Conn::connect(addr, deadline).and_then(|mut c| {
        c.send(req, deadline)?;
        let head = c.read_head(deadline)?;
        let mut body = Vec::new();
        c.read_body(&head, &mut body, None, deadline)?;
        Ok((head.status, body))
    });
    match answer {
        Ok((200, body)) if body == want => {}
        other => panic!(
            "the handler does not answer {:?}: {other:?}\n{}",
            String::from_utf8_lossy(req),
            p.log()
        ),
    }
}

fn raw_target() -> Target {
    let (main, up) = (Handler::tcp("stream"), Handler::tcp("upload"));
    let m2 = mongrel2(&main, &up);
    let chroot = m2.host_path("/").display().to_string();
    let mut env = handler_env();
    env.push(("M2WSGI_LOG", "warn"));
    let handler = |h: &Handler, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            h.send_spec.as_str(),
            h.recv_spec.as_str(),
            "--send-ident",
            h.send_ident.as_str(),
            "--workers",
            HANDLER_THREADS,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let spawn = |example: &str, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Proc::spawn(&support::process::example(example), &args, &env)
    };
    let s = spawn("streaming", handler(&main, &[]));
    let u = spawn(
        "upload",
        handler(&up, &["--upload-dir", "/tmp", "--chroot", &chroot]),
    );
    probe(m2.addr(), &s, false);
    probe(m2.addr(), &u, true);
    let upload_dir = m2.host_path("/tmp");
    Target {
        name: "raw",
        m2,
        procs: vec![("streaming", s), ("upload", u)],
        upload_dir,
    }
}

fn m2wsgi_target() -> Target {
    let h = Handler::tcp("wsgi");
    let m2 = mongrel2(&h, &h);
    // As root Mongrel2 really chroots: its temp file paths are relative to its directory.
    let chroot = if m2.chrooted() {
        m2.chroot().display().to_string()
    } else {
        "/".into()
    };
    let env: Vec<(&str, Option<&str>)> = handler_env()
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let mut p = support::wsgi::m2wsgi(
        &[
            "--num-threads",
            HANDLER_THREADS,
            "--send-ident",
            &h.send_ident,
            "--upload-dir",
            "/tmp",
            "--mongrel2-chroot",
            &chroot,
            "soak:application",
            &h.send_spec,
            &h.recv_spec,
        ],
        &env,
        false,
    );
    p.wait_ready();
    probe(m2.addr(), &p, false);
    probe(m2.addr(), &p, true);
    let upload_dir = m2.host_path("/tmp");
    Target {
        name: "m2wsgi",
        m2,
        procs: vec![("m2wsgi", p)],
        upload_dir,
    }
}

// ------------------------------------------------------------------------------------------------
// A run and its report

#[derive(Debug)]
struct Report {
    name: &'static str,
    planned: u64,
    counts: Counts,
    classified: Classified,
    proc_names: Vec<&'static str>,
    start: Vec<Sample>,
    end: Vec<Sample>,
    temp_left: usize,
    stopped_early: Option<String>,
    running_at_end: Vec<(&'static str, bool)>,
    exit: Vec<(&'static str, Option<std::process::ExitStatus>)>,
}

fn trend(start: u64, end: u64) -> f64 {
    if start == 0 {
        return 0.0;
    }
    (end as f64 - start as f64) * 100.0 / start as f64
}

fn failures_text(c: &Counts, access: &AccessLog, error_log: &Path) -> String {
    let cl = classify(c, access, error_log, 0);
    let mut by: HashMap<Reason, u64> = HashMap::new();
    for f in &c.failures {
        *by.entry(f.reason).or_default() += 1;
    }
    let parts: Vec<String> = REASONS
        .iter()
        .map(|(r, name)| format!("{name} {}", by.get(r).copied().unwrap_or(0)))
        .collect();
    format!(
        "failed {} ({}; Mongrel2 class {}, other {})",
        c.failures.len(),
        parts.join(", "),
        cl.mongrel2,
        cl.other_total
    )
}

fn samples_text(names: &[&str], start: &[Sample], now: &[Sample]) -> String {
    names
        .iter()
        .zip(start.iter().zip(now))
        .map(|(n, (s, e))| {
            format!(
                "{n} RSS {:.1} MiB (start {:.1}, {:+.1} %) fds {} (start {})",
                e.rss_kib as f64 / 1024.0,
                s.rss_kib as f64 / 1024.0,
                trend(s.rss_kib, e.rss_kib),
                e.fds,
                s.fds
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Per kind: how many, the mean and the slowest time (whatever the outcome).
fn times_text(c: &Counts, weights: &[(Kind, u64); 6]) -> String {
    weights
        .iter()
        .filter_map(|(k, _)| {
            let t = c.by_kind.get(k)?;
            Some(format!(
                "{k:?} {} mean {:.1} ms max {} ms",
                t.n,
                t.total.as_secs_f64() * 1000.0 / t.n.max(1) as f64,
                t.max.as_millis()
            ))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_failure(tag: &str, f: &Failure, access: &AccessLog) {
    say!(
        "{tag} failure    : {:?} {:?} {} after {} bytes; client port {}, first on its connection \
         {}, connection opened {} ms after a leave ({} leaves before it, own leave {}); handed to a handler by \
         Mongrel2 {}; Mongrel2 fd {:?}; {}",
        f.reason,
        f.kind,
        f.path,
        f.received,
        f.local_port,
        f.first_on_conn,
        f.ms_since_leave.map_or("-".into(), |m| m.to_string()),
        f.leaves_before_connect,
        f.after_own_leave,
        access.handed_over(&f.path),
        f.mongrel2_fd,
        f.detail
    );
}

fn run_target(mut t: Target, settings: &Settings, requests: u64) -> Report {
    let began = Instant::now();
    let pids: Vec<u32> = t.procs.iter().map(|(_, p)| p.pid()).collect();
    let names: Vec<&'static str> = t.procs.iter().map(|(n, _)| *n).collect();
    let m2_pid = t.m2.pid().expect("mongrel2 runs");
    let me = std::process::id();
    let cpu_pids: Vec<u32> = pids.iter().copied().chain([m2_pid, me]).collect();
    let cpu_before: Vec<f64> = cpu_pids.iter().map(|p| cpu_secs(*p)).collect();
    let access_path = t.m2.chroot().join("logs/access.log");
    let error_log = t.m2.chroot().join("logs/error.log");
    let shared = Shared {
        addr: t.m2.addr(),
        m2_pid,
        error_log: error_log.clone(),
        weights: settings.weights,
        start: Instant::now(),
        stop_at: Instant::now() + settings.max_time,
        stop: AtomicBool::new(false),
        leaves: AtomicU64::new(0),
        last_leave_us: AtomicU64::new(0),
        bad: AtomicU64::new(0),
    };
    let mut access = AccessLog::default();
    let mut states: Vec<ClientState> = (0..settings.threads)
        .map(|_| ClientState::default())
        .collect();
    let mut total = Counts::default();
    let tag = format!("soak {:<6}", t.name);

    // The warm-up (the same mix, counted), then the phases; a quiet sample after each.
    let warmup = settings.warmup.min(requests / 2);
    let phases = settings.phases.max(1);
    let mut start = Vec::new();
    let mut end = Vec::new();
    let mut temp_left = 0;
    for k in 0..=phases {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let (from, to) = if k == 0 {
            (0, warmup)
        } else {
            let rest = requests - warmup;
            (warmup + rest * (k - 1) / phases, warmup + rest * k / phases)
        };
        let phase_began = Instant::now();
        let c = run_requests(&shared, &mut states, from, to);
        let (now, temp) = settle_and_sample(&pids, &t.upload_dir);
        access.watch(&c.failures);
        access.scan(&access_path);
        if k == 0 {
            start.clone_from(&now);
        }
        let label = if k == 0 {
            "warm-up   ".to_owned()
        } else {
            format!("phase {k:>2}/{phases}")
        };
        say!(
            "{tag} {label}: sent {} answered {} left {} {} | {} | temp files {temp} | {:.1} s",
            c.sent,
            c.answered,
            c.left,
            failures_text(&c, &access, &error_log),
            samples_text(&names, &start, &now),
            phase_began.elapsed().as_secs_f64()
        );
        total.add(&c);
        end = now;
        temp_left = temp;
    }
    let stopped_early = (total.sent < requests).then(|| {
        if shared.bad.load(Ordering::SeqCst) >= MAX_FAILURES {
            format!("stopped after {MAX_FAILURES} failures outside the Mongrel2 class")
        } else {
            format!(
                "stopped by the time bound ({} s)",
                settings.max_time.as_secs()
            )
        }
    });

    // The end: the clients close their connections, a last quiet look, then SIGTERM.
    states.clear();
    let (last, temp) = settle_and_sample(&pids, &t.upload_dir);
    if total.sent > warmup {
        end = last;
    }
    temp_left = temp_left.max(temp);
    access.scan(&access_path);
    let classified = classify(
        &total,
        &access,
        &error_log,
        total.answered + total.left + PROBES,
    );
    let in_class = |f: &Failure| {
        !classified.log_incomplete && f.mongrel2_shape() && !access.handed_over(&f.path)
    };
    let (inside, outside): (Vec<&Failure>, Vec<&Failure>) =
        total.failures.iter().partition(|f| in_class(f));
    for f in inside.iter().take(10).chain(outside.iter().take(20)) {
        print_failure(&tag, f, &access);
    }
    let cpu: Vec<String> = names
        .iter()
        .copied()
        .chain(["mongrel2", "client"])
        .zip(cpu_pids.iter().zip(&cpu_before))
        .map(|(n, (p, before))| format!("{n} {:.1} s", cpu_secs(*p) - before))
        .collect();
    let running_at_end: Vec<(&'static str, bool)> = t
        .procs
        .iter_mut()
        .map(|(n, p)| (*n, p.is_running()))
        .collect();
    let mut exit = Vec::new();
    for (n, p) in &mut t.procs {
        p.signal("TERM");
        exit.push((*n, p.wait_timeout(Duration::from_secs(15))));
    }
    let report = Report {
        name: t.name,
        planned: requests,
        counts: total,
        classified,
        proc_names: names,
        start,
        end,
        temp_left,
        stopped_early,
        running_at_end,
        exit,
    };
    let exits: Vec<String> = report
        .exit
        .iter()
        .map(|(n, st)| match st {
            Some(st) => format!("{n} {st}"),
            None => format!("{n} did not exit"),
        })
        .collect();
    let c = &report.classified;
    say!(
        "{tag} total      : sent {} of {} answered {} left {} {} | {} | temp files {} | SIGTERM: {} \
         | {:.1} s{}",
        report.counts.sent,
        report.planned,
        report.counts.answered,
        report.counts.left,
        failures_text(&report.counts, &access, &error_log),
        samples_text(&report.proc_names, &report.start, &report.end),
        report.temp_left,
        exits.join(", "),
        began.elapsed().as_secs_f64(),
        report
            .stopped_early
            .as_ref()
            .map(|s| format!(" | {s}"))
            .unwrap_or_default()
    );
    say!(
        "{tag} Mongrel2   : class {} (first request on its connection {}, answered by Mongrel2 {}, \
         connection opened right after the same client's leave {}, at most {} ms after a leave, \
         on a descriptor the error log had just reported a failed delivery on {}); access log {} \
         lines for {} requests handed over{}",
        c.mongrel2,
        c.mongrel2_first,
        c.mongrel2_answered,
        c.mongrel2_own_leave,
        c.mongrel2_max_ms,
        c.mongrel2_fd_reused,
        access.lines,
        report.counts.answered + report.counts.left + PROBES,
        if c.log_incomplete {
            ": INCOMPLETE, nothing is counted in the Mongrel2 class"
        } else {
            ""
        }
    );
    say!(
        "{tag} times      : {}",
        times_text(&report.counts, &settings.weights)
    );
    say!("{tag} CPU        : {}", cpu.join(", "));
    if c.other_total > 0 || report.stopped_early.is_some() {
        for (n, p) in &t.procs {
            let log = p.log();
            let lines: Vec<&str> = log.lines().collect();
            say!(
                "--- {n} log (tail) ---\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        let log = t.m2.error_log();
        let lines: Vec<&str> = log.lines().collect();
        say!(
            "--- mongrel2 error log (tail) ---\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    report
}

// ------------------------------------------------------------------------------------------------
// The test

/// How many more Mongrel2-class failures m2wsgi may have than the raw handlers' `raw` (scaled to
/// m2wsgi's number of requests). Both are counts of rare events under the same traffic, roughly
/// Poisson with the same mean, so their difference has a standard deviation near √(2·raw): the
/// margin is 3 plus three of those.
fn margin(raw: u64) -> u64 {
    3 + (3.0 * ((2 * raw) as f64).sqrt()).ceil() as u64
}

fn check_handler(r: &Report, problems: &mut Vec<String>, rss: bool) {
    let name = r.name;
    if let Some(s) = &r.stopped_early {
        problems.push(format!("{name}: {s}"));
    }
    if r.classified.log_incomplete {
        problems.push(format!(
            "{name}: Mongrel2's access log is incomplete: failures cannot be classified"
        ));
    }
    if r.classified.other_total > 0 {
        problems.push(format!(
            "{name}: {} failures outside the Mongrel2 class: {:?}",
            r.classified.other_total, r.classified.other
        ));
    }
    for ((n, s), e) in r.proc_names.iter().zip(&r.start).zip(&r.end) {
        let t = trend(s.rss_kib, e.rss_kib);
        if rss && t >= RSS_TREND_LIMIT {
            problems.push(format!(
                "{name}: {n}'s RSS grew {t:.1} % after the warm-up ({} -> {} KiB)",
                s.rss_kib, e.rss_kib
            ));
        }
        if e.fds.abs_diff(s.fds) > FD_SLACK {
            problems.push(format!(
                "{name}: {n} has {} open descriptors at the end, {} after the warm-up",
                e.fds, s.fds
            ));
        }
    }
    if r.temp_left > 0 {
        problems.push(format!("{name}: {} upload temp files left", r.temp_left));
    }
    for (n, running) in &r.running_at_end {
        if !running {
            problems.push(format!("{name}: {n} was not running at the end"));
        }
    }
    for (n, st) in &r.exit {
        if !st.is_some_and(|s| s.success()) {
            problems.push(format!("{name}: {n} did not exit 0 on SIGTERM: {st:?}"));
        }
    }
}

#[test]
fn soak_mixed_traffic_through_mongrel2() {
    let settings = Settings::from_env();
    let began = Instant::now();
    say!(
        "soak: {} requests to m2wsgi and {} to the raw handlers; {} client threads; warm-up {}, \
         {} phases; mix per mille {:?}; {} s deadline per request; time bound {} s per handler",
        settings.requests,
        settings.raw_requests,
        settings.threads,
        settings.warmup,
        settings.phases,
        settings.weights,
        DEADLINE.as_secs(),
        settings.max_time.as_secs()
    );
    let raw = (settings.raw_requests > 0)
        .then(|| run_target(raw_target(), &settings, settings.raw_requests));
    let wsgi = run_target(m2wsgi_target(), &settings, settings.requests);

    let mut problems = Vec::new();
    check_handler(&wsgi, &mut problems, true);
    let mut allowed = None;
    if let Some(r) = &raw {
        check_handler(r, &mut problems, false);
        let scaled = (r.classified.mongrel2 as f64 * wsgi.counts.sent as f64
            / r.counts.sent.max(1) as f64)
            .ceil() as u64;
        allowed = Some(scaled + margin(scaled));
        if wsgi.classified.mongrel2 > scaled + margin(scaled) {
            problems.push(format!(
                "m2wsgi: {} Mongrel2-class failures, more than the raw handlers' {} (scaled: \
                 {scaled}) plus the margin {}",
                wsgi.classified.mongrel2,
                r.classified.mongrel2,
                margin(scaled)
            ));
        }
    }
    say!(
        "soak result: Mongrel2-class failures: raw {} of {}, m2wsgi {} of {} (allowed {}); \
         failures outside the class: raw {}, m2wsgi {}; {:.1} s in all",
        raw.as_ref()
            .map_or("-".into(), |r| r.classified.mongrel2.to_string()),
        raw.as_ref().map_or(0, |r| r.counts.sent),
        wsgi.classified.mongrel2,
        wsgi.counts.sent,
        allowed.map_or("-".into(), |a| a.to_string()),
        raw.as_ref()
            .map_or("-".into(), |r| r.classified.other_total.to_string()),
        wsgi.classified.other_total,
        began.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "the soak failed:\n{}",
        problems.join("\n")
    );
}
