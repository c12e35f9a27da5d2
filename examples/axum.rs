//! Run with: cargo run --example axum
//!
//! Then: curl -N http://127.0.0.1:3000/ticks
//!
//! One lesson: per-route configuration with axum 0.8. Each event-stream route has its own
//! `SseLayer`; both count into one `SseMetrics` and drain on one `SseShutdown`; the JSON route
//! stays compressed, because `not_sse` keeps the outer compressor off event streams.
//!
//! | route | what | layer |
//! |---|---|---|
//! | `GET /ticks` | a `tick` every 7 s (resumes after `Last-Event-ID`) | heartbeat 5 s, retry 1 s |
//! | `GET /feed` | a `quote` every 200 ms | heartbeat 15 s, retry 5 s ± 20 %, slow-client buffer |
//! | `GET /api/items` | JSON, gzip-compressed when asked | - |
//! | `GET /metrics` | the counters of both SSE routes | - |
//!
//! ```text
//! curl -N -H 'Last-Event-ID: 41' http://127.0.0.1:3000/ticks   # retry: 1000, 42, 43, heartbeats
//! curl -N http://127.0.0.1:3000/feed                           # retry: 4000-6000, quotes
//! curl -sD - -o /dev/null -H 'Accept-Encoding: gzip' http://127.0.0.1:3000/api/items  # gzip
//! curl -sD - -o /dev/null -H 'Accept-Encoding: gzip' -m 1 http://127.0.0.1:3000/feed  # plain
//! ```
//!
//! When 100 event streams are open, `/feed` sends the next client away for 30 s ± 50 % with an
//! `SseOverride` on a stream that ends at once (a 503 would make `EventSource` give up). Ctrl-C
//! drains the event streams (each ends within 5 s, with a `retry:` hint) and exits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::IntervalStream;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_sse::{
    SlowClient, SlowClientPolicy, SseLayer, SseMetrics, SseOverride, SseShutdown, not_sse,
};

/// Each stream ends at a random moment in this window after Ctrl-C.
const DRAIN_WINDOW: Duration = Duration::from_secs(5);
/// `/feed` sends clients away once this many event streams are open.
const FEED_CAPACITY: u64 = 100;

#[tokio::main]
async fn main() {
    let shutdown = SseShutdown::new();
    let metrics = SseMetrics::new();

    // One layer per route, each with the options its route needs.
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
        // A client that reads slower than the feed gets the newest `quote`.
        .slow_client(SlowClient::new().policy(SlowClientPolicy::LatestPerType));

    let app = Router::new()
        .route("/ticks", get(ticks).layer(ticks_layer))
        .route("/feed", get(feed).layer(feed_layer))
        .route("/api/items", get(items))
        .route("/metrics", get(counters))
        .with_state(metrics)
        // The compressor is outside the SseLayers: it picks its encoding before an SseLayer can
        // rewrite `Accept-Encoding` to `identity`, so `not_sse` in its predicate is what keeps it
        // off event streams (tower-http's `DefaultPredicate` skips `text/event-stream` only in
        // lower case). With one SseLayer around a whole app, put it outside the compressor.
        .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(not_sse)));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::signal::ctrl_c().await.ok();
            // Every live stream ends at its own moment in the window, at an event boundary,
            // with a `retry:` hint; `axum::serve` then sees its connections finish.
            shutdown.drain();
        })
        .await
        .unwrap();
}

/// `tick` events, the first at once, then one every 7 s (slower than the heartbeat, so that
/// heartbeats show). A reconnecting client sends `Last-Event-ID` and carries on.
async fn ticks(headers: HeaderMap) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok()?.parse::<u64>().ok())
        .map_or(1, |last| last.saturating_add(1));
    let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(7)))
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

/// A live feed of `quote`s every 200 ms. No ids: only the latest value matters.
async fn feed(State(metrics): State<SseMetrics>) -> Response {
    if metrics.snapshot().open_streams >= FEED_CAPACITY {
        // Too many streams: a stream that ends at once, with a long, widely jittered `retry:`
        // for this one response, so that the clients sent away come back spread over 15-45 s.
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
            let price = 100.0 + 5.0 * (f64::from(n) * 0.1).sin();
            let data = format!(r#"{{"symbol":"TSSE","price":{price:.2}}}"#);
            Ok::<_, Infallible>(Event::default().event("quote").data(data))
        });
    Sse::new(quotes).into_response()
}

/// A JSON list, big enough for the compressor to bother (tower-http skips bodies under 32 bytes).
async fn items() -> impl IntoResponse {
    let items: Vec<String> = (1..=50)
        .map(|i| format!(r#"{{"id":{i},"name":"item {i}","in_stock":true}}"#))
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("[{}]", items.join(",")),
    )
}

/// A few of the counters, as text.
async fn counters(State(metrics): State<SseMetrics>) -> String {
    let s = metrics.snapshot();
    format!(
        "open {} opened {} events {} heartbeats {} coalesced {}\n",
        s.open_streams, s.opened, s.events, s.heartbeats, s.events_coalesced
    )
}
