//! Upstreams: their URLs, the clients that reach them (http or https, HTTP/1.1 or HTTP/2), and
//! the forwarding of one request, with its timeouts, error answers and protocol upgrades.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::ServiceExt as _;
use tower_sse::{ResumeBody, ResumeService, SseOverride};

use crate::admin::Stats;
use crate::pool::{ConnectError, Connector, H2Error, H2Future, H2Pool, StreamGuard};

/// How long connecting to the upstream may take before the request gets a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How far `--unreachable-sse` answers move their `retry:` hint, either way: clients cut by the
/// same outage come back spread over a whole retry interval, not in the same millisecond.
const UNREACHABLE_RETRY_JITTER: f64 = 0.5;

/// An upstream base URL, split once at startup.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing `/` (often empty).
    base_path: String,
    /// The `Host` header the upstream gets.
    host: HeaderValue,
    /// The URL as given, for the logs.
    pub(crate) display: String,
    /// HTTP/2 to this upstream: h2c prior knowledge, or ALPN h2 over TLS.
    pub(crate) http2: bool,
    /// More CA certificates to trust (PEM), for https.
    pub(crate) ca_file: Option<PathBuf>,
}

impl Upstream {
    /// Parses an upstream base URL.
    ///
    /// # Errors
    ///
    /// A one-line message quoting the URL.
    pub(crate) fn parse(text: &str, http2: bool, ca_file: Option<PathBuf>) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|error| format!("invalid upstream URL `{text}`: {error}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => {
                return Err(format!(
                    "upstream `{text}` must start with http:// or https://"
                ));
            }
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err(format!("upstream `{text}` has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "upstream `{text}`: user info in the URL is not supported"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("upstream `{text}` must not have a query"));
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|error| format!("upstream `{text}`: {error}"))?;
        Ok(Self {
            scheme,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            authority,
            host,
            display: text.to_owned(),
            http2,
            ca_file,
        })
    }

    /// Whether the upstream is reached over TLS.
    pub(crate) fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The upstream URL for a request: the base path followed by the request's path and query.
    /// `None` for a target that is not a path (`*`, an authority).
    pub(crate) fn uri_for(&self, request: &Uri) -> Option<Uri> {
        let target = request.path_and_query().map_or("/", PathAndQuery::as_str);
        if !target.starts_with('/') {
            return None;
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{target}", self.base_path))
            .build()
            .ok()
    }
}

/// The body sent upstream: the client's, with its read errors marked as the client's fault and
/// its size bounded by the route's `max-body`, or none (the default, for a request the resume
/// layer sends again: only `GET` and `HEAD` without a body are).
#[derive(Debug, Default)]
pub(crate) enum UpBody {
    Client {
        body: Incoming,
        /// Bytes still allowed, `None` without a limit.
        left: Option<u64>,
        /// The limit, for the error.
        limit: u64,
    },
    #[default]
    Empty,
}

impl UpBody {
    /// The client's body, limited to `limit` bytes (`None`: no limit).
    fn client(body: Incoming, limit: Option<u64>) -> Self {
        Self::Client {
            body,
            left: limit,
            limit: limit.unwrap_or(u64::MAX),
        }
    }
}

impl http_body::Body for UpBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            Self::Client { body, left, limit } => {
                let frame = std::task::ready!(std::pin::Pin::new(body).poll_frame(cx));
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(error)) => {
                        return std::task::Poll::Ready(Some(Err(ClientBodyError::Read(error))));
                    }
                    None => return std::task::Poll::Ready(None),
                };
                if let (Some(left), Some(data)) = (left.as_mut(), frame.data_ref()) {
                    let size = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    match left.checked_sub(size) {
                        Some(still) => *left = still,
                        None => {
                            return std::task::Poll::Ready(Some(Err(ClientBodyError::TooLarge {
                                limit: *limit,
                            })));
                        }
                    }
                }
                std::task::Poll::Ready(Some(Ok(frame)))
            }
            Self::Empty => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Client { body, .. } => body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Client { body, .. } => body.size_hint(),
            Self::Empty => http_body::SizeHint::with_exact(0),
        }
    }
}

/// The client's request body failed: a malformed chunked body or a reset (answered with 400),
/// or more bytes than the route's `max-body` (413). Not the upstream's fault.
#[derive(Debug)]
pub(crate) enum ClientBodyError {
    Read(hyper::Error),
    TooLarge { limit: u64 },
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(error) => write!(f, "cannot read the request body: {error}"),
            Self::TooLarge { limit } => write!(f, "the request body is larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read(error) => Some(error),
            Self::TooLarge { .. } => None,
        }
    }
}

/// The client of an upstream: hyper-util's for HTTP/1.1, plain TCP for `http://`, rustls for
/// `https://`; the proxy's own pool of HTTP/2 connections ([`crate::pool`]) for HTTP/2. Two
/// HTTP/1.1 types rather than one https-or-http connector because every upstream connection
/// holds its stream inline, and a stream that may be TLS is as large as a TLS one: hyper's
/// HTTP/1.1 client connection over `MaybeHttpsStream` is 1,752 bytes, over a `TcpStream` 680, for
/// every proxied stream.
#[derive(Clone, Debug)]
pub(crate) enum HttpClient {
    Plain(Client<HttpConnector, UpBody>),
    Tls(Client<HttpsConnector<HttpConnector>, UpBody>),
    Http2(H2Pool),
}

impl tower::Service<Request<UpBody>> for HttpClient {
    type Response = Response<UpstreamBody>;
    type Error = UpstreamError;
    type Future = ResponseFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Both clients are always ready: they wait for a connection in their future.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<UpBody>) -> Self::Future {
        match self {
            Self::Plain(client) => ResponseFuture::Http1(client.request(request)),
            Self::Tls(client) => ResponseFuture::Http1(client.request(request)),
            Self::Http2(pool) => ResponseFuture::Http2(pool.send(request)),
        }
    }
}

/// The future of an upstream response: hyper-util's, or the HTTP/2 pool's (both boxed). Either
/// lives until the response head arrives, not for the stream.
pub(crate) enum ResponseFuture {
    Http1(hyper_util::client::legacy::ResponseFuture),
    Http2(H2Future),
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http1(_) => "ResponseFuture::Http1",
            Self::Http2(_) => "ResponseFuture::Http2",
        })
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<UpstreamBody>, UpstreamError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(match self.get_mut() {
            Self::Http1(future) => match std::task::ready!(std::pin::Pin::new(future).poll(cx)) {
                Ok(response) => Ok(response.map(|body| UpstreamBody { body, guard: None })),
                Err(error) => Err(UpstreamError::Http1(error)),
            },
            Self::Http2(future) => match std::task::ready!(future.as_mut().poll(cx)) {
                Ok((response, guard)) => {
                    Ok(response.map(|body| UpstreamBody::counted(body, guard)))
                }
                Err(H2Error::Connect(error)) => Err(UpstreamError::Connect(error)),
                Err(H2Error::Request(error)) => Err(UpstreamError::Http2(error)),
            },
        })
    }
}

/// The upstream's response body, with the count of its HTTP/2 stream ([`StreamGuard`], none on
/// HTTP/1.1), released when the body ends or fails, or is dropped.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    body: Incoming,
    guard: Option<StreamGuard>,
}

impl UpstreamBody {
    fn counted(body: Incoming, guard: StreamGuard) -> Self {
        // A response without a body (`HEAD`, 204, a bare end of stream) frees its stream now.
        let guard = (!http_body::Body::is_end_stream(&body)).then_some(guard);
        Self { body, guard }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.body).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) || this.body.is_end_stream() {
            this.guard = None;
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Why a request to the upstream failed: hyper-util's error (HTTP/1.1), or the HTTP/2 pool's.
/// Displayed as the error it holds; [`Self::inner`] gives that error, to look through its
/// sources.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    Http1(hyper_util::client::legacy::Error),
    /// No HTTP/2 connection could be opened.
    Connect(ConnectError),
    Http2(hyper::Error),
}

impl UpstreamError {
    /// Whether connecting failed: the upstream saw nothing of the request.
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            Self::Http1(error) => error.is_connect(),
            Self::Connect(_) => true,
            Self::Http2(_) => false,
        }
    }

    /// The error this one holds.
    pub(crate) fn inner(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            Self::Http1(error) => error,
            Self::Connect(error) => error,
            Self::Http2(error) => error,
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.inner(), f)
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner().source()
    }
}

/// Builds the client of an upstream: plain or TLS (with the built-in roots and its CA file),
/// HTTP/2 (at most `h2_max_streams` streams per connection, connections counted in `stats`)
/// or not.
///
/// # Errors
///
/// The CA file cannot be read or holds no certificate.
pub(crate) fn client_for(
    upstream: &Upstream,
    h2_max_streams: u32,
    stats: &Stats,
) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    if upstream.http2 {
        let connector = if upstream.is_https() {
            let tls = crate::tls::client_config(upstream.ca_file.as_deref(), true)?;
            http.enforce_http(false);
            // ALPN h2 only.
            Connector::Tls(
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only()
                    .enable_http2()
                    .wrap_connector(http),
            )
        } else {
            Connector::Plain(http)
        };
        return Ok(HttpClient::Http2(H2Pool::new(
            connector,
            h2_max_streams,
            stats.clone(),
        )));
    }
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if !upstream.is_https() {
        return Ok(HttpClient::Plain(client.build(http)));
    }
    let tls = crate::tls::client_config(upstream.ca_file.as_deref(), false)?;
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(HttpClient::Tls(client.build(connector)))
}

/// The client of an upstream behind the resume layer (with zero attempts when the route has
/// resume off: every response then passes through as is).
pub(crate) type ResumeClient = ResumeService<HttpClient>;

/// The upstream's body (through the resume layer), or the proxy's own short answer (400, 502,
/// 504, the empty event stream of `--unreachable-sse`).
pub(crate) type ProxyBody = Either<ResumeBody<UpstreamBody, HttpClient, UpBody>, Full<Bytes>>;

/// The client's address, put in the request's extensions by the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Whether the client reached the proxy over TLS (for `X-Forwarded-Proto`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientTls(pub(crate) bool);

/// What forwarding one request needs: the route's upstream and its client, its settings.
#[derive(Clone, Debug)]
pub(crate) struct Forward {
    pub(crate) client: ResumeClient,
    pub(crate) upstream: std::sync::Arc<Upstream>,
    /// The route's `--unreachable-sse` retry hint, `None` when off.
    pub(crate) unreachable: Option<Duration>,
    /// The route's response-head timeout, `None` when off.
    pub(crate) response_timeout: Option<Duration>,
    /// The route's request body limit in bytes, `None` when off.
    pub(crate) max_body: Option<u64>,
    pub(crate) route: std::sync::Arc<str>,
    pub(crate) stats: Stats,
}

impl Forward {
    /// Forwards `request` to the upstream and answers with its response or the proxy's own.
    pub(crate) async fn call(self, request: Request<Incoming>) -> Response<ProxyBody> {
        let response = self.forward(request).await;
        self.stats.request(&self.route, response.status());
        response
    }

    async fn forward(&self, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let version = request.version();
        // Decided now: the request (and its `Accept`) goes to the client below.
        let unreachable = self
            .unreachable
            .filter(|_| tower_sse::asks_for_event_stream(request.headers()));
        let peer = request.extensions().get::<ClientAddr>().map(|addr| addr.0);
        let tls = request
            .extensions()
            .get::<ClientTls>()
            .is_some_and(|tls| tls.0);
        let Some(uri) = self.upstream.uri_for(request.uri()) else {
            return plain(StatusCode::BAD_REQUEST, "bad request target\n", version);
        };
        // A declared length over the limit is refused before anything is sent upstream (a
        // chunked or HTTP/2 body is counted as it streams, see `UpBody`).
        if let Some(limit) = self.max_body
            && http_body::Body::size_hint(request.body()).lower() > limit
        {
            return too_large(limit, version);
        }
        let upgrade = upgrade_protocol(&request);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
        let wants_trailers = request
            .headers()
            .get_all(header::TE)
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"));

        *request.uri_mut() = uri;
        *request.version_mut() = if self.upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let headers = request.headers_mut();
        remove_hop_by_hop(headers);
        headers.insert(header::HOST, self.upstream.host.clone());
        if let Some(peer) = peer {
            append_forwarded_for(headers, peer);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
        if let Some(protocol) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        // gRPC over HTTP/2 needs `te: trailers`, the one TE value HTTP/2 allows.
        if wants_trailers && self.upstream.http2 {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if self.upstream.http2 {
            headers.remove(header::HOST);
        }

        let request = request.map(|body| UpBody::client(body, self.max_body));
        let sent = self.client.clone().oneshot(request);
        let result = match self.response_timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(result) => result,
                Err(_) => return self.timed_out(limit, unreachable, version),
            },
            None => sent.await,
        };
        let mut response = match result {
            Ok(response) => response,
            Err(error) => return self.failed(&error, unreachable, version),
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let (Some(protocol), Some(client_upgrade)) = (upgrade, client_upgrade)
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let route = std::sync::Arc::clone(&self.route);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                            Ok((up, down)) => tracing::debug!(
                                %route, bytes_up = up, bytes_down = down, "upgraded connection closed"
                            ),
                            Err(error) => {
                                tracing::debug!(%route, %error, "upgraded connection ended")
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%route, %error, "upgrade failed"),
                }
            });
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
            parts.version = version;
            return Response::from_parts(parts, Either::Left(body));
        }

        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        // Answer in the client's protocol version, not the upstream's.
        parts.version = version;
        Response::from_parts(parts, Either::Left(body))
    }

    fn timed_out(
        &self,
        limit: Duration,
        unreachable: Option<Duration>,
        version: Version,
    ) -> Response<ProxyBody> {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.stats.upstream_error(&self.route, "response_timeout");
        if let Some(retry) = unreachable {
            tracing::warn!(
                limit_ms,
                retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
                "upstream sent no response head in time: answered the event-stream request \
                 with 200, a retry hint jittered by up to 50% and a clean end"
            );
            return unreachable_event_stream(retry, version);
        }
        tracing::warn!(limit_ms, "upstream sent no response head in time");
        plain_owned(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "504 gateway timeout: the upstream sent no response within {}\n",
                humantime::format_duration(limit)
            ),
            version,
        )
    }

    fn failed(
        &self,
        error: &UpstreamError,
        unreachable: Option<Duration>,
        version: Version,
    ) -> Response<ProxyBody> {
        let is_connect = error.is_connect();
        let error = error.inner();
        // The client's own body failed: its fault, 400 (or 413 past the limit).
        match find::<ClientBodyError>(error) {
            Some(ClientBodyError::TooLarge { limit }) => return too_large(*limit, version),
            Some(body_error) => {
                self.stats.upstream_error(&self.route, "client_body");
                tracing::info!(error = %body_error, "bad request body");
                return plain_owned(
                    StatusCode::BAD_REQUEST,
                    format!("400 bad request: {body_error}\n"),
                    version,
                );
            }
            None => {}
        }
        // A non-200 status makes `EventSource` stop reconnecting for good, so with
        // `--unreachable-sse` a request asking for `text/event-stream` whose upstream cannot be
        // reached gets `200 text/event-stream`, a jittered `retry:` and a clean end instead
        // (docs/rules.md, "HTTP rules"). Only after a connect error, when the upstream saw
        // nothing of the request.
        if is_connect {
            self.stats.upstream_error(&self.route, "connect");
            if let Some(retry) = unreachable {
                tracing::warn!(
                    error = %DisplayChain(error),
                    retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
                    "upstream unreachable: answered the event-stream request with 200, a \
                     retry hint jittered by up to 50% and a clean end"
                );
                return unreachable_event_stream(retry, version);
            }
            tracing::warn!(error = %DisplayChain(error), "upstream request failed");
            return plain(
                StatusCode::BAD_GATEWAY,
                "502 bad gateway: upstream unreachable\n",
                version,
            );
        }
        tracing::warn!(error = %DisplayChain(error), "upstream request failed");
        let reason = match find::<hyper::Error>(error) {
            Some(hyper) if hyper.is_parse() || hyper.is_parse_status() => {
                self.stats.upstream_error(&self.route, "invalid_response");
                format!("the upstream sent an invalid response head ({hyper})")
            }
            Some(hyper) if hyper.is_incomplete_message() => {
                self.stats.upstream_error(&self.route, "closed");
                "the upstream closed the connection before a complete response head".to_owned()
            }
            _ => {
                self.stats.upstream_error(&self.route, "other");
                format!("the upstream request failed ({})", DisplayChain(error))
            }
        };
        plain_owned(
            StatusCode::BAD_GATEWAY,
            format!("502 bad gateway: {reason}\n"),
            version,
        )
    }
}

/// The first error of type `E` in `error`'s chain.
fn find<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` and `Upgrade`).
fn upgrade_protocol(request: &Request<Incoming>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let connection_upgrade = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    connection_upgrade
        .then(|| request.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// The `--unreachable-sse` answer: `200 text/event-stream` with an empty body and an
/// [`SseOverride`] for it. The route's layer writes the body's only line, `retry: N` with `N`
/// the route's retry moved by up to ±50 %, adds `X-Accel-Buffering: no` and ends the body
/// cleanly.
pub(crate) fn unreachable_event_stream(retry: Duration, version: Version) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::default()));
    *response.version_mut() = version;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    response.extensions_mut().insert(
        SseOverride::new()
            .retry(retry)
            .retry_jitter(UNREACHABLE_RETRY_JITTER)
            .no_heartbeat(),
    );
    response
}

/// The answer to a request body over the route's `max-body`: 413 (like nginx's
/// `client_max_body_size`), with `Connection: close` on HTTP/1.1 since the rest of the body is
/// not read.
fn too_large(limit: u64, version: Version) -> Response<ProxyBody> {
    tracing::info!(limit, "request body too large");
    let mut response = plain_owned(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("413 content too large: the request body is larger than {limit} bytes\n"),
        version,
    );
    if version == Version::HTTP_11 || version == Version::HTTP_10 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A short plain-text answer of the proxy's own.
pub(crate) fn plain(
    status: StatusCode,
    text: &'static str,
    version: Version,
) -> Response<ProxyBody> {
    plain_bytes(status, Bytes::from_static(text.as_bytes()), version)
}

fn plain_owned(status: StatusCode, text: String, version: Version) -> Response<ProxyBody> {
    plain_bytes(status, Bytes::from(text), version)
}

fn plain_bytes(status: StatusCode, text: Bytes, version: Version) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(text)));
    *response.status_mut() = status;
    *response.version_mut() = version;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1), besides those
/// `Connection` lists.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers: those `Connection` lists, then the fixed set.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in listed.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Appends the client's address to `X-Forwarded-For` (one header, comma-separated).
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let mut value = Vec::new();
    for previous in headers.get_all(&X_FORWARDED_FOR) {
        let previous = previous.as_bytes().trim_ascii();
        if !previous.is_empty() {
            value.extend_from_slice(previous);
            value.extend_from_slice(b", ");
        }
    }
    value.extend_from_slice(ip.as_bytes());
    let value = HeaderValue::from_bytes(&value)
        .or_else(|_| HeaderValue::from_str(&ip))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    headers.insert(X_FORWARDED_FOR, value);
}

/// Formats an error with its sources (`connect error: Connection refused (os error 111)`).
pub(crate) struct DisplayChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn the_request_target_is_appended_to_the_base_url() {
        let root = Upstream::parse("http://127.0.0.1:9000", false, None).unwrap();
        let based = Upstream::parse("https://example.test/api/", false, None).unwrap();
        let target: Uri = "/events?topic=a&b".parse().unwrap();
        assert_eq!(
            root.uri_for(&target).unwrap(),
            "http://127.0.0.1:9000/events?topic=a&b"
        );
        assert_eq!(
            based.uri_for(&target).unwrap(),
            "https://example.test/api/events?topic=a&b"
        );
        let absolute: Uri = "http://elsewhere/x?y".parse().unwrap();
        assert_eq!(
            root.uri_for(&absolute).unwrap(),
            "http://127.0.0.1:9000/x?y"
        );
        assert_eq!(root.host, "127.0.0.1:9000");
        assert!(root.uri_for(&"*".parse().unwrap()).is_none());
    }

    #[test]
    fn bad_upstream_urls_are_errors() {
        for (text, expected) in [
            ("u:1", "must start with http:// or https://"),
            ("ftp://u:1", "must start with"),
            ("http://a@u:1", "user info"),
            ("http://u:1/?x=1", "must not have a query"),
            ("http:// bad", "invalid upstream URL"),
        ] {
            let error = Upstream::parse(text, false, None).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_lists_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret ,close"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("last-event-id", "42"),
            ("cache-control", "no-cache"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["cache-control", "last-event-id"]);
    }

    #[test]
    fn the_client_address_is_appended_to_x_forwarded_for() {
        let peer = SocketAddr::from(([10, 0, 0, 7], 5555));
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, peer);
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.7");

        let mut headers = HeaderMap::new();
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.1"));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2 "));
        append_forwarded_for(&mut headers, peer);
        assert_eq!(
            headers.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["203.0.113.1, 198.51.100.2, 10.0.0.7"]
        );
    }
}
