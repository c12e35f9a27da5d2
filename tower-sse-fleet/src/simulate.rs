//! The `simulate` subcommand: every named scenario with and without the tower-sse settings,
//! written as CSV, with a table of peaks.

use std::path::PathBuf;
use std::time::Duration;

use crate::series::{Table, peak};
use crate::sim::{self, Fleet, Named, Settings, Timing};

/// The options of `simulate`, parsed once from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Instances behind the load balancer.
    #[arg(long, default_value_t = 20)]
    pub instances: u32,
    /// Clients.
    #[arg(long, default_value_t = 100_000)]
    pub clients: u32,
    /// Streams one instance accepts at most (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub capacity: u32,
    /// Scenarios to run (repeatable; default: all).
    #[arg(long, value_enum)]
    pub scenario: Vec<Named>,
    /// The drain window of the tower-sse settings.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_window: Duration,
    /// The retry jitter of the tower-sse settings (0 to 1).
    #[arg(long, default_value_t = 1.0, value_parser = fraction)]
    pub retry_jitter: f64,
    /// When the first action of each scenario happens.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub start: Duration,
    /// Between the restarts of two instances or apps.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// From the end of a drain until the instance is ready again.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub restart: Duration,
    /// How long a killed instance stays down.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub down: Duration,
    /// The maximum lifetime of the rotation scenario.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub lifetime: Duration,
    /// App instances behind the proxies (app-restart scenario).
    #[arg(long, default_value_t = 10)]
    pub apps: u32,
    /// The clients' first connections are spread over this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// From a connection attempt until the stream is open.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub connect_latency: Duration,
    /// From a stream's end until its client notices it, at least (calibration: a loaded
    /// machine's delay; 0 for the ideal fleet).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub close_delay: Duration,
    /// Plus a uniformly random amount of at most this.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub close_spread: Duration,
    /// The random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Folder for the CSV files (`<prefix>-<scenario>.csv`, columns `without,with`).
    #[arg(long, default_value = "docs/fleet")]
    pub out: PathBuf,
    /// Prefix of the file names.
    #[arg(long, default_value = "sim")]
    pub prefix: String,
}

/// Parses a fraction in `0.0..=1.0`.
///
/// # Errors
///
/// When the text is not a number in that range.
pub fn fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("`{text}` is not between 0 and 1"))
    }
}

/// Runs the simulation and prints a Markdown table of peaks.
///
/// # Errors
///
/// When a CSV file cannot be written.
pub fn simulate(args: &SimulateArgs) -> Result<(), String> {
    let timing = Timing {
        start: args.start,
        step: args.step,
        restart: args.restart,
        down: args.down,
        lifetime: args.lifetime,
        apps: args.apps,
    };
    let scenarios = if args.scenario.is_empty() {
        Named::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    let with = Settings {
        retry_jitter: args.retry_jitter,
        ..Settings::with(args.drain_window)
    };
    let without = Settings::without();
    println!(
        "{} instances x {} clients; with: retry 3s ±{:.0} %, drain window {}, lifetime jitter 20 %, resume; without: retry 3s fixed, drain window 0, no lifetime jitter, no resume",
        args.instances,
        args.clients,
        args.retry_jitter * 100.0,
        humantime::format_duration(args.drain_window)
    );
    println!();
    println!(
        "| scenario | peak without (/s) | at (s) | peak with (/s) | at (s) | with/without | reconnects without | with | wall (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for named in scenarios {
        let started = std::time::Instant::now();
        let duration = named.duration(&timing, args.instances, args.drain_window);
        let fleet = Fleet {
            instances: args.instances,
            clients: args.clients,
            capacity: args.capacity,
            ramp: args.ramp,
            connect_latency: args.connect_latency,
            close_delay: args.close_delay,
            close_spread: args.close_spread,
            duration,
            seed: args.seed,
        };
        let scenario = named.scenario(&timing);
        let base = sim::run(fleet, without, scenario);
        let tuned = sim::run(fleet, with, scenario);
        // Peaks after the ramp's own connects: from the first action that can cause one.
        let from_s = named_from(named, &timing, &with);
        let p_without = peak(&base.reconnects, from_s);
        let p_with = peak(&tuned.reconnects, from_s);
        let ratio = ratio(p_with.count, p_without.count);
        let mut table = Table::default();
        table.push("without", base.reconnects.clone());
        table.push("with", tuned.reconnects.clone());
        let path = args
            .out
            .join(format!("{}-{}.csv", args.prefix, named.name()));
        table.write(&path)?;
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {ratio} | {} | {} | {} |",
            named.name(),
            p_without.per_second(),
            p_without.at_s,
            p_with.per_second(),
            p_with.at_s,
            base.total(),
            tuned.total(),
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

fn named_from(named: Named, timing: &Timing, with: &Settings) -> f64 {
    named.scenario(timing).first_action(with).as_secs_f64()
}

/// `with / without` as text: `1/N` rounded, or `0` when nothing happened with.
#[must_use]
pub fn ratio(with: u32, without: u32) -> String {
    match (with, without) {
        (_, 0) => "n/a".into(),
        (0, _) => "0".into(),
        (w, b) => format!("1/{:.1}", f64::from(b) / f64::from(w)),
    }
}

/// The options of `peaks`, parsed once from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct PeaksArgs {
    /// Only buckets from this second on.
    #[arg(long, default_value_t = 0.0)]
    pub from: f64,
    /// CSV files (every column of each).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Prints the peak of every column of every file: per 100 ms, per second, and when.
///
/// # Errors
///
/// When a file cannot be read or parsed.
pub fn peaks(args: &PeaksArgs) -> Result<(), String> {
    println!("| file | column | peak (/s) | at (s) | total |");
    println!("|---|---|---|---|---|");
    for file in &args.files {
        let table = Table::read(file)?;
        for (name, counts) in table.names.iter().zip(&table.columns) {
            let p = peak(counts, args.from);
            let total: u64 = counts.iter().map(|&n| u64::from(n)).sum();
            println!(
                "| {} | {name} | {} | {:.1} | {total} |",
                file.display(),
                p.per_second(),
                p.at_s
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_read_as_one_in_n() {
        assert_eq!(ratio(50, 5000), "1/100.0");
        assert_eq!(ratio(0, 5000), "0");
        assert_eq!(ratio(3, 0), "n/a");
    }

    #[test]
    fn fractions_outside_zero_one_are_refused() {
        assert_eq!(fraction("0.5"), Ok(0.5));
        assert!(fraction("1.5").is_err());
        assert!(fraction("x").is_err());
    }
}
