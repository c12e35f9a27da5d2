//! The command line (clap derive). Every flag of the former `proxy` example keeps its name and
//! meaning; the new ones configure listeners, TLS, the admin listener and logs.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use tower_sse::{Coding, SlowClientPolicy};

use crate::settings::{self, Settings, Toggle};

/// A reverse proxy that makes Server-Sent Events from any upstream survive real
/// infrastructure: anti-buffering headers, retry hints, heartbeats, idle timeouts, slow-client
/// buffers and a staggered drain on shutdown, in front of Node, Python, Ruby or Java apps.
#[derive(Debug, Parser)]
#[command(name = "tower-sse-proxy", version, max_term_width = 100)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// Upstream base URL (http:// or https://), for requests matching no route with its own.
    #[arg(long, value_name = "URL")]
    pub(crate) upstream: Option<String>,

    /// Address to listen on (repeatable; default 127.0.0.1:8080; port 0 picks one). Replaces
    /// the config file's listeners.
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) listen: Vec<SocketAddr>,

    /// On Ctrl-C/SIGTERM, spread the ends of event streams over this long (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) drain: Option<Duration>,

    /// Other settings for paths starting with PREFIX (repeatable), e.g. /llm/=heartbeat:5s,retry:1s.
    /// The longest matching prefix wins; the names are those of the stream flags, without `--`.
    #[arg(long = "route", value_name = "PREFIX=SETTINGS", value_parser = route)]
    pub(crate) routes: Vec<(String, Settings)>,

    /// Read listeners, routes and settings from this TOML file; flags apply on top.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Print the effective configuration (file and flags) as TOML and exit.
    #[arg(long)]
    pub(crate) check_config: bool,

    /// Serve /metrics (Prometheus), /healthz and /readyz on this address (default: off).
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) admin: Option<SocketAddr>,

    /// Log format on stderr.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,

    /// Listen backlog: connections the kernel queues before they are accepted (default 4096).
    #[arg(long, value_name = "N")]
    pub(crate) backlog: Option<u32>,

    /// Every connection must send its whole first request head (and finish its TLS handshake)
    /// within this long, or is closed (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) header_timeout: Option<Duration>,

    /// Close a client connection that has had no request in progress for this long, between
    /// requests (HTTP/2: a GOAWAY) (default 75s, like nginx's keepalive_timeout; 0s turns it
    /// off).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) keepalive_timeout: Option<Duration>,

    /// Serve TLS to clients with this certificate chain (PEM; needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Speak HTTP/2 to the upstream: h2c prior knowledge for http://, ALPN h2 for https://.
    #[arg(long)]
    pub(crate) upstream_http2: bool,

    /// Trust the CA certificates in this PEM file for https upstreams, besides the built-in
    /// roots.
    #[arg(long, value_name = "FILE")]
    pub(crate) upstream_ca: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) stream: StreamArgs,
}

/// The stream settings, as flags: the defaults of every route.
#[derive(Debug, Args)]
#[command(next_help_heading = "Stream settings (global; in --route, the same names without --)")]
pub(crate) struct StreamArgs {
    /// `retry:` hint written at the start and end of streams (default 3s).
    #[arg(long, value_name = "DURATION", value_parser = duration, conflicts_with = "no_retry")]
    pub(crate) retry: Option<Duration>,
    /// Write no `retry:` hint.
    #[arg(long)]
    pub(crate) no_retry: bool,
    /// Comment heartbeat after this long without bytes (default 15s).
    #[arg(long, value_name = "DURATION", value_parser = duration, conflicts_with = "no_heartbeat")]
    pub(crate) heartbeat: Option<Duration>,
    /// Send no heartbeats.
    #[arg(long)]
    pub(crate) no_heartbeat: bool,
    /// End a stream whose upstream sent nothing for this long (default off).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) idle_timeout: Option<Duration>,
    /// End streams after about this long, jittered 80-100% (default off).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) max_lifetime: Option<Duration>,
    /// End a stream whose client took no byte for this long while bytes wait (default 10s;
    /// turns the slow-client buffer on).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) slow_client_timeout: Option<Duration>,
    /// Bytes buffered per stream for a slow client (default 1MiB; turns the buffer on).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub(crate) max_buffer: Option<usize>,
    /// When that buffer is full: stop reading the upstream, drop the oldest events, or keep the
    /// newest event of each type (default disconnect; turns the buffer on).
    #[arg(long, value_name = "POLICY", value_parser = policy)]
    pub(crate) slow_client_policy: Option<SlowClientPolicy>,
    /// When the upstream cannot be reached or sends no response head in time, answer a request
    /// whose Accept lists text/event-stream with 200, a jittered `retry:` hint and a clean end
    /// instead of a 502/504 (EventSource gives up for good on any non-200).
    #[arg(long)]
    pub(crate) unreachable_sse: bool,
    /// How long the upstream may take to send its response head before the client gets a 504
    /// (default 60s; 0s turns it off).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) response_timeout: Option<Duration>,
    /// The largest request body forwarded to the upstream; a larger one gets 413 (default
    /// 1MiB, like nginx's client_max_body_size; 0 turns the limit off).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub(crate) max_body: Option<usize>,
    /// How far each stream's `retry:` hints move at random, ± this fraction, 0 to 1: the hint
    /// at the stream's start and the one at its end (default 0.2; a drain's final hint moves at
    /// least 20 %).
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    pub(crate) retry_jitter: Option<f64>,
    /// How far the lifetime is shortened at random, 0 to 1 (default 0.2).
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    pub(crate) lifetime_jitter: Option<f64>,
    /// How long a stream ending at its lifetime waits for an event boundary (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) close_grace: Option<Duration>,
    /// Text of the heartbeat comment (default empty: `:`).
    #[arg(long, value_name = "TEXT")]
    pub(crate) heartbeat_comment: Option<String>,
    /// A comment written at the start of each stream (default none).
    #[arg(long, value_name = "TEXT")]
    pub(crate) initial_comment: Option<String>,
    /// Forward the client's Accept-Encoding on event-stream requests as is.
    #[arg(long)]
    pub(crate) no_compression_bypass: bool,
    /// When an upstream event stream of a GET fails (connection reset, truncated body), ask
    /// again with Last-Event-ID after the upstream's retry (or --retry), jittered, and splice
    /// the new events into the client's open response: the client never reconnects.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Resume an upstream event stream that ends cleanly too, for upstreams whose streams are
    /// meant to be endless (turns --resume on).
    #[arg(long)]
    pub(crate) resume_on_end: bool,
    /// Requests per interruption before the client's stream is ended (default 3; turns
    /// --resume on; 0 turns it off).
    #[arg(long, value_name = "N")]
    pub(crate) resume_attempts: Option<u32>,
    /// With resume, the most bytes of an incomplete event held back so that the client never
    /// gets half an event; past it the stream goes on without resume (default 1MiB; turns
    /// --resume on).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub(crate) max_event: Option<usize>,
    /// With resume, the longest wait taken from the upstream's `retry:` field before asking
    /// again: a larger value is cut to this, so that `retry: 999999999` does not park the
    /// client (default 30s; --retry is not bounded by it; turns --resume on).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) resume_max_retry: Option<Duration>,
    /// With resume, the most upstream responses spliced into one client stream; the
    /// interruption after the last ends the client's stream as without resume (default 100;
    /// turns --resume on; 0 turns it off).
    #[arg(long, value_name = "N")]
    pub(crate) max_resumes: Option<u32>,
    /// With resume, how far each wait before asking the upstream again moves at random, ± this
    /// fraction of it, 0 to 1, so that the streams of a restarted upstream do not all ask again
    /// at once (default 0.5: a 3s wait becomes 1.5-4.5s; 0 waits exactly; turns --resume on).
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    pub(crate) resume_jitter: Option<f64>,
    /// Compress event streams for clients that accept it (Accept-Encoding), flushed whenever
    /// the stream waits so that no event is delayed: the codings in order of preference
    /// (default zstd,gzip; br, ~315 KiB per stream, only when listed; `off` for none).
    #[arg(long, value_name = "CODINGS", num_args = 0..=1,
          default_missing_value = "zstd,gzip", value_parser = codings)]
    pub(crate) compress: Option<CodingList>,
    /// With --upstream-http2, the most streams on one connection to the upstream: when every
    /// open connection carries this many, the proxy opens another (default 100, below nginx's
    /// 128; the upstream's own SETTINGS_MAX_CONCURRENT_STREAMS caps it too, once read).
    #[arg(long, value_name = "N", value_parser = stream_count)]
    pub(crate) upstream_h2_max_streams: Option<NonZeroU32>,
}

/// One `--compress` value, a whole list (an alias so that clap does not read
/// `Option<Vec<_>>` as a repeated flag).
type CodingList = Vec<Coding>;

/// The log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl LogFormat {
    /// The name used on the command line and in the config file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl StreamArgs {
    /// The settings these flags give.
    pub(crate) fn settings(&self) -> Settings {
        let toggle = |value: Option<Duration>, off: bool| match (value, off) {
            (Some(value), _) => Toggle::Set(value),
            (None, true) => Toggle::Off,
            (None, false) => Toggle::Default,
        };
        Settings {
            retry: toggle(self.retry, self.no_retry),
            heartbeat: toggle(self.heartbeat, self.no_heartbeat),
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            slow_client_timeout: self.slow_client_timeout,
            max_buffer: self.max_buffer,
            slow_client_policy: self.slow_client_policy,
            unreachable_sse: self.unreachable_sse,
            response_timeout: self.response_timeout,
            max_body: self.max_body,
            retry_jitter: self.retry_jitter,
            lifetime_jitter: self.lifetime_jitter,
            close_grace: self.close_grace,
            heartbeat_comment: self.heartbeat_comment.clone(),
            initial_comment: self.initial_comment.clone(),
            no_compression_bypass: self.no_compression_bypass,
            resume: self.resume,
            resume_on_end: self.resume_on_end,
            resume_attempts: self.resume_attempts,
            max_event: self.max_event,
            resume_max_retry: self.resume_max_retry,
            max_resumes: self.max_resumes,
            resume_jitter: self.resume_jitter,
            compress: self.compress.clone(),
            upstream_h2_max_streams: self.upstream_h2_max_streams,
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    settings::parse_duration(text)
}

fn size(text: &str) -> Result<usize, String> {
    settings::parse_size(text)
}

fn fraction(text: &str) -> Result<f64, String> {
    settings::parse_fraction(text)
}

fn policy(text: &str) -> Result<SlowClientPolicy, String> {
    settings::parse_policy(text)
}

fn codings(text: &str) -> Result<CodingList, String> {
    settings::parse_codings(text)
}

fn stream_count(text: &str) -> Result<NonZeroU32, String> {
    settings::parse_stream_count(text)
}

fn route(text: &str) -> Result<(String, Settings), String> {
    settings::parse_route(text)
}

const AFTER_HELP: &str = "\
Routes: requests whose path starts with PREFIX get the global settings overridden by the listed
ones; the longest matching prefix wins. For example:
  --route /llm/=heartbeat:5s,retry:1s
  --route /feeds/=slow-client-policy:latest-per-type,max-buffer:256KiB
  --route /live/=unreachable-sse,retry:5s
  --route /feeds/=resume,resume-attempts:5,max-event:256KiB,max-resumes:20
  --route /llm/=compress:gzip+zstd   (in --route, + separates codings)
  --route /upload/=max-body:50MiB
A config file (--config) can also match routes on the Host and send them to other upstreams.

DURATION: 500ms, 1.5s, 2m, 1h 30m (humantime). A zero heartbeat, idle timeout or lifetime turns
the option off. SIZE: 4096, 512KiB, 1MiB (IEC, powers of 1024) or 64kB (SI, powers of 1000).

Signals: SIGTERM or Ctrl-C drains and exits 0; SIGHUP reloads the routes of the config file.
Exit codes: 0 clean, 1 runtime failure (address in use, ...), 2 usage or config error.";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tower-sse-proxy").chain(line.split_whitespace()))
    }

    #[test]
    fn every_old_flag_is_read_in_both_spellings() {
        let cli = parse(
            "--listen=127.0.0.1:0 --upstream http://u:1/base/ --retry 1500ms --no-heartbeat \
             --idle-timeout=60s --max-lifetime 30m --drain 2.0s --slow-client-timeout=2s \
             --max-buffer 512KiB --slow-client-policy=latest-per-type --route /a/=retry:1s \
             --route=/b/=no-heartbeat --unreachable-sse --compress gzip,br --resume \
             --resume-attempts=5 --max-event 64KiB --resume-max-retry 10s --max-resumes=20 \
             --resume-jitter=0.2 --retry-jitter 0.3 --lifetime-jitter=1 \
             --upstream-h2-max-streams=64",
        )
        .unwrap();
        assert_eq!(cli.listen, [SocketAddr::from(([127, 0, 0, 1], 0))]);
        assert_eq!(cli.upstream.as_deref(), Some("http://u:1/base/"));
        assert_eq!(cli.drain, Some(Duration::from_secs(2)));
        let global = cli.stream.settings();
        assert_eq!(global.retry, Toggle::Set(Duration::from_millis(1500)));
        assert_eq!(global.heartbeat, Toggle::Off);
        assert_eq!(global.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(global.max_lifetime, Some(Duration::from_secs(1800)));
        assert_eq!(global.slow_client_timeout, Some(Duration::from_secs(2)));
        assert_eq!(global.max_buffer, Some(512 * 1024));
        assert_eq!(
            global.slow_client_policy,
            Some(SlowClientPolicy::LatestPerType)
        );
        assert!(global.unreachable_sse);
        assert_eq!(global.compress, Some(vec![Coding::Gzip, Coding::Br]));
        assert!(global.resume);
        assert_eq!(global.resume_attempts, Some(5));
        assert_eq!(global.max_event, Some(64 * 1024));
        assert_eq!(global.resume_max_retry, Some(Duration::from_secs(10)));
        assert_eq!(global.max_resumes, Some(20));
        assert_eq!(global.resume_jitter, Some(0.2));
        assert_eq!(global.retry_jitter, Some(0.3));
        assert_eq!(global.lifetime_jitter, Some(1.0));
        assert_eq!(global.h2_max_streams(), 64);
        let settings = parse("--upstream http://u:1 --compress --resume-on-end")
            .unwrap()
            .stream
            .settings();
        assert_eq!(settings.compress, Some(settings::DEFAULT_CODINGS.to_vec()));
        assert!(settings.resume_layer().is_some());
        let prefixes: Vec<&str> = cli.routes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(prefixes, ["/a/", "/b/"]);
    }

    #[test]
    fn defaults_leave_the_layer_alone() {
        let cli = parse("--upstream http://127.0.0.1:9000").unwrap();
        assert!(cli.listen.is_empty());
        assert_eq!(cli.drain, None);
        assert_eq!(cli.stream.settings(), Settings::default());
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        let cases = [
            ("--upstream http://u:1 --bogus", "--bogus"),
            ("--upstream http://u:1 extra", "extra"),
            ("--upstream http://u:1 --retry", "--retry"),
            ("--upstream http://u:1 --retry 3x", "--retry"),
            ("--upstream http://u:1 --retry 3s --no-retry", "--no-retry"),
            ("--upstream http://u:1 --drain 1s --drain 2s", "--drain"),
            ("--upstream http://u:1 --no-retry=yes", "--no-retry"),
            ("--upstream http://u:1 --listen localhost", "--listen"),
            ("--upstream http://u:1 --max-buffer lots", "--max-buffer"),
            (
                "--upstream http://u:1 --slow-client-policy drop",
                "--slow-client-policy",
            ),
            (
                "--upstream http://u:1 --slow-client-timeout 1",
                "--slow-client-timeout",
            ),
            ("--upstream http://u:1 --route /llm/", "--route"),
            ("--upstream http://u:1 --route /llm/=bogus:1", "--route"),
            (
                "--upstream http://u:1 --unreachable-sse=yes",
                "--unreachable-sse",
            ),
            ("--upstream http://u:1 --tls-cert c.pem", "--tls-key"),
            ("--upstream http://u:1 --compress deflate", "--compress"),
            (
                "--upstream http://u:1 --resume-attempts x",
                "--resume-attempts",
            ),
            ("--upstream http://u:1 --max-event lots", "--max-event"),
            (
                "--upstream http://u:1 --resume-max-retry 30",
                "--resume-max-retry",
            ),
            ("--upstream http://u:1 --max-resumes many", "--max-resumes"),
            (
                "--upstream http://u:1 --max-resumes 1 --max-resumes 2",
                "--max-resumes",
            ),
            ("--upstream http://u:1 --resume-jitter 2", "--resume-jitter"),
            (
                "--upstream http://u:1 --resume-jitter=-0.5",
                "--resume-jitter",
            ),
            (
                "--upstream http://u:1 --resume-jitter NaN",
                "--resume-jitter",
            ),
            (
                "--upstream http://u:1 --resume-jitter half",
                "--resume-jitter",
            ),
            ("--upstream http://u:1 --resume-jitter", "--resume-jitter"),
            // The other fractions are checked as in --route and the file (they were clamped,
            // and --check-config then printed a file that did not load).
            ("--upstream http://u:1 --retry-jitter 2", "--retry-jitter"),
            ("--upstream http://u:1 --retry-jitter NaN", "--retry-jitter"),
            (
                "--upstream http://u:1 --lifetime-jitter=-1",
                "--lifetime-jitter",
            ),
            (
                "--upstream http://u:1 --upstream-h2-max-streams 0",
                "--upstream-h2-max-streams",
            ),
            (
                "--upstream http://u:1 --upstream-h2-max-streams lots",
                "--upstream-h2-max-streams",
            ),
        ];
        for (line, flag) in cases {
            match parse(line) {
                Err(error) => {
                    assert_eq!(error.exit_code(), 2, "{line}");
                    let text = error.to_string();
                    assert!(text.contains(flag), "{line}: {text}");
                }
                Ok(cli) => panic!("{line}: accepted as {cli:?}"),
            }
        }
    }

    #[test]
    fn help_and_version_exit_0() {
        for flag in ["--help", "--version", "-h", "-V"] {
            let error = parse(flag).unwrap_err();
            assert_eq!(error.exit_code(), 0, "{flag}");
        }
    }
}
