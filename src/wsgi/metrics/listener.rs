//! A tiny HTTP/1.x endpoint answering `GET /metrics` from one thread.
//!
//! One connection at a time, each bounded: a request head of at most [`MAX_REQUEST`] bytes,
//! read within [`READ_TIMEOUT`], the answer written within [`WRITE_TIMEOUT`], then the
//! connection is closed. A scraper that sends nothing, too much or too slowly holds the
//! endpoint for a few seconds at most, and never the server itself.

use super::CONTENT_TYPE;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest request head read (request line and headers).
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request head.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client has to take the answer.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running metrics endpoint: `GET /metrics` (and `HEAD`) answered with what the `render`
/// function given to [`Listener::bind`] returns, as Prometheus text. Dropping it stops it.
///
/// ```no_run
/// use m2wsgi::wsgi::metrics::{self, Listener};
///
/// // One process:
/// let endpoint = Listener::bind("127.0.0.1:9101", || metrics::render(&[]))?;
/// println!("scrape http://{}/metrics", endpoint.local_addr());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Binds `addr` (`127.0.0.1:9101`; port 0 picks a free one) and serves from a thread of
    /// its own, calling `render` for every scrape.
    ///
    /// # Errors
    /// When the address cannot be bound or the thread cannot start.
    pub fn bind<F>(addr: impl ToSocketAddrs, render: F) -> io::Result<Listener>
    where
        F: Fn() -> String + Send + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("m2wsgi-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(stream) => {
                            if let Err(e) = answer(stream, &render) {
                                tracing::debug!("metrics endpoint: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::debug!("metrics endpoint: accept: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })?;
        Ok(Listener {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call up.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, render: &dyn Fn() -> String) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let head = match read_head(&mut stream)? {
        Head::Complete(h) => h,
        Head::TooLarge => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                b"",
                false,
            )
        }
        Head::Incomplete => return Ok(()),
    };
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render();
            respond(
                &mut stream,
                "200 OK",
                CONTENT_TYPE,
                body.as_bytes(),
                head_only,
            )
        }
        ("GET" | "HEAD", _) => respond(
            &mut stream,
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"metrics are at /metrics\n",
            head_only,
        ),
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"GET /metrics\n",
            false,
        ),
    }
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    Incomplete,
}

/// Reads up to the blank line ending the head, within [`READ_TIMEOUT`] in all and
/// [`MAX_REQUEST`] bytes.
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::Incomplete);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(Head::Incomplete),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        let end = (from..buf.len())
            .find(|&i| buf[i..].starts_with(b"\r\n\r\n") || buf[i..].starts_with(b"\n\n"));
        if let Some(end) = end {
            if end > MAX_REQUEST {
                return Ok(Head::TooLarge);
            }
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 160);
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    stream.write_all(&out)?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}
