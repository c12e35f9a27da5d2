//! A compression predicate that keeps an outer compressor away from event streams.

use http_body::Body;
use tower_http::compression::Predicate;

use crate::detect::is_event_stream;

/// A [`Predicate`] for tower-http's `CompressionLayer::compress_when` that refuses to compress
/// event streams.
///
/// A compressor in front of an event stream waits for a full block before it writes anything, so
/// events arrive late or in bursts. tower-http's `DefaultPredicate` already skips
/// `text/event-stream`, but compares the media type case-sensitively; a custom predicate skips
/// nothing unless told. `NotSse` compares the media type case-insensitively, with or without
/// parameters. Combine it with the predicate you use:
///
/// ```
/// use bytes::Bytes;
/// use http::{header, Request, Response};
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_http::compression::{predicate::{DefaultPredicate, Predicate}, CompressionLayer};
/// use tower_sse::{NotSse, SseLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ServiceBuilder::new()
///     .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(NotSse::new())))
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
#[derive(Debug, Clone, Copy, Default)]
pub struct NotSse(());

impl NotSse {
    /// Creates a new [`NotSse`] predicate.
    pub const fn new() -> Self {
        Self(())
    }
}

impl Predicate for NotSse {
    fn should_compress<B>(&self, response: &http::Response<B>) -> bool
    where
        B: Body,
    {
        !is_event_stream(response.headers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(content_type: &'static str) -> http::Response<http_body_util::Empty<bytes::Bytes>> {
        http::Response::builder()
            .header(http::header::CONTENT_TYPE, content_type)
            .body(http_body_util::Empty::new())
            .unwrap()
    }

    #[test]
    fn event_streams_are_not_compressed_whatever_the_case() {
        assert!(!NotSse::new().should_compress(&response("text/event-stream")));
        assert!(!NotSse::new().should_compress(&response("TEXT/Event-Stream; charset=utf-8")));
        assert!(NotSse::new().should_compress(&response("application/json")));
    }
}
