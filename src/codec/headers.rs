//! Mongrel2 request headers in both encodings: a tnetstring dictionary, or the legacy JSON object.
//!
//! Both are walked lazily. [`RawMessage::decode`](crate::RawMessage::decode) checks only the
//! frame's top-level structure (the headers element's length prefix and tag, the body, no
//! trailing bytes); the headers themselves are checked while they are walked, in the same single
//! pass: [`RawHeaders::try_iter`] yields one `Result<(name, value), ParseError>` per value (a
//! header repeated three times yields three pairs with the same name, in wire order) and ends
//! with the first error, and [`RawHeaders::validate`] walks them all and reports it.
//! [`Message::decode`](crate::Message::decode) checks and collects them in a single walk.

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
    /// The limits the message was decoded with, applied to every element while walking.
    limits: Limits,
}

impl<'a> RawHeaders<'a> {
    pub(crate) fn new(
        payload: &'a [u8],
        at: usize,
        protocol: HeaderProtocol,
        path: &'a [u8],
        limits: Limits,
    ) -> Self {
        Self {
            payload,
            at,
            protocol,
            path,
            limits,
        }
    }

    /// Which encoding these headers use.
    pub fn protocol(&self) -> HeaderProtocol {
        self.protocol
    }

    /// Calls `f` with every pair of tnetstring headers, checking each entry as it goes, and
    /// returns the first structural error: the same walk as [`RawHeaders::try_iter`] (both are
    /// built on [`tnet_entry`] and [`tnet_list_item`]), without an iterator's state between
    /// pairs. The decoder's hot loop: `Message::decode` uses it for tnetstring headers.
    #[inline]
    pub(crate) fn for_each_tnet(
        &self,
        mut f: impl FnMut(&'a [u8], &'a [u8]),
    ) -> Result<(), ParseError> {
        let (p, limits, at) = (self.payload, &self.limits, self.at);
        let mut pos = 0;
        while pos < p.len() {
            let e = tnet_entry(p, pos, limits).map_err(|e| e.shift(at))?;
            if e.value.tag == b',' {
                f(e.key, e.value.payload);
            } else {
                // A list (tnet_entry lets through only `,` and `]`).
                let list = e.value.payload;
                let list_at = e.value_at + e.value.payload_at;
                let mut lpos = 0;
                while lpos < list.len() {
                    let (v, len) =
                        tnet_list_item(list, lpos, limits).map_err(|e| e.shift(at + list_at))?;
                    f(e.key, v);
                    lpos += len;
                }
            }
            pos = e.next;
        }
        Ok(())
    }

    /// Walks all headers once, checking their structure against the limits the message was
    /// decoded with, without allocating (except to unescape JSON values).
    ///
    /// # Errors
    /// The first structural error, exactly as [`Message::decode`](crate::Message::decode)
    /// reports it for the same frame: [`KeyNotString`](crate::ParseErrorKind::KeyNotString),
    /// [`MissingValue`](crate::ParseErrorKind::MissingValue),
    /// [`BadHeaderValue`](crate::ParseErrorKind::BadHeaderValue), a length or tag error, ...
    pub fn validate(&self) -> Result<(), ParseError> {
        self.try_iter().try_for_each(|item| item.map(drop))
    }

    /// Iterates `(name, value)` pairs, one per value, in wire order, checking each entry as it
    /// goes: the single pass over a [`RawMessage`](crate::RawMessage)'s headers. After the
    /// first malformed entry it yields that error once, then `None`: a corrupt header block is
    /// never mistaken for a shorter valid one.
    ///
    /// Names and values borrow from the message, except JSON values holding `\\` or `\"`
    /// escapes, which are unescaped into owned bytes.
    ///
    /// ```
    /// use m2wsgi::RawMessage;
    ///
    /// let msg = RawMessage::decode(b"u 1 /p 15:4:host,1:x,1:y,}0:,")?;
    /// let mut it = msg.headers().try_iter();
    /// assert_eq!(it.next().unwrap()?.1.as_ref(), b"x");
    /// // `1:y,` has no value: an error, not the end of the headers.
    /// assert!(it.next().unwrap().is_err());
    /// assert!(it.next().is_none());
    /// # Ok::<(), m2wsgi::ParseError>(())
    /// ```
    pub fn try_iter(&self) -> TryHeaderIter<'a> {
        TryHeaderIter(self.iter())
    }

    /// Iterates `(name, value)` pairs, one per value, in wire order, like
    /// [`RawHeaders::try_iter`] but without the errors: it **stops at the first malformed
    /// entry**, so on a corrupt header block it yields only the pairs before it. Use it on
    /// headers already checked with [`RawHeaders::validate`], or when a truncated list is
    /// acceptable; otherwise use [`RawHeaders::try_iter`].
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            h: *self,
            pos: match self.protocol {
                HeaderProtocol::Tnetstring => 0,
                HeaderProtocol::Json => 1, // past '{'
            },
            list_name: &[],
            list: &[],
            lpos: 0,
            list_at: 0,
            json_name: None,
            done: false,
            first: true,
        }
    }

    /// The first value of header `name` (compared exactly, bytes for bytes), from
    /// [`RawHeaders::iter`]: `None` also when a malformed entry comes before it.
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

/// Iterator over [`RawHeaders`] that stops at the first malformed entry; see
/// [`RawHeaders::iter`], and [`TryHeaderIter`] for the one that reports it.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    h: RawHeaders<'a>,
    pos: usize,
    /// Tnetstring, inside a list value: the list's name, its payload and the position within
    /// it (`lpos < list.len()` while values remain).
    list_name: &'a [u8],
    list: &'a [u8],
    lpos: usize,
    /// Offset of `list` within the payload, for error positions.
    list_at: usize,
    /// JSON, inside an array after a value: the array's name.
    json_name: Option<Cow<'a, [u8]>>,
    done: bool,
    /// JSON only: no member has been read yet, so no `,` may come first.
    first: bool,
}

type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

impl<'a> HeaderIter<'a> {
    #[cold]
    fn fail(&mut self, kind: K, offset: usize) -> Option<Result<Pair<'a>, ParseError>> {
        self.done = true;
        Some(Err(ParseError::new(kind, self.h.at + offset)))
    }

    /// `e`, found in the element at `offset` of the payload, moved to the message's offsets.
    #[cold]
    fn fail_with(&mut self, e: ParseError, offset: usize) -> Option<Result<Pair<'a>, ParseError>> {
        self.done = true;
        Some(Err(e.shift(self.h.at + offset)))
    }

    /// The next pair, or the first structural error (after which it returns `None`).
    #[inline]
    fn next_pair(&mut self) -> Option<Result<Pair<'a>, ParseError>> {
        if self.done {
            return None;
        }
        match self.h.protocol {
            HeaderProtocol::Tnetstring => self.next_tnet(),
            HeaderProtocol::Json => self.next_json(),
        }
    }

    /// The next pair of a tnetstring dictionary: a key that is a string, then a string value or
    /// a list of strings (expanded one pair per element). A loop, not recursion: a run of empty
    /// lists (`1:a,0:]1:a,0:]...`) must not grow the stack with the input.
    #[inline]
    fn next_tnet(&mut self) -> Option<Result<Pair<'a>, ParseError>> {
        let limits = &self.h.limits;
        loop {
            if self.lpos < self.list.len() {
                return match tnet_list_item(self.list, self.lpos, limits) {
                    Ok((v, len)) => {
                        self.lpos += len;
                        Some(Ok((Cow::Borrowed(self.list_name), Cow::Borrowed(v))))
                    }
                    Err(e) => self.fail_with(e, self.list_at),
                };
            }
            let p = self.h.payload;
            if self.pos >= p.len() {
                self.done = true;
                return None;
            }
            let e = match tnet_entry(p, self.pos, limits) {
                Ok(e) => e,
                Err(e) => return self.fail_with(e, 0),
            };
            self.pos = e.next;
            if e.value.tag == b',' {
                return Some(Ok((Cow::Borrowed(e.key), Cow::Borrowed(e.value.payload))));
            }
            self.list_name = e.key;
            self.list = e.value.payload;
            self.list_at = e.value_at + e.value.payload_at;
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
        self.next_pair().and_then(Result::ok)
    }
}

impl std::iter::FusedIterator for HeaderIter<'_> {}

/// Iterator over [`RawHeaders`] that checks every entry and reports the first malformed one;
/// see [`RawHeaders::try_iter`].
#[derive(Debug, Clone)]
pub struct TryHeaderIter<'a>(HeaderIter<'a>);

impl<'a> Iterator for TryHeaderIter<'a> {
    type Item = Result<(Cow<'a, [u8]>, Cow<'a, [u8]>), ParseError>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_pair()
    }
}

impl std::iter::FusedIterator for TryHeaderIter<'_> {}

/// One entry of a tnetstring header dictionary, read by [`tnet_entry`].
struct TnetEntry<'a> {
    key: &'a [u8],
    /// The value: a string (`,`) or a list of strings (`]`, checked item by item with
    /// [`tnet_list_item`]).
    value: crate::tnetstring::Element<'a>,
    /// Where the value starts in the payload.
    value_at: usize,
    /// Where the next entry starts.
    next: usize,
}

/// The entry of the header dictionary `p` at `pos`: a string key, then a string or a list.
/// Errors are at offsets within `p`. The one definition of a header entry that both walks
/// (the iterator and [`RawHeaders::for_each_tnet`]) use.
#[inline]
fn tnet_entry<'a>(p: &'a [u8], pos: usize, limits: &Limits) -> Result<TnetEntry<'a>, ParseError> {
    let key = split(&p[pos..], limits).map_err(|e| e.shift(pos))?;
    if key.tag != b',' {
        return Err(ParseError::new(K::KeyNotString, pos));
    }
    let vpos = pos + key.len;
    if vpos >= p.len() {
        return Err(ParseError::new(K::MissingValue, vpos));
    }
    let value = split(&p[vpos..], limits).map_err(|e| e.shift(vpos))?;
    if value.tag != b',' && value.tag != b']' {
        return Err(ParseError::new(K::BadHeaderValue, vpos));
    }
    Ok(TnetEntry {
        key: key.payload,
        next: vpos + value.len,
        value,
        value_at: vpos,
    })
}

/// The string at `lpos` of a header's list value, and its length; errors at offsets within
/// `list`.
#[inline]
fn tnet_list_item<'a>(
    list: &'a [u8],
    lpos: usize,
    limits: &Limits,
) -> Result<(&'a [u8], usize), ParseError> {
    let el = split(&list[lpos..], limits).map_err(|e| e.shift(lpos))?;
    if el.tag != b',' {
        return Err(ParseError::new(K::BadHeaderValue, lpos));
    }
    Ok((el.payload, el.len))
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
        h.validate().unwrap();
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
        let h = RawHeaders::new(body, 0, HeaderProtocol::Tnetstring, b"/", Limits::default());
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
        let h = RawHeaders::new(
            body,
            0,
            HeaderProtocol::Json,
            br#"/a"b\"#,
            Limits::default(),
        );
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
            let h = RawHeaders::new(body, 0, *proto, b"/", Limits::default());
            let e = h.validate().unwrap_err();
            // The fallible iterator ends with the same error, once, and never panics.
            let items: Vec<_> = h.try_iter().collect();
            assert_eq!(
                items.last(),
                Some(&Err(e)),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(items.iter().filter(|i| i.is_err()).count(), 1);
            // The plain iterator yields exactly the pairs before it.
            assert_eq!(h.iter().count(), items.len() - 1);
        }
    }
}
