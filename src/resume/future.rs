//! [`ResponseFuture`]: decides once whether a response is an event stream that may be resumed.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::ResumeBody;
use super::config::Config;
use super::metrics::{GaveUp, ResumeMetrics};
use super::replay::{Replay, is_stream};

pin_project! {
    /// The response future of [`ResumeService`](crate::ResumeService).
    pub struct ResponseFuture<F, S, ReqBody> {
        #[pin]
        inner: F,
        replay: Option<(Replay, S)>,
        config: Config,
        metrics: ResumeMetrics,
        request: PhantomData<fn(ReqBody)>,
    }
}

impl<F, S, ReqBody> ResponseFuture<F, S, ReqBody> {
    pub(crate) const fn new(
        inner: F,
        replay: Option<(Replay, S)>,
        config: Config,
        metrics: ResumeMetrics,
    ) -> Self {
        Self {
            inner,
            replay,
            config,
            metrics,
            request: PhantomData,
        }
    }
}

impl<F, S, ReqBody> fmt::Debug for ResponseFuture<F, S, ReqBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, S, ReqBody, B, E> Future for ResponseFuture<F, S, ReqBody>
where
    F: Future<Output = Result<Response<B>, E>>,
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    type Output = Result<Response<ResumeBody<B, S, ReqBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let replay = this.replay.take().filter(|_| is_stream(&response));
        let (mut parts, body) = response.into_parts();
        let body = match replay {
            Some((replay, service)) => {
                this.metrics.stream();
                // For an outer `SseLayer`: how the stream ended, if resume gave up.
                let gave_up = GaveUp::default();
                parts.extensions.insert(gave_up.clone());
                let metrics = this.metrics.clone();
                ResumeBody::resume(body, service, replay, *this.config, metrics, gave_up)
            }
            None => ResumeBody::passthrough(body),
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}
