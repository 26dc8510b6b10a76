//! Prometheus metrics: the process's counters, their text exposition, the merge of several
//! processes' expositions into one, and a tiny HTTP endpoint serving `/metrics`.
//!
//! There is one registry per process ([`render`] reads it): the `m2wsgi` command serves one
//! application per process, and with several processes each one renders its own samples under
//! a constant label (`worker="3"`) that [`merge`] then puts together for one scrape endpoint.
//!
//! The registry is plain atomics with a hand-written encoder rather than a metrics crate: the
//! set of metrics is fixed (no label values made up at run time), so every update is one or
//! two relaxed atomic adds on a field known at compile time, with no lock, no hashing and no
//! allocation; a histogram is an array of bucket counters and a sum in nanoseconds. (The
//! `prometheus-client` crate takes a lock per histogram observation and a map lookup per
//! labelled sample, and would still leave the merge to be written.)
//!
//! Nothing here is collected per request unless collection was switched on
//! ([`WsgiServer::metrics`](super::WsgiServer::metrics), `m2wsgi --metrics`): the hot path pays
//! one branch. The rare events (client disconnects, timeouts, restarts) are always counted.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `m2wsgi_requests_total{status}` | counter | requests answered, by status class: `1xx` ... `5xx`, or `none` when no status went out (the client was gone before the head could be sent, a handler panic) |
//! | `m2wsgi_request_duration_seconds` | histogram | from a worker thread taking the request to the end of its response, waiting for the GIL included |
//! | `m2wsgi_requests_in_flight` | gauge | requests being handled |
//! | `m2wsgi_threads{state}` | gauge | worker threads `busy` (handling a message) and `idle` (waiting for one) |
//! | `m2wsgi_gil_wait_seconds` | histogram | how long a worker thread that had taken a request waited for the GIL (held by the other threads) before it could run it |
//! | `m2wsgi_queue_length` | gauge | messages received and waiting for an idle worker thread |
//! | `m2wsgi_uploads_total{kind}` | counter | request bodies too large to come inline: `async` (a temp file, `upload.temp_store`), `stream` (`upload.stream=1`) |
//! | `m2wsgi_client_disconnects_total` | counter | responses abandoned because the client went away first |
//! | `m2wsgi_timeouts_total` | counter | requests that ran past their time limit |
//! | `m2wsgi_worker_restarts_total{cause}` | counter | worker processes restarted by a supervisor, by cause ([`render_supervisor`]) |

mod listener;
mod merge;

pub use listener::Listener;
pub use merge::merge;

use crate::ServerStats;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The `Content-Type` of the exposition [`render`] writes (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the request duration buckets, in seconds (as written in `le`).
const DURATION_BOUNDS: [&str; 16] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "30", "60",
];
const DURATION_NS: [u64; 16] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Upper bounds of the GIL wait buckets, in seconds.
const GIL_BOUNDS: [&str; 12] = [
    "0.00001", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.05", "0.1", "1",
];
const GIL_NS: [u64; 12] = [
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    1_000_000_000,
];

/// A histogram of durations: one counter per bucket (not cumulative: cumulated when
/// rendered), one for the rest (`+Inf`), and the sum in nanoseconds. The count is the sum of
/// the buckets, so a scrape never sees a count that disagrees with them.
#[derive(Debug)]
struct Histogram<const N: usize> {
    bounds_ns: &'static [u64; N],
    bounds: &'static [&'static str; N],
    buckets: [AtomicU64; N],
    over: AtomicU64,
    sum_ns: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds_ns: &'static [u64; N], bounds: &'static [&'static str; N]) -> Self {
        Self {
            bounds_ns,
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Two relaxed atomic adds.
    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        match self.buckets.get(i) {
            Some(b) => b.fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &Labels<'_>) {
        let mut cumulative = 0u64;
        for (bound, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            sample(
                out,
                name,
                "_bucket",
                labels,
                Some(("le", bound)),
                cumulative,
            );
        }
        cumulative += self.over.load(Ordering::Relaxed);
        sample(
            out,
            name,
            "_bucket",
            labels,
            Some(("le", "+Inf")),
            cumulative,
        );
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{} {sum}", labels.braces(None));
        sample(out, name, "_count", labels, None, cumulative);
    }
}

/// Why a supervisor restarted (or recycled) a worker process: the `cause` label of
/// `m2wsgi_worker_restarts_total`. Add a variant here (and to [`RestartCause::ALL`]) for a new
/// cause; every cause is rendered, zeros included, so that rates work from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestartCause {
    /// The process was killed by a signal it did not ask for (a crash: SIGSEGV, SIGKILL by
    /// the OOM killer...).
    Crash,
    /// The process exited by itself, whatever its status.
    Exit,
    /// Recycled after serving its allotted number of requests.
    MaxRequests,
    /// Recycled for using too much memory.
    Memory,
    /// Killed for not answering in time (hung).
    Timeout,
    /// Replaced on request (a reload signal, a rolling restart).
    Reload,
    /// Replaced after its `--lifetime`.
    Lifetime,
}

impl RestartCause {
    /// Every cause, in the order they are rendered.
    pub const ALL: [RestartCause; 7] = [
        RestartCause::Crash,
        RestartCause::Exit,
        RestartCause::MaxRequests,
        RestartCause::Memory,
        RestartCause::Timeout,
        RestartCause::Reload,
        RestartCause::Lifetime,
    ];

    /// The label value: `crash`, `exit`, `max_requests`, `memory`, `timeout`, `reload`,
    /// `lifetime`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartCause::Crash => "crash",
            RestartCause::Exit => "exit",
            RestartCause::MaxRequests => "max_requests",
            RestartCause::Memory => "memory",
            RestartCause::Timeout => "timeout",
            RestartCause::Reload => "reload",
            RestartCause::Lifetime => "lifetime",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// Status classes: `1xx` to `5xx`, then `none`.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The process's registry.
#[derive(Debug)]
pub(crate) struct Registry {
    requests: [AtomicU64; 6],
    duration: Histogram<16>,
    gil_wait: Histogram<12>,
    in_flight: AtomicI64,
    uploads_async: AtomicU64,
    uploads_stream: AtomicU64,
    disconnects: AtomicU64,
    timeouts: AtomicU64,
    restarts: [AtomicU64; RestartCause::ALL.len()],
    server: Mutex<Option<ServerStats>>,
}

impl Registry {
    const fn new() -> Self {
        Self {
            requests: [const { AtomicU64::new(0) }; 6],
            duration: Histogram::new(&DURATION_NS, &DURATION_BOUNDS),
            gil_wait: Histogram::new(&GIL_NS, &GIL_BOUNDS),
            in_flight: AtomicI64::new(0),
            uploads_async: AtomicU64::new(0),
            uploads_stream: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            restarts: [const { AtomicU64::new(0) }; RestartCause::ALL.len()],
            server: Mutex::new(None),
        }
    }
}

/// The registry of this process.
pub(crate) static METRICS: Registry = Registry::new();

/// The queue and thread counts to render from now on (the server being started).
pub(crate) fn watch_server(stats: ServerStats) {
    *METRICS.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
}

/// A worker thread took a request (an HTTP request or a completed upload) and, after
/// `gil_wait`, holds the GIL. `upload` is `Some("async")` / `Some("stream")` for uploads.
pub(crate) fn request_started(gil_wait: Duration, upload: Option<Upload>) {
    METRICS.started(gil_wait, upload);
}

/// A request's response is over: `status` is what was sent (`None`: nothing), `elapsed` the
/// time since the worker took it.
pub(crate) fn request_finished(status: Option<u16>, elapsed: Duration) {
    METRICS.finished(status, elapsed);
}

impl Registry {
    fn started(&self, gil_wait: Duration, upload: Option<Upload>) {
        let m = self;
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        m.gil_wait.observe(gil_wait);
        match upload {
            None => {}
            Some(Upload::Async) => {
                m.uploads_async.fetch_add(1, Ordering::Relaxed);
            }
            Some(Upload::Stream) => {
                m.uploads_stream.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn finished(&self, status: Option<u16>, elapsed: Duration) {
        let m = self;
        let class = match status {
            Some(s @ 100..=599) => usize::from(s / 100 - 1),
            _ => 5,
        };
        m.requests[class].fetch_add(1, Ordering::Relaxed);
        m.duration.observe(elapsed);
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a request body that did not come inline arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upload {
    /// Written to a temp file by Mongrel2 first.
    Async,
    /// Streamed in pieces (`upload.stream=1`).
    Stream,
}

/// A response was abandoned because the client went away.
pub(crate) fn count_disconnect() {
    METRICS.disconnects.fetch_add(1, Ordering::Relaxed);
}

/// A request ran past its time limit: call this where the limit is enforced (whatever happens
/// to the request then).
pub(crate) fn count_timeout() {
    METRICS.timeouts.fetch_add(1, Ordering::Relaxed);
}

/// A supervisor restarted a worker process for `cause`: call this in the supervisor process,
/// whose [`render_supervisor`] shows it.
pub fn count_restart(cause: RestartCause) {
    METRICS.restarts[cause.index()].fetch_add(1, Ordering::Relaxed);
}

/// Constant labels put on every sample, escaped once.
struct Labels<'a> {
    /// `name="value",...` without braces; empty for none.
    inner: &'a str,
}

impl Labels<'_> {
    /// `{const,extra="v"}`, or nothing when there is no label at all.
    fn braces(&self, extra: Option<(&str, &str)>) -> String {
        match (self.inner.is_empty(), extra) {
            (true, None) => String::new(),
            (true, Some((k, v))) => format!("{{{k}=\"{}\"}}", escape_label(v)),
            (false, None) => format!("{{{}}}", self.inner),
            (false, Some((k, v))) => format!("{{{},{k}=\"{}\"}}", self.inner, escape_label(v)),
        }
    }
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &Labels<'_>,
    extra: Option<(&str, &str)>,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(out, "{name}{suffix}{} {value}", labels.braces(extra));
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped as the text format wants: `\`, `"` and newlines.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`).
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn const_labels(labels: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in labels {
        assert!(valid_label_name(k), "invalid Prometheus label name {k:?}");
        if !s.is_empty() {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape_label(v));
    }
    s
}

/// This process's request metrics in the Prometheus text format, every sample carrying
/// `labels` (for a worker among several: `&[("worker", "3")]`; `&[]` for none).
///
/// # Panics
/// When a label name is not a valid Prometheus label name.
pub fn render(labels: &[(&str, &str)]) -> String {
    METRICS.render(labels)
}

impl Registry {
    fn render(&self, labels: &[(&str, &str)]) -> String {
        let inner = const_labels(labels);
        let l = Labels { inner: &inner };
        let m = self;
        let mut out = String::with_capacity(4096);

        family(
            &mut out,
            "m2wsgi_requests_total",
            "counter",
            "Requests answered, by status class of the response (none: no status went out).",
        );
        for (class, n) in STATUS_CLASSES.iter().zip(&m.requests) {
            let n = n.load(Ordering::Relaxed);
            sample(
                &mut out,
                "m2wsgi_requests_total",
                "",
                &l,
                Some(("status", class)),
                n,
            );
        }

        family(
        &mut out,
        "m2wsgi_request_duration_seconds",
        "histogram",
        "Time from a worker thread taking a request to the end of its response, GIL wait included.",
    );
        m.duration
            .render(&mut out, "m2wsgi_request_duration_seconds", &l);

        family(
            &mut out,
            "m2wsgi_requests_in_flight",
            "gauge",
            "Requests being handled.",
        );
        let in_flight = m.in_flight.load(Ordering::Relaxed).max(0);
        sample(
            &mut out,
            "m2wsgi_requests_in_flight",
            "",
            &l,
            None,
            in_flight,
        );

        let server = self
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(stats) = &server {
            family(
                &mut out,
                "m2wsgi_threads",
                "gauge",
                "Worker threads handling a message (busy) or waiting for one (idle).",
            );
            let idle = stats.idle_workers().min(stats.workers());
            let busy = stats.workers() - idle;
            sample(
                &mut out,
                "m2wsgi_threads",
                "",
                &l,
                Some(("state", "busy")),
                busy,
            );
            sample(
                &mut out,
                "m2wsgi_threads",
                "",
                &l,
                Some(("state", "idle")),
                idle,
            );
        }

        family(
            &mut out,
            "m2wsgi_gil_wait_seconds",
            "histogram",
            "Time a worker thread that had taken a request waited for the GIL before running it.",
        );
        m.gil_wait.render(&mut out, "m2wsgi_gil_wait_seconds", &l);

        if let Some(stats) = &server {
            family(
                &mut out,
                "m2wsgi_queue_length",
                "gauge",
                "Messages received and waiting for an idle worker thread.",
            );
            sample(
                &mut out,
                "m2wsgi_queue_length",
                "",
                &l,
                None,
                stats.queued(),
            );
        }

        family(
        &mut out,
        "m2wsgi_uploads_total",
        "counter",
        "Request bodies that did not come inline: async (a Mongrel2 temp file) or stream (upload.stream=1).",
    );
        let (a, s) = (
            m.uploads_async.load(Ordering::Relaxed),
            m.uploads_stream.load(Ordering::Relaxed),
        );
        sample(
            &mut out,
            "m2wsgi_uploads_total",
            "",
            &l,
            Some(("kind", "async")),
            a,
        );
        sample(
            &mut out,
            "m2wsgi_uploads_total",
            "",
            &l,
            Some(("kind", "stream")),
            s,
        );

        family(
            &mut out,
            "m2wsgi_client_disconnects_total",
            "counter",
            "Responses abandoned because the client went away before they were complete.",
        );
        let n = m.disconnects.load(Ordering::Relaxed);
        sample(&mut out, "m2wsgi_client_disconnects_total", "", &l, None, n);

        family(
            &mut out,
            "m2wsgi_timeouts_total",
            "counter",
            "Requests that ran past their time limit.",
        );
        let n = m.timeouts.load(Ordering::Relaxed);
        sample(&mut out, "m2wsgi_timeouts_total", "", &l, None, n);
        out
    }
}

/// The supervisor's own metrics (worker restarts by [`RestartCause`]), every sample carrying
/// `labels`: to [`merge`] with the workers' [`render`] texts.
///
/// # Panics
/// When a label name is not a valid Prometheus label name.
pub fn render_supervisor(labels: &[(&str, &str)]) -> String {
    METRICS.render_supervisor(labels)
}

impl Registry {
    fn render_supervisor(&self, labels: &[(&str, &str)]) -> String {
        let inner = const_labels(labels);
        let l = Labels { inner: &inner };
        let mut out = String::with_capacity(1024);
        family(
            &mut out,
            "m2wsgi_worker_restarts_total",
            "counter",
            "Worker processes restarted or recycled, by cause.",
        );
        for cause in RestartCause::ALL {
            let n = self.restarts[cause.index()].load(Ordering::Relaxed);
            sample(
                &mut out,
                "m2wsgi_worker_restarts_total",
                "",
                &l,
                Some(("cause", cause.as_str())),
                n,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests;
