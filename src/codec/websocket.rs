//! WebSocket frames. Mongrel2 unmasks and reassembles client frames itself; a handler writes
//! server frames (unmasked) as raw bytes, built here.

use crate::error::{ParseError, ParseErrorKind as K};

/// A WebSocket opcode (RFC 6455 section 5.2).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// `0x0`: continuation of a fragmented message.
    Continuation,
    /// `0x1`: a UTF-8 text message.
    Text,
    /// `0x2`: a binary message.
    Binary,
    /// `0x8`: close, with an optional status code and reason.
    Close,
    /// `0x9`: ping.
    Ping,
    /// `0xA`: pong.
    Pong,
}

impl Opcode {
    /// The opcode for the low four bits of a frame's first byte, if defined.
    pub const fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The opcode's four-bit value.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub const fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Appends one unmasked server frame with FIN set: header (2, 4 or 10 bytes) then `payload`.
///
/// Control frames may carry at most 125 bytes (RFC 6455 5.5); that is the caller's to keep.
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    encode_frame_header(out, true, opcode, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Appends only a frame header, for a payload of `len` bytes the caller writes after it.
pub fn encode_frame_header(out: &mut Vec<u8>, fin: bool, opcode: Opcode, len: u64) {
    out.push(if fin { 0x80 } else { 0 } | opcode.as_u8());
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Appends a close frame with a status `code` and a `reason` (cut to fit 125 bytes on a
/// character boundary).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, Opcode::Close, &payload);
}

/// Splits a close frame's payload into its status code and reason.
///
/// # Errors
/// [`BadFrame`](crate::ParseErrorKind::BadFrame) for a one-byte payload.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &[u8])>, ParseError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ParseError::new(K::BadFrame, 0)),
        [a, b, reason @ ..] => Ok(Some((u16::from_be_bytes([*a, *b]), reason))),
    }
}

/// A frame decoded from bytes, as a client would (unmasked server frames and masked client
/// frames both work). Used by tests and tools that look at what a handler wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: Opcode,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Decodes one frame from the front of `input`, returning it and the bytes after it.
///
/// # Errors
/// [`Incomplete`](crate::ParseErrorKind::Incomplete) when the frame is cut short,
/// [`BadFrame`](crate::ParseErrorKind::BadFrame) for an unknown opcode or reserved bits, and
/// [`TooLarge`](crate::ParseErrorKind::TooLarge) when the length exceeds `max_len`.
pub fn decode_frame(input: &[u8], max_len: u64) -> Result<(Frame, &[u8]), ParseError> {
    let inc = |at| ParseError::new(K::Incomplete, at);
    let [b0, b1, ..] = *input else {
        return Err(inc(input.len()));
    };
    if b0 & 0x70 != 0 {
        return Err(ParseError::new(K::BadFrame, 0));
    }
    let opcode = Opcode::from_u8(b0 & 0x0f).ok_or(ParseError::new(K::BadFrame, 0))?;
    let masked = b1 & 0x80 != 0;
    let mut pos = 2;
    let len = match b1 & 0x7f {
        126 => {
            let b = input.get(2..4).ok_or(inc(input.len()))?;
            pos = 4;
            u64::from(u16::from_be_bytes([b[0], b[1]]))
        }
        127 => {
            let b = input.get(2..10).ok_or(inc(input.len()))?;
            pos = 10;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_be_bytes(a)
        }
        n => u64::from(n),
    };
    if len > max_len {
        return Err(ParseError::new(K::TooLarge, 1));
    }
    let mask = if masked {
        let m = input.get(pos..pos + 4).ok_or(inc(input.len()))?;
        pos += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    let len = usize::try_from(len).map_err(|_| ParseError::new(K::TooLarge, 1))?;
    let end = pos
        .checked_add(len)
        .ok_or(ParseError::new(K::TooLarge, 1))?;
    let body = input.get(pos..end).ok_or(inc(input.len()))?;
    let mut payload = body.to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode,
            payload,
        },
        &input[end..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_length_forms_round_trip() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![b'M'; len];
            let mut out = Vec::new();
            encode_frame(&mut out, Opcode::Binary, &payload);
            let header = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            };
            assert_eq!(out.len(), header + len);
            let (f, rest) = decode_frame(&out, u64::MAX).unwrap();
            assert!(rest.is_empty() && f.fin && f.opcode == Opcode::Binary);
            assert_eq!(f.payload, payload);
        }
    }

    #[test]
    fn observed_server_frames() {
        // Observed against Mongrel2 1.12: the client got `\x81\x0cfrom handler\x89\x07srvping`.
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Text, b"from handler");
        encode_frame(&mut out, Opcode::Ping, b"srvping");
        assert_eq!(out, b"\x81\x0cfrom handler\x89\x07srvping");
        out.clear();
        encode_close(&mut out, 1000, "bye");
        assert_eq!(out, b"\x88\x05\x03\xe8bye");
        assert_eq!(parse_close(&out[2..]).unwrap(), Some((1000, &b"bye"[..])));
    }

    #[test]
    fn masked_client_frame_and_errors() {
        // From the websocket vector: a masked text frame "hello text".
        let frame = b"\x81\x8a\x11\x22\x33\x44yG_(~\x02G!iV";
        let (f, _) = decode_frame(frame, 1 << 20).unwrap();
        assert_eq!(f.payload, b"hello text");
        assert_eq!(
            decode_frame(&frame[..5], 99).unwrap_err().kind(),
            K::Incomplete
        );
        assert_eq!(
            decode_frame(b"\x83\x00", 99).unwrap_err().kind(),
            K::BadFrame
        );
        assert_eq!(
            decode_frame(b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff", u64::MAX)
                .unwrap_err()
                .kind(),
            K::TooLarge
        );
    }
}
