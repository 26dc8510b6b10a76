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
//! stricter than Mongrel2's own (`shared/PROTOCOL.md` section 5): the length prefix must be ASCII
//! digits only, with at most [`Limits::max_length_digits`] of them and a value of at most
//! [`Limits::max_size`]; containers may nest [`Limits::max_depth`] deep; the tag must be exactly
//! one of the seven above; and [`parse`] reports any bytes after the value. Every error carries the
//! byte offset where it was found.
//!
//! ```
//! use m2wsgi::tnetstring::{self, Value};
//!
//! let v = tnetstring::parse(b"28:5:hello,5:world,2:ok,4:true!}")?;
//! assert_eq!(v.get(b"hello"), Some(&Value::String(b"world")));
//! assert_eq!(v.to_vec(), b"28:5:hello,5:world,2:ok,4:true!}");
//! # Ok::<(), m2wsgi::ParseError>(())
//! ```

use crate::error::{ParseError, ParseErrorKind as K};

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

/// One element split off the front of a buffer: its tag, its payload and the offset of the payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Element<'a> {
    pub(crate) tag: u8,
    pub(crate) payload: &'a [u8],
    /// Offset of `payload` within the buffer passed to [`split`].
    pub(crate) payload_at: usize,
    /// Total bytes of the element, prefix and tag included.
    pub(crate) len: usize,
}

/// Reads a length prefix of one to three digits and its `:` (every element of a request's
/// headers, and most bodies). Returns `(digits, value)`, or `None` when the slow path must
/// decide. Parsing a message is one long chain of dependent loads (where an element ends is only
/// known once its length is read), so this is written for latency: the three bytes are loaded
/// together and the value is ready a cycle or two after them.
#[inline]
fn length_prefix_short(input: &[u8]) -> Option<(usize, usize)> {
    // Four bytes in one load (zero-padded at the very end of a buffer, where `0:,` ends a frame).
    let [b0, b1, b2, b3] = match input.first_chunk::<4>() {
        Some(c) => *c,
        None => {
            let mut c = [0u8; 4];
            c[..input.len()].copy_from_slice(input);
            c
        }
    };
    let d0 = usize::from(b0.wrapping_sub(b'0'));
    let d1 = usize::from(b1.wrapping_sub(b'0'));
    let d2 = usize::from(b2.wrapping_sub(b'0'));
    if d0 > 9 {
        return None;
    }
    if b1 == b':' {
        return Some((1, d0));
    }
    if d1 > 9 || d0 == 0 {
        return None;
    }
    if b2 == b':' {
        return Some((2, d0 * 10 + d1));
    }
    if d2 > 9 || b3 != b':' {
        return None;
    }
    Some((3, d0 * 100 + d1 * 10 + d2))
}

/// Splits one `<len>:<payload><tag>` element off the front of `input`, checking the length prefix
/// against `limits` but not the tag.
///
/// This is the hot path of every decode: no allocation, and the payload is skipped by its
/// length, never scanned.
#[inline]
pub(crate) fn split<'a>(input: &'a [u8], limits: &Limits) -> Result<Element<'a>, ParseError> {
    if let Some((digits, n)) = length_prefix_short(input) {
        if digits <= limits.max_length_digits && n <= limits.max_size {
            let payload_at = digits + 1;
            let tag_at = payload_at + n; // n < 1000: no overflow
                                         // One bounds check for the payload and the tag.
            if let Some((&tag, payload)) =
                input.get(payload_at..=tag_at).and_then(<[u8]>::split_last)
            {
                return Ok(Element {
                    tag,
                    payload,
                    payload_at,
                    len: tag_at + 1,
                });
            }
        }
    }
    split_long(input, limits)
}

/// [`split`] for a well-formed element with a length prefix of four digits or more (a large
/// body): one pass over the digits. Anything else, and every error, goes to [`split_slow`].
#[inline(never)]
fn split_long<'a>(input: &'a [u8], limits: &Limits) -> Result<Element<'a>, ParseError> {
    let mut n: usize = 0;
    let mut i = 0;
    // Few enough digits that the value cannot overflow a `usize` (19 on 64-bit targets).
    const SAFE_DIGITS: usize = if usize::BITS >= 64 { 19 } else { 9 };
    let cap = limits.max_length_digits.min(SAFE_DIGITS);
    while let Some(&b) = input.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 || i == cap {
            break;
        }
        n = n * 10 + usize::from(d);
        i += 1;
    }
    if i > 1 && input[0] != b'0' && n <= limits.max_size && input.get(i) == Some(&b':') {
        let payload_at = i + 1;
        if let Some((&tag, payload)) = payload_at
            .checked_add(n)
            .and_then(|tag_at| input.get(payload_at..=tag_at))
            .and_then(<[u8]>::split_last)
        {
            return Ok(Element {
                tag,
                payload,
                payload_at,
                len: payload_at + n + 1,
            });
        }
    }
    split_slow(input, limits)
}

// The grammar of one element, `<length>:<payload><tag>`, one nom parser per rule. nom stays
// private to this module: its types never appear in the crate's API, and its errors are mapped
// to [`ParseError`]s (kind and offset) by [`split_slow`]. They carry no error value (`()`):
// where a rule failed is known from what is left of the input.

/// Result of a grammar rule: the rest of the input and the rule's output.
type Rule<'a, O> = nom::IResult<&'a [u8], O, ()>;

/// `length = 1*max(DIGIT)`: the digits of a length prefix, at most `max` of them.
fn length_digits(input: &[u8], max: usize) -> Rule<'_, &[u8]> {
    nom::bytes::complete::take_while_m_n(1, max, |b: u8| b.is_ascii_digit())(input)
}

/// `":"` after the length.
fn colon(input: &[u8]) -> Rule<'_, char> {
    nom::character::complete::char(':')(input)
}

/// `payload = n(OCTET)`: exactly `n` bytes, whatever they are.
fn payload(input: &[u8], n: usize) -> Rule<'_, &[u8]> {
    nom::bytes::complete::take(n)(input)
}

/// `tag = OCTET`: the type byte (checked by the caller).
fn tag_byte(input: &[u8]) -> Rule<'_, u8> {
    nom::number::complete::u8(input)
}

/// The value of a run of ASCII digits, or `None` if it overflows `usize`.
fn digits_value(digits: &[u8]) -> Option<usize> {
    digits.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// [`split`] through the nom grammar above: short inputs, long prefixes, and every error.
#[cold]
fn split_slow<'a>(input: &'a [u8], limits: &Limits) -> Result<Element<'a>, ParseError> {
    let err = |kind, at| Err(ParseError::new(kind, at));
    // Checking the length is also bounded by its digit cap (no unbounded scan of a long run of
    // digits); a digit beyond the cap is reported after an overflow within it, as a digit-by-digit
    // reading would.
    // (nom's `take_while_m_n(1, 0, ..)` matches nothing rather than failing.)
    let Some((rest, digits)) = length_digits(input, limits.max_length_digits)
        .ok()
        .filter(|(_, d)| !d.is_empty())
    else {
        return match input.first() {
            None => err(K::Incomplete, 0),
            Some(b) if b.is_ascii_digit() => err(K::LengthTooLong, 0), // max_length_digits == 0
            Some(_) => err(K::BadLength, 0),
        };
    };
    let Some(n) = digits_value(digits) else {
        return err(K::TooLarge, 0);
    };
    if rest.first().is_some_and(u8::is_ascii_digit) {
        return err(K::LengthTooLong, 0);
    }
    // A leading zero is only allowed for the length 0 itself.
    if digits.len() > 1 && digits[0] == b'0' {
        return err(K::BadLength, 0);
    }
    if n > limits.max_size {
        return err(K::TooLarge, 0);
    }
    let i = digits.len();
    let Ok((rest, _)) = colon(rest) else {
        let kind = if rest.is_empty() {
            K::Incomplete
        } else {
            K::MissingColon
        };
        return err(kind, i);
    };
    let payload_at = i + 1;
    match payload(rest, n).and_then(|(rest, p)| Ok((tag_byte(rest)?.1, p))) {
        Ok((tag, payload)) => Ok(Element {
            tag,
            payload,
            payload_at,
            len: payload_at + n + 1, // `n` bytes were there: no overflow
        }),
        Err(_) => err(K::Incomplete, input.len()),
    }
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

    /// The digit-by-digit splitter the nom grammar replaced: the reference for its errors.
    fn split_reference<'a>(input: &'a [u8], limits: &Limits) -> Result<Element<'a>, ParseError> {
        let mut n: usize = 0;
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            if i == limits.max_length_digits {
                return Err(ParseError::new(K::LengthTooLong, 0));
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(d)))
                .ok_or(ParseError::new(K::TooLarge, 0))?;
            i += 1;
        }
        if i == 0 {
            let kind = if input.is_empty() {
                K::Incomplete
            } else {
                K::BadLength
            };
            return Err(ParseError::new(kind, 0));
        }
        // A leading zero is only allowed for the length 0 itself.
        if i > 1 && input[0] == b'0' {
            return Err(ParseError::new(K::BadLength, 0));
        }
        if n > limits.max_size {
            return Err(ParseError::new(K::TooLarge, 0));
        }
        match input.get(i) {
            Some(b':') => {}
            Some(_) => return Err(ParseError::new(K::MissingColon, i)),
            None => return Err(ParseError::new(K::Incomplete, i)),
        }
        let payload_at = i + 1;
        // `n <= max_size`, and a slice is never longer than `isize::MAX`, so this cannot overflow
        // unless `max_size` is absurd; check anyway rather than trust it.
        let tag_at = payload_at
            .checked_add(n)
            .ok_or(ParseError::new(K::TooLarge, 0))?;
        match input.get(tag_at) {
            Some(&tag) => Ok(Element {
                tag,
                payload: &input[payload_at..tag_at],
                payload_at,
                len: tag_at + 1,
            }),
            None => Err(ParseError::new(K::Incomplete, input.len())),
        }
    }

    #[test]
    fn fast_length_prefix_agrees_with_the_slow_path() {
        let limits = Limits::default();
        let tight = Limits {
            max_length_digits: 2,
            max_size: 50,
            max_depth: 1,
        };
        let none = Limits {
            max_length_digits: 0,
            ..limits
        };
        let one = Limits {
            max_length_digits: 1,
            max_size: 5,
            ..limits
        };
        // More digits than a `usize` holds: an overflow is reported before the digit cap.
        let wide = Limits {
            max_length_digits: 30,
            max_size: usize::MAX,
            ..limits
        };
        let check = |input: &[u8]| {
            for l in [&limits, &tight] {
                let fast = split(input, l).map(|e| (e.tag, e.payload, e.payload_at, e.len));
                let long = split_long(input, l).map(|e| (e.tag, e.payload, e.payload_at, e.len));
                assert_eq!(long, fast, "{:?}", String::from_utf8_lossy(input));
                let slow = split_slow(input, l).map(|e| (e.tag, e.payload, e.payload_at, e.len));
                assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(input));
            }
            for l in [&limits, &tight, &none, &one, &wide] {
                let fast = split(input, l).map(|e| (e.tag, e.payload, e.payload_at, e.len));
                let long = split_long(input, l).map(|e| (e.tag, e.payload, e.payload_at, e.len));
                let slow = split_slow(input, l).map(|e| (e.tag, e.payload, e.payload_at, e.len));
                let want =
                    split_reference(input, l).map(|e| (e.tag, e.payload, e.payload_at, e.len));
                assert_eq!(slow, want, "{:?} {l:?}", String::from_utf8_lossy(input));
                assert_eq!(fast, want, "{:?} {l:?}", String::from_utf8_lossy(input));
                assert_eq!(long, want, "{:?} {l:?}", String::from_utf8_lossy(input));
            }
        };
        let mut buf = Vec::new();
        for n in (0..2_000usize).chain([9_999, 10_000, 65_535, 999_999, 1_000_000, 9_999_999]) {
            for pad in [0usize, 1, 6, 12] {
                buf.clear();
                buf.extend_from_slice(format!("{n}:").as_bytes());
                buf.extend(std::iter::repeat(b'x').take(n.min(3_000)));
                buf.push(b',');
                buf.extend(std::iter::repeat(b'y').take(pad));
                check(&buf);
                check(&buf[..buf.len().min(9)]);
            }
        }
        // Pseudo-random prefixes over a small alphabet, so that digits, ':' and junk mix.
        let alphabet = b"0123456789:,x ";
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        check(b"99999999999999999999999:x,");
        check(b"0000000000000000000000000000000000:x,");
        for _ in 0..200_000 {
            let mut input = [0u8; 12];
            for b in &mut input {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = alphabet[(seed % alphabet.len() as u64) as usize];
            }
            let len = (seed >> 40) as usize % 13;
            check(&input[..len]);
        }
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
