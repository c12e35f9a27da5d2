//! The per-response override: a value a handler or an inner layer puts in the response
//! extensions to change the layer's configuration for that one response.

use std::time::Duration;

use crate::config::{Settings, clamp_fraction, non_zero};

/// Changes the [`SseLayer`](crate::SseLayer) configuration for one response.
///
/// Put it in the response extensions (an axum handler can return it as part of its response,
/// a reverse proxy can insert it on an upstream's response). Every option not set keeps the
/// layer's value. [`SseOverride::skip`] leaves the response entirely alone: no header change, no
/// injected byte.
///
/// ```
/// use std::{convert::Infallible, time::Duration};
/// use bytes::Bytes;
/// use http::{header, Request, Response};
/// use http_body_util::{BodyExt, Full};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_sse::{SseLayer, SseOverride};
///
/// async fn handle(_: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
///     let mut response = Response::new(Full::<Bytes>::from("data: hi\n\n"));
///     response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
///     // This stream tells clients to wait 10 s before reconnecting.
///     response.extensions_mut().insert(SseOverride::new().retry(Duration::from_secs(10)));
///     Ok(response)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let service = ServiceBuilder::new().layer(SseLayer::new()).service_fn(handle);
/// let response = service.oneshot(Request::new(Full::default())).await.unwrap();
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(body, "retry: 10000\ndata: hi\n\n");
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SseOverride {
    skip: bool,
    heartbeat: Option<Option<Duration>>,
    retry: Option<Option<Duration>>,
    retry_jitter: Option<f64>,
    idle_timeout: Option<Option<Duration>>,
    max_lifetime: Option<Option<Duration>>,
}

impl SseOverride {
    /// Creates a new [`SseOverride`] that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a new [`SseOverride`] that leaves the response alone: its headers and body pass
    /// through exactly as the inner service produced them.
    pub fn skip() -> Self {
        Self {
            skip: true,
            ..Self::default()
        }
    }

    /// Sends heartbeats after `interval` of silence on this response (zero disables them).
    #[must_use]
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(non_zero(interval));
        self
    }

    /// Sends no heartbeat on this response.
    #[must_use]
    pub fn no_heartbeat(mut self) -> Self {
        self.heartbeat = Some(None);
        self
    }

    /// Writes `retry: <delay in ms>` at the start of this response.
    #[must_use]
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = Some(Some(delay));
        self
    }

    /// Writes no `retry:` hint on this response.
    #[must_use]
    pub fn no_retry(mut self) -> Self {
        self.retry = Some(None);
        self
    }

    /// Jitters this response's `retry:` hint by up to ±`fraction` (clamped to `0.0..=1.0`).
    #[must_use]
    pub fn retry_jitter(mut self, fraction: f64) -> Self {
        self.retry_jitter = Some(clamp_fraction(fraction));
        self
    }

    /// Ends this response after `limit` without bytes from the inner body (zero disables it).
    #[must_use]
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.idle_timeout = Some(non_zero(limit));
        self
    }

    /// Ends this response after about `lifetime` (zero disables it).
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(non_zero(lifetime));
        self
    }

    pub(crate) const fn is_skip(&self) -> bool {
        self.skip
    }

    pub(crate) fn apply(&self, settings: &mut Settings) {
        if let Some(heartbeat) = self.heartbeat {
            settings.heartbeat = heartbeat;
        }
        if let Some(retry) = self.retry {
            settings.retry = retry;
        }
        if let Some(jitter) = self.retry_jitter {
            settings.retry_jitter = jitter;
        }
        if let Some(idle) = self.idle_timeout {
            settings.idle_timeout = idle;
        }
        if let Some(lifetime) = self.max_lifetime {
            settings.max_lifetime = lifetime;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn unset_options_keep_the_layer_values() {
        let base = Config::default().settings;
        let mut settings = base;
        SseOverride::new().apply(&mut settings);
        assert_eq!(settings, base);
    }

    #[test]
    fn set_options_replace_the_layer_values() {
        let mut settings = Config::default().settings;
        SseOverride::new()
            .no_heartbeat()
            .retry(Duration::from_millis(250))
            .retry_jitter(3.0)
            .idle_timeout(Duration::from_secs(9))
            .max_lifetime(Duration::ZERO)
            .apply(&mut settings);
        assert_eq!(settings.heartbeat, None);
        assert_eq!(settings.retry, Some(Duration::from_millis(250)));
        assert_eq!(settings.retry_jitter, 1.0);
        assert_eq!(settings.idle_timeout, Some(Duration::from_secs(9)));
        assert_eq!(settings.max_lifetime, None);
    }
}
