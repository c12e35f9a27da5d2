//! A response body that holds a guard until the body is dropped: hyper drops a response body
//! once it has been sent (or the client has gone), so the guard's `Drop` marks the end of the
//! response. Used for the stream-duration histogram ([`StreamClock`]) and the connection's count
//! of requests in progress (the keep-alive timeout, `server.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::admin::Stats;

pin_project_lite::pin_project! {
    /// `body`, with `guard` dropped when the body is.
    #[derive(Debug)]
    pub(crate) struct Guarded<B, G> {
        #[pin]
        body: B,
        guard: G,
    }
}

impl<B, G> Guarded<B, G> {
    /// `response`, whose body now holds `guard`.
    pub(crate) fn wrap(response: Response<B>, guard: G) -> Response<Self> {
        response.map(|body| Self { body, guard })
    }
}

impl<B: Body, G> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Records how long an event stream of a route stayed open when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamClock {
    route: Arc<str>,
    stats: Stats,
    opened: Instant,
}

impl StreamClock {
    /// A clock for `response` of `route` when it is an event stream (what the layer treats as
    /// one: `text/event-stream`, 2xx other than 204 and 205), started now.
    pub(crate) fn start<B>(
        response: &Response<B>,
        route: &Arc<str>,
        stats: &Stats,
    ) -> Option<Self> {
        let status = response.status();
        let stream = tower_sse::is_event_stream(response.headers())
            && status.is_success()
            && status != http::StatusCode::NO_CONTENT
            && status != http::StatusCode::RESET_CONTENT;
        stream.then(|| Self {
            route: Arc::clone(route),
            stats: stats.clone(),
            opened: Instant::now(),
        })
    }
}

impl Drop for StreamClock {
    fn drop(&mut self) {
        self.stats.stream_ended(&self.route, self.opened.elapsed());
    }
}
