//! What fixing an event stream's response headers must guarantee (`docs/rules.md`, "HTTP
//! rules"), as assertions over a header map before and after.
//!
//! Used by the checks of the crate's internal header fixing and of the public layer's headers
//! ([`crate::checks`]).

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, HeaderName};
use http::{HeaderMap, HeaderValue, Version};

/// `X-Accel-Buffering`.
pub const X_ACCEL_BUFFERING: &str = "x-accel-buffering";

/// Connection-specific headers, forbidden on HTTP/2 and HTTP/3.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// The HTTP version a version byte stands for (modulo 5: 0.9, 1.0, 1.1, 2, 3).
pub fn version(byte: u8) -> Version {
    match byte % 5 {
        0 => Version::HTTP_09,
        1 => Version::HTTP_10,
        2 => Version::HTTP_11,
        3 => Version::HTTP_2,
        _ => Version::HTTP_3,
    }
}

/// A header map of the valid pairs among `pairs`, appended in order (invalid names or values
/// are skipped: they cannot reach a `HeaderMap`).
pub fn header_map(pairs: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

/// Trims SP and HTAB from both ends.
fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The directive names of a `Cache-Control` value (before any `=`), trimmed.
fn directives(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|directive| {
        let name = directive.split(|&b| b == b'=').next().unwrap_or(directive);
        trim(name)
    })
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect()
}

/// Whether `needles` occur in `haystack` in order, without overlapping.
fn contains_in_order(mut haystack: &[u8], needles: &[&[u8]]) -> bool {
    for needle in needles {
        if needle.is_empty() {
            continue;
        }
        match haystack
            .windows(needle.len())
            .position(|window| window == *needle)
        {
            Some(at) => haystack = haystack.get(at + needle.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

/// Asserts that `after` is `before` with an event stream's headers fixed for `version`.
pub fn assert_fixed(before: &HeaderMap, after: &HeaderMap, version: Version) {
    // No Content-Length: the stream has no length.
    assert!(
        !after.contains_key(CONTENT_LENGTH),
        "content-length kept: {after:?}"
    );

    // One Cache-Control with no-cache and no-transform, keeping what was there.
    let cache_control = values(after, CACHE_CONTROL.as_str());
    let [merged] = cache_control.as_slice() else {
        panic!("not exactly one cache-control: {after:?}");
    };
    for required in [&b"no-cache"[..], b"no-transform"] {
        assert!(
            directives(merged).any(|name| name.eq_ignore_ascii_case(required)),
            "cache-control {:?} lacks {}",
            String::from_utf8_lossy(merged),
            String::from_utf8_lossy(required)
        );
    }
    let original: Vec<&[u8]> = values(before, CACHE_CONTROL.as_str())
        .into_iter()
        .map(trim)
        .filter(|value| !value.is_empty())
        .collect();
    assert!(
        contains_in_order(merged, &original),
        "cache-control {:?} dropped some of {original:?}",
        String::from_utf8_lossy(merged)
    );

    // X-Accel-Buffering: the application's, or `no`.
    let accel = values(before, X_ACCEL_BUFFERING);
    let expected: Vec<&[u8]> = if accel.is_empty() { vec![b"no"] } else { accel };
    assert_eq!(
        values(after, X_ACCEL_BUFFERING),
        expected,
        "x-accel-buffering"
    );

    // Connection-specific headers: removed on HTTP/2 and HTTP/3, kept otherwise.
    let h2 = version >= Version::HTTP_2;
    for name in HOP_BY_HOP {
        if h2 {
            assert!(
                !after.contains_key(name),
                "{name} kept on {version:?}: {after:?}"
            );
        }
    }

    // Everything else is untouched, values and order included.
    let fixed = |name: &HeaderName| {
        name == CACHE_CONTROL
            || name == CONTENT_LENGTH
            || name.as_str() == X_ACCEL_BUFFERING
            || (h2 && HOP_BY_HOP.contains(&name.as_str()))
    };
    for name in before.keys().chain(after.keys()) {
        if !fixed(name) {
            assert_eq!(
                values(before, name.as_str()),
                values(after, name.as_str()),
                "{name} changed"
            );
        }
    }
}
