//! A plain HTTP/1.1 client over a std `TcpStream` that never panics: every request has a
//! deadline, keep-alive connections are reused, bodies are read in large pieces (framed by
//! Content-Length, chunked coding or the close), and every way a request can go wrong comes back
//! as a [`ClientError`] that says how many response bytes had arrived. Made for the soak
//! (tests/soak.rs), which counts failures by kind instead of stopping at the first.
#![allow(dead_code, unreachable_pub)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why a request failed. `received` counts the response bytes that had arrived (head included).
#[derive(Debug)]
pub enum ClientError {
    /// The deadline passed.
    Timeout {
        /// Response bytes received by then.
        received: usize,
    },
    /// The server closed the connection (EOF) before the response was complete.
    Closed {
        /// Response bytes received before the close.
        received: usize,
    },
    /// Connecting, writing or reading failed (refused, reset, broken pipe, ...).
    Io {
        /// Response bytes received before the error.
        received: usize,
        /// The error.
        error: io::Error,
    },
    /// The bytes are not an HTTP/1.x response or its framing is broken.
    Malformed {
        /// What was wrong.
        what: String,
    },
}

impl ClientError {
    /// Response bytes received before it went wrong (0 for a malformed response).
    pub fn received(&self) -> usize {
        match self {
            ClientError::Timeout { received }
            | ClientError::Closed { received }
            | ClientError::Io { received, .. } => *received,
            ClientError::Malformed { .. } => 0,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Timeout { received } => write!(f, "timeout after {received} bytes"),
            ClientError::Closed { received } => write!(f, "closed after {received} bytes"),
            ClientError::Io { received, error } => write!(f, "{error} after {received} bytes"),
            ClientError::Malformed { what } => write!(f, "malformed response: {what}"),
        }
    }
}

/// A response head.
#[derive(Debug, Clone)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Whether the body is chunked.
    pub chunked: bool,
    /// The Content-Length, when there is one and the body is not chunked.
    pub content_length: Option<usize>,
    /// Whether the server closes the connection after this response (`Connection: close`, or
    /// a body delimited by the close).
    pub close: bool,
    /// The head as received, status line to blank line.
    pub raw: Vec<u8>,
}

impl Head {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// Response bytes received for the current request.
    received: usize,
    /// Requests sent on this connection so far.
    pub requests: u64,
    /// The client's (local) port: Mongrel2's access log names connections by it.
    pub local_port: u16,
}

fn left(deadline: Instant) -> Option<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    (!d.is_zero()).then_some(d)
}

impl Conn {
    /// Connects to `addr` before `deadline`.
    pub fn connect(addr: SocketAddr, deadline: Instant) -> Result<Conn, ClientError> {
        let timeout = left(deadline).ok_or(ClientError::Timeout { received: 0 })?;
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|error| {
            if matches!(
                error.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) {
                ClientError::Timeout { received: 0 }
            } else {
                ClientError::Io { received: 0, error }
            }
        })?;
        let _ = stream.set_nodelay(true);
        let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            received: 0,
            requests: 0,
            local_port,
        })
    }

    /// Response bytes received for the current request so far (head included).
    pub fn received(&self) -> usize {
        self.received
    }

    fn io_error(&self, error: io::Error) -> ClientError {
        match error.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ClientError::Timeout {
                received: self.received,
            },
            _ => ClientError::Io {
                received: self.received,
                error,
            },
        }
    }

    /// Sends one request (head and body, written whole) before `deadline`; starts a new
    /// response count.
    pub fn send(&mut self, request: &[u8], deadline: Instant) -> Result<(), ClientError> {
        self.requests += 1;
        self.received = 0;
        if !self.buf.is_empty() {
            return Err(ClientError::Malformed {
                what: format!(
                    "{} unexpected bytes before the request: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(80)])
                ),
            });
        }
        let timeout = left(deadline).ok_or(ClientError::Timeout { received: 0 })?;
        self.stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| self.io_error(e))?;
        self.stream.write_all(request).map_err(|e| self.io_error(e))
    }

    /// Reads more bytes into the buffer; Ok(0) at EOF.
    fn fill(&mut self, deadline: Instant) -> Result<usize, ClientError> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let timeout = left(deadline).ok_or(ClientError::Timeout {
                received: self.received,
            })?;
            self.stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| self.io_error(e))?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.received += n;
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    // loop: the deadline decides
                }
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn fill_or_closed(&mut self, deadline: Instant) -> Result<(), ClientError> {
        match self.fill(deadline)? {
            0 => Err(ClientError::Closed {
                received: self.received,
            }),
            _ => Ok(()),
        }
    }

    /// Reads the head of the response (skipping `100 Continue`).
    pub fn read_head(&mut self, deadline: Instant) -> Result<Head, ClientError> {
        loop {
            let mut hbuf = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut hbuf);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let headers: Vec<(String, Vec<u8>)> = r
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                        .collect();
                    let http10 = r.version == Some(0);
                    let raw: Vec<u8> = self.buf.drain(..n).collect();
                    if status == 100 {
                        continue;
                    }
                    let mut head = Head {
                        status,
                        headers,
                        chunked: false,
                        content_length: None,
                        close: http10,
                        raw,
                    };
                    if let Some(c) = head.header("connection") {
                        let c = String::from_utf8_lossy(c).to_ascii_lowercase();
                        head.close = c.contains("close") || (http10 && !c.contains("keep-alive"));
                    }
                    head.chunked = head
                        .header("transfer-encoding")
                        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
                    if !head.chunked {
                        if let Some(v) = head.header("content-length") {
                            let len = std::str::from_utf8(v)
                                .ok()
                                .and_then(|s| s.trim().parse().ok())
                                .ok_or_else(|| ClientError::Malformed {
                                    what: format!(
                                        "bad Content-Length {:?}",
                                        String::from_utf8_lossy(v)
                                    ),
                                })?;
                            head.content_length = Some(len);
                        } else if !(status == 204 || status == 304 || (100..200).contains(&status))
                        {
                            head.close = true; // delimited by the close
                        }
                    }
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => self.fill_or_closed(deadline)?,
                Err(e) => {
                    return Err(ClientError::Malformed {
                        what: format!(
                            "bad response head ({e}): {:?}",
                            String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                        ),
                    })
                }
            }
        }
    }

    /// Reads the body of `head` into `out`, all of it or, with `limit`, until at least `limit`
    /// body bytes arrived (a client that leaves mid-response reads a part and then drops the
    /// connection).
    pub fn read_body(
        &mut self,
        head: &Head,
        out: &mut Vec<u8>,
        limit: Option<usize>,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        out.clear();
        let enough = |out: &Vec<u8>| limit.is_some_and(|l| out.len() >= l);
        if head.status == 204 || head.status == 304 {
            return Ok(());
        }
        if head.chunked {
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    if self.buf.len() > 64 {
                        return Err(ClientError::Malformed {
                            what: "chunk-size line too long".into(),
                        });
                    }
                    self.fill_or_closed(deadline)?;
                };
                let size = std::str::from_utf8(&self.buf[..line_end])
                    .ok()
                    .and_then(|l| l.split(';').next())
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or_else(|| ClientError::Malformed {
                        what: format!(
                            "bad chunk size {:?}",
                            String::from_utf8_lossy(&self.buf[..line_end])
                        ),
                    })?;
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // No trailers are sent: the last chunk ends with an empty line.
                    while self.buf.len() < 2 {
                        self.fill_or_closed(deadline)?;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(ClientError::Malformed {
                            what: "no CRLF after the last chunk".into(),
                        });
                    }
                    self.buf.drain(..2);
                    return Ok(());
                }
                let mut want = size;
                while want > 0 {
                    if self.buf.is_empty() {
                        if enough(out) {
                            return Ok(());
                        }
                        self.fill_or_closed(deadline)?;
                    }
                    let n = want.min(self.buf.len());
                    out.extend_from_slice(&self.buf[..n]);
                    self.buf.drain(..n);
                    want -= n;
                }
                if enough(out) {
                    return Ok(());
                }
                while self.buf.len() < 2 {
                    self.fill_or_closed(deadline)?;
                }
                if &self.buf[..2] != b"\r\n" {
                    return Err(ClientError::Malformed {
                        what: "no CRLF after a chunk".into(),
                    });
                }
                self.buf.drain(..2);
            }
        }
        if let Some(len) = head.content_length {
            loop {
                let n = (len - out.len()).min(self.buf.len());
                out.extend_from_slice(&self.buf[..n]);
                self.buf.drain(..n);
                if out.len() >= len || enough(out) {
                    return Ok(());
                }
                self.fill_or_closed(deadline)?;
            }
        }
        // Delimited by the close.
        loop {
            out.append(&mut self.buf);
            if enough(out) {
                return Ok(());
            }
            if self.fill(deadline)? == 0 {
                return Ok(());
            }
        }
    }
}
