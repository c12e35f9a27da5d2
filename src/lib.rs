//! Tower layers that make [Server-Sent Events] survive real infrastructure.
//!
//! A `text/event-stream` response is an HTTP response that never ends. Everything between the
//! handler and the browser was built for responses that do: nginx buffers them, compressors wait
//! for a full block, load balancers cut them after 60–100 s of silence, clients on bad networks
//! stop reading while the server keeps producing, and graceful shutdown waits forever for them to
//! finish. [`SseLayer`] wraps any axum or tonic router, any hyper service or a reverse proxy and
//! fixes that for event streams, leaving every other response untouched.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{header, Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_sse::SseLayer;
//!
//! async fn events(_: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
//!     let mut response = Response::new(Full::<Bytes>::from("id: 1\ndata: hello\n\n"));
//!     response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
//!     Ok(response)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(SseLayer::new().heartbeat(Duration::from_secs(10)).retry(Duration::from_secs(2)))
//!     .service_fn(events);
//!
//! let request = Request::builder()
//!     .header(header::ACCEPT, "text/event-stream")
//!     .header(header::ACCEPT_ENCODING, "gzip")
//!     .body(Full::default())
//!     .unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache, no-transform");
//! assert_eq!(response.headers()["x-accel-buffering"], "no");
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "retry: 2000\nid: 1\ndata: hello\n\n");
//! # }
//! ```
//!
//! With axum, put the layer on the routes that stream (or on the whole router: other responses
//! pass through):
//!
//! ```no_run
//! # use axum::{routing::get, Router, response::sse::{Event, Sse}};
//! # use futures_util::stream::{self, Stream};
//! # async fn handler() -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
//! #     Sse::new(stream::empty())
//! # }
//! let app: Router = Router::new()
//!     .route("/events", get(handler).layer(tower_sse::SseLayer::new()));
//! ```
//!
//! # What the layer does to an event stream
//!
//! A response is an event stream when its `Content-Type` media type is `text/event-stream`
//! (case-insensitive, parameters allowed) and its status is a 2xx other than 204 and 205.
//!
//! ## Headers
//!
//! `Cache-Control` gets `no-cache` and `no-transform`, merged with the directives already there;
//! `X-Accel-Buffering: no` is set unless the application set it (nginx reads it per response);
//! `Content-Length` is removed; on HTTP/2 and HTTP/3 connection-specific headers are removed. The
//! status, `Content-Type` and the application's other headers are kept.
//!
//! ## Compression
//!
//! A request whose `Accept` lists `text/event-stream` reaches the inner service with
//! `Accept-Encoding: identity`: inner compressors and upstream servers send plain text. For a
//! compressor *outside* the layer, use [`not_sse`] in its predicate. An event stream that arrives
//! compressed anyway passes through untouched with a `tracing` warning.
//!
//! The layer can compress event streams itself without delaying an event:
//! [`SseLayer::compress`] (features `gzip`, `br`, `zstd`, all off by default) negotiates a coding
//! from the client's `Accept-Encoding` and flushes the encoder every time the stream is about to
//! wait, so every byte the client has received decodes at once (see the [`compress`] module for
//! what each coding costs per stream).
//!
//! ## Retry hint, heartbeats and the framing scanner
//!
//! The layer writes a `retry:` line at the start of each stream and comment heartbeats while the
//! stream is idle. It knows where it may write from a [framing scanner] that follows the upstream's
//! bytes with O(1) state: only at a line start, never a blank line, and nothing right after a CR
//! whose next byte has not arrived (it may be the LF of a CRLF), unless the stream has used lone
//! CRs as line endings, where a CR-terminated comment goes; a leading byte-order mark of the
//! upstream's is removed when the layer wrote first. Whatever the upstream sends and however it is
//! split into frames, a client parses the same events, types, data and ids with the layer as
//! without it, and so does a hand-written client that splits lines on LF and strips one CR; every
//! upstream frame is handed on in the poll it arrives.
//!
//! ## Ending streams
//!
//! [`SseLayer::idle_timeout`] ends a stream whose upstream went silent, [`SseLayer::max_lifetime`]
//! ends streams after a jittered lifetime at an event boundary, and [`SseShutdown`] drains every
//! stream over a window on shutdown. Every end is clean (the body ends, never with an error or a
//! 5xx) and carries a final `retry:` hint. Each stream's end has a [`CloseReason`], logged with
//! `tracing` and counted in [`SseMetrics`].
//!
//! ## Per-response configuration
//!
//! One layer per route configures routes differently; an [`SseOverride`] in the response
//! extensions changes the configuration for one response, or leaves it alone.
//!
//! # Upstream resume
//!
//! [`ResumeLayer`], around the service that talks to the upstream (with the [`SseLayer`]
//! outside it), absorbs upstream failures: when an upstream event stream fails, it asks again
//! with `Last-Event-ID` and splices the new response's events into the client's open response,
//! whole events only, each once (I10), while heartbeats keep flowing. See the [`resume`] module.
//!
//! # Everything else passes through
//!
//! A response that is not an event stream keeps its status, headers, every body frame, trailers
//! (gRPC's `grpc-status` included), `size_hint` and `is_end_stream`.
//!
//! # Drop and cancellation
//!
//! When the client goes away, hyper drops the response body: the [`SseBody`] drops the inner body
//! at once (so the producer sees its channel closed), with the stream's timer; the stream is
//! counted as closed with [`CloseReason::ClientGone`]. When the layer itself ends a stream (idle
//! timeout, lifetime, drain), it drops the inner body as it writes its last bytes.
//!
//! Without [`SseLayer::slow_client`] the layer spawns no task per stream: the inner body is polled
//! by the response body itself. The streams' timers share one timer wheel per Tokio runtime,
//! whose single task sleeps until the earliest deadline and wakes every stream due then; it runs
//! while some stream waits on a timer and ends when none does (a stream leaves the wheel as soon
//! as it ends or its body is dropped). With [`SseLayer::slow_client`], each event stream gets one
//! task (the pump) that polls the inner body into the bounded buffer. The pump ends, and drops the
//! inner body, as soon as the response body is dropped, the upstream ends, or the client is found
//! stalled; nothing outlives the response body but the few bytes of a close already counted.
//!
//! # The rules
//!
//! What a client parses, and the invariants the layer keeps (I1–I9, cited in the code and the
//! tests), are written down in [`docs/rules.md`] in the repository.
//!
//! # Runtime
//!
//! Event streams use Tokio timers: the body must be polled inside a Tokio runtime with the time
//! driver enabled (as hyper, axum and tonic servers are); outside one, its timers never fire.
//! Idle timeouts, lifetimes and drain moments fire at most 1 ms after they are due (Tokio's own
//! timer resolution), never before; traffic is dated when the stream next waits. Heartbeats go
//! out at most their [slack](SseLayer::heartbeat_slack) after they fall due (by default a tenth
//! of the interval, at most 1 s), never before, on a grid shared by the streams of a runtime, so
//! that idle streams are woken together.
//! Tokio's paused clock (`start_paused`, `time::advance`) drives them like any Tokio timer.
//!
//! [Server-Sent Events]: https://html.spec.whatwg.org/multipage/server-sent-events.html
//! [`docs/rules.md`]: https://github.com/tower-sse/tower-sse/blob/main/docs/rules.md
//! [framing scanner]: https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backpressure;
mod body;
pub mod compress;
mod config;
mod data;
mod detect;
mod error;
mod future;
#[cfg(any(fuzzing, feature = "__internals"))]
#[doc(hidden)]
pub mod fuzz_api;
mod headers;
mod inject;
mod jitter;
mod layer;
mod macros;
mod metrics;
mod overrides;
mod predicate;
pub mod resume;
mod scanner;
mod service;
mod shutdown;
mod timer;

#[cfg(test)]
mod test_helpers;

pub use backpressure::{Buffered, SlowClient, SlowClientPolicy, Unbuffered};
pub use body::SseBody;
pub use compress::{Brotli, Coding, Compression, CompressionError, Gzip, Zstd};
pub use detect::{asks_for_event_stream, is_event_stream};
pub use error::InvalidComment;
pub use future::ResponseFuture;
pub use layer::SseLayer;
pub use metrics::{CloseReason, MetricsSnapshot, SseMetrics};
pub use overrides::SseOverride;
#[cfg(feature = "tower-http")]
pub use predicate::NotSse;
pub use predicate::not_sse;
pub use resume::{ResumeBody, ResumeLayer, ResumeMetrics, ResumeService};
pub use service::SseService;
pub use shutdown::SseShutdown;

/// The error type of [`SseBody`]: the inner body's error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
