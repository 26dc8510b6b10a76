//! [`MessageKind`]: what a message from Mongrel2 is, and how a decoded message is classified.

use super::websocket::Opcode;
use crate::error::ParseError;
use bytes::Bytes;
use http::Method;

/// What a message from Mongrel2 is.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageKind {
    /// An HTTP request with its whole body inline (the common case). A request whose body is
    /// streamed (`upload.stream=1`) is this kind too, with [`Message::upload_stream`](super::Message::upload_stream) set.
    Request,
    /// First message of an async upload: the headers, with the body still being written to the
    /// temp file named by `x-mongrel2-upload-start`.
    UploadStart {
        /// The temp file path as Mongrel2 sees it (inside its chroot).
        path: Bytes,
    },
    /// Second message of an async upload: the body is complete in the temp file.
    UploadDone {
        /// `x-mongrel2-upload-start`.
        start: Bytes,
        /// `x-mongrel2-upload-done`; a genuine upload has `start == done`.
        done: Bytes,
    },
    /// A continuation of a streamed upload: headers hold only `UPLOAD_STREAM` (and
    /// `UPLOAD_STREAM_DONE`), the body is the next slice of the request body.
    UploadStream {
        /// Offset of this slice within the request body.
        offset: u64,
        /// Whether this is the last slice.
        done: bool,
    },
    /// The client's connection is gone (`@*`, `{"type":"disconnect"}`).
    Disconnect,
    /// Download credits returned (`@*`, `{"type":"credits"}`): bytes Mongrel2 has written.
    Credits {
        /// `DOWNLOAD_CREDITS`: bytes written to the client since the last notice.
        bytes: u64,
    },
    /// A WebSocket handshake; the body is the `Sec-WebSocket-Accept` value Mongrel2 computed.
    /// The handler must send the `101 Switching Protocols` response itself.
    WebSocketHandshake,
    /// A WebSocket message or control frame; the body is the unmasked payload.
    WebSocketFrame {
        /// The opcode from `FLAGS`.
        opcode: Opcode,
        /// The raw `FLAGS` byte (first frame byte with FIN set).
        flags: u8,
    },
    /// A JSON socket message (`@path {json}\0`); the body is the JSON text.
    Json,
    /// An XML socket message (`<tag ...>...</tag>\0`); the body is the XML text.
    Xml,
}

/// What a header walk found that decides a message's [`MessageKind`].
pub(super) struct Signals<'m> {
    /// The PATH field (`@*` for notices).
    pub(super) path: &'m [u8],
    /// `METHOD`, if it was there and valid.
    pub(super) method: Option<&'m Method>,
    /// `FLAGS`, if it was there and valid.
    pub(super) flags: Option<u8>,
    /// `UPLOAD_STREAM`.
    pub(super) upload_stream: Option<u64>,
    /// `UPLOAD_STREAM_DONE` was there.
    pub(super) stream_done: bool,
    /// `DOWNLOAD_CREDITS`.
    pub(super) download_credits: Option<u64>,
    /// `x-mongrel2-upload-start`.
    pub(super) upload_start: Option<Bytes>,
    /// `x-mongrel2-upload-done`.
    pub(super) upload_done: Option<Bytes>,
}

impl MessageKind {
    /// The kind of a message with these signals, or `bad` when they contradict each other (no
    /// `METHOD` and no `UPLOAD_STREAM`, a `WEBSOCKET` frame without valid `FLAGS`).
    #[inline]
    pub(super) fn classify(s: Signals<'_>, bad: ParseError) -> Result<Self, ParseError> {
        Ok(match s.method.map(Method::as_str) {
            None => match s.upload_stream {
                Some(offset) => MessageKind::UploadStream {
                    offset,
                    done: s.stream_done,
                },
                None => return Err(bad),
            },
            Some("JSON") if s.path == b"@*" => {
                if let Some(bytes) = s.download_credits {
                    MessageKind::Credits { bytes }
                } else {
                    MessageKind::Disconnect
                }
            }
            Some("JSON") => MessageKind::Json,
            Some("XML") => MessageKind::Xml,
            Some("WEBSOCKET_HANDSHAKE") => MessageKind::WebSocketHandshake,
            Some("WEBSOCKET") => {
                let flags = s.flags.ok_or(bad)?;
                MessageKind::WebSocketFrame {
                    opcode: Opcode::from_u8(flags & 0x0f).ok_or(bad)?,
                    flags,
                }
            }
            Some(_) => match (s.upload_start, s.upload_done) {
                (Some(start), Some(done)) => MessageKind::UploadDone { start, done },
                (Some(path), None) => MessageKind::UploadStart { path },
                (None, Some(done)) => MessageKind::UploadDone {
                    start: Bytes::new(),
                    done,
                },
                (None, None) => MessageKind::Request,
            },
        })
    }
}
