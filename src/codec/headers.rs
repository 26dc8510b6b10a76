//! Mongrel2 request headers in both encodings: a tnetstring dictionary, or the legacy JSON object.
//!
//! Both are walked lazily. [`RawMessage::decode`](crate::RawMessage::decode) checks the whole
//! structure once without allocating; [`RawHeaders::iter`] then yields one `(name, value)` pair
//! per value, so a header repeated three times yields three pairs with the same name, in wire
//! order. [`Message::decode`](crate::Message::decode) checks and collects them in a single walk.

use crate::error::{ParseError, ParseErrorKind as K};
use crate::tnetstring::{split, split_trusted, Limits};
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
        match self.protocol {
            HeaderProtocol::Tnetstring => self.validate_tnet(limits),
            HeaderProtocol::Json => {
                let mut it = self.iter_checked();
                while let Some(item) = it.next_pair() {
                    item?;
                }
                Ok(())
            }
        }
    }

    /// [`RawHeaders::validate`] for a tnetstring dictionary.
    fn validate_tnet(&self, limits: &Limits) -> Result<(), ParseError> {
        self.walk_tnet(limits, |_, _| {})
    }

    /// Walks a tnetstring dictionary once, calling `f` for every `(name, value)` pair in wire
    /// order, with the same checks and errors as [`HeaderIter::next_pair`] but without an
    /// iterator's state. Pairs before an error have been passed to `f`.
    #[inline]
    pub(crate) fn walk_tnet(
        &self,
        limits: &Limits,
        mut f: impl FnMut(&'a [u8], &'a [u8]),
    ) -> Result<(), ParseError> {
        let p = self.payload;
        let at = self.at;
        let mut pos = 0;
        while pos < p.len() {
            let key = split(&p[pos..], limits).map_err(|e| e.shift(at + pos))?;
            if key.tag != b',' {
                return Err(ParseError::new(K::KeyNotString, at + pos));
            }
            let vpos = pos + key.len;
            if vpos >= p.len() {
                return Err(ParseError::new(K::MissingValue, at + vpos));
            }
            let val = split(&p[vpos..], limits).map_err(|e| e.shift(at + vpos))?;
            match val.tag {
                b',' => f(key.payload, val.payload),
                b']' => {
                    let lat = vpos + val.payload_at;
                    let mut lpos = 0;
                    while lpos < val.payload.len() {
                        let el = split(&val.payload[lpos..], limits)
                            .map_err(|e| e.shift(at + lat + lpos))?;
                        if el.tag != b',' {
                            return Err(ParseError::new(K::BadHeaderValue, at + lat + lpos));
                        }
                        f(key.payload, el.payload);
                        lpos += el.len;
                    }
                }
                _ => return Err(ParseError::new(K::BadHeaderValue, at + vpos)),
            }
            pos = vpos + val.len;
        }
        Ok(())
    }

    /// Iterates `(name, value)` pairs, one per value, in wire order.
    ///
    /// Names and values borrow from the message, except JSON values holding `\\` or `\"`
    /// escapes, which are unescaped into owned bytes.
    pub fn iter(&self) -> HeaderIter<'a> {
        self.iter_checked()
    }

    /// An iterator whose [`HeaderIter::next_pair`] reports errors in JSON headers; the public
    /// [`Iterator`] impl relies on the headers having been validated instead.
    pub(crate) fn iter_checked(&self) -> HeaderIter<'a> {
        HeaderIter {
            h: *self,
            pos: match self.protocol {
                HeaderProtocol::Tnetstring => 0,
                HeaderProtocol::Json => 1, // past '{'
            },
            list_name: &[],
            list: &[],
            lpos: 0,
            json_name: None,
            done: false,
            first: true,
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
    /// Tnetstring, inside a list value: the list's name, its payload and the position within
    /// it (`lpos < list.len()` while values remain).
    list_name: &'a [u8],
    list: &'a [u8],
    lpos: usize,
    /// JSON, inside an array after a value: the array's name.
    json_name: Option<Cow<'a, [u8]>>,
    done: bool,
    /// JSON only: no member has been read yet, so no `,` may come first.
    first: bool,
}

type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

impl<'a> HeaderIter<'a> {
    fn fail(&mut self, kind: K, offset: usize) -> Option<Result<Pair<'a>, ParseError>> {
        self.done = true;
        Some(Err(ParseError::new(kind, self.h.at + offset)))
    }

    /// The next pair, or the first structural error of JSON headers (after which it returns
    /// `None`). Tnetstring headers are checked by [`RawHeaders::walk_tnet`] instead, and only
    /// walked here.
    pub(crate) fn next_pair(&mut self) -> Option<Result<Pair<'a>, ParseError>> {
        if self.done {
            return None;
        }
        match self.h.protocol {
            HeaderProtocol::Tnetstring => self.next_tnet_trusted().map(Ok),
            HeaderProtocol::Json => self.next_json(),
        }
    }

    /// The next pair of a tnetstring dictionary that [`RawHeaders::walk_tnet`] has already
    /// checked: no limit or tag checks, and no errors (it stops should the bytes be malformed
    /// after all, and never panics). A loop, not recursion: a run of empty lists
    /// (`1:a,0:]1:a,0:]...`) must not grow the stack with the input.
    #[inline]
    fn next_tnet_trusted(&mut self) -> Option<Pair<'a>> {
        loop {
            if self.lpos < self.list.len() {
                let (_, v, len) = split_trusted(&self.list[self.lpos..])?;
                self.lpos += len;
                return Some((Cow::Borrowed(self.list_name), Cow::Borrowed(v)));
            }
            let rest = self.h.payload.get(self.pos..).filter(|r| !r.is_empty())?;
            let (_, k, klen) = split_trusted(rest)?;
            let (tag, v, vlen) = split_trusted(&rest[klen..])?;
            self.pos += klen + vlen;
            if tag != b']' {
                return Some((Cow::Borrowed(k), Cow::Borrowed(v)));
            }
            self.list_name = k;
            self.list = v;
            self.lpos = 0;
        }
    }

    fn next_json(&mut self) -> Option<Result<Pair<'a>, ParseError>> {
        let p = self.h.payload;
        loop {
            if let Some(name) = self.json_name.take() {
                // Inside an array, after a value: `, "value"` or `]`.
                let pos = skip_ws(p, self.pos);
                match p.get(pos) {
                    Some(b']') => self.pos = pos + 1, // back to the object level
                    Some(b',') => {
                        let vpos = skip_ws(p, pos + 1);
                        let Some((v, end)) = json_string(p, vpos) else {
                            return self.fail(K::BadHeaderValue, vpos);
                        };
                        self.pos = end;
                        self.json_name = Some(name.clone());
                        return Some(Ok((name, v)));
                    }
                    _ => return self.fail(K::BadHeaderValue, pos),
                }
            }
            // The object level: `}`, or a member (`"name": value`), preceded by `,` unless it is
            // the first one.
            let mut pos = skip_ws(p, self.pos);
            match p.get(pos) {
                Some(b'}') => {
                    if skip_ws(p, pos + 1) != p.len() {
                        return self.fail(K::TrailingBytes, pos + 1);
                    }
                    self.done = true;
                    return None;
                }
                Some(b',') if !self.first => pos = skip_ws(p, pos + 1),
                Some(b'"') if self.first => {}
                _ => return self.fail(K::BadHeaders, pos),
            }
            self.first = false;
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
                    let first = skip_ws(p, pos + 1);
                    if p.get(first) == Some(&b']') {
                        // An empty array: no values, go on to the next member.
                        self.pos = first + 1;
                        continue;
                    }
                    let Some((v, end)) = json_string(p, first) else {
                        return self.fail(K::BadHeaderValue, first);
                    };
                    self.pos = end;
                    self.json_name = Some(name.clone());
                    return Some(Ok((name, v)));
                }
                _ => return self.fail(K::BadHeaderValue, pos),
            }
        }
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (Cow<'a, [u8]>, Cow<'a, [u8]>);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.h.protocol {
            HeaderProtocol::Tnetstring => self.next_tnet_trusted(),
            HeaderProtocol::Json => self.next_pair().and_then(Result::ok),
        }
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
        h.iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
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
            (HeaderProtocol::Json, b"{ ,\"a\":\"b\"}"),
            (HeaderProtocol::Json, b"{\"a\":\"b\" \"c\":\"d\"}"),
            (HeaderProtocol::Json, b"{\"a\":[\"b\" \"c\"]}"),
            (HeaderProtocol::Json, b"{\"a\":\"b\",}"),
            (HeaderProtocol::Json, b"{\"a\":[,\"b\"]}"),
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
