//! Run with: cargo run --example tonic
//!
//! Then: curl -N http://127.0.0.1:3000/events
//!
//! A tonic gRPC server-streaming method and an SSE route on one port, one `SseLayer` around
//! both: the event stream gets the layer's treatment; the gRPC responses pass through untouched
//! (headers, each message as it is sent, the `grpc-status` trailer), as the client shows:
//! `cargo run --example tonic -- --client` (5 messages 300 ms apart, no SSE header, status 0).
//!
//! No protoc: `demo.Ticker/Watch` is served and called with tonic's `Grpc::server_streaming`
//! and a codec of UTF-8 strings. hyper-util's `auto` builder speaks HTTP/1.1 and HTTP/2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use bytes::{Buf, BufMut};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_stream::wrappers::IntervalStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};
use tower::ServiceBuilder;
use tower_sse::SseLayer;

const ADDR: &str = "127.0.0.1:3000";
const WATCH: &str = "/demo.Ticker/Watch";

/// The codec, its encoder and its decoder: a message is the UTF-8 bytes of a `String`.
#[derive(Debug, Clone, Copy, Default)]
struct Utf8;

impl Codec for Utf8 {
    type Encode = String;
    type Decode = String;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        Self
    }
    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for Utf8 {
    type Item = String;
    type Error = Status;
    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for Utf8 {
    type Item = String;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining()).to_vec();
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Status::internal("message is not UTF-8"))
    }
}

/// `tick 1`, `tick 2`, … `tick {count}`, one every `every`.
fn ticks(every: Duration, count: usize) -> impl Stream<Item = String> {
    IntervalStream::new(tokio::time::interval(every))
        .zip(stream::iter(1..=count))
        .map(|(_, n)| format!("tick {n}"))
}

/// `Watch`: `count` messages 300 ms apart, then `grpc-status: 0`.
async fn watch(request: Request<String>) -> Result<Response<TickStream>, Status> {
    let count = request.get_ref().trim().parse();
    let count = count.map_err(|_| Status::invalid_argument("count"))?;
    Ok(Response::new(
        ticks(Duration::from_millis(300), count).map(Ok).boxed(),
    ))
}

type TickStream = BoxStream<'static, Result<String, Status>>;

/// `/events`: a `tick` event every second, forever.
async fn events() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = ticks(Duration::from_secs(1), usize::MAX);
    Sse::new(events.map(|tick| Ok(Event::default().event("tick").data(tick))))
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--client") {
        return client(5).await;
    }
    let router = axum::Router::new()
        .route(
            WATCH,
            post(|request: http::Request<axum::body::Body>| async move {
                tonic::server::Grpc::new(Utf8)
                    .server_streaming(tower::service_fn(watch), request)
                    .await
            }),
        )
        .route("/events", get(events));
    // One layer around everything: the gRPC responses are not event streams, so they pass
    // through as they are; `/events` is one, and gets the layer's treatment.
    let app = ServiceBuilder::new().layer(SseLayer::new()).service(router);

    let listener = tokio::net::TcpListener::bind(ADDR).await.unwrap();
    println!("listening on http://{ADDR} (gRPC {WATCH} and SSE /events)");
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // HTTP/1.1 or HTTP/2 (prior knowledge), whichever the client speaks. Errors are
            // clients going away mid-stream, the way every event stream ends.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Calls `Watch(count)` and prints each message as it arrives, the response's headers of
/// interest, and the final status.
async fn client(count: u32) {
    let channel = tonic::transport::Channel::from_static("http://127.0.0.1:3000");
    let mut grpc = tonic::client::Grpc::new(channel.connect().await.unwrap());
    grpc.ready().await.unwrap();
    let started = tokio::time::Instant::now();
    let (request, path) = (
        Request::new(count.to_string()),
        PathAndQuery::from_static(WATCH),
    );
    let response = grpc.server_streaming(request, path, Utf8).await.unwrap();
    let (metadata, mut messages, _) = response.into_parts();
    println!("content-type: {:?}", metadata.get("content-type"));
    let sse = ["cache-control", "x-accel-buffering"].map(|name| metadata.get(name));
    println!("SSE headers (none added): {sse:?}");
    // `Ok(None)` only after a `grpc-status: 0` trailer: tonic reports a stream that ends
    // without it as an error.
    loop {
        match messages.message().await {
            Ok(Some(message)) => println!("{:>6} ms  {message}", started.elapsed().as_millis()),
            Ok(None) => return println!("end of stream: grpc-status 0"),
            Err(status) => {
                eprintln!("end of stream: {status}");
                std::process::exit(1);
            }
        }
    }
}
