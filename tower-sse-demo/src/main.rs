//! The tower-sse demo: a live job-progress page behind the layer.
//!
//! Run with: `cargo run -p tower-sse-demo`, then open the printed URL, or watch a job's events
//! from a terminal:
//!
//! ```text
//! curl -X POST http://127.0.0.1:3000/jobs/demo/start
//! curl -N http://127.0.0.1:3000/jobs/demo/events
//! ```
//!
//! Each job (`/jobs/{name}`, `/` is the job `demo`) processes a few hundred records; every record
//! whose id is a multiple of 17 fails. The page follows the job over one `EventSource` and
//! renders its state from the events alone.
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
//!
//! The files: `jobs.rs` holds the jobs and their event logs, `handlers.rs` the HTTP handlers,
//! `json.rs` the JSON string escaping, this file the command line, the router and the drain.

mod handlers;
mod jobs;
mod json;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use clap::Parser;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::trace::TraceLayer;
use tower_sse::{SseLayer, SseShutdown, not_sse};

use crate::handlers::{
    Shared, cut_job, index, job_events, job_state, metrics_events, metrics_json, start_job,
};
use crate::jobs::AppState;

/// Streams end at a random moment in this window after Ctrl-C.
const DRAIN_WINDOW: Duration = Duration::from_secs(3);

/// A live job-progress page behind tower-sse.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The address to listen on (`127.0.0.1:0` picks a free port; the first stdout line names it).
    #[arg(long, env = "DEMO_ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() {
    // clap exits 2 on a bad argument, naming it, and 0 after `--help` / `--version`.
    let Args { listen: addr } = Args::parse();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("tower-sse demo: cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(error) => {
            eprintln!("tower-sse demo: cannot read the listening address: {error}");
            std::process::exit(1);
        }
    };
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
    let app = app(state, &shutdown);

    let served = axum::serve(listener, app)
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
        .await;
    if let Err(error) = served {
        eprintln!("tower-sse demo: server error: {error}");
        std::process::exit(1);
    }
    println!("tower-sse demo: bye");
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
