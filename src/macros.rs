//! Small helpers shared by the services and the builders.

/// Adds `get_ref`, `get_mut` and `into_inner` to a service with an `inner: S` field.
macro_rules! define_inner_service_accessors {
    () => {
        /// Gets a reference to the underlying service.
        pub const fn get_ref(&self) -> &S {
            &self.inner
        }

        /// Gets a mutable reference to the underlying service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the underlying service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

pub(crate) use define_inner_service_accessors;

/// The builder methods of the per-stream options, shared by [`SseLayer`](crate::SseLayer) (the
/// layer's defaults) and [`SseOverride`](crate::SseOverride) (one response): one text, one
/// implementation. The type provides `fn change(self, change: Change) -> Self`.
macro_rules! stream_options {
    ($ty:literal) => {
        /// Sends a heartbeat comment after `interval` without any byte going to the client.
        ///
        /// Any byte sent postpones the next heartbeat, so a busy stream carries none. A heartbeat is
        /// one comment line, written only at a line start; while the upstream is mid-line it is
        /// skipped (and counted). Heartbeats keep proxies and load balancers from cutting a quiet
        /// stream: nginx and AWS ALB cut after 60 s, Cloudflare after 100 s.
        ///
        /// Default: 15 s. A zero `interval` disables heartbeats, like
        /// [`no_heartbeat`](Self::no_heartbeat).
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        #[doc = concat!("let options = ", $ty, "::new().heartbeat(Duration::from_secs(5));")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn heartbeat(self, interval: Duration) -> Self {
            self.change(Change::Heartbeat(non_zero(interval)))
        }

        /// Sends no heartbeats.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        #[doc = concat!("let options = ", $ty, "::new().no_heartbeat();")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn no_heartbeat(self) -> Self {
            self.change(Change::Heartbeat(None))
        }

        /// Writes `retry: <delay in ms>` at the start of every stream (after a leading BOM of the
        /// upstream's, which the layer then removes), and when the layer ends a stream itself.
        ///
        /// Clients wait this long before reconnecting. The value is written in whole milliseconds,
        /// ASCII digits only.
        ///
        /// Default: 3 s.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        #[doc = concat!("let options = ", $ty, "::new().retry(Duration::from_millis(1500));")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn retry(self, delay: Duration) -> Self {
            self.change(Change::Retry(Some(delay)))
        }

        /// Writes no `retry:` hint.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        #[doc = concat!("let options = ", $ty, "::new().no_retry();")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn no_retry(self) -> Self {
            self.change(Change::Retry(None))
        }

        /// Moves each stream's `retry:` hint by a random amount within ±`fraction` of it, so that a
        /// fleet of clients cut by the same outage does not reconnect in the same millisecond.
        ///
        /// Default: 0 (no jitter). `fraction` is clamped to `0.0..=1.0`. The hint written when a
        /// [drain](crate::SseLayer::shutdown) ends a stream is always jittered by at least 20 %.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        /// // Hints between 2,400 and 3,600 ms.
        #[doc = concat!("let options = ", $ty, "::new().retry(Duration::from_secs(3)).retry_jitter(0.2);")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn retry_jitter(self, fraction: f64) -> Self {
            self.change(Change::RetryJitter(clamp_fraction(fraction)))
        }

        /// Ends a stream cleanly when the inner body sends no byte for `limit`.
        ///
        /// The client reconnects (with `Last-Event-ID`) and reaches a live upstream. Heartbeats do
        /// not count as upstream activity. The end is clean: the body ends (`None`), never with an
        /// error, after a `retry:` hint when retry hints are on.
        ///
        /// Default: off. A zero `limit` turns it off.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        #[doc = concat!("let options = ", $ty, "::new().idle_timeout(Duration::from_secs(60));")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn idle_timeout(self, limit: Duration) -> Self {
            self.change(Change::IdleTimeout(non_zero(limit)))
        }

        /// Ends each stream after about `lifetime`, at its next event boundary, so that long-lived
        /// connections rebalance across instances.
        ///
        /// Each stream's lifetime is shortened by a random amount of at most
        /// [`lifetime_jitter`](Self::lifetime_jitter) (80–100 % of `lifetime` by default); after it,
        /// the stream ends at its next event boundary, or after [`close_grace`](Self::close_grace).
        ///
        /// Default: off. A zero `lifetime` turns it off.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        #[doc = concat!("let options = ", $ty, "::new().max_lifetime(Duration::from_secs(30 * 60));")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn max_lifetime(self, lifetime: Duration) -> Self {
            self.change(Change::MaxLifetime(non_zero(lifetime)))
        }

        /// How much of the [maximum lifetime](Self::max_lifetime) may be cut, at random, per stream.
        ///
        /// Default: 0.2 (lifetimes between 80 % and 100 % of the value). Clamped to `0.0..=1.0`.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        /// // Every stream lives exactly 10 minutes (plus the wait for an event boundary).
        #[doc = concat!("let options = ", $ty, "::new().max_lifetime(Duration::from_secs(600)).lifetime_jitter(0.0);")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn lifetime_jitter(self, fraction: f64) -> Self {
            self.change(Change::LifetimeJitter(clamp_fraction(fraction)))
        }

        /// How long a stream the layer wants to end (lifetime reached) waits for an event boundary
        /// before it is cut mid-event. Cutting is still correct: the client discards the partial
        /// event and its id, and gets it again after reconnecting.
        ///
        /// Default: 5 s. Zero cuts at once unless the stream is at a boundary.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        #[doc = concat!("let options = ", $ty, "::new().max_lifetime(Duration::from_secs(600)).close_grace(Duration::from_secs(1));")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn close_grace(self, grace: Duration) -> Self {
            self.change(Change::CloseGrace(grace))
        }

        /// The window over which a [drain](crate::SseLayer::shutdown) spreads the ends of streams: each stream
        /// picks a random moment in it, ends at its first event boundary after that moment, and at
        /// the latest when the window closes.
        ///
        /// Default: 10 s. Zero ends every stream at once.
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("use tower_sse::", $ty, ";")]
        ///
        #[doc = concat!("let options = ", $ty, "::new().drain_window(Duration::from_secs(20));")]
        /// # let _ = (options, Duration::ZERO);
        /// ```
        pub fn drain_window(self, window: Duration) -> Self {
            self.change(Change::DrainWindow(window))
        }
    };
}

pub(crate) use stream_options;
