//! The HTTP handlers: the page, the job routes and the metrics.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::StreamExt;
use tokio_stream::wrappers::IntervalStream;
use tower_sse::{CloseReason, MetricsSnapshot, SseMetrics};

use crate::jobs::{
    AppState, DEFAULT_DELAY_MS, DEFAULT_TOTAL, JobStream, MAX_DELAY_MS, MAX_JOBS, MAX_TOTAL,
    last_event_id, lock, run_job,
};
use crate::json::json_str;

const INDEX_HTML: &str = include_str!("index.html");

pub(crate) type AppRef = Arc<Shared>;

pub(crate) struct Shared {
    pub(crate) app: Arc<AppState>,
    /// The counters of the job streams' layer.
    pub(crate) metrics: SseMetrics,
}

pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn bad_name() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "job names are 1-64 characters of A-Z a-z 0-9 - _\n",
    )
        .into_response()
}

fn too_many_jobs() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("this demo keeps at most {MAX_JOBS} jobs\n"),
    )
        .into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

/// `?total=N&delay_ms=M`, both optional.
fn job_params(query: Option<&str>) -> Result<(u32, u64), String> {
    let mut total = DEFAULT_TOTAL;
    let mut delay_ms = DEFAULT_DELAY_MS;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "total" => {
                total = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_TOTAL).contains(n))
                    .ok_or(format!("total must be 1..={MAX_TOTAL}"))?;
            }
            "delay_ms" => {
                delay_ms = value
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_DELAY_MS)
                    .ok_or(format!("delay_ms must be 0..={MAX_DELAY_MS}"))?;
            }
            _ => return Err(format!("unknown parameter {key:?}")),
        }
    }
    Ok((total, delay_ms))
}

pub(crate) async fn start_job(
    State(state): State<AppRef>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let (total, delay_ms) = match job_params(query.as_deref()) {
        Ok(params) => params,
        Err(message) => return (StatusCode::BAD_REQUEST, message + "\n").into_response(),
    };
    let Some(job) = state.app.job(&name) else {
        return too_many_jobs();
    };
    let mut inner = lock(&job.inner);
    if let Some(worker) = inner.worker.take() {
        worker.abort();
    }
    // A new run: the previous run's events go, the ids continue.
    inner.base += inner.log.len() as u64;
    inner.log.clear();
    inner.run += 1;
    inner.total = total;
    inner.processed = 0;
    inner.failures.clear();
    inner.done = false;
    let run = inner.run;
    job.push(
        &mut inner,
        "start",
        format!(r#"{{"run":{run},"total":{total}}}"#),
    );
    inner.worker = Some(tokio::spawn(run_job(
        Arc::clone(&job),
        run,
        total,
        Duration::from_millis(delay_ms),
    )));
    drop(inner);
    tracing::info!(job = %name, run, total, delay_ms, "job started");
    let mut body = String::new();
    write!(
        body,
        r#"{{"name":{},"run":{run},"total":{total}}}"#,
        json_str(&name)
    )
    .ok();
    json(StatusCode::ACCEPTED, body)
}

pub(crate) async fn cut_job(State(state): State<AppRef>, Path(name): Path<String>) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let Some(job) = state.app.job(&name) else {
        return too_many_jobs();
    };
    let streams = job.streams.load(Ordering::Relaxed);
    job.cut.send_modify(|generation| *generation += 1);
    tracing::info!(job = %name, streams, "cut the job's event streams");
    json(StatusCode::OK, format!(r#"{{"cut":{streams}}}"#))
}

pub(crate) async fn job_state(State(state): State<AppRef>, Path(name): Path<String>) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let Some(job) = state.app.job(&name) else {
        return too_many_jobs();
    };
    let inner = lock(&job.inner);
    let failures = inner
        .failures
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let body = format!(
        r#"{{"name":{},"run":{},"processed":{},"total":{},"failures":[{failures}],"done":{},"last_event_id":{},"streams":{}}}"#,
        json_str(&name),
        inner.run,
        inner.processed,
        inner.total,
        inner.done,
        inner.base + inner.log.len() as u64,
        job.streams.load(Ordering::Relaxed),
    );
    json(StatusCode::OK, body)
}

pub(crate) async fn job_events(
    State(state): State<AppRef>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let Some(job) = state.app.job(&name) else {
        return too_many_jobs();
    };
    let last = last_event_id(&headers);
    Sse::new(JobStream::open(job, last).into_stream()).into_response()
}

fn metrics_body(snapshot: &MetricsSnapshot) -> String {
    let mut body = String::new();
    write!(
        body,
        r#"{{"open_streams":{},"opened":{},"closed_total":{},"bytes":{},"events":{},"heartbeats":{},"heartbeats_skipped":{},"closed":{{"#,
        snapshot.open_streams,
        snapshot.opened,
        snapshot.closed_total(),
        snapshot.bytes,
        snapshot.events,
        snapshot.heartbeats,
        snapshot.heartbeats_skipped,
    )
    .ok();
    for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        write!(
            body,
            "{comma}{}:{}",
            json_str(reason.as_str()),
            snapshot.closed(reason)
        )
        .ok();
    }
    body.push_str("}}");
    body
}

pub(crate) async fn metrics_json(State(state): State<AppRef>) -> Response {
    json(StatusCode::OK, metrics_body(&state.metrics.snapshot()))
}

pub(crate) async fn metrics_events(State(state): State<AppRef>) -> Response {
    let metrics = state.metrics.clone();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = IntervalStream::new(interval).map(move |_| {
        Ok::<_, Infallible>(
            Event::default()
                .event("metrics")
                .data(metrics_body(&metrics.snapshot())),
        )
    });
    Sse::new(events).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_params_have_defaults_and_bounds() {
        assert_eq!(job_params(None), Ok((300, 15)));
        assert_eq!(job_params(Some("total=50&delay_ms=0")), Ok((50, 0)));
        assert!(job_params(Some("total=0")).is_err());
        assert!(job_params(Some("speed=1")).is_err());
    }
}
