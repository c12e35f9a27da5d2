//! axum 0.8: `SseLayer` on one route of a `Router`, served by `axum::serve` on loopback, with
//! axum's own `Sse` response and its `KeepAlive`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::Full;
use support::next_data;
use support::sse_parser::parse;
use tower_sse::SseLayer;

const TIMEOUT: Duration = Duration::from_secs(4);
/// Silence between two upstream events: long enough for axum's keep-alive (50 ms) to fire.
const GAP: Duration = Duration::from_millis(120);
const KEEP_ALIVE: Duration = Duration::from_millis(50);

/// The upstream's events, and the exact bytes axum writes for each.
fn upstream_event(index: usize) -> Option<(Event, &'static str)> {
    match index {
        0 => Some((
            Event::default().id("1").event("greeting").data("hello"),
            "id: 1\nevent: greeting\ndata: hello\n\n",
        )),
        1 => Some((
            Event::default().data("two\nlines"),
            "data: two\ndata: lines\n\n",
        )),
        2 => Some((
            Event::default().event("bye").id("3").data("see you"),
            "event: bye\nid: 3\ndata: see you\n\n",
        )),
        _ => None,
    }
}

const KEEP_ALIVE_BYTES: &str = ": ka\n\n";

/// The upstream's bytes without keep-alives.
fn upstream_bytes() -> String {
    (0..)
        .map_while(upstream_event)
        .map(|(_, bytes)| bytes)
        .collect()
}

async fn events() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = stream::unfold(0, |index| async move {
        let (event, _) = upstream_event(index)?;
        if index > 0 {
            tokio::time::sleep(GAP).await;
        }
        Some((Ok(event), index + 1))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("ka"))
}

async fn serve_router() -> SocketAddr {
    let router: Router = Router::new()
        .route(
            "/events",
            get(events).layer(SseLayer::new().retry(Duration::from_millis(1500))),
        )
        .route("/plain", get(events));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Requests `path` as an `EventSource` would; returns the headers, the first data frame and all
/// the body bytes.
async fn read_stream(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes, Vec<u8>) {
    let request = Request::get(format!("http://{addr}{path}"))
        .header(header::ACCEPT, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Full::default())
        .unwrap();
    let response = tokio::time::timeout(TIMEOUT, support::client(false).request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let first = next_data(&mut body, TIMEOUT).await.unwrap();
    let mut all = first.to_vec();
    while let Some(data) = next_data(&mut body, TIMEOUT).await {
        all.extend_from_slice(&data);
    }
    (status, headers, first, all)
}

/// The bytes with axum's keep-alive comments removed (they fall between events, each a comment
/// line and a blank line).
fn without_keep_alives(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .replace(KEEP_ALIVE_BYTES, "")
}

#[tokio::test]
async fn layered_route_gets_headers_and_retry_first_while_the_other_route_is_untouched() {
    let addr = serve_router().await;

    let (status, headers, first, all) = read_stream(addr, "/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache, no-transform");
    assert_eq!(headers.get_all(header::CACHE_CONTROL).iter().count(), 1);
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get(header::CONTENT_LENGTH).is_none());
    assert_eq!(first, "retry: 1500\n");
    let rest = all.strip_prefix(b"retry: 1500\n").unwrap();
    assert_eq!(without_keep_alives(rest), upstream_bytes());

    let (status, headers, first, all) = read_stream(addr, "/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert!(headers.get("x-accel-buffering").is_none(), "{headers:?}");
    assert_eq!(first, "id: 1\nevent: greeting\ndata: hello\n\n");
    assert!(!all.windows(6).any(|w| w == b"retry:"), "{all:?}");
    assert_eq!(without_keep_alives(&all), upstream_bytes());
}

#[tokio::test]
async fn axum_sse_with_keep_alive_parses_to_the_same_events_through_the_layer() {
    let addr = serve_router().await;
    let ((_, _, _, layered), (_, _, _, plain)) =
        tokio::join!(read_stream(addr, "/events"), read_stream(addr, "/plain"));

    // axum's keep-alives went through the layer (two gaps of 120 ms, one every 50 ms).
    let keep_alives = |bytes: &[u8]| {
        bytes
            .windows(KEEP_ALIVE_BYTES.len())
            .filter(|w| *w == KEEP_ALIVE_BYTES.as_bytes())
            .count()
    };
    assert!(keep_alives(&layered) >= 2, "{layered:?}");
    assert!(keep_alives(&plain) >= 2, "{plain:?}");

    let through_layer = parse(&layered);
    let upstream = parse(&plain);
    let expected = [
        ("greeting", "hello", "1"),
        ("message", "two\nlines", "1"),
        ("bye", "see you", "3"),
    ];
    assert_eq!(upstream.triples(), expected);
    assert_eq!(through_layer.events, upstream.events);
    assert_eq!(through_layer.retries, [1500]);
    assert!(upstream.retries.is_empty());
    assert_eq!(through_layer.comments, keep_alives(&layered));
}
