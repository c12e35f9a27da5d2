//! A mock inner body that plays a script of frames, waits, stalls and errors on the tokio clock
//! (for tests under `#[tokio::test(start_paused = true)]`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};

/// The error type of [`ScriptBody`] (the same type as `tower_sse::BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One step of a [`ScriptBody`].
#[derive(Debug)]
pub enum Step {
    /// A data frame.
    Data(&'static [u8]),
    /// Trailers.
    Trailers(http::HeaderMap),
    /// Stay pending for this long (on the tokio clock).
    Wait(Duration),
    /// Stay pending forever.
    Stall,
    /// An error.
    Error,
}

/// A body that plays a script, and sets `dropped` when it is dropped.
#[derive(Debug)]
pub struct ScriptBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    pub dropped: Arc<AtomicBool>,
    polled_after_end: bool,
    ended: bool,
}

impl ScriptBody {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
            sleep: None,
            dropped: Arc::new(AtomicBool::new(false)),
            polled_after_end: false,
            ended: false,
        }
    }
}

impl Drop for ScriptBody {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        assert!(!self.polled_after_end, "polled after the end");
        if self.ended {
            self.polled_after_end = true;
        }
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => self.sleep = None,
                    Poll::Pending => return Poll::Pending,
                }
            }
            match self.steps.pop_front() {
                None => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Some(Step::Data(bytes)) => {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(bytes)))));
                }
                Some(Step::Trailers(map)) => return Poll::Ready(Some(Ok(Frame::trailers(map)))),
                Some(Step::Wait(d)) => self.sleep = Some(Box::pin(tokio::time::sleep(d))),
                Some(Step::Stall) => {
                    self.steps.push_front(Step::Stall);
                    return Poll::Pending;
                }
                Some(Step::Error) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err("script error".into())));
                }
            }
        }
    }
}
