//! The checks behind the fuzz targets (the cargo-fuzz crate in `fuzz/` includes this file as its
//! library), shared with `tests/fuzz_regressions.rs` and `tests/proptest_codec.rs` (which include
//! it with `#[path]`), so a crasher replays on stable through exactly the same code. It lives
//! under `tests/` so that the published package, which cannot hold the nested fuzz crate, has it.
//!
//! - [`tnetstring`]: parse arbitrary bytes; whatever parses re-encodes canonically and parses
//!   back to the same value.
//! - [`request`]: `RawMessage::decode` and `Message::decode` on arbitrary frames (raw, or the
//!   bytes wrapped into a tnetstring- or JSON-header frame); they agree with each other and never
//!   panic.
//! - [`roundtrip`]: structured inputs that the `arbitrary` crate makes from the bytes
//!   ([`Roundtrip`]: tnetstring trees, request frames in both header protocols, replies and ctl
//!   messages) are encoded, decoded and compared. They live in `roundtrip.rs`.

use arbitrary::Arbitrary;
use bytes::Bytes;
use m2wsgi::tnetstring::{self, Limits, Value};
use m2wsgi::{Message, ParseErrorKind, RawMessage};

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

pub mod roundtrip;

pub use roundtrip::{check_frame_round_trip, parse_reply, Frame, Header, Roundtrip};

/// Fuzz target `roundtrip`: the bytes become a [`Roundtrip`] through the `arbitrary` crate (as
/// `libfuzzer-sys` would make a typed input), which is encoded, decoded and compared. Bytes too
/// short for an input are skipped.
pub fn roundtrip(data: &[u8]) {
    if let Ok(input) = Roundtrip::arbitrary_take_rest(arbitrary::Unstructured::new(data)) {
        roundtrip::check(&input);
    }
}
