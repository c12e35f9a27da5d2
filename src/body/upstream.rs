//! Where an event stream's bytes come from: the inner body itself, or the slow-client buffer a
//! pump task fills from it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::backpressure::Receiver;
use crate::data::into_bytes;
use crate::metrics::CloseSlot;

pin_project! {
    /// The source of an event stream's frames.
    pub(crate) struct Upstream<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Direct { #[pin] body: B },
        Queued { receiver: Receiver },
    }
}

impl<B> Upstream<B> {
    /// The inner body, polled directly.
    pub(crate) const fn direct(body: B) -> Self {
        Self {
            inner: Inner::Direct { body },
        }
    }

    /// The slow-client buffer's receiving end.
    pub(crate) const fn queued(receiver: Receiver) -> Self {
        Self {
            inner: Inner::Queued { receiver },
        }
    }

    /// The client accepted bytes the layer wrote itself (a heartbeat, a hint): the stall clock
    /// of a slow-client buffer sees progress.
    pub(crate) fn touch(&self) {
        if let Inner::Queued { receiver } = &self.inner {
            receiver.touch();
        }
    }

    /// Where the stream's close is counted when a pump may report it too.
    pub(crate) fn close_slot(&self) -> Option<Arc<CloseSlot>> {
        match &self.inner {
            Inner::Direct { .. } => None,
            Inner::Queued { receiver } => Some(receiver.close_slot()),
        }
    }
}

impl<B> Upstream<B>
where
    B: Body,
    B::Data: 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Direct { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame.map_data(into_bytes)))),
                Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                None => Poll::Ready(None),
            },
            InnerProj::Queued { receiver } => receiver.poll_frame(cx),
        }
    }
}
