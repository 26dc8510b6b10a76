//! A bounded, paced HTTP/1.1 load of keep-alive GETs over loopback, counting what was answered
//! and what failed (and why), for the restart and soak scenarios.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Each request's deadline.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// What a load run counted.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests written.
    pub sent: u64,
    /// Requests answered with the expected status and body.
    pub answered: u64,
    /// The failures: when (since the start) and why.
    pub failures: Vec<(Duration, String)>,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Failed requests.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// One line: sent / answered / failed, and the rate.
    pub fn summary(&self) -> String {
        format!(
            "sent {} answered {} failed {} in {:.1} s ({:.0} req/s)",
            self.sent,
            self.answered,
            self.failed(),
            self.elapsed.as_secs_f64(),
            self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )
    }
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    failures: Mutex<Vec<(Duration, String)>>,
}

/// A running load; see [`Load::start`].
pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    started: Instant,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` threads that together send about `rate` GETs of `path` per second to
    /// `addr`, each on a keep-alive connection (a new one after a failure), expecting status
    /// 200 and a body of `expect`. Stops after `max_requests` in all or `max_time`, whichever
    /// comes first, or at [`finish`](Load::finish).
    pub fn start(
        addr: SocketAddr,
        path: &str,
        expect: &'static str,
        rate: u32,
        clients: usize,
        max_requests: u64,
        max_time: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let started = Instant::now();
        let interval = Duration::from_secs_f64(clients as f64 / f64::from(rate.max(1)));
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
        let threads = (0..clients)
            .map(|i| {
                let (stop, counts, request) =
                    (Arc::clone(&stop), Arc::clone(&counts), request.clone());
                thread::spawn(move || {
                    // Spread the clients over one interval.
                    let mut next = started + interval.mul_f64(i as f64 / clients as f64);
                    let mut conn: Option<TcpStream> = None;
                    let end = started + max_time;
                    loop {
                        if stop.load(Ordering::SeqCst) || Instant::now() >= end {
                            return;
                        }
                        if counts.sent.fetch_add(1, Ordering::SeqCst) >= max_requests {
                            counts.sent.fetch_sub(1, Ordering::SeqCst);
                            return;
                        }
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        }
                        next += interval;
                        let at = started.elapsed();
                        match one(&mut conn, addr, &request, expect) {
                            Ok(()) => {
                                counts.answered.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(why) => {
                                conn = None;
                                counts.failures.lock().unwrap().push((at, why));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            counts,
            started,
            threads,
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.counts.sent.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.counts.answered.load(Ordering::SeqCst)
    }

    /// Stops the clients (each finishes its request in flight) and returns the counts.
    pub fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let elapsed = self.started.elapsed();
        let mut failures = std::mem::take(&mut *self.counts.failures.lock().unwrap());
        failures.sort_by_key(|(t, _)| *t);
        LoadReport {
            sent: self.sent(),
            answered: self.answered(),
            failures,
            elapsed,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One request on `conn` (connecting first when there is none): Ok when the answer is a 200
/// with body `expect`.
fn one(
    conn: &mut Option<TcpStream>,
    addr: SocketAddr,
    request: &[u8],
    expect: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, REQUEST_DEADLINE)
            .map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).ok();
        *conn = Some(s);
    }
    let s = conn.as_mut().expect("connected above");
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no answer within {REQUEST_DEADLINE:?} (got {:?})",
                String::from_utf8_lossy(&buf)
            ));
        }
        s.set_read_timeout(Some(left)).ok();
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed (got {:?})",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if let Some(done) = complete(&buf) {
            let (status, body) = done?;
            if status == 200 && body == expect.as_bytes() {
                return Ok(());
            }
            return Err(format!(
                "status {status}, body {:?}",
                String::from_utf8_lossy(body)
            ));
        }
    }
}

/// The status and body of a complete `Content-Length` response at the front of `buf`.
fn complete(buf: &[u8]) -> Option<Result<(u16, &[u8]), String>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(e) => return Some(Err(format!("bad response: {e}"))),
    };
    let len = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let Some(len) = len else {
        return Some(Err("no Content-Length".into()));
    };
    if buf.len() < n + len {
        return None;
    }
    Some(Ok((r.code.unwrap_or(0), &buf[n..n + len])))
}
