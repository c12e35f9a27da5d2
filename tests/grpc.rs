//! A tonic server-streaming RPC and an SSE route served on one port, the whole router wrapped in
//! `SseLayer`: the gRPC responses pass through byte for byte with their `grpc-status` trailers,
//! the SSE route gets the layer's headers and its `retry:` hint.
//!
//! No protoc: the gRPC service and client are written by hand the way tonic's generated code
//! is (`tonic::server::Grpc::server_streaming`, `tonic::client::Grpc::server_streaming`), with a
//! codec whose messages are UTF-8 strings sent as raw bytes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tower::ServiceBuilder;
use tower_sse::SseLayer;
use tower_sse_test_support::grpc::StringCodec;

/// Upper bound for any single network step of a test.
const STEP: Duration = Duration::from_secs(2);

const SERVICE: &str = "test.Streamer";

// ---------------------------------------------------------------------------------------------
// The server: a hand-written `test.Streamer` service with four server-streaming methods. Each
// takes the number of messages to send, as decimal text.
//
// - `Count`: sends `message 1` .. `message n`, ends with `Ok`.
// - `FailAfter`: sends `n` messages, then ends with `NOT_FOUND` plus a custom trailer.
// - `Reject`: fails before any message (a trailers-only response).
// - `Hang`: sends `n` messages, then never ends.

const FAIL_MESSAGE: &str = "widget 42 is gone (ünïcödé, 100% sure)";
const REJECT_MESSAGE: &str = "no such stream";

type MessageStream = BoxStream<'static, Result<String, Status>>;

fn messages(n: usize) -> impl futures_util::Stream<Item = Result<String, Status>> + Send {
    stream::iter((1..=n).map(|i| Ok(format!("message {i}"))))
}

fn parse_count(request: &tonic::Request<String>) -> Result<usize, Status> {
    request
        .get_ref()
        .parse()
        .map_err(|_| Status::invalid_argument("count must be a number"))
}

async fn count(request: tonic::Request<String>) -> Result<tonic::Response<MessageStream>, Status> {
    let n = parse_count(&request)?;
    Ok(tonic::Response::new(messages(n).boxed()))
}

async fn fail_after(
    request: tonic::Request<String>,
) -> Result<tonic::Response<MessageStream>, Status> {
    let n = parse_count(&request)?;
    let mut status = Status::not_found(FAIL_MESSAGE);
    status
        .metadata_mut()
        .insert("x-detail", "custom-trailer".parse().unwrap());
    let tail = stream::once(async move { Err(status) });
    Ok(tonic::Response::new(messages(n).chain(tail).boxed()))
}

async fn reject(_: tonic::Request<String>) -> Result<tonic::Response<MessageStream>, Status> {
    Err(Status::not_found(REJECT_MESSAGE))
}

async fn hang(request: tonic::Request<String>) -> Result<tonic::Response<MessageStream>, Status> {
    let n = parse_count(&request)?;
    Ok(tonic::Response::new(
        messages(n).chain(stream::pending()).boxed(),
    ))
}

/// What tonic-build would generate for `service Streamer`, minus protobuf.
#[derive(Debug, Clone, Copy, Default)]
struct StreamerServer;

impl NamedService for StreamerServer {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<Request<tonic::body::Body>> for StreamerServer {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(StringCodec);
            let path = request.uri().path().to_owned();
            let method = path
                .strip_prefix(&format!("/{SERVICE}/"))
                .unwrap_or_default();
            let response = match method {
                "Count" => {
                    grpc.server_streaming(tower::service_fn(count), request)
                        .await
                }
                "FailAfter" => {
                    grpc.server_streaming(tower::service_fn(fail_after), request)
                        .await
                }
                "Reject" => {
                    grpc.server_streaming(tower::service_fn(reject), request)
                        .await
                }
                "Hang" => {
                    grpc.server_streaming(tower::service_fn(hang), request)
                        .await
                }
                _ => Status::unimplemented(method).into_http(),
            };
            Ok(response)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The SSE route and the whole app.

fn sse_events() -> Vec<(&'static str, &'static str)> {
    vec![("1", "one"), ("2", "two"), ("3", "three")]
}

async fn events() -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    Sse::new(stream::iter(
        sse_events()
            .into_iter()
            .map(|(id, data)| Ok(Event::default().id(id).data(data))),
    ))
}

/// The gRPC routes and `/events` on one axum router.
fn router() -> axum::Router {
    tonic::service::Routes::new(StreamerServer)
        .into_axum_router()
        .route("/events", get(events))
}

/// The router wrapped in `SseLayer::new()`, served on a fresh port (HTTP/1.1 and HTTP/2).
async fn serve_with_layer() -> SocketAddr {
    support::serve(
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service(router()),
    )
    .await
}

/// The same router without the layer: the reference for "untouched".
async fn serve_without_layer() -> SocketAddr {
    support::serve(router()).await
}

// ---------------------------------------------------------------------------------------------
// Clients.

async fn grpc_client(addr: SocketAddr) -> tonic::client::Grpc<Channel> {
    let channel = tokio::time::timeout(
        STEP,
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .expect("timed out connecting")
    .expect("could not connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    tokio::time::timeout(STEP, grpc.ready())
        .await
        .expect("timed out waiting for the channel")
        .unwrap();
    grpc
}

/// Calls `test.Streamer/<method>` with `request` through tonic's client.
async fn call(
    addr: SocketAddr,
    method: &str,
    request: &str,
) -> Result<tonic::Response<Streaming<String>>, Status> {
    let mut grpc = grpc_client(addr).await;
    let path = PathAndQuery::try_from(format!("/{SERVICE}/{method}")).unwrap();
    tokio::time::timeout(
        STEP,
        grpc.server_streaming(tonic::Request::new(request.to_owned()), path, StringCodec),
    )
    .await
    .expect("timed out waiting for the response head")
}

/// Reads messages until the stream ends: the messages, and the final status (`Ok` = the stream
/// ended with `grpc-status: 0`).
async fn drain(stream: &mut Streaming<String>) -> (Vec<String>, Result<(), Status>) {
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(STEP, stream.message())
            .await
            .expect("timed out waiting for a message")
        {
            Ok(Some(message)) => received.push(message),
            Ok(None) => return (received, Ok(())),
            Err(status) => return (received, Err(status)),
        }
    }
}

fn expected_messages(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("message {i}")).collect()
}

/// One gRPC exchange as it is on the wire (HTTP/2 through hyper's client, no tonic involved).
#[derive(Debug, PartialEq)]
struct RawExchange {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// Sends `request` to `test.Streamer/<method>` as a raw gRPC request and reads the whole
/// response. The `date` header is dropped (it is the only header expected to vary).
async fn raw_grpc(addr: SocketAddr, method: &str, request: &str) -> RawExchange {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(request.as_bytes());
    let request = Request::post(format!("http://{addr}/{SERVICE}/{method}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Full::new(Bytes::from(frame)))
        .unwrap();
    let response = tokio::time::timeout(STEP, support::client(true).request(request))
        .await
        .expect("timed out waiting for the response head")
        .unwrap();
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(STEP, body.collect())
        .await
        .expect("timed out reading the body")
        .unwrap();
    let trailers = collected.trailers().cloned();
    let mut headers = parts.headers;
    headers.remove(header::DATE);
    RawExchange {
        status: parts.status,
        headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// Splits a gRPC response body into its length-prefixed messages.
fn grpc_messages(mut body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated gRPC frame header: {body:?}");
        assert_eq!(body[0], 0, "unexpected compressed flag");
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        assert!(body.len() >= 5 + len, "truncated gRPC message: {body:?}");
        out.push(String::from_utf8(body[5..5 + len].to_vec()).unwrap());
        body = &body[5 + len..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// gRPC through the layer.

#[tokio::test]
async fn a_server_streaming_rpc_through_the_layer_delivers_every_message_in_order_and_ends_ok() {
    let addr = serve_with_layer().await;

    let response = call(addr, "Count", "25").await.unwrap();
    let (metadata, mut stream, _) = response.into_parts();
    assert_eq!(metadata.get("content-type").unwrap(), "application/grpc");

    let (received, end) = drain(&mut stream).await;
    assert_eq!(received, expected_messages(25));
    // tonic reports a 200 that ends without `grpc-status` as an error: `Ok` here means the
    // `grpc-status: 0` trailer crossed the layer.
    assert!(end.is_ok(), "the stream did not end with OK: {end:?}");
}

#[tokio::test]
async fn a_server_streaming_rpc_that_fails_after_its_messages_reports_not_found_with_its_message_and_custom_trailer()
 {
    let addr = serve_with_layer().await;

    let mut stream = call(addr, "FailAfter", "3").await.unwrap().into_inner();
    let (received, end) = drain(&mut stream).await;

    assert_eq!(received, expected_messages(3));
    let status = end.expect_err("the stream ended with OK instead of NOT_FOUND");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), FAIL_MESSAGE);
    assert_eq!(status.metadata().get("x-detail").unwrap(), "custom-trailer");
}

#[tokio::test]
async fn an_rpc_rejected_before_any_message_reports_not_found_from_its_trailers_only_response() {
    let addr = serve_with_layer().await;

    let status = call(addr, "Reject", "0")
        .await
        .expect_err("the call succeeded instead of failing with NOT_FOUND");

    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), REJECT_MESSAGE);
}

#[tokio::test]
async fn each_grpc_message_reaches_the_client_while_the_stream_is_still_open() {
    let addr = serve_with_layer().await;

    // The server sends two messages and then holds the stream open forever: the layer must
    // hand them on at once, not wait for more bytes or for the end.
    let mut stream = call(addr, "Hang", "2").await.unwrap().into_inner();
    for expected in expected_messages(2) {
        let message = tokio::time::timeout(STEP, stream.message())
            .await
            .expect("a message was held back while the stream is open")
            .unwrap()
            .unwrap();
        assert_eq!(message, expected);
    }
}

#[tokio::test]
async fn the_raw_grpc_response_keeps_application_grpc_and_gets_no_sse_headers_or_bytes() {
    let addr = serve_with_layer().await;

    let exchange = raw_grpc(addr, "Count", "3").await;

    assert_eq!(exchange.status, StatusCode::OK);
    assert_eq!(
        exchange.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/grpc"
    );
    assert!(
        exchange.headers.get(header::CACHE_CONTROL).is_none(),
        "cache-control added: {:?}",
        exchange.headers
    );
    assert!(
        exchange.headers.get("x-accel-buffering").is_none(),
        "x-accel-buffering added: {:?}",
        exchange.headers
    );
    // Exactly the length-prefixed messages: no `retry:` line, no heartbeat.
    assert_eq!(grpc_messages(&exchange.body), expected_messages(3));
    let trailers = exchange.trailers.expect("no trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
}

#[tokio::test]
async fn grpc_responses_through_the_layer_equal_those_without_it_headers_bytes_and_trailers() {
    let with_layer = serve_with_layer().await;
    let without_layer = serve_without_layer().await;

    for (method, request) in [("Count", "4"), ("FailAfter", "2"), ("Reject", "0")] {
        let through = raw_grpc(with_layer, method, request).await;
        let reference = raw_grpc(without_layer, method, request).await;
        assert_eq!(through, reference, "{method}({request}) differs");
    }
}

// ---------------------------------------------------------------------------------------------
// The SSE route on the same port.

async fn get_events(
    addr: SocketAddr,
    http2: bool,
) -> (http::response::Parts, hyper::body::Incoming) {
    let request = Request::get(format!("http://{addr}/events"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::default())
        .unwrap();
    let response = tokio::time::timeout(STEP, support::client(http2).request(request))
        .await
        .expect("timed out waiting for the response head")
        .unwrap();
    response.into_parts()
}

/// Checks the layer's work on an `/events` response: headers, a `retry:` line first, then the
/// handler's events unchanged.
async fn assert_layered_event_stream(
    parts: &http::response::Parts,
    mut body: hyper::body::Incoming,
) {
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(
        parts.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    assert_eq!(parts.headers.get("x-accel-buffering").unwrap(), "no");
    let cache_control = parts.headers.get(header::CACHE_CONTROL).unwrap();
    assert!(
        cache_control.to_str().unwrap().contains("no-cache"),
        "cache-control: {cache_control:?}"
    );

    let mut bytes = Vec::new();
    while let Some(data) = support::next_data(&mut body, STEP).await {
        bytes.extend_from_slice(&data);
    }
    assert!(
        bytes.starts_with(b"retry: 3000\n"),
        "the stream does not start with the retry hint: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    let parsed = support::sse_parser::parse(&bytes);
    assert_eq!(parsed.retries, vec![3000]);
    let events: Vec<(&str, &str, &str)> = sse_events()
        .into_iter()
        .map(|(id, data)| ("message", data, id))
        .collect();
    assert_eq!(parsed.triples(), events);
}

#[tokio::test]
async fn the_sse_route_on_the_grpc_port_gets_anti_buffering_headers_and_a_retry_line_first() {
    let addr = serve_with_layer().await;

    let (parts, body) = get_events(addr, false).await;
    assert_eq!(parts.version, http::Version::HTTP_11);
    assert_layered_event_stream(&parts, body).await;
}

#[tokio::test]
async fn grpc_and_sse_streams_run_side_by_side_on_one_port() {
    let addr = serve_with_layer().await;

    // An RPC held open over HTTP/2 while event streams are served over HTTP/1.1 and HTTP/2.
    let mut hanging = call(addr, "Hang", "1").await.unwrap().into_inner();
    let first = tokio::time::timeout(STEP, hanging.message())
        .await
        .expect("timed out waiting for the first message")
        .unwrap();
    assert_eq!(first.as_deref(), Some("message 1"));

    let grpc = async {
        let mut stream = call(addr, "Count", "10").await.unwrap().into_inner();
        drain(&mut stream).await
    };
    let sse_http1 = async {
        let (parts, body) = get_events(addr, false).await;
        assert_layered_event_stream(&parts, body).await;
    };
    let sse_http2 = async {
        let (parts, body) = get_events(addr, true).await;
        assert_eq!(parts.version, http::Version::HTTP_2);
        assert_layered_event_stream(&parts, body).await;
    };
    let ((received, end), (), ()) = tokio::join!(grpc, sse_http1, sse_http2);

    assert_eq!(received, expected_messages(10));
    assert!(end.is_ok(), "the stream did not end with OK: {end:?}");
}
