//! `tower-sse-fleet`: the simulation, the load client, the Redis-backed SSE app and the plots.
//!
//! Exit codes: 0 clean, 1 runtime failure, 2 usage error (clap's).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tower_sse_fleet::app::{AppArgs, ProduceArgs, app, produce};
use tower_sse_fleet::load::{LoadArgs, load};
use tower_sse_fleet::plot::{PlotArgs, plot};
use tower_sse_fleet::simulate::{PeaksArgs, SimulateArgs, peaks, simulate};

/// Reconnect storms across a fleet of SSE instances, simulated and measured.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate every scenario with and without the tower-sse settings (CSV + table of peaks).
    Simulate(SimulateArgs),
    /// Run spec-following EventSource clients against a URL (CSV of reconnects per 100 ms).
    Load(LoadArgs),
    /// Serve the event log of a Redis Stream as SSE, from Last-Event-ID.
    App(AppArgs),
    /// Append a numbered event to the Redis Stream every interval.
    Produce(ProduceArgs),
    /// Plot reconnects per second over time from CSV files as a PNG.
    Plot(PlotArgs),
    /// Print the peak of every column of CSV files of reconnects.
    Peaks(PeaksArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate(&args),
        Command::App(args) => runtime(None).and_then(|rt| rt.block_on(app(args))),
        Command::Produce(args) => runtime(None).and_then(|rt| rt.block_on(produce(args))),
        Command::Plot(args) => plot(&args),
        Command::Peaks(args) => peaks(&args),
        Command::Load(args) => runtime(args.threads)
            .and_then(|rt| rt.block_on(load(args)).map(|summary| println!("{summary}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads.filter(|&n| n > 0) {
        builder.worker_threads(threads);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}
