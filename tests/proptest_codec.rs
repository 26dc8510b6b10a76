//! Property tests of the codec: tnetstring round trips, request frames in both header protocols,
//! decoding arbitrary and mutated bytes, and reply/ctl encoding.
//!
//! The checks are the fuzz targets' own (`tests/fuzzing/`), fed by proptest strategies here.

#[allow(dead_code, unreachable_pub, missing_docs, unused_imports)]
#[path = "fuzzing/mod.rs"]
mod checks;

use checks::{Frame, Header};
use m2wsgi::codec::response::{encode_ctl, encode_deliver, Ctl, MAX_TARGETS};
use m2wsgi::tnetstring::{self, Value};
use m2wsgi::{HeaderProtocol, Message};
use proptest::prelude::*;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// tnetstring values

/// An owned tnetstring value, so that proptest can generate it; [`Own::value`] borrows it as a
/// [`Value`].
#[derive(Debug, Clone)]
enum Own {
    S(Vec<u8>),
    I(i64),
    F(f64),
    B(bool),
    N,
    L(Vec<Own>),
    D(Vec<(Vec<u8>, Own)>),
}

impl Own {
    fn value(&self) -> Value<'_> {
        match self {
            Own::S(s) => Value::String(s),
            Own::I(i) => Value::Integer(*i),
            Own::F(f) => Value::Float(*f),
            Own::B(b) => Value::Bool(*b),
            Own::N => Value::Null,
            Own::L(l) => Value::List(l.iter().map(Own::value).collect()),
            Own::D(d) => Value::Dict(d.iter().map(|(k, v)| (k.as_slice(), v.value())).collect()),
        }
    }
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        (-1e6f64..1e6),
    ]
}

fn own() -> impl Strategy<Value = Own> {
    let leaf = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Own::S),
        any::<i64>().prop_map(Own::I),
        finite_f64().prop_map(Own::F),
        any::<bool>().prop_map(Own::B),
        Just(Own::N),
    ];
    // At most 4 levels, 64 nodes, 6 items per container.
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Own::L),
            proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..12), inner), 0..6)
                .prop_map(Own::D),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_encode_round_trip(v in own()) {
        let v = v.value();
        let bytes = v.to_vec();
        prop_assert_eq!(bytes.len(), v.encoded_len());
        prop_assert_eq!(&tnetstring::parse(&bytes).unwrap(), &v);
        checks::check_value(&v);
    }

    #[test]
    fn canonical_input_re_encodes_byte_for_byte(v in own(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let x = v.value().to_vec();
        let parsed = tnetstring::parse(&x).unwrap();
        prop_assert_eq!(parsed.to_vec(), x.clone());
        // With bytes after it: `parse_prefix` hands them back, `parse` refuses them.
        let mut with_tail = x.clone();
        with_tail.extend_from_slice(&tail);
        let (v2, rest) = tnetstring::parse_prefix(&with_tail).unwrap();
        prop_assert_eq!(v2, parsed);
        prop_assert_eq!(rest, tail.as_slice());
        if !tail.is_empty() {
            let e = tnetstring::parse(&with_tail).unwrap_err();
            prop_assert_eq!(e.kind(), m2wsgi::ParseErrorKind::TrailingBytes);
            prop_assert_eq!(e.offset(), x.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_tnetstring_parser(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        checks::tnetstring(&data);
    }

    #[test]
    fn tnetstring_shaped_bytes(data in proptest::collection::vec(
        prop_oneof![Just(b'0'), Just(b'1'), Just(b'2'), Just(b'9'), Just(b':'), Just(b','),
                    Just(b'}'), Just(b']'), Just(b'#'), Just(b'^'), Just(b'!'), Just(b'~'),
                    any::<u8>()], 0..60)) {
        checks::tnetstring(&data);
    }
}

// ---------------------------------------------------------------------------------------------
// Request frames

/// Bytes that stress the JSON protocol: its two escapes, the quote that ends a string, raw
/// control and non-UTF-8 bytes, and ordinary text.
fn tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z').prop_map(|c| c as u8),
            1 => Just(b'\\'),
            1 => Just(b'"'),
            1 => Just(b'{'),
            1 => Just(b':'),
            1 => Just(b','),
            1 => Just(b' '),
            1 => Just(0u8),
            1 => Just(0xffu8),
            1 => any::<u8>(),
        ],
        0..max,
    )
}

fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-z][a-z0-9-]{0,15}".prop_map(String::into_bytes),
        1 => tricky_bytes(12),
    ]
    .prop_map(|mut n| {
        if checks::KNOWN_KEYS.contains(&n.as_slice())
            || n == b"x-mongrel2-upload-start"
            || n == b"x-mongrel2-upload-done"
        {
            n.insert(0, b'x');
        }
        n
    })
}

fn header() -> impl Strategy<Value = Header> {
    (
        header_name(),
        any::<bool>(),
        proptest::collection::vec(tricky_bytes(24), 1..6),
    )
        .prop_map(|(name, list, mut values)| {
            if !list {
                values.truncate(1);
            }
            Header { name, values, list }
        })
}

fn frame() -> impl Strategy<Value = (Frame, bool)> {
    (
        "[0-9a-zA-Z._-]{1,40}",
        0..=i64::MAX as u64,
        tricky_bytes(40),
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("HEAD"),
            Just("DELETE"),
            Just("PURGE")
        ],
        proptest::collection::vec(header(), 0..8),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(|(sender, conn_id, path, method, extra, body, with_path)| {
            let mut path: Vec<u8> = path
                .into_iter()
                .map(|b| if b == b' ' { b'_' } else { b })
                .collect();
            if path.is_empty() {
                path.push(b'/');
            }
            let mut headers = vec![Header {
                name: b"METHOD".to_vec(),
                values: vec![method.as_bytes().to_vec()],
                list: false,
            }];
            if with_path {
                // As Mongrel2 sends it: equal to the PATH field, and unescaped in JSON.
                headers.push(Header {
                    name: b"PATH".to_vec(),
                    values: vec![path.clone()],
                    list: false,
                });
            }
            headers.extend(extra);
            (
                Frame {
                    sender: sender.into_bytes(),
                    conn_id,
                    path,
                    headers,
                    body,
                },
                with_path,
            )
        })
}

/// Mongrel2's own keys with arbitrary values (URI, QUERY, ...), in both protocols.
fn mongrel2_fields() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let keys = [
        "URI",
        "QUERY",
        "FRAGMENT",
        "PATTERN",
        "URL_SCHEME",
        "REMOTE_ADDR",
    ];
    proptest::collection::vec((0..keys.len(), tricky_bytes(30)), 0..6)
        .prop_map(move |v| v.into_iter().map(|(i, b)| (keys[i], b)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_frames_round_trip_in_both_protocols((f, _) in frame()) {
        checks::check_frame_round_trip(&f, HeaderProtocol::Tnetstring);
        checks::check_frame_round_trip(&f, HeaderProtocol::Json);
    }

    #[test]
    fn mongrel2_fields_reach_their_accessors(
        (f, _) in frame(),
        fields in mongrel2_fields(),
        version in prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")],
        credits in proptest::option::of(any::<u32>()),
        json in any::<bool>(),
    ) {
        let mut f = f;
        f.headers.truncate(1); // METHOD
        f.headers.push(Header { name: b"VERSION".to_vec(), values: vec![version.into()], list: false });
        if let Some(c) = credits {
            f.headers.push(Header {
                name: b"DOWNLOAD_CREDITS".to_vec(),
                values: vec![c.to_string().into_bytes()],
                list: false,
            });
        }
        for (k, v) in &fields {
            f.headers.push(Header { name: k.as_bytes().to_vec(), values: vec![v.clone()], list: false });
        }
        let protocol = if json { HeaderProtocol::Json } else { HeaderProtocol::Tnetstring };
        let m = Message::decode(f.encode(protocol).into()).unwrap();
        // The last value of a key wins.
        let want = |k: &str| fields.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| v.as_slice());
        prop_assert_eq!(m.uri().map(|b| b.as_ref()), want("URI"));
        prop_assert_eq!(m.query().map(|b| b.as_ref()), want("QUERY"));
        prop_assert_eq!(m.fragment().map(|b| b.as_ref()), want("FRAGMENT"));
        prop_assert_eq!(m.pattern().map(|b| b.as_ref()), want("PATTERN"));
        prop_assert_eq!(m.url_scheme().map(|b| b.as_ref()), want("URL_SCHEME"));
        prop_assert_eq!(m.remote_addr().map(|b| b.as_ref()), want("REMOTE_ADDR"));
        prop_assert_eq!(m.download_credits(), credits.map(u64::from));
        prop_assert_eq!(
            m.version(),
            Some(if version == "HTTP/1.1" { http::Version::HTTP_11 } else { http::Version::HTTP_10 })
        );
        prop_assert!(m.extra().is_empty());
        prop_assert!(m.headers().is_empty());
        // Debug and Clone see the same fields.
        let c = m.clone();
        prop_assert_eq!(format!("{m:?}"), format!("{c:?}"));
    }

    #[test]
    fn arbitrary_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        checks::request(&data);
    }

    #[test]
    fn framed_arbitrary_headers_never_panic(
        json in any::<bool>(),
        headers in tricky_bytes(120),
        body in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        // The fuzz target's wrappers: a selector byte, a split point, the bytes.
        let mut data = vec![if json { 1u8 } else { 0u8 }, 200];
        let cut = headers.len();
        data.extend_from_slice(&headers);
        data.extend_from_slice(&body);
        data[1] = ((cut * 256) / data[2..].len().max(1)).min(255) as u8;
        checks::request(&data);
    }
}

/// Every captured frame (under 2000 bytes), for mutation; read once.
fn vectors() -> &'static [Vec<u8>] {
    static VECTORS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    VECTORS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .filter(|b| b.len() < 2000)
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn mutate(mut v: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if v.is_empty() {
            break;
        }
        match *m {
            Mutation::Set(i, b) => {
                let i = i % v.len();
                v[i] = b;
            }
            Mutation::Insert(i, b) => {
                let i = i % (v.len() + 1);
                v.insert(i, b);
            }
            Mutation::Delete(i) => {
                let i = i % v.len();
                v.remove(i);
            }
            Mutation::Truncate(i) => v.truncate(i % (v.len() + 1)),
        }
    }
    v
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        Just(b' '),
        Just(b':'),
        Just(b','),
        Just(b'}'),
        Just(b']'),
        Just(b'"'),
        Just(b'\\'),
        Just(b'0'),
        Just(b'9'),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_vectors_never_panic(
        which in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..4),
    ) {
        let vs = vectors();
        let v = mutate(vs[which % vs.len()].clone(), &ms);
        checks::check_frame(&v);
        checks::tnetstring(&v);
        // The headers-and-body tail alone, as tnetstrings.
        if let Some(tail) = v.splitn(4, |&b| b == b' ').nth(3) {
            checks::tnetstring(tail);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deliveries_batch_by_128_and_parse_back(
        ids in proptest::collection::vec(prop_oneof![1u64..=300, any::<u64>()], 1..=300),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let sender = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378";
        let msgs = encode_deliver(sender, &ids, &body).unwrap();
        prop_assert_eq!(msgs.len(), ids.len().div_ceil(MAX_TARGETS));
        let mut back = Vec::new();
        for m in &msgs {
            let (s, id_text, b) = checks::parse_reply(m);
            prop_assert_eq!(s, &sender[..]);
            prop_assert_eq!(b, body.as_slice());
            let chunk: Vec<u64> = id_text
                .split(|&b| b == b' ')
                .map(|t| std::str::from_utf8(t).unwrap().parse().unwrap())
                .collect();
            prop_assert!(!chunk.is_empty() && chunk.len() <= MAX_TARGETS);
            back.extend(chunk);
        }
        prop_assert_eq!(back, ids);
    }

    #[test]
    fn ctl_messages_parse_back(
        ids in proptest::collection::vec(any::<u64>(), 1..=MAX_TARGETS),
        ctls in proptest::collection::vec(prop_oneof![
            any::<i64>().prop_map(Ctl::Credits),
            Just(Ctl::KeepAlive),
            Just(Ctl::Cancel),
        ], 1..4),
    ) {
        let sender = b"34f9ceee-cd52-4b7f-b197-88bf2f0ec378";
        let mut out = Vec::new();
        encode_ctl(&mut out, sender, &ids, &ctls).unwrap();
        let (_, id_text, body) = checks::parse_reply(&out);
        let id_text = id_text.strip_prefix(b"X ").unwrap();
        let got: Vec<u64> = id_text
            .split(|&b| b == b' ')
            .map(|t| std::str::from_utf8(t).unwrap().parse().unwrap())
            .collect();
        prop_assert_eq!(got, ids);
        let Value::List(items) = tnetstring::parse(body).unwrap() else {
            panic!("not a list")
        };
        prop_assert_eq!(items.len(), 2);
        prop_assert_eq!(&items[0], &Value::String(b"ctl"));
        let Value::Dict(args) = &items[1] else { panic!("not a dict") };
        prop_assert_eq!(args.len(), ctls.len());
        for ((k, v), c) in args.iter().zip(&ctls) {
            let want = match c {
                Ctl::Credits(n) => (&b"credits"[..], Value::Integer(*n)),
                Ctl::KeepAlive => (&b"keep-alive"[..], Value::Bool(true)),
                Ctl::Cancel => (&b"cancel"[..], Value::Bool(true)),
                _ => unreachable!(),
            };
            prop_assert_eq!((*k, v.clone()), want);
        }
    }
}

#[test]
fn ids_1_to_300_make_three_messages() {
    let ids: Vec<u64> = (1..=300).collect();
    let msgs = encode_deliver(b"u", &ids, b"hi").unwrap();
    let sizes: Vec<usize> = msgs
        .iter()
        .map(|m| checks::parse_reply(m).1.split(|&b| b == b' ').count())
        .collect();
    assert_eq!(sizes, [128, 128, 44]);
    assert!(msgs[0].starts_with(b"u 403:1 2 3 "));
}
