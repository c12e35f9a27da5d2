//! Response headers of an event stream: `Cache-Control`, `X-Accel-Buffering`, no
//! `Content-Length`, no hop-by-hop headers on HTTP/2 and HTTP/3.

use bytes::BytesMut;
use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, HeaderName, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{HeaderMap, HeaderValue, Version};

use crate::detect::trim;

/// `X-Accel-Buffering`, read by nginx per response.
pub(crate) const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The directives every event stream's `Cache-Control` must carry.
const REQUIRED: [&[u8]; 2] = [b"no-cache", b"no-transform"];

/// Fixes the headers of an event-stream response in place. Idempotent.
///
/// - `Cache-Control` gets `no-cache` and `no-transform`, merged into one header with the
///   directives already present (`private`, `no-store`, … are kept, none is duplicated);
/// - `X-Accel-Buffering: no` unless the application set the header itself;
/// - `Content-Length` is removed (the stream has no length);
/// - on HTTP/2 and HTTP/3, connection-specific headers are removed (they are forbidden there).
///
/// Nothing else is touched: the status, `Content-Type` and the application's headers stay.
pub(crate) fn fix_event_stream_headers(headers: &mut HeaderMap, version: Version) {
    merge_cache_control(headers);
    if !headers.contains_key(X_ACCEL_BUFFERING) {
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
    headers.remove(CONTENT_LENGTH);
    if version >= Version::HTTP_2 {
        for name in [
            CONNECTION,
            KEEP_ALIVE,
            PROXY_CONNECTION,
            TRANSFER_ENCODING,
            UPGRADE,
        ] {
            headers.remove(name);
        }
    }
}

/// Adds `name` to `Vary`, merged into one header with the names already there (none is
/// duplicated; `Vary: *` is left alone).
pub(crate) fn merge_vary(headers: &mut HeaderMap, name: &'static str) {
    let mut count = 0;
    for value in headers.get_all(VARY) {
        count += 1;
        for listed in value.as_bytes().split(|&b| b == b',') {
            let listed = trim(listed);
            if listed == b"*" || listed.eq_ignore_ascii_case(name.as_bytes()) {
                return;
            }
        }
    }
    if count == 0 {
        headers.insert(VARY, HeaderValue::from_static(name));
        return;
    }
    let mut merged = BytesMut::new();
    for value in headers.get_all(VARY) {
        let value = trim(value.as_bytes());
        if !value.is_empty() {
            merged.extend_from_slice(value);
            merged.extend_from_slice(b", ");
        }
    }
    merged.extend_from_slice(name.as_bytes());
    // Valid values joined by ", ": valid too; should that ever fail, the name alone is kept.
    let value = HeaderValue::from_maybe_shared(merged.freeze())
        .unwrap_or_else(|_| HeaderValue::from_static(name));
    headers.insert(VARY, value);
}

fn merge_cache_control(headers: &mut HeaderMap) {
    let mut missing = REQUIRED;
    let mut count = 0;
    let mut present = 0;
    for value in headers.get_all(CACHE_CONTROL) {
        count += 1;
        for directive in value.as_bytes().split(|&b| b == b',') {
            let name = match memchr::memchr(b'=', directive) {
                Some(eq) => directive.get(..eq).unwrap_or(directive),
                None => directive,
            };
            let name = trim(name);
            for slot in &mut missing {
                if !slot.is_empty() && slot.eq_ignore_ascii_case(name) {
                    *slot = b"";
                    present += 1;
                }
            }
        }
    }
    if present == REQUIRED.len() && count <= 1 {
        return;
    }

    // Merge every existing value and the missing directives into one header.
    let mut merged = BytesMut::new();
    for value in headers.get_all(CACHE_CONTROL) {
        let value = trim(value.as_bytes());
        if value.is_empty() {
            continue;
        }
        if !merged.is_empty() {
            merged.extend_from_slice(b", ");
        }
        merged.extend_from_slice(value);
    }
    for directive in missing.iter().filter(|d| !d.is_empty()) {
        if !merged.is_empty() {
            merged.extend_from_slice(b", ");
        }
        merged.extend_from_slice(directive);
    }
    // Existing values were valid header values, joined by ", ": the result is valid too. Should
    // that ever fail, the required directives alone are still correct.
    let value = HeaderValue::from_maybe_shared(merged.freeze())
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache, no-transform"));
    headers.insert(CACHE_CONTROL, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_TYPE;

    fn fixed(pairs: &[(&'static str, &'static str)], version: Version) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        fix_event_stream_headers(&mut headers, version);
        headers
    }

    fn all(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn bare_response_gets_cache_control_and_accel_buffering() {
        let headers = fixed(&[("content-type", "text/event-stream")], Version::HTTP_11);
        assert_eq!(all(&headers, "cache-control"), ["no-cache, no-transform"]);
        assert_eq!(all(&headers, "x-accel-buffering"), ["no"]);
        assert_eq!(all(&headers, "content-type"), ["text/event-stream"]);
    }

    #[test]
    fn existing_cache_control_directives_are_kept_and_merged_into_one_header() {
        let headers = fixed(
            &[
                ("cache-control", "private"),
                ("cache-control", "No-Cache, max-age=0"),
            ],
            Version::HTTP_11,
        );
        assert_eq!(
            all(&headers, "cache-control"),
            ["private, No-Cache, max-age=0, no-transform"]
        );
    }

    #[test]
    fn no_store_is_kept_and_no_cache_added() {
        let headers = fixed(&[("cache-control", "no-store")], Version::HTTP_11);
        assert_eq!(
            all(&headers, "cache-control"),
            ["no-store, no-cache, no-transform"]
        );
    }

    #[test]
    fn complete_cache_control_is_left_byte_for_byte() {
        let headers = fixed(
            &[("cache-control", "no-transform,private ,  no-cache")],
            Version::HTTP_11,
        );
        assert_eq!(
            all(&headers, "cache-control"),
            ["no-transform,private ,  no-cache"]
        );
    }

    #[test]
    fn application_accel_buffering_is_respected() {
        let headers = fixed(&[("x-accel-buffering", "yes")], Version::HTTP_11);
        assert_eq!(all(&headers, "x-accel-buffering"), ["yes"]);
    }

    #[test]
    fn content_length_is_removed() {
        let headers = fixed(&[("content-length", "12")], Version::HTTP_11);
        assert!(!headers.contains_key(CONTENT_LENGTH));
    }

    #[test]
    fn hop_by_hop_headers_are_kept_on_http1_and_removed_on_http2() {
        let pairs = [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-app", "1"),
        ];
        let h1 = fixed(&pairs, Version::HTTP_11);
        assert!(h1.contains_key(CONNECTION) && h1.contains_key("keep-alive"));
        for version in [Version::HTTP_2, Version::HTTP_3] {
            let h2 = fixed(&pairs, version);
            assert!(!h2.contains_key(CONNECTION));
            assert!(!h2.contains_key("keep-alive"));
            assert!(!h2.contains_key(TRANSFER_ENCODING));
            assert_eq!(all(&h2, "x-app"), ["1"]);
        }
    }

    #[test]
    fn fixing_is_idempotent() {
        let once = fixed(
            &[("cache-control", "private"), ("cache-control", "max-age=3")],
            Version::HTTP_2,
        );
        let mut twice = once.clone();
        fix_event_stream_headers(&mut twice, Version::HTTP_2);
        assert_eq!(once, twice);
        assert!(!once.contains_key(CONTENT_TYPE));
    }

    #[test]
    fn vary_is_merged_once() {
        for (before, after) in [
            (&[][..], &["accept-encoding"][..]),
            (&["origin"], &["origin, accept-encoding"]),
            (
                &["Origin", " cookie "],
                &["Origin, cookie, accept-encoding"],
            ),
            (&["Accept-Encoding"], &["Accept-Encoding"]),
            (&["origin, ACCEPT-ENCODING"], &["origin, ACCEPT-ENCODING"]),
            (&["*"], &["*"]),
        ] {
            let mut headers = HeaderMap::new();
            for value in before {
                headers.append(VARY, HeaderValue::from_static(value));
            }
            merge_vary(&mut headers, "accept-encoding");
            assert_eq!(all(&headers, "vary"), after, "{before:?}");
            let mut twice = headers.clone();
            merge_vary(&mut twice, "accept-encoding");
            assert_eq!(headers, twice);
        }
    }

    #[test]
    fn obs_text_in_cache_control_is_merged_without_panicking() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_bytes(b"x=\xe9t\xe9").unwrap(),
        );
        fix_event_stream_headers(&mut headers, Version::HTTP_11);
        assert_eq!(
            headers.get(CACHE_CONTROL).unwrap().as_bytes(),
            b"x=\xe9t\xe9, no-cache, no-transform"
        );
    }
}
