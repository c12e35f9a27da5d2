//! Run with: cargo run --example demo
//!
//! Then open the printed URL, or watch a job's events from a terminal:
//!
//! ```text
//! curl -X POST http://127.0.0.1:3000/jobs/demo/start
//! curl -N http://127.0.0.1:3000/jobs/demo/events
//! ```
//!
//! A live job-progress page behind tower-sse. Each job (`/jobs/{name}`, `/` is the job `demo`)
//! processes a few hundred records; every record whose id is a multiple of 17 fails. The page
//! follows the job over one `EventSource` and renders its state from the events alone.
//!
//! Every event carries an `id:`. The server keeps the events of a job's current run in memory:
//! a client that reconnects with `Last-Event-ID` gets exactly the events after that id, then the
//! live ones, so no failure is lost or shown twice. `POST /jobs/{name}/cut` ends the job's open
//! streams to try it: the browser reconnects after the `retry:` hint tower-sse writes.
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `GET /jobs/{name}` | the page (`/` shows the job `demo`) |
//! | `POST /jobs/{name}/start` | starts or restarts the job (`?total=300&delay_ms=15`) |
//! | `GET /jobs/{name}/events` | the job's event stream (honours `Last-Event-ID`) |
//! | `POST /jobs/{name}/cut` | ends the job's open event streams |
//! | `GET /jobs/{name}/state` | the job's state as JSON |
//! | `GET /metrics/events` | tower-sse counters of the job streams, one event a second |
//! | `GET /metrics` | the same counters as JSON |
//!
//! Options: `--listen ADDR` (or `DEMO_ADDR`), default `127.0.0.1:3000`; `RUST_LOG` for logs
//! (default `info,tower_sse=debug`, on stderr). Ctrl-C drains the streams and exits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::IntervalStream;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::trace::TraceLayer;
use tower_sse::{CloseReason, MetricsSnapshot, SseLayer, SseMetrics, SseShutdown, not_sse};

const INDEX_HTML: &str = include_str!("demo/index.html");

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_TOTAL: u32 = 300;
const DEFAULT_DELAY_MS: u64 = 15;
const MAX_TOTAL: u32 = 100_000;
const MAX_DELAY_MS: u64 = 1_000;
/// Records whose id is a multiple of this fail.
const FAIL_EVERY: u32 = 17;
/// Streams end at a random moment in this window after Ctrl-C.
const DRAIN_WINDOW: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() {
    let addr = match listen_addr() {
        Ok(addr) => addr,
        Err(None) => {
            println!("{USAGE}");
            return;
        }
        Err(Some(message)) => {
            eprintln!("tower-sse demo: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("tower-sse demo: cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().expect("bound socket has an address");
    // First line on stdout, flushed: scripts read the port from it with `--listen 127.0.0.1:0`.
    println!("tower-sse demo: open http://{local}/");
    std::io::stdout().flush().ok();

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_sse=debug".into()),
        )
        .init();

    let shutdown = SseShutdown::new();
    let state = Arc::new(AppState::default());
    let app = app(Arc::clone(&state), &shutdown);

    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            println!(
                "tower-sse demo: shutting down, draining event streams (at most {} s)",
                DRAIN_WINDOW.as_secs()
            );
            std::io::stdout().flush().ok();
            shutdown.drain();
            // A second Ctrl-C, or a connection that outlives the drain by far, exits at once.
            tokio::spawn(async {
                tokio::select! {
                    () = shutdown_signal() => {}
                    () = tokio::time::sleep(DRAIN_WINDOW + Duration::from_secs(5)) => {}
                }
                eprintln!("tower-sse demo: forced exit");
                std::process::exit(1);
            });
        })
        .await
        .expect("server error");
    println!("tower-sse demo: bye");
}

const USAGE: &str = "usage: cargo run --example demo -- [--listen ADDR]   (or DEMO_ADDR=ADDR)";

/// `--listen ADDR` / `--listen=ADDR`, else `DEMO_ADDR`, else 127.0.0.1:3000. `Err(None)` for
/// `--help`.
fn listen_addr() -> Result<SocketAddr, Option<String>> {
    let mut chosen = std::env::var("DEMO_ADDR").ok();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--listen" {
            let value = args.next().ok_or("--listen needs an address".to_owned())?;
            chosen = Some(value);
        } else if let Some(value) = arg.strip_prefix("--listen=") {
            chosen = Some(value.to_owned());
        } else if arg == "-h" || arg == "--help" {
            return Err(None);
        } else {
            return Err(Some(format!("unknown argument {arg:?}")));
        }
    }
    let text = chosen.unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    text.parse()
        .map_err(|error| Some(format!("bad listen address {text:?}: {error}")))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

fn app(state: Arc<AppState>, shutdown: &SseShutdown) -> Router {
    // The job streams: short retry so that reconnects after a cut are quick, heartbeats every
    // 5 s, and streams idle for 30 s (no job events) are ended; the browser reconnects with
    // `Last-Event-ID` and carries on.
    let job_streams = SseLayer::new()
        .heartbeat(Duration::from_secs(5))
        .retry(Duration::from_millis(500))
        .retry_jitter(0.2)
        .idle_timeout(Duration::from_secs(30))
        .shutdown(shutdown.clone())
        .drain_window(DRAIN_WINDOW);
    let state = Arc::new(Shared {
        app: state,
        metrics: job_streams.metrics_handle(),
    });
    // The metrics stream has a layer (and counters) of its own, so it does not count itself.
    let metrics_stream = SseLayer::new()
        .retry(Duration::from_secs(1))
        .shutdown(shutdown.clone())
        .drain_window(DRAIN_WINDOW);

    Router::new()
        .route("/", get(index))
        .route("/jobs/{name}", get(index))
        .route("/jobs/{name}/start", post(start_job))
        .route("/jobs/{name}/cut", post(cut_job))
        .route("/jobs/{name}/state", get(job_state))
        .route("/jobs/{name}/events", get(job_events).layer(job_streams))
        .route("/metrics", get(metrics_json))
        .route("/metrics/events", get(metrics_events).layer(metrics_stream))
        .with_state(state)
        // An outer compressor for the page and the JSON; `not_sse` keeps it off event streams.
        .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(not_sse)))
        .layer(TraceLayer::new_for_http())
}

type AppRef = Arc<Shared>;

struct Shared {
    app: Arc<AppState>,
    /// The counters of the job streams' layer.
    metrics: SseMetrics,
}

#[derive(Default)]
struct AppState {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl AppState {
    fn job(&self, name: &str) -> Arc<Job> {
        let mut jobs = lock(&self.jobs);
        Arc::clone(
            jobs.entry(name.to_owned())
                .or_insert_with(|| Arc::new(Job::new(name))),
        )
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One job: the event log of its current run, its state, and the signals streams wait on.
struct Job {
    name: String,
    inner: Mutex<JobInner>,
    /// The id of the last event in the log; bumped on every append.
    appended: watch::Sender<u64>,
    /// Bumped by `POST /jobs/{name}/cut`: every stream open at that moment ends.
    cut: watch::Sender<u64>,
    /// Event streams of this job open now.
    streams: AtomicUsize,
}

#[derive(Default)]
struct JobInner {
    /// The id just before `log[0]`: event `log[i]` has id `base + i + 1`. Ids never repeat
    /// within a job; a restart drops the previous run's events and continues the numbering.
    base: u64,
    log: Vec<LogEvent>,
    run: u64,
    total: u32,
    processed: u32,
    failures: Vec<u32>,
    done: bool,
    worker: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct LogEvent {
    id: u64,
    kind: &'static str,
    data: Arc<str>,
}

impl Job {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            inner: Mutex::default(),
            appended: watch::Sender::new(0),
            cut: watch::Sender::new(0),
            streams: AtomicUsize::new(0),
        }
    }

    /// Appends an event to the log (the caller holds the lock) and wakes the streams.
    fn push(&self, inner: &mut JobInner, kind: &'static str, data: String) {
        let id = inner.base + inner.log.len() as u64 + 1;
        inner.log.push(LogEvent {
            id,
            kind,
            data: data.into(),
        });
        self.appended.send_replace(id);
    }
}

/// Where a stream starts in the log, given the client's `Last-Event-ID`.
#[derive(Debug, PartialEq, Eq)]
enum Resume {
    /// Send `log[index..]`.
    At(usize),
    /// The id is unknown to this server (sent by an earlier process): send a `reset` event
    /// carrying id `base`, then the whole log.
    Reset,
}

fn resume(base: u64, len: usize, last_event_id: Option<u64>) -> Resume {
    match last_event_id {
        // A fresh connection: the whole current run (it starts with its `start` event).
        None => Resume::At(0),
        // An id from a previous run: its `start` event resets the client, replay the run.
        Some(id) if id < base => Resume::At(0),
        // Exactly the events after `id`.
        Some(id) if id - base <= len as u64 => {
            Resume::At(usize::try_from(id - base).unwrap_or(len))
        }
        Some(_) => Resume::Reset,
    }
}

fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

// ----- handlers -----

async fn index() -> Html<&'static str> {
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

async fn start_job(
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
    let job = state.app.job(&name);
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

/// The simulated work: one record every `delay`; records whose id is a multiple of 17 fail.
async fn run_job(job: Arc<Job>, run: u64, total: u32, delay: Duration) {
    for id in 1..=total {
        tokio::time::sleep(delay).await;
        let mut inner = lock(&job.inner);
        if inner.run != run {
            return; // restarted meanwhile
        }
        if let Some(error) = record_error(id) {
            inner.failures.push(id);
            let data = format!(r#"{{"id":{id},"error":{}}}"#, json_str(&error));
            job.push(&mut inner, "failure", data);
        }
        inner.processed = id;
        job.push(
            &mut inner,
            "progress",
            format!(r#"{{"processed":{id},"total":{total}}}"#),
        );
    }
    let mut inner = lock(&job.inner);
    if inner.run != run {
        return;
    }
    inner.done = true;
    inner.worker = None;
    let failures = inner.failures.len();
    job.push(
        &mut inner,
        "done",
        format!(r#"{{"total":{total},"failures":{failures}}}"#),
    );
    tracing::info!(job = %job.name, run, total, failures, "job done");
}

/// Deterministic failures: every multiple of 17, with one of two messages.
fn record_error(id: u32) -> Option<String> {
    if !id.is_multiple_of(FAIL_EVERY) {
        return None;
    }
    Some(if (id / FAIL_EVERY).is_multiple_of(2) {
        format!("record {id}: checksum mismatch")
    } else {
        format!(r#"record {id}: field "amount" is not a number"#)
    })
}

async fn cut_job(State(state): State<AppRef>, Path(name): Path<String>) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let job = state.app.job(&name);
    let streams = job.streams.load(Ordering::Relaxed);
    job.cut.send_modify(|generation| *generation += 1);
    tracing::info!(job = %name, streams, "cut the job's event streams");
    json(StatusCode::OK, format!(r#"{{"cut":{streams}}}"#))
}

async fn job_state(State(state): State<AppRef>, Path(name): Path<String>) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let job = state.app.job(&name);
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

async fn job_events(
    State(state): State<AppRef>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let job = state.app.job(&name);
    let last = last_event_id(&headers);
    Sse::new(JobStream::open(job, last).into_stream()).into_response()
}

/// One client's view of a job: a cursor into the log and the signals to wait on.
struct JobStream {
    job: Arc<Job>,
    /// The id of the last event handed to the client.
    cursor: u64,
    pending: VecDeque<Event>,
    appended: watch::Receiver<u64>,
    cut: watch::Receiver<u64>,
}

impl JobStream {
    fn open(job: Arc<Job>, last: Option<u64>) -> Self {
        // Subscribe before reading the log: an append after this point wakes the stream.
        let appended = job.appended.subscribe();
        let cut = job.cut.subscribe();
        let inner = lock(&job.inner);
        let mut pending = VecDeque::new();
        let start = match resume(inner.base, inner.log.len(), last) {
            Resume::At(index) => index,
            Resume::Reset => {
                pending.push_back(
                    Event::default()
                        .event("reset")
                        .id(inner.base.to_string())
                        .data("{}"),
                );
                0
            }
        };
        let cursor = inner.base + start as u64;
        drop(inner);
        job.streams.fetch_add(1, Ordering::Relaxed);
        Self {
            job,
            cursor,
            pending,
            appended,
            cut,
        }
    }

    /// Copies the events after the cursor. A restart moves `base` past the cursor: the client
    /// then gets the new run from its `start` event, which resets it.
    fn fetch(&mut self) {
        self.appended.borrow_and_update();
        let inner = lock(&self.job.inner);
        let from = self.cursor.saturating_sub(inner.base);
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        for event in inner.log.iter().skip(from) {
            self.pending.push_back(
                Event::default()
                    .event(event.kind)
                    .id(event.id.to_string())
                    .data(&*event.data),
            );
            self.cursor = event.id;
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        stream::unfold(self, |mut this| async move {
            loop {
                if this.cut.has_changed().unwrap_or(true) {
                    return None; // cut: the body ends, the client reconnects
                }
                if let Some(event) = this.pending.pop_front() {
                    return Some((Ok(event), this));
                }
                this.fetch();
                if !this.pending.is_empty() {
                    continue;
                }
                tokio::select! {
                    changed = this.appended.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = this.cut.changed() => return None,
                }
            }
        })
    }
}

impl Drop for JobStream {
    fn drop(&mut self) {
        self.job.streams.fetch_sub(1, Ordering::Relaxed);
    }
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

async fn metrics_json(State(state): State<AppRef>) -> Response {
    json(StatusCode::OK, metrics_body(&state.metrics.snapshot()))
}

async fn metrics_events(State(state): State<AppRef>) -> Response {
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

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                write!(out, "\\u{:04x}", u32::from(c)).ok();
            }
            // Valid in JSON, but not in JavaScript string literals before ES2019.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(json_str("plain"), r#""plain""#);
        assert_eq!(json_str(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(json_str("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(json_str("\u{0}\u{1f}\u{7f}é"), r#""\u0000\u001f\u007fé""#);
    }

    #[test]
    fn resume_sends_exactly_the_events_after_the_last_id() {
        // Run 2: events 11..=15 (base 10).
        assert_eq!(resume(10, 5, None), Resume::At(0));
        assert_eq!(resume(10, 5, Some(10)), Resume::At(0));
        assert_eq!(resume(10, 5, Some(13)), Resume::At(3));
        assert_eq!(resume(10, 5, Some(15)), Resume::At(5));
        // From run 1: replay run 2 from its `start`.
        assert_eq!(resume(10, 5, Some(4)), Resume::At(0));
        // From another process.
        assert_eq!(resume(10, 5, Some(16)), Resume::Reset);
        assert_eq!(resume(0, 0, Some(1)), Resume::Reset);
    }

    #[test]
    fn every_seventeenth_record_fails() {
        let failing: Vec<u32> = (1..=300).filter(|id| record_error(*id).is_some()).collect();
        assert_eq!(failing.len(), 17);
        assert_eq!(failing.first(), Some(&17));
        assert_eq!(record_error(34).unwrap(), "record 34: checksum mismatch");
        assert_eq!(
            record_error(17).unwrap(),
            r#"record 17: field "amount" is not a number"#
        );
    }

    #[test]
    fn job_params_have_defaults_and_bounds() {
        assert_eq!(job_params(None), Ok((300, 15)));
        assert_eq!(job_params(Some("total=50&delay_ms=0")), Ok((50, 0)));
        assert!(job_params(Some("total=0")).is_err());
        assert!(job_params(Some("speed=1")).is_err());
    }
}
