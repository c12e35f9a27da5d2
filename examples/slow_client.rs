//! Run with: cargo run --example slow_client -- drop-oldest
//!
//! Then: curl -N http://127.0.0.1:3000/firehose --limit-rate 1k -o /dev/null
//!
//! One lesson: what the slow-client buffer does when a client reads slower than the server
//! produces. `/firehose` sends 4,000 events a second (~1 MB/s) per stream. The layer puts at most
//! 256 KiB between each stream's producer and its client and ends a stream whose client takes
//! nothing for 5 s while bytes wait. The argument picks what happens when the buffer is full:
//!
//! - `disconnect` (the default): the producer is paused until the client takes bytes again; a
//!   client that takes nothing for 5 s is disconnected (it reconnects with `Last-Event-ID`).
//! - `drop-oldest`: whole events are dropped from the front of the buffer (`dropped` climbs).
//! - `latest-per-type`: only the newest event of each type (`quote`, `trade`, `alert`) is kept
//!   (`coalesced` climbs); the rare `alert`s all come through.
//!
//! The server prints its counters every second while a stream is open. `curl -N … -o /dev/null`
//! keeps up (nothing queued); `--limit-rate 1k` stalls (closed as slow after about 6 s: TCP
//! reopens the window only in large steps); `curl -sN … | sleep 60` stops reading.
//!
//! The sockets' send buffer is fixed at 64 KiB here. Linux otherwise grows it up to 4 MB, which a
//! stalled client would absorb before the layer's buffer saw anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::IntervalStream;
use tower_sse::{CloseReason, SlowClient, SlowClientPolicy, SseLayer, SseMetrics};

/// Events per second per stream, sent in batches every 10 ms.
const RATE: u64 = 4_000;
/// Every this many events, one is an `alert` (every 2.5 s).
const ALERT_EVERY: u64 = 10_000;

#[tokio::main]
async fn main() {
    let policy = match std::env::args().nth(1).as_deref() {
        None | Some("disconnect") => SlowClientPolicy::Disconnect,
        Some("drop-oldest") => SlowClientPolicy::DropOldest,
        Some("latest-per-type") => SlowClientPolicy::LatestPerType,
        Some(other) => {
            eprintln!(
                "slow_client: unknown policy {other:?} (disconnect, drop-oldest, latest-per-type)"
            );
            std::process::exit(2);
        }
    };
    let listener = listen("127.0.0.1:3000".parse().unwrap()).expect("listen on 127.0.0.1:3000");
    println!("listening on http://{}", listener.local_addr().unwrap());
    std::io::stdout().flush().ok();

    let layer = SseLayer::new().slow_client(
        SlowClient::new()
            .max_buffer(256 * 1024)
            .timeout(Duration::from_secs(5))
            .policy(policy),
    );
    tokio::spawn(print_counters(layer.metrics_handle()));

    let app = Router::new().route("/firehose", get(firehose).layer(layer));
    axum::serve(listener, app).await.expect("server error");
}

/// A listener whose accepted sockets have a 64 KiB send buffer (they inherit it).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(64 * 1024)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Mostly `quote`s, every 10th a `trade`, every [`ALERT_EVERY`]th an `alert`; each has an id.
async fn firehose() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let per_batch = RATE / 100;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    // While the layer does not pull (a full buffer under `disconnect`), batches are skipped.
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let events = IntervalStream::new(interval)
        .zip(stream::iter((0_u64..).step_by(per_batch as usize)))
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
