//! [`SseLayer`]: the configuration and the builder.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::backpressure::{Buffered, SlowClient, Unbuffered};
use crate::config::{Change, Config, clamp_fraction, non_zero};
use crate::error::{InvalidComment, check_comment};
use crate::inject;
use crate::macros::stream_options;
use crate::metrics::SseMetrics;
use crate::scanner::LineEnd;
use crate::service::SseService;
use crate::shutdown::SseShutdown;

/// Applies [`SseService`] to a service: event streams get anti-buffering headers, a compression
/// bypass, a `retry:` hint, idle heartbeats, optional idle timeout, lifetime and graceful drain;
/// every other response passes through untouched.
///
/// The layer is cheap to clone (its configuration sits behind an [`Arc`]): build one per route
/// with the options that route needs. A handler can change the options for one response with an
/// [`SseOverride`](crate::SseOverride) in the response extensions.
///
/// | option | default |
/// |---|---|
/// | [`heartbeat`](Self::heartbeat) | 15 s, comment `:` |
/// | [`retry`](Self::retry) | 3 s, no jitter |
/// | [`initial comment`](Self::try_initial_comment) | none |
/// | [`idle_timeout`](Self::idle_timeout) | off |
/// | [`max_lifetime`](Self::max_lifetime) | off (jitter 20 %) |
/// | [`close_grace`](Self::close_grace) | 5 s |
/// | [`shutdown`](Self::shutdown) | none (drain window 10 s) |
/// | [`compression bypass`](Self::no_compression_bypass) | on |
/// | [`compress`](Self::compress) | off (features `gzip`, `br`, `zstd`) |
/// | [`slow_client`](Self::slow_client) | off (1 MiB, 10 s, `Disconnect` when on) |
///
/// # Examples
///
/// Heartbeats on an upstream that never sends anything:
///
/// ```
/// use std::{convert::Infallible, time::Duration};
/// use bytes::Bytes;
/// use http::{header, Request, Response};
/// use http_body::Frame;
/// use http_body_util::{BodyExt, Full, StreamBody};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::SseLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let service = ServiceBuilder::new()
///     .layer(SseLayer::new().heartbeat(Duration::from_secs(5)).no_retry())
///     .service_fn(|_: Request<Full<Bytes>>| async {
///         // An upstream that never sends anything.
///         let silent = StreamBody::new(tokio_stream::pending::<Result<Frame<Bytes>, Infallible>>());
///         let mut response = Response::new(silent);
///         response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
///         Ok::<_, Infallible>(response)
///     });
///
/// let mut body = service.oneshot(Request::new(Full::default())).await.unwrap().into_body();
/// let started = tokio::time::Instant::now();
/// let frame = body.frame().await.unwrap().unwrap();
/// assert_eq!(frame.into_data().unwrap(), ":\n");
/// assert_eq!(started.elapsed(), Duration::from_secs(5));
/// # }
/// ```
///
/// The `retry:` hint goes first; a leading byte-order mark of the upstream's is then removed (it
/// would no longer be the stream's first bytes):
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{header, Request, Response};
/// use http_body_util::{BodyExt, Full};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::SseLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ServiceBuilder::new()
///     .layer(SseLayer::new().retry(Duration::from_millis(1500)))
///     .service_fn(|_: Request<Full<Bytes>>| async {
///         // The upstream starts with a byte-order mark.
///         let mut response = Response::new(Full::<Bytes>::from("\u{feff}data: 1\n\n"));
///         response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
///         Ok::<_, std::convert::Infallible>(response)
///     });
/// let body = service.oneshot(Request::new(Full::default())).await.unwrap().into_body();
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "retry: 1500\ndata: 1\n\n");
/// # }
/// ```
///
/// An idle timeout ends a silent stream cleanly, with a last hint; heartbeats do not count as
/// upstream activity:
///
/// ```
/// use std::{convert::Infallible, time::Duration};
/// use bytes::Bytes;
/// use http::{header, Request, Response};
/// use http_body::Frame;
/// use http_body_util::{BodyExt, Full, StreamBody};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::SseLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let layer = SseLayer::new()
///     .idle_timeout(Duration::from_secs(60))
///     .heartbeat(Duration::from_secs(15))
///     .retry(Duration::from_secs(1));
/// let service = ServiceBuilder::new().layer(layer).service_fn(|_: Request<Full<Bytes>>| async {
///     let silent = StreamBody::new(tokio_stream::pending::<Result<Frame<Bytes>, Infallible>>());
///     let mut response = Response::new(silent);
///     response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
///     Ok::<_, Infallible>(response)
/// });
/// let body = service.oneshot(Request::new(Full::default())).await.unwrap().into_body();
/// let bytes = body.collect().await.unwrap().to_bytes();
/// // Three heartbeats (15, 30, 45 s), then the end at 60 s with a last hint.
/// assert_eq!(bytes, "retry: 1000\n:\n:\n:\nretry: 1000\n");
/// # }
/// ```
///
/// See the [module docs](crate) for an example.
#[derive(Debug, Clone)]
#[must_use]
pub struct SseLayer<M = Unbuffered> {
    config: Arc<Config>,
    mode: PhantomData<fn() -> M>,
}

impl Default for SseLayer {
    fn default() -> Self {
        Self {
            config: Arc::default(),
            mode: PhantomData,
        }
    }
}

impl SseLayer {
    /// Creates a new [`SseLayer`] with the default configuration.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{header, Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_sse::SseLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new())
    ///     .service_fn(|_: Request<Full<Bytes>>| async {
    ///         let mut response = Response::new(Full::<Bytes>::from("data: hello\n\n"));
    ///         response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    ///         Ok::<_, std::convert::Infallible>(response)
    ///     });
    ///
    /// let response = service.oneshot(Request::new(Full::default())).await.unwrap();
    /// assert_eq!(response.headers()["cache-control"], "no-cache, no-transform");
    /// assert_eq!(response.headers()["x-accel-buffering"], "no");
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, "retry: 3000\ndata: hello\n\n");
    /// # }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
}

impl<M> SseLayer<M> {
    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    fn change(mut self, change: Change) -> Self {
        change.apply(&mut self.config().settings);
        self
    }

    stream_options!("SseLayer");

    /// Sets the text of heartbeat comments: each heartbeat is `:` + `text` + a line ending.
    ///
    /// Default: empty (a heartbeat is the two bytes `:\n`).
    ///
    /// # Errors
    ///
    /// [`InvalidComment`] when `text` contains CR or LF.
    ///
    /// ```
    /// use tower_sse::SseLayer;
    ///
    /// let layer = SseLayer::new().try_heartbeat_comment(" ping")?;
    /// assert!(SseLayer::new().try_heartbeat_comment("a\nb").is_err());
    /// # Ok::<_, tower_sse::InvalidComment>(())
    /// ```
    pub fn try_heartbeat_comment(mut self, text: impl AsRef<str>) -> Result<Self, InvalidComment> {
        let text = text.as_ref();
        check_comment(text)?;
        let config = self.config();
        config.heartbeat_lf = inject::comment_line(text, LineEnd::Lf);
        config.heartbeat_cr = inject::comment_line(text, LineEnd::Cr);
        Ok(self)
    }

    /// Lets a heartbeat go out up to `slack` after it falls due, so that the heartbeats of idle
    /// streams falling due within the same `slack` go out together: one wake-up of the runtime
    /// for all of them instead of one for every few streams.
    ///
    /// A heartbeat falls due the [heartbeat interval](Self::heartbeat) after the last byte
    /// that went to the client, and goes out at the next multiple of `slack` on a grid that every
    /// stream of the tokio runtime shares: never before it falls due, at most `slack` after (plus
    /// the time the runtime takes to poll the stream). An idle stream then keeps the grid: a
    /// heartbeat polled less than `slack` after the grid instant it was set for counts from that
    /// instant, so its heartbeats are the interval apart, rounded up to a multiple of `slack`,
    /// and the schedule does not slip by the polling delay; one polled later than that (an
    /// overloaded runtime) counts from when it went out, so heartbeats never come in a burst to
    /// catch up. Traffic moves the next heartbeat as before; idle timeout, lifetime and drain
    /// deadlines are not moved. The [slow-client](Self::slow_client) stall timer of a stream with
    /// heartbeats waits on the same grid: a stalled client is found at most `slack` after its
    /// [timeout](crate::SlowClient::timeout), never before.
    ///
    /// Default: a tenth of the heartbeat interval, at most 1 s (1 s for the default 15 s, so
    /// heartbeats come 15 to 16 s after the last byte, well within the 30–100 s idle limits of
    /// common proxies). `Duration::ZERO` sends each heartbeat as soon as it falls due (within
    /// the timer's 1 ms).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::SseLayer;
    ///
    /// // A heartbeat every 20 s after the last byte, sent with those of other streams due
    /// // within the same 2 s.
    /// let layer = SseLayer::new()
    ///     .heartbeat(Duration::from_secs(20))
    ///     .heartbeat_slack(Duration::from_secs(2));
    /// // Each heartbeat exactly when it falls due.
    /// let exact = SseLayer::new().heartbeat_slack(Duration::ZERO);
    /// # drop((layer, exact));
    /// ```
    pub fn heartbeat_slack(mut self, slack: Duration) -> Self {
        self.config().heartbeat_slack = Some(slack);
        self
    }

    /// Writes the comment `:` + `text` as the very first bytes of every stream, so that stacks
    /// holding the headers until the first body byte start the stream at once.
    ///
    /// Default: none.
    ///
    /// # Errors
    ///
    /// [`InvalidComment`] when `text` contains CR or LF.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{header, Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_sse::SseLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new().no_retry().try_initial_comment(" welcome")?)
    ///     .service_fn(|_: Request<Full<Bytes>>| async {
    ///         let mut response = Response::new(Full::<Bytes>::from("data: 1\n\n"));
    ///         response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    ///         Ok::<_, std::convert::Infallible>(response)
    ///     });
    /// let body = service.oneshot(Request::new(Full::default())).await?.into_body();
    /// assert_eq!(body.collect().await?.to_bytes(), ": welcome\ndata: 1\n\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_initial_comment(mut self, text: impl AsRef<str>) -> Result<Self, InvalidComment> {
        let text = text.as_ref();
        check_comment(text)?;
        self.config().initial_comment = Some(inject::comment_line(text, LineEnd::Lf));
        Ok(self)
    }

    /// Ends every live stream when `shutdown` is [drained](SseShutdown::drain), spread over the
    /// [drain window](Self::drain_window).
    ///
    /// Default: none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use http::{header, Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_sse::{SseLayer, SseShutdown};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let shutdown = SseShutdown::new();
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new().shutdown(shutdown.clone()).retry(Duration::from_secs(2)))
    ///     .service_fn(|_: Request<Full<Bytes>>| async {
    ///         let mut response = Response::new(Full::<Bytes>::from("data: 1\n\n"));
    ///         response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    ///         Ok::<_, std::convert::Infallible>(response)
    ///     });
    ///
    /// shutdown.drain();
    /// // A request for an event stream during the drain: 200, a jittered hint, the end.
    /// let request = Request::builder()
    ///     .header(header::ACCEPT, "text/event-stream")
    ///     .body(Full::default())
    ///     .unwrap();
    /// let response = service.oneshot(request).await.unwrap();
    /// assert_eq!(response.status(), 200);
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert!(body.starts_with(b"retry: ") && body.ends_with(b"\n"));
    /// # }
    /// ```
    pub fn shutdown(mut self, shutdown: SseShutdown) -> Self {
        self.config().shutdown = Some(shutdown);
        self
    }

    /// Counts into `metrics` instead of the layer's own counters, so that several layers (one
    /// per route) can share one handle.
    ///
    /// Default: a handle of the layer's own.
    ///
    /// ```
    /// use tower_sse::{SseLayer, SseMetrics};
    ///
    /// let metrics = SseMetrics::new();
    /// let fast = SseLayer::new().metrics(metrics.clone());
    /// let slow = SseLayer::new().metrics(metrics.clone());
    /// assert_eq!(metrics.snapshot().open_streams, 0);
    /// # drop((fast, slow));
    /// ```
    pub fn metrics(mut self, metrics: SseMetrics) -> Self {
        self.config().metrics = metrics;
        self
    }

    /// The handle to this layer's counters.
    ///
    /// ```
    /// use tower_sse::SseLayer;
    ///
    /// let layer = SseLayer::new();
    /// let metrics = layer.metrics_handle();
    /// assert_eq!(metrics.snapshot().opened, 0);
    /// ```
    pub fn metrics_handle(&self) -> SseMetrics {
        self.config.metrics.clone()
    }

    /// Leaves `Accept-Encoding` alone on requests for event streams.
    ///
    /// By default, a request whose `Accept` lists `text/event-stream` reaches the inner service
    /// with `Accept-Encoding: identity`, so that inner compressors and upstream servers send plain
    /// text the layer can read (and that no compressor holds back). An event stream that arrives
    /// compressed anyway is passed through untouched, with a `tracing` warning, without
    /// heartbeats or retry hints.
    ///
    /// ```
    /// use tower_sse::SseLayer;
    ///
    /// let layer = SseLayer::new().no_compression_bypass();
    /// # drop(layer);
    /// ```
    pub fn no_compression_bypass(mut self) -> Self {
        self.config().bypass_compression = false;
        self
    }

    /// Compresses event streams itself, with the coding negotiated from the client's
    /// `Accept-Encoding`, without ever delaying an event: the encoder is sync-flushed whenever
    /// the stream is about to wait (the inner body is pending, after a heartbeat or a `retry:`
    /// line) and finished before the end, so every byte the client has received decodes at once.
    ///
    /// The inner service is still asked for identity (the layer reads the stream's lines); the
    /// layer encodes its own output, injected lines included, and sets `Content-Encoding` and
    /// `Vary: Accept-Encoding`. No acceptable coding: identity, as without this option. An
    /// event stream that arrives encoded anyway passes through as it is. With
    /// [`slow_client`](Self::slow_client), events are buffered plain and compressed on the way
    /// out.
    ///
    /// Each coding is compiled in by its cargo feature (`gzip`, `br`, `zstd`); the encoders'
    /// defaults are chosen for many streams (see the [`compress` module](crate::compress) for
    /// what they cost per stream). Turn it on where bandwidth matters more than some CPU and
    /// memory per stream: JSON events compress several times over.
    ///
    /// Default: off.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{header, Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{ServiceBuilder, ServiceExt};
    /// use tower_sse::{Coding, Compression, SseLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let service = ServiceBuilder::new()
    ///     .layer(SseLayer::new().no_retry().compress(Compression::new()))
    ///     .service_fn(|request: Request<Full<Bytes>>| async move {
    ///         // The inner service is asked for identity.
    ///         assert_eq!(request.headers()[header::ACCEPT_ENCODING], "identity");
    ///         let mut response = Response::new(Full::<Bytes>::from("data: hello\n\n"));
    ///         response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    ///         Ok::<_, std::convert::Infallible>(response)
    ///     });
    ///
    /// let request = Request::builder()
    ///     .header(header::ACCEPT, "text/event-stream")
    ///     .header(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")
    ///     .body(Full::default())
    ///     .unwrap();
    /// let response = service.oneshot(request).await.unwrap();
    /// assert_eq!(response.headers()[header::VARY], "accept-encoding");
    /// assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache, no-transform");
    /// // Equal q-values: the first coding compiled in, in the default order zstd, gzip
    /// // (br is offered only when named in `Compression::order`).
    /// let preferred = [Coding::Zstd, Coding::Gzip].into_iter().find(|c| c.is_available());
    /// assert_eq!(
    ///     response.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap()),
    ///     preferred.map(Coding::as_str),
    /// );
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// if Coding::Zstd.is_available() {
    ///     // zstd's frame magic number, then the compressed event.
    ///     assert!(body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
    /// } else if !Coding::Gzip.is_available() {
    ///     // No coding compiled in: identity.
    ///     assert_eq!(body, "data: hello\n\n");
    /// }
    /// # }
    /// ```
    pub fn compress(mut self, compression: crate::Compression) -> Self {
        self.config().compression = Some(compression);
        self
    }

    /// Puts a byte-bounded buffer, filled by a task of its own, between each event stream's
    /// inner body and the client, and ends streams whose client stops reading: see the
    /// [`backpressure` module](crate::backpressure) and [`SlowClient`].
    ///
    /// Event-stream bodies must then be `Send + 'static`: the layer's type becomes
    /// `SseLayer<Buffered>`. Default: off (nothing is spawned). On an `SseLayer<Buffered>`,
    /// [`no_slow_client`](SseLayer::no_slow_client) turns it off again without changing the type.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::{SlowClient, SlowClientPolicy, SseLayer};
    ///
    /// let layer = SseLayer::new().slow_client(
    ///     SlowClient::new()
    ///         .max_buffer(1024 * 1024)
    ///         .timeout(Duration::from_secs(10))
    ///         .policy(SlowClientPolicy::DropOldest),
    /// );
    /// # drop(layer);
    /// ```
    pub fn slow_client(mut self, slow: SlowClient) -> SseLayer<Buffered> {
        self.config().slow_client = Some(slow);
        SseLayer {
            config: self.config,
            mode: PhantomData,
        }
    }
}

impl SseLayer<Buffered> {
    /// Turns the slow-client buffer off for this layer while keeping the type
    /// `SseLayer<Buffered>`: event streams are polled directly, nothing is spawned.
    ///
    /// The type parameter says what a layer *may* do (spawn a pump, which needs `Send + 'static`
    /// bodies); whether it does is this layer's configuration, stored once. So routes with and
    /// without a buffer can share one service type, without boxing (a reverse proxy with
    /// per-route settings does this).
    ///
    /// ```
    /// use tower_sse::{Buffered, SlowClient, SseLayer};
    ///
    /// let buffered: SseLayer<Buffered> = SseLayer::new().slow_client(SlowClient::new());
    /// let direct: SseLayer<Buffered> = buffered.clone().no_slow_client();
    /// let routes = [buffered, direct];
    /// assert!(routes[0].has_slow_client() && !routes[1].has_slow_client());
    /// ```
    pub fn no_slow_client(mut self) -> Self {
        self.config().slow_client = None;
        self
    }
}

impl<M> SseLayer<M> {
    /// Whether event streams go through a slow-client buffer (see
    /// [`slow_client`](Self::slow_client)).
    #[must_use]
    pub fn has_slow_client(&self) -> bool {
        self.config.slow_client.is_some()
    }
}

impl<S, M> Layer<S> for SseLayer<M> {
    type Service = SseService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        SseService::from_config(inner, Arc::clone(&self.config))
    }
}
