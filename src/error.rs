//! The crate's one error type.

use std::fmt;

/// Why some bytes could not be parsed, and where.
///
/// `offset` counts bytes from the start of the buffer handed to the parser (for a Mongrel2
/// message: the start of the ZeroMQ frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    kind: ParseErrorKind,
    offset: usize,
}

impl ParseError {
    pub(crate) const fn new(kind: ParseErrorKind, offset: usize) -> Self {
        Self { kind, offset }
    }

    /// Moves the error's offset `by` bytes further (used when a sub-slice was parsed).
    #[must_use]
    pub(crate) const fn shift(self, by: usize) -> Self {
        Self {
            kind: self.kind,
            offset: self.offset + by,
        }
    }

    /// What was wrong.
    pub const fn kind(&self) -> ParseErrorKind {
        self.kind
    }

    /// The byte offset at which the problem was found.
    pub const fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind, self.offset)
    }
}

impl std::error::Error for ParseError {}

/// The kinds of [`ParseError`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The input ended before the value did.
    #[error("input ends early")]
    Incomplete,
    /// A length prefix is empty or holds something other than ASCII digits.
    #[error("length prefix is not a decimal number")]
    BadLength,
    /// A length prefix has more digits than the configured cap.
    #[error("length prefix has too many digits")]
    LengthTooLong,
    /// A declared length is larger than the configured size cap.
    #[error("declared length exceeds the size limit")]
    TooLarge,
    /// The length prefix is not followed by `:`.
    #[error("expected ':' after the length")]
    MissingColon,
    /// The byte after a payload is not a known tnetstring tag (or not the tag expected there).
    #[error("unexpected type tag {0:#04x}")]
    BadTag(u8),
    /// Containers are nested deeper than the configured cap.
    #[error("nesting is too deep")]
    TooDeep,
    /// Bytes follow a complete value where none may.
    #[error("trailing bytes after the value")]
    TrailingBytes,
    /// An integer payload is not an optional `-` followed by ASCII digits.
    #[error("malformed integer")]
    BadInteger,
    /// An integer does not fit in an `i64`.
    #[error("integer overflows i64")]
    IntegerOverflow,
    /// A float payload is not a decimal floating point number.
    #[error("malformed float")]
    BadFloat,
    /// A boolean payload is neither `true` nor `false`.
    #[error("malformed boolean")]
    BadBool,
    /// A null has a non-empty payload.
    #[error("null with a payload")]
    BadNull,
    /// A dictionary key is not a string.
    #[error("dictionary key is not a string")]
    KeyNotString,
    /// A dictionary has a key with no value.
    #[error("dictionary key without a value")]
    MissingValue,
    /// The sender UUID field of a Mongrel2 message is empty or malformed.
    #[error("bad sender field")]
    BadSender,
    /// A connection id is not a decimal number that fits in a `u64`.
    #[error("bad connection id")]
    BadConnId,
    /// A field separator (a single space) is missing.
    #[error("expected a space")]
    MissingSpace,
    /// The headers are neither a tnetstring dictionary nor a JSON object netstring.
    #[error("malformed headers")]
    BadHeaders,
    /// A header value is neither a string nor a list of strings.
    #[error("header value is not a string or a list of strings")]
    BadHeaderValue,
    /// A Mongrel2 field (such as `FLAGS` or `UPLOAD_STREAM`) holds an invalid value.
    #[error("bad value in a Mongrel2 field")]
    BadField,
    /// A body netstring is missing or malformed.
    #[error("malformed body netstring")]
    BadBody,
    /// A WebSocket frame is malformed.
    #[error("malformed websocket frame")]
    BadFrame,
}

/// Everything that can go wrong in this crate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed bytes: a tnetstring, netstring or Mongrel2 message.
    #[error("malformed message: {0}")]
    Parse(#[from] ParseError),
    /// A ZeroMQ operation failed.
    #[error("zeromq {op} failed: {message}")]
    Socket {
        /// What was being done (`connect`, `send`, `recv`, ...).
        op: &'static str,
        /// The errno ZeroMQ reported.
        errno: i32,
        /// ZeroMQ's text for it.
        message: String,
    },
    /// A socket spec (`tcp://127.0.0.1:9999`, `tcp://IDENT@host:port#bind`) is not valid.
    #[error("invalid socket spec {spec:?}: {reason}")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The Mongrel2 config database could not be read, or has no such handler.
    #[cfg(feature = "config-db")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config-db")))]
    #[error("mongrel2 config: {0}")]
    Config(Box<crate::config::ConfigError>),
    /// A codec encoder refused its arguments (no connection ids, too many, a bad sender, an
    /// empty `X ctl` message): see [`crate::codec::EncodeError`].
    #[error("cannot encode the message: {0}")]
    Encode(#[from] crate::codec::EncodeError),
    /// An async upload was refused (path outside the upload directory, start and done differ, ...).
    #[cfg(feature = "runtime")]
    #[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
    #[error("upload rejected: {0}")]
    Upload(crate::upload::UploadRefusal),
    /// [`Request::accept_websocket`](crate::Request::accept_websocket) on a message that is not
    /// a WebSocket handshake.
    #[cfg(feature = "runtime")]
    #[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
    #[error("accept_websocket on a message that is not a WebSocket handshake")]
    NotAHandshake,
    /// The client went away (Mongrel2 sent a disconnect notice) or the request was already closed.
    #[error("client connection closed")]
    Closed,
    /// A file or socket I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The WSGI bridge could not start Python, or serve without it (see
    /// [`WsgiError`](crate::wsgi::WsgiError) for the cases).
    #[cfg(feature = "wsgi")]
    #[cfg_attr(docsrs, doc(cfg(feature = "wsgi")))]
    #[error(transparent)]
    Wsgi(#[from] crate::wsgi::WsgiError),
}

/// For `std::io` traits ([`Read`](std::io::Read), [`Write`](std::io::Write)) implemented over
/// the runtime: a gone client is `ConnectionAborted`, an I/O error stays itself.
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Closed => std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e),
            e => std::io::Error::other(e),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
