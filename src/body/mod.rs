//! [`SseBody`]: passthrough for every other response, the event-stream state machine for event
//! streams.
//!
//! - `upstream`: where an event stream's frames come from (the inner body, or the slow-client
//!   buffer);
//! - `machine`: the per-stream state machine (opening lines, scanner, heartbeats, timeouts,
//!   lifetime, drain, clean end), boxed once per stream;
//! - `tally`: per-stream counts and the close, published to [`SseMetrics`](crate::SseMetrics).

mod machine;
mod tally;
#[cfg(test)]
mod tests;
mod upstream;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::compress::Encoder;
use crate::config::{Config, Settings};
use crate::data::into_bytes;
use crate::resume::GaveUp;
use machine::Machine;
pub(crate) use upstream::Upstream;

pin_project! {
    /// The response body of an [`SseService`](crate::SseService).
    ///
    /// For a response that is not an event stream it forwards every frame of the inner body,
    /// trailers included, with its `size_hint` and `is_end_stream`. For an event stream it
    /// forwards the inner body's frames in the same poll they arrive, and adds the layer's own
    /// lines (`retry:`, heartbeat comments) only where they cannot change what a client parses.
    ///
    /// # Merged frames
    ///
    /// When the inner body has several data frames ready in the same poll, an event stream hands
    /// them on as one frame, up to 32 KiB (plus the last frame merged): fewer HTTP/1.1 chunks,
    /// HTTP/2 DATA frames and writes for a producer that runs ahead of the connection. Merging
    /// never waits: it stops at the first frame that is not ready, so no byte is held across a
    /// `Pending`; a frame that arrives alone passes as it is, without a copy. Bytes and their
    /// order are unchanged (frame boundaries carry no meaning in an event stream). Passthrough
    /// responses and streams being closed at an event boundary are never merged. Trailers or an
    /// error that follow merged data come in the next poll.
    ///
    /// Dropping it drops the inner body at once.
    pub struct SseBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Passthrough { #[pin] body: B },
        Sse {
            // `None` once the inner body ended, failed or was dropped by the layer: it is never
            // polled again (fused).
            #[pin]
            body: Option<Upstream<B>>,
            // Everything else of the stream, boxed once (its encoder too, when the layer
            // compresses): a passthrough body pays only for the larger of the two variants.
            machine: Box<Machine>,
        },
    }
}

impl<B> SseBody<B> {
    /// A body that forwards `body` untouched.
    pub(crate) const fn passthrough(body: B) -> Self {
        Self {
            inner: Inner::Passthrough { body },
        }
    }

    /// An event stream over `body` (`None`: a stream that ends at once, as during a drain).
    pub(crate) fn sse(body: Option<Upstream<B>>, config: Arc<Config>, settings: Settings) -> Self {
        let shared_close = body.as_ref().and_then(Upstream::close_slot);
        Self {
            inner: Inner::Sse {
                body,
                machine: Box::new(Machine::new(config, settings, shared_close)),
            },
        }
    }

    /// Counts the stream's end as [`CloseReason::ResumeGivenUp`](crate::CloseReason) when
    /// `gave_up` is set by then (a `ResumeLayer` inside gave up on it).
    pub(crate) fn with_resume(mut self, gave_up: GaveUp) -> Self {
        if let Inner::Sse { machine, .. } = &mut self.inner {
            machine.set_resume(gave_up);
        }
        self
    }

    /// Encodes the event stream's output with `new` (a passthrough body is left as it is).
    pub(crate) fn with_encoder(mut self, new: Encoder) -> Self {
        if let Inner::Sse { machine, .. } = &mut self.inner {
            machine.set_encoder(new);
        }
        self
    }
}

impl<B> fmt::Debug for SseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.inner {
            Inner::Passthrough { .. } => "passthrough",
            Inner::Sse { .. } => "sse",
        };
        f.debug_struct("SseBody").field("mode", &mode).finish()
    }
}

impl<B> Body for SseBody<B>
where
    B: Body,
    B::Data: 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Passthrough { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame.map_data(into_bytes)))),
                Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                None => Poll::Ready(None),
            },
            InnerProj::Sse { body, machine } => machine.poll_frame(body, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Passthrough { body } => body.is_end_stream(),
            Inner::Sse { machine, .. } => machine.is_ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Passthrough { body } => body.size_hint(),
            // The layer may add bytes: no exact size is claimed.
            Inner::Sse { .. } => SizeHint::default(),
        }
    }
}
