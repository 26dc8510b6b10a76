//! Replays `tests/data/fuzz/<target>-<name>` through the fuzz targets' own checks
//! (`tests/fuzzing/`), on stable, as ordinary tests: the committed seed corpus and every crasher
//! the fuzzers found (or that was found by reading the code and is kept here so it stays fixed).
//!
//! To add a crasher: fix the bug, then copy `fuzz/artifacts/<target>/crash-...` to
//! `tests/data/fuzz/<target>-<what-it-was>`.

#[allow(dead_code, unreachable_pub, missing_docs, unused_imports)]
#[path = "fuzzing/mod.rs"]
mod checks;

use arbitrary::{Arbitrary, Unstructured};
use checks::roundtrip::{Id, Tree};
use checks::Roundtrip;
use m2wsgi::codec::response::MAX_TARGETS;
use m2wsgi::tnetstring::Value;
use m2wsgi::{Message, ParseErrorKind, RawMessage};
use std::path::Path;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn replay_committed_corpus() {
    let files = corpus();
    let mut per_target = [0usize; 3];
    for (name, data) in &files {
        let target = name.split_once('-').map(|(t, _)| t).unwrap_or("");
        match target {
            "tnetstring" => {
                checks::tnetstring(data);
                per_target[0] += 1;
            }
            "request" => {
                checks::request(data);
                per_target[1] += 1;
            }
            "roundtrip" => {
                checks::roundtrip(data);
                per_target[2] += 1;
            }
            _ => panic!("tests/data/fuzz/{name}: name it <target>-<what>"),
        }
    }
    assert!(
        per_target.iter().all(|&n| n > 0),
        "seeds per target: {per_target:?}"
    );
}

#[test]
fn roundtrip_seeds_are_the_inputs_they_are_named_for() {
    // The `roundtrip` target reads its input with the `arbitrary` crate: each seed must still
    // make the case its name says, or the corpus would quietly stop covering it.
    let mut seen = 0;
    for (name, data) in corpus() {
        let Some(what) = name.strip_prefix("roundtrip-") else {
            continue;
        };
        let input = Roundtrip::arbitrary_take_rest(Unstructured::new(&data))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ok = match (what, &input) {
            // More ids than one message takes, some of them arbitrary, and every kind of ctl.
            ("deliver", Roundtrip::Responses(r)) => {
                r.ids.len() > MAX_TARGETS
                    && r.ids.iter().any(|i| matches!(i, Id::Any(_)))
                    && r.ctls.len() == 3
                    && !r.body.is_empty()
            }
            // Headers with a list, escapes and a body, in the protocol the name says.
            ("frame-json", Roundtrip::Frame { json: true, frame })
            | ("frame-tnet", Roundtrip::Frame { json: false, frame }) => {
                frame.mongrel2_path
                    && frame.headers.iter().any(|h| h.list && h.values.len() > 1)
                    && frame
                        .headers
                        .iter()
                        .flat_map(|h| &h.values)
                        .any(|v| v.contains(&b'"') || v.contains(&b'\\'))
                    && !frame.body.is_empty()
            }
            // A dictionary holding a list of every scalar kind and an empty dictionary.
            ("value", Roundtrip::Value(Tree(Value::Dict(items)))) => {
                matches!(items.first(), Some((_, Value::List(l))) if l.len() == 5)
            }
            _ => false,
        };
        assert!(ok, "{name} decodes to {input:?}");
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[test]
fn float_overflow_is_refused_not_re_encoded_as_inf() {
    // `1e999` parsed as infinity, which encodes as `inf`, which does not parse: the tnetstring
    // target's re-encode invariant. Found by reading, fixed in `parse_float`.
    let e = m2wsgi::tnetstring::parse(b"5:1e999^").unwrap_err();
    assert_eq!(e.kind(), ParseErrorKind::BadFloat);
}

#[test]
fn a_long_run_of_empty_lists_does_not_overflow_the_stack() {
    // The header iterator recursed once per empty list value, so 2 MB of `1:a,0:]` blew the
    // stack. Too big to commit as a file; built here.
    let mut h = Vec::new();
    for _ in 0..300_000 {
        h.extend_from_slice(b"1:a,0:]");
    }
    h.extend_from_slice(b"6:METHOD,3:GET,");
    let mut f = b"u 1 /p ".to_vec();
    checks::tagged(&mut f, &h, b'}');
    f.extend_from_slice(b"0:,");
    let raw = RawMessage::decode(&f).unwrap();
    assert_eq!(raw.headers().iter().count(), 1);
    let m = Message::decode(f.clone().into()).unwrap();
    assert_eq!(m.method(), Some(&http::Method::GET));
    checks::check_frame(&f);
}

#[test]
fn json_headers_need_their_commas() {
    for (name, data) in corpus() {
        if name.starts_with("request-json-") && name.contains("missing-comma") {
            // `RawMessage::decode` checks the top level only; the headers are checked as they
            // are walked.
            let e = RawMessage::decode(&data)
                .and_then(|raw| raw.headers().validate())
                .unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ParseErrorKind::BadHeaders | ParseErrorKind::BadHeaderValue
                ),
                "{name}: {e}"
            );
        }
    }
}

#[test]
fn flags_are_hex_digits_only() {
    // `u8::from_str_radix` takes a leading `+`: `0x+1` was read as flags 0x01.
    let f = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/request-flags-plus-sign"),
    )
    .unwrap();
    assert!(RawMessage::decode(&f).is_ok());
    let e = Message::decode(f.into()).unwrap_err();
    assert_eq!(e.kind(), ParseErrorKind::BadField);
}

#[test]
fn a_corrupt_header_block_is_an_error_from_try_iter_never_a_short_list() {
    // `RawMessage::decode` checks the top level only; the entries are checked as they are
    // walked. Each block below is well framed (its length is right) but corrupt inside.
    let blocks: &[&[u8]] = &[
        b"4:host,1:x,1:y,",           // a key with no value
        b"4:host,1:x,1:1#1:x,",       // a key that is not a string
        b"4:host,1:x,1:a,4:1:1#]",    // a list holding a non-string
        b"4:host,1:x,1:a,1:1#",       // a value that is neither a string nor a list
        b"4:host,1:x,1:a,9:x",        // an element running past the block
        b"4:host,1:x,1:a,01:x,",      // a bad length prefix
        b"4:host,1:x,1:a,4:1:x?]",    // a list element with an unknown tag
        b"4:host,1:x,12345678901:x,", // a length prefix with too many digits
    ];
    for block in blocks {
        let mut f = b"u 1 /p ".to_vec();
        checks::tagged(&mut f, block, b'}');
        f.extend_from_slice(b"0:,");
        let raw = RawMessage::decode(&f).unwrap();
        let e = raw.headers().validate().unwrap_err();
        assert!(e.offset() < f.len());
        let items: Vec<_> = raw.headers().try_iter().collect();
        assert_eq!(items.len(), 2, "{}", String::from_utf8_lossy(block));
        let (k, v) = items[0].clone().unwrap();
        assert_eq!((k.as_ref(), v.as_ref()), (&b"host"[..], &b"x"[..]));
        assert_eq!(items[1], Err(e));
        // The plain iterator stops there; `Message::decode` reports the same error.
        assert_eq!(raw.headers().iter().count(), 1);
        assert_eq!(Message::decode(f.clone().into()).unwrap_err(), e);
        checks::check_frame(&f);
    }
}
