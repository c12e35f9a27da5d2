//! Graceful shutdown: a handle that drains every live SSE stream over a window.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

/// A cheap, cloneable trigger that ends every live SSE stream of the layers it is given to.
///
/// Long-lived streams are why `axum::serve(..).with_graceful_shutdown(..)` and hyper-util's
/// graceful shutdown can wait forever: each open connection is still sending a response. Call
/// [`drain`](Self::drain) when the shutdown starts. Each live stream then picks its own moment in
/// the layer's [drain window](crate::SseLayer::drain_window), ends at its first event boundary
/// after that moment (at the latest when the window closes), with a `retry:` hint, so clients
/// reconnect to other instances at staggered times. Requests asking for `text/event-stream` that
/// arrive after the drain started get `200 text/event-stream`, a jittered `retry:` and an
/// immediate clean end, never a 5xx: `EventSource` stops reconnecting for good on any other status.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::{SseLayer, SseShutdown};
///
/// let shutdown = SseShutdown::new();
/// let layer = SseLayer::new()
///     .shutdown(shutdown.clone())
///     .drain_window(Duration::from_secs(5));
///
/// // In `with_graceful_shutdown(async move { ctrl_c().await; shutdown.drain(); })`:
/// shutdown.drain();
/// assert!(shutdown.is_draining());
/// # drop(layer);
/// ```
#[derive(Clone, Default)]
pub struct SseShutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    draining: AtomicBool,
    started: OnceLock<Instant>,
    notify: Arc<Notify>,
}

impl SseShutdown {
    /// Creates a new [`SseShutdown`] that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the drain. Idempotent: only the first call sets the drain's start.
    pub fn drain(&self) {
        self.inner.started.get_or_init(Instant::now);
        self.inner.draining.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`drain`](Self::drain) has been called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// When the drain started, if it has.
    pub(crate) fn started(&self) -> Option<Instant> {
        if self.is_draining() {
            self.inner.started.get().copied()
        } else {
            None
        }
    }

    /// A future that completes when the drain starts. Created before checking
    /// [`started`](Self::started), it cannot miss a drain that starts in between.
    pub(crate) fn notified(&self) -> OwnedNotified {
        Arc::clone(&self.inner.notify).notified_owned()
    }
}

impl fmt::Debug for SseShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseShutdown")
            .field("draining", &self.is_draining())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_created_before_the_drain_is_woken() {
        let shutdown = SseShutdown::new();
        let notified = shutdown.notified();
        assert!(shutdown.started().is_none());
        shutdown.clone().drain();
        tokio::time::timeout(std::time::Duration::from_secs(1), notified)
            .await
            .unwrap();
        assert!(shutdown.started().is_some());
    }

    #[tokio::test]
    async fn drain_is_idempotent() {
        let shutdown = SseShutdown::new();
        shutdown.drain();
        let first = shutdown.started();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        shutdown.drain();
        assert_eq!(shutdown.started(), first);
    }
}
