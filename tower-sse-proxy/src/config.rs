//! The effective configuration: the config file (TOML, serde), with the flags on top, checked
//! once into typed values. Every error names the file, line and key, or the flag.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::cli::{Cli, LogFormat};
use crate::settings::{self, Settings, Toggle};
use crate::upstream::Upstream;

/// The drain window when none is given (the layer's own default).
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
/// The listen backlog when none is given (mio's default is 128: after an outage every client
/// of an instance reconnects at once).
pub(crate) const DEFAULT_BACKLOG: u32 = 4096;
/// How long a connection may take to send its first request head, when not given.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client connection may stay without a request in progress, when not given (like
/// nginx's `keepalive_timeout`).
pub(crate) const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// The listener when none is given.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));

/// Everything the proxy runs with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) listeners: Vec<Listener>,
    pub(crate) drain: Duration,
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) log_format: LogFormat,
    pub(crate) backlog: u32,
    pub(crate) header_timeout: Duration,
    /// The keep-alive timeout; zero: none.
    pub(crate) keepalive_timeout: Duration,
    /// The routes, in the order given (the table sorts them for matching).
    pub(crate) routes: Vec<Route>,
    /// What requests matching no route get: the default settings and the default upstream
    /// (none: a 404).
    pub(crate) fallback: Route,
}

/// One address to listen on, with TLS or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<TlsFiles>,
}

/// A certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// One route: what it matches, where it sends, with which settings (the defaults already
/// merged in).
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// For logs and metrics labels: the given name, or `HOST` + `PREFIX`.
    pub(crate) name: String,
    /// The `Host` it matches (lowercase, without port), or any.
    pub(crate) host: Option<String>,
    /// The path prefix it matches (`/` matches every path).
    pub(crate) prefix: String,
    pub(crate) upstream: Option<Upstream>,
    pub(crate) settings: Settings,
}

/// A usage or configuration error: exit code 2, nothing started.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// The file

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    #[serde(default, with = "humantime_serde")]
    drain: Option<Duration>,
    admin: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    backlog: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    keepalive_timeout: Option<Duration>,
    #[serde(default)]
    listen: Vec<ListenFile>,
    #[serde(default)]
    defaults: Option<Spanned<Section>>,
    #[serde(default)]
    route: Vec<Spanned<Section>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ListenFile {
    addr: SocketAddr,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// `[defaults]` or one `[[route]]`: what it matches (routes only), its upstream, its settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Section {
    name: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
    http2: Option<bool>,
    ca_file: Option<PathBuf>,

    #[serde(default, with = "humantime_serde")]
    retry: Option<Duration>,
    no_retry: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    heartbeat: Option<Duration>,
    no_heartbeat: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_lifetime: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    slow_client_timeout: Option<Duration>,
    max_buffer: Option<bytesize::ByteSize>,
    slow_client_policy: Option<PolicyName>,
    unreachable_sse: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    response_timeout: Option<Duration>,
    max_body: Option<bytesize::ByteSize>,
    retry_jitter: Option<Spanned<f64>>,
    lifetime_jitter: Option<Spanned<f64>>,
    #[serde(default, with = "humantime_serde")]
    close_grace: Option<Duration>,
    heartbeat_comment: Option<String>,
    initial_comment: Option<String>,
    no_compression_bypass: Option<bool>,
    resume: Option<bool>,
    resume_on_end: Option<bool>,
    resume_attempts: Option<u32>,
    max_event: Option<bytesize::ByteSize>,
    #[serde(default, with = "humantime_serde")]
    resume_max_retry: Option<Duration>,
    max_resumes: Option<u32>,
    resume_jitter: Option<Spanned<f64>>,
    compress: Option<CompressValue>,
    upstream_h2_max_streams: Option<NonZeroU32>,
}

/// `compress = true` (zstd, gzip), `false`, or a list like `"zstd,gzip,br"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum CompressValue {
    On(bool),
    Codings(String),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PolicyName {
    Disconnect,
    DropOldest,
    LatestPerType,
}

/// What is wrong with a section's settings: at a key's value (its byte offset and the key), or
/// (`None`) in the section as a whole.
struct Invalid {
    at: Option<(usize, &'static str)>,
    message: String,
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Self { at: None, message }
    }
}

impl Section {
    fn settings(&self) -> Result<Settings, Invalid> {
        let toggle = |value: Option<Duration>, off: Option<bool>, name: &str| match (value, off) {
            (Some(_), Some(true)) => Err(format!("{name} and no-{name} both given")),
            (Some(value), _) => Ok(Toggle::Set(value)),
            (None, Some(true)) => Ok(Toggle::Off),
            (None, _) => Ok(Toggle::Default),
        };
        let fraction = |value: &Option<Spanned<f64>>, key: &'static str| match value {
            Some(value) if !(0.0..=1.0).contains(value.get_ref()) => Err(Invalid {
                at: Some((value.span().start, key)),
                message: format!("{} is not a fraction from 0 to 1", value.get_ref()),
            }),
            _ => Ok(value.as_ref().map(|value| *value.get_ref())),
        };
        Ok(Settings {
            retry: toggle(self.retry, self.no_retry, "retry")?,
            heartbeat: toggle(self.heartbeat, self.no_heartbeat, "heartbeat")?,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            slow_client_timeout: self.slow_client_timeout,
            max_buffer: self
                .max_buffer
                .map(|size| usize::try_from(size.as_u64()).unwrap_or(usize::MAX)),
            slow_client_policy: self.slow_client_policy.map(|name| match name {
                PolicyName::Disconnect => tower_sse::SlowClientPolicy::Disconnect,
                PolicyName::DropOldest => tower_sse::SlowClientPolicy::DropOldest,
                PolicyName::LatestPerType => tower_sse::SlowClientPolicy::LatestPerType,
            }),
            unreachable_sse: self.unreachable_sse.unwrap_or(false),
            response_timeout: self.response_timeout,
            max_body: self
                .max_body
                .map(|size| usize::try_from(size.as_u64()).unwrap_or(usize::MAX)),
            retry_jitter: fraction(&self.retry_jitter, "retry-jitter")?,
            lifetime_jitter: fraction(&self.lifetime_jitter, "lifetime-jitter")?,
            close_grace: self.close_grace,
            heartbeat_comment: self.heartbeat_comment.clone(),
            initial_comment: self.initial_comment.clone(),
            no_compression_bypass: self.no_compression_bypass.unwrap_or(false),
            resume: self.resume.unwrap_or(false),
            resume_on_end: self.resume_on_end.unwrap_or(false),
            resume_attempts: self.resume_attempts,
            max_event: self
                .max_event
                .map(|size| usize::try_from(size.as_u64()).unwrap_or(usize::MAX)),
            resume_max_retry: self.resume_max_retry,
            max_resumes: self.max_resumes,
            resume_jitter: fraction(&self.resume_jitter, "resume-jitter")?,
            compress: match &self.compress {
                None => None,
                Some(CompressValue::On(true)) => Some(settings::DEFAULT_CODINGS.to_vec()),
                Some(CompressValue::On(false)) => Some(Vec::new()),
                Some(CompressValue::Codings(text)) => Some(
                    settings::parse_codings(text).map_err(|error| format!("compress: {error}"))?,
                ),
            },
            upstream_h2_max_streams: self.upstream_h2_max_streams,
        })
    }
}

/// Where in a file: `FILE:LINE:COLUMN`, from a byte offset.
fn location(path: &Path, text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    format!("{}:{line}:{column}", path.display())
}

/// The key at a byte offset: the text before `=` on that line, or the table header.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |n| n + 1);
    let end = text
        .get(offset..)?
        .find('\n')
        .map_or(text.len(), |n| offset + n);
    let line = text.get(start..end)?.trim();
    if let Some((key, _)) = line.split_once('=') {
        return Some(key.trim().to_owned());
    }
    (!line.is_empty()).then(|| line.to_owned())
}

/// Reads and parses a config file.
fn read_file(path: &Path) -> Result<(File, String), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError(format!("{}: cannot read: {error}", path.display())))?;
    match toml::from_str::<File>(&text) {
        Ok(file) => Ok((file, text)),
        Err(error) => {
            let offset = error.span().map_or(0, |span| span.start);
            let key = key_at(&text, offset)
                .map(|key| format!("`{key}`: "))
                .unwrap_or_default();
            Err(ConfigError(format!(
                "{}: {key}{}",
                location(path, &text, offset),
                error.message().trim_end()
            )))
        }
    }
}

impl Config {
    /// The configuration the command line gives: its file (if any) with the flags on top.
    ///
    /// # Errors
    ///
    /// A message naming the flag, or the file, line and key.
    pub(crate) fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let (file, text, path) = match &cli.config {
            Some(path) => {
                let (file, text) = read_file(path)?;
                (file, text, path.clone())
            }
            None => (File::default(), String::new(), PathBuf::new()),
        };
        let at = |offset: usize, key: &str, message: String| {
            ConfigError(format!(
                "{}: `{key}`: {message}",
                location(&path, &text, offset)
            ))
        };
        // A section's bad setting: at its key when known, else at the section.
        let invalid = |invalid: Invalid, offset: usize, section: &str| match invalid.at {
            Some((offset, key)) => at(offset, key, invalid.message),
            None => at(offset, section, invalid.message),
        };

        // The defaults: the file's [defaults] section, the flags on top.
        let empty = Spanned::new(0..0, Section::default());
        let defaults = file.defaults.as_ref().unwrap_or(&empty);
        let section = defaults.get_ref();
        for (key, value) in [
            ("name", &section.name),
            ("host", &section.host),
            ("path", &section.path),
        ] {
            if let Some(value) = value {
                return Err(at(
                    value.span().start,
                    key,
                    "only a [[route]] matches on it, not [defaults]".to_owned(),
                ));
            }
        }
        let file_defaults = section
            .settings()
            .map_err(|error| invalid(error, defaults.span().start, "defaults"))?;
        let global = cli.stream.settings().inherit(&file_defaults);
        check_layer(&global).map_err(|message| ConfigError(format!("defaults: {message}")))?;

        let http2 = cli.upstream_http2 || section.http2.unwrap_or(false);
        let ca_file = cli.upstream_ca.clone().or_else(|| section.ca_file.clone());
        let default_upstream = match (&cli.upstream, &section.upstream) {
            (Some(url), _) => Some(
                Upstream::parse(url, http2, ca_file.clone())
                    .map_err(|message| ConfigError(format!("--upstream: {message}")))?,
            ),
            (None, Some(url)) => Some(
                Upstream::parse(url.get_ref(), http2, ca_file.clone())
                    .map_err(|message| at(url.span().start, "upstream", message))?,
            ),
            (None, None) => None,
        };

        let mut routes: Vec<Route> = Vec::new();
        for spanned in &file.route {
            let section = spanned.get_ref();
            let start = spanned.span().start;
            let host = match &section.host {
                Some(host) => Some(
                    check_host(host.get_ref())
                        .map_err(|message| at(host.span().start, "host", message))?,
                ),
                None => None,
            };
            let prefix = match &section.path {
                Some(path) => {
                    settings::check_prefix(path.get_ref())
                        .map_err(|message| at(path.span().start, "path", message))?;
                    path.get_ref().clone()
                }
                None => "/".to_owned(),
            };
            if host.is_none() && section.path.is_none() {
                return Err(at(
                    start,
                    "route",
                    "a route needs a `host`, a `path` or both".to_owned(),
                ));
            }
            let upstream = match &section.upstream {
                Some(url) => Some(
                    Upstream::parse(
                        url.get_ref(),
                        section.http2.unwrap_or(http2),
                        section.ca_file.clone().or_else(|| ca_file.clone()),
                    )
                    .map_err(|message| at(url.span().start, "upstream", message))?,
                ),
                None => default_upstream.clone(),
            };
            if upstream.is_none() {
                return Err(at(
                    start,
                    "upstream",
                    "this route has no upstream, and there is no default one (--upstream or \
                     `upstream` in [defaults])"
                        .to_owned(),
                ));
            }
            let own = section
                .settings()
                .map_err(|error| invalid(error, start, "route"))?;
            let settings = own.inherit(&global);
            let name = section.name.as_ref().map_or_else(
                || format!("{}{prefix}", host.as_deref().unwrap_or_default()),
                |name| name.get_ref().clone(),
            );
            check_layer(&settings).map_err(|message| at(start, "route", message))?;
            if routes
                .iter()
                .any(|known| known.host == host && known.prefix == prefix)
            {
                return Err(at(
                    start,
                    "route",
                    format!("route {name} given more than once"),
                ));
            }
            routes.push(Route {
                name,
                host,
                prefix,
                upstream,
                settings,
            });
        }

        // `--route`: the default upstream; replaces a file route with the same prefix and no
        // host.
        for (prefix, own) in &cli.routes {
            if default_upstream.is_none() {
                return Err(ConfigError(format!(
                    "--route {prefix}: routes given as flags go to --upstream, which is missing"
                )));
            }
            let settings = own.inherit(&global);
            check_layer(&settings)
                .map_err(|message| ConfigError(format!("--route {prefix}: {message}")))?;
            let route = Route {
                name: prefix.clone(),
                host: None,
                prefix: prefix.clone(),
                upstream: default_upstream.clone(),
                settings,
            };
            if cli
                .routes
                .iter()
                .filter(|(known, _)| known == prefix)
                .count()
                > 1
            {
                return Err(ConfigError(format!(
                    "--route {prefix} given more than once"
                )));
            }
            routes.retain(|known| !(known.host.is_none() && known.prefix == *prefix));
            routes.push(route);
        }

        if default_upstream.is_none() && routes.is_empty() {
            return Err(ConfigError(
                "missing --upstream (or a config file with an upstream)".to_owned(),
            ));
        }

        let listeners = if cli.listen.is_empty() {
            let mut listeners = Vec::new();
            for listen in &file.listen {
                let tls = match (&listen.tls_cert, &listen.tls_key) {
                    (Some(cert), Some(key)) => Some(TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                    }),
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError(format!(
                            "{}: [[listen]] {}: tls-cert and tls-key go together",
                            path.display(),
                            listen.addr
                        )));
                    }
                };
                listeners.push(Listener {
                    addr: listen.addr,
                    tls,
                });
            }
            if listeners.is_empty() {
                listeners.push(Listener {
                    addr: DEFAULT_LISTEN,
                    tls: None,
                });
            }
            listeners
        } else {
            cli.listen
                .iter()
                .map(|&addr| Listener { addr, tls: None })
                .collect()
        };
        let tls_flags = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let listeners = listeners
            .into_iter()
            .map(|listener| Listener {
                tls: tls_flags.clone().or(listener.tls),
                ..listener
            })
            .collect();

        Ok(Self {
            listeners,
            drain: cli.drain.or(file.drain).unwrap_or(DEFAULT_DRAIN),
            admin: cli.admin.or(file.admin),
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
            backlog: cli.backlog.or(file.backlog).unwrap_or(DEFAULT_BACKLOG),
            header_timeout: cli
                .header_timeout
                .or(file.header_timeout)
                .unwrap_or(DEFAULT_HEADER_TIMEOUT),
            keepalive_timeout: cli
                .keepalive_timeout
                .or(file.keepalive_timeout)
                .unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
            routes,
            fallback: Route {
                name: "default".to_owned(),
                host: None,
                prefix: "/".to_owned(),
                upstream: default_upstream,
                settings: global,
            },
        })
    }

    /// The keep-alive timeout, `None` when off.
    pub(crate) fn keepalive(&self) -> Option<Duration> {
        (!self.keepalive_timeout.is_zero()).then_some(self.keepalive_timeout)
    }

    /// What the first stdout line says the proxy sends to: the default upstream as given, or
    /// the routes' upstreams.
    pub(crate) fn upstreams_display(&self) -> String {
        if let Some(upstream) = &self.fallback.upstream {
            return upstream.display.clone();
        }
        let mut all: Vec<&str> = self
            .routes
            .iter()
            .filter_map(|route| route.upstream.as_ref().map(|u| u.display.as_str()))
            .collect();
        all.dedup();
        all.join(", ")
    }

    /// The effective configuration as TOML (what `--check-config` prints), readable back with
    /// `--config`.
    pub(crate) fn to_toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "drain = \"{}\"", human(self.drain));
        if let Some(admin) = self.admin {
            let _ = writeln!(out, "admin = \"{admin}\"");
        }
        let _ = writeln!(out, "log-format = \"{}\"", self.log_format.as_str());
        let _ = writeln!(out, "backlog = {}", self.backlog);
        let _ = writeln!(out, "header-timeout = \"{}\"", human(self.header_timeout));
        let _ = writeln!(
            out,
            "keepalive-timeout = \"{}\"",
            human(self.keepalive_timeout)
        );
        for listener in &self.listeners {
            let _ = writeln!(out, "\n[[listen]]\naddr = \"{}\"", listener.addr);
            if let Some(tls) = &listener.tls {
                let _ = writeln!(out, "tls-cert = {}", quote(&tls.cert.display().to_string()));
                let _ = writeln!(out, "tls-key = {}", quote(&tls.key.display().to_string()));
            }
        }
        let _ = writeln!(out, "\n[defaults]");
        write_upstream(&mut out, self.fallback.upstream.as_ref());
        write_settings(&mut out, &self.fallback.settings);
        for route in &self.routes {
            let _ = writeln!(out, "\n[[route]]\nname = {}", quote(&route.name));
            if let Some(host) = &route.host {
                let _ = writeln!(out, "host = {}", quote(host));
            }
            let _ = writeln!(out, "path = {}", quote(&route.prefix));
            write_upstream(&mut out, route.upstream.as_ref());
            write_settings(&mut out, &route.settings);
        }
        out
    }
}

/// Checks that the layer accepts the settings (its comments).
fn check_layer(settings: &Settings) -> Result<(), String> {
    settings
        .layer(
            &tower_sse::SseShutdown::new(),
            DEFAULT_DRAIN,
            &tower_sse::SseMetrics::new(),
        )
        .map(drop)
}

/// Checks a route's host and normalises it: lowercase, no port, no scheme or path.
fn check_host(host: &str) -> Result<String, String> {
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'*'));
    if !valid {
        return Err(format!(
            "`{host}` is not a host name like api.example.com (no scheme, port or path)"
        ));
    }
    Ok(host.to_ascii_lowercase())
}

fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn write_upstream(out: &mut String, upstream: Option<&Upstream>) {
    if let Some(upstream) = upstream {
        let _ = writeln!(out, "upstream = {}", quote(&upstream.display));
        let _ = writeln!(out, "http2 = {}", upstream.http2);
        if let Some(ca) = &upstream.ca_file {
            let _ = writeln!(out, "ca-file = {}", quote(&ca.display().to_string()));
        }
    }
}

fn write_settings(out: &mut String, settings: &Settings) {
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{key} = {value}");
    };
    match settings.retry {
        Toggle::Set(delay) => line("retry", quote(&human(delay))),
        Toggle::Off => line("no-retry", "true".to_owned()),
        Toggle::Default => {}
    }
    match settings.heartbeat {
        Toggle::Set(delay) => line("heartbeat", quote(&human(delay))),
        Toggle::Off => line("no-heartbeat", "true".to_owned()),
        Toggle::Default => {}
    }
    let durations = [
        ("idle-timeout", settings.idle_timeout),
        ("max-lifetime", settings.max_lifetime),
        ("slow-client-timeout", settings.slow_client_timeout),
        ("close-grace", settings.close_grace),
    ];
    for (key, value) in durations {
        if let Some(value) = value {
            line(key, quote(&human(value)));
        }
    }
    line(
        "response-timeout",
        quote(&human(
            settings.response_timeout().unwrap_or(Duration::ZERO),
        )),
    );
    line("max-body", settings.max_body().unwrap_or(0).to_string());
    if let Some(bytes) = settings.max_buffer {
        line("max-buffer", bytes.to_string());
    }
    if let Some(policy) = settings.slow_client_policy {
        line("slow-client-policy", quote(settings::policy_name(policy)));
    }
    if settings.unreachable_sse {
        line("unreachable-sse", "true".to_owned());
    }
    for (key, value) in [
        ("retry-jitter", settings.retry_jitter),
        ("lifetime-jitter", settings.lifetime_jitter),
        ("resume-jitter", settings.resume_jitter),
    ] {
        if let Some(value) = value {
            line(key, value.to_string());
        }
    }
    for (key, value) in [
        ("heartbeat-comment", &settings.heartbeat_comment),
        ("initial-comment", &settings.initial_comment),
    ] {
        if let Some(value) = value {
            line(key, quote(value));
        }
    }
    if settings.no_compression_bypass {
        line("no-compression-bypass", "true".to_owned());
    }
    for (key, on) in [
        ("resume", settings.resume),
        ("resume-on-end", settings.resume_on_end),
    ] {
        if on {
            line(key, "true".to_owned());
        }
    }
    if let Some(attempts) = settings.resume_attempts {
        line("resume-attempts", attempts.to_string());
    }
    if let Some(bytes) = settings.max_event {
        line("max-event", bytes.to_string());
    }
    if let Some(wait) = settings.resume_max_retry {
        line("resume-max-retry", quote(&human(wait)));
    }
    if let Some(resumes) = settings.max_resumes {
        line("max-resumes", resumes.to_string());
    }
    if let Some(codings) = &settings.compress {
        line("compress", quote(&settings::codings_text(codings)));
    }
    line(
        "upstream-h2-max-streams",
        settings.h2_max_streams().to_string(),
    );
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "test code"
    )]

    use clap::Parser as _;

    use super::*;

    /// The settings of `config`'s route with the path prefix `prefix`.
    fn route<'a>(config: &'a Config, prefix: &str) -> &'a Settings {
        &config
            .routes
            .iter()
            .find(|route| route.prefix == prefix)
            .unwrap()
            .settings
    }

    fn load(file: Option<&str>, flags: &str) -> Result<Config, ConfigError> {
        let mut args = vec!["tower-sse-proxy".to_owned()];
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "tower-sse-proxy-config-test-{}-{}.toml",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
            args.push("--config".to_owned());
            args.push(path.display().to_string());
        }
        args.extend(flags.split_whitespace().map(str::to_owned));
        let cli = Cli::try_parse_from(args).unwrap();
        let config = Config::load(&cli);
        let _ = std::fs::remove_file(&path);
        config
    }

    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn error(file: &str, flags: &str) -> String {
        match load(Some(file), flags) {
            Err(error) => error.0,
            Ok(config) => panic!("accepted: {config:?}"),
        }
    }

    #[test]
    fn flags_alone_give_one_listener_and_the_default_upstream() {
        let config = load(None, "--upstream http://127.0.0.1:9000 --retry 2s").unwrap();
        assert_eq!(
            config.listeners,
            [Listener {
                addr: DEFAULT_LISTEN,
                tls: None
            }]
        );
        assert_eq!(config.drain, DEFAULT_DRAIN);
        assert_eq!(config.backlog, 4096);
        assert_eq!(config.keepalive(), Some(DEFAULT_KEEPALIVE_TIMEOUT));
        assert_eq!(
            load(None, "--upstream http://u:1 --keepalive-timeout 0s")
                .unwrap()
                .keepalive(),
            None
        );
        assert_eq!(
            config.fallback.settings.retry,
            Toggle::Set(Duration::from_secs(2))
        );
        assert_eq!(config.upstreams_display(), "http://127.0.0.1:9000");
        assert!(config.routes.is_empty());
    }

    #[test]
    fn a_missing_upstream_is_a_usage_error() {
        assert!(
            load(None, "--retry 2s")
                .unwrap_err()
                .0
                .contains("missing --upstream")
        );
    }

    #[test]
    fn the_file_gives_listeners_routes_and_settings_and_flags_apply_on_top() {
        let config = load(
            Some(
                r#"
drain = "2.5s"
backlog = 1024
keepalive-timeout = "90s"

[[listen]]
addr = "127.0.0.1:0"

[defaults]
upstream = "http://127.0.0.1:3000"
retry = "2s"
heartbeat = "20s"

[[route]]
path = "/llm/"
heartbeat = "5s"
response-timeout = "90s"

[[route]]
host = "API.example.com"
upstream = "http://127.0.0.1:4000/v1"
slow-client-policy = "drop-oldest"
max-buffer = "256KiB"
max-body = "8MiB"
"#,
            ),
            "--retry 1s --route /live/=unreachable-sse",
        )
        .unwrap();
        assert_eq!(config.drain, Duration::from_millis(2500));
        assert_eq!(config.backlog, 1024);
        assert_eq!(config.keepalive(), Some(Duration::from_secs(90)));
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(
            config.fallback.settings.retry,
            Toggle::Set(Duration::from_secs(1))
        );
        let [llm, api, live] = config.routes.as_slice() else {
            panic!("{:?}", config.routes);
        };
        assert_eq!(llm.name, "/llm/");
        assert_eq!(llm.settings.heartbeat, Toggle::Set(Duration::from_secs(5)));
        assert_eq!(llm.settings.retry, Toggle::Set(Duration::from_secs(1)));
        assert_eq!(
            llm.settings.response_timeout(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(api.host.as_deref(), Some("api.example.com"));
        assert_eq!(api.prefix, "/");
        assert_eq!(
            api.upstream.as_ref().unwrap().display,
            "http://127.0.0.1:4000/v1"
        );
        assert_eq!(api.settings.max_buffer, Some(256 * 1024));
        assert_eq!(api.settings.max_body(), Some(8 * 1024 * 1024));
        assert_eq!(llm.settings.max_body(), Some(1024 * 1024));
        assert_eq!(live.prefix, "/live/");
        assert!(live.settings.unreachable_sse);
        assert_eq!(
            live.upstream.as_ref().unwrap().display,
            "http://127.0.0.1:3000"
        );

        // --check-config's output reads back to the same configuration.
        let again = load(Some(&config.to_toml()), "").unwrap();
        assert_eq!(again.to_toml(), config.to_toml());
    }

    #[test]
    fn resume_and_compress_are_read_from_the_file_per_route() {
        let config = load(
            Some(
                r#"
[defaults]
upstream = "http://127.0.0.1:3000"
compress = true

[[route]]
path = "/feeds/"
resume = true
resume-attempts = 5
max-event = "64KiB"
resume-max-retry = "10s"
max-resumes = 20
resume-jitter = 0.2
compress = "gzip"

[[route]]
path = "/plain/"
compress = false
resume-on-end = true
"#,
            ),
            "",
        )
        .unwrap();
        let feeds = route(&config, "/feeds/");
        assert!(feeds.resume);
        assert_eq!(feeds.resume_attempts, Some(5));
        assert_eq!(feeds.max_event, Some(64 * 1024));
        assert_eq!(feeds.resume_max_retry, Some(Duration::from_secs(10)));
        assert_eq!(feeds.max_resumes, Some(20));
        assert_eq!(feeds.resume_jitter, Some(0.2));
        assert!(
            format!("{:?}", feeds.resume_layer().unwrap()).contains("jitter: 0.2,"),
            "the jitter reaches the layer"
        );
        assert_eq!(feeds.compress, Some(vec![tower_sse::Coding::Gzip]));
        let plain = route(&config, "/plain/");
        assert_eq!(plain.compress, Some(Vec::new()));
        assert!(plain.resume_layer().is_some());
        assert_eq!(
            config.fallback.settings.compress,
            Some(settings::DEFAULT_CODINGS.to_vec())
        );
        assert!(config.fallback.settings.resume_layer().is_none());
        let bad = error(
            "[defaults]\nupstream = \"http://u:1\"\ncompress = \"deflate\"\n",
            "",
        );
        assert!(bad.contains("compress: `deflate` is not one of"), "{bad}");

        // --check-config prints them, and its output reads back to the same configuration.
        let text = config.to_toml();
        assert!(text.contains("resume-max-retry = \"10s\""), "{text}");
        assert!(text.contains("max-resumes = 20"), "{text}");
        assert!(text.contains("resume-jitter = 0.2"), "{text}");
        assert!(text.contains("max-event = 65536"), "{text}");
        assert!(text.contains("resume-attempts = 5"), "{text}");
        assert!(text.contains("resume-on-end = true"), "{text}");
        let again = load(Some(&text), "").unwrap();
        assert_eq!(again.to_toml(), text);
        // Flags apply on top of the file.
        let flags = load(
            Some(&text),
            "--resume-max-retry 2s --max-resumes 3 --resume-jitter 0",
        )
        .unwrap();
        let defaults = &flags.fallback.settings;
        assert_eq!(defaults.resume_max_retry, Some(Duration::from_secs(2)));
        assert_eq!(defaults.max_resumes, Some(3));
        assert_eq!(defaults.resume_jitter, Some(0.0));
        // A whole number reads back as a fraction too.
        let text = flags.to_toml();
        assert!(text.contains("resume-jitter = 0\n"), "{text}");
        assert_eq!(load(Some(&text), "").unwrap().to_toml(), text);
    }

    #[test]
    fn the_h2_stream_cap_is_read_per_route_and_printed_by_check_config() {
        let config = load(
            Some(
                r#"
[defaults]
upstream = "http://127.0.0.1:3000"
http2 = true
upstream-h2-max-streams = 64

[[route]]
path = "/grpc/"
upstream-h2-max-streams = 8

[[route]]
path = "/feeds/"
"#,
            ),
            "--route /small/=upstream-h2-max-streams:2",
        )
        .unwrap();
        let cap = |prefix: &str| route(&config, prefix).h2_max_streams();
        assert_eq!(config.fallback.settings.h2_max_streams(), 64);
        assert_eq!(cap("/grpc/"), 8);
        assert_eq!(cap("/feeds/"), 64);
        assert_eq!(cap("/small/"), 2);
        let text = config.to_toml();
        assert!(text.contains("upstream-h2-max-streams = 8\n"), "{text}");
        assert!(text.contains("upstream-h2-max-streams = 64\n"), "{text}");
        let again = load(Some(&text), "").unwrap();
        assert_eq!(again.to_toml(), text);
        // The flag applies on top of the file; without either, 100.
        let flags = load(Some(&text), "--upstream-h2-max-streams 3").unwrap();
        assert_eq!(flags.fallback.settings.h2_max_streams(), 3);
        let plain = load(None, "--upstream http://u:1").unwrap();
        assert!(
            plain.to_toml().contains("upstream-h2-max-streams = 100\n"),
            "{}",
            plain.to_toml()
        );
    }

    #[test]
    fn file_errors_name_the_file_line_and_key() {
        let cases = [
            ("drain = \"3x\"\n", ":1:", "`drain`"),
            (
                "[defaults]\nupstream = \"http://u:1\"\nbogus = 1\n",
                ":3:",
                "bogus",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\nretry = \"fast\"\n",
                ":3:",
                "`retry`",
            ),
            (
                "[defaults]\nupstream = \"ftp://u:1\"\n",
                ":2:",
                "`upstream`",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\n\n[[route]]\npath = \"x\"\n",
                ":5:",
                "`path`",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\nslow-client-policy = \"drop\"\n",
                ":3:",
                "slow-client-policy",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\nmax-buffer = \"lots\"\n",
                ":3:",
                "max-buffer",
            ),
            (
                "[defaults]\nhost = \"a\"\nupstream = \"http://u:1\"\n",
                ":2:",
                "`host`",
            ),
            ("[[route]]\npath = \"/a/\"\n", ":1:", "no upstream"),
            (
                "[defaults]\nupstream = \"http://u:1\"\n[[route]]\nhost = \"a b\"\n",
                ":4:",
                "`host`",
            ),
            ("admin = \"nowhere\"\n", ":1:", "`admin`"),
            (
                "[defaults]\nupstream = \"http://u:1\"\nresume-max-retry = \"soon\"\n",
                ":3:",
                "`resume-max-retry`",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\n\n[[route]]\npath = \"/a/\"\nmax-resumes = -1\n",
                ":6:",
                "`max-resumes`",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\nmax-resumes = \"many\"\n",
                ":3:",
                "`max-resumes`",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\nresume-jitter = \"half\"\n",
                ":3:",
                "`resume-jitter`",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\n\n[[route]]\npath = \"/a/\"\nresume-jitter = 1.5\n",
                ":6:17:",
                "`resume-jitter`: 1.5 is not a fraction from 0 to 1",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\n\nretry-jitter = -0.5\n",
                ":4:16:",
                "`retry-jitter`: -0.5 is not a fraction from 0 to 1",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\nlifetime-jitter = nan\n",
                ":3:19:",
                "`lifetime-jitter`: NaN is not a fraction from 0 to 1",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\nhttp2 = true\nupstream-h2-max-streams = 0\n",
                ":4:",
                "`upstream-h2-max-streams`",
            ),
            (
                "[defaults]\nupstream = \"http://u:1\"\n\n[[route]]\npath = \"/a/\"\nupstream-h2-max-streams = \"many\"\n",
                ":6:",
                "`upstream-h2-max-streams`",
            ),
            ("drain = \n", ":1:", ""),
        ];
        for (file, line, key) in cases {
            let message = error(file, "");
            assert!(message.contains(".toml"), "{file:?}: {message}");
            assert!(message.contains(line), "{file:?}: {message}");
            assert!(message.contains(key), "{file:?}: {message}");
        }
        let missing = load(None, "--config /nonexistent/proxy.toml")
            .unwrap_err()
            .0;
        assert!(
            missing.contains("/nonexistent/proxy.toml: cannot read"),
            "{missing}"
        );
    }
}
