//! [`ResponseFuture`]: decides once whether a response is an event stream, fixes its headers and
//! wraps its body.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response, StatusCode, Version, header};
use pin_project_lite::pin_project;

use crate::backpressure::{Buffering, Unbuffered};
use crate::body::{SseBody, Upstream};
use crate::compress::{Coding, Encoder};
use crate::config::Config;
use crate::detect::{is_encoded, is_event_stream};
use crate::headers::{fix_event_stream_headers, merge_vary};
use crate::overrides::SseOverride;
use crate::resume::GaveUp;

/// Marks a response an `SseLayer` already handled, so that nested layers do not inject twice.
#[derive(Debug, Clone, Copy)]
struct Handled;

pin_project! {
    /// The response future of [`SseService`](crate::SseService).
    pub struct ResponseFuture<F, M = Unbuffered> {
        #[pin]
        inner: Inner<F>,
        mode: PhantomData<fn() -> M>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Inner {
            #[pin]
            future: F,
            config: Arc<Config>,
            version: Version,
            head: bool,
            // The coding negotiated from the client's `Accept-Encoding`, when the layer
            // compresses.
            coding: Option<Coding>,
        },
        /// A request for an event stream during a drain: answered without the inner service.
        Drained {
            config: Option<Arc<Config>>,
            version: Version,
        },
    }
}

impl<F, M> ResponseFuture<F, M> {
    pub(crate) const fn new(
        future: F,
        config: Arc<Config>,
        version: Version,
        head: bool,
        coding: Option<Coding>,
    ) -> Self {
        Self {
            inner: Inner::Inner {
                future,
                config,
                version,
                head,
                coding,
            },
            mode: PhantomData,
        }
    }

    pub(crate) const fn drained(config: Arc<Config>, version: Version) -> Self {
        Self {
            inner: Inner::Drained {
                config: Some(config),
                version,
            },
            mode: PhantomData,
        }
    }
}

impl<F, M> std::fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E, M> Future for ResponseFuture<F, M>
where
    F: Future<Output = Result<Response<B>, E>>,
    M: Buffering<B>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            InnerProj::Inner {
                future,
                config,
                version,
                head,
                coding,
            } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(wrap::<B, M>(response, config, *version, *head, *coding)))
            }
            InnerProj::Drained { config, version } => {
                let config = config.take().unwrap_or_default();
                let mut response =
                    Response::new(SseBody::sse(None, Arc::clone(&config), config.settings));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                fix_event_stream_headers(response.headers_mut(), *version);
                response.extensions_mut().insert(Handled);
                Poll::Ready(Ok(response))
            }
        }
    }
}

fn wrap<B, M: Buffering<B>>(
    response: Response<B>,
    config: &Arc<Config>,
    version: Version,
    head: bool,
    coding: Option<Coding>,
) -> Response<SseBody<B>> {
    let (mut parts, body) = response.into_parts();
    // The common case first: one header lookup decides for every other response.
    if !is_event_stream(&parts.headers) || !carries_a_stream(parts.status) {
        return Response::from_parts(parts, SseBody::passthrough(body));
    }
    let overrides = parts.extensions.get::<SseOverride>().cloned();
    let gave_up = parts.extensions.get::<GaveUp>().cloned();
    if parts.extensions.get::<Handled>().is_some()
        || overrides.as_ref().is_some_and(SseOverride::is_skip)
    {
        return Response::from_parts(parts, SseBody::passthrough(body));
    }

    fix_event_stream_headers(&mut parts.headers, version);
    if config.compression.is_some() && !is_encoded(&parts.headers) {
        // The body depends on `Accept-Encoding`, even when it is sent as identity.
        merge_vary(&mut parts.headers, "accept-encoding");
    }
    parts.extensions.insert(Handled);
    if head {
        // The headers a GET would get (RFC 9110, section 9.3.2), the coding included.
        if let Some(coding) = coding
            && !is_encoded(&parts.headers)
        {
            parts.headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(coding.as_str()),
            );
        }
        return Response::from_parts(parts, SseBody::passthrough(body));
    }
    if is_encoded(&parts.headers) {
        // The scanner cannot see lines in compressed bytes, and injecting plain text would
        // corrupt them: forward untouched, loudly.
        tracing::warn!(
            target: "tower_sse",
            content_encoding = ?parts.headers.get(header::CONTENT_ENCODING),
            "event stream arrived with a content encoding: passed through without heartbeats or \
             retry hints; make the upstream honour `Accept-Encoding: identity`"
        );
        return Response::from_parts(parts, SseBody::passthrough(body));
    }
    let mut settings = config.settings;
    if let Some(overrides) = overrides {
        overrides.apply(&mut settings);
    }
    let upstream = match M::start(
        body,
        config.slow_client,
        &config.metrics,
        settings
            .heartbeat
            .map(|interval| (interval, config.heartbeat_slack(interval))),
    ) {
        Ok(receiver) => Upstream::queued(receiver),
        Err(body) => Upstream::direct(body),
    };
    let mut body = SseBody::sse(Some(upstream), Arc::clone(config), settings);
    if let Some(gave_up) = gave_up {
        body = body.with_resume(gave_up);
    }
    match encoder(config, coding) {
        Some(encoder) => {
            parts.headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(encoder.coding().as_str()),
            );
            Response::from_parts(parts, body.with_encoder(encoder))
        }
        None => Response::from_parts(parts, body),
    }
}

/// The encoder of a stream, when the layer compresses and a coding was negotiated; a coding
/// whose encoder cannot be made is given up for identity, loudly.
fn encoder(config: &Config, coding: Option<Coding>) -> Option<Encoder> {
    let coding = coding?;
    match config.compression.as_ref()?.encoder(coding) {
        Ok(encoder) => Some(encoder),
        Err(error) => {
            tracing::warn!(target: "tower_sse", %error, %coding, "event stream sent uncompressed");
            None
        }
    }
}

/// Only a successful response with content is a stream a client reads; anything else (a 204,
/// which tells `EventSource` to stop, a 404, a 503) passes through untouched.
fn carries_a_stream(status: StatusCode) -> bool {
    status.is_success() && status != StatusCode::NO_CONTENT && status != StatusCode::RESET_CONTENT
}
