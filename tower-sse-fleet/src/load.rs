//! The `load` subcommand: thousands of spec-following `EventSource` clients over loopback.
//!
//! Each client does what a browser's `EventSource` does (WHATWG HTML, "Server-sent events"):
//! it sends `Accept: text/event-stream` and, once it has one, `Last-Event-ID`; it remembers the
//! last valid `retry:` value (3 s until one comes) and waits exactly that long, with no jitter
//! of its own, before reconnecting after a network error or the end of a stream; a response
//! that is not `200 text/event-stream` fails the connection for good.
//!
//! Every event's data is the event's sequence number in the log; the [`Tally`] of each client
//! counts gaps, lost and duplicated events. Reconnects (every attempt but the first) are
//! counted per 100 ms bucket from a common zero, written as CSV, with three diagnostic
//! columns: `<column>-due`, the same reconnects in the bucket their timer was due in (a
//! stalled client fires many late timers in one bucket: bursts that are the one client
//! process's, not the behaviour of as many browsers); `<column>-closes`, the open streams
//! whose end the clients noticed in each bucket (so that the delay from an action to its
//! clients' notice is read off the run); and `<column>-lag`, the load client's own worst
//! timer lateness in each bucket, in milliseconds.
//! The responses that were not `200 text/event-stream` are counted by status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::series::Table;

/// The reconnection time of a client that never received a `retry:` field.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// What the parser found in the stream: a dispatched event or a new reconnection time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event: its data (trailing LF removed) and the last event id at dispatch.
    Event {
        /// The data buffer.
        data: String,
        /// The last event ID string.
        id: String,
    },
    /// A valid `retry:` field, in milliseconds.
    Retry(u64),
}

/// An incremental event-stream parser that keeps no history: feed chunks, take the items.
///
/// Lines end with CRLF, LF or a lone CR (also across chunks); invalid UTF-8 becomes U+FFFD
/// per line (a line split inside a character is joined before decoding).
#[derive(Debug, Default, Clone)]
pub struct Parser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    data: String,
    has_data: bool,
    id_buffer: String,
    last_id: String,
}

impl Parser {
    /// Creates a new [`Parser`] at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The last event ID string (what `Last-Event-ID` carries on the next connection).
    #[must_use]
    pub fn last_id(&self) -> &str {
        &self.last_id
    }

    /// Feeds the next chunk; the items it completes are pushed onto `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        for &byte in chunk {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' => {
                    self.after_cr = true;
                    self.line_done(out);
                }
                b'\n' => self.line_done(out),
                _ => self.line.push(byte),
            }
        }
    }

    fn line_done(&mut self, out: &mut Vec<Item>) {
        let raw = std::mem::take(&mut self.line);
        let mut text = String::from_utf8_lossy(&raw).into_owned();
        if !self.started {
            self.started = true;
            if let Some(rest) = text.strip_prefix('\u{FEFF}') {
                text = rest.to_owned();
            }
        }
        if text.is_empty() {
            self.dispatch(out);
            return;
        }
        if text.starts_with(':') {
            return;
        }
        let (name, value) = match text.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_str(), ""),
        };
        match name {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => value.clone_into(&mut self.id_buffer),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                out.push(Item::Retry(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Item>) {
        self.last_id.clone_from(&self.id_buffer);
        if !self.has_data {
            self.data.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        self.has_data = false;
        out.push(Item::Event {
            data,
            id: self.last_id.clone(),
        });
    }

    /// The stream ended: an unterminated line and an undispatched event are discarded (the id
    /// of a dispatched event stays); the next stream may start with its own BOM.
    pub fn end(&mut self) {
        self.line.clear();
        self.after_cr = false;
        self.started = false;
        self.data.clear();
        self.has_data = false;
        self.id_buffer.clone_from(&self.last_id);
    }
}

/// One client's account of the sequence numbers it received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// The last sequence number received.
    pub last: Option<u64>,
    /// Events received.
    pub events: u64,
    /// Jumps forward by more than one.
    pub gaps: u64,
    /// Sequence numbers skipped by those jumps.
    pub lost: u64,
    /// Events at or below the last one received.
    pub duplicates: u64,
    /// Events whose data was not a sequence number.
    pub unreadable: u64,
}

impl Tally {
    /// Accounts for one event's data.
    pub fn observe(&mut self, data: &str) {
        self.events += 1;
        let Ok(seq) = data.trim().parse::<u64>() else {
            self.unreadable += 1;
            return;
        };
        match self.last {
            Some(last) if seq <= last => {
                self.duplicates += 1;
                return;
            }
            Some(last) if seq > last + 1 => {
                self.gaps += 1;
                self.lost += seq - last - 1;
            }
            _ => {}
        }
        self.last = Some(seq);
    }

    /// Adds another client's counts (not its last number).
    pub fn add(&mut self, other: &Self) {
        self.events += other.events;
        self.gaps += other.gaps;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.unreadable += other.unreadable;
    }
}

/// The options of `load`, parsed once from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The event stream's URL (http:// only).
    #[arg(long, value_parser = parse_url)]
    pub url: Target,
    /// Clients.
    #[arg(long, default_value_t = 3000)]
    pub clients: u32,
    /// The clients' first connections are spread over this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// How long to run, from the zero.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The zero of the buckets, in Unix milliseconds (default: now), so that a script's
    /// actions and the buckets share a clock.
    #[arg(long)]
    pub zero_unix_ms: Option<u64>,
    /// Write reconnects per 100 ms bucket here (CSV, one column named by --column).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// The CSV column's name.
    #[arg(long, default_value = "reconnects")]
    pub column: String,
    /// Worker threads of the client's runtime (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Where the clients connect: host:port and the path with its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// The path and query (`/` when none).
    pub path: String,
}

/// Parses an `http://host:port/path` URL.
///
/// # Errors
///
/// When it is not an http URL with a host and a port.
pub fn parse_url(text: &str) -> Result<Target, String> {
    let uri: http::Uri = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("`{text}`: only http:// URLs"));
    }
    let authority = uri
        .authority()
        .filter(|a| a.port_u16().is_some())
        .ok_or_else(|| format!("`{text}`: needs host:port"))?
        .to_string();
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    Ok(Target { authority, path })
}

/// Counts per 100 ms bucket from a zero, shared by every client.
#[derive(Debug)]
pub struct Buckets {
    zero: Instant,
    counts: Vec<AtomicU32>,
}

impl Buckets {
    /// Buckets from `zero` covering `duration` (and the bucket it ends in).
    #[must_use]
    pub fn new(zero: Instant, duration: Duration) -> Self {
        let len = usize::try_from(duration.as_millis() / 100 + 1).unwrap_or(0);
        Self {
            zero,
            counts: (0..len).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn slot(&self, at: Instant) -> Option<&AtomicU32> {
        let index = usize::try_from(at.saturating_duration_since(self.zero).as_millis() / 100)
            .unwrap_or(usize::MAX);
        self.counts.get(index)
    }

    /// Adds one to the bucket of `at` (nothing outside the run).
    pub fn add(&self, at: Instant) {
        if let Some(slot) = self.slot(at) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Raises the bucket of `at` to `value` if it is lower (a maximum per bucket).
    pub fn raise(&self, at: Instant, value: u32) {
        if let Some(slot) = self.slot(at) {
            slot.fetch_max(value, Ordering::Relaxed);
        }
    }

    /// The counts, first bucket first.
    #[must_use]
    pub fn snapshot(&self) -> Vec<u32> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

/// Counters shared by every client.
#[derive(Debug)]
struct Shared {
    zero: Instant,
    reconnect_buckets: Buckets,
    due_buckets: Buckets,
    close_buckets: Buckets,
    lag_buckets: Buckets,
    connects: AtomicU64,
    reconnects: AtomicU64,
    failed: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    errors: AtomicU64,
    open: AtomicU64,
}

impl Shared {
    fn record_reconnect(&self, due: Instant) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        self.reconnect_buckets.add(Instant::now());
        self.due_buckets.add(due);
    }

    fn record_failure(&self, status: http::StatusCode) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut statuses) = self.statuses.lock() {
            *statuses.entry(status.as_u16()).or_default() += 1;
        }
    }
}

/// Measures how late the client's own timers fire: a 10 ms tick whose lateness (ms) raises
/// its bucket, until the run is over.
async fn lag_probe(lag: &Buckets, end: Instant) {
    const TICK: Duration = Duration::from_millis(10);
    let mut target = Instant::now() + TICK;
    while target < end {
        tokio::time::sleep_until(target.into()).await;
        let now = Instant::now();
        let late =
            u32::try_from(now.saturating_duration_since(target).as_millis()).unwrap_or(u32::MAX);
        lag.raise(now, late);
        target = now + TICK;
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// First connections.
    pub connects: u64,
    /// Later connection attempts.
    pub reconnects: u64,
    /// Responses that were not 200 text/event-stream (the client gave up, as browsers do).
    pub failed: u64,
    /// Those responses by status code (200 for a 200 that was not an event stream).
    pub statuses: BTreeMap<u16, u64>,
    /// Network errors (refused, reset).
    pub errors: u64,
    /// Streams open at the end.
    pub open: u64,
    /// The sum of the clients' tallies.
    pub tally: Tally,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connects={} reconnects={} open={} failed={} errors={} events={} gaps={} lost={} duplicates={} unreadable={}",
            self.connects,
            self.reconnects,
            self.open,
            self.failed,
            self.errors,
            self.tally.events,
            self.tally.gaps,
            self.tally.lost,
            self.tally.duplicates,
            self.tally.unreadable
        )?;
        if !self.statuses.is_empty() {
            let list: Vec<String> = self
                .statuses
                .iter()
                .map(|(status, n)| format!("{status}:{n}"))
                .collect();
            write!(f, " failed_statuses={}", list.join(","))?;
        }
        Ok(())
    }
}

/// Runs the clients until the duration is over, then writes the CSV and prints the summary.
///
/// # Errors
///
/// When the CSV cannot be written.
pub async fn load(args: LoadArgs) -> Result<Summary, String> {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let behind =
        Duration::from_millis(now_unix.saturating_sub(args.zero_unix_ms.unwrap_or(now_unix)));
    let zero = Instant::now()
        .checked_sub(behind)
        .unwrap_or_else(Instant::now);
    let shared = Arc::new(Shared {
        zero,
        reconnect_buckets: Buckets::new(zero, args.duration),
        due_buckets: Buckets::new(zero, args.duration),
        close_buckets: Buckets::new(zero, args.duration),
        lag_buckets: Buckets::new(zero, args.duration),
        connects: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        statuses: Mutex::new(BTreeMap::new()),
        errors: AtomicU64::new(0),
        open: AtomicU64::new(0),
    });
    let probe = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move { lag_probe(&shared.lag_buckets, zero + args.duration).await })
    };
    let target = Arc::new(args.url.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for index in 0..args.clients {
        let start = args
            .ramp
            .mul_f64(f64::from(index) / f64::from(args.clients.max(1)));
        let shared = Arc::clone(&shared);
        let target = Arc::clone(&target);
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let mut tally = Tally::default();
            tokio::select! {
                () = client(start, &target, &shared, &mut tally) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            tally
        });
    }
    let end = zero + args.duration;
    tokio::time::sleep_until(end.into()).await;
    let open = shared.open.load(Ordering::Relaxed);
    probe.abort();
    let _ = stop_tx.send(true);
    let mut total = Tally::default();
    while let Some(result) = tasks.join_next().await {
        if let Ok(tally) = result {
            total.add(&tally);
        }
    }
    let summary = Summary {
        connects: shared.connects.load(Ordering::Relaxed),
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        statuses: shared
            .statuses
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default(),
        errors: shared.errors.load(Ordering::Relaxed),
        open,
        tally: total,
    };
    if let Some(path) = &args.csv {
        let mut table = Table::default();
        table.push(args.column.clone(), shared.reconnect_buckets.snapshot());
        table.push(
            format!("{}-due", args.column),
            shared.due_buckets.snapshot(),
        );
        table.push(
            format!("{}-closes", args.column),
            shared.close_buckets.snapshot(),
        );
        table.push(
            format!("{}-lag", args.column),
            shared.lag_buckets.snapshot(),
        );
        table.write(path)?;
    }
    Ok(summary)
}

/// How one connection ended.
enum Ended {
    /// The stream ended or the network failed: reconnect after the retry.
    Reconnect,
    /// Not a 200 event stream (its status): give up for good.
    Fail(http::StatusCode),
}

async fn client(start: Duration, target: &Target, shared: &Shared, tally: &mut Tally) {
    tokio::time::sleep_until((shared.zero + start).into()).await;
    let mut parser = Parser::new();
    let mut retry = DEFAULT_RETRY;
    // When the spec's timer says the next attempt is due (None before the first).
    let mut due = None;
    loop {
        match due {
            None => {
                shared.connects.fetch_add(1, Ordering::Relaxed);
            }
            Some(due) => shared.record_reconnect(due),
        }
        match stream_once(target, shared, &mut parser, &mut retry, tally).await {
            Ended::Fail(status) => {
                shared.record_failure(status);
                return;
            }
            Ended::Reconnect => {
                parser.end();
                let at = Instant::now() + retry;
                tokio::time::sleep_until(at.into()).await;
                due = Some(at);
            }
        }
    }
}

/// Decrements the open-stream count when dropped (also when the task is cancelled).
struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn stream_once(
    target: &Target,
    shared: &Shared,
    parser: &mut Parser,
    retry: &mut Duration,
    tally: &mut Tally,
) -> Ended {
    let network_error = || {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        Ended::Reconnect
    };
    let Ok(stream) = TcpStream::connect(&target.authority).await else {
        return network_error();
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return network_error();
    };
    let driver = tokio::spawn(connection);
    let mut request = http::Request::get(target.path.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::ACCEPT, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache");
    if !parser.last_id().is_empty() {
        request = request.header("last-event-id", parser.last_id());
    }
    let Ok(request) = request.body(Empty::new()) else {
        driver.abort();
        return Ended::Fail(http::StatusCode::BAD_REQUEST);
    };
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(_) => {
            driver.abort();
            return network_error();
        }
    };
    let is_stream = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_event_stream);
    if response.status() != http::StatusCode::OK || !is_stream {
        driver.abort();
        return Ended::Fail(response.status());
    }
    shared.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&shared.open);
    let mut body = response.into_body();
    let mut items = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        parser.feed(&data, &mut items);
        for item in items.drain(..) {
            match item {
                Item::Event { data, .. } => tally.observe(&data),
                Item::Retry(ms) => *retry = Duration::from_millis(ms),
            }
        }
    }
    shared.close_buckets.add(Instant::now());
    driver.abort();
    Ended::Reconnect
}

/// Whether a `Content-Type` value's media type (its essence) is `text/event-stream`, as
/// `EventSource` requires.
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim().eq_ignore_ascii_case("text/event-stream")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_sse_test_support::sse_parser;

    fn items(chunks: &[&[u8]]) -> (Vec<Item>, Parser) {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out);
        }
        (out, parser)
    }

    #[test]
    fn the_parser_agrees_with_the_reference_parser_on_its_conformance_cases() {
        for case in sse_parser::CASES {
            let (out, _) = items(&[case.input]);
            let reference = sse_parser::parse(case.input);
            let events: Vec<(String, String)> = out
                .iter()
                .filter_map(|i| match i {
                    Item::Event { data, id } => Some((data.clone(), id.clone())),
                    Item::Retry(_) => None,
                })
                .collect();
            let expected: Vec<(String, String)> = reference
                .events
                .iter()
                .map(|e| (e.data.clone(), e.last_event_id.clone()))
                .collect();
            assert_eq!(events, expected, "case {:?}", case.name);
            let retries: Vec<u64> = out
                .iter()
                .filter_map(|i| match i {
                    Item::Retry(ms) => Some(*ms),
                    Item::Event { .. } => None,
                })
                .collect();
            assert_eq!(retries, reference.retries, "case {:?}", case.name);
        }
    }

    #[test]
    fn any_split_gives_the_same_items() {
        let input =
            b"retry: 2500\r\nid: 7\r\ndata: 41\r\n\r\n: hb\rid: 8\rdata: 42\r\rdata: 43\n\n";
        let (whole, _) = items(&[input]);
        assert_eq!(whole.len(), 4);
        for split in 0..input.len() {
            let (a, b) = input.split_at(split);
            let (parts, parser) = items(&[a, b]);
            assert_eq!(parts, whole, "split at {split}");
            assert_eq!(parser.last_id(), "8");
        }
    }

    #[test]
    fn an_unfinished_event_is_dropped_at_the_end_and_the_id_kept() {
        let (out, mut parser) = items(&[b"id: 1\ndata: 1\n\nid: 2\ndata: 2\n"]);
        assert_eq!(out.len(), 1);
        parser.end();
        assert_eq!(parser.last_id(), "1");
        let mut more = Vec::new();
        parser.feed(b"data: 3\n\n", &mut more);
        assert_eq!(
            more,
            vec![Item::Event {
                data: "3".into(),
                id: "1".into()
            }]
        );
    }

    #[test]
    fn each_stream_may_start_with_a_bom() {
        let (out, mut parser) = items(&[b"\xEF\xBB\xBFdata: 1\n\n"]);
        assert_eq!(out.len(), 1);
        parser.end();
        let mut more = Vec::new();
        parser.feed(b"\xEF\xBB\xBFdata: 2\n\n\xEF\xBB\xBFdata: 3\n\n", &mut more);
        // The second stream's BOM is skipped; one that is not at a stream's start is a
        // character of the field name, and the line is no `data` field.
        assert_eq!(
            more,
            vec![Item::Event {
                data: "2".into(),
                id: String::new()
            }]
        );
    }

    #[test]
    fn only_the_event_stream_media_type_is_a_stream() {
        for (value, expected) in [
            ("text/event-stream", true),
            ("Text/Event-Stream; charset=utf-8", true),
            (" text/event-stream ;x=y", true),
            ("text/event-streams", false),
            ("text/event-stream-x", false),
            ("text/plain", false),
            ("", false),
        ] {
            assert_eq!(is_event_stream(value), expected, "{value:?}");
        }
    }

    #[test]
    fn the_tally_counts_gaps_lost_and_duplicates() {
        let mut tally = Tally::default();
        for data in ["1", "2", "5", "5", "3", "6", "x"] {
            tally.observe(data);
        }
        assert_eq!(
            tally,
            Tally {
                last: Some(6),
                events: 7,
                gaps: 1,
                lost: 2,
                duplicates: 2,
                unreadable: 1,
            }
        );
    }

    #[test]
    fn buckets_count_and_keep_maxima_per_100_ms_from_the_zero() {
        let zero = Instant::now();
        let buckets = Buckets::new(zero, Duration::from_millis(300));
        buckets.add(zero + Duration::from_millis(50));
        buckets.add(zero + Duration::from_millis(99));
        buckets.add(zero + Duration::from_millis(100));
        buckets.add(zero + Duration::from_millis(350));
        // Past the run: ignored.
        buckets.add(zero + Duration::from_secs(5));
        assert_eq!(buckets.snapshot(), vec![2, 1, 0, 1]);
        let lag = Buckets::new(zero, Duration::from_millis(100));
        lag.raise(zero + Duration::from_millis(10), 40);
        lag.raise(zero + Duration::from_millis(20), 7);
        lag.raise(zero + Duration::from_millis(120), 3);
        assert_eq!(lag.snapshot(), vec![40, 3]);
    }

    #[test]
    fn the_summary_lists_failures_by_status() {
        let mut summary = Summary {
            connects: 3,
            failed: 3,
            ..Summary::default()
        };
        assert!(!summary.to_string().contains("failed_statuses"));
        summary.statuses.insert(503, 2);
        summary.statuses.insert(502, 1);
        let text = summary.to_string();
        assert!(
            text.starts_with("connects=3 reconnects=0 open=0 failed=3 "),
            "{text}"
        );
        assert!(text.ends_with(" failed_statuses=502:1,503:2"), "{text}");
    }

    #[test]
    fn urls_need_http_host_and_port() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/events?x=1"),
            Ok(Target {
                authority: "127.0.0.1:8080".into(),
                path: "/events?x=1".into()
            })
        );
        assert!(parse_url("https://127.0.0.1:8080/").is_err());
        assert!(parse_url("http://127.0.0.1/").is_err());
        assert!(parse_url("not a url").is_err());
    }
}
