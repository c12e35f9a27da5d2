//! [`SseService`]: the middleware service.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::ACCEPT_ENCODING;
use http::{HeaderValue, Method, Request, Response};
use tower_service::Service;

use crate::backpressure::{Buffering, Unbuffered};
use crate::body::SseBody;
use crate::compress::negotiate;
use crate::config::Config;
use crate::detect::asks_for_event_stream;
use crate::future::ResponseFuture;
use crate::macros::define_inner_service_accessors;

/// Middleware that makes `text/event-stream` responses survive proxies, compressors, load
/// balancers, slow clients and shutdowns, and leaves every other response untouched.
///
/// Created by [`SseLayer`](crate::SseLayer), or with [`SseService::new`] for the defaults.
/// On a request whose `Accept` lists `text/event-stream`, `Accept-Encoding` toward the inner
/// service becomes `identity`; `Last-Event-ID`, `Accept` and `Cache-Control` pass unchanged.
///
/// See the [module docs](crate) for an example.
pub struct SseService<S, M = Unbuffered> {
    inner: S,
    config: Arc<Config>,
    mode: PhantomData<fn() -> M>,
}

impl<S> SseService<S> {
    /// Creates a new [`SseService`] around `inner` with the default configuration.
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Arc::new(Config::default()))
    }
}

impl<S, M> SseService<S, M> {
    pub(crate) const fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self {
            inner,
            config,
            mode: PhantomData,
        }
    }

    define_inner_service_accessors!();
}

impl<S: Clone, M> Clone for SseService<S, M> {
    fn clone(&self) -> Self {
        Self::from_config(self.inner.clone(), Arc::clone(&self.config))
    }
}

impl<S: fmt::Debug, M> fmt::Debug for SseService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for SseService<S, M>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    M: Buffering<ResBody>,
{
    type Response = Response<SseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let version = request.version();
        // The client's own `Accept-Encoding`, read before it becomes `identity` below.
        let coding = self
            .config
            .compression
            .as_ref()
            .and_then(|compression| negotiate(request.headers(), compression.codings()));
        if asks_for_event_stream(request.headers()) {
            let draining = self
                .config
                .shutdown
                .as_ref()
                .is_some_and(crate::SseShutdown::is_draining);
            if draining {
                return ResponseFuture::drained(Arc::clone(&self.config), version);
            }
            if self.config.bypass_compression {
                request
                    .headers_mut()
                    .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            }
        }
        let head = request.method() == Method::HEAD;
        ResponseFuture::new(
            self.inner.call(request),
            Arc::clone(&self.config),
            version,
            head,
            coding,
        )
    }
}
