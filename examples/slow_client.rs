//! Run with: cargo run --example slow_client -- --policy drop-oldest
//!
//! Then: curl -N http://127.0.0.1:3000/firehose --limit-rate 1k -o /dev/null
//!
//! Slow-client backpressure, watched live. `/firehose` sends about 4,000 events a second
//! (~0.8 MB/s; `--rate` changes it), each stream its own. The layer puts a buffer of at most
//! 256 KiB between each stream's producer and its client, and ends a stream whose client accepts
//! nothing for 5 s while bytes wait. What happens when the buffer is full is the `--policy`:
//!
//! - `disconnect` (the default): the producer is paused until the client takes bytes again. A
//!   slow but steady client just slows the producer down (it gets every event); a client that
//!   takes nothing for 5 s is disconnected and the producer dropped. It reconnects with
//!   `Last-Event-ID` and the application replays what it missed.
//! - `drop-oldest`: whole events are dropped from the front of the buffer (`dropped` goes up);
//!   the client gets the newest ones, with gaps in the ids.
//! - `latest-per-type`: the buffer keeps only the newest event of each type (`quote`, `trade`,
//!   `alert`) when it fills (`coalesced` goes up); the rare `alert`s all come through.
//!
//! Under every policy, a client that accepts nothing at all for 5 s is disconnected
//! (`slow-client closes` goes up). Every second while something happens, the server prints its
//! counters: open streams, bytes sent, bytes queued in the buffers, events dropped and
//! coalesced, streams closed as slow.
//!
//! Clients to try, from another terminal:
//!
//! ```text
//! curl -N http://127.0.0.1:3000/firehose -o /dev/null                  # keeps up: nothing queued
//! curl -N http://127.0.0.1:3000/firehose --limit-rate 1k -o /dev/null  # stalls: closed in ~6 s
//! curl -sN http://127.0.0.1:3000/firehose | sleep 60                   # stops reading: the same
//! cargo run --example slow_client -- --reader 20k                      # slow but steady
//! ```
//!
//! `curl --limit-rate 1k` reads so little that TCP's flow control (the receiver reopens its
//! window only once it has freed a good part of its buffer) leaves the server without progress
//! for more than 5 s: the layer's buffer fills within a second, `dropped` or `coalesced` climb
//! under their policies, and the stream is closed as stalled. curl sees the end only once it
//! has read what the kernel holds.
//!
//! `--reader RATE` is a client that reads `/firehose` at RATE bytes a second (`k` = 1,000)
//! through a 16 KiB receive buffer, so that the window reopens in small steps and the stream
//! stays open. Every second it prints the bytes and events it got, the last id, the ids it never
//! saw (dropped or coalesced on the server), and the alerts it got out of those sent: all of
//! them under `latest-per-type`, few under `drop-oldest`.
//!
//! The server fixes its sockets' send buffer at 64 KiB. Linux otherwise grows it up to 4 MB:
//! a stalled client would absorb that much before the layer's buffer saw anything.
//!
//! Options: `--policy disconnect|drop-oldest|latest-per-type`, `--rate EVENTS_PER_SECOND`
//! (default 4000, at least 100), `--listen ADDR` (default `127.0.0.1:3000`; the first line on
//! stdout is the address actually bound, so `--listen 127.0.0.1:0` works); `--reader RATE
//! [ADDR]` for the client (default server `127.0.0.1:3000`). Ctrl-C stops either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::IntervalStream;
use tower_sse::{CloseReason, SlowClient, SlowClientPolicy, SseLayer, SseMetrics};

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_RATE: u64 = 4_000;
/// The producer wakes up this often and sends a batch of events.
const BATCH_EVERY: Duration = Duration::from_millis(10);
/// Every this many events, one is an `alert` (every 2.5 s at the default rate).
const ALERT_EVERY: u64 = 10_000;
/// The server's socket send buffer: see [`listen`].
const SERVER_SEND_BUFFER: u32 = 64 * 1024;
/// The reader's socket receive buffer (the kernel doubles it for its bookkeeping).
const READER_RECV_BUFFER: u32 = 16 * 1024;

enum Mode {
    Server {
        addr: SocketAddr,
        policy: SlowClientPolicy,
        policy_name: String,
        rate: u64,
    },
    Reader {
        server: SocketAddr,
        bytes_per_second: u64,
    },
}

#[tokio::main]
async fn main() {
    match parse_args() {
        Ok(Mode::Server {
            addr,
            policy,
            policy_name,
            rate,
        }) => server(addr, policy, &policy_name, rate).await,
        Ok(Mode::Reader {
            server,
            bytes_per_second,
        }) => {
            if let Err(error) = reader(server, bytes_per_second).await {
                eprintln!("slow_client reader: {error}");
                std::process::exit(1);
            }
        }
        Err(message) => {
            eprintln!("slow_client example: {message}");
            eprintln!(
                "usage: cargo run --example slow_client -- [--policy POLICY] [--rate N] \
                 [--listen ADDR]\n       cargo run --example slow_client -- --reader RATE [ADDR]\n\
                 POLICY: disconnect, drop-oldest or latest-per-type; RATE: bytes a second (20k)"
            );
            std::process::exit(2);
        }
    }
}

async fn server(addr: SocketAddr, policy: SlowClientPolicy, policy_name: &str, rate: u64) {
    let listener = match listen(addr) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("slow_client example: cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    println!(
        "listening on http://{} (policy {policy_name}, {rate} events/s per stream)",
        listener.local_addr().unwrap(),
    );
    std::io::stdout().flush().ok();

    let layer = SseLayer::new().slow_client(
        SlowClient::new()
            .max_buffer(256 * 1024)
            .timeout(Duration::from_secs(5))
            .policy(policy),
    );
    tokio::spawn(print_counters(layer.metrics_handle()));

    let app = Router::new().route("/firehose", get(move || firehose(rate)).layer(layer));
    axum::serve(listener, app).await.expect("server error");
}

/// A listener whose connections have a send buffer of [`SERVER_SEND_BUFFER`] (accepted sockets
/// inherit it from the listening socket).
///
/// Linux grows a socket's send buffer on its own, up to 4 MB by default (`net.ipv4.tcp_wmem`):
/// a stalled client would absorb that much before the layer's buffer sees anything. A fixed,
/// small send buffer makes the layer's 256 KiB the buffer that fills, which is what this example
/// shows. A production server does not need it (but memory per stalled client is then the
/// layer's buffer plus the socket's).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SERVER_SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Events as fast as `rate` allows, in batches: mostly `quote`, every 10th a `trade`, every
/// [`ALERT_EVERY`]th an `alert`. Each has an id (its sequence number) and ~250 bytes of JSON.
async fn firehose(rate: u64) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let per_batch = (rate / 100).max(1);
    let mut interval = tokio::time::interval(BATCH_EVERY);
    // While the layer does not pull (a full buffer under `disconnect`), batches are skipped
    // rather than sent in a burst later.
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let events = IntervalStream::new(interval)
        .zip(stream::iter(
            (0_u64..).step_by(usize::try_from(per_batch).unwrap()),
        ))
        .flat_map(move |(_, first)| stream::iter(first..first + per_batch))
        .map(|seq| {
            let kind = match seq {
                n if n % ALERT_EVERY == 0 => "alert",
                n if n % 10 == 0 => "trade",
                _ => "quote",
            };
            Ok(Event::default()
                .event(kind)
                .id(seq.to_string())
                .data(order_book(seq)))
        });
    Sse::new(events)
}

/// ~250 bytes of JSON: a mid price (in cents) and five levels of bids and asks.
fn order_book(seq: u64) -> String {
    let mid = 10_000 + seq % 997;
    let level = |price: u64, depth: u64| format!("[{price},{}]", 100 * depth + seq % 7);
    let bids: Vec<String> = (1..=5).map(|depth| level(mid - depth, depth)).collect();
    let asks: Vec<String> = (1..=5).map(|depth| level(mid + depth, depth)).collect();
    format!(
        r#"{{"seq":{seq},"symbol":"TSSE","mid":{mid},"bids":[{}],"asks":[{}]}}"#,
        bids.join(","),
        asks.join(",")
    )
}

/// Prints the counters every second, as long as something changes or a stream is open.
async fn print_counters(metrics: SseMetrics) {
    let started = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let mut last = metrics.snapshot();
    loop {
        interval.tick().await;
        let now = metrics.snapshot();
        if now.open_streams == 0 && now == last {
            continue;
        }
        println!(
            "{:>4}s  open {}  sent {:>9} B  queued {:>7} B  dropped {:>7}  coalesced {:>7}  \
             slow-client closes {}",
            started.elapsed().as_secs(),
            now.open_streams,
            now.bytes,
            now.queued_bytes,
            now.events_dropped,
            now.events_coalesced,
            now.closed(CloseReason::SlowClient),
        );
        std::io::stdout().flush().ok();
        last = now;
    }
}

/// A slow but steady client: reads `/firehose` at `bytes_per_second`, with a small receive
/// buffer, and prints what it got every second.
async fn reader(server: SocketAddr, bytes_per_second: u64) -> std::io::Result<()> {
    let socket = match server {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_recv_buffer_size(READER_RECV_BUFFER)?;
    let mut stream = socket.connect(server).await?;
    // HTTP/1.0: the body comes without chunked framing, so the bytes read are the event stream.
    let request =
        format!("GET /firehose HTTP/1.0\r\nHost: {server}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    println!("reading http://{server}/firehose at {bytes_per_second} B/s");

    let started = Instant::now();
    let mut report = Instant::now() + Duration::from_secs(1);
    let mut buf = [0_u8; 1024];
    let mut total = 0_u64;
    let mut lines = Lines::default();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            lines.print(started);
            println!("the server ended the stream");
            return Ok(());
        }
        lines.feed(buf.get(..n).unwrap_or_default());
        total += n as u64;
        // Sleep until reading `total` bytes at `bytes_per_second` is due.
        let due = started + Duration::from_secs_f64(total as f64 / bytes_per_second as f64);
        tokio::time::sleep_until(due).await;
        if Instant::now() >= report {
            lines.print(started);
            report += Duration::from_secs(1);
        }
    }
}

/// What the reader has seen so far, one line at a time.
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    in_body: bool,
    bytes: u64,
    events: u64,
    last_id: Option<u64>,
    missed_ids: u64,
    alerts: u64,
}

impl Lines {
    fn feed(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if self.in_body {
                self.bytes += 1;
            }
            if byte == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.on_line(&line);
            } else {
                self.line.push(byte);
            }
        }
    }

    fn on_line(&mut self, line: &[u8]) {
        if !self.in_body {
            if line.starts_with(b"HTTP/") {
                println!("{}", String::from_utf8_lossy(line).trim_end());
            }
            // The blank line that ends the response head.
            self.in_body = line == b"\r" || line.is_empty();
            return;
        }
        if let Some(id) = line.strip_prefix(b"id: ") {
            let Some(id) = std::str::from_utf8(id)
                .ok()
                .and_then(|id| id.parse::<u64>().ok())
            else {
                return;
            };
            self.events += 1;
            if let Some(last) = self.last_id {
                self.missed_ids += id.saturating_sub(last + 1);
            }
            self.last_id = Some(id);
        } else if line == b"event: alert" {
            self.alerts += 1;
        }
    }

    fn print(&self, started: Instant) {
        println!(
            "{:>4}s  read {:>8} B  events {:>6}  last id {:>7}  ids never seen {:>7}  \
             alerts {} of {}",
            started.elapsed().as_secs(),
            self.bytes,
            self.events,
            self.last_id
                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            self.missed_ids,
            self.alerts,
            // The alerts the server sent up to the last id.
            self.last_id.map_or(0, |id| id / ALERT_EVERY + 1),
        );
        std::io::stdout().flush().ok();
    }
}

/// `--policy NAME`, `--rate N`, `--listen ADDR` for the server; `--reader RATE [ADDR]`.
fn parse_args() -> Result<Mode, String> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut policy = (SlowClientPolicy::Disconnect, "disconnect".to_owned());
    let mut rate = DEFAULT_RATE;
    let mut reader: Option<(u64, String)> = None;
    let mut argv = std::env::args().skip(1).peekable();
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--listen" => addr = argv.next().ok_or("--listen needs an address")?,
            "--policy" => {
                let name = argv.next().ok_or("--policy needs a name")?;
                let chosen = match name.as_str() {
                    "disconnect" => SlowClientPolicy::Disconnect,
                    "drop-oldest" => SlowClientPolicy::DropOldest,
                    "latest-per-type" => SlowClientPolicy::LatestPerType,
                    _ => return Err(format!("unknown policy {name:?}")),
                };
                policy = (chosen, name);
            }
            "--rate" => {
                let text = argv.next().ok_or("--rate needs a number")?;
                rate = positive(&text, 1)?;
                if rate < 100 {
                    return Err(format!("bad rate {text:?}: at least 100 events a second"));
                }
            }
            "--reader" => {
                let text = argv.next().ok_or("--reader needs a rate")?;
                let bytes_per_second = match text.strip_suffix('k') {
                    Some(thousands) => positive(thousands, 1_000)?,
                    None => positive(&text, 1)?,
                };
                let server = argv.next_if(|next| !next.starts_with("--"));
                reader = Some((
                    bytes_per_second,
                    server.unwrap_or_else(|| DEFAULT_ADDR.to_owned()),
                ));
            }
            "-h" | "--help" => return Err("help".to_owned()),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let parse_addr = |text: String| {
        text.parse::<SocketAddr>()
            .map_err(|error| format!("bad address {text:?}: {error}"))
    };
    Ok(match reader {
        Some((bytes_per_second, server)) => Mode::Reader {
            server: parse_addr(server)?,
            bytes_per_second,
        },
        None => Mode::Server {
            addr: parse_addr(addr)?,
            policy: policy.0,
            policy_name: policy.1,
            rate,
        },
    })
}

/// `text` as a positive number, times `unit`.
fn positive(text: &str, unit: u64) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("bad number {text:?}: expected a positive number"))
}
