//! Tnetstrings and netstrings: a strict, zero-copy parser and an encoder.
//!
//! A tnetstring is `<length>:<payload><tag>`, where the tag byte names the type:
//!
//! | tag | type | [`Value`] |
//! |---|---|---|
//! | `,` | byte string | [`Value::String`] |
//! | `#` | integer | [`Value::Integer`] (`i64`) |
//! | `^` | float | [`Value::Float`] |
//! | `!` | boolean | [`Value::Bool`] |
//! | `~` | null | [`Value::Null`] |
//! | `}` | dictionary | [`Value::Dict`] |
//! | `]` | list | [`Value::List`] |
//!
//! A netstring is the string case alone (`<length>:<payload>,`).
//!
//! Parsing borrows: strings and keys are slices of the input, nothing is copied. The parser is
//! stricter than Mongrel2's own (which, for one, skips spaces in the length prefix): the
//! length prefix must be ASCII digits only, with at most [`Limits::max_length_digits`] of them and a value of at most
//! [`Limits::max_size`]; containers may nest [`Limits::max_depth`] deep; the tag must be exactly
//! one of the seven above; and [`parse`] reports any bytes after the value. Every error carries the
//! byte offset where it was found.
//!
//! One element (`<length>:<payload><tag>`) is checked by a grammar written with nom, behind one
//! hand-written fast path for short elements (`tnetstring/element.rs`); values, containers and
//! the encoder are here.
//!
//! ```
//! use m2wsgi::tnetstring::{self, Value};
//!
//! let v = tnetstring::parse(b"28:5:hello,5:world,2:ok,4:true!}")?;
//! assert_eq!(v.get(b"hello"), Some(&Value::String(b"world")));
//! assert_eq!(v.to_vec(), b"28:5:hello,5:world,2:ok,4:true!}");
//! # Ok::<(), m2wsgi::ParseError>(())
//! ```

mod element;

use crate::error::{ParseError, ParseErrorKind as K};
pub(crate) use element::{split, Element};

/// Default cap on the number of digits in a length prefix.
pub const DEFAULT_MAX_LENGTH_DIGITS: usize = 10;
/// Default cap on a single value's declared payload size: 256 MiB.
pub const DEFAULT_MAX_SIZE: usize = 256 << 20;
/// Default cap on container nesting (a Mongrel2 message needs 2).
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Caps the parser enforces. [`Limits::default`] uses the `DEFAULT_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most digits a length prefix may have.
    pub max_length_digits: usize,
    /// Largest declared payload length, in bytes.
    pub max_size: usize,
    /// Deepest nesting of dictionaries and lists (a scalar at top level has depth 0).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_length_digits: DEFAULT_MAX_LENGTH_DIGITS,
            max_size: DEFAULT_MAX_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// A parsed tnetstring, borrowing its strings from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `,`: a byte string (not necessarily UTF-8).
    String(&'a [u8]),
    /// `#`: a signed 64-bit integer.
    Integer(i64),
    /// `^`: a float. Mongrel2 1.12 cannot parse floats: never send one to it.
    Float(f64),
    /// `!`: `true` or `false`.
    Bool(bool),
    /// `~`: null.
    Null,
    /// `}`: a dictionary with string keys, in wire order (duplicates are kept).
    Dict(Vec<(&'a [u8], Value<'a>)>),
    /// `]`: a list.
    List(Vec<Value<'a>>),
}

impl<'a> Value<'a> {
    /// The first value stored under `key`, if this is a dictionary that has it.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes of a string value.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number of bytes [`Value::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let n = self.payload_len();
        digits(n) + 1 + n + 1
    }

    fn payload_len(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::Integer(i) => itoa_len(*i),
            Value::Float(f) => format_float(*f).len(),
            Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Null => 0,
            Value::Dict(items) => items
                .iter()
                .map(|(k, v)| digits(k.len()) + k.len() + 2 + v.encoded_len())
                .sum(),
            Value::List(items) => items.iter().map(Value::encoded_len).sum(),
        }
    }

    /// Appends the canonical encoding of this value to `out`.
    ///
    /// Floats are written with Rust's shortest round-trip formatting; a non-finite float is
    /// written as Rust formats it (`NaN`, `inf`), which [`parse`] rejects.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::String(s) => write_string(out, s),
            Value::Integer(i) => write_integer(out, *i),
            Value::Float(f) => write_tagged(out, format_float(*f).as_bytes(), b'^'),
            Value::Bool(b) => write_bool(out, *b),
            Value::Null => out.extend_from_slice(b"0:~"),
            Value::Dict(items) => {
                write_len_prefix(out, self.payload_len());
                for (k, v) in items {
                    write_string(out, k);
                    v.encode(out);
                }
                out.push(b'}');
            }
            Value::List(items) => {
                write_len_prefix(out, self.payload_len());
                for v in items {
                    v.encode(out);
                }
                out.push(b']');
            }
        }
    }

    /// The canonical encoding of this value as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

fn format_float(f: f64) -> String {
    // `{:?}` is the shortest representation that round-trips, and always has a `.` or exponent.
    format!("{f:?}")
}

const fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn itoa_len(i: i64) -> usize {
    digits(i.unsigned_abs() as usize) + usize::from(i < 0)
}

/// Appends `n` in decimal ASCII, without allocating.
pub(crate) fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[pos..]);
}

pub(crate) fn write_len_prefix(out: &mut Vec<u8>, n: usize) {
    write_decimal(out, n as u64);
    out.push(b':');
}

fn write_tagged(out: &mut Vec<u8>, payload: &[u8], tag: u8) {
    write_len_prefix(out, payload.len());
    out.extend_from_slice(payload);
    out.push(tag);
}

/// Appends `payload` as a tnetstring string (which is also a netstring): `len:payload,`.
pub fn write_string(out: &mut Vec<u8>, payload: &[u8]) {
    write_tagged(out, payload, b',');
}

/// Appends `i` as a tnetstring integer: `len:digits#`.
pub fn write_integer(out: &mut Vec<u8>, i: i64) {
    let s = i.to_string();
    write_tagged(out, s.as_bytes(), b'#');
}

/// Appends `b` as a tnetstring boolean: `4:true!` or `5:false!`.
pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"4:true!" } else { b"5:false!" });
}

/// Parses exactly one tnetstring that fills all of `input`, with the default [`Limits`].
///
/// # Errors
/// A [`ParseError`] with the offset of the first problem, including
/// [`TrailingBytes`](crate::ParseErrorKind::TrailingBytes) when bytes follow the value.
pub fn parse(input: &[u8]) -> Result<Value<'_>, ParseError> {
    parse_with(input, &Limits::default())
}

/// Like [`parse`], with explicit limits.
///
/// # Errors
/// As [`parse`].
pub fn parse_with<'a>(input: &'a [u8], limits: &Limits) -> Result<Value<'a>, ParseError> {
    let (v, rest) = parse_prefix_with(input, limits)?;
    if !rest.is_empty() {
        return Err(ParseError::new(K::TrailingBytes, input.len() - rest.len()));
    }
    Ok(v)
}

/// Parses one tnetstring from the front of `input` and returns it with the bytes after it.
///
/// # Errors
/// As [`parse`], except that trailing bytes are returned, not reported.
pub fn parse_prefix(input: &[u8]) -> Result<(Value<'_>, &[u8]), ParseError> {
    parse_prefix_with(input, &Limits::default())
}

/// Like [`parse_prefix`], with explicit limits.
///
/// # Errors
/// As [`parse_prefix`].
pub fn parse_prefix_with<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<(Value<'a>, &'a [u8]), ParseError> {
    let (v, used) = parse_at(input, limits, 0)?;
    Ok((v, &input[used..]))
}

fn parse_at<'a>(
    input: &'a [u8],
    limits: &Limits,
    depth: usize,
) -> Result<(Value<'a>, usize), ParseError> {
    let el = split(input, limits)?;
    let at = el.payload_at;
    let p = el.payload;
    let bad = |kind| Err(ParseError::new(kind, at));
    let v = match el.tag {
        b',' => Value::String(p),
        b'#' => Value::Integer(parse_int(p).map_err(|k| ParseError::new(k, at))?),
        b'^' => Value::Float(parse_float(p).ok_or(ParseError::new(K::BadFloat, at))?),
        b'!' => match p {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return bad(K::BadBool),
        },
        b'~' if p.is_empty() => Value::Null,
        b'~' => return bad(K::BadNull),
        b'}' | b']' => {
            if depth >= limits.max_depth {
                return bad(K::TooDeep);
            }
            let is_dict = el.tag == b'}';
            let mut dict = Vec::new();
            let mut list = Vec::new();
            let mut pos = 0;
            while pos < p.len() {
                let (item, used) =
                    parse_at(&p[pos..], limits, depth + 1).map_err(|e| e.shift(at + pos))?;
                if is_dict {
                    let Value::String(key) = item else {
                        return Err(ParseError::new(K::KeyNotString, at + pos));
                    };
                    pos += used;
                    if pos == p.len() {
                        return Err(ParseError::new(K::MissingValue, at + pos));
                    }
                    let (val, used) =
                        parse_at(&p[pos..], limits, depth + 1).map_err(|e| e.shift(at + pos))?;
                    dict.push((key, val));
                    pos += used;
                } else {
                    list.push(item);
                    pos += used;
                }
            }
            if is_dict {
                Value::Dict(dict)
            } else {
                Value::List(list)
            }
        }
        tag => return Err(ParseError::new(K::BadTag(tag), at + p.len())),
    };
    Ok((v, el.len))
}

/// Parses `-?[0-9]+` into an `i64`.
pub(crate) fn parse_int(p: &[u8]) -> Result<i64, K> {
    let (neg, ds) = match p.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, p),
    };
    if ds.is_empty() || !ds.iter().all(u8::is_ascii_digit) {
        return Err(K::BadInteger);
    }
    let mut n: i64 = 0;
    for &d in ds {
        let d = i64::from(d - b'0');
        n = n
            .checked_mul(10)
            .and_then(|n| {
                if neg {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })
            .ok_or(K::IntegerOverflow)?;
    }
    Ok(n)
}

fn parse_float(p: &[u8]) -> Option<f64> {
    // Decimal syntax only: no `inf`, `NaN`, hex or whitespace.
    let ok = !p.is_empty()
        && p.iter().any(u8::is_ascii_digit)
        && p.iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !ok {
        return None;
    }
    // A decimal that overflows (`1e999`) parses as infinity, which the encoder cannot write back
    // in a form the parser accepts: refuse it, so every parsed value re-encodes.
    let f: f64 = std::str::from_utf8(p).ok()?.parse().ok()?;
    f.is_finite().then_some(f)
}

/// Parses one netstring (`<len>:<payload>,`) from the front of `input`, with the default
/// [`Limits`], and returns its payload and the bytes after it.
///
/// # Errors
/// A [`ParseError`]; [`BadTag`](crate::ParseErrorKind::BadTag) when the byte after the payload
/// is not `,`.
pub fn parse_netstring(input: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
    parse_netstring_with(input, &Limits::default())
}

/// Like [`parse_netstring`], with explicit limits.
///
/// # Errors
/// As [`parse_netstring`].
pub fn parse_netstring_with<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    let el = split(input, limits)?;
    if el.tag != b',' {
        return Err(ParseError::new(
            K::BadTag(el.tag),
            el.payload_at + el.payload.len(),
        ));
    }
    Ok((el.payload, &input[el.len..]))
}

/// Appends `payload` as a netstring: `len:payload,`.
pub fn write_netstring(out: &mut Vec<u8>, payload: &[u8]) {
    write_string(out, payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &[u8]) -> (K, usize) {
        let e = parse(input).unwrap_err();
        (e.kind(), e.offset())
    }

    #[test]
    fn all_seven_types() {
        let cases: &[(&[u8], Value<'_>)] = &[
            (b"5:hello,", Value::String(b"hello")),
            (b"0:,", Value::String(b"")),
            (b"3:-42#", Value::Integer(-42)),
            (b"19:9223372036854775807#", Value::Integer(i64::MAX)),
            (b"20:-9223372036854775808#", Value::Integer(i64::MIN)),
            (b"3:1.5^", Value::Float(1.5)),
            (b"4:true!", Value::Bool(true)),
            (b"5:false!", Value::Bool(false)),
            (b"0:~", Value::Null),
            (b"0:}", Value::Dict(vec![])),
            (b"0:]", Value::List(vec![])),
            (
                b"15:1:a,1:1#1:b,0:~}",
                Value::Dict(vec![(b"a", Value::Integer(1)), (b"b", Value::Null)]),
            ),
            (
                b"11:1:x,4:1:y,]]",
                Value::List(vec![
                    Value::String(b"x"),
                    Value::List(vec![Value::String(b"y")]),
                ]),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                &parse(bytes).unwrap(),
                want,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn strict_errors_with_offsets() {
        assert_eq!(err(b""), (K::Incomplete, 0));
        assert_eq!(err(b" 5:hello,"), (K::BadLength, 0));
        assert_eq!(err(b"+5:hello,"), (K::BadLength, 0));
        assert_eq!(err(b"05:hello,"), (K::BadLength, 0));
        assert_eq!(err(b"12345678901:x,"), (K::LengthTooLong, 0));
        assert_eq!(err(b"9999999999:x,"), (K::TooLarge, 0));
        assert_eq!(err(b"5;hello,"), (K::MissingColon, 1));
        assert_eq!(err(b"5:hell"), (K::Incomplete, 6));
        assert_eq!(err(b"5:hello"), (K::Incomplete, 7));
        assert_eq!(err(b"5:hello?"), (K::BadTag(b'?'), 7));
        assert_eq!(err(b"5:hello,x"), (K::TrailingBytes, 8));
        assert_eq!(err(b"2:+1#"), (K::BadInteger, 2));
        assert_eq!(err(b"19:9223372036854775808#"), (K::IntegerOverflow, 3));
        assert_eq!(err(b"3:nan^"), (K::BadFloat, 2));
        assert_eq!(err(b"5:1e999^"), (K::BadFloat, 2));
        assert_eq!(err(b"6:-1e999^"), (K::BadFloat, 2));
        assert_eq!(err(b"4:tru !"), (K::BadBool, 2));
        assert_eq!(err(b"1:x~"), (K::BadNull, 2));
        assert_eq!(err(b"8:1:1#1:a,}"), (K::KeyNotString, 2));
        assert_eq!(err(b"4:1:a,}"), (K::MissingValue, 6));
        // Error offsets inside containers point into the whole input.
        assert_eq!(err(b"9:1:a,2:xy?}"), (K::BadTag(b'?'), 10));
    }

    #[test]
    fn depth_is_capped_without_recursion_blowup() {
        let mut deep = b"0:]".to_vec();
        for _ in 0..5_000 {
            let mut next = Vec::with_capacity(deep.len() + 10);
            write_len_prefix(&mut next, deep.len());
            next.extend_from_slice(&deep);
            next.push(b']');
            deep = next;
        }
        assert_eq!(parse(&deep).unwrap_err().kind(), K::TooDeep);
        let limits = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        assert!(parse_with(b"6:0:]0:]]", &limits).is_ok());
        assert_eq!(
            parse_with(b"9:6:0:]0:]]]", &limits).unwrap_err().kind(),
            K::TooDeep
        );
    }

    #[test]
    fn netstrings() {
        assert_eq!(
            parse_netstring(b"3:abc,rest").unwrap(),
            (&b"abc"[..], &b"rest"[..])
        );
        assert_eq!(
            parse_netstring(b"3:abc]").unwrap_err().kind(),
            K::BadTag(b']')
        );
        let mut out = Vec::new();
        write_netstring(&mut out, b"\x00\xff");
        assert_eq!(out, b"2:\x00\xff,");
    }

    #[test]
    fn encoded_len_matches() {
        let v = Value::Dict(vec![
            (
                b"k",
                Value::List(vec![Value::Float(-0.25), Value::Bool(false)]),
            ),
            (b"", Value::Integer(-1234567)),
        ]);
        assert_eq!(v.encoded_len(), v.to_vec().len());
        assert_eq!(parse(&v.to_vec()).unwrap(), v);
    }
}
