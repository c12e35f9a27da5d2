//! Run with: cargo run --example tonic
//!
//! Then: curl -N http://127.0.0.1:3000/events
//!
//! A tonic gRPC server-streaming service and an SSE route on one port, one `SseLayer` around
//! both. The event stream gets the layer's headers, `retry:` hint and heartbeats; the gRPC
//! responses (`application/grpc`) pass through untouched: same headers, every message as soon
//! as it is sent, and the `grpc-status` trailer.
//!
//! Try both against the running server, from another terminal:
//!
//! ```text
//! curl -N http://127.0.0.1:3000/events              # SSE: retry: 3000, then a tick a second
//! cargo run --example tonic -- --client             # gRPC: 5 messages, 300 ms apart, status OK
//! ```
//!
//! The client prints each message as it arrives (with the time since the call), the response's
//! `content-type`, whether any SSE header was added (none is), and the final `grpc-status`.
//!
//! No protoc, no generated code: the service `demo.Ticker` and its one method
//! `Watch(count) returns (stream tick)` are written by hand the way tonic-build would write them
//! (`tonic::server::Grpc::server_streaming` on the server, `tonic::client::Grpc::server_streaming`
//! in the client), with a codec whose messages are UTF-8 strings sent as raw bytes.
//!
//! Served with hyper-util's `auto` builder (HTTP/1.1 and HTTP/2 without TLS on the same port):
//! gRPC needs HTTP/2, and `axum::serve` speaks HTTP/2 only with axum's `http2` feature.
//! Ctrl-C stops the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::routing::get;
use bytes::{Buf, BufMut};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use http::uri::PathAndQuery;
use http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_stream::wrappers::IntervalStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::ServiceBuilder;
use tower_sse::SseLayer;

const ADDR: &str = "127.0.0.1:3000";
const SERVICE: &str = "demo.Ticker";
const WATCH: &str = "/demo.Ticker/Watch";
/// Time between two gRPC messages.
const MESSAGE_EVERY: Duration = Duration::from_millis(300);

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--client") {
        if let Err(error) = client(5).await {
            eprintln!("tonic example client: {error}");
            std::process::exit(1);
        }
    } else {
        server().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The codec: one gRPC message is the UTF-8 bytes of one `String`.

#[derive(Debug, Clone, Copy, Default)]
struct StringCodec;

#[derive(Debug, Clone, Copy, Default)]
struct StringEncoder;

#[derive(Debug, Clone, Copy, Default)]
struct StringDecoder;

impl Codec for StringCodec {
    type Encode = String;
    type Decode = String;
    type Encoder = StringEncoder;
    type Decoder = StringDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        StringEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        StringDecoder
    }
}

impl Encoder for StringEncoder {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for StringDecoder {
    type Item = String;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|error| Status::internal(format!("message is not UTF-8: {error}")))
    }
}

// ---------------------------------------------------------------------------------------------
// The gRPC service: `demo.Ticker/Watch` takes a count (decimal text) and streams that many
// `tick N` messages, one every `MESSAGE_EVERY`, then ends with `grpc-status: 0`.

type TickStream = BoxStream<'static, Result<String, Status>>;

async fn watch(request: tonic::Request<String>) -> Result<tonic::Response<TickStream>, Status> {
    let count: usize = request
        .get_ref()
        .trim()
        .parse()
        .map_err(|_| Status::invalid_argument("the request is a count, in decimal"))?;
    let ticks = IntervalStream::new(tokio::time::interval(MESSAGE_EVERY))
        .zip(stream::iter(1..=count))
        .map(|(_, n)| Ok(format!("tick {n}")));
    Ok(tonic::Response::new(ticks.boxed()))
}

/// What tonic-build would generate for `service Ticker { rpc Watch(..) returns (stream ..); }`,
/// minus protobuf.
#[derive(Debug, Clone, Copy, Default)]
struct TickerServer;

impl NamedService for TickerServer {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<Request<tonic::body::Body>> for TickerServer {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let response = if request.uri().path() == WATCH {
                tonic::server::Grpc::new(StringCodec)
                    .server_streaming(tower::service_fn(watch), request)
                    .await
            } else {
                Status::unimplemented(request.uri().path().to_owned()).into_http()
            };
            Ok(response)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The server: the gRPC routes and `/events` on one axum router, the whole of it in `SseLayer`.

/// A `tick` event every second, forever.
async fn events() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(1)))
        .zip(stream::iter(1_u64..))
        .map(|(_, n)| {
            Ok(Event::default()
                .event("tick")
                .id(n.to_string())
                .data(format!("tick {n}")))
        });
    Sse::new(ticks)
}

async fn server() {
    let listener = tokio::net::TcpListener::bind(ADDR).await.unwrap();
    println!("listening on http://{ADDR} (gRPC {WATCH} and SSE /events)");

    let router = tonic::service::Routes::new(TickerServer)
        .into_axum_router()
        .route("/events", get(events));
    // One layer around everything: the gRPC responses are not event streams, so they pass
    // through as they are; `/events` is one, and gets the layer's treatment.
    let app = ServiceBuilder::new().layer(SseLayer::new()).service(router);

    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted.unwrap(),
            _ = &mut ctrl_c => break,
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // HTTP/1.1 or HTTP/2 (prior knowledge), whichever the client speaks.
            let result = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = result
                && !client_left(&*error)
            {
                eprintln!("tonic example: connection error: {error}");
            }
        });
    }
    println!("bye");
}

/// Whether a connection ended because the client went away in the middle of a response: how
/// every event stream ends when the client closes it, so not worth a message.
fn client_left(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_incomplete_message)
}

// ---------------------------------------------------------------------------------------------
// The client: calls `Watch` and prints what arrives.

async fn client(count: u32) -> Result<(), Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(format!("http://{ADDR}"))?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    println!("calling {WATCH}({count}) on {ADDR}");
    let started = tokio::time::Instant::now();
    let response = grpc
        .server_streaming(
            tonic::Request::new(count.to_string()),
            PathAndQuery::from_static(WATCH),
            StringCodec,
        )
        .await?;
    let (metadata, mut messages, _) = response.into_parts();
    let content_type = metadata
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("(none)");
    println!("content-type: {content_type}");
    let added: Vec<&str> = ["cache-control", "x-accel-buffering"]
        .into_iter()
        .filter(|name| metadata.get(*name).is_some())
        .collect();
    if added.is_empty() {
        println!("SSE headers added: none");
    } else {
        println!("SSE headers added: {added:?} (unexpected)");
    }
    loop {
        match messages.message().await {
            Ok(Some(message)) => {
                println!("{:>6} ms  {message}", started.elapsed().as_millis());
            }
            // Only a `grpc-status: 0` trailer ends the stream with `Ok(None)`: a stream that ends
            // without the trailer is an error in tonic.
            Ok(None) => {
                println!("end of stream: grpc-status {} (OK)", Code::Ok as i32);
                return Ok(());
            }
            Err(status) => {
                println!(
                    "end of stream: grpc-status {} ({:?}): {}",
                    status.code() as i32,
                    status.code(),
                    status.message()
                );
                return Err(status.into());
            }
        }
    }
}
