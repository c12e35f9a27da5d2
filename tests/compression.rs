//! Compression around the layer: tower-http's `CompressionLayer` outside and inside `SseLayer`
//! on one real server. Event streams arrive plain and at once, everything else stays compressed,
//! and the inner service sees `Accept-Encoding: identity` only on requests for event streams.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::Incoming;
use support::{next_data, serve};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_sse::{SseLayer, not_sse};

const TIMEOUT: Duration = Duration::from_secs(4);

/// A JSON document large enough that gzip shrinks it a lot.
fn json() -> String {
    let items: Vec<String> = (0..2000)
        .map(|i| format!(r#"{{"id":{i},"name":"item number {i}","tags":["a","b"]}}"#))
        .collect();
    format!(r#"{{"items":[{}]}}"#, items.join(","))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("not gzip");
    out
}

fn data_frame(bytes: Bytes) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(bytes))
}

/// The event stream's body: what the test sends, one frame per message, until it drops the
/// sender. (A `StreamBody` over a tokio channel, not `http_body_util::channel::Channel`: the
/// latter panics when polled again after its end, which tower-http's gzip body does.)
type EventBody = StreamBody<
    tokio_stream::adapters::Map<
        ReceiverStream<Bytes>,
        fn(Bytes) -> Result<Frame<Bytes>, Infallible>,
    >,
>;

type AppBody = Either<Full<Bytes>, EventBody>;

/// What the innermost service reports to the test: each request's path and headers, and the
/// sender of each event stream it opened.
struct Probes {
    seen: mpsc::UnboundedReceiver<(String, HeaderMap)>,
    streams: mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>,
}

/// The application: `/events` is an event stream the test feeds over time, anything else a
/// large JSON body.
fn app() -> (
    impl tower::Service<
        Request<Incoming>,
        Response = Response<AppBody>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    Probes,
) {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let service = tower::service_fn(move |request: Request<Incoming>| {
        let seen_tx = seen_tx.clone();
        let streams_tx = streams_tx.clone();
        async move {
            let path = request.uri().path().to_owned();
            let _ = seen_tx.send((path.clone(), request.headers().clone()));
            let response = if path == "/events" {
                let (tx, rx) = mpsc::channel(16);
                let _ = streams_tx.send(tx);
                let to_frame: fn(Bytes) -> Result<Frame<Bytes>, Infallible> = data_frame;
                let body: EventBody = StreamBody::new(ReceiverStream::new(rx).map(to_frame));
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Either::Right(body))
                    .unwrap()
            } else {
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Either::Left(Full::from(json())))
                    .unwrap()
            };
            Ok::<_, Infallible>(response)
        }
    });
    (service, Probes { seen, streams })
}

/// Serves the application with a default `CompressionLayer` outside the `SseLayer` and a
/// compressor that compresses everything (`SizeAbove::new(0)`, no content-type exception)
/// inside it.
async fn serve_sandwich(sse: SseLayer) -> (SocketAddr, Probes) {
    let (app, probes) = app();
    let service = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(sse)
        .layer(CompressionLayer::new().compress_when(SizeAbove::new(0)))
        .service(app);
    (serve(service).await, probes)
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::default()).unwrap()
}

async fn fetch(request: Request<Full<Bytes>>) -> Response<Incoming> {
    tokio::time::timeout(TIMEOUT, support::client(false).request(request))
        .await
        .expect("no response in time")
        .unwrap()
}

async fn collect(response: Response<Incoming>) -> Bytes {
    tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .expect("body did not end in time")
        .unwrap()
        .to_bytes()
}

/// Asserts `/json` comes back gzip-compressed once and decodes to the original document.
async fn assert_json_is_gzipped(addr: SocketAddr, accept: &str) {
    let response = fetch(get(
        addr,
        "/json",
        &[("accept", accept), ("accept-encoding", "gzip")],
    ))
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip", "{accept}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(headers.get(header::CACHE_CONTROL).is_none(), "{headers:?}");
    assert!(headers.get("x-accel-buffering").is_none(), "{headers:?}");
    let compressed = collect(response).await;
    let original = json();
    assert!(
        compressed.len() * 4 < original.len(),
        "{} compressed bytes for {} bytes",
        compressed.len(),
        original.len()
    );
    assert_eq!(String::from_utf8(gunzip(&compressed)).unwrap(), original);
}

#[tokio::test]
async fn event_stream_arrives_plain_and_at_once_between_two_compressors_while_json_stays_gzipped() {
    let sse = SseLayer::new()
        .retry(Duration::from_millis(1000))
        .no_heartbeat();
    let (addr, mut probes) = serve_sandwich(sse).await;

    let response = fetch(get(
        addr,
        "/events",
        &[("accept", "text/event-stream"), ("accept-encoding", "gzip")],
    ))
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(
        headers.get(header::CONTENT_ENCODING).is_none(),
        "{headers:?}"
    );
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache, no-transform");
    assert_eq!(headers["x-accel-buffering"], "no");
    let tx = tokio::time::timeout(TIMEOUT, probes.streams.recv())
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let mut received = Vec::new();

    let first = next_data(&mut body, TIMEOUT).await.unwrap();
    assert_eq!(first, "retry: 1000\n");
    received.extend_from_slice(&first);

    // The first event is readable as soon as it is sent, while the stream is still open.
    let sent = Instant::now();
    tx.send(Bytes::from_static(b"id: 1\ndata: first\n\n"))
        .await
        .unwrap();
    let event = next_data(&mut body, Duration::from_millis(500))
        .await
        .expect("stream ended early");
    let latency = sent.elapsed();
    assert_eq!(event, "id: 1\ndata: first\n\n");
    assert!(latency < Duration::from_millis(500), "{latency:?}");
    received.extend_from_slice(&event);

    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send(Bytes::from_static(b"id: 2\ndata: second\n\n"))
        .await
        .unwrap();
    let event = next_data(&mut body, Duration::from_millis(500))
        .await
        .expect("stream ended early");
    assert_eq!(event, "id: 2\ndata: second\n\n");
    received.extend_from_slice(&event);
    drop(tx);
    while let Some(data) = next_data(&mut body, TIMEOUT).await {
        received.extend_from_slice(&data);
    }
    assert_eq!(
        received,
        b"retry: 1000\nid: 1\ndata: first\n\nid: 2\ndata: second\n\n"
    );
    let parsed = support::sse_parser::parse(&received);
    assert_eq!(
        parsed.triples(),
        [("message", "first", "1"), ("message", "second", "2")]
    );
    assert_eq!(parsed.retries, [1000]);

    // On the same server, JSON is compressed (once) by the inner compressor…
    assert_json_is_gzipped(addr, "application/json").await;
    // …and by the outer one when the request also lists `text/event-stream` (the inner
    // compressor was told `identity`, the outer one still sees the client's `gzip`).
    assert_json_is_gzipped(addr, "text/event-stream, application/json").await;
}

#[tokio::test]
async fn event_stream_is_gzipped_by_the_inner_compressor_when_the_bypass_is_off() {
    // Control for the test above: the same stack, the same request, only the bypass off.
    let sse = SseLayer::new()
        .retry(Duration::from_millis(1000))
        .no_heartbeat()
        .no_compression_bypass();
    let (addr, mut probes) = serve_sandwich(sse).await;

    let response = fetch(get(
        addr,
        "/events",
        &[("accept", "text/event-stream"), ("accept-encoding", "gzip")],
    ))
    .await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let (_, headers) = probes.seen.recv().await.unwrap();
    assert_eq!(headers[header::ACCEPT_ENCODING], "gzip");
    let tx = probes.streams.recv().await.unwrap();
    tx.send(Bytes::from_static(b"id: 1\ndata: first\n\n"))
        .await
        .unwrap();
    tx.send(Bytes::from_static(b"id: 2\ndata: second\n\n"))
        .await
        .unwrap();
    drop(tx);
    let compressed = collect(response).await;
    // An encoded stream passes through the layer untouched: no retry hint inside the gzip.
    assert_eq!(
        String::from_utf8(gunzip(&compressed)).unwrap(),
        "id: 1\ndata: first\n\nid: 2\ndata: second\n\n"
    );
}

#[tokio::test]
async fn inner_service_sees_identity_only_on_event_stream_requests_and_other_headers_unchanged() {
    let (addr, mut probes) = serve_sandwich(SseLayer::new().no_heartbeat()).await;

    let response = fetch(get(
        addr,
        "/events",
        &[
            ("accept", "text/event-stream"),
            ("accept-encoding", "gzip, br"),
            ("last-event-id", "41"),
            ("cache-control", "no-cache"),
        ],
    ))
    .await;
    drop(probes.streams.recv().await.unwrap());
    drop(collect(response).await);
    let (path, seen) = probes.seen.recv().await.unwrap();
    assert_eq!(path, "/events");
    let all = |name: header::HeaderName| -> Vec<String> {
        seen.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(all(header::ACCEPT_ENCODING), ["identity"]);
    assert_eq!(all(header::ACCEPT), ["text/event-stream"]);
    assert_eq!(
        all(header::HeaderName::from_static("last-event-id")),
        ["41"]
    );
    assert_eq!(all(header::CACHE_CONTROL), ["no-cache"]);

    let response = fetch(get(
        addr,
        "/json",
        &[
            ("accept", "application/json"),
            ("accept-encoding", "gzip, br"),
            ("last-event-id", "41"),
            ("cache-control", "max-age=0"),
        ],
    ))
    .await;
    drop(collect(response).await);
    let (path, seen) = probes.seen.recv().await.unwrap();
    assert_eq!(path, "/json");
    let all = |name: header::HeaderName| -> Vec<String> {
        seen.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(all(header::ACCEPT_ENCODING), ["gzip, br"]);
    assert_eq!(all(header::ACCEPT), ["application/json"]);
    assert_eq!(
        all(header::HeaderName::from_static("last-event-id")),
        ["41"]
    );
    assert_eq!(all(header::CACHE_CONTROL), ["max-age=0"]);
}

const MIXED_CASE_EVENTS: &str = "id: 1\ndata: mixed case\n\n";

/// Serves an event stream with `Content-Type: Text/Event-Stream` behind an `SseLayer` and an
/// outer `CompressionLayer` with `predicate`; returns the response headers and body bytes.
async fn fetch_mixed_case_stream<P>(predicate: P) -> (HeaderMap, Bytes)
where
    P: Predicate + Send + Sync + 'static,
{
    let service = ServiceBuilder::new()
        .layer(CompressionLayer::new().compress_when(predicate))
        .layer(
            SseLayer::new()
                .retry(Duration::from_millis(1000))
                .no_heartbeat(),
        )
        .service_fn(|_: Request<Incoming>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .header(header::CONTENT_TYPE, "Text/Event-Stream")
                    .body(Full::<Bytes>::from(MIXED_CASE_EVENTS))
                    .unwrap(),
            )
        });
    let addr = serve(service).await;
    let response = fetch(get(
        addr,
        "/events",
        &[("accept", "text/event-stream"), ("accept-encoding", "gzip")],
    ))
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "Text/Event-Stream");
    (headers, collect(response).await)
}

#[tokio::test]
async fn outer_custom_predicate_with_not_sse_leaves_a_mixed_case_event_stream_uncompressed() {
    let expected = format!("retry: 1000\n{MIXED_CASE_EVENTS}");

    let (headers, body) = fetch_mixed_case_stream(SizeAbove::new(0).and(not_sse)).await;
    assert!(
        headers.get(header::CONTENT_ENCODING).is_none(),
        "{headers:?}"
    );
    assert_eq!(body, expected);

    let (headers, body) = fetch_mixed_case_stream(DefaultPredicate::new().and(not_sse)).await;
    assert!(
        headers.get(header::CONTENT_ENCODING).is_none(),
        "{headers:?}"
    );
    assert_eq!(body, expected);
}

#[tokio::test]
async fn the_same_outer_predicate_without_not_sse_compresses_the_event_stream() {
    let expected = format!("retry: 1000\n{MIXED_CASE_EVENTS}");

    let (headers, body) = fetch_mixed_case_stream(SizeAbove::new(0)).await;
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(String::from_utf8(gunzip(&body)).unwrap(), expected);

    // tower-http's default predicate compares the media type case-sensitively: the mixed-case
    // stream slips through it, which is why `not_sse` exists.
    let (headers, body) = fetch_mixed_case_stream(DefaultPredicate::new()).await;
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(String::from_utf8(gunzip(&body)).unwrap(), expected);
}
