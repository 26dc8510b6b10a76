//! The checks behind the fuzz targets, shared with `tests/fuzz_regressions.rs` (which includes
//! this file with `#[path]`), so a crasher replays on stable through exactly the same code.
//!
//! - [`tnetstring`]: parse arbitrary bytes; whatever parses re-encodes canonically and parses
//!   back to the same value.
//! - [`request`]: `RawMessage::decode` and `Message::decode` on arbitrary frames (raw, or the
//!   bytes wrapped into a tnetstring- or JSON-header frame); they agree with each other and never
//!   panic.
//! - [`roundtrip`]: structured values built from the bytes (tnetstring trees, request frames in
//!   both header protocols, replies and ctl messages) are encoded, decoded and compared.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use m2wsgi::codec::response::{encode_ctl, encode_deliver, encode_reply, Ctl, MAX_TARGETS};
use m2wsgi::tnetstring::{self, Limits, Value};
use m2wsgi::{HeaderProtocol, Message, MessageKind, ParseErrorKind, RawMessage};

/// Mongrel2's own upper-case keys, which [`Message`] turns into typed fields.
pub const KNOWN_KEYS: &[&[u8]] = &[
    b"METHOD",
    b"VERSION",
    b"URI",
    b"PATH",
    b"QUERY",
    b"FRAGMENT",
    b"PATTERN",
    b"URL_SCHEME",
    b"REMOTE_ADDR",
    b"FLAGS",
    b"UPLOAD_STREAM",
    b"UPLOAD_STREAM_DONE",
    b"DOWNLOAD_CREDITS",
];

// ---------------------------------------------------------------------------------------------
// tnetstring

/// Encodes `v`, checks the length, parses it back and checks it is the same value, and that the
/// encoding is a fixed point.
pub fn check_value(v: &Value<'_>) {
    let e = v.to_vec();
    assert_eq!(
        e.len(),
        v.encoded_len(),
        "encoded_len disagrees with encode"
    );
    let back = tnetstring::parse(&e).expect("an encoded value parses");
    assert_eq!(&back, v, "value changed in a round trip");
    assert_eq!(back.to_vec(), e, "encoding is not canonical");
}

/// Parses `data` as one tnetstring, as a run of tnetstrings, and as a netstring.
pub fn tnetstring(data: &[u8]) {
    match tnetstring::parse(data) {
        Ok(v) => check_value(&v),
        Err(e) => assert!(e.offset() <= data.len(), "offset past the input: {e}"),
    }
    // A run of values, as in a message tail `HEADERS BODY`.
    let mut rest = data;
    for _ in 0..64 {
        match tnetstring::parse_prefix(rest) {
            Ok((v, r)) => {
                assert!(r.len() < rest.len(), "parse_prefix consumed nothing");
                let used = &rest[..rest.len() - r.len()];
                assert_eq!(tnetstring::parse(used).as_ref(), Ok(&v));
                check_value(&v);
                rest = r;
            }
            Err(e) => {
                assert!(e.offset() <= rest.len(), "offset past the input: {e}");
                break;
            }
        }
    }
    // Netstrings: the length prefix is canonical, so re-encoding gives back the same bytes.
    if let Ok((payload, r)) = tnetstring::parse_netstring(data) {
        let mut out = Vec::new();
        tnetstring::write_netstring(&mut out, payload);
        out.extend_from_slice(r);
        assert_eq!(out, data);
    }
    // Tight limits: anything they accept, the defaults accept the same way.
    let tight = Limits {
        max_length_digits: 3,
        max_size: 300,
        max_depth: 2,
    };
    if let Ok(v) = tnetstring::parse_with(data, &tight) {
        assert_eq!(tnetstring::parse(data), Ok(v));
    }
}

// ---------------------------------------------------------------------------------------------
// request

/// Appends `payload` as `len:payload` followed by `tag`.
pub fn tagged(out: &mut Vec<u8>, payload: &[u8], tag: u8) {
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(payload);
    out.push(tag);
}

/// Turns fuzz bytes into a frame. Real frames start with the sender UUID, so input whose first
/// byte is ASCII alphanumeric (every captured vector) is used as it is; otherwise the first byte
/// picks a wrapper for the rest, and the second byte where to split it into headers and body.
pub fn build_frame(data: &[u8]) -> Vec<u8> {
    let Some((&sel, rest)) = data.split_first() else {
        return Vec::new();
    };
    if sel.is_ascii_alphanumeric() {
        return data.to_vec();
    }
    let (cut, rest) = match rest.split_first() {
        Some((&c, r)) => (usize::from(c) * r.len() / 256, r),
        None => (0, rest),
    };
    let (headers, body) = rest.split_at(cut);
    let mut f = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378 1 /handler ".to_vec();
    match sel % 3 {
        0 => tagged(&mut f, headers, b'}'),
        1 => {
            let mut obj = Vec::with_capacity(headers.len() + 2);
            obj.push(b'{');
            obj.extend_from_slice(headers);
            obj.push(b'}');
            tagged(&mut f, &obj, b',');
        }
        _ => {
            f.extend_from_slice(rest);
            return f;
        }
    }
    tagged(&mut f, body, b',');
    f
}

/// Decodes one frame both ways and checks that the two decoders agree.
pub fn check_frame(frame: &[u8]) {
    let raw = RawMessage::decode(frame);
    let owned = Message::decode(Bytes::copy_from_slice(frame));
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            assert!(e.offset() <= frame.len(), "offset past the frame: {e}");
            let oe = owned.expect_err("Message decoded what RawMessage refused");
            // `RawMessage::decode` checks only the top level; `Message::decode` reports a
            // header error first when there is one, and it comes earlier in the frame.
            assert!(
                oe == e || oe.offset() < e.offset(),
                "the two decoders report different errors: {oe} / {e}"
            );
            return;
        }
    };
    // One checked walk: the pairs, then at most one error, last.
    let items: Vec<_> = raw.headers().try_iter().collect();
    let checked = raw.headers().validate();
    let plain = raw.headers().iter().count();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = match checked {
        Ok(()) => {
            assert!(items.iter().all(Result::is_ok));
            assert_eq!(plain, items.len());
            items
                .into_iter()
                .map(|i| i.unwrap())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        }
        Err(e) => {
            assert!(e.offset() <= frame.len(), "offset past the frame: {e}");
            assert_eq!(
                items.last(),
                Some(&Err(e)),
                "try_iter ends with validate's error"
            );
            assert_eq!(items.iter().filter(|i| i.is_err()).count(), 1);
            assert_eq!(plain, items.len() - 1, "iter stops at the error");
            let oe = owned.expect_err("Message decoded headers that validate refused");
            assert_eq!(oe, e, "Message and validate report different errors");
            return;
        }
    };
    for (k, v) in &pairs {
        // `get` finds the first value of a name.
        let first = raw.headers().get(k).expect("get finds an iterated name");
        if first.as_ref() != v.as_slice() {
            assert!(pairs.iter().filter(|(n, _)| n == k).count() > 1);
        }
    }
    let m = match owned {
        Ok(m) => m,
        Err(e) => {
            assert_eq!(
                e.kind(),
                ParseErrorKind::BadField,
                "Message refused a valid frame: {e}"
            );
            assert!(e.offset() <= frame.len());
            return;
        }
    };
    assert_eq!(m.sender().as_ref(), raw.sender());
    assert_eq!(m.conn_id(), raw.conn_id());
    assert_eq!(m.path().as_ref(), raw.path());
    assert_eq!(m.body().as_ref(), raw.body());
    assert_eq!(m.protocol(), raw.headers().protocol());
    // Every pair lands in exactly one place: a typed field, the HeaderMap, or `extra`.
    let known = pairs
        .iter()
        .filter(|(k, _)| KNOWN_KEYS.contains(&k.as_slice()))
        .count();
    assert_eq!(known + m.headers().len() + m.extra().len(), pairs.len());
    let _ = (m.is_request(), m.wants_close(), m.kind());
}

/// Fuzz target `request`.
pub fn request(data: &[u8]) {
    check_frame(&build_frame(data));
}

// ---------------------------------------------------------------------------------------------
// roundtrip

/// A tiny reader of structured values from fuzz bytes; reads past the end give zeros.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    /// One byte.
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, r)) => {
                self.0 = r;
                b
            }
            None => 0,
        }
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let v = usize::from(self.byte()) << 8 | usize::from(self.byte());
        v % n
    }

    /// Up to `max` bytes, as a slice of the input.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = self.below(max + 1).min(self.0.len());
        let (b, r) = self.0.split_at(n);
        self.0 = r;
        b
    }

    /// A `u64` from eight bytes.
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |n, _| n << 8 | u64::from(self.byte()))
    }
}

/// A tnetstring value at most `depth` containers deep.
pub fn value<'a>(inp: &mut Input<'a>, depth: usize) -> Value<'a> {
    let tag = inp.byte() % if depth == 0 { 5 } else { 7 };
    match tag {
        0 => Value::String(inp.bytes(64)),
        1 => Value::Integer(inp.u64() as i64),
        2 => {
            let f = f64::from_bits(inp.u64());
            Value::Float(if f.is_finite() { f } else { 0.5 })
        }
        3 => Value::Bool(inp.byte() & 1 == 1),
        4 => Value::Null,
        5 => {
            let n = inp.below(6);
            Value::List((0..n).map(|_| value(inp, depth - 1)).collect())
        }
        _ => {
            let n = inp.below(6);
            Value::Dict(
                (0..n)
                    .map(|_| (inp.bytes(16), value(inp, depth - 1)))
                    .collect(),
            )
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

const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"PURGE",
];

/// A request frame from fuzz bytes. It always has a `METHOD`, and it has a `PATH` header (equal
/// to the PATH field, as Mongrel2 sends it) only when `mongrel2_path` is set; generated names
/// never equal a Mongrel2 key.
pub fn frame(inp: &mut Input<'_>, mongrel2_path: bool) -> Frame {
    let sender_chars = b"0123456789abcdef-_.ABCXYZ";
    let sender: Vec<u8> = (0..1 + inp.below(40))
        .map(|_| sender_chars[inp.below(sender_chars.len())])
        .collect();
    let conn_id = inp.u64() >> 1; // fits in an i64, as the decoder requires
    let mut path: Vec<u8> = inp
        .bytes(40)
        .iter()
        .map(|&b| if b == b' ' { b'_' } else { b })
        .collect();
    if path.is_empty() {
        path.push(b'/');
    }
    let mut headers = vec![Header {
        name: b"METHOD".to_vec(),
        values: vec![METHODS[inp.below(METHODS.len())].to_vec()],
        list: false,
    }];
    if mongrel2_path {
        headers.push(Header {
            name: b"PATH".to_vec(),
            values: vec![path.clone()],
            list: false,
        });
    }
    for _ in 0..inp.below(10) {
        let mut name = inp.bytes(24).to_vec();
        if inp.byte() & 1 == 0 {
            // Mostly plausible lower-case names, so the HeaderMap side gets exercised.
            name.iter_mut()
                .for_each(|b| *b = b"abcdefghijklmnopqrstuvwxyz-0123"[usize::from(*b) % 31]);
        }
        if KNOWN_KEYS.contains(&name.as_slice())
            || name == b"x-mongrel2-upload-start"
            || name == b"x-mongrel2-upload-done"
        {
            name.insert(0, b'x');
        }
        let list = inp.byte() & 1 == 1;
        let n = if list { inp.below(6) } else { 1 };
        let values = (0..n).map(|_| inp.bytes(32).to_vec()).collect();
        headers.push(Header { name, values, list });
    }
    let body = inp.bytes(512).to_vec();
    Frame {
        sender,
        conn_id,
        path,
        headers,
        body,
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
pub fn check_responses(inp: &mut Input<'_>) {
    let sender = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378";
    let n = 1 + inp.below(300);
    let ids: Vec<u64> = (0..n)
        .map(|i| {
            if inp.byte() & 1 == 0 {
                i as u64 + 1
            } else {
                inp.u64()
            }
        })
        .collect();
    let body = inp.bytes(64);
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
    let mut ctls = Vec::new();
    for _ in 0..1 + inp.below(3) {
        ctls.push(match inp.byte() % 3 {
            0 => Ctl::Credits(inp.u64() as i64),
            1 => Ctl::KeepAlive,
            _ => Ctl::Cancel,
        });
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

/// Fuzz target `roundtrip`.
pub fn roundtrip(data: &[u8]) {
    let mut inp = Input(data);
    match inp.byte() % 3 {
        0 => {
            let v = value(&mut inp, 4);
            check_value(&v);
        }
        1 => {
            let json = inp.byte() & 1 == 1;
            let with_path = inp.byte() & 1 == 1;
            let f = frame(&mut inp, with_path);
            check_frame_round_trip(
                &f,
                if json {
                    HeaderProtocol::Json
                } else {
                    HeaderProtocol::Tnetstring
                },
            );
        }
        _ => check_responses(&mut inp),
    }
}
