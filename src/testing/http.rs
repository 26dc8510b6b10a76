//! Reading what a handler sent: replies, per-connection output, HTTP responses.

use bytes::Bytes;
use m2wsgi::tnetstring::{self};

/// One message a handler published: `SENDER SP LEN:IDS, SP BODY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The sender (the handler's `send_ident`).
    pub sender: Bytes,
    /// The client connection ids it is addressed to.
    pub conn_ids: Vec<u64>,
    /// Whether this is an extended message (`X` before the ids; the body is a tnetstring such as
    /// `[ctl, {credits: N}]`).
    pub extended: bool,
    /// The body: bytes for the clients (empty = close them), or the extended message.
    pub body: Bytes,
}

impl Reply {
    /// Parses a reply frame; `None` when it is not `SENDER SP NETSTRING(IDS) SP BODY` with
    /// decimal ids.
    pub fn parse(frame: &[u8]) -> Option<Reply> {
        let sp = frame.iter().position(|&b| b == b' ')?;
        let (ids, rest) = tnetstring::parse_netstring(&frame[sp + 1..]).ok()?;
        let body = rest.strip_prefix(b" ")?;
        let (extended, ids) = match ids.strip_prefix(b"X ") {
            Some(i) => (true, i),
            None => (false, ids),
        };
        let conn_ids = ids
            .split(|&b| b == b' ')
            .filter(|s| !s.is_empty())
            .map(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some(Reply {
            sender: Bytes::copy_from_slice(&frame[..sp]),
            conn_ids,
            extended,
            body: Bytes::copy_from_slice(body),
        })
    }
}

/// What one client connection received, gathered from the replies.
#[derive(Debug, Default, Clone)]
pub struct ClientOutput {
    /// The bytes written to the client, in order.
    pub data: Vec<u8>,
    /// How many non-empty replies carried them.
    pub messages: usize,
    /// Whether an empty reply (close) came.
    pub closed: bool,
    /// The bodies of extended (`X`) messages addressed to it.
    pub ctl: Vec<Vec<u8>>,
}

impl ClientOutput {
    /// Whether an extended message cancelled the connection (`ctl` with `cancel`).
    pub fn cancelled(&self) -> bool {
        self.ctl
            .iter()
            .any(|c| c.windows(6).any(|w| w == b"cancel"))
    }

    /// Whether the connection ended: closed or cancelled.
    pub fn ended(&self) -> bool {
        self.closed || self.cancelled()
    }
}

// ------------------------------------------------------------------------------------------------
// HTTP responses

/// A parsed HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (de-chunked when the response was chunked).
    pub body: Vec<u8>,
    /// Whether the body was chunked.
    pub chunked: bool,
    /// The head as sent: status line and headers up to and including the blank line.
    pub head: Vec<u8>,
}

impl HttpResponse {
    /// Parses one complete response from the front of `data`; `None` while it is incomplete.
    /// `head_only` is for answers to `HEAD` (no body whatever the headers say); `closed` says
    /// the connection ended, which completes a body delimited by the close.
    ///
    /// # Errors
    /// A message when `data` is not an HTTP response or its framing is broken.
    pub fn parse(data: &[u8], head_only: bool, closed: bool) -> Result<Option<Self>, String> {
        let mut hbuf = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hbuf);
        let n = match r.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "bad HTTP response ({e}): {:?}",
                    String::from_utf8_lossy(data)
                ))
            }
        };
        let status = r.code.unwrap_or(0);
        let mut resp = HttpResponse {
            status,
            reason: r.reason.unwrap_or("").to_string(),
            headers: r
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
            body: Vec::new(),
            chunked: false,
            head: data[..n].to_vec(),
        };
        let rest = &data[n..];
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(Some(resp));
        }
        if resp
            .header_str("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            resp.chunked = true;
            let mut p = rest;
            loop {
                let Some(line_end) = p.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let size = std::str::from_utf8(&p[..line_end])
                    .ok()
                    .and_then(|l| l.split(';').next())
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or_else(|| format!("bad chunk size in {:?}", String::from_utf8_lossy(p)))?;
                p = &p[line_end + 2..];
                if size == 0 {
                    return Ok((p.len() >= 2).then_some(resp));
                }
                if p.len() < size + 2 {
                    return Ok(None);
                }
                resp.body.extend_from_slice(&p[..size]);
                p = &p[size + 2..];
            }
        }
        if let Some(len) = resp.header_str("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {len:?}"))?;
            if rest.len() >= len {
                resp.body = rest[..len].to_vec();
                return Ok(Some(resp));
            }
            // A short body followed by a close is complete as far as the server goes.
            resp.body = rest.to_vec();
            return Ok(closed.then_some(resp));
        }
        resp.body = rest.to_vec();
        Ok(closed.then_some(resp))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name` as (lossy) text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every value of header `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The head as (lossy) text.
    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// ------------------------------------------------------------------------------------------------
// The fake Mongrel2
