//! Run with: cargo run --example axum
//!
//! Then: curl -N http://127.0.0.1:3000/ticks
//!
//! Per-route configuration with axum 0.8: two event-stream routes, each with its own `SseLayer`,
//! one set of counters shared by both, a JSON route that stays compressed, and a graceful
//! shutdown that drains the streams.
//!
//! | route | what | layer |
//! |---|---|---|
//! | `GET /ticks` | a `tick` every 7 s (resumes after `Last-Event-ID`) | heartbeat 5 s, retry 1 s |
//! | `GET /feed` | `quote` every 200 ms, `news` every 5 s | heartbeat 15 s, retry 5 s ± 20 %, (1) |
//! | `GET /api/items` | JSON, gzip-compressed when asked | - |
//! | `GET /metrics` | the counters of both SSE routes, Prometheus text | - |
//!
//! (1) `slow_client` with `SlowClientPolicy::LatestPerType`: a client that reads slower than
//! the feed gets the newest `quote` and every `news`.
//!
//! Things to try:
//!
//! ```text
//! curl -N http://127.0.0.1:3000/ticks                          # retry: 1000, ticks, heartbeats
//! curl -N -H 'Last-Event-ID: 41' http://127.0.0.1:3000/ticks   # resumes at 42
//! curl -N http://127.0.0.1:3000/feed                           # retry: 4000-6000, quotes, news
//! curl -sD - -o /dev/null -H 'Accept-Encoding: gzip' http://127.0.0.1:3000/api/items  # gzip
//! curl -sD - -o /dev/null -H 'Accept-Encoding: gzip' -m 1 http://127.0.0.1:3000/feed  # plain
//! curl http://127.0.0.1:3000/metrics
//! ```
//!
//! `/feed` sheds load: when `--feed-capacity` event streams (of either route) are already
//! open, the handler answers with an event stream that ends at once and, through an
//! `SseOverride` in its response extensions, tells that one client to come back in 30 s ± 50 %
//! (a 503 would make `EventSource` give up). Start with `--feed-capacity 0` to see it.
//!
//! Options: `--listen ADDR` (default `127.0.0.1:3000`; the first line on stdout is the address
//! actually bound, so `--listen 127.0.0.1:0` works), `--feed-capacity N` (default 100);
//! `RUST_LOG` for logs on stderr (default `info,tower_sse=debug`). Ctrl-C drains the event
//! streams (each ends within 5 s, with a `retry:` hint) and exits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::IntervalStream;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::trace::TraceLayer;
use tower_sse::{
    CloseReason, SlowClient, SlowClientPolicy, SseLayer, SseMetrics, SseOverride, SseShutdown,
    not_sse,
};

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_FEED_CAPACITY: u64 = 100;
/// Each stream ends at a random moment in this window after Ctrl-C.
const DRAIN_WINDOW: Duration = Duration::from_secs(5);
/// Slower than the `/ticks` heartbeat, so that heartbeats show between ticks.
const TICK_EVERY: Duration = Duration::from_secs(7);

#[derive(Clone)]
struct AppState {
    /// The counters of both event-stream routes.
    metrics: SseMetrics,
    /// `/feed` sends clients away for a while once this many event streams are open.
    feed_capacity: u64,
}

#[tokio::main]
async fn main() {
    let (addr, feed_capacity) = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("axum example: {message}");
            eprintln!("usage: cargo run --example axum -- [--listen ADDR] [--feed-capacity N]");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("axum example: cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    println!("listening on http://{}", listener.local_addr().unwrap());
    std::io::stdout().flush().ok();

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_sse=debug".into()),
        )
        .init();

    let shutdown = SseShutdown::new();
    let metrics = SseMetrics::new();
    let app = app(&shutdown, &metrics, feed_capacity);

    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::signal::ctrl_c().await.ok();
            println!(
                "shutting down: draining event streams (at most {} s)",
                DRAIN_WINDOW.as_secs()
            );
            // Every live stream ends at its own moment in the window, at an event boundary,
            // with a `retry:` hint; `axum::serve` then sees its connections finish.
            shutdown.drain();
        })
        .await
        .expect("server error");
    println!("bye");
}

fn app(shutdown: &SseShutdown, metrics: &SseMetrics, feed_capacity: u64) -> Router {
    // One layer per route, each with the options its route needs. Both count into `metrics`
    // and stop on the same `shutdown`.
    let ticks_layer = SseLayer::new()
        .heartbeat(Duration::from_secs(5))
        .retry(Duration::from_secs(1))
        .metrics(metrics.clone())
        .shutdown(shutdown.clone())
        .drain_window(DRAIN_WINDOW);
    let feed_layer = SseLayer::new()
        .heartbeat(Duration::from_secs(15))
        .retry(Duration::from_secs(5))
        .retry_jitter(0.2)
        .metrics(metrics.clone())
        .shutdown(shutdown.clone())
        .drain_window(DRAIN_WINDOW)
        // A client that reads slower than the feed gets the newest `quote` and every `news`.
        .slow_client(SlowClient::new().policy(SlowClientPolicy::LatestPerType));

    let state = AppState {
        metrics: metrics.clone(),
        feed_capacity,
    };

    Router::new()
        .route("/ticks", get(ticks).layer(ticks_layer))
        .route("/feed", get(feed).layer(feed_layer))
        .route("/api/items", get(items))
        .route("/metrics", get(prometheus))
        .with_state(state)
        // Router layers wrap route layers: a request goes Trace -> Compression -> the route's
        // SseLayer -> the handler, and the response comes back the other way.
        //
        // - The compressor is *outside* the SseLayers. It picks its encoding from the client's
        //   `Accept-Encoding` before an SseLayer can rewrite it to `identity`, so `not_sse` in its
        //   predicate is what keeps it off event streams (tower-http's `DefaultPredicate` skips
        //   `text/event-stream` only when spelled in lower case; `not_sse` in any case, with
        //   parameters). JSON and `/metrics` are compressed as usual.
        // - With one SseLayer around a whole app, put it outside the compressor instead
        //   (`ServiceBuilder::new().layer(SseLayer::new()).layer(CompressionLayer::new())`):
        //   the compressor then sees `Accept-Encoding: identity` on requests for event streams.
        // - TraceLayer is outermost, so traces show the headers the client gets.
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(not_sse))),
        )
}

/// `tick` events, the first at once, then one every [`TICK_EVERY`]. A reconnecting client sends
/// `Last-Event-ID` and carries on from the next number.
async fn ticks(headers: HeaderMap) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok()?.parse::<u64>().ok())
        .map_or(1, |last| last.saturating_add(1));
    let interval = tokio::time::interval(TICK_EVERY);
    let ticks = IntervalStream::new(interval)
        .zip(stream::iter(first..))
        .map(|(_, n)| {
            Ok(Event::default()
                .event("tick")
                .id(n.to_string())
                .data(format!("tick {n}")))
        });
    // No `KeepAlive` here: the layer's heartbeats replace it.
    Sse::new(ticks)
}

/// A live feed: `quote` every 200 ms, `news` every 5 s. No ids: only the latest values matter.
async fn feed(State(state): State<AppState>) -> Response {
    let open = state.metrics.snapshot().open_streams;
    if open >= state.feed_capacity {
        // Too many streams: answer with a stream that ends at once. The override changes the
        // layer's configuration for this one response: a long, widely jittered `retry:` hint so
        // that the clients sent away come back spread over 15-45 s, and no heartbeat.
        let mut response = Sse::new(stream::empty::<Result<Event, Infallible>>()).into_response();
        response.extensions_mut().insert(
            SseOverride::new()
                .retry(Duration::from_secs(30))
                .retry_jitter(0.5)
                .no_heartbeat(),
        );
        return response;
    }

    let quotes = IntervalStream::new(tokio::time::interval(Duration::from_millis(200)))
        .zip(stream::iter(0_u32..))
        .map(|(_, n)| {
            // A price that wanders between 95 and 105.
            let price = 100.0 + 5.0 * (f64::from(n) * 0.1).sin();
            Event::default()
                .event("quote")
                .data(format!(r#"{{"symbol":"TSSE","price":{price:.2}}}"#))
        });
    let news = IntervalStream::new(tokio::time::interval(Duration::from_secs(5)))
        .zip(stream::iter(1_u32..))
        .map(|(_, n)| {
            Event::default()
                .event("news")
                .data(format!("headline #{n}"))
        });
    Sse::new(stream::select(quotes, news).map(Ok::<_, Infallible>)).into_response()
}

/// A JSON list, big enough for the compressor to bother (tower-http skips bodies under 32 bytes).
async fn items() -> impl IntoResponse {
    let mut json = String::from("[");
    for i in 1..=50 {
        if i > 1 {
            json.push(',');
        }
        write!(json, r#"{{"id":{i},"name":"item {i}","in_stock":true}}"#).unwrap();
    }
    json.push(']');
    ([(header::CONTENT_TYPE, "application/json")], json)
}

/// The counters in the Prometheus text exposition format.
async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.metrics.snapshot();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        writeln!(out, "# HELP {name} {help}").unwrap();
        writeln!(out, "# TYPE {name} {kind}").unwrap();
        writeln!(out, "{name} {value}").unwrap();
    };
    metric(
        "sse_open_streams",
        "gauge",
        "Event streams open now.",
        s.open_streams,
    );
    metric(
        "sse_opened_total",
        "counter",
        "Event streams opened.",
        s.opened,
    );
    metric(
        "sse_bytes_total",
        "counter",
        "Bytes sent on event streams.",
        s.bytes,
    );
    metric("sse_events_total", "counter", "Events sent.", s.events);
    metric(
        "sse_heartbeats_total",
        "counter",
        "Heartbeat comments sent.",
        s.heartbeats,
    );
    metric(
        "sse_heartbeats_skipped_total",
        "counter",
        "Heartbeats not sent because the upstream was mid-line.",
        s.heartbeats_skipped,
    );
    metric(
        "sse_queued_bytes",
        "gauge",
        "Bytes waiting in slow-client buffers.",
        s.queued_bytes,
    );
    metric(
        "sse_events_dropped_total",
        "counter",
        "Events dropped by the DropOldest policy.",
        s.events_dropped,
    );
    metric(
        "sse_events_coalesced_total",
        "counter",
        "Events replaced by a newer one of their type (LatestPerType).",
        s.events_coalesced,
    );
    writeln!(
        out,
        "# HELP sse_closed_total Event streams closed, by reason."
    )
    .unwrap();
    writeln!(out, "# TYPE sse_closed_total counter").unwrap();
    for reason in CloseReason::ALL {
        writeln!(
            out,
            "sse_closed_total{{reason=\"{reason}\"}} {}",
            s.closed(reason)
        )
        .unwrap();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// `--listen ADDR` (default 127.0.0.1:3000) and `--feed-capacity N` (default 100).
fn parse_args() -> Result<(SocketAddr, u64), String> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut feed_capacity = DEFAULT_FEED_CAPACITY.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => addr = args.next().ok_or("--listen needs an address")?,
            "--feed-capacity" => {
                feed_capacity = args.next().ok_or("--feed-capacity needs a number")?;
            }
            "-h" | "--help" => return Err("help".to_owned()),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let addr = addr
        .parse()
        .map_err(|error| format!("bad listen address {addr:?}: {error}"))?;
    let feed_capacity = feed_capacity
        .parse()
        .map_err(|error| format!("bad feed capacity {feed_capacity:?}: {error}"))?;
    Ok((addr, feed_capacity))
}
