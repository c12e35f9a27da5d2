//! The requests in progress on one client connection, for the keep-alive timeout and the
//! first-head deadline (`server.rs`) and the routes, which start and end them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The requests of one connection: how many have started, how many are in progress (from the
/// service call until the response body is dropped, that is sent or abandoned). The keep-alive
/// timeout and the first-head deadline read it.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    in_progress: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Activity {
    /// Counts a request that starts now; it is in progress until the guard is dropped.
    pub(crate) fn start(self: &Arc<Self>) -> RequestGuard {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        RequestGuard(Arc::clone(self))
    }

    /// Whether a request has started on the connection.
    pub(crate) fn any_started(&self) -> bool {
        self.started.load(Ordering::SeqCst) > 0
    }

    /// Resolves once no request has been in progress, and none has started, for `limit`.
    pub(crate) async fn idle_for(&self, limit: Duration) {
        let mut seen = None;
        let mut since = tokio::time::Instant::now();
        loop {
            // Registered before the counters are read: no change is missed.
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            let now = (
                self.started.load(Ordering::SeqCst),
                self.in_progress.load(Ordering::SeqCst) == 0,
            );
            if seen != Some(now) {
                seen = Some(now);
                since = tokio::time::Instant::now();
            }
            if !now.1 {
                changed.await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep_until(since + limit) => return,
                () = changed => {}
            }
        }
    }
}

/// A request in progress on its connection (see [`Activity`]), until dropped with the response
/// body.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}
