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
//! - answers `502 Bad Gateway` (plain text) when the upstream cannot be reached;
//! - on Ctrl-C or SIGTERM: stops accepting, drains every event stream over the drain window
//!   (each stream ends at its own moment, at an event boundary, with a `retry:` hint, so clients
//!   reconnect elsewhere at staggered times), lets other responses finish, and exits with 0;
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
use tower::{ServiceBuilder, ServiceExt};
use tower_sse::{SseLayer, SseShutdown};
use tracing::Instrument;

const USAGE: &str = "\
usage: proxy --upstream URL [options]

  --upstream URL          upstream base URL, plain http (required), e.g. http://127.0.0.1:9000
  --listen IP:PORT        address to listen on (default 127.0.0.1:8080; port 0 picks one)
  --retry DURATION        `retry:` hint written at the start and end of streams (default 3s)
  --no-retry              write no `retry:` hint
  --heartbeat DURATION    comment heartbeat after this long without bytes (default 15s)
  --no-heartbeat          send no heartbeats
  --idle-timeout DURATION end a stream whose upstream sent nothing for this long (default off)
  --max-lifetime DURATION end streams after about this long, jittered 80-100% (default off)
  --drain DURATION        on Ctrl-C/SIGTERM, spread the ends of streams over this (default 10s)
  -h, --help              print this help

DURATION: a whole number with a unit: 500ms, 3s, 2m, 1h. A zero heartbeat, idle timeout or
lifetime turns the option off. Flags also accept --flag=VALUE.";

/// The drain window when `--drain` is not given (the same as the layer's own default).
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// How long the shutdown waits, after the drain window, for other responses to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long connecting to the upstream may take before the request gets a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    let drain = options.drain.unwrap_or(DEFAULT_DRAIN);
    let layer = sse_layer(&options, shutdown.clone()).drain_window(drain);
    let metrics = layer.metrics_handle();

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
                let service = TowerToHyperService::new(service(&layer, &proxy, peer));
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

/// The layer, built from the flags. Options not given keep the layer's defaults.
fn sse_layer(options: &Options, shutdown: SseShutdown) -> SseLayer {
    let mut layer = SseLayer::new().shutdown(shutdown);
    match options.retry {
        Toggle::Default => {}
        Toggle::Set(delay) => layer = layer.retry(delay),
        Toggle::Off => layer = layer.no_retry(),
    }
    match options.heartbeat {
        Toggle::Default => {}
        Toggle::Set(interval) => layer = layer.heartbeat(interval),
        Toggle::Off => layer = layer.no_heartbeat(),
    }
    if let Some(limit) = options.idle_timeout {
        layer = layer.idle_timeout(limit);
    }
    if let Some(lifetime) = options.max_lifetime {
        layer = layer.max_lifetime(lifetime);
    }
    layer
}

/// One connection's service: a `request` span (method, path) around the layer around the proxy.
/// The layer's "sse stream opened" line is logged inside that span; the connection's span
/// (`conn{peer=..}`) is on every line of the connection.
fn service(
    layer: &SseLayer,
    proxy: &Proxy,
    peer: SocketAddr,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<tower_sse::SseBody<ProxyBody>>,
    Error = Infallible,
    Future = impl Future + Send,
> + Clone
+ Send
+ 'static {
    let proxy = proxy.clone();
    let inner =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(move |request: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.forward(request, peer).await) }
            });
    tower::service_fn(move |request: Request<Incoming>| {
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        );
        inner.clone().oneshot(request).instrument(span)
    })
}

/// The upstream's body, or the proxy's own short answer (400, 502).
type ProxyBody = Either<Incoming, Full<Bytes>>;

#[derive(Clone)]
struct Proxy {
    client: Client<HttpConnector, Incoming>,
    upstream: Arc<Upstream>,
}

impl Proxy {
    async fn forward(
        self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let version = request.version();
        let Some(uri) = self.upstream.uri_for(request.uri()) else {
            return plain(StatusCode::BAD_REQUEST, "bad request target\n", version);
        };
        *request.uri_mut() = uri;
        // Whatever the client spoke (HTTP/2 included), the upstream gets HTTP/1.1.
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        remove_hop_by_hop(headers);
        headers.insert(header::HOST, self.upstream.host.clone());
        append_forwarded_for(headers, peer);
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
                tracing::warn!(error = %DisplayChain(&error), "upstream request failed");
                // A non-200 status makes `EventSource` stop reconnecting for good. SSE-RULES.md
                // allows a proxy to answer a request that asks for `text/event-stream` with
                // `200 text/event-stream`, a jittered `retry:` and a clean close instead, so
                // browsers keep retrying until the upstream is back. Not done here (a plain 502
                // is what other clients expect); to offer it, check
                // `tower_sse::asks_for_event_stream(&headers)` before sending, answer an empty
                // `text/event-stream` body, and set `retry_jitter` on the layer: the layer adds
                // the `retry:` line.
                plain(
                    StatusCode::BAD_GATEWAY,
                    "502 bad gateway: upstream unreachable\n",
                    version,
                )
            }
        }
    }
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
    retry: Toggle,
    heartbeat: Toggle,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    drain: Option<Duration>,
}

/// An option with a value, an opt-out flag, or neither (the layer's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Toggle {
    Default,
    Set(Duration),
    Off,
}

/// Parses the arguments (without the program name). `Err` holds a one-line message.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut listen = None;
    let mut upstream = None;
    let mut retry = None;
    let mut heartbeat = None;
    let mut idle_timeout = None;
    let mut max_lifetime = None;
    let mut drain = None;

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
            "--retry" => once(
                &mut retry,
                "--retry/--no-retry",
                Toggle::Set(duration(flag, &value()?)?),
            )?,
            "--heartbeat" => once(
                &mut heartbeat,
                "--heartbeat/--no-heartbeat",
                Toggle::Set(duration(flag, &value()?)?),
            )?,
            "--idle-timeout" => once(&mut idle_timeout, flag, duration(flag, &value()?)?)?,
            "--max-lifetime" => once(&mut max_lifetime, flag, duration(flag, &value()?)?)?,
            "--drain" => once(&mut drain, flag, duration(flag, &value()?)?)?,
            "--no-retry" | "--no-heartbeat" => {
                if inline.is_some() {
                    return Err(format!("{flag} takes no value"));
                }
                if flag == "--no-retry" {
                    once(&mut retry, "--retry/--no-retry", Toggle::Off)?;
                } else {
                    once(&mut heartbeat, "--heartbeat/--no-heartbeat", Toggle::Off)?;
                }
            }
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }

    let Some(upstream) = upstream else {
        return Err("missing --upstream".to_owned());
    };
    Ok(Command::Run(Box::new(Options {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        upstream,
        retry: retry.unwrap_or(Toggle::Default),
        heartbeat: heartbeat.unwrap_or(Toggle::Default),
        idle_timeout,
        max_lifetime,
        drain,
    })))
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
        assert_eq!(options.retry, Toggle::Default);
        assert_eq!(options.heartbeat, Toggle::Default);
        assert_eq!(options.idle_timeout, None);
        assert_eq!(options.max_lifetime, None);
        assert_eq!(options.drain, None);
    }

    #[test]
    fn every_flag_is_read_in_both_spellings() {
        let options = options(
            "--listen=127.0.0.1:0 --upstream http://u:1/base/ --retry 1500ms --no-heartbeat \
             --idle-timeout=60s --max-lifetime 30m --drain 200ms",
        );
        assert_eq!(options.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(options.upstream.base_path, "/base");
        assert_eq!(options.retry, Toggle::Set(Duration::from_millis(1500)));
        assert_eq!(options.heartbeat, Toggle::Off);
        assert_eq!(options.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(options.max_lifetime, Some(Duration::from_secs(1800)));
        assert_eq!(options.drain, Some(Duration::from_millis(200)));
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
