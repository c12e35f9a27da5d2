//! Choosing a content coding from the client's `Accept-Encoding` (RFC 9110, section 12.5.3).

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

use super::Coding;
use crate::detect::trim;

/// The coding to encode the response with, from the request's `Accept-Encoding` and the layer's
/// preference `order` (codings not compiled in are skipped). `None` means identity.
///
/// - Codings are compared by the client's q-value first (`gzip;q=1, br;q=0.5` gets gzip); equal
///   q-values go to the first in `order`.
/// - `q=0` refuses a coding; `*` gives its q-value to every coding not listed by name; `x-gzip`
///   is gzip. Tokens are case-insensitive; unknown codings and malformed entries are ignored.
/// - No header, an empty one, or no acceptable coding: identity. `identity;q=0` does not change
///   that: an event stream is never refused (a 406 would stop `EventSource` for good).
pub(crate) fn negotiate(headers: &HeaderMap, order: &[Coding]) -> Option<Coding> {
    let mut best: Option<(Coding, u16)> = None;
    for &coding in order {
        if !coding.is_available() {
            continue;
        }
        let q = q_value(headers, coding);
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((coding, q));
        }
    }
    best.map(|(coding, _)| coding)
}

/// The q-value (in thousandths) the header gives `coding`: its own entry's (the highest, if
/// listed twice), else `*`'s, else 0.
fn q_value(headers: &HeaderMap, coding: Coding) -> u16 {
    let mut named: Option<u16> = None;
    let mut wildcard: Option<u16> = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        for entry in value.as_bytes().split(|&b| b == b',') {
            let mut parts = entry.split(|&b| b == b';');
            let token = trim(parts.next().unwrap_or_default());
            let Some(q) = parse_params(parts) else {
                continue;
            };
            if token == b"*" {
                wildcard = Some(wildcard.map_or(q, |w| w.max(q)));
            } else if coding.matches(token) {
                named = Some(named.map_or(q, |n| n.max(q)));
            }
        }
    }
    named.or(wildcard).unwrap_or(0)
}

/// The q-value among an entry's parameters (1000 when absent); `None` when it is malformed.
fn parse_params<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let param = trim(param);
        let Some(eq) = memchr::memchr(b'=', param) else {
            continue;
        };
        let (name, value) = param.split_at(eq);
        if trim(name).eq_ignore_ascii_case(b"q") {
            q = parse_q(trim(value.get(1..).unwrap_or_default()))?;
        }
    }
    Some(q)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_q(value: &[u8]) -> Option<u16> {
    let (&first, rest) = value.split_first()?;
    let fraction = match rest {
        [] => &[][..],
        [b'.', fraction @ ..] if fraction.len() <= 3 => fraction,
        _ => return None,
    };
    let mut thousandths: u16 = 0;
    let mut scale = 100;
    for &digit in fraction {
        if !digit.is_ascii_digit() {
            return None;
        }
        thousandths += u16::from(digit - b'0') * scale;
        scale /= 10;
    }
    match first {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    fn pick(values: &[&'static str], order: &[Coding]) -> Option<Coding> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_static(value));
        }
        negotiate(&headers, order)
    }

    /// The first available coding of `wanted`, in order: what a build with some features off
    /// should pick instead.
    fn available(wanted: &[Coding]) -> Option<Coding> {
        wanted.iter().copied().find(|coding| coding.is_available())
    }

    #[test]
    fn q_values_are_parsed_in_thousandths() {
        for (text, q) in [
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.001", Some(1)),
            ("0.0001", None),
            ("1.1", None),
            ("2", None),
            ("", None),
            ("0.a", None),
            ("-1", None),
        ] {
            assert_eq!(parse_q(text.as_bytes()), q, "q={text}");
        }
    }

    #[test]
    fn negotiation_table() {
        use Coding::{Br, Gzip, Zstd};
        let cases: &[(&[&'static str], &[Coding], &[Coding])] = &[
            // (Accept-Encoding values, layer order, codings acceptable in order of choice)
            (&[], &ALL, &[]),
            (&[""], &ALL, &[]),
            (&["identity"], &ALL, &[]),
            (&["gzip"], &ALL, &[Gzip]),
            (&["GZIP"], &ALL, &[Gzip]),
            (&["x-gzip"], &ALL, &[Gzip]),
            (&["gzip, deflate, br, zstd"], &ALL, &[Br, Zstd, Gzip]),
            (&["gzip, deflate, br, zstd"], &[Gzip, Br], &[Gzip, Br]),
            (
                &["gzip, deflate, br, zstd"],
                &[Zstd, Gzip, Br],
                &[Zstd, Gzip, Br],
            ),
            (&["gzip", "br"], &ALL, &[Br, Gzip]),
            // The client's q-values come first, the layer's order breaks ties.
            (&["gzip;q=1, br;q=0.5"], &ALL, &[Gzip, Br]),
            (
                &["gzip; q=0.8, br ;Q=0.9, zstd;q=0.9"],
                &ALL,
                &[Br, Zstd, Gzip],
            ),
            // Refused codings.
            (&["br;q=0, gzip"], &ALL, &[Gzip]),
            (&["br;q=0.000, gzip;q=0"], &ALL, &[]),
            // Identity forbidden and nothing else acceptable: identity all the same.
            (&["identity;q=0"], &ALL, &[]),
            (&["identity;q=0, gzip"], &ALL, &[Gzip]),
            // Unknown codings are ignored.
            (&["compress, deflate, exi"], &ALL, &[]),
            (&["bzip2, gzip"], &ALL, &[Gzip]),
            // `*` stands for the codings not named.
            (&["*"], &ALL, &[Br, Zstd, Gzip]),
            (&["*;q=0"], &ALL, &[]),
            (&["br;q=0, *"], &ALL, &[Zstd, Gzip]),
            (&["gzip, *;q=0"], &ALL, &[Gzip]),
            (&["*;q=0.5, gzip"], &ALL, &[Gzip, Br, Zstd]),
            // Malformed entries are ignored, the rest still count.
            (&["br;q=2, gzip"], &ALL, &[Gzip]),
            (&["br;q=, gzip"], &ALL, &[Gzip]),
            (&[",,, ;, gzip;;"], &ALL, &[Gzip]),
            // A coding listed twice keeps its best q-value.
            (&["br;q=0, br;q=0.4, gzip;q=0.3"], &ALL, &[Br, Gzip]),
            // A coding the layer does not offer is never chosen.
            (&["br"], &[Gzip], &[]),
            (&["gzip"], &[], &[]),
        ];
        for (values, order, expected) in cases {
            assert_eq!(
                pick(values, order),
                available(expected),
                "Accept-Encoding: {values:?}, order {order:?}"
            );
        }
    }

    #[test]
    fn non_ascii_bytes_are_no_coding() {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"g\xe9zip, gzip;q=\xe9").unwrap(),
        );
        assert_eq!(negotiate(&headers, &ALL), None);
    }
}
