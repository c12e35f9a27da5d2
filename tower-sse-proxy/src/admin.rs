//! The proxy's counters (per route) and the admin listener: `/metrics` in the Prometheus text
//! format (prometheus-client), `/healthz`, and `/readyz`, which answers 503 from the moment a
//! drain starts so that a load balancer stops sending new clients before streams are ended.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tower_sse::resume::{GiveUpReason, ResumeSnapshot};
use tower_sse::{CloseReason, ResumeMetrics, SseMetrics, SseShutdown};

type Labels = Vec<(&'static str, String)>;

/// A counter family: its name, its help, and how to read it from a route's snapshot.
type CounterFamily<'a, S> = (&'a str, &'a str, fn(&S) -> u64);

/// The proxy's counters, shared by every route and connection (clones share them).
#[derive(Clone)]
pub(crate) struct Stats(Arc<Inner>);

struct Inner {
    requests: Family<Labels, Counter>,
    upstream_errors: Family<Labels, Counter>,
    stream_durations: Family<Labels, Histogram, fn() -> Histogram>,
    upstream_h2_connections: Family<Labels, Gauge>,
    upstream_h2_opened: Family<Labels, Counter>,
    streams: Arc<Mutex<BTreeMap<String, SseMetrics>>>,
    resume: Arc<Mutex<BTreeMap<String, ResumeMetrics>>>,
    registry: Registry,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

/// The upper bounds (seconds) of the stream-duration buckets: from a stream cut at once to a
/// day-long one, a few per decade.
const DURATION_BUCKETS: [f64; 14] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Stats {
    /// Creates the counters and their registry.
    pub(crate) fn new() -> Self {
        let requests = Family::<Labels, Counter>::default();
        let upstream_errors = Family::<Labels, Counter>::default();
        let stream_durations: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        let streams = Arc::new(Mutex::new(BTreeMap::new()));
        let mut registry = Registry::default();
        registry.register(
            "tower_sse_proxy_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "tower_sse_proxy_upstream_errors",
            "Requests the upstream did not answer, by route and kind",
            upstream_errors.clone(),
        );
        registry.register(
            "tower_sse_proxy_stream_duration_seconds",
            "How long event streams stayed open (from the response head to the end of the \
             client's stream), by route",
            stream_durations.clone(),
        );
        let upstream_h2_connections = Family::<Labels, Gauge>::default();
        let upstream_h2_opened = Family::<Labels, Counter>::default();
        registry.register(
            "tower_sse_proxy_upstream_h2_connections",
            "HTTP/2 connections open to each upstream (--upstream-http2; draining ones too), by upstream host:port",
            upstream_h2_connections.clone(),
        );
        registry.register(
            "tower_sse_proxy_upstream_h2_connections_opened",
            "HTTP/2 connections opened to each upstream, by upstream host:port",
            upstream_h2_opened.clone(),
        );
        registry.register_collector(Box::new(StreamCollector(Arc::clone(&streams))));
        let resume = Arc::new(Mutex::new(BTreeMap::new()));
        registry.register_collector(Box::new(ResumeCollector(Arc::clone(&resume))));
        Self(Arc::new(Inner {
            requests,
            upstream_errors,
            stream_durations,
            upstream_h2_connections,
            upstream_h2_opened,
            streams,
            resume,
            registry,
        }))
    }

    /// The stream counters of route `name`: the same handle across reloads.
    pub(crate) fn route_metrics(&self, name: &str) -> SseMetrics {
        let mut streams = self
            .0
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams.entry(name.to_owned()).or_default().clone()
    }

    /// The resume counters of route `name` (a route with resume on): the same handle across
    /// reloads.
    pub(crate) fn route_resume(&self, name: &str) -> ResumeMetrics {
        let mut resume = self.0.resume.lock().unwrap_or_else(PoisonError::into_inner);
        resume.entry(name.to_owned()).or_default().clone()
    }

    /// Counts a request answered with `status`.
    pub(crate) fn request(&self, route: &str, status: StatusCode) {
        self.0
            .requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("status", status.as_u16().to_string()),
            ])
            .inc();
    }

    /// Counts a failed upstream request.
    pub(crate) fn upstream_error(&self, route: &str, kind: &'static str) {
        self.0
            .upstream_errors
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("kind", kind.to_owned()),
            ])
            .inc();
    }

    /// Records the duration of an event stream of `route` that has ended.
    pub(crate) fn stream_ended(&self, route: &str, duration: std::time::Duration) {
        self.0
            .stream_durations
            .get_or_create(&vec![("route", route.to_owned())])
            .observe(duration.as_secs_f64());
    }

    /// Counts an HTTP/2 connection opened to `upstream` (its `host:port`): open until the
    /// returned handle is dropped.
    pub(crate) fn h2_connection_opened(&self, upstream: &str) -> OpenConnection {
        let labels = vec![("upstream", upstream.to_owned())];
        self.0.upstream_h2_opened.get_or_create(&labels).inc();
        let open = self
            .0
            .upstream_h2_connections
            .get_or_create(&labels)
            .clone();
        open.inc();
        OpenConnection(open)
    }

    /// Event streams open now, over all routes.
    pub(crate) fn open_streams(&self) -> u64 {
        let streams = self
            .0
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams.values().map(|m| m.snapshot().open_streams).sum()
    }

    /// The Prometheus text exposition of every counter.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.0.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// One HTTP/2 connection to an upstream, counted open until dropped (see
/// [`Stats::h2_connection_opened`]).
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads every route's [`SseMetrics`] at scrape time.
#[derive(Debug)]
struct StreamCollector(Arc<Mutex<BTreeMap<String, SseMetrics>>>);

impl Collector for StreamCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshots: Vec<(String, tower_sse::MetricsSnapshot)> = {
            let streams = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            streams
                .iter()
                .map(|(route, metrics)| (route.clone(), metrics.snapshot()))
                .collect()
        };
        let gauge = |value: u64| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        let gauges: [CounterFamily<'_, tower_sse::MetricsSnapshot>; 2] = [
            ("tower_sse_streams_open", "Event streams open now", |s| {
                s.open_streams
            }),
            (
                "tower_sse_queued_bytes",
                "Bytes waiting in slow-client buffers now",
                |s| s.queued_bytes,
            ),
        ];
        for (name, help, pick) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (route, snapshot) in &snapshots {
                let labels: Labels = vec![("route", route.clone())];
                gauge(pick(snapshot)).encode(family.encode_family(&labels)?)?;
            }
        }
        let counters: [CounterFamily<'_, tower_sse::MetricsSnapshot>; 6] = [
            ("tower_sse_streams_opened", "Event streams opened", |s| {
                s.opened
            }),
            ("tower_sse_bytes", "Body bytes sent on event streams", |s| {
                s.bytes
            }),
            ("tower_sse_events", "Events sent to clients", |s| s.events),
            ("tower_sse_heartbeats", "Heartbeat comments sent", |s| {
                s.heartbeats
            }),
            (
                "tower_sse_events_dropped",
                "Events dropped by the drop-oldest policy",
                |s| s.events_dropped,
            ),
            (
                "tower_sse_events_coalesced",
                "Events replaced under the latest-per-type policy",
                |s| s.events_coalesced,
            ),
        ];
        encode_route_counters(
            &mut encoder,
            &snapshots,
            &counters,
            ("tower_sse_streams_closed", "Event streams ended, by reason"),
            &CloseReason::ALL.map(|reason| (reason.as_str(), reason)),
            tower_sse::MetricsSnapshot::closed,
        )
    }
}

/// Reads the [`ResumeMetrics`] of every route with resume on at scrape time.
#[derive(Debug)]
struct ResumeCollector(Arc<Mutex<BTreeMap<String, ResumeMetrics>>>);

impl Collector for ResumeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshots: Vec<(String, ResumeSnapshot)> = {
            let resume = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            resume
                .iter()
                .map(|(route, metrics)| (route.clone(), metrics.snapshot()))
                .collect()
        };
        let counters: [CounterFamily<'_, ResumeSnapshot>; 4] = [
            (
                "tower_sse_resume_streams",
                "Upstream event streams watched for resume (GET or HEAD without a body)",
                |s| s.streams,
            ),
            (
                "tower_sse_resume_interrupted",
                "Watched upstream streams that failed (or ended, with resume-on-end)",
                |s| s.interrupted,
            ),
            (
                "tower_sse_resume_attempts",
                "Requests sent to the upstream again with Last-Event-ID",
                |s| s.attempts,
            ),
            (
                "tower_sse_resumed",
                "New upstream responses spliced into a client's open stream",
                |s| s.resumed,
            ),
        ];
        encode_route_counters(
            &mut encoder,
            &snapshots,
            &counters,
            (
                "tower_sse_resume_given_up",
                "Resumes given up, by reason (no_id, too_large, attempts, no_content, max_resumes)",
            ),
            &GiveUpReason::ALL.map(|reason| (reason.as_str(), reason)),
            ResumeSnapshot::gave_up,
        )
    }
}

/// Encodes one counter family per `(name, help, pick)` with a sample per route, then the family
/// `(name, help)` with a sample per route and reason: the shape both collectors share.
fn encode_route_counters<S, R: Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    snapshots: &[(String, S)],
    counters: &[CounterFamily<'_, S>],
    (name, help): (&str, &str),
    reasons: &[(&'static str, R)],
    count: fn(&S, R) -> u64,
) -> Result<(), std::fmt::Error> {
    for (name, help, pick) in counters {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (route, snapshot) in snapshots {
            let labels: Labels = vec![("route", route.clone())];
            ConstCounter::new(pick(snapshot)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (route, snapshot) in snapshots {
        for &(reason, value) in reasons {
            let labels: Labels = vec![("route", route.clone()), ("reason", reason.to_owned())];
            ConstCounter::new(count(snapshot, value)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Serves the admin endpoints on `listener` until the process exits.
pub(crate) fn serve(listener: TcpListener, stats: Stats, shutdown: SseShutdown) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let stats = stats.clone();
            let shutdown = shutdown.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, &stats, &shutdown);
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn answer(
    request: &Request<Incoming>,
    stats: &Stats,
    shutdown: &SseShutdown,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(stats.encode()),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" if shutdown.is_draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from_static(b"draining\n"),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ready\n")),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found: /metrics, /healthz, /readyz\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// The address the admin listener is bound to, for the stdout line.
pub(crate) fn describe(addr: SocketAddr) -> String {
    format!("admin on http://{addr}")
}
