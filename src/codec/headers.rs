//! Mongrel2 request headers in both encodings: a tnetstring dictionary, or the legacy JSON object.
//!
//! Both are walked lazily: [`RawHeaders::validate`] checks the whole structure once without
//! allocating, and [`RawHeaders::iter`] yields one `(name, value)` pair per value, so a header
//! repeated three times yields three pairs with the same name, in wire order.

use crate::error::{ParseError, ParseErrorKind as K};
use crate::tnetstring::{split, Limits};
use std::borrow::Cow;

/// How a handler's request headers are encoded (the `protocol` column of Mongrel2's handler table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderProtocol {
    /// `protocol='tnetstring'`: a tnetstring dictionary of strings or lists of strings.
    Tnetstring,
    /// `protocol='json'` (Mongrel2's default): a netstring holding a JSON-like object, in which
    /// Mongrel2 escapes only `\` and `"`, so it may hold raw control bytes and invalid UTF-8.
    Json,
}

/// The undecoded headers of one message: the payload of the headers element, and how to read it.
#[derive(Debug, Clone, Copy)]
pub struct RawHeaders<'a> {
    payload: &'a [u8],
    /// Offset of `payload` within the message, for error positions.
    at: usize,
    protocol: HeaderProtocol,
    /// The message's PATH field: Mongrel2 writes it unescaped into the JSON `PATH` value.
    path: &'a [u8],
}

impl<'a> RawHeaders<'a> {
    pub(crate) fn new(
        payload: &'a [u8],
        at: usize,
        protocol: HeaderProtocol,
        path: &'a [u8],
    ) -> Self {
        Self {
            payload,
            at,
            protocol,
            path,
        }
    }

    /// Which encoding these headers use.
    pub fn protocol(&self) -> HeaderProtocol {
        self.protocol
    }

    /// Walks all headers once, checking the structure, without allocating.
    pub(crate) fn validate(&self, limits: &Limits) -> Result<(), ParseError> {
        let mut it = self.iter_with(*limits);
        while let Some(item) = it.next_pair() {
            item?;
        }
        Ok(())
    }

    /// Iterates `(name, value)` pairs, one per value, in wire order.
    ///
    /// Names and values borrow from the message, except JSON values holding `\\` or `\"`
    /// escapes, which are unescaped into owned bytes.
    pub fn iter(&self) -> HeaderIter<'a> {
        self.iter_with(Limits::default())
    }

    fn iter_with(&self, limits: Limits) -> HeaderIter<'a> {
        HeaderIter {
            h: *self,
            pos: match self.protocol {
                HeaderProtocol::Tnetstring => 0,
                HeaderProtocol::Json => 1, // past '{'
            },
            list: None,
            limits,
            done: false,
        }
    }

    /// The first value of header `name` (compared exactly, bytes for bytes).
    pub fn get(&self, name: &[u8]) -> Option<Cow<'a, [u8]>> {
        self.iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }
}

impl<'a> IntoIterator for RawHeaders<'a> {
    type Item = (Cow<'a, [u8]>, Cow<'a, [u8]>);
    type IntoIter = HeaderIter<'a>;
    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// Iterator over [`RawHeaders`]; see [`RawHeaders::iter`].
///
/// It stops at the first malformed entry; [`RawMessage::decode`](crate::RawMessage::decode) has
/// already validated the headers, so that never happens for a decoded message.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    h: RawHeaders<'a>,
    pos: usize,
    /// Inside a list value: the list's name, its payload and the position within it.
    list: Option<(Cow<'a, [u8]>, &'a [u8], usize, usize)>,
    limits: Limits,
    done: bool,
}

type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

impl<'a> HeaderIter<'a> {
    fn fail(&mut self, kind: K, offset: usize) -> Option<Result<Pair<'a>, ParseError>> {
        self.done = true;
        Some(Err(ParseError::new(kind, self.h.at + offset)))
    }

    fn next_pair(&mut self) -> Option<Result<Pair<'a>, ParseError>> {
        if self.done {
            return None;
        }
        match self.h.protocol {
            HeaderProtocol::Tnetstring => self.next_tnet(),
            HeaderProtocol::Json => self.next_json(),
        }
    }

    fn next_tnet(&mut self) -> Option<Result<Pair<'a>, ParseError>> {
        let p = self.h.payload;
        if let Some((name, list, lpos, lat)) = self.list.take() {
            if lpos < list.len() {
                return match split(&list[lpos..], &self.limits) {
                    Ok(el) if el.tag == b',' => {
                        self.list = Some((name.clone(), list, lpos + el.len, lat));
                        Some(Ok((name, Cow::Borrowed(el.payload))))
                    }
                    Ok(_) => self.fail(K::BadHeaderValue, lat + lpos),
                    Err(e) => {
                        self.done = true;
                        Some(Err(e.shift(self.h.at + lat + lpos)))
                    }
                };
            }
        }
        loop {
            if self.pos >= p.len() {
                self.done = true;
                return None;
            }
            let kpos = self.pos;
            let key = match split(&p[kpos..], &self.limits) {
                Ok(el) if el.tag == b',' => el,
                Ok(_) => return self.fail(K::KeyNotString, kpos),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.shift(self.h.at + kpos)));
                }
            };
            let vpos = kpos + key.len;
            if vpos >= p.len() {
                return self.fail(K::MissingValue, vpos);
            }
            let val = match split(&p[vpos..], &self.limits) {
                Ok(el) => el,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.shift(self.h.at + vpos)));
                }
            };
            self.pos = vpos + val.len;
            let name = Cow::Borrowed(key.payload);
            match val.tag {
                b',' => return Some(Ok((name, Cow::Borrowed(val.payload)))),
                b']' => {
                    let lat = vpos + val.payload_at;
                    self.list = Some((name, val.payload, 0, lat));
                    if let Some(r) = self.next_tnet() {
                        return Some(r);
                    }
                    if self.done {
                        return None;
                    }
                    // An empty list: no values, go on to the next key.
                }
                _ => return self.fail(K::BadHeaderValue, vpos),
            }
        }
    }

    fn next_json(&mut self) -> Option<Result<Pair<'a>, ParseError>> {
        let p = self.h.payload;
        if let Some((name, _, _, _)) = self.list.take() {
            // Inside an array: a value, then ',' or ']'.
            let mut pos = skip_ws(p, self.pos);
            match p.get(pos) {
                Some(b']') => {
                    self.pos = pos + 1;
                    // fall through to the object level
                }
                Some(b',') | Some(b'"') => {
                    if p[pos] == b',' {
                        pos = skip_ws(p, pos + 1);
                    }
                    let Some((v, end)) = json_string(p, pos) else {
                        return self.fail(K::BadHeaderValue, pos);
                    };
                    self.pos = end;
                    self.list = Some((name.clone(), &[], 0, 0));
                    return Some(Ok((name, v)));
                }
                _ => return self.fail(K::BadHeaderValue, pos),
            }
        }
        loop {
            let mut pos = skip_ws(p, self.pos);
            match p.get(pos) {
                Some(b'}') => {
                    if skip_ws(p, pos + 1) != p.len() {
                        return self.fail(K::TrailingBytes, pos + 1);
                    }
                    self.done = true;
                    return None;
                }
                Some(b',') if pos > 1 => pos = skip_ws(p, pos + 1),
                Some(b'"') => {}
                _ => return self.fail(K::BadHeaders, pos),
            }
            let Some((name, end)) = json_string(p, pos) else {
                return self.fail(K::BadHeaders, pos);
            };
            pos = skip_ws(p, end);
            if p.get(pos) != Some(&b':') {
                return self.fail(K::BadHeaders, pos);
            }
            pos = skip_ws(p, pos + 1);
            match p.get(pos) {
                Some(b'"') => {
                    // Mongrel2 does not escape the PATH value at all: take the message's own
                    // PATH field verbatim when it is what follows.
                    let raw = &p[pos + 1..];
                    if name.as_ref() == b"PATH"
                        && raw.starts_with(self.h.path)
                        && raw.get(self.h.path.len()) == Some(&b'"')
                    {
                        self.pos = pos + 2 + self.h.path.len();
                        return Some(Ok((name, Cow::Borrowed(self.h.path))));
                    }
                    let Some((v, end)) = json_string(p, pos) else {
                        return self.fail(K::BadHeaderValue, pos);
                    };
                    self.pos = end;
                    return Some(Ok((name, v)));
                }
                Some(b'[') => {
                    self.pos = pos + 1;
                    let first = skip_ws(p, self.pos);
                    if p.get(first) == Some(&b']') {
                        self.pos = first + 1;
                        continue;
                    }
                    self.list = Some((name, &[], 0, 0));
                    return self.next_json();
                }
                _ => return self.fail(K::BadHeaderValue, pos),
            }
        }
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (Cow<'a, [u8]>, Cow<'a, [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        self.next_pair().and_then(Result::ok)
    }
}

fn skip_ws(p: &[u8], mut pos: usize) -> usize {
    while matches!(p.get(pos), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        pos += 1;
    }
    pos
}

/// Reads a Mongrel2 JSON string starting at the `"` at `pos`; returns it and the position after
/// the closing quote. Only `\\` and `\"` are unescaped (all Mongrel2 writes); any other
/// backslash is kept as it is, with the byte after it, so no byte is ever lost.
fn json_string(p: &[u8], pos: usize) -> Option<(Cow<'_, [u8]>, usize)> {
    if p.get(pos) != Some(&b'"') {
        return None;
    }
    let start = pos + 1;
    let mut i = start;
    let mut owned: Option<Vec<u8>> = None;
    let mut copied = start;
    loop {
        match *p.get(i)? {
            b'"' => {
                let v = match owned {
                    Some(mut o) => {
                        o.extend_from_slice(&p[copied..i]);
                        Cow::Owned(o)
                    }
                    None => Cow::Borrowed(&p[start..i]),
                };
                return Some((v, i + 1));
            }
            b'\\' => {
                let next = *p.get(i + 1)?;
                if next == b'\\' || next == b'"' {
                    let o = owned.get_or_insert_with(Vec::new);
                    o.extend_from_slice(&p[copied..i]);
                    o.push(next);
                    copied = i + 2;
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(h: RawHeaders<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
        h.validate(&Limits::default()).unwrap();
        h.iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    fn p(k: &str, v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.to_vec())
    }

    #[test]
    fn tnetstring_lists_expand_in_order() {
        let body = b"6:cookie,12:3:a=1,3:b=2,]1:x,0:,1:e,0:]2:zz,1:q,";
        let h = RawHeaders::new(body, 0, HeaderProtocol::Tnetstring, b"/");
        assert_eq!(
            pairs(h),
            vec![
                p("cookie", b"a=1"),
                p("cookie", b"b=2"),
                p("x", b""),
                p("zz", b"q")
            ]
        );
    }

    #[test]
    fn json_escapes_arrays_raw_bytes_and_unescaped_path() {
        let body = br#"{"PATH":"/a"b\","cookie":["a=1","b=\"q\"\\"],"x":"\x01\xff","e":[],"METHOD":"GET"}"#;
        let h = RawHeaders::new(body, 0, HeaderProtocol::Json, br#"/a"b\"#);
        assert_eq!(
            pairs(h),
            vec![
                p("PATH", br#"/a"b\"#),
                p("cookie", b"a=1"),
                p("cookie", br#"b="q"\"#),
                p("x", br"\x01\xff"),
                p("METHOD", b"GET"),
            ]
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        let cases: &[(HeaderProtocol, &[u8])] = &[
            (HeaderProtocol::Tnetstring, b"1:a,"),
            (HeaderProtocol::Tnetstring, b"1:a,1:1#"),
            (HeaderProtocol::Tnetstring, b"1:1#1:a,"),
            (HeaderProtocol::Tnetstring, b"1:a,4:1:1#]"),
            (HeaderProtocol::Json, b"{\"a\":1}"),
            (HeaderProtocol::Json, b"{\"a\":\"b\""),
            (HeaderProtocol::Json, b"{\"a\":[\"b\",}"),
            (HeaderProtocol::Json, b"{\"a\":\"b\"} x"),
            (HeaderProtocol::Json, b"{,\"a\":\"b\"}"),
        ];
        for (proto, body) in cases {
            let h = RawHeaders::new(body, 0, *proto, b"/");
            assert!(
                h.validate(&Limits::default()).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
