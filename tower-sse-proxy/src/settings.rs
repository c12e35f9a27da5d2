//! The settings of one route's event streams (the layer's options, the slow-client buffer,
//! `unreachable-sse`, the upstream response-head timeout), and their text forms: the `--NAME`
//! flags and the `NAME:VALUE` items of `--route PREFIX=...`.

use std::num::NonZeroU32;
use std::time::Duration;

use tower_sse::{
    Coding, Compression, ResumeLayer, SlowClient, SlowClientPolicy, SseLayer, SseMetrics,
    SseShutdown,
};

/// The `retry:` hint of `--unreachable-sse` answers when the route writes none (`no-retry`):
/// the layer's own default.
pub(crate) const DEFAULT_RETRY: Duration = Duration::from_secs(3);
/// How far a resume's wait moves, either way, when the route does not say (`resume-jitter`): the
/// streams of a restarted upstream do not all ask again in the same millisecond.
pub(crate) const RESUME_JITTER: f64 = 0.5;
/// How long an upstream may take to send its response head when the route does not say (like
/// nginx's `proxy_read_timeout`).
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest request body a route forwards when it does not say (like nginx's
/// `client_max_body_size 1m`).
pub(crate) const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// The most streams per HTTP/2 connection to an upstream when the route does not say.
pub(crate) const DEFAULT_H2_MAX_STREAMS: u32 = crate::pool::DEFAULT_MAX_STREAMS;

/// The settings of a stream: the global flags, what one `--route` names, or a section of the
/// config file. A field not given is `Toggle::Default` or `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Settings {
    pub(crate) retry: Toggle,
    pub(crate) heartbeat: Toggle,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) slow_client_timeout: Option<Duration>,
    pub(crate) max_buffer: Option<usize>,
    pub(crate) slow_client_policy: Option<SlowClientPolicy>,
    /// `--unreachable-sse`: a request for an event stream whose upstream cannot be reached (or
    /// sends no response head in time) gets `200 text/event-stream` and a jittered `retry:`.
    pub(crate) unreachable_sse: bool,
    /// How long the upstream may take to send its response head (default 60 s).
    pub(crate) response_timeout: Option<Duration>,
    /// `max-body`: the largest request body forwarded; larger ones get 413 (default 1 MiB, 0
    /// turns the limit off).
    pub(crate) max_body: Option<usize>,
    pub(crate) retry_jitter: Option<f64>,
    pub(crate) lifetime_jitter: Option<f64>,
    pub(crate) close_grace: Option<Duration>,
    pub(crate) heartbeat_comment: Option<String>,
    pub(crate) initial_comment: Option<String>,
    /// `no-compression-bypass`: leave `Accept-Encoding` of event-stream requests alone.
    pub(crate) no_compression_bypass: bool,
    /// `resume`: an interrupted upstream event stream is asked for again with `Last-Event-ID`
    /// and spliced into the client's open response.
    pub(crate) resume: bool,
    /// `resume-on-end`: a clean upstream end is resumed too (turns resume on).
    pub(crate) resume_on_end: bool,
    /// `resume-attempts`: requests per interruption before giving up (default 3; turns resume
    /// on, 0 turns it off).
    pub(crate) resume_attempts: Option<u32>,
    /// `max-event`: the most bytes of an incomplete event held back (default 1 MiB; turns
    /// resume on).
    pub(crate) max_event: Option<usize>,
    /// `resume-max-retry`: the longest wait taken from the upstream's `retry:` (default 30 s;
    /// turns resume on).
    pub(crate) resume_max_retry: Option<Duration>,
    /// `max-resumes`: the most upstream responses spliced into one client stream (default 100;
    /// turns resume on, 0 turns it off).
    pub(crate) max_resumes: Option<u32>,
    /// `resume-jitter`: how far each wait before asking the upstream again moves at random,
    /// ± this fraction of it, 0 to 1 (default 0.5; turns resume on, 0 waits exactly).
    pub(crate) resume_jitter: Option<f64>,
    /// `compress`: the codings event streams may be encoded with, in order of preference
    /// (empty: off, also when a route turns it off under a global `--compress`).
    pub(crate) compress: Option<Vec<Coding>>,
    /// `upstream-h2-max-streams`: the most streams the proxy opens on one HTTP/2 connection to
    /// the upstream before it opens another (default 100; HTTP/2 upstreams only).
    pub(crate) upstream_h2_max_streams: Option<NonZeroU32>,
}

/// An option with a value, an opt-out flag, or neither (the layer's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Toggle {
    #[default]
    Default,
    Set(Duration),
    Off,
}

impl Settings {
    /// These settings, with those not given taken from `global`.
    pub(crate) fn inherit(&self, global: &Self) -> Self {
        let toggle = |own: Toggle, global: Toggle| {
            if own == Toggle::Default { global } else { own }
        };
        Self {
            retry: toggle(self.retry, global.retry),
            heartbeat: toggle(self.heartbeat, global.heartbeat),
            idle_timeout: self.idle_timeout.or(global.idle_timeout),
            max_lifetime: self.max_lifetime.or(global.max_lifetime),
            slow_client_timeout: self.slow_client_timeout.or(global.slow_client_timeout),
            max_buffer: self.max_buffer.or(global.max_buffer),
            slow_client_policy: self.slow_client_policy.or(global.slow_client_policy),
            unreachable_sse: self.unreachable_sse || global.unreachable_sse,
            response_timeout: self.response_timeout.or(global.response_timeout),
            max_body: self.max_body.or(global.max_body),
            retry_jitter: self.retry_jitter.or(global.retry_jitter),
            lifetime_jitter: self.lifetime_jitter.or(global.lifetime_jitter),
            close_grace: self.close_grace.or(global.close_grace),
            heartbeat_comment: self
                .heartbeat_comment
                .clone()
                .or_else(|| global.heartbeat_comment.clone()),
            initial_comment: self
                .initial_comment
                .clone()
                .or_else(|| global.initial_comment.clone()),
            no_compression_bypass: self.no_compression_bypass || global.no_compression_bypass,
            resume: self.resume || global.resume,
            resume_on_end: self.resume_on_end || global.resume_on_end,
            resume_attempts: self.resume_attempts.or(global.resume_attempts),
            max_event: self.max_event.or(global.max_event),
            resume_max_retry: self.resume_max_retry.or(global.resume_max_retry),
            max_resumes: self.max_resumes.or(global.max_resumes),
            resume_jitter: self.resume_jitter.or(global.resume_jitter),
            compress: self.compress.clone().or_else(|| global.compress.clone()),
            upstream_h2_max_streams: self
                .upstream_h2_max_streams
                .or(global.upstream_h2_max_streams),
        }
    }

    /// The most streams per HTTP/2 connection to the upstream ([`DEFAULT_H2_MAX_STREAMS`]
    /// unless set).
    pub(crate) fn h2_max_streams(&self) -> u32 {
        self.upstream_h2_max_streams
            .map_or(DEFAULT_H2_MAX_STREAMS, NonZeroU32::get)
    }

    /// The upstream resume layer: on when `resume` or any of its settings is given, unless
    /// `resume-attempts` or `max-resumes` is 0; the layer's defaults (3 attempts, 1 MiB, 30 s,
    /// 100 resumes, clean ends not resumed) for what is not given. It waits the upstream's last
    /// `retry:` (at most `resume-max-retry`), or the route's `retry` (3 s when not given),
    /// jittered by ± `resume-jitter` (50 % when not given).
    pub(crate) fn resume_layer(&self) -> Option<ResumeLayer> {
        let on = self.resume
            || self.resume_on_end
            || self.resume_attempts.is_some()
            || self.max_event.is_some()
            || self.resume_max_retry.is_some()
            || self.max_resumes.is_some()
            || self.resume_jitter.is_some();
        if !on || self.resume_attempts == Some(0) || self.max_resumes == Some(0) {
            return None;
        }
        let retry = match self.retry {
            Toggle::Set(delay) => delay,
            Toggle::Default | Toggle::Off => DEFAULT_RETRY,
        };
        let mut layer = ResumeLayer::new()
            .resume_on_end(self.resume_on_end)
            .retry(retry)
            .jitter(self.resume_jitter.unwrap_or(RESUME_JITTER));
        if let Some(attempts) = self.resume_attempts {
            layer = layer.resume_attempts(attempts);
        }
        if let Some(bytes) = self.max_event {
            layer = layer.max_event(bytes);
        }
        if let Some(wait) = self.resume_max_retry {
            layer = layer.max_retry(wait);
        }
        if let Some(resumes) = self.max_resumes {
            layer = layer.max_resumes(resumes);
        }
        Some(layer)
    }

    /// The `retry:` hint (before jitter) of the `--unreachable-sse` answer, `None` when that
    /// option is off: the route's retry, or the layer's default 3 s when it writes none
    /// (`no-retry`), since the hint is all that answer says.
    pub(crate) fn unreachable_retry(&self) -> Option<Duration> {
        self.unreachable_sse.then_some(match self.retry {
            Toggle::Set(delay) => delay,
            Toggle::Default | Toggle::Off => DEFAULT_RETRY,
        })
    }

    /// The upstream response-head timeout (60 s unless set; zero turns it off).
    pub(crate) fn response_timeout(&self) -> Option<Duration> {
        let limit = self.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
        (!limit.is_zero()).then_some(limit)
    }

    /// The request body limit in bytes (1 MiB unless set; zero turns it off).
    pub(crate) fn max_body(&self) -> Option<u64> {
        let limit = self.max_body.unwrap_or(DEFAULT_MAX_BODY);
        (limit != 0).then(|| u64::try_from(limit).unwrap_or(u64::MAX))
    }

    /// The slow-client buffer: on when any of its settings is given, with the layer's defaults
    /// (1 MiB, 10 s, disconnect) for the others.
    pub(crate) fn slow_client(&self) -> Option<SlowClient> {
        if self.slow_client_timeout.is_none()
            && self.max_buffer.is_none()
            && self.slow_client_policy.is_none()
        {
            return None;
        }
        let mut slow = SlowClient::new();
        if let Some(timeout) = self.slow_client_timeout {
            slow = slow.timeout(timeout);
        }
        if let Some(bytes) = self.max_buffer {
            slow = slow.max_buffer(bytes);
        }
        if let Some(policy) = self.slow_client_policy {
            slow = slow.policy(policy);
        }
        Some(slow)
    }

    /// The route's layer (without the slow-client buffer, see [`Self::slow_client`]). Settings
    /// not given keep the layer's defaults.
    ///
    /// # Errors
    ///
    /// A heartbeat or initial comment the layer refuses (a line break in it).
    pub(crate) fn layer(
        &self,
        shutdown: &SseShutdown,
        drain: Duration,
        metrics: &SseMetrics,
    ) -> Result<SseLayer, String> {
        let mut layer = SseLayer::new()
            .shutdown(shutdown.clone())
            .drain_window(drain)
            .metrics(metrics.clone());
        match self.retry {
            Toggle::Default => {}
            Toggle::Set(delay) => layer = layer.retry(delay),
            Toggle::Off => layer = layer.no_retry(),
        }
        match self.heartbeat {
            Toggle::Default => {}
            Toggle::Set(interval) => layer = layer.heartbeat(interval),
            Toggle::Off => layer = layer.no_heartbeat(),
        }
        if let Some(limit) = self.idle_timeout {
            layer = layer.idle_timeout(limit);
        }
        if let Some(lifetime) = self.max_lifetime {
            layer = layer.max_lifetime(lifetime);
        }
        if let Some(fraction) = self.retry_jitter {
            layer = layer.retry_jitter(fraction);
        }
        if let Some(fraction) = self.lifetime_jitter {
            layer = layer.lifetime_jitter(fraction);
        }
        if let Some(grace) = self.close_grace {
            layer = layer.close_grace(grace);
        }
        if let Some(text) = &self.heartbeat_comment {
            layer = layer
                .try_heartbeat_comment(text)
                .map_err(|error| format!("heartbeat-comment: {error}"))?;
        }
        if let Some(text) = &self.initial_comment {
            layer = layer
                .try_initial_comment(text)
                .map_err(|error| format!("initial-comment: {error}"))?;
        }
        if self.no_compression_bypass {
            layer = layer.no_compression_bypass();
        }
        if let Some(codings) = self.compress.as_ref().filter(|codings| !codings.is_empty()) {
            layer = layer.compress(Compression::new().order(codings.iter().copied()));
        }
        Ok(layer)
    }
}

/// The names of the stream settings: `--NAME` as flags, `NAME` in `--route`, `NAME = ...` in the
/// config file.
pub(crate) const SETTINGS: [&str; 27] = [
    "retry",
    "no-retry",
    "heartbeat",
    "no-heartbeat",
    "idle-timeout",
    "max-lifetime",
    "slow-client-timeout",
    "max-buffer",
    "slow-client-policy",
    "unreachable-sse",
    "response-timeout",
    "max-body",
    "retry-jitter",
    "lifetime-jitter",
    "close-grace",
    "heartbeat-comment",
    "initial-comment",
    "no-compression-bypass",
    "resume",
    "resume-on-end",
    "resume-attempts",
    "max-event",
    "resume-max-retry",
    "max-resumes",
    "resume-jitter",
    "compress",
    "upstream-h2-max-streams",
];

/// Whether setting `name` takes a value (the switches do not).
fn takes_value(name: &str) -> bool {
    !matches!(
        name,
        "no-retry"
            | "no-heartbeat"
            | "unreachable-sse"
            | "no-compression-bypass"
            | "resume"
            | "resume-on-end"
    )
}

/// Parses a `--route` value, `PREFIX=NAME:VALUE,NAME,...`, into the prefix and the settings it
/// names (not yet merged with the global ones). An empty list is allowed: it gives a path under
/// another route the global settings back.
///
/// # Errors
///
/// A one-line message naming the prefix and the setting.
pub(crate) fn parse_route(text: &str) -> Result<(String, Settings), String> {
    let Some((prefix, list)) = text.split_once('=') else {
        return Err(format!(
            "`{text}`: expected PREFIX=NAME:VALUE,..., e.g. /llm/=heartbeat:5s,retry:1s"
        ));
    };
    check_prefix(prefix).map_err(|error| format!("`{text}`: {error}"))?;
    let mut settings = Settings::default();
    if !list.is_empty() {
        for item in list.split(',') {
            let (name, value) = match item.split_once(':') {
                Some((name, value)) => (name, Some(value)),
                None => (item, None),
            };
            if name.contains('=') {
                return Err(format!(
                    "{prefix}: `{item}`: write settings as NAME:VALUE (retry:1s)"
                ));
            }
            if !SETTINGS.contains(&name) {
                return Err(format!(
                    "{prefix}: unknown setting `{name}` (known: {})",
                    SETTINGS.join(", ")
                ));
            }
            apply(&mut settings, name, value).map_err(|error| format!("{prefix}: {error}"))?;
        }
    }
    Ok((prefix.to_owned(), settings))
}

/// Checks a route's path prefix: a path starting with `/`, without query, fragment or spaces.
///
/// # Errors
///
/// What is wrong with it.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/')
        || prefix.contains(['?', '#'])
        || prefix.contains(char::is_whitespace)
    {
        return Err("the prefix must be a path starting with /".to_owned());
    }
    Ok(())
}

/// Sets the stream setting `name` (one of [`SETTINGS`]) from `value`.
fn apply(settings: &mut Settings, name: &str, value: Option<&str>) -> Result<(), String> {
    if name == "compress" {
        // The one setting whose value is optional: `compress` alone is the default order.
        let codings = match value {
            None => DEFAULT_CODINGS.to_vec(),
            Some(text) => parse_codings(text).map_err(|error| format!("{name}: {error}"))?,
        };
        return once(&mut settings.compress, name, codings);
    }
    if !takes_value(name) {
        if value.is_some() {
            return Err(format!("{name} takes no value"));
        }
    } else if value.is_none() {
        return Err(format!("{name} needs a value"));
    }
    let text = value.unwrap_or_default();
    let duration = || parse_duration(text).map_err(|error| format!("{name}: {error}"));
    let fraction = || parse_fraction(text).map_err(|error| format!("{name}: {error}"));
    let count = || {
        text.parse::<u32>()
            .map_err(|_| format!("{name}: `{text}` is not a count like 0, 3 or 10"))
    };
    let toggle = |slot: &mut Toggle, base: &str, value: Toggle| {
        if *slot != Toggle::Default {
            return Err(format!("{base}/no-{base} given more than once"));
        }
        *slot = value;
        Ok(())
    };
    match name {
        "retry" => toggle(&mut settings.retry, "retry", Toggle::Set(duration()?)),
        "no-retry" => toggle(&mut settings.retry, "retry", Toggle::Off),
        "heartbeat" => toggle(
            &mut settings.heartbeat,
            "heartbeat",
            Toggle::Set(duration()?),
        ),
        "no-heartbeat" => toggle(&mut settings.heartbeat, "heartbeat", Toggle::Off),
        "idle-timeout" => once(&mut settings.idle_timeout, name, duration()?),
        "max-lifetime" => once(&mut settings.max_lifetime, name, duration()?),
        "slow-client-timeout" => once(&mut settings.slow_client_timeout, name, duration()?),
        "max-buffer" => once(
            &mut settings.max_buffer,
            name,
            parse_size(text).map_err(|error| format!("{name}: {error}"))?,
        ),
        "slow-client-policy" => once(
            &mut settings.slow_client_policy,
            name,
            parse_policy(text).map_err(|error| format!("{name}: {error}"))?,
        ),
        "response-timeout" => once(&mut settings.response_timeout, name, duration()?),
        "max-body" => once(
            &mut settings.max_body,
            name,
            parse_size(text).map_err(|error| format!("{name}: {error}"))?,
        ),
        "retry-jitter" => once(&mut settings.retry_jitter, name, fraction()?),
        "lifetime-jitter" => once(&mut settings.lifetime_jitter, name, fraction()?),
        "close-grace" => once(&mut settings.close_grace, name, duration()?),
        "heartbeat-comment" => once(&mut settings.heartbeat_comment, name, text.to_owned()),
        "initial-comment" => once(&mut settings.initial_comment, name, text.to_owned()),
        "unreachable-sse" => switch(&mut settings.unreachable_sse, name),
        "no-compression-bypass" => switch(&mut settings.no_compression_bypass, name),
        "resume" => switch(&mut settings.resume, name),
        "resume-on-end" => switch(&mut settings.resume_on_end, name),
        "resume-attempts" => once(&mut settings.resume_attempts, name, count()?),
        "max-event" => once(
            &mut settings.max_event,
            name,
            parse_size(text).map_err(|error| format!("{name}: {error}"))?,
        ),
        "resume-max-retry" => once(&mut settings.resume_max_retry, name, duration()?),
        "max-resumes" => once(&mut settings.max_resumes, name, count()?),
        "resume-jitter" => once(&mut settings.resume_jitter, name, fraction()?),
        "upstream-h2-max-streams" => once(
            &mut settings.upstream_h2_max_streams,
            name,
            parse_stream_count(text).map_err(|error| format!("{name}: {error}"))?,
        ),
        _ => Err(format!("unknown setting `{name}`")),
    }
}

/// Stores `value` in `slot`, unless the option was already given.
fn once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} given more than once"));
    }
    *slot = Some(value);
    Ok(())
}

/// Turns a switch on, unless it already is.
fn switch(slot: &mut bool, name: &str) -> Result<(), String> {
    if *slot {
        return Err(format!("{name} given more than once"));
    }
    *slot = true;
    Ok(())
}

/// Parses a duration with `humantime`: `500ms`, `1.5s`, `2m`, `1h 30m`. A unit is required.
///
/// # Errors
///
/// A message quoting the text.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not a duration like 500ms, 1.5s, 2m or 1h ({error})"))
}

/// Parses a size with `bytesize`: `4096`, `512KiB`, `1MiB`, `64kB` (SI units are powers of
/// 1000, IEC units powers of 1024).
///
/// # Errors
///
/// A message quoting the text.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = text.trim().parse().map_err(|error: String| {
        format!("`{text}` is not a size like 4096, 512KiB or 1MiB ({error})")
    })?;
    if text.trim() != text || text.is_empty() {
        return Err(format!("`{text}` is not a size like 4096, 512KiB or 1MiB"));
    }
    usize::try_from(size.as_u64())
        .ok()
        .filter(|&bytes| bytes < usize::MAX)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The codings of `compress` without a list, the library's default order: zstd (the least CPU
/// per event; 60 KiB of encoder state per stream), then gzip (30 KiB). br (315 KiB) only when
/// listed; the three ratios on JSON event streams are within 0.01x of each other.
pub(crate) const DEFAULT_CODINGS: [Coding; 2] = [Coding::Zstd, Coding::Gzip];

/// Parses a list of codings, `zstd,br,gzip` (`+` separates them too, for `--route` whose items
/// are separated by commas); `off` (or `none`) is the empty list, compression off.
///
/// # Errors
///
/// A message naming the unknown coding.
pub(crate) fn parse_codings(text: &str) -> Result<Vec<Coding>, String> {
    if matches!(text.trim(), "off" | "none") {
        return Ok(Vec::new());
    }
    let mut codings = Vec::new();
    for name in text.split([',', '+']).map(str::trim) {
        let coding = match name {
            "zstd" => Coding::Zstd,
            "br" => Coding::Br,
            "gzip" => Coding::Gzip,
            _ => {
                return Err(format!(
                    "`{name}` is not one of zstd, br, gzip (or off for none)"
                ));
            }
        };
        if codings.contains(&coding) {
            return Err(format!("`{name}` listed twice"));
        }
        codings.push(coding);
    }
    Ok(codings)
}

/// The text form of a list of codings (the inverse of [`parse_codings`]).
pub(crate) fn codings_text(codings: &[Coding]) -> String {
    if codings.is_empty() {
        return "off".to_owned();
    }
    codings
        .iter()
        .map(|coding| coding.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a count of streams, 1 or more.
///
/// # Errors
///
/// A message quoting the text.
pub(crate) fn parse_stream_count(text: &str) -> Result<NonZeroU32, String> {
    text.parse::<NonZeroU32>()
        .map_err(|_| format!("`{text}` is not a number of streams from 1 to 4294967295"))
}

/// Parses a jitter fraction, from 0 to 1.
///
/// # Errors
///
/// A message quoting the text.
pub(crate) fn parse_fraction(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|value| (0.0..=1.0).contains(value))
        .ok_or_else(|| format!("`{text}` is not a fraction from 0 to 1"))
}

/// Parses a slow-client policy name.
///
/// # Errors
///
/// A message listing the names.
pub(crate) fn parse_policy(text: &str) -> Result<SlowClientPolicy, String> {
    match text {
        "disconnect" => Ok(SlowClientPolicy::Disconnect),
        "drop-oldest" => Ok(SlowClientPolicy::DropOldest),
        "latest-per-type" => Ok(SlowClientPolicy::LatestPerType),
        _ => Err(format!(
            "`{text}` is not one of disconnect, drop-oldest, latest-per-type"
        )),
    }
}

/// The name of a slow-client policy (the inverse of [`parse_policy`]).
pub(crate) fn policy_name(policy: SlowClientPolicy) -> &'static str {
    match policy {
        SlowClientPolicy::DropOldest => "drop-oldest",
        SlowClientPolicy::LatestPerType => "latest-per-type",
        _ => "disconnect",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn durations_accept_fractions_and_compound_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2.0s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_are_errors_not_panics() {
        for text in [
            "", "s", "ms", "3", "3x", "-3s", "+3s", "3ms5", "é", "3é", "1.5.5s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("1.5MiB"), Ok(1536 * 1024));
        assert_eq!(parse_size("64kB"), Ok(64_000));
    }

    #[test]
    fn malformed_sizes_are_errors_not_panics() {
        for text in [
            "", "B", "KiB", "1 lots", " 1KiB", "1KiB ", "-1", "é", "1é", "1XB",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn routes_read_every_setting_and_nothing_else() {
        let (prefix, settings) = parse_route(
            "/llm/=retry:1s,heartbeat:5s,idle-timeout:1m,max-lifetime:1h,\
             slow-client-timeout:300ms,max-buffer:256KiB,slow-client-policy:latest-per-type,\
             unreachable-sse,response-timeout:2s,max-body:8MiB,retry-jitter:0.2,lifetime-jitter:0.1,\
             close-grace:1s,heartbeat-comment:ping,initial-comment:hello,no-compression-bypass,\
             resume,resume-on-end,resume-attempts:5,max-event:64KiB,resume-max-retry:10s,\
             max-resumes:20,resume-jitter:0.2,compress:gzip+zstd,upstream-h2-max-streams:50",
        )
        .unwrap();
        assert_eq!(prefix, "/llm/");
        assert_eq!(
            settings,
            Settings {
                retry: Toggle::Set(Duration::from_secs(1)),
                heartbeat: Toggle::Set(Duration::from_secs(5)),
                idle_timeout: Some(Duration::from_secs(60)),
                max_lifetime: Some(Duration::from_secs(3600)),
                slow_client_timeout: Some(Duration::from_millis(300)),
                max_buffer: Some(256 * 1024),
                slow_client_policy: Some(SlowClientPolicy::LatestPerType),
                unreachable_sse: true,
                response_timeout: Some(Duration::from_secs(2)),
                max_body: Some(8 * 1024 * 1024),
                retry_jitter: Some(0.2),
                lifetime_jitter: Some(0.1),
                close_grace: Some(Duration::from_secs(1)),
                heartbeat_comment: Some("ping".to_owned()),
                initial_comment: Some("hello".to_owned()),
                no_compression_bypass: true,
                resume: true,
                resume_on_end: true,
                resume_attempts: Some(5),
                max_event: Some(64 * 1024),
                resume_max_retry: Some(Duration::from_secs(10)),
                max_resumes: Some(20),
                resume_jitter: Some(0.2),
                compress: Some(vec![Coding::Gzip, Coding::Zstd]),
                upstream_h2_max_streams: NonZeroU32::new(50),
            }
        );
        let (_, settings) = parse_route("/quiet=no-retry,no-heartbeat").unwrap();
        assert_eq!(settings.retry, Toggle::Off);
        assert_eq!(settings.heartbeat, Toggle::Off);
        assert_eq!(
            parse_route("/llm/plain/=").unwrap(),
            ("/llm/plain/".to_owned(), Settings::default())
        );
        assert_eq!(parse_route("/=retry:2s").unwrap().0, "/");
    }

    #[test]
    fn bad_routes_are_reported_in_one_line() {
        let cases = [
            ("/llm/", "expected PREFIX=NAME:VALUE"),
            ("llm=retry:1s", "must be a path"),
            ("=retry:1s", "must be a path"),
            ("/a?b=retry:1s", "must be a path"),
            ("/llm/=bogus:1", "/llm/: unknown setting `bogus`"),
            ("/llm/=drain:1s", "unknown setting `drain`"),
            ("/llm/=retry=1s", "write settings as NAME:VALUE"),
            ("/llm/=retry", "retry needs a value"),
            ("/llm/=retry:", "retry: `` is not a duration"),
            ("/llm/=retry:1s,", "unknown setting ``"),
            ("/llm/=no-retry:1s", "no-retry takes no value"),
            (
                "/llm/=retry:1s,no-retry",
                "retry/no-retry given more than once",
            ),
            (
                "/llm/=max-buffer:1KiB,max-buffer:2KiB",
                "max-buffer given more than once",
            ),
            ("/llm/=max-buffer:lots", "max-buffer: `lots` is not a size"),
            ("/llm/=slow-client-policy:oldest", "`oldest` is not one of"),
            (
                "/live/=unreachable-sse:on",
                "unreachable-sse takes no value",
            ),
            (
                "/live/=unreachable-sse,unreachable-sse",
                "given more than once",
            ),
            ("/live/=retry-jitter:2", "not a fraction"),
            ("/live/=resume:on", "resume takes no value"),
            ("/live/=resume-attempts:many", "`many` is not a count"),
            ("/live/=resume-attempts:-1", "`-1` is not a count"),
            ("/live/=max-event:big", "max-event: `big` is not a size"),
            (
                "/live/=resume-max-retry:30",
                "resume-max-retry: `30` is not a duration",
            ),
            (
                "/live/=resume-max-retry:1s,resume-max-retry:2s",
                "resume-max-retry given more than once",
            ),
            (
                "/live/=max-resumes:lots",
                "max-resumes: `lots` is not a count",
            ),
            ("/live/=max-resumes:-1", "max-resumes: `-1` is not a count"),
            ("/live/=max-resumes", "max-resumes needs a value"),
            (
                "/live/=resume-jitter:2",
                "resume-jitter: `2` is not a fraction from 0 to 1",
            ),
            (
                "/live/=resume-jitter:-0.1",
                "resume-jitter: `-0.1` is not a fraction",
            ),
            (
                "/live/=resume-jitter:NaN",
                "resume-jitter: `NaN` is not a fraction",
            ),
            ("/live/=resume-jitter:half", "`half` is not a fraction"),
            ("/live/=resume-jitter", "resume-jitter needs a value"),
            (
                "/live/=resume-jitter:0.1,resume-jitter:0.2",
                "resume-jitter given more than once",
            ),
            ("/up/=max-body:huge", "max-body: `huge` is not a size"),
            (
                "/live/=compress:deflate",
                "compress: `deflate` is not one of",
            ),
            ("/live/=compress:gzip+gzip", "`gzip` listed twice"),
            (
                "/up/=upstream-h2-max-streams:0",
                "upstream-h2-max-streams: `0` is not a number of streams",
            ),
            (
                "/up/=upstream-h2-max-streams:many",
                "upstream-h2-max-streams: `many` is not a number of streams",
            ),
            (
                "/up/=upstream-h2-max-streams",
                "upstream-h2-max-streams needs a value",
            ),
            (
                "/up/=upstream-h2-max-streams:2,upstream-h2-max-streams:3",
                "upstream-h2-max-streams given more than once",
            ),
            (
                "/live/=compress,compress:br",
                "compress given more than once",
            ),
        ];
        for (text, expected) in cases {
            match parse_route(text) {
                Err(message) => {
                    assert!(message.contains(expected), "{text}: {message}");
                    assert!(!message.contains('\n'), "{text}: {message}");
                }
                Ok(parsed) => panic!("{text}: accepted as {parsed:?}"),
            }
        }
    }

    #[test]
    fn giving_any_slow_client_setting_turns_the_buffer_on_with_defaults_for_the_others() {
        let slow = |text: &str| parse_route(text).unwrap().1.slow_client();
        assert_eq!(slow("/="), None);
        assert_eq!(slow("/=retry:1s,heartbeat:5s"), None);
        assert_eq!(
            slow("/=slow-client-timeout:3s"),
            Some(SlowClient::new().timeout(Duration::from_secs(3)))
        );
        assert_eq!(slow("/=max-buffer:1MiB"), Some(SlowClient::new()));
        assert_eq!(
            slow("/=slow-client-policy:drop-oldest"),
            Some(SlowClient::new().policy(SlowClientPolicy::DropOldest))
        );
    }

    #[test]
    fn unreachable_sse_takes_the_retry_of_its_route_or_the_default() {
        let on = parse_route("/=unreachable-sse").unwrap().1;
        assert_eq!(on.unreachable_retry(), Some(Duration::from_secs(3)));
        let set = parse_route("/=unreachable-sse,retry:1500ms").unwrap().1;
        assert_eq!(set.unreachable_retry(), Some(Duration::from_millis(1500)));
        let off = parse_route("/=unreachable-sse,no-retry").unwrap().1;
        assert_eq!(off.unreachable_retry(), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_route("/=retry:2s").unwrap().1.unreachable_retry(),
            None
        );
    }

    #[test]
    fn resume_is_on_with_any_of_its_settings_and_off_with_zero_attempts() {
        let on = |text: &str| parse_route(text).unwrap().1.resume_layer().is_some();
        assert!(!on("/="));
        assert!(!on("/=retry:1s,unreachable-sse"));
        assert!(on("/=resume"));
        assert!(on("/=resume-on-end"));
        assert!(on("/=resume-attempts:5"));
        assert!(on("/=max-event:64KiB"));
        assert!(on("/=resume-max-retry:10s"));
        assert!(on("/=max-resumes:20"));
        assert!(on("/=resume-jitter:0.2"));
        assert!(!on("/=resume,resume-attempts:0"));
        assert!(!on("/=resume,max-resumes:0"));
        // The caps reach the layer (its Debug shows its configuration).
        let layer = parse_route("/=resume-max-retry:10s,max-resumes:20")
            .unwrap()
            .1
            .resume_layer()
            .unwrap();
        let text = format!("{layer:?}");
        assert!(text.contains("max_retry: 10s"), "{text}");
        assert!(text.contains("max_resumes: 20"), "{text}");
        // The jitter too: the route's, or the proxy's default ±50 % (the layer's own).
        let jitter = |text: &str| {
            let layer = parse_route(text).unwrap().1.resume_layer().unwrap();
            format!("{layer:?}")
        };
        assert!(jitter("/=resume-jitter:0.2").contains("jitter: 0.2,"));
        assert!(jitter("/=resume,resume-jitter:0").contains("jitter: 0.0,"));
        assert!(jitter("/=resume").contains("jitter: 0.5,"));
        let global = parse_route("/=resume-jitter:0.1").unwrap().1;
        let route = parse_route("/a/=max-resumes:20")
            .unwrap()
            .1
            .inherit(&global);
        assert!(format!("{:?}", route.resume_layer().unwrap()).contains("jitter: 0.1,"));
        let global = parse_route("/=resume").unwrap().1;
        let route = parse_route("/a/=max-resumes:0").unwrap().1;
        assert!(route.inherit(&global).resume_layer().is_none());
        let route = parse_route("/a/=resume-attempts:0").unwrap().1;
        assert!(route.inherit(&global).resume_layer().is_none());
        assert!(
            parse_route("/b/=")
                .unwrap()
                .1
                .inherit(&global)
                .resume_layer()
                .is_some()
        );
    }

    #[test]
    fn compress_alone_offers_every_coding_and_off_turns_a_global_one_off() {
        let codings = |text: &str| parse_route(text).unwrap().1.compress;
        assert_eq!(codings("/="), None);
        assert_eq!(codings("/=compress"), Some(DEFAULT_CODINGS.to_vec()));
        assert_eq!(codings("/=compress:br"), Some(vec![Coding::Br]));
        assert_eq!(codings("/=compress:off"), Some(Vec::new()));
        let global = parse_route("/=compress").unwrap().1;
        let off = parse_route("/a/=compress:off").unwrap().1.inherit(&global);
        assert_eq!(off.compress, Some(Vec::new()));
        assert_eq!(codings_text(&DEFAULT_CODINGS), "zstd,gzip");
        assert_eq!(codings_text(&[]), "off");
    }

    #[test]
    fn the_response_timeout_defaults_to_60_s_and_zero_turns_it_off() {
        let timeout = |text: &str| parse_route(text).unwrap().1.response_timeout();
        assert_eq!(timeout("/="), Some(Duration::from_secs(60)));
        assert_eq!(
            timeout("/=response-timeout:2s"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(timeout("/=response-timeout:0s"), None);
    }

    #[test]
    fn the_body_limit_defaults_to_1_mib_and_zero_turns_it_off() {
        let limit = |text: &str| parse_route(text).unwrap().1.max_body();
        assert_eq!(limit("/="), Some(1024 * 1024));
        assert_eq!(limit("/=max-body:50MiB"), Some(50 * 1024 * 1024));
        assert_eq!(limit("/=max-body:0"), None);
    }

    #[test]
    fn the_h2_stream_cap_defaults_to_100_and_a_route_inherits_it() {
        let cap = |text: &str| parse_route(text).unwrap().1;
        assert_eq!(cap("/=").h2_max_streams(), 100);
        let global = cap("/=upstream-h2-max-streams:64");
        assert_eq!(global.h2_max_streams(), 64);
        assert_eq!(cap("/a/=").inherit(&global).h2_max_streams(), 64);
        assert_eq!(
            cap("/a/=upstream-h2-max-streams:2")
                .inherit(&global)
                .h2_max_streams(),
            2
        );
    }

    #[test]
    fn a_route_inherits_what_it_does_not_name() {
        let global = parse_route("/=retry:2s,heartbeat:20s,max-buffer:2MiB")
            .unwrap()
            .1;
        let route = parse_route("/llm/=heartbeat:5s")
            .unwrap()
            .1
            .inherit(&global);
        assert_eq!(route.retry, Toggle::Set(Duration::from_secs(2)));
        assert_eq!(route.heartbeat, Toggle::Set(Duration::from_secs(5)));
        assert_eq!(
            route.slow_client(),
            Some(SlowClient::new().max_buffer(2 << 20))
        );
    }
}
