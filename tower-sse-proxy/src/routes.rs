//! The route table: which route a request takes (by `Host` and path prefix), and each route's
//! stack (its `SseLayer` around the forwarding to its upstream). Reloaded as a whole on SIGHUP;
//! requests already running keep the stack they started with.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::util::BoxCloneSyncService;
use tower::{Layer as _, ServiceExt as _};
use tower_sse::{ResumeLayer, SseBody, SseShutdown};
use tracing::Instrument as _;

use crate::activity::{Activity, RequestGuard};
use crate::admin::Stats;
use crate::config::{Config, Route};
use crate::guard::{Guarded, StreamClock};
use crate::upstream::{self, ClientAddr, ClientTls, Forward, ProxyBody};

/// One route's stack, type-erased: routes with and without a slow-client buffer have stacks of
/// different types (`SseService<_, Unbuffered>` and `SseService<_, Buffered>`), and the table
/// needs one. The cost is one allocation and one dynamic call per request.
pub(crate) type RouteService =
    BoxCloneSyncService<Request<Incoming>, Response<RouteBody>, Infallible>;

/// A route's response body: the layer's, timed when it is an event stream.
pub(crate) type RouteBody = Guarded<SseBody<ProxyBody>, Option<StreamClock>>;

/// Routes, most specific first, and what requests matching none get.
#[derive(Debug)]
pub(crate) struct Table<T> {
    entries: Vec<Entry<T>>,
    fallback: (Arc<str>, T),
}

#[derive(Debug)]
struct Entry<T> {
    name: Arc<str>,
    host: Option<String>,
    prefix: String,
    value: T,
}

impl<T> Table<T> {
    /// A table of `(name, host, prefix, value)` routes and a fallback.
    pub(crate) fn new(
        routes: impl IntoIterator<Item = (String, Option<String>, String, T)>,
        fallback: (String, T),
    ) -> Self {
        let mut entries: Vec<Entry<T>> = routes
            .into_iter()
            .map(|(name, host, prefix, value)| Entry {
                name: name.into(),
                host,
                prefix,
                value,
            })
            .collect();
        // Routes with a host before those without; then the longest prefix first: the first
        // match is the most specific.
        entries.sort_by_key(|entry| {
            (
                std::cmp::Reverse(entry.host.is_some()),
                std::cmp::Reverse(entry.prefix.len()),
            )
        });
        Self {
            entries,
            fallback: (fallback.0.into(), fallback.1),
        }
    }

    /// The route of a request to `host` (any case, with or without port) and `path`: its name
    /// and value, and whether a route matched.
    pub(crate) fn pick(&self, host: Option<&str>, path: &str) -> (&Arc<str>, &T, bool) {
        let host = host.map(strip_port);
        self.entries
            .iter()
            .find(|entry| {
                path.starts_with(entry.prefix.as_str())
                    && entry
                        .host
                        .as_deref()
                        .is_none_or(|want| host.is_some_and(|have| have.eq_ignore_ascii_case(want)))
            })
            .map_or((&self.fallback.0, &self.fallback.1, false), |entry| {
                (&entry.name, &entry.value, true)
            })
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .find(']')
            .map_or(host, |end| host.get(..=end).unwrap_or(host));
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// What every route's layer shares: one drain, the counters.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) shutdown: SseShutdown,
    pub(crate) drain: Duration,
    pub(crate) stats: Stats,
}

/// Builds the table of stacks for a configuration.
///
/// # Errors
///
/// A CA file that cannot be read, a comment the layer refuses.
pub(crate) fn build(config: &Config, shared: &Shared) -> Result<Table<RouteService>, String> {
    // Routes to HTTP/2 upstreams with different stream caps get pools of their own.
    type ClientKey = (bool, bool, Option<std::path::PathBuf>, u32);
    let mut clients: HashMap<ClientKey, upstream::HttpClient> = HashMap::new();
    let mut stack = |route: &Route| -> Result<RouteService, String> {
        // Every response of the route leaves its stack through this: event streams are timed.
        let name: Arc<str> = route.name.as_str().into();
        let stats = shared.stats.clone();
        let timed = move |response: Response<SseBody<ProxyBody>>| {
            let clock = StreamClock::start(&response, &name, &stats);
            Guarded::wrap(response, clock)
        };
        let metrics = shared.stats.route_metrics(&route.name);
        let layer = route
            .settings
            .layer(&shared.shutdown, shared.drain, &metrics)
            .map_err(|error| format!("route {}: {error}", route.name))?;
        let Some(upstream) = &route.upstream else {
            // No route and no default upstream: 404.
            let service = tower::service_fn(|request: Request<Incoming>| async move {
                Ok::<_, Infallible>(upstream::plain(
                    http::StatusCode::NOT_FOUND,
                    "404 not found: no route for this host and path\n",
                    request.version(),
                ))
            });
            return Ok(BoxCloneSyncService::new(
                layer.layer(service).map_response(timed),
            ));
        };
        let h2_max_streams = route.settings.h2_max_streams();
        let key = (
            upstream.is_https(),
            upstream.http2,
            upstream.ca_file.clone(),
            if upstream.http2 { h2_max_streams } else { 0 },
        );
        let client = match clients.get(&key) {
            Some(client) => client.clone(),
            None => {
                let client = upstream::client_for(upstream, h2_max_streams, &shared.stats)
                    .map_err(|error| format!("route {}: {error}", route.name))?;
                clients.insert(key, client.clone());
                client
            }
        };
        // With resume off, zero attempts: every response passes through the layer as is.
        let resume = match route.settings.resume_layer() {
            Some(layer) => layer.metrics(shared.stats.route_resume(&route.name)),
            None => ResumeLayer::new().resume_attempts(0),
        };
        let forward = Forward {
            client: resume.layer(client),
            upstream: Arc::new(upstream.clone()),
            unreachable: route.settings.unreachable_retry(),
            response_timeout: route.settings.response_timeout(),
            max_body: route.settings.max_body(),
            route: route.name.as_str().into(),
            stats: shared.stats.clone(),
        };
        let service = tower::service_fn(move |request: Request<Incoming>| {
            let forward = forward.clone();
            async move { Ok::<_, Infallible>(forward.call(request).await) }
        });
        Ok(match route.settings.slow_client() {
            None => BoxCloneSyncService::new(layer.layer(service).map_response(timed)),
            Some(slow) => {
                BoxCloneSyncService::new(layer.slow_client(slow).layer(service).map_response(timed))
            }
        })
    };
    let mut routes = Vec::new();
    for route in &config.routes {
        routes.push((
            route.name.clone(),
            route.host.clone(),
            route.prefix.clone(),
            stack(route)?,
        ));
    }
    let fallback = (config.fallback.name.clone(), stack(&config.fallback)?);
    Ok(Table::new(routes, fallback))
}

/// The current table, swapped whole by a reload.
pub(crate) type Current = Arc<RwLock<Arc<Table<RouteService>>>>;

/// One connection's service: picks the request's route in the current table, and runs that
/// route's stack inside a `request` span (method, path, route).
pub(crate) fn service(
    current: Current,
    peer: std::net::SocketAddr,
    tls: bool,
    activity: Arc<Activity>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Guarded<RouteBody, RequestGuard>>,
    Error = Infallible,
    Future = impl Future + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |mut request: Request<Incoming>| {
        let table = Arc::clone(&current.read().unwrap_or_else(PoisonError::into_inner));
        let host = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            });
        let (name, route, matched) = table.pick(host.as_deref(), request.uri().path());
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            route = tracing::field::Empty,
        );
        if matched {
            span.record("route", tracing::field::display(name));
        }
        let route = route.clone();
        request.extensions_mut().insert(ClientAddr(peer));
        request.extensions_mut().insert(ClientTls(tls));
        // In progress until the response body is dropped (the keep-alive timeout's measure).
        let guard = activity.start();
        let response = route.oneshot(request);
        async move { Ok(Guarded::wrap(response.await?, guard)) }.instrument(span)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table<i32> {
        Table::new(
            [
                ("a".to_owned(), None, "/a/".to_owned(), 1),
                ("abc".to_owned(), None, "/a/b/c/".to_owned(), 3),
                ("root".to_owned(), None, "/".to_owned(), 0),
                ("ab".to_owned(), None, "/a/b/".to_owned(), 2),
                ("x".to_owned(), None, "/x".to_owned(), 4),
                (
                    "api".to_owned(),
                    Some("api.test".to_owned()),
                    "/".to_owned(),
                    10,
                ),
                (
                    "api-a".to_owned(),
                    Some("api.test".to_owned()),
                    "/a/".to_owned(),
                    11,
                ),
            ],
            ("default".to_owned(), -1),
        )
    }

    fn value(table: &Table<i32>, host: Option<&str>, path: &str) -> i32 {
        *table.pick(host, path).1
    }

    #[test]
    fn the_longest_matching_prefix_wins_and_other_paths_get_the_fallback() {
        let table = table();
        assert_eq!(value(&table, None, "/a/b/c/d"), 3);
        assert_eq!(value(&table, None, "/a/b/c"), 2);
        assert_eq!(value(&table, None, "/a/b"), 1);
        assert_eq!(value(&table, None, "/a"), 0);
        // A plain string prefix: `/x` matches `/xyz` too.
        assert_eq!(value(&table, None, "/xyz"), 4);
        let table = Table::new(
            [("a".to_owned(), None, "/a/".to_owned(), 1)],
            ("d".to_owned(), -1),
        );
        assert_eq!(value(&table, None, "/events"), -1);
        assert_eq!(value(&table, None, "/A/x"), -1);
        assert!(!table.pick(None, "/events").2);
    }

    #[test]
    fn routes_with_a_host_come_first_for_that_host_in_any_case_and_with_any_port() {
        let table = table();
        assert_eq!(value(&table, Some("api.test"), "/a/b/c/d"), 11);
        assert_eq!(value(&table, Some("API.test:8080"), "/x"), 10);
        assert_eq!(value(&table, Some("other.test"), "/a/b/c/d"), 3);
        assert_eq!(value(&table, None, "/x"), 4);
        assert_eq!(&**table.pick(Some("api.test"), "/").0, "api");
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.test:80"), "a.test");
        assert_eq!(strip_port("a.test"), "a.test");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
