//! Socket specs: where a handler socket goes, with which identity, and whether it binds.
//!
//! The syntax is the one the Python m2wsgi used on its command line,
//!
//! ```text
//! TRANSPORT://[IDENTITY@]ADDRESS[#bind|#connect]
//! ```
//!
//! for example `tcp://127.0.0.1:9999`, `tcp://34f9ceee@127.0.0.1:9999#bind`, `ipc://run/handler`
//! or `inproc://requests`. Without a suffix the socket connects, which is what a handler does:
//! Mongrel2 binds both of its handler sockets.
//!
//! ```
//! use m2wsgi::{default_recv_spec, SocketSpec};
//!
//! let send: SocketSpec = "tcp://app-1@127.0.0.1:9999".parse()?;
//! assert_eq!(send.endpoint(), "tcp://127.0.0.1:9999");
//! assert_eq!(send.identity(), Some("app-1"));
//! assert!(!send.is_bind());
//!
//! // The reply socket defaults to the port below the request socket.
//! assert_eq!(default_recv_spec(&send)?.to_string(), "tcp://app-1@127.0.0.1:9998");
//! # Ok::<(), m2wsgi::Error>(())
//! ```

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The longest socket identity ZeroMQ accepts, in bytes.
const MAX_IDENTITY_LEN: usize = 255;

/// A parsed socket spec: a ZeroMQ endpoint, an optional socket identity, and bind or connect.
///
/// Parse one with [`SocketSpec::parse`] or [`str::parse`]; [`Display`](fmt::Display) writes the
/// canonical form back (lower-case transport, no `#connect` suffix), which parses to an equal value.
///
/// Accepted transports:
///
/// - `tcp://HOST:PORT`: `HOST` is a name, an IPv4 address, `[IPv6]`, or `*`; `PORT` is 1 to 65535.
///   Port `0` or `*` (an ephemeral port) is accepted only with `#bind`.
/// - `ipc://PATH`: a Unix socket path. `ipc://@NAME` is Linux's abstract namespace (the `@` right
///   after `://` is part of the address, not an empty identity); with an identity write
///   `ipc://IDENT@@NAME`.
/// - `inproc://NAME`: a socket in the same process (same ZeroMQ context).
///
/// The identity is everything between `://` and the first `@`; it must be 1 to 255 bytes. A `#`
/// always starts the suffix, so no part of a spec can contain one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SocketSpec {
    endpoint: String,
    identity: Option<String>,
    bind: bool,
}

impl SocketSpec {
    /// Parses a spec such as `tcp://IDENT@127.0.0.1:9999#bind`.
    ///
    /// # Errors
    ///
    /// [`Error::BadSpec`] naming the spec and what is wrong with it: empty, whitespace, no
    /// `TRANSPORT://`, a transport other than tcp, ipc or inproc, an empty or over-long identity, an
    /// empty address, a tcp address without a valid port, or a suffix other than `#bind` or
    /// `#connect`.
    pub fn parse(spec: &str) -> Result<SocketSpec> {
        let bad = |reason: &'static str| Error::BadSpec {
            spec: spec.to_owned(),
            reason,
        };
        if spec.is_empty() {
            return Err(bad("the spec is empty"));
        }
        if spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the spec contains whitespace or control characters"));
        }
        let (scheme, rest) = spec
            .split_once("://")
            .ok_or_else(|| bad("missing transport (tcp://, ipc:// or inproc://)"))?;
        let transport = Transport::from_scheme(scheme)
            .ok_or_else(|| bad("unsupported transport (use tcp, ipc or inproc)"))?;

        let (rest, bind) = match rest.split_once('#') {
            None => (rest, false),
            Some((rest, mode)) if mode.eq_ignore_ascii_case("bind") => (rest, true),
            Some((rest, mode)) if mode.eq_ignore_ascii_case("connect") => (rest, false),
            Some(_) => return Err(bad("unknown suffix (use #bind or #connect)")),
        };

        // `ipc://@name` is an abstract socket, not an empty identity.
        let abstract_ipc = transport == Transport::Ipc && rest.starts_with('@');
        let (identity, address) = match rest.split_once('@') {
            Some((ident, address)) if !abstract_ipc => (Some(ident), address),
            _ => (None, rest),
        };
        if let Some(ident) = identity {
            if ident.is_empty() {
                return Err(bad("the identity before '@' is empty"));
            }
            if ident.len() > MAX_IDENTITY_LEN {
                return Err(bad("the identity is longer than 255 bytes"));
            }
        }
        if address.is_empty() {
            return Err(bad("the address is empty"));
        }
        if transport == Transport::Tcp {
            check_tcp_address(address, bind).map_err(bad)?;
        }

        Ok(SocketSpec {
            endpoint: format!("{}://{address}", transport.scheme()),
            identity: identity.map(str::to_owned),
            bind,
        })
    }

    /// The ZeroMQ endpoint to bind or connect, without identity or suffix: `tcp://127.0.0.1:9999`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The socket identity (`ZMQ_IDENTITY`) to set before binding or connecting, if one was given.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// `true` when the socket should bind (`#bind`), `false` when it should connect (the default).
    pub fn is_bind(&self) -> bool {
        self.bind
    }

    /// The endpoint split at `://`: (`tcp`, `127.0.0.1:9999`).
    fn scheme_and_address(&self) -> (&str, &str) {
        self.endpoint
            .split_once("://")
            .expect("endpoint always holds ://")
    }
}

impl FromStr for SocketSpec {
    type Err = Error;

    /// Same as [`SocketSpec::parse`].
    fn from_str(s: &str) -> Result<Self> {
        SocketSpec::parse(s)
    }
}

impl fmt::Display for SocketSpec {
    /// The canonical form: `TRANSPORT://[IDENTITY@]ADDRESS[#bind]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, address) = self.scheme_and_address();
        f.write_str(scheme)?;
        f.write_str("://")?;
        if let Some(ident) = &self.identity {
            write!(f, "{ident}@")?;
        }
        f.write_str(address)?;
        if self.bind {
            f.write_str("#bind")?;
        }
        Ok(())
    }
}

/// The reply (PUB) spec that goes with a request (PULL) spec when none is given: the same spec with
/// the tcp port one lower, as the Python m2wsgi did. Identity and bind/connect are kept.
///
/// ```
/// # use m2wsgi::{default_recv_spec, SocketSpec};
/// let send = SocketSpec::parse("tcp://127.0.0.1:9999#bind")?;
/// assert_eq!(default_recv_spec(&send)?.to_string(), "tcp://127.0.0.1:9998#bind");
/// # Ok::<(), m2wsgi::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::BadSpec`] when `send` is not a tcp spec, or its port is `*`, 0 or 1 (no port below it).
pub fn default_recv_spec(send: &SocketSpec) -> Result<SocketSpec> {
    let bad = |reason: &'static str| Error::BadSpec {
        spec: send.to_string(),
        reason,
    };
    let (scheme, address) = send.scheme_and_address();
    if scheme != Transport::Tcp.scheme() {
        return Err(bad("a reply spec can only be inferred from a tcp spec"));
    }
    let (host, port) = address
        .rsplit_once(':')
        .expect("a parsed tcp address has a port");
    let port = match port.parse::<u16>() {
        Ok(port) if port >= 2 => port - 1,
        _ => return Err(bad("no reply port can be inferred below port *, 0 or 1")),
    };
    Ok(SocketSpec {
        endpoint: format!("{scheme}://{host}:{port}"),
        identity: send.identity.clone(),
        bind: send.bind,
    })
}

/// The ZeroMQ transports a handler socket may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Ipc,
    Inproc,
}

impl Transport {
    fn from_scheme(scheme: &str) -> Option<Self> {
        [Transport::Tcp, Transport::Ipc, Transport::Inproc]
            .into_iter()
            .find(|t| scheme.eq_ignore_ascii_case(t.scheme()))
    }

    const fn scheme(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ipc => "ipc",
            Transport::Inproc => "inproc",
        }
    }
}

/// Checks `HOST:PORT`; port 0 and `*` (ephemeral) are only meaningful when binding.
fn check_tcp_address(address: &str, bind: bool) -> std::result::Result<(), &'static str> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or("a tcp address needs a :port")?;
    if host.is_empty() {
        return Err("the tcp host is empty");
    }
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err("an IPv6 address must be written in [brackets]");
    }
    if host.contains(['[', ']']) && !bracketed {
        return Err("unbalanced [brackets] in the tcp host");
    }
    let ephemeral = match port {
        "*" => true,
        _ if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) => {
            return Err("the tcp port is not a number from 1 to 65535");
        }
        _ => match port.parse::<u16>() {
            Ok(0) => true,
            Ok(_) => false,
            Err(_) => return Err("the tcp port is not a number from 1 to 65535"),
        },
    };
    if ephemeral && !bind {
        return Err("port 0 or * (any port) is only valid with #bind");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(input, endpoint, identity, bind, canonical form)`
    #[rustfmt::skip]
    const GOOD: &[(&str, &str, Option<&str>, bool, &str)] = &[
        ("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9999", None, false, "tcp://127.0.0.1:9999"),
        ("tcp://IDENT@127.0.0.1:9999", "tcp://127.0.0.1:9999", Some("IDENT"), false, "tcp://IDENT@127.0.0.1:9999"),
        ("tcp://127.0.0.1:9999#bind", "tcp://127.0.0.1:9999", None, true, "tcp://127.0.0.1:9999#bind"),
        ("tcp://127.0.0.1:9999#connect", "tcp://127.0.0.1:9999", None, false, "tcp://127.0.0.1:9999"),
        ("tcp://34f9ceee-cd52-4b7f-b197-88bf2f0ec378@localhost:6701#bind", "tcp://localhost:6701",
         Some("34f9ceee-cd52-4b7f-b197-88bf2f0ec378"), true, "tcp://34f9ceee-cd52-4b7f-b197-88bf2f0ec378@localhost:6701#bind"),
        ("TCP://127.0.0.1:1#BIND", "tcp://127.0.0.1:1", None, true, "tcp://127.0.0.1:1#bind"),
        ("tcp://[::1]:65535", "tcp://[::1]:65535", None, false, "tcp://[::1]:65535"),
        ("tcp://*:5555#bind", "tcp://*:5555", None, true, "tcp://*:5555#bind"),
        ("tcp://127.0.0.1:0#bind", "tcp://127.0.0.1:0", None, true, "tcp://127.0.0.1:0#bind"),
        ("tcp://127.0.0.1:*#bind", "tcp://127.0.0.1:*", None, true, "tcp://127.0.0.1:*#bind"),
        ("ipc://run/handler", "ipc://run/handler", None, false, "ipc://run/handler"),
        ("ipc:///tmp/m2.sock#bind", "ipc:///tmp/m2.sock", None, true, "ipc:///tmp/m2.sock#bind"),
        ("ipc://RILEY@/my/sock#connect", "ipc:///my/sock", Some("RILEY"), false, "ipc://RILEY@/my/sock"),
        ("ipc://@abstract", "ipc://@abstract", None, false, "ipc://@abstract"),
        ("ipc://ID@@abstract", "ipc://@abstract", Some("ID"), false, "ipc://ID@@abstract"),
        ("inproc://requests", "inproc://requests", None, false, "inproc://requests"),
        ("inproc://w1@requests#bind", "inproc://requests", Some("w1"), true, "inproc://w1@requests#bind"),
    ];

    /// `(input, part of the reason)`
    #[rustfmt::skip]
    const BAD: &[(&str, &str)] = &[
        ("", "empty"),
        ("127.0.0.1:9999", "missing transport"),
        ("tcp:/127.0.0.1:9999", "missing transport"),
        ("://127.0.0.1:9999", "unsupported transport"),
        ("udp://127.0.0.1:9999", "unsupported transport"),
        ("pgm://eth0;239.192.1.1:5555", "unsupported transport"),
        ("tcp:// 127.0.0.1:9999", "whitespace"),
        ("tcp://127.0.0.1:9999\n", "whitespace"),
        ("tcp://", "address is empty"),
        ("tcp://@127.0.0.1:9999", "identity before '@' is empty"),
        ("ipc://ID@", "address is empty"),
        ("inproc://@name", "identity before '@' is empty"),
        ("tcp://127.0.0.1", "needs a :port"),
        ("tcp://127.0.0.1:", "not a number"),
        ("tcp://127.0.0.1:http", "not a number"),
        ("tcp://127.0.0.1:-1", "not a number"),
        ("tcp://127.0.0.1:+80", "not a number"),
        ("tcp://127.0.0.1:65536", "not a number"),
        ("tcp://127.0.0.1:99999999999999999999", "not a number"),
        ("tcp://127.0.0.1:0", "only valid with #bind"),
        ("tcp://127.0.0.1:*", "only valid with #bind"),
        ("tcp://127.0.0.1:0#connect", "only valid with #bind"),
        ("tcp://:9999", "host is empty"),
        ("tcp://::1:9999", "[brackets]"),
        ("tcp://[::1:9999", "[brackets]"),
        ("tcp://[]:9999", "[brackets]"),
        ("tcp://127.0.0.1:9999#", "unknown suffix"),
        ("tcp://127.0.0.1:9999#listen", "unknown suffix"),
        ("tcp://127.0.0.1:9999#bind#bind", "unknown suffix"),
        ("ipc://a#b", "unknown suffix"),
    ];

    #[test]
    fn good_specs() {
        for &(input, endpoint, identity, bind, canonical) in GOOD {
            let spec = SocketSpec::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(spec.endpoint(), endpoint, "{input:?}");
            assert_eq!(spec.identity(), identity, "{input:?}");
            assert_eq!(spec.is_bind(), bind, "{input:?}");
            assert_eq!(spec.to_string(), canonical, "{input:?}");
            assert_eq!(
                SocketSpec::parse(canonical).unwrap(),
                spec,
                "{input:?} round trip"
            );
            assert_eq!(
                input.parse::<SocketSpec>().unwrap(),
                spec,
                "{input:?} FromStr"
            );
        }
    }

    #[test]
    fn bad_specs() {
        for &(input, want) in BAD {
            match SocketSpec::parse(input) {
                Err(Error::BadSpec { spec, reason }) => {
                    assert_eq!(spec, input);
                    assert!(
                        reason.contains(want),
                        "{input:?}: reason {reason:?}, want {want:?}"
                    );
                }
                other => panic!("{input:?}: expected BadSpec, got {other:?}"),
            }
        }
    }

    #[test]
    fn identity_length_limit() {
        let ok = format!("tcp://{}@127.0.0.1:1", "i".repeat(255));
        assert_eq!(
            SocketSpec::parse(&ok).unwrap().identity().unwrap().len(),
            255
        );
        let long = format!("tcp://{}@127.0.0.1:1", "i".repeat(256));
        assert!(matches!(
            SocketSpec::parse(&long),
            Err(Error::BadSpec { reason, .. }) if reason.contains("255 bytes")
        ));
    }

    #[test]
    fn bad_spec_message_names_the_spec() {
        let err = SocketSpec::parse("tcp://127.0.0.1:http").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid socket spec \"tcp://127.0.0.1:http\": the tcp port is not a number from 1 to 65535"
        );
    }

    #[test]
    fn default_recv_specs() {
        // (send spec, expected reply spec)
        let table = [
            ("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
            (
                "tcp://ID@127.0.0.1:6701#bind",
                "tcp://ID@127.0.0.1:6700#bind",
            ),
            ("tcp://[::1]:2", "tcp://[::1]:1"),
            ("tcp://*:65535#bind", "tcp://*:65534#bind"),
            ("tcp://localhost:10000#connect", "tcp://localhost:9999"),
        ];
        for (send, want) in table {
            let send = SocketSpec::parse(send).unwrap();
            let recv = default_recv_spec(&send).unwrap_or_else(|e| panic!("{send}: {e}"));
            assert_eq!(recv.to_string(), want);
            assert_eq!(recv, SocketSpec::parse(want).unwrap());
        }
    }

    #[test]
    fn default_recv_spec_errors() {
        // (send spec, part of the reason)
        let table = [
            ("tcp://127.0.0.1:1", "below port"),
            ("tcp://127.0.0.1:0#bind", "below port"),
            ("tcp://127.0.0.1:*#bind", "below port"),
            ("ipc://run/send", "only be inferred from a tcp spec"),
            ("inproc://send", "only be inferred from a tcp spec"),
        ];
        for (send, want) in table {
            let parsed = SocketSpec::parse(send).unwrap();
            match default_recv_spec(&parsed) {
                Err(Error::BadSpec { spec, reason }) => {
                    assert_eq!(spec, parsed.to_string());
                    assert!(reason.contains(want), "{send:?}: reason {reason:?}");
                }
                other => panic!("{send:?}: expected BadSpec, got {other:?}"),
            }
        }
    }

    #[test]
    fn socket_spec_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SocketSpec>();
    }
}
