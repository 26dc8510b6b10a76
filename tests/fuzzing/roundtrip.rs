//! The `roundtrip` target's structured inputs, made from fuzz bytes by the `arbitrary` crate, and
//! the checks that encode them, decode them and compare.

use super::{tagged, KNOWN_KEYS};
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use m2wsgi::codec::response::{encode_ctl, encode_deliver, encode_reply, Ctl, MAX_TARGETS};
use m2wsgi::tnetstring::{self, Value};
use m2wsgi::{HeaderProtocol, Message, MessageKind, RawMessage};

/// One input of the `roundtrip` target.
#[derive(Debug, Arbitrary)]
pub enum Roundtrip<'a> {
    /// A tnetstring value, encoded, parsed back and compared.
    Value(Tree<'a>),
    /// A request frame, encoded as Mongrel2 would, decoded both ways and compared.
    Frame {
        /// JSON headers rather than a tnetstring dictionary.
        json: bool,
        /// The frame.
        frame: FrameSeed,
    },
    /// Replies, deliveries and ctl messages, encoded and parsed back.
    Responses(Responses<'a>),
}

/// A tnetstring value at most [`Tree::DEPTH`] containers deep (a depth the parser's default
/// limit accepts), with finite floats only (a non-finite one is written as `NaN`/`inf`, which the
/// parser rightly refuses).
#[derive(Debug)]
pub struct Tree<'a>(pub Value<'a>);

impl<'a> Tree<'a> {
    /// How deep generated containers nest.
    pub const DEPTH: usize = 4;

    fn value(u: &mut Unstructured<'a>, depth: usize) -> arbitrary::Result<Value<'a>> {
        let kinds = if depth == 0 { 4 } else { 6 };
        Ok(match u.int_in_range(0..=kinds)? {
            0 => Value::String(u.arbitrary()?),
            1 => Value::Integer(u.arbitrary()?),
            2 => {
                let f: f64 = u.arbitrary()?;
                Value::Float(if f.is_finite() { f } else { 0.5 })
            }
            3 => Value::Bool(u.arbitrary()?),
            4 => Value::Null,
            5 => {
                let n = u.int_in_range(0..=5)?;
                Value::List(
                    (0..n)
                        .map(|_| Self::value(u, depth - 1))
                        .collect::<arbitrary::Result<_>>()?,
                )
            }
            _ => {
                let n = u.int_in_range(0..=5)?;
                Value::Dict(
                    (0..n)
                        .map(|_| Ok((u.arbitrary()?, Self::value(u, depth - 1)?)))
                        .collect::<arbitrary::Result<_>>()?,
                )
            }
        })
    }
}

impl<'a> Arbitrary<'a> for Tree<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::value(u, Self::DEPTH).map(Tree)
    }
}

/// A request frame as the fuzzer makes it; [`Frame::from`] turns it into one Mongrel2 could send.
#[derive(Debug, Clone, Arbitrary)]
pub struct FrameSeed {
    /// Sender bytes, mapped onto the characters a sender may hold.
    pub sender: Vec<u8>,
    /// Connection id (its top bit is dropped: the decoder takes ids up to `i64::MAX`).
    pub conn_id: u64,
    /// PATH field (spaces become `_`).
    pub path: Vec<u8>,
    /// Which method ([`METHODS`]).
    pub method: u8,
    /// Whether to send a `PATH` header equal to the PATH field, as Mongrel2 does.
    pub mongrel2_path: bool,
    /// The other headers.
    pub headers: Vec<HeaderSeed>,
    /// Body.
    pub body: Vec<u8>,
}

/// One header as the fuzzer makes it.
#[derive(Debug, Clone, Arbitrary)]
pub struct HeaderSeed {
    /// Name bytes.
    pub name: Vec<u8>,
    /// Map the name onto lower-case letters, digits and `-`, so the `HeaderMap` side gets
    /// exercised.
    pub plausible: bool,
    /// Send the values as a list (otherwise only the first, as a string).
    pub list: bool,
    /// Values.
    pub values: Vec<Vec<u8>>,
}

/// Replies, deliveries and ctl messages as the fuzzer makes them.
#[derive(Debug, Arbitrary)]
pub struct Responses<'a> {
    /// The connection ids (1 to 300 of them are used).
    pub ids: Vec<Id>,
    /// The body.
    pub body: &'a [u8],
    /// The ctl instructions (1 to 3 of them are used).
    pub ctls: Vec<CtlSeed>,
}

/// A connection id: its position in the list counted from 1, or any `u64`.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Id {
    /// The id's position in the list, counted from 1.
    Sequential,
    /// Any id.
    Any(u64),
}

/// A [`Ctl`] as the fuzzer makes it.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum CtlSeed {
    /// [`Ctl::Credits`].
    Credits(i64),
    /// [`Ctl::KeepAlive`].
    KeepAlive,
    /// [`Ctl::Cancel`].
    Cancel,
}

impl From<CtlSeed> for Ctl {
    fn from(c: CtlSeed) -> Self {
        match c {
            CtlSeed::Credits(n) => Ctl::Credits(n),
            CtlSeed::KeepAlive => Ctl::KeepAlive,
            CtlSeed::Cancel => Ctl::Cancel,
        }
    }
}

/// One header of a generated request: a name and its values, sent as a list or a single string.
#[derive(Debug, Clone)]
pub struct Header {
    /// The name.
    pub name: Vec<u8>,
    /// The values (a single string when `list` is false, which needs exactly one).
    pub values: Vec<Vec<u8>>,
    /// Whether the value is sent as a list.
    pub list: bool,
}

/// A request frame's parts.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Sender UUID.
    pub sender: Vec<u8>,
    /// Connection id.
    pub conn_id: u64,
    /// PATH field (no spaces).
    pub path: Vec<u8>,
    /// Headers in wire order.
    pub headers: Vec<Header>,
    /// Body.
    pub body: Vec<u8>,
}

/// Mongrel2's JSON escaping: only `\` and `"`.
pub fn json_escape(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if b == b'\\' || b == b'"' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

impl Frame {
    /// Encodes the frame as Mongrel2 does for the given header protocol. With JSON, a header
    /// named `PATH` is written unescaped, as Mongrel2 writes it.
    pub fn encode(&self, protocol: HeaderProtocol) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.sender);
        f.push(b' ');
        f.extend_from_slice(self.conn_id.to_string().as_bytes());
        f.push(b' ');
        f.extend_from_slice(&self.path);
        f.push(b' ');
        match protocol {
            HeaderProtocol::Tnetstring => {
                let mut dict = Vec::new();
                for h in &self.headers {
                    tagged(&mut dict, &h.name, b',');
                    if h.list {
                        let mut l = Vec::new();
                        for v in &h.values {
                            tagged(&mut l, v, b',');
                        }
                        tagged(&mut dict, &l, b']');
                    } else {
                        tagged(&mut dict, &h.values[0], b',');
                    }
                }
                tagged(&mut f, &dict, b'}');
            }
            HeaderProtocol::Json => {
                let mut obj = vec![b'{'];
                for (i, h) in self.headers.iter().enumerate() {
                    if i > 0 {
                        obj.push(b',');
                    }
                    obj.push(b'"');
                    json_escape(&mut obj, &h.name);
                    obj.extend_from_slice(b"\":");
                    let s = |obj: &mut Vec<u8>, v: &[u8]| {
                        obj.push(b'"');
                        if h.name == b"PATH" {
                            obj.extend_from_slice(v);
                        } else {
                            json_escape(obj, v);
                        }
                        obj.push(b'"');
                    };
                    if h.list {
                        obj.push(b'[');
                        for (j, v) in h.values.iter().enumerate() {
                            if j > 0 {
                                obj.push(b',');
                            }
                            s(&mut obj, v);
                        }
                        obj.push(b']');
                    } else {
                        s(&mut obj, &h.values[0]);
                    }
                }
                obj.push(b'}');
                tagged(&mut f, &obj, b',');
            }
        }
        tagged(&mut f, &self.body, b',');
        f
    }

    /// The `(name, value)` pairs a decoder should yield, in order.
    pub fn pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.headers
            .iter()
            .flat_map(|h| h.values.iter().map(|v| (h.name.clone(), v.clone())))
            .collect()
    }
}

/// The methods a generated frame uses.
pub const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"PURGE",
];

impl From<FrameSeed> for Frame {
    /// A frame Mongrel2 could send: a sender of 1 to 40 UUID characters, a PATH of 1 to 40 bytes
    /// with no space, always a `METHOD`, a `PATH` header (equal to the PATH field) only when
    /// `mongrel2_path` is set, up to 9 more headers whose names never equal a Mongrel2 key, and a
    /// body of up to 512 bytes.
    fn from(s: FrameSeed) -> Self {
        let sender_chars = b"0123456789abcdef-_.ABCXYZ";
        let mut sender: Vec<u8> = s
            .sender
            .iter()
            .take(40)
            .map(|&b| sender_chars[usize::from(b) % sender_chars.len()])
            .collect();
        if sender.is_empty() {
            sender.push(b'0');
        }
        let mut path: Vec<u8> = s
            .path
            .iter()
            .take(40)
            .map(|&b| if b == b' ' { b'_' } else { b })
            .collect();
        if path.is_empty() {
            path.push(b'/');
        }
        let mut headers = vec![Header {
            name: b"METHOD".to_vec(),
            values: vec![METHODS[usize::from(s.method) % METHODS.len()].to_vec()],
            list: false,
        }];
        if s.mongrel2_path {
            headers.push(Header {
                name: b"PATH".to_vec(),
                values: vec![path.clone()],
                list: false,
            });
        }
        for h in s.headers.into_iter().take(9) {
            let mut name: Vec<u8> = h.name.into_iter().take(24).collect();
            if h.plausible {
                name.iter_mut()
                    .for_each(|b| *b = b"abcdefghijklmnopqrstuvwxyz-0123"[usize::from(*b) % 31]);
            }
            if KNOWN_KEYS.contains(&name.as_slice())
                || name == b"x-mongrel2-upload-start"
                || name == b"x-mongrel2-upload-done"
            {
                name.insert(0, b'x');
            }
            let mut values: Vec<Vec<u8>> = h
                .values
                .into_iter()
                .take(if h.list { 5 } else { 1 })
                .map(|v| v.into_iter().take(32).collect())
                .collect();
            if !h.list && values.is_empty() {
                values.push(Vec::new());
            }
            headers.push(Header {
                name,
                values,
                list: h.list,
            });
        }
        let mut body = s.body;
        body.truncate(512);
        Frame {
            sender,
            conn_id: s.conn_id >> 1,
            path,
            headers,
            body,
        }
    }
}

/// Checks that `RawMessage` and `Message` give back every part of `f` encoded with `protocol`.
pub fn check_frame_round_trip(f: &Frame, protocol: HeaderProtocol) {
    let bytes = f.encode(protocol);
    let raw = RawMessage::decode(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"));
    assert_eq!(raw.sender(), f.sender.as_slice());
    assert_eq!(raw.conn_id(), f.conn_id);
    assert_eq!(raw.path(), f.path.as_slice());
    assert_eq!(raw.body(), f.body.as_slice());
    assert_eq!(raw.headers().protocol(), protocol);
    let got: Vec<(Vec<u8>, Vec<u8>)> = raw
        .headers()
        .iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let want = f.pairs();
    assert_eq!(got, want);

    let frame = Bytes::from(bytes);
    let m = Message::decode(frame.clone()).unwrap_or_else(|e| panic!("{e}: {frame:?}"));
    assert_eq!(m.sender().as_ref(), f.sender.as_slice());
    assert_eq!(m.conn_id(), f.conn_id);
    assert_eq!(m.path().as_ref(), f.path.as_slice());
    assert_eq!(m.body().as_ref(), f.body.as_slice());
    // The body is a slice of the frame, not a copy.
    if !f.body.is_empty() {
        let range = frame.as_ptr_range();
        assert!(range.contains(&m.body().as_ptr()));
    }
    let method = &f.headers[0].values[0];
    assert_eq!(
        m.method().map(|m| m.as_str().as_bytes()),
        Some(method.as_slice())
    );
    let path_hdr = f.headers.iter().find(|h| h.name == b"PATH");
    assert_eq!(
        m.request_path().map(|p| p.as_ref()),
        path_hdr.map(|h| h.values[0].as_slice())
    );
    assert_eq!(m.kind(), &MessageKind::Request);
    // Lower-case names `http` accepts go to the HeaderMap (in order per name); everything else
    // goes to `extra`, in wire order.
    let mut extra = Vec::new();
    let mut in_map = 0;
    for (k, v) in want.iter().skip(1 + usize::from(path_hdr.is_some())) {
        let is_http = !k.iter().any(u8::is_ascii_uppercase)
            && HeaderName::from_bytes(k).is_ok()
            && HeaderValue::from_bytes(v).is_ok();
        if is_http {
            in_map += 1;
        } else {
            extra.push((k.clone(), v.clone()));
        }
    }
    let got_extra: Vec<(Vec<u8>, Vec<u8>)> = m
        .extra()
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(got_extra, extra);
    assert_eq!(m.headers().len(), in_map);
    for h in &f.headers {
        if let Ok(name) = HeaderName::from_bytes(&h.name) {
            if h.name.iter().any(u8::is_ascii_uppercase) {
                continue;
            }
            let want: Vec<&[u8]> = h
                .values
                .iter()
                .map(Vec::as_slice)
                .filter(|v| HeaderValue::from_bytes(v).is_ok())
                .collect();
            let got: Vec<&[u8]> = m
                .headers()
                .get_all(&name)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            // Several generated headers may share a name: theirs come first, in order.
            let same: Vec<&[u8]> = f
                .headers
                .iter()
                .filter(|o| o.name == h.name)
                .flat_map(|o| o.values.iter().map(Vec::as_slice))
                .filter(|v| HeaderValue::from_bytes(v).is_ok())
                .collect();
            assert_eq!(got, same);
            assert!(want.iter().all(|v| got.contains(v)));
        }
    }
}

/// Parses a reply `UUID SP LEN:IDS, SP BODY` back into its parts.
pub fn parse_reply(msg: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let sp = msg
        .iter()
        .position(|&b| b == b' ')
        .expect("a space after the sender");
    let (ids, rest) = tnetstring::parse_netstring(&msg[sp + 1..]).expect("an id netstring");
    let body = rest.strip_prefix(b" ").expect("a space before the body");
    (&msg[..sp], ids, body)
}

/// Builds replies, deliveries and ctl messages and parses them back.
pub fn check_responses(r: &Responses<'_>) {
    let sender = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378";
    let mut ids: Vec<u64> = r
        .ids
        .iter()
        .take(300)
        .enumerate()
        .map(|(i, id)| match id {
            Id::Sequential => i as u64 + 1,
            Id::Any(n) => *n,
        })
        .collect();
    if ids.is_empty() {
        ids.push(1);
    }
    let n = ids.len();
    let body = &r.body[..r.body.len().min(64)];
    let msgs = encode_deliver(sender, &ids, body).expect("deliver");
    assert_eq!(msgs.len(), n.div_ceil(MAX_TARGETS));
    let mut back = Vec::new();
    for m in &msgs {
        let (s, id_text, b) = parse_reply(m);
        assert_eq!(s, sender);
        assert_eq!(b, body);
        let chunk: Vec<u64> = id_text
            .split(|&b| b == b' ')
            .map(|t| std::str::from_utf8(t).unwrap().parse().unwrap())
            .collect();
        assert!(chunk.len() <= MAX_TARGETS);
        back.extend(chunk);
    }
    assert_eq!(back, ids);
    let mut out = Vec::new();
    assert!(encode_reply(&mut out, sender, &ids[..n.min(MAX_TARGETS)], body).is_ok());

    let few = &ids[..n.min(MAX_TARGETS)];
    let mut ctls: Vec<Ctl> = r.ctls.iter().take(3).map(|&c| c.into()).collect();
    if ctls.is_empty() {
        ctls.push(Ctl::KeepAlive);
    }
    let mut out = Vec::new();
    encode_ctl(&mut out, sender, few, &ctls).expect("ctl");
    let (s, id_text, b) = parse_reply(&out);
    assert_eq!(s, sender);
    let id_text = id_text.strip_prefix(b"X ").expect("X before the ids");
    let got: Vec<u64> = id_text
        .split(|&b| b == b' ')
        .map(|t| std::str::from_utf8(t).unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, few);
    let v = tnetstring::parse(b).expect("the ctl body is one tnetstring");
    let Value::List(items) = v else {
        panic!("ctl body is not a list")
    };
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], Value::String(b"ctl"));
    let Value::Dict(args) = &items[1] else {
        panic!("ctl args are not a dict")
    };
    assert_eq!(args.len(), ctls.len());
    for ((k, v), c) in args.iter().zip(&ctls) {
        match c {
            Ctl::Credits(n) => assert_eq!((*k, v), (&b"credits"[..], &Value::Integer(*n))),
            Ctl::KeepAlive => assert_eq!((*k, v), (&b"keep-alive"[..], &Value::Bool(true))),
            Ctl::Cancel => assert_eq!((*k, v), (&b"cancel"[..], &Value::Bool(true))),
            _ => unreachable!(),
        }
    }
}

/// Runs the check for one structured input.
pub fn check(input: &Roundtrip<'_>) {
    match input {
        Roundtrip::Value(Tree(v)) => super::check_value(v),
        Roundtrip::Frame { json, frame } => {
            let f = Frame::from(frame.clone());
            let protocol = if *json {
                HeaderProtocol::Json
            } else {
                HeaderProtocol::Tnetstring
            };
            check_frame_round_trip(&f, protocol);
        }
        Roundtrip::Responses(r) => check_responses(r),
    }
}
