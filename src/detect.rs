//! Deciding what is an event stream: pure functions over a [`HeaderMap`], allocation-free.

use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_ENCODING, CONTENT_TYPE};

const EVENT_STREAM: &[u8] = b"text/event-stream";

/// Returns `true` when `headers` describe a `text/event-stream` response.
///
/// The media type of the first `Content-Type` header is compared case-insensitively, parameters
/// (such as `; charset=utf-8`) are allowed. A missing or unparsable header means "not SSE".
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(CONTENT_TYPE, HeaderValue::from_static("Text/Event-Stream; charset=utf-8"));
/// assert!(tower_sse::is_event_stream(&headers));
///
/// headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream-ish"));
/// assert!(!tower_sse::is_event_stream(&headers));
/// ```
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| media_type_is_event_stream(value.as_bytes()))
}

/// Returns `true` when the request headers `Accept` lists `text/event-stream`.
///
/// Every `Accept` header and every comma-separated media range in it is looked at; the comparison
/// is case-insensitive and ignores parameters such as `;q=0.9`. Wildcards (`*/*`) do not count:
/// `EventSource` always sends `Accept: text/event-stream`.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::ACCEPT};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream;q=0.9"));
/// assert!(tower_sse::asks_for_event_stream(&headers));
///
/// headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
/// assert!(!tower_sse::asks_for_event_stream(&headers));
/// ```
pub fn asks_for_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(media_type_is_event_stream)
    })
}

/// Returns `true` when the response carries a `Content-Encoding` other than `identity`.
pub(crate) fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .map(trim)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"))
    })
}

/// Whether one media type (possibly with parameters) has the essence `text/event-stream`.
fn media_type_is_event_stream(value: &[u8]) -> bool {
    let essence = match memchr::memchr(b';', value) {
        Some(end) => value.get(..end).unwrap_or(value),
        None => value,
    };
    trim(essence).eq_ignore_ascii_case(EVENT_STREAM)
}

/// Trims optional white space (SP and HTAB) from both ends.
pub(crate) fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &http::header::HeaderName, values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name.clone(), HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn content_type_detection_is_case_insensitive_and_allows_parameters() {
        for value in [
            "text/event-stream",
            "TEXT/EVENT-STREAM",
            "text/event-stream; charset=utf-8",
            " text/event-stream ;charset=utf-8",
            "text/event-stream\t",
        ] {
            assert!(is_event_stream(&with(&CONTENT_TYPE, &[value])), "{value}");
        }
    }

    #[test]
    fn other_content_types_are_not_event_streams() {
        for value in [
            "",
            "text/event",
            "text/event-streams",
            "application/json",
            "text/plain; x=text/event-stream",
            "application/grpc",
            "text/event-stream-x",
        ] {
            assert!(!is_event_stream(&with(&CONTENT_TYPE, &[value])), "{value}");
        }
        assert!(!is_event_stream(&HeaderMap::new()));
    }

    #[test]
    fn non_utf8_content_type_is_not_an_event_stream() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_bytes(b"text/event-stream\xff").unwrap(),
        );
        assert!(!is_event_stream(&headers));
    }

    #[test]
    fn accept_lists_are_searched_across_headers_and_ranges() {
        assert!(asks_for_event_stream(&with(
            &ACCEPT,
            &["text/event-stream"]
        )));
        assert!(asks_for_event_stream(&with(
            &ACCEPT,
            &["text/html", "application/json,Text/Event-Stream;q=0.5"]
        )));
        assert!(!asks_for_event_stream(&with(&ACCEPT, &["*/*"])));
        assert!(!asks_for_event_stream(&with(&ACCEPT, &["text/*"])));
        assert!(!asks_for_event_stream(&HeaderMap::new()));
    }

    #[test]
    fn identity_is_not_an_encoding() {
        assert!(!is_encoded(&HeaderMap::new()));
        assert!(!is_encoded(&with(&CONTENT_ENCODING, &["identity"])));
        assert!(!is_encoded(&with(&CONTENT_ENCODING, &["Identity, "])));
        assert!(is_encoded(&with(&CONTENT_ENCODING, &["gzip"])));
        assert!(is_encoded(&with(&CONTENT_ENCODING, &["identity", "br"])));
    }
}
