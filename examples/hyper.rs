//! Run with: cargo run --example hyper
//!
//! Then: curl -N http://127.0.0.1:3000/events
//!
//! `SseLayer` on a plain hyper 1 server, no framework: a `tower::ServiceBuilder` stack served by
//! hyper-util's `auto` connection builder (HTTP/1.1 and HTTP/2 without TLS on the same port,
//! `curl --http2-prior-knowledge` for the latter) through `TowerToHyperService`.
//!
//! A ticker task publishes one event a second on a tokio `broadcast` channel; every `/events`
//! stream subscribes to it and writes the events it receives, as they are. The layer adds the
//! anti-buffering headers, a `retry: 2000` hint, heartbeats (none show here: ticks come more
//! often than every 15 s), and the end of the stream on shutdown.
//!
//! Ctrl-C: the listener closes, `SseShutdown::drain()` ends every stream at its own moment in
//! the 5 s drain window (at an event boundary, with a `retry:` hint), and hyper-util's
//! `GracefulShutdown` waits for every connection to finish; the process then exits. Without the
//! drain, the graceful shutdown would wait forever for the event streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::broadcast::{self, error::RecvError};
use tower::ServiceBuilder;
use tower_sse::{SseLayer, SseShutdown};

const ADDR: &str = "127.0.0.1:3000";
const DRAIN_WINDOW: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind(ADDR).await.unwrap();
    println!("listening on http://{ADDR}");

    // The producer: one event a second, whether anyone listens or not.
    let (ticks, _) = broadcast::channel::<Bytes>(16);
    tokio::spawn(ticker(ticks.clone()));

    let shutdown = SseShutdown::new();
    let service = ServiceBuilder::new()
        .layer(
            SseLayer::new()
                .retry(Duration::from_secs(2))
                .shutdown(shutdown.clone())
                .drain_window(DRAIN_WINDOW),
        )
        .service_fn(move |request| handle(request, ticks.clone()));

    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("hyper example: accept failed: {error}");
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        // `watch` lets `graceful.shutdown()` tell the connection to finish its responses and
        // close (HTTP/1.1: no more keep-alive; HTTP/2: GOAWAY).
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await
                && !client_left(&*error)
            {
                eprintln!("hyper example: connection error: {error}");
            }
        });
    }

    drop(listener);
    println!("shutting down: draining event streams (at most {DRAIN_WINDOW:?})");
    shutdown.drain();
    tokio::select! {
        () = graceful.shutdown() => println!("every connection closed, bye"),
        () = tokio::time::sleep(DRAIN_WINDOW + Duration::from_secs(5)) => {
            eprintln!("hyper example: connections still open after the drain, exiting anyway");
        }
    }
}

/// Whether a connection ended because the client went away in the middle of a response: how
/// every event stream ends when the client closes it, so not worth a message.
fn client_left(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_incomplete_message)
}

/// Publishes `event: tick` every second. A send fails only while nobody listens: ignored.
async fn ticker(ticks: broadcast::Sender<Bytes>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    for n in 1_u64.. {
        interval.tick().await;
        let event = format!("id: {n}\nevent: tick\ndata: {{\"n\":{n}}}\n\n");
        let _ = ticks.send(Bytes::from(event));
    }
}

/// `GET /events`: the tick stream; anything else: 404.
async fn handle(
    request: Request<Incoming>,
    ticks: broadcast::Sender<Bytes>,
) -> Result<
    Response<Either<impl hyper::body::Body<Data = Bytes, Error = Infallible> + Send, Full<Bytes>>>,
    Infallible,
> {
    if request.method() != Method::GET || request.uri().path() != "/events" {
        let mut response = Response::new(Either::Right(Full::from("try GET /events\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }

    // The body: every tick published from now on. A stream that falls more than 16 ticks behind
    // skips the ones it missed (it always resumes at an event boundary: each message is one
    // whole event). When the client goes away, hyper drops the body, and with it the receiver.
    let receiver = ticks.subscribe();
    let events = stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => return Some((Ok::<_, Infallible>(Frame::data(event)), receiver)),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let response = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Either::Left(StreamBody::new(events)))
        .unwrap();
    Ok(response)
}
