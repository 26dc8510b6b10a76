//! One tnetstring element, `<length>:<payload><tag>`, split off the front of a buffer: the nom
//! grammar that checks it ([`split_checked`]), and the one hand-written fast path in front of it
//! ([`split`]).

use super::Limits;
use crate::error::{ParseError, ParseErrorKind as K};

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

/// Splits one `<len>:<payload><tag>` element off the front of `input`, checking the length prefix
/// against `limits` but not the tag. No allocation, and the payload is skipped by its length,
/// never scanned.
///
/// This is the **fast path** of every decode, for the hot case: the elements of a request's
/// header dictionary (short keys and values, length prefixes of one to three digits, most
/// bodies). A message is one long chain of dependent loads (where an element ends is only known
/// once its length is read), so the prefix is read for latency: four bytes in one load, the
/// value ready a cycle or two after them, one bounds check for payload and tag. Anything else (a
/// longer prefix, a prefix over a limit, an element cut short, every error) goes to the nom
/// grammar, [`split_checked`].
///
/// The grammar is the reference: whatever this accepts, it must accept with the same element,
/// and it never reports an error of its own. The unit tests (a proptest among them) check that
/// the two agree on arbitrary input under arbitrary limits.
#[inline]
pub(crate) fn split<'a>(input: &'a [u8], limits: &Limits) -> Result<Element<'a>, ParseError> {
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
    let short = if d0 > 9 {
        None
    } else if b1 == b':' {
        Some((1, d0))
    } else if d1 > 9 || d0 == 0 {
        None // a leading zero is only allowed for the length 0 itself
    } else if b2 == b':' {
        Some((2, d0 * 10 + d1))
    } else if d2 > 9 || b3 != b':' {
        None
    } else {
        Some((3, d0 * 100 + d1 * 10 + d2))
    };
    if let Some((digits, n)) = short {
        if digits <= limits.max_length_digits && n <= limits.max_size {
            let payload_at = digits + 1;
            let tag_at = payload_at + n; // n < 1000: no overflow
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
    split_checked(input, limits)
}

// The grammar of one element, `<length>:<payload><tag>`, one nom parser per rule. nom stays
// private to this module: its types never appear in the crate's API, and its errors are mapped
// to [`ParseError`]s (kind and offset) by [`split_checked`]. They carry no error value (`()`):
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

/// [`split`] through the checked nom grammar above: the reference for what an element is, and
/// the path for long length prefixes, short inputs and every error.
#[inline(never)]
pub(crate) fn split_checked<'a>(
    input: &'a [u8],
    limits: &Limits,
) -> Result<Element<'a>, ParseError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Parts<'a> = (u8, &'a [u8], usize, usize);

    fn parts(e: Element<'_>) -> Parts<'_> {
        (e.tag, e.payload, e.payload_at, e.len)
    }

    /// An independent digit-by-digit reading of the element rule (the splitter the nom grammar
    /// replaced), kept as a test oracle: the grammar must report the same errors at the same
    /// offsets as a plain reading of the bytes would.
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
    fn fast_path_and_grammar_agree_with_a_digit_by_digit_reading() {
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
            for l in [&limits, &tight, &none, &one, &wide] {
                let fast = split(input, l).map(parts);
                let grammar = split_checked(input, l).map(parts);
                let want = split_reference(input, l).map(parts);
                assert_eq!(grammar, want, "{:?} {l:?}", String::from_utf8_lossy(input));
                assert_eq!(fast, want, "{:?} {l:?}", String::from_utf8_lossy(input));
            }
        };
        let mut buf = Vec::new();
        for n in (0..2_000usize).chain([9_999, 10_000, 65_535, 999_999, 1_000_000, 9_999_999]) {
            for pad in [0usize, 1, 6, 12] {
                buf.clear();
                buf.extend_from_slice(format!("{n}:").as_bytes());
                buf.extend(std::iter::repeat_n(b'x', n.min(3_000)));
                buf.push(b',');
                buf.extend(std::iter::repeat_n(b'y', pad));
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

    fn limits() -> impl Strategy<Value = Limits> {
        (0usize..25, prop_oneof![0usize..2_000, Just(usize::MAX)]).prop_map(|(d, s)| Limits {
            max_length_digits: d,
            max_size: s,
            max_depth: 1,
        })
    }

    /// Bytes that look like the start of an element: digits, `:`, tags, junk, in any order.
    fn element_like() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                4 => proptest::char::range('0', '9').prop_map(|c| c as u8),
                2 => Just(b':'),
                1 => proptest::sample::select(b",#^!~}] x".to_vec()),
                1 => any::<u8>(),
            ],
            0..24,
        )
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_the_grammar_on_arbitrary_bytes(
            input in proptest::collection::vec(any::<u8>(), 0..40),
            l in limits(),
        ) {
            prop_assert_eq!(split(&input, &l).map(parts), split_checked(&input, &l).map(parts));
        }

        #[test]
        fn fast_path_agrees_with_the_grammar_on_element_like_bytes(
            input in element_like(),
            l in limits(),
        ) {
            prop_assert_eq!(split(&input, &l).map(parts), split_checked(&input, &l).map(parts));
        }

        #[test]
        fn fast_path_agrees_with_the_grammar_on_elements(
            n in 0usize..1_200,
            tag in any::<u8>(),
            cut in any::<prop::sample::Index>(),
            l in limits(),
        ) {
            let mut input = format!("{n}:").into_bytes();
            input.extend(std::iter::repeat_n(b'x', n));
            input.push(tag);
            let input = &input[..=cut.index(input.len())];
            prop_assert_eq!(split(input, &l).map(parts), split_checked(input, &l).map(parts));
        }
    }
}
