//! `tower-sse-proxy`: a reverse proxy that puts [`tower_sse::SseLayer`] in front of upstream
//! services written in anything (Express, FastAPI, Rails, Spring), so that their event streams
//! survive buffering proxies, compressors, load balancers and deploys.
//!
//! ```text
//! tower-sse-proxy --upstream http://127.0.0.1:3000
//! tower-sse-proxy --config proxy.toml
//! ```
//!
//! Every request is forwarded to its route's upstream (http or https, HTTP/1.1 or HTTP/2),
//! streaming both bodies; every `text/event-stream` response gets the layer's treatment
//! (anti-buffering headers, a `retry:` hint, heartbeats, idle timeout, maximum lifetime,
//! slow-client buffer, staggered drain on shutdown); every other response passes through
//! untouched. `Upgrade: websocket` requests are tunnelled both ways. See the crate's README for
//! the flags, the config file and the admin endpoints.
//!
//! The first line on stdout is `listening on http://ADDR, proxying to URL` (one per listener,
//! with the port actually bound). Exit codes: 0 after a clean shutdown, 1 for a runtime failure
//! (an address that cannot be bound), 2 for bad arguments or a bad config file.

mod activity;
mod admin;
mod cli;
mod config;
mod guard;
mod pool;
mod routes;
mod server;
mod settings;
mod tls;
mod upstream;

use std::process::ExitCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use clap::Parser as _;
use tower_sse::SseShutdown;

use crate::cli::{Cli, LogFormat};
use crate::config::Config;

/// How long the shutdown waits, after the drain window, for other responses to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(error) => {
            say(
                std::io::stderr(),
                format_args!("tower-sse-proxy: error: {error}"),
            );
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        say(std::io::stdout(), config.to_toml().trim_end());
        return ExitCode::SUCCESS;
    }

    init_logs(config.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say(
                std::io::stderr(),
                format_args!("tower-sse-proxy: cannot start the runtime: {error}"),
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            say(
                std::io::stderr(),
                format_args!("tower-sse-proxy: error: {message}"),
            );
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            say(
                std::io::stderr(),
                format_args!("tower-sse-proxy: {message}"),
            );
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: stdout carries only the `listening on` lines, for scripts. `RUST_LOG`
/// overrides the default filter `info,tower_sse=debug`.
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_sse=debug"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr must not turn every log line into a panic.
        .log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        // Colours only on a terminal.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Why [`run`] failed: a configuration the checks at load time could not see (a certificate
/// file), or the runtime.
enum Failure {
    Config(String),
    Runtime(String),
}

async fn run(cli: Cli, config: Config) -> Result<(), Failure> {
    let shutdown = SseShutdown::new();
    let stats = admin::Stats::new();
    let shared = routes::Shared {
        shutdown: shutdown.clone(),
        drain: config.drain,
        stats: stats.clone(),
    };
    for route in &config.routes {
        tracing::info!(route = %route.name, upstream = route.upstream.as_ref().map(|u| u.display.as_str()), "route");
    }
    let table = routes::build(&config, &shared).map_err(Failure::Config)?;
    let current: routes::Current = Arc::new(RwLock::new(Arc::new(table)));

    // Signal handlers are installed before the address is announced: a SIGTERM sent as soon as
    // the `listening on` line is read is a graceful shutdown, not the default "terminate".
    let mut signals = Signals::new()
        .map_err(|error| Failure::Runtime(format!("cannot install signal handlers: {error}")))?;

    let mut servers = Vec::new();
    let mut lines = Vec::new();
    for listener in &config.listeners {
        let tls = match &listener.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(&files.cert, &files.key).map_err(Failure::Config)?,
            )),
            None => None,
        };
        let bound = server::bind(listener.addr, config.backlog).map_err(|error| {
            Failure::Runtime(format!("cannot listen on {}: {error}", listener.addr))
        })?;
        let local = bound
            .local_addr()
            .map_err(|error| Failure::Runtime(format!("cannot read the bound address: {error}")))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        lines.push(format!(
            "listening on {scheme}://{local}, proxying to {}",
            config.upstreams_display()
        ));
        servers.push(server::Server {
            listener: bound,
            tls,
            routes: Arc::clone(&current),
            header_timeout: config.header_timeout,
            keepalive: config.keepalive(),
        });
    }
    let admin = match config.admin {
        Some(addr) => {
            let listener = server::bind(addr, 1024).map_err(|error| {
                Failure::Runtime(format!("cannot listen on {addr} (admin): {error}"))
            })?;
            let local = listener.local_addr().map_err(|error| {
                Failure::Runtime(format!("cannot read the admin address: {error}"))
            })?;
            Some((listener, local))
        }
        None => None,
    };
    for line in lines {
        say(std::io::stdout(), line);
    }
    if let Some((listener, local)) = admin {
        say(std::io::stdout(), admin::describe(local));
        admin::serve(listener, stats.clone(), shutdown.clone());
    }

    let graceful = Arc::new(server::Graceful::new());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut accepting = Vec::new();
    for server in servers {
        accepting.push(tokio::spawn(
            server.run(Arc::clone(&graceful), stopped.clone()),
        ));
    }

    let signal = loop {
        match signals.recv().await {
            "SIGHUP" => reload(&cli, &shared, &current),
            name => break name,
        }
    };

    // Stop accepting, end the event streams over the drain window, let the rest finish.
    let _ = stop.send(true);
    for task in accepting {
        let _ = task.await;
    }
    tracing::info!(
        signal,
        open_streams = stats.open_streams(),
        connections = graceful.count(),
        drain_ms = u64::try_from(config.drain.as_millis()).unwrap_or(u64::MAX),
        "shutting down: draining event streams"
    );
    shutdown.drain();
    let limit = config.drain + SHUTDOWN_GRACE;
    let graceful = Arc::try_unwrap(graceful)
        .map_err(|_| Failure::Runtime("connections still referenced at shutdown".to_owned()))?;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed, bye"),
        () = tokio::time::sleep(limit) => {
            tracing::warn!(
                limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "connections still open after the drain window and grace; exiting anyway"
            );
        }
        name = signals.recv() => tracing::warn!(signal = name, "second signal: exiting now"),
    }
    Ok(())
}

/// Reloads the routes from the config file (and the flags, as at startup). Listeners, the
/// admin address, the drain window and the log format keep their startup values; streams that
/// are open keep the settings they started with. A bad file is logged and changes nothing.
fn reload(cli: &Cli, shared: &routes::Shared, current: &routes::Current) {
    let table = Config::load(cli)
        .map_err(|error| error.0)
        .and_then(|config| routes::build(&config, shared).map(|table| (config, table)));
    match table {
        Ok((config, table)) => {
            *current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
            tracing::info!(routes = config.routes.len(), "SIGHUP: routes reloaded");
        }
        Err(error) => tracing::error!(%error, "SIGHUP: reload failed, the routes are unchanged"),
    }
}

/// Writes one line, ignoring errors: `println!` panics when stdout is a closed pipe.
fn say(mut out: impl std::io::Write, text: impl std::fmt::Display) {
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// The signals: Ctrl-C (SIGINT) and SIGTERM start the shutdown, SIGHUP reloads.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers now (not at the first poll).
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.hangup.recv() => "SIGHUP",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}
