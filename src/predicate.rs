//! A compression predicate that keeps an outer compressor away from event streams.

use http::{Extensions, HeaderMap, StatusCode, Version};

use crate::detect::is_event_stream;

/// Whether a response may be compressed: `false` for event streams. Use it as a predicate of
/// tower-http's `CompressionLayer::compress_when`, which accepts any
/// `Fn(StatusCode, Version, &HeaderMap, &Extensions) -> bool`.
///
/// A compressor in front of an event stream waits for a full block before it writes anything, so
/// events arrive late or in bursts. tower-http's `DefaultPredicate` already skips
/// `text/event-stream`, but compares the media type case-sensitively; a custom predicate skips
/// nothing unless told. `not_sse` compares the media type case-insensitively, with or without
/// parameters. It needs no feature of this crate and pulls in no codec. Combine it with the
/// predicate you use:
///
/// ```
/// use bytes::Bytes;
/// use http::{header, Request, Response};
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_http::compression::{predicate::{DefaultPredicate, Predicate}, CompressionLayer};
/// use tower_sse::{not_sse, SseLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ServiceBuilder::new()
///     .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(not_sse)))
///     .layer(SseLayer::new())
///     .service_fn(|_: Request<Full<Bytes>>| async {
///         let mut response = Response::new(Full::<Bytes>::from("data: x\n\n".repeat(100)));
///         response.headers_mut().insert(header::CONTENT_TYPE, "Text/Event-Stream".parse().unwrap());
///         Ok::<_, std::convert::Infallible>(response)
///     });
///
/// let request = Request::builder()
///     .header(header::ACCEPT_ENCODING, "gzip")
///     .body(Full::default())
///     .unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
/// # }
/// ```
#[must_use]
pub fn not_sse(
    _status: StatusCode,
    _version: Version,
    headers: &HeaderMap,
    _extensions: &Extensions,
) -> bool {
    !is_event_stream(headers)
}

/// [`not_sse`] as a named type implementing tower-http's compression `Predicate` (feature
/// `tower-http`, which enables tower-http's `compression-gzip`: its `compression` module exists
/// only with a codec). Prefer the function unless you need to name the predicate's type.
///
/// ```
/// # #[cfg(feature = "tower-http")] {
/// use tower_http::compression::{predicate::{DefaultPredicate, Predicate}, CompressionLayer};
/// use tower_sse::NotSse;
///
/// let layer = CompressionLayer::new().compress_when(DefaultPredicate::new().and(NotSse::new()));
/// # drop(layer);
/// # }
/// ```
#[cfg(feature = "tower-http")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-http")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct NotSse(());

#[cfg(feature = "tower-http")]
impl NotSse {
    /// Creates a new [`NotSse`] predicate.
    pub const fn new() -> Self {
        Self(())
    }
}

#[cfg(feature = "tower-http")]
impl tower_http::compression::Predicate for NotSse {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: http_body::Body,
    {
        !is_event_stream(response.headers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        headers
    }

    fn compressible(content_type: &'static str) -> bool {
        not_sse(
            StatusCode::OK,
            Version::HTTP_11,
            &headers(content_type),
            &Extensions::new(),
        )
    }

    #[test]
    fn event_streams_are_not_compressed_whatever_the_case() {
        assert!(!compressible("text/event-stream"));
        assert!(!compressible("TEXT/Event-Stream; charset=utf-8"));
        assert!(compressible("application/json"));
    }

    #[cfg(feature = "tower-http")]
    #[test]
    fn the_named_predicate_agrees_with_the_function() {
        use tower_http::compression::Predicate;
        for content_type in ["text/event-stream", "Text/Event-Stream;x=1", "text/html"] {
            let mut response = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
            *response.headers_mut() = headers(content_type);
            assert_eq!(
                NotSse::new().should_compress(&response),
                compressible(content_type)
            );
        }
    }
}
