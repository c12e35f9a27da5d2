//! Timers re-armed lazily: [`SharedTimer`], an event stream's slot in its runtime's timer wheel
//! (`wheel`), and [`Timer`], a [`Sleep`] of its own for the slow-client pump and the resume body.
//!
//! Traffic only moves instants in the caller's state; the timer is not touched per frame. It is
//! moved earlier when a nearer deadline appears, and when it fires early (the deadline it was set
//! for has since moved later), the caller acts on what is due and the next poll re-arms it for
//! what is left. tower-http's `TimeoutBody`, by contrast, makes a new `Sleep` per frame.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

mod wheel;
#[cfg(test)]
pub(crate) use wheel::SLOT_SIZE;
pub(crate) use wheel::SharedTimer;

pin_project! {
    /// A lazily armed, lazily re-armed [`Sleep`].
    #[derive(Debug)]
    pub(crate) struct Timer {
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl Timer {
    /// Creates a new [`Timer`], not armed.
    pub(crate) const fn new() -> Self {
        Self { sleep: None }
    }

    /// Polls for `deadline`: ready once a deadline at or before it has passed. Arms the timer, or
    /// moves it earlier, or re-arms it after it fired; never moves a pending timer later (a timer
    /// that fires early costs one poll, a reset per frame would cost one per frame).
    pub(crate) fn poll_until(
        self: Pin<&mut Self>,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let mut sleep = self.project().sleep;
        match sleep.as_mut().as_pin_mut() {
            Some(armed) if armed.deadline() <= deadline && !armed.is_elapsed() => {}
            Some(armed) => armed.reset(deadline),
            None => sleep.set(Some(tokio::time::sleep_until(deadline))),
        }
        match sleep.as_pin_mut() {
            Some(armed) => armed.poll(cx),
            None => Poll::Pending,
        }
    }

    /// Releases the timer (the stream is over).
    pub(crate) fn clear(self: Pin<&mut Self>) {
        let mut sleep = self.project().sleep;
        if sleep.is_some() {
            sleep.set(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_and_rearms_for_a_later_one() {
        let mut timer = pin!(Timer::new());
        let start = Instant::now();
        std::future::poll_fn(|cx| {
            timer
                .as_mut()
                .poll_until(start + Duration::from_secs(1), cx)
        })
        .await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        std::future::poll_fn(|cx| {
            timer
                .as_mut()
                .poll_until(start + Duration::from_secs(3), cx)
        })
        .await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_timer_is_moved_earlier() {
        let mut timer = pin!(Timer::new());
        let start = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            timer
                .as_mut()
                .poll_until(start + Duration::from_secs(9), &mut cx)
                .is_pending()
        );
        assert!(
            timer
                .as_mut()
                .poll_until(start + Duration::from_secs(6), &mut cx)
                .is_pending()
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            timer
                .as_mut()
                .poll_until(start + Duration::from_secs(6), &mut cx)
                .is_ready()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_honoured_after_an_early_fire() {
        let mut timer = pin!(Timer::new());
        let start = Instant::now();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            timer
                .as_mut()
                .poll_until(start + Duration::from_secs(5), &mut cx)
                .is_pending()
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        // The deadline moved to 9 s meanwhile: the fired timer is re-armed, not reported again.
        let _early = timer
            .as_mut()
            .poll_until(start + Duration::from_secs(9), &mut cx);
        assert!(
            timer
                .as_mut()
                .poll_until(start + Duration::from_secs(9), &mut cx)
                .is_pending()
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(
            timer
                .as_mut()
                .poll_until(start + Duration::from_secs(9), &mut cx)
                .is_ready()
        );
    }
}
