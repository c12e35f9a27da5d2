//! [`ResumeService`]: keeps what a repeatable request needs to be sent again.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::ResumeBody;
use super::config::Config;
use super::future::ResponseFuture;
use super::metrics::ResumeMetrics;
use super::replay::Replay;
use crate::macros::define_inner_service_accessors;

/// Middleware that resumes an interrupted upstream event stream inside the client's open
/// response: it sends the request again with `Last-Event-ID` and splices the new response's
/// events in.
///
/// Created by [`ResumeLayer`](crate::ResumeLayer), or with [`ResumeService::new`] for the
/// defaults.
///
/// Only a `GET` or `HEAD` request without a body is repeated (its body's `is_end_stream` is true,
/// or its `size_hint` is exactly 0); any other request, and any response that is not a `2xx`
/// `text/event-stream` other than 204 and 205, passes through as is. The request sent again is
/// rebuilt from the first one's method, URI, version and headers, with `Last-Event-ID` replaced,
/// and `ReqBody::default()` as its body; extensions are not carried over. `ReqBody: Default`
/// holds for `http_body_util::Empty`, `Full` and `BoxBody`; map hyper's `Incoming` request body
/// to one of them first.
///
/// The inner service must be cheap to clone: each watched stream keeps a clone to call again
/// (it is driven to readiness before each call).
///
/// See the [module docs](crate::resume) for an example.
pub struct ResumeService<S> {
    inner: S,
    config: Config,
    metrics: ResumeMetrics,
}

impl<S> ResumeService<S> {
    /// Creates a new [`ResumeService`] around `inner` with the default configuration.
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Config::default(), ResumeMetrics::new())
    }

    pub(crate) const fn from_config(inner: S, config: Config, metrics: ResumeMetrics) -> Self {
        Self {
            inner,
            config,
            metrics,
        }
    }

    define_inner_service_accessors!();
}

impl<S: Clone> Clone for ResumeService<S> {
    fn clone(&self) -> Self {
        Self::from_config(self.inner.clone(), self.config, self.metrics.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for ResumeService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for ResumeService<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Clone,
    ReqBody: Body + Default,
{
    type Response = Response<ResumeBody<B, S, ReqBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let replay = if self.config.attempts > 0 {
            Replay::of(&request).map(|replay| (replay, self.inner.clone()))
        } else {
            None
        };
        ResponseFuture::new(
            self.inner.call(request),
            replay,
            self.config,
            self.metrics.clone(),
        )
    }
}
