//! Upstream resume: an interrupted upstream event stream is asked for again with
//! `Last-Event-ID`, and the new response's events are spliced into the client's open response,
//! so that the client never reconnects.
//!
//! When an upstream instance restarts, is redeployed or drops a connection, every client of it
//! would reconnect: after `EventSource`'s fixed delay, all at once, each reconnect running
//! authentication and routing again. [`ResumeLayer`], around the service
//! that talks to the upstream, absorbs the failure instead: the client's response stays open and
//! the events go on.
//!
//! # When
//!
//! A stream is watched when its request may be repeated (`GET` or `HEAD` without a body) and its
//! response is a `2xx` `text/event-stream` (not 204 or 205). It is resumed when its body fails
//! (a connection reset, a truncated chunked body, an HTTP/2 stream reset) and, with
//! [`resume_on_end`](crate::ResumeLayer::resume_on_end), when it ends cleanly.
//!
//! A stream in which events were handed to the client and no id has been seen is not resumed
//! (asking again without an id would replay them): it ends as it would without the layer, and
//! so does a stream whose last id is empty, too long to keep, or not a valid header value.
//! So does a stream that has already been resumed
//! [`max_resumes`](crate::ResumeLayer::max_resumes) times (100 by default): an upstream that
//! keeps failing right after it answers cannot hold a client forever.
//!
//! # How
//!
//! The layer waits the upstream's last `retry:` value, at most
//! [`max_retry`](crate::ResumeLayer::max_retry) (30 s by default: an upstream sending
//! `retry: 999999999` does not park its clients for days), or
//! [`retry`](crate::ResumeLayer::retry) when it sent none,
//! [jittered](crate::ResumeLayer::jitter), then sends the same method, URI, version and headers
//! with `Last-Event-ID` set to the last id the client was given (replacing the client's own; as
//! in a browser, that is the id buffer at the last blank line, so events without an `id` field
//! after the last id are sent again by an upstream that honours it). While it waits the body is
//! `Pending`: an [`SseLayer`](crate::SseLayer) outside keeps sending heartbeats.
//!
//! The upstream's answer decides:
//!
//! - `200 text/event-stream` (any `2xx` but 204 and 205): its body is spliced in; its leading
//!   byte-order mark is dropped, its fields pass as they are;
//! - `204 No Content`: the client's stream ends cleanly (the upstream said stop);
//! - anything else, or an error of the service (no connection): another request after another
//!   wait, up to [`resume_attempts`](crate::ResumeLayer::resume_attempts) in all; then the
//!   client's stream ends cleanly after a `retry:` line.
//!
//! # Never a half event, never a duplicate (I10)
//!
//! The client must never get the start of an event from one upstream response followed by bytes
//! of the next. The layer hands on whole events: a frame that ends at an event boundary (the
//! normal case for axum, Express and most servers) goes on at once, as it is; the bytes after a
//! frame's last boundary are held until the event completes. This is the one place where the
//! crate's "no delay" rule (I6) is relaxed, and only inside an incomplete event. The hold is
//! bounded by [`max_event`](crate::ResumeLayer::max_event): past it, the held bytes go on and the
//! stream continues without resume. When a body fails, the held bytes (an event the client never
//! saw) are dropped, and the new request starts after the last event handed on.
//!
//! # Order of the layers
//!
//! Put the [`SseLayer`](crate::SseLayer) outside (first in a `ServiceBuilder`), the
//! `ResumeLayer` inside, around the upstream client:
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(SseLayer::new())     // heartbeats, headers, retry hint, ends: for the client
//!     .layer(ResumeLayer::new())  // splices upstream responses
//!     .service(upstream_client)
//! ```
//!
//! Inside out, the `SseLayer`'s heartbeats would stop while the upstream is asked again, and its
//! `retry:` hint and ends would be applied per upstream response.
//!
//! # Observability
//!
//! [`ResumeMetrics`] counts watched streams, interruptions, requests sent
//! again, splices and give-ups by [`GiveUpReason`]. Each splice and each give-up is a `tracing`
//! event (target `tower_sse::resume`) with the last event id, the wait, the attempt and the
//! outcome; each failed attempt is a debug event.
//!
//! A given-up resume that ends the client's stream has its close reason there: the
//! [`GiveUpReason`] ([`ends_stream`](GiveUpReason::ends_stream) is true for all but
//! `TooLarge`), counted per reason and in [`ResumeSnapshot::ended_streams`], and logged as the
//! give-up event's `outcome` with `ends_stream = true`. An outer [`SseLayer`](crate::SseLayer)
//! sees an upstream that ended (or failed), and counts its own
//! [`CloseReason`](crate::CloseReason) accordingly.
//!
//! # Example
//!
//! An upstream that fails after its first event, and honours `Last-Event-ID`:
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use bytes::Bytes;
//! use http::{header, Request, Response};
//! use http_body::Frame;
//! use http_body_util::{BodyExt, Empty, StreamBody};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_sse::ResumeLayer;
//!
//! type Chunk = Result<Frame<Bytes>, std::io::Error>;
//!
//! async fn upstream(request: Request<Empty<Bytes>>) -> Result<Response<StreamBody<tokio_stream::Iter<std::vec::IntoIter<Chunk>>>>, Infallible> {
//!     let chunks: Vec<Chunk> = match request.headers().get("last-event-id") {
//!         // The first request: one event, then the connection is reset.
//!         None => vec![
//!             Ok(Frame::data(Bytes::from("id: 1\ndata: one\n\n"))),
//!             Ok(Frame::data(Bytes::from("id: 2\ndata: tw"))),
//!             Err(std::io::ErrorKind::ConnectionReset.into()),
//!         ],
//!         // Asked again after event 1: the rest.
//!         Some(id) => {
//!             assert_eq!(id, "1");
//!             vec![Ok(Frame::data(Bytes::from("id: 2\ndata: two\n\n")))]
//!         }
//!     };
//!     let mut response = Response::new(StreamBody::new(tokio_stream::iter(chunks)));
//!     response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
//!     Ok(response)
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = ResumeLayer::new().retry(Duration::from_millis(100));
//! let metrics = layer.metrics_handle();
//! let service = ServiceBuilder::new().layer(layer).service_fn(upstream);
//!
//! let response = service.oneshot(Request::new(Empty::new())).await.unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! // Whole events only, each once, on one response.
//! assert_eq!(body, "id: 1\ndata: one\n\nid: 2\ndata: two\n\n");
//! assert_eq!(metrics.snapshot().resumed, 1);
//! # }
//! ```

mod body;
mod config;
mod future;
mod layer;
mod metrics;
mod replay;
mod service;
pub(crate) mod tracker;

pub use body::ResumeBody;
pub use future::ResponseFuture;
pub use layer::ResumeLayer;
pub(crate) use metrics::GaveUp;
pub use metrics::{GiveUpReason, ResumeMetrics, ResumeSnapshot};
pub use service::ResumeService;
