//! Run with: cargo run --release --example proxy -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9000
//!
//! Then: curl -N -H 'Accept: text/event-stream' http://127.0.0.1:8080/events
//!
//! A reverse proxy with [`SseLayer`] in front: every request is forwarded to one HTTP/1.1
//! upstream, and every `text/event-stream` response coming back gets the layer's treatment
//! (anti-buffering headers, a `retry:` hint, heartbeats while idle, optional idle timeout and
//! maximum lifetime, and a staggered drain on shutdown). Every other response (JSON, gzip,
//! errors, 204s) passes through untouched.
//!
//! What it does, in order:
//!
//! - serves HTTP/1.1 and HTTP/2 without TLS (h2c, prior knowledge) with hyper-util's `auto`
//!   connection builder;
//! - forwards each request to `UPSTREAM` + the request's path and query, streaming the request
//!   body up and the response body down (nothing is buffered), with `Host` rewritten to the
//!   upstream's, `X-Forwarded-For` / `X-Forwarded-Proto` added, hop-by-hop headers (`Connection`
//!   and the headers it lists, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`) removed in both directions, and every other header
//!   (`Last-Event-ID`, `Accept`, `Cache-Control`, ...) forwarded as is. Because the layer turns
//!   `Accept-Encoding` into `identity` on requests asking for `text/event-stream`, the upstream
//!   sends event streams uncompressed, so heartbeats and hints can be added;
//! - answers `502 Bad Gateway` (plain text) when the upstream cannot be reached; or, with
//!   `--unreachable-sse` (globally or per route), answers a request that asks for
//!   `text/event-stream` with `200 text/event-stream`, a `retry:` hint jittered by ±50 % and a
//!   clean end, because any non-200 status makes `EventSource` stop reconnecting for good;
//! - on Ctrl-C or SIGTERM: stops accepting, drains every event stream over the drain window
//!   (each stream ends at its own moment, at an event boundary, with a `retry:` hint, so clients
//!   reconnect elsewhere at staggered times), lets other responses finish, and exits with 0;
//! - optionally puts a slow-client buffer in front of each event stream (`--max-buffer`,
//!   `--slow-client-timeout`, `--slow-client-policy`): a client that stops reading no longer holds
//!   up the upstream, and is disconnected after the timeout;
//! - applies other settings to some paths (`--route /llm/=heartbeat:5s,retry:1s`): the longest
//!   matching path prefix picks the route, which inherits the global flags and overrides what it
//!   names. All routes share one drain and one set of counters;
//! - logs one line when an event stream opens and one when it closes (with the reason, duration,
//!   bytes, events and heartbeats), on stderr. `RUST_LOG` overrides the default filter
//!   `info,tower_sse=debug`.
//!
//! The first line on stdout is `listening on http://ADDR, proxying to URL` (with the port
//! actually bound, so `--listen 127.0.0.1:0` works). Exit codes: 0 after a clean shutdown, 1 when
//! the address cannot be bound, 2 for bad arguments (with the usage on stderr).
//!
//! Not handled, on purpose, to keep the example short: TLS (to clients or to the upstream: add
//! `hyper-rustls`), protocol upgrades (`Upgrade` is a hop-by-hop header and is removed, so
//! WebSockets are not proxied), several upstreams or load balancing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};
use tower_sse::{
    SlowClient, SlowClientPolicy, SseBody, SseLayer, SseMetrics, SseOverride, SseShutdown,
};
use tracing::Instrument;

const USAGE: &str = "\
usage: proxy --upstream URL [options] [--route PREFIX=NAME:VALUE,...]...

  --upstream URL          upstream base URL, plain http (required), e.g. http://127.0.0.1:9000
  --listen IP:PORT        address to listen on (default 127.0.0.1:8080; port 0 picks one)
  --drain DURATION        on Ctrl-C/SIGTERM, spread the ends of streams over this (default 10s)
  --route PREFIX=SETTINGS other settings for paths starting with PREFIX (repeatable, see below)
  -h, --help              print this help

Stream settings (global; in --route, the same names without `--`):
  --retry DURATION        `retry:` hint written at the start and end of streams (default 3s)
  --no-retry              write no `retry:` hint
  --heartbeat DURATION    comment heartbeat after this long without bytes (default 15s)
  --no-heartbeat          send no heartbeats
  --idle-timeout DURATION end a stream whose upstream sent nothing for this long (default off)
  --max-lifetime DURATION end streams after about this long, jittered 80-100% (default off)
  --slow-client-timeout DURATION
                          end a stream whose client took no byte for this long while bytes
                          wait (default 10s)
  --max-buffer SIZE       bytes buffered per stream for a slow client (default 1MiB)
  --slow-client-policy disconnect|drop-oldest|latest-per-type
                          when that buffer is full: stop reading the upstream, drop the oldest
                          events, or keep the newest event of each type (default disconnect)
  The slow-client buffer is off unless one of the three slow-client settings is given.
  --unreachable-sse       when the upstream cannot be reached, answer a request whose Accept
                          lists text/event-stream with 200 text/event-stream, a `retry:` hint
                          (the retry above, 3s with --no-retry, jittered +-50%) and a clean
                          end, instead of a 502 (EventSource gives up for good on any non-200);
                          other requests still get the 502 (default off)

--route PREFIX=NAME:VALUE,...: requests whose path starts with PREFIX (a plain string prefix
starting with `/`) get the global settings overridden by the listed ones; the longest matching
prefix wins, and requests matching no route get the global settings. For example:
  --route /llm/=heartbeat:5s,retry:1s
  --route /feeds/=slow-client-policy:latest-per-type,max-buffer:256KiB
  --route /live/=unreachable-sse,retry:5s

DURATION: a whole number with a unit: 500ms, 3s, 2m, 1h. A zero heartbeat, idle timeout or
lifetime turns the option off. SIZE: a whole number of bytes, or with a unit B, KiB, MiB or GiB:
4096, 512KiB, 1MiB. Flags also accept --flag=VALUE.";

/// The drain window when `--drain` is not given (the same as the layer's own default).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// How long the shutdown waits, after the drain window, for other responses to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long connecting to the upstream may take before the request gets a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The `retry:` hint of `--unreachable-sse` answers when the route writes none (`no-retry`):
/// the layer's own default.
const DEFAULT_RETRY: Duration = Duration::from_secs(3);
/// How far `--unreachable-sse` answers move their `retry:` hint, either way: clients cut by the
/// same outage come back spread over a whole retry interval, not in the same millisecond.
const UNREACHABLE_RETRY_JITTER: f64 = 0.5;

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => *options,
        Ok(Command::Help) => {
            say(std::io::stdout(), USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            say(
                std::io::stderr(),
                format_args!("proxy: {message}\n\n{USAGE}"),
            );
            return ExitCode::from(2);
        }
    };

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_sse=debug"));
    // Logs go to stderr: stdout carries only the `listening on` line, for scripts. Colours only
    // on a terminal (the formatter's default writes escape codes into files and pipes too).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not turn every log line into a panic (`eprintln!`).
        .log_internal_errors(false)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say(
                std::io::stderr(),
                format_args!("proxy: cannot start the runtime: {error}"),
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            say(std::io::stderr(), format_args!("proxy: {message}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let shutdown = SseShutdown::new();
    // One set of counters for every route, so that the shutdown line counts all open streams.
    let metrics = SseMetrics::new();
    let drain = options.drain.unwrap_or(DEFAULT_DRAIN);

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector);
    let proxy = Proxy {
        client,
        upstream: Arc::new(options.upstream),
    };
    let shared = Shared {
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        drain,
    };
    let routes = options.routes;
    for (prefix, settings) in &routes.routes {
        tracing::info!(route = %prefix, ?settings, "route");
    }
    let routes = Arc::new(routes.map(|settings| route_service(&settings, &shared, &proxy)));

    // Signal handlers are installed before the address is announced: a SIGTERM sent as soon as
    // the `listening on` line is read is a graceful shutdown, not the default "terminate".
    let mut signals =
        Signals::new().map_err(|error| format!("cannot install signal handlers: {error}"))?;
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", options.listen))?;
    let local = listener
        .local_addr()
        .map_err(|error| format!("cannot read the bound address: {error}"))?;
    say(
        std::io::stdout(),
        format_args!(
            "listening on http://{local}, proxying to {}",
            proxy.upstream.display
        ),
    );

    let mut builder = auto::Builder::new(SpanExecutor);
    // The header read timeout (30 s by default) needs a timer.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();

    let signal = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, do not spin or exit.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Event streams send many small writes: do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(service(&routes, peer));
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                let span = tracing::info_span!("conn", %peer);
                tokio::spawn(
                    async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                    }
                    .instrument(span),
                );
            }
            name = signals.recv() => break name,
        }
    };

    // Stop accepting, end the event streams over the drain window, let the rest finish.
    drop(listener);
    tracing::info!(
        signal,
        open_streams = metrics.snapshot().open_streams,
        connections = graceful.count(),
        drain_ms = u64::try_from(drain.as_millis()).unwrap_or(u64::MAX),
        "shutting down: draining event streams"
    );
    shutdown.drain();
    let limit = drain + SHUTDOWN_GRACE;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed, bye"),
        () = tokio::time::sleep(limit) => {
            tracing::warn!(
                limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "connections still open after the drain window and grace; exiting anyway"
            );
        }
        name = signals.recv() => tracing::warn!(signal = name, "second signal: exiting now"),
    }
    Ok(())
}

/// Writes one line, ignoring errors: `println!` panics when stdout is a closed pipe
/// (`proxy --help | head -1`).
fn say(mut out: impl std::io::Write, text: impl std::fmt::Display) {
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// What every route's layer shares: one drain, one set of counters.
struct Shared {
    shutdown: SseShutdown,
    metrics: SseMetrics,
    drain: Duration,
}

/// A route's layer, built from its settings. Settings not given keep the layer's defaults.
fn sse_layer(settings: &Settings, shared: &Shared) -> SseLayer {
    let mut layer = SseLayer::new()
        .shutdown(shared.shutdown.clone())
        .drain_window(shared.drain)
        .metrics(shared.metrics.clone());
    match settings.retry {
        Toggle::Default => {}
        Toggle::Set(delay) => layer = layer.retry(delay),
        Toggle::Off => layer = layer.no_retry(),
    }
    match settings.heartbeat {
        Toggle::Default => {}
        Toggle::Set(interval) => layer = layer.heartbeat(interval),
        Toggle::Off => layer = layer.no_heartbeat(),
    }
    if let Some(limit) = settings.idle_timeout {
        layer = layer.idle_timeout(limit);
    }
    if let Some(lifetime) = settings.max_lifetime {
        layer = layer.max_lifetime(lifetime);
    }
    layer
}

/// One route's stack: its layer around the proxy, type-erased.
///
/// The stacks do not all have the same type: `SseLayer` (no slow-client buffer) wraps the proxy
/// in an `SseService<_, Unbuffered>`, while `SseLayer::slow_client` returns an
/// `SseLayer<Buffered>`, which makes an `SseService<_, Buffered>` with a future of another type.
/// The route table needs one type for all of them, so each stack is boxed. What they have in
/// common is the `Service` signature: same request, same response (`SseBody` is the same in both
/// modes), same error. `BoxCloneSyncService` rather than `BoxCloneService` because the table is
/// shared by all connections behind an `Arc`, which needs `Sync` to be `Send`. The cost is one
/// allocation (the boxed future) and one dynamic call per request, nothing next to a proxied
/// request; a server with exactly two kinds of stack could use `tower::util::Either` instead.
fn route_service(settings: &Settings, shared: &Shared, proxy: &Proxy) -> RouteService {
    let proxy = proxy.clone();
    let unreachable = settings.unreachable_retry();
    let forward = tower::service_fn(move |request: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.forward(request, unreachable).await) }
    });
    let layer = sse_layer(settings, shared);
    match settings.slow_client() {
        None => BoxCloneSyncService::new(layer.layer(forward)),
        Some(slow) => BoxCloneSyncService::new(layer.slow_client(slow).layer(forward)),
    }
}

/// A route's stack, type-erased (see [`route_service`]).
type RouteService =
    BoxCloneSyncService<Request<Incoming>, Response<SseBody<ProxyBody>>, Infallible>;

/// One connection's service: picks the request's route, and runs that route's stack inside a
/// `request` span (method, path, route). The layer's "sse stream opened" line is logged inside
/// that span; the connection's span (`conn{peer=..}`) is on every line of the connection.
fn service(
    routes: &Arc<Routes<RouteService>>,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<SseBody<ProxyBody>>,
    Error = Infallible,
    Future = impl Future + Send,
> + Clone
+ Send
+ 'static {
    let routes = Arc::clone(routes);
    tower::service_fn(move |mut request: Request<Incoming>| {
        let (prefix, route) = routes.pick(request.uri().path());
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            route = tracing::field::Empty,
        );
        if let Some(prefix) = prefix {
            span.record("route", tracing::field::display(prefix));
        }
        let route = route.clone();
        // The route stacks are built once, for all connections: the client's address travels
        // with the request.
        request.extensions_mut().insert(ClientAddr(peer));
        route.oneshot(request).instrument(span)
    })
}

/// The client's address, put in the request's extensions by [`service`].
#[derive(Clone, Copy, Debug)]
struct ClientAddr(SocketAddr);

/// Route prefixes, longest first, with what requests matching each get, and what requests
/// matching none get.
#[derive(Debug)]
struct Routes<T> {
    routes: Vec<(String, T)>,
    fallback: T,
}

impl<T> Routes<T> {
    fn new(mut routes: Vec<(String, T)>, fallback: T) -> Self {
        // Longest first, so that the first match is the longest one.
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self { routes, fallback }
    }

    /// The longest route prefix of `path` and its value, or `None` and the fallback.
    fn pick(&self, path: &str) -> (Option<&str>, &T) {
        self.routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map_or((None, &self.fallback), |(prefix, value)| {
                (Some(prefix.as_str()), value)
            })
    }

    fn map<U>(self, mut f: impl FnMut(T) -> U) -> Routes<U> {
        Routes {
            routes: self
                .routes
                .into_iter()
                .map(|(prefix, value)| (prefix, f(value)))
                .collect(),
            fallback: f(self.fallback),
        }
    }
}

/// The upstream's body, or the proxy's own short answer (400, 502, the empty event stream of
/// `--unreachable-sse`).
type ProxyBody = Either<Incoming, Full<Bytes>>;

#[derive(Clone)]
struct Proxy {
    client: Client<HttpConnector, Incoming>,
    upstream: Arc<Upstream>,
}

impl Proxy {
    /// Forwards `request` to the upstream. `unreachable` is the route's `--unreachable-sse`
    /// retry hint, `None` when the option is off.
    async fn forward(
        self,
        mut request: Request<Incoming>,
        unreachable: Option<Duration>,
    ) -> Response<ProxyBody> {
        let version = request.version();
        // Decided now: the request (and its `Accept`) goes to the client below.
        let unreachable =
            unreachable.filter(|_| tower_sse::asks_for_event_stream(request.headers()));
        let peer = request.extensions().get::<ClientAddr>().map(|addr| addr.0);
        let Some(uri) = self.upstream.uri_for(request.uri()) else {
            return plain(StatusCode::BAD_REQUEST, "bad request target\n", version);
        };
        *request.uri_mut() = uri;
        // Whatever the client spoke (HTTP/2 included), the upstream gets HTTP/1.1.
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        remove_hop_by_hop(headers);
        headers.insert(header::HOST, self.upstream.host.clone());
        if let Some(peer) = peer {
            append_forwarded_for(headers, peer);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));

        match self.client.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                // Answer in the client's protocol version, not the upstream's.
                parts.version = version;
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => {
                // A non-200 status makes `EventSource` stop reconnecting for good, so with
                // `--unreachable-sse` a request asking for `text/event-stream` whose upstream
                // cannot be reached gets `200 text/event-stream`, a jittered `retry:` and a clean
                // end instead (SSE-RULES.md, "HTTP-level rules"): browsers keep retrying, spread
                // out, until the upstream is back. Only after a connect error, when the upstream
                // saw nothing of the request (whatever its method); every other client and every
                // other failure (the upstream hung up mid-response, ...) gets the plain 502.
                if let Some(retry) = unreachable
                    && error.is_connect()
                {
                    tracing::warn!(
                        error = %DisplayChain(&error),
                        retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
                        "upstream unreachable: answered the event-stream request with 200, a \
                         retry hint jittered by up to 50% and a clean end"
                    );
                    return unreachable_event_stream(retry, version);
                }
                tracing::warn!(error = %DisplayChain(&error), "upstream request failed");
                plain(
                    StatusCode::BAD_GATEWAY,
                    "502 bad gateway: upstream unreachable\n",
                    version,
                )
            }
        }
    }
}

/// The `--unreachable-sse` answer: `200 text/event-stream` with an empty body and an
/// [`SseOverride`] for it. The route's layer writes the body's only line, `retry: N` with `N`
/// the route's retry moved by up to ±50 % (its jitter, seeded from `RandomState`, differs per
/// response), adds `X-Accel-Buffering: no` and ends the body cleanly (no blank line, no
/// heartbeat: it ends at once). The proxy does not write the line itself: the layer would add its
/// own `retry:` hint before it.
fn unreachable_event_stream(retry: Duration, version: Version) -> Response<ProxyBody> {
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

fn plain(status: StatusCode, text: &'static str, version: Version) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::from(text)));
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
fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
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

/// The upstream base URL, split once at startup.
#[derive(Debug)]
struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing `/` (often empty).
    base_path: String,
    /// The `Host` header the upstream gets.
    host: HeaderValue,
    /// The URL as given, for the logs.
    display: String,
}

impl Upstream {
    fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|error| format!("invalid upstream URL `{text}`: {error}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "upstream `{text}`: https needs a TLS connector (hyper-rustls); this example \
                     speaks plain http"
                ));
            }
            _ => return Err(format!("upstream `{text}` must start with http://")),
        }
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
            scheme: Scheme::HTTP,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            authority,
            host,
            display: text.to_owned(),
        })
    }

    /// The upstream URL for a request: the base path followed by the request's path and query.
    /// `None` for a target that is not a path (`*`, an authority).
    fn uri_for(&self, request: &Uri) -> Option<Uri> {
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

/// The signals that start the shutdown: Ctrl-C (SIGINT) and, on unix, SIGTERM.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers now (not at the first poll).
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Spawns hyper's tasks (HTTP/2 streams) inside the current span, so that their log lines carry
/// the connection's `peer`.
#[derive(Clone, Copy, Debug)]
struct SpanExecutor;

impl<F> hyper::rt::Executor<F> for SpanExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future.in_current_span());
    }
}

/// Formats an error with its sources (`connect error: Connection refused (os error 111)`).
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

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

// ---------------------------------------------------------------------------------------------
// Arguments

#[derive(Debug)]
enum Command {
    Run(Box<Options>),
    Help,
}

#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    upstream: Upstream,
    drain: Option<Duration>,
    /// Each route's effective settings (the global ones overridden by the route's), and the
    /// global settings for requests matching no route.
    routes: Routes<Settings>,
}

/// The settings of a stream: the global flags, or what one `--route` names. A field not given
/// is `Toggle::Default` or `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Settings {
    retry: Toggle,
    heartbeat: Toggle,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    slow_client_timeout: Option<Duration>,
    max_buffer: Option<usize>,
    slow_client_policy: Option<SlowClientPolicy>,
    /// `--unreachable-sse`: a request for an event stream whose upstream cannot be reached gets
    /// `200 text/event-stream` and a jittered `retry:` rather than a 502.
    unreachable_sse: bool,
}

impl Settings {
    /// These settings, with those not given taken from `global`.
    fn inherit(self, global: &Self) -> Self {
        let toggle = |own: Toggle, global: Toggle| {
            if own == Toggle::Default { global } else { own }
        };
        Self {
            retry: toggle(self.retry, global.retry),
            heartbeat: toggle(self.heartbeat, global.heartbeat),
            idle_timeout: self.idle_timeout.or(global.idle_timeout),
            max_lifetime: self.max_lifetime.or(global.max_lifetime),
            slow_client_timeout: self.slow_client_timeout.or(global.slow_client_timeout),
            max_buffer: self.max_buffer.or(global.max_buffer),
            slow_client_policy: self.slow_client_policy.or(global.slow_client_policy),
            unreachable_sse: self.unreachable_sse || global.unreachable_sse,
        }
    }

    /// The `retry:` hint (before jitter) of the `--unreachable-sse` answer, `None` when that
    /// option is off: the route's retry, or the layer's default 3 s when it writes none
    /// (`no-retry`), since the hint is all that answer says.
    fn unreachable_retry(&self) -> Option<Duration> {
        self.unreachable_sse.then_some(match self.retry {
            Toggle::Set(delay) => delay,
            Toggle::Default | Toggle::Off => DEFAULT_RETRY,
        })
    }

    /// The slow-client buffer: on when any of its settings is given, with the layer's defaults
    /// (1 MiB, 10 s, disconnect) for the others.
    fn slow_client(&self) -> Option<SlowClient> {
        if self.slow_client_timeout.is_none()
            && self.max_buffer.is_none()
            && self.slow_client_policy.is_none()
        {
            return None;
        }
        let mut slow = SlowClient::new();
        if let Some(timeout) = self.slow_client_timeout {
            slow = slow.timeout(timeout);
        }
        if let Some(bytes) = self.max_buffer {
            slow = slow.max_buffer(bytes);
        }
        if let Some(policy) = self.slow_client_policy {
            slow = slow.policy(policy);
        }
        Some(slow)
    }
}

/// An option with a value, an opt-out flag, or neither (the layer's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Toggle {
    #[default]
    Default,
    Set(Duration),
    Off,
}

/// The names of the stream settings: `--NAME` as flags, `NAME` in `--route`.
const SETTINGS: [&str; 10] = [
    "retry",
    "no-retry",
    "heartbeat",
    "no-heartbeat",
    "idle-timeout",
    "max-lifetime",
    "slow-client-timeout",
    "max-buffer",
    "slow-client-policy",
    "unreachable-sse",
];

/// Whether setting `name` takes a value (`no-retry`, `no-heartbeat` and `unreachable-sse` do
/// not).
fn takes_value(name: &str) -> bool {
    !matches!(name, "no-retry" | "no-heartbeat" | "unreachable-sse")
}

/// Parses the arguments (without the program name). `Err` holds a one-line message.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut listen = None;
    let mut upstream = None;
    let mut drain = None;
    let mut global = Settings::default();
    let mut routes: Vec<(String, Settings)> = Vec::new();

    while let Some(arg) = args.next() {
        let (flag, mut inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let flag = flag.as_str();
        let mut value = || {
            inline
                .take()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => {
                let text = value()?;
                let addr = text.parse().map_err(|_| {
                    format!("--listen: `{text}` is not an address like 127.0.0.1:8080")
                })?;
                once(&mut listen, flag, addr)?;
            }
            "--upstream" => once(&mut upstream, flag, Upstream::parse(&value()?)?)?,
            "--drain" => once(&mut drain, flag, duration(flag, &value()?)?)?,
            "--route" => {
                let (prefix, settings) = parse_route(&value()?)?;
                if routes.iter().any(|(known, _)| *known == prefix) {
                    return Err(format!("--route {prefix} given more than once"));
                }
                routes.push((prefix, settings));
            }
            _ => match flag
                .strip_prefix("--")
                .filter(|name| SETTINGS.contains(name))
            {
                Some(name) => {
                    // `--no-retry=x` is an error (`apply` says so); `--no-retry x` is two
                    // arguments. The same for `--unreachable-sse`.
                    let value = if takes_value(name) {
                        Some(value()?)
                    } else {
                        inline.take()
                    };
                    apply(&mut global, name, value.as_deref(), "--")?;
                }
                None => return Err(format!("unknown argument `{flag}`")),
            },
        }
    }

    let Some(upstream) = upstream else {
        return Err("missing --upstream".to_owned());
    };
    let routes = routes
        .into_iter()
        .map(|(prefix, settings)| (prefix, settings.inherit(&global)))
        .collect();
    Ok(Command::Run(Box::new(Options {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        upstream,
        drain,
        routes: Routes::new(routes, global),
    })))
}

/// Parses a `--route` value, `PREFIX=NAME:VALUE,NAME,...`, into the prefix and the settings it
/// names (not yet merged with the global ones). An empty list is allowed: it gives a path under
/// another route the global settings back.
fn parse_route(text: &str) -> Result<(String, Settings), String> {
    let Some((prefix, list)) = text.split_once('=') else {
        return Err(format!(
            "--route `{text}`: expected PREFIX=NAME:VALUE,..., e.g. /llm/=heartbeat:5s,retry:1s"
        ));
    };
    if !prefix.starts_with('/')
        || prefix.contains(['?', '#'])
        || prefix.contains(char::is_whitespace)
    {
        return Err(format!(
            "--route `{text}`: the prefix must be a path starting with /"
        ));
    }
    let mut settings = Settings::default();
    if !list.is_empty() {
        for item in list.split(',') {
            let (name, value) = match item.split_once(':') {
                Some((name, value)) => (name, Some(value)),
                None => (item, None),
            };
            if name.contains('=') {
                return Err(format!(
                    "--route {prefix}: `{item}`: write settings as NAME:VALUE (retry:1s)"
                ));
            }
            if !SETTINGS.contains(&name) {
                return Err(format!(
                    "--route {prefix}: unknown setting `{name}` (known: {})",
                    SETTINGS.join(", ")
                ));
            }
            apply(&mut settings, name, value, "")
                .map_err(|error| format!("--route {prefix}: {error}"))?;
        }
    }
    Ok((prefix.to_owned(), settings))
}

/// Sets the stream setting `name` (one of [`SETTINGS`]) from `value`. `dashes` is how errors
/// spell it: `--` for flags, nothing in `--route`.
fn apply(
    settings: &mut Settings,
    name: &str,
    value: Option<&str>,
    dashes: &str,
) -> Result<(), String> {
    let full = format!("{dashes}{name}");
    if !takes_value(name) {
        if value.is_some() {
            return Err(format!("{full} takes no value"));
        }
    } else if value.is_none() {
        return Err(format!("{full} needs a value"));
    }
    let text = value.unwrap_or_default();
    let toggle = |slot: &mut Toggle, base: &str, value: Toggle| {
        if *slot != Toggle::Default {
            return Err(format!(
                "{dashes}{base}/{dashes}no-{base} given more than once"
            ));
        }
        *slot = value;
        Ok(())
    };
    match name {
        "retry" => toggle(
            &mut settings.retry,
            "retry",
            Toggle::Set(duration(&full, text)?),
        ),
        "no-retry" => toggle(&mut settings.retry, "retry", Toggle::Off),
        "heartbeat" => toggle(
            &mut settings.heartbeat,
            "heartbeat",
            Toggle::Set(duration(&full, text)?),
        ),
        "no-heartbeat" => toggle(&mut settings.heartbeat, "heartbeat", Toggle::Off),
        "idle-timeout" => once(&mut settings.idle_timeout, &full, duration(&full, text)?),
        "max-lifetime" => once(&mut settings.max_lifetime, &full, duration(&full, text)?),
        "slow-client-timeout" => once(
            &mut settings.slow_client_timeout,
            &full,
            duration(&full, text)?,
        ),
        "max-buffer" => once(&mut settings.max_buffer, &full, size(&full, text)?),
        "slow-client-policy" => once(
            &mut settings.slow_client_policy,
            &full,
            policy(&full, text)?,
        ),
        "unreachable-sse" => {
            if settings.unreachable_sse {
                return Err(format!("{full} given more than once"));
            }
            settings.unreachable_sse = true;
            Ok(())
        }
        _ => Err(format!("unknown setting `{full}`")),
    }
}

/// Stores `value` in `slot`, unless the option was already given.
fn once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} given more than once"));
    }
    *slot = Some(value);
    Ok(())
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|error| format!("{flag}: {error}"))
}

fn size(flag: &str, text: &str) -> Result<usize, String> {
    parse_size(text).map_err(|error| format!("{flag}: {error}"))
}

fn policy(flag: &str, text: &str) -> Result<SlowClientPolicy, String> {
    match text {
        "disconnect" => Ok(SlowClientPolicy::Disconnect),
        "drop-oldest" => Ok(SlowClientPolicy::DropOldest),
        "latest-per-type" => Ok(SlowClientPolicy::LatestPerType),
        _ => Err(format!(
            "{flag}: `{text}` is not one of disconnect, drop-oldest, latest-per-type"
        )),
    }
}

/// Parses `4096`, `4096B`, `512KiB`, `1MiB`, `2GiB`: a whole number of bytes, and an optional
/// binary unit, nothing else.
fn parse_size(text: &str) -> Result<usize, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!("`{text}` is not a size like 4096, 512KiB or 1MiB"));
    }
    let bytes_per_unit: usize = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(bytes_per_unit))
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses `500ms`, `3s`, `2m`, `1h`: a whole number and a unit, nothing else.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration like 500ms, 3s, 2m or 1h"
        ));
    }
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("`{text}` has no unit (ms, s, m or h)")),
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m or h)")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Command, String> {
        parse_args(line.split_whitespace().map(str::to_owned))
    }

    fn options(line: &str) -> Options {
        match args(line) {
            Ok(Command::Run(options)) => *options,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn durations_take_a_whole_number_and_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn malformed_durations_are_errors_not_panics() {
        for text in [
            "",
            "s",
            "ms",
            "3",
            "3x",
            "3 s",
            " 3s",
            "3s ",
            "-3s",
            "+3s",
            "1.5s",
            "3S",
            "3sec",
            "3ms5",
            "é",
            "3é",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn defaults_leave_the_layer_alone() {
        let options = options("--upstream http://127.0.0.1:9000");
        assert_eq!(options.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(options.drain, None);
        assert!(options.routes.routes.is_empty());
        let global = options.routes.fallback;
        assert_eq!(global, Settings::default());
        assert_eq!(global.retry, Toggle::Default);
        assert_eq!(global.heartbeat, Toggle::Default);
        assert_eq!(global.idle_timeout, None);
        assert_eq!(global.max_lifetime, None);
        assert_eq!(global.slow_client(), None);
        assert!(!global.unreachable_sse);
        assert_eq!(global.unreachable_retry(), None);
    }

    #[test]
    fn every_flag_is_read_in_both_spellings() {
        let options = options(
            "--listen=127.0.0.1:0 --upstream http://u:1/base/ --retry 1500ms --no-heartbeat \
             --idle-timeout=60s --max-lifetime 30m --drain 200ms --slow-client-timeout=2s \
             --max-buffer 512KiB --slow-client-policy=latest-per-type --route /a/=retry:1s \
             --route=/b/=no-heartbeat --unreachable-sse",
        );
        assert_eq!(options.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(options.upstream.base_path, "/base");
        assert_eq!(options.drain, Some(Duration::from_millis(200)));
        let global = options.routes.fallback;
        assert_eq!(global.retry, Toggle::Set(Duration::from_millis(1500)));
        assert_eq!(global.heartbeat, Toggle::Off);
        assert_eq!(global.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(global.max_lifetime, Some(Duration::from_secs(1800)));
        assert_eq!(global.slow_client_timeout, Some(Duration::from_secs(2)));
        assert_eq!(global.max_buffer, Some(512 * 1024));
        assert_eq!(
            global.slow_client_policy,
            Some(SlowClientPolicy::LatestPerType)
        );
        assert!(global.unreachable_sse);
        let prefixes: Vec<&str> = options
            .routes
            .routes
            .iter()
            .map(|(prefix, _)| prefix.as_str())
            .collect();
        assert_eq!(prefixes, ["/a/", "/b/"]);
    }

    #[test]
    fn sizes_take_a_whole_number_and_an_optional_binary_unit() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("8KiB"), Ok(8 * 1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("1536KiB"), Ok(1536 * 1024));
    }

    #[test]
    fn malformed_sizes_are_errors_not_panics() {
        for text in [
            "",
            "B",
            "KiB",
            "1K",
            "1KB",
            "1kib",
            "1MB",
            "1mb",
            "1 KiB",
            " 1KiB",
            "1KiB ",
            "-1",
            "+1",
            "1.5MiB",
            "1KiB1",
            "1MiBs",
            "é",
            "1é",
            "99999999999999999999",
            "18446744073709551615GiB",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn giving_any_slow_client_flag_turns_the_buffer_on_with_defaults_for_the_others() {
        let global = |line: &str| {
            options(&format!("--upstream http://u:1 {line}"))
                .routes
                .fallback
                .slow_client()
        };
        assert_eq!(global(""), None);
        assert_eq!(global("--retry 1s --heartbeat 5s"), None);
        assert_eq!(
            global("--slow-client-timeout 3s"),
            Some(SlowClient::new().timeout(Duration::from_secs(3)))
        );
        assert_eq!(
            global("--max-buffer 1MiB"),
            Some(SlowClient::new()),
            "1 MiB, 10 s and disconnect are the defaults"
        );
        assert_eq!(
            global("--slow-client-policy drop-oldest"),
            Some(SlowClient::new().policy(SlowClientPolicy::DropOldest))
        );
        assert_eq!(
            global("--max-buffer 8KiB --slow-client-timeout 300ms --slow-client-policy disconnect"),
            Some(
                SlowClient::new()
                    .max_buffer(8192)
                    .timeout(Duration::from_millis(300))
                    .policy(SlowClientPolicy::Disconnect)
            )
        );
    }

    #[test]
    fn routes_read_every_setting_and_nothing_else() {
        let (prefix, settings) = parse_route(
            "/llm/=retry:1s,heartbeat:5s,idle-timeout:1m,max-lifetime:1h,\
             slow-client-timeout:300ms,max-buffer:256KiB,slow-client-policy:latest-per-type,\
             unreachable-sse",
        )
        .unwrap();
        assert_eq!(prefix, "/llm/");
        assert_eq!(
            settings,
            Settings {
                retry: Toggle::Set(Duration::from_secs(1)),
                heartbeat: Toggle::Set(Duration::from_secs(5)),
                idle_timeout: Some(Duration::from_secs(60)),
                max_lifetime: Some(Duration::from_secs(3600)),
                slow_client_timeout: Some(Duration::from_millis(300)),
                max_buffer: Some(256 * 1024),
                slow_client_policy: Some(SlowClientPolicy::LatestPerType),
                unreachable_sse: true,
            }
        );
        let (_, settings) = parse_route("/quiet=no-retry,no-heartbeat").unwrap();
        assert_eq!(settings.retry, Toggle::Off);
        assert_eq!(settings.heartbeat, Toggle::Off);
        // An empty list: the global settings (useful under another route's prefix).
        assert_eq!(
            parse_route("/llm/plain/=").unwrap(),
            ("/llm/plain/".to_owned(), Settings::default())
        );
        // The prefix is everything before the first `=`.
        assert_eq!(parse_route("/=retry:2s").unwrap().0, "/");
    }

    #[test]
    fn a_route_inherits_the_global_flags_and_overrides_what_it_names() {
        let options = options(
            "--upstream http://u:1 --retry 2s --heartbeat 20s --idle-timeout 1m \
             --max-buffer 2MiB --route /llm/=heartbeat:5s,retry:1s \
             --route /feeds/=slow-client-policy:latest-per-type,max-buffer:256KiB \
             --route /quiet/=no-retry,no-heartbeat,idle-timeout:0s --route /same/=",
        );
        let global = Settings {
            retry: Toggle::Set(Duration::from_secs(2)),
            heartbeat: Toggle::Set(Duration::from_secs(20)),
            idle_timeout: Some(Duration::from_secs(60)),
            max_buffer: Some(2 << 20),
            ..Settings::default()
        };
        assert_eq!(options.routes.fallback, global);
        let route = |path| *options.routes.pick(path).1;

        let llm = route("/llm/chat");
        assert_eq!(llm.retry, Toggle::Set(Duration::from_secs(1)));
        assert_eq!(llm.heartbeat, Toggle::Set(Duration::from_secs(5)));
        assert_eq!(llm.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            llm.slow_client(),
            Some(SlowClient::new().max_buffer(2 << 20)),
            "the global --max-buffer turns the buffer on for every route"
        );

        let feeds = route("/feeds/prices");
        assert_eq!(feeds.retry, Toggle::Set(Duration::from_secs(2)));
        assert_eq!(feeds.heartbeat, Toggle::Set(Duration::from_secs(20)));
        assert_eq!(
            feeds.slow_client(),
            Some(
                SlowClient::new()
                    .max_buffer(256 * 1024)
                    .policy(SlowClientPolicy::LatestPerType)
            )
        );

        let quiet = route("/quiet/x");
        assert_eq!(quiet.retry, Toggle::Off);
        assert_eq!(quiet.heartbeat, Toggle::Off);
        // Zero turns the idle timeout off in the layer.
        assert_eq!(quiet.idle_timeout, Some(Duration::ZERO));

        assert_eq!(route("/same/x"), global);
        assert_eq!(route("/other"), global);
    }

    #[test]
    fn unreachable_sse_is_a_flag_without_a_value_and_takes_the_retry_of_its_route() {
        let global = |line: &str| {
            options(&format!("--upstream http://u:1 {line}"))
                .routes
                .fallback
        };
        assert_eq!(global("").unreachable_retry(), None);
        assert_eq!(global("--retry 2s").unreachable_retry(), None);
        let on = global("--unreachable-sse");
        assert!(on.unreachable_sse);
        assert_eq!(
            on,
            Settings {
                unreachable_sse: true,
                ..Settings::default()
            }
        );
        // The layer's default retry, the configured one, and the default again when the streams
        // get no hint: the hint is the whole answer.
        assert_eq!(on.unreachable_retry(), Some(Duration::from_secs(3)));
        assert_eq!(
            global("--retry 1500ms --unreachable-sse").unreachable_retry(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            global("--unreachable-sse --no-retry").unreachable_retry(),
            Some(Duration::from_secs(3))
        );
        // The flag changes nothing else.
        assert_eq!(
            global("--unreachable-sse --retry 2s").retry,
            Toggle::Set(Duration::from_secs(2))
        );
        assert_eq!(global("--unreachable-sse").slow_client(), None);

        // In a route: without a value, alone or in a list.
        assert_eq!(
            parse_route("/live/=unreachable-sse").unwrap().1,
            Settings {
                unreachable_sse: true,
                ..Settings::default()
            }
        );
        let (_, settings) = parse_route("/live/=retry:1s,unreachable-sse,no-heartbeat").unwrap();
        assert!(settings.unreachable_sse);
        assert_eq!(settings.retry, Toggle::Set(Duration::from_secs(1)));
        assert_eq!(settings.heartbeat, Toggle::Off);
        assert!(!parse_route("/live/=retry:1s").unwrap().1.unreachable_sse);
    }

    #[test]
    fn unreachable_sse_is_inherited_by_every_route_and_turned_on_by_a_route_for_its_paths() {
        let local = options(
            "--upstream http://u:1 --retry 2s --route /live/=unreachable-sse,retry:500ms \
             --route /live/quiet/=no-retry --route /other/=heartbeat:5s",
        );
        let pick = |path| local.routes.pick(path).1.unreachable_retry();
        assert_eq!(pick("/live/x"), Some(Duration::from_millis(500)));
        // A longer prefix under the route does not inherit from it, only from the global flags.
        assert_eq!(pick("/live/quiet/x"), None);
        assert_eq!(pick("/other/x"), None);
        assert_eq!(pick("/x"), None);

        let global_on = options(
            "--upstream http://u:1 --unreachable-sse --route /live/=retry:500ms \
             --route /quiet/=no-retry --route /same/=",
        );
        let pick = |path| global_on.routes.pick(path).1.unreachable_retry();
        assert_eq!(pick("/live/x"), Some(Duration::from_millis(500)));
        assert_eq!(pick("/quiet/x"), Some(Duration::from_secs(3)));
        assert_eq!(pick("/same/x"), Some(Duration::from_secs(3)));
        assert_eq!(pick("/x"), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_route_turns_the_slow_client_buffer_on_for_its_paths_only() {
        let options = options(
            "--upstream http://u:1 --route \
             /feeds/=slow-client-policy:drop-oldest,max-buffer:8KiB,slow-client-timeout:300ms",
        );
        assert_eq!(
            options.routes.pick("/feeds/firehose").1.slow_client(),
            Some(
                SlowClient::new()
                    .policy(SlowClientPolicy::DropOldest)
                    .max_buffer(8 * 1024)
                    .timeout(Duration::from_millis(300))
            )
        );
        assert_eq!(options.routes.pick("/events").1.slow_client(), None);
    }

    #[test]
    fn the_longest_matching_prefix_wins_and_other_paths_get_the_fallback() {
        let routes = Routes::new(
            vec![
                ("/a/".to_owned(), 1),
                ("/a/b/c/".to_owned(), 3),
                ("/".to_owned(), 0),
                ("/a/b/".to_owned(), 2),
                ("/x".to_owned(), 4),
            ],
            -1,
        );
        assert_eq!(routes.pick("/a/b/c/d"), (Some("/a/b/c/"), &3));
        assert_eq!(routes.pick("/a/b/c/"), (Some("/a/b/c/"), &3));
        assert_eq!(routes.pick("/a/b/c"), (Some("/a/b/"), &2));
        assert_eq!(routes.pick("/a/b"), (Some("/a/"), &1));
        assert_eq!(routes.pick("/a"), (Some("/"), &0));
        // A plain string prefix: `/x` matches `/xyz` too.
        assert_eq!(routes.pick("/xyz"), (Some("/x"), &4));
        assert_eq!(routes.pick("/events"), (Some("/"), &0));
        let routes = Routes::new(vec![("/a/".to_owned(), 1)], -1);
        assert_eq!(routes.pick("/events"), (None, &-1));
        assert_eq!(routes.pick("/A/x"), (None, &-1));
        assert_eq!(routes.map(|n| n * 10).pick("/a/x"), (Some("/a/"), &10));
    }

    #[test]
    fn help_is_honoured_until_the_first_bad_argument() {
        assert!(matches!(args("--help --bogus"), Ok(Command::Help)));
        assert!(matches!(args("-h"), Ok(Command::Help)));
        assert!(args("--bogus --help").is_err());
    }

    #[test]
    fn bad_arguments_are_reported_in_one_line() {
        let cases = [
            (
                "--upstream http://u:1 --bogus",
                "unknown argument `--bogus`",
            ),
            ("--upstream http://u:1 extra", "unknown argument `extra`"),
            ("--retry 3s", "missing --upstream"),
            ("--upstream", "--upstream needs a value"),
            ("--upstream http://u:1 --retry", "--retry needs a value"),
            (
                "--upstream http://u:1 --retry 3x",
                "--retry: `3x`: unknown unit `x`",
            ),
            (
                "--upstream http://u:1 --retry 3s --no-retry",
                "--retry/--no-retry given more than once",
            ),
            (
                "--upstream http://u:1 --drain 1s --drain 2s",
                "--drain given more than once",
            ),
            (
                "--upstream http://u:1 --no-retry=yes",
                "--no-retry takes no value",
            ),
            (
                "--upstream http://u:1 --listen localhost",
                "--listen: `localhost` is not an address",
            ),
            ("--upstream https://u:1", "https needs a TLS connector"),
            ("--upstream u:1", "must start with http://"),
            ("--upstream http://a@u:1", "user info"),
            ("--upstream http://u:1/?x=1", "must not have a query"),
            (
                "--upstream http://u:1 --max-buffer 1MB",
                "--max-buffer: `1MB`: unknown unit",
            ),
            (
                "--upstream http://u:1 --max-buffer",
                "--max-buffer needs a value",
            ),
            (
                "--upstream http://u:1 --slow-client-policy drop",
                "--slow-client-policy: `drop` is not one of",
            ),
            (
                "--upstream http://u:1 --slow-client-timeout 1",
                "--slow-client-timeout: `1` has no unit",
            ),
            ("--upstream http://u:1 --route", "--route needs a value"),
            (
                "--upstream http://u:1 --route /llm/",
                "expected PREFIX=NAME:VALUE",
            ),
            (
                "--upstream http://u:1 --route llm=retry:1s",
                "must be a path",
            ),
            ("--upstream http://u:1 --route =retry:1s", "must be a path"),
            (
                "--upstream http://u:1 --route /a?b=retry:1s",
                "must be a path",
            ),
            (
                "--upstream http://u:1 --route /llm/=bogus:1",
                "--route /llm/: unknown setting `bogus`",
            ),
            (
                "--upstream http://u:1 --route /llm/=drain:1s",
                "--route /llm/: unknown setting `drain`",
            ),
            (
                "--upstream http://u:1 --route /llm/=--retry:1s",
                "unknown setting `--retry`",
            ),
            (
                "--upstream http://u:1 --route /llm/=retry=1s",
                "--route /llm/: `retry=1s`: write settings as NAME:VALUE",
            ),
            (
                "--upstream http://u:1 --route /llm/=retry",
                "--route /llm/: retry needs a value",
            ),
            (
                "--upstream http://u:1 --route /llm/=retry:",
                "--route /llm/: retry: `` is not a duration",
            ),
            (
                "--upstream http://u:1 --route /llm/=retry:1s,",
                "--route /llm/: unknown setting ``",
            ),
            (
                "--upstream http://u:1 --route /llm/=no-retry:1s",
                "--route /llm/: no-retry takes no value",
            ),
            (
                "--upstream http://u:1 --route /llm/=retry:1s,no-retry",
                "--route /llm/: retry/no-retry given more than once",
            ),
            (
                "--upstream http://u:1 --route /llm/=max-buffer:1KiB,max-buffer:2KiB",
                "--route /llm/: max-buffer given more than once",
            ),
            (
                "--upstream http://u:1 --route /llm/=max-buffer:lots",
                "--route /llm/: max-buffer: `lots` is not a size",
            ),
            (
                "--upstream http://u:1 --route /llm/=slow-client-policy:oldest",
                "--route /llm/: slow-client-policy: `oldest` is not one of",
            ),
            (
                "--upstream http://u:1 --route /a/=retry:1s --route /a/=retry:2s",
                "--route /a/ given more than once",
            ),
            (
                "--upstream http://u:1 --unreachable-sse=yes",
                "--unreachable-sse takes no value",
            ),
            (
                "--upstream http://u:1 --unreachable-sse=",
                "--unreachable-sse takes no value",
            ),
            // `--unreachable-sse yes` is two arguments.
            (
                "--upstream http://u:1 --unreachable-sse yes",
                "unknown argument `yes`",
            ),
            (
                "--upstream http://u:1 --unreachable-sse --unreachable-sse",
                "--unreachable-sse given more than once",
            ),
            (
                "--upstream http://u:1 --route /live/=unreachable-sse:on",
                "--route /live/: unreachable-sse takes no value",
            ),
            (
                "--upstream http://u:1 --route /live/=unreachable-sse:",
                "--route /live/: unreachable-sse takes no value",
            ),
            (
                "--upstream http://u:1 --route /live/=unreachable-sse,unreachable-sse",
                "--route /live/: unreachable-sse given more than once",
            ),
            (
                "--upstream http://u:1 --route /live/=unreachable_sse",
                "--route /live/: unknown setting `unreachable_sse`",
            ),
        ];
        for (line, expected) in cases {
            match args(line) {
                Err(message) => {
                    assert!(message.contains(expected), "{line}: {message}");
                    assert!(!message.contains('\n'), "{line}: {message}");
                }
                Ok(command) => panic!("{line}: accepted as {command:?}"),
            }
        }
    }

    #[test]
    fn the_request_target_is_appended_to_the_base_url() {
        let root = Upstream::parse("http://127.0.0.1:9000").unwrap();
        let based = Upstream::parse("http://127.0.0.1:9000/api/").unwrap();
        let target: Uri = "/events?topic=a&b".parse().unwrap();
        assert_eq!(
            root.uri_for(&target).unwrap(),
            "http://127.0.0.1:9000/events?topic=a&b"
        );
        assert_eq!(
            based.uri_for(&target).unwrap(),
            "http://127.0.0.1:9000/api/events?topic=a&b"
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
