//! A minimal RFC 6455 WebSocket client over loopback TCP, for the end-to-end suites.

use m2wsgi::codec::websocket::{decode_frame, Frame, Opcode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// A minimal RFC 6455 client.
pub struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Ws {
    /// Connects to `addr` and shakes hands for `path` (RFC 6455's example key); panics unless
    /// the answer is `101` with the matching accept value.
    pub fn connect(addr: SocketAddr, path: &str) -> Ws {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1, "handshake answer cut short");
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        // RFC 6455's own example key and accept value.
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        Ws { s, buf: Vec::new() }
    }

    /// Sends one masked frame with FIN set.
    pub fn send(&mut self, opcode: Opcode, payload: &[u8]) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut out = vec![0x80 | opcode.as_u8()];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&out).unwrap();
    }

    /// The next frame from the server; panics after 10 s.
    pub fn recv(&mut self) -> Frame {
        let deadline = Instant::now() + T;
        loop {
            match decode_frame(&self.buf, 1 << 30) {
                Ok((f, rest)) => {
                    let used = self.buf.len() - rest.len();
                    self.buf.drain(..used);
                    return f;
                }
                Err(e) if e.kind() == m2wsgi::ParseErrorKind::Incomplete => {}
                Err(e) => panic!("bad frame from the server: {e}"),
            }
            assert!(Instant::now() < deadline, "no frame within {T:?}");
            let mut b = [0u8; 65536];
            let n = self.s.read(&mut b).expect("read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    /// Whether the server closes the connection within 3 s.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 16];
        self.s
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        matches!(self.s.read(&mut b), Ok(0))
    }
}
