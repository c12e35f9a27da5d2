//! The per-response override: a value a handler or an inner layer puts in the response
//! extensions to change the layer's configuration for that one response.

use std::time::Duration;

use crate::config::{Change, Settings, clamp_fraction, non_zero};
use crate::macros::stream_options;

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
#[must_use]
pub struct SseOverride {
    skip: bool,
    /// At most one change per setting, the last one made (indexed by `Change::kind`).
    changes: [Option<Change>; Change::KINDS],
}

/// The per-stream options; "Default" is the layer's default, which an override keeps for every
/// option it does not set.
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

    fn change(mut self, change: Change) -> Self {
        debug_assert!(
            change.kind() < Change::KINDS,
            "Change::KINDS is out of date"
        );
        if let Some(slot) = self.changes.get_mut(change.kind()) {
            *slot = Some(change);
        }
        self
    }

    stream_options!("SseOverride");

    pub(crate) const fn is_skip(&self) -> bool {
        self.skip
    }

    pub(crate) fn apply(&self, settings: &mut Settings) {
        for change in self.changes.iter().flatten() {
            change.apply(settings);
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
            .lifetime_jitter(0.5)
            .close_grace(Duration::from_secs(2))
            .drain_window(Duration::from_secs(30))
            .retry(Duration::from_millis(300))
            .apply(&mut settings);
        assert_eq!(settings.heartbeat, None);
        // The last change to a setting wins.
        assert_eq!(settings.retry, Some(Duration::from_millis(300)));
        assert_eq!(settings.retry_jitter, 1.0);
        assert_eq!(settings.idle_timeout, Some(Duration::from_secs(9)));
        assert_eq!(settings.max_lifetime, None);
        assert_eq!(settings.lifetime_jitter, 0.5);
        assert_eq!(settings.close_grace, Duration::from_secs(2));
        assert_eq!(settings.drain_window, Duration::from_secs(30));
    }
}
