//! What `SseLayer::compress` costs and saves on event streams, through the public API: wire bytes
//! as a ratio of identity, added time per event (p50/p99), CPU per MB of events, and encoder
//! memory per stream, for gzip, br and zstd at their defaults and at larger settings.
//!
//! Run with: `cargo bench -p tower-sse --features gzip,br,zstd --bench compress`.
//!
//! The stream: `N` events, each its own frame of the inner body followed by a pending poll (as
//! at 1 event/ms, where the stream goes idle after every event: the worst case, one sync flush
//! per event). Two kinds of event: ~300-byte JSON progress events (record id, counters, a rate,
//! a timestamp, an error message every tenth event) and ~1 KiB events (the same plus a list of
//! items). The time per event is that of the polls that hand the event on (inner frame, encode,
//! flush), measured on one thread; the latency it adds is its difference to identity's. Memory:
//! a fresh process (this binary, run again with `--memory <setting>`) opens `STREAMS` streams
//! and feeds each one event; the growth of its RSS (which sees Rust's and libzstd's C
//! allocations alike, as pages really touched) divided by the number of streams, minus the same
//! figure for identity streams, is the encoder's memory per stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::Empty;
use tower::{Layer, ServiceExt, service_fn};
use tower_sse::{Brotli, Coding, Compression, Gzip, SseBody, SseLayer, Zstd};
use tower_sse_test_support::rss_bytes;

/// Events per stream.
const N: usize = 5_000;
/// Streams held open for the memory figure.
const STREAMS: usize = 2_000;

/// A progress event of about 300 bytes (or about 1 KiB with `items`).
fn event(n: usize, items: bool) -> Bytes {
    let mut event = format!(
        "id: {n}\nevent: progress\ndata: {{\"record\":\"rec-{:06}\",\"processed\":{},\"failed\":{},\
         \"total\":100000,\"rate\":{}.{},\"stage\":\"transform\",\"ts\":\"2026-12-02T10:{:02}:{:02}.{:03}Z\"",
        n * 7919 % 1_000_000,
        n * 3,
        n / 50,
        900 + n % 100,
        n % 10,
        n / 60 % 60,
        n % 60,
        n % 1000
    );
    if n % 10 == 3 {
        event.push_str(",\"error\":\"upstream timeout while fetching page 17 of the export\"");
    }
    if items {
        event.push_str(",\"items\":[");
        for i in 0..9 {
            if i > 0 {
                event.push(',');
            }
            event.push_str(&format!(
                "{{\"sku\":\"SKU-{:05}\",\"qty\":{},\"price\":{}.{:02},\"warehouse\":\"eu-west-{}\"}}",
                (n * 31 + i * 977) % 100_000,
                (n + i) % 17,
                (n * 13 + i) % 500,
                (n + i * 7) % 100,
                i % 3
            ));
        }
        event.push(']');
    }
    event.push_str("}\n\n");
    Bytes::from(event)
}

/// An inner body that hands on one event, then is pending twice (waking itself), and so on.
struct Paced {
    events: std::vec::IntoIter<Bytes>,
    idle: u8,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // Two pending polls after each event: the body's probe for a second ready frame (frames
        // ready together are merged) sees one, the next poll of the stream the other, so the
        // stream really goes idle (and the encoder flushes) after every event.
        if self.idle > 0 {
            self.idle -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.idle = 2;
        Poll::Ready(self.events.next().map(|e| Ok(Frame::data(e))))
    }
}

/// A stream of `events` through a layer compressing with `setting` (`None`: identity).
async fn open(events: Vec<Bytes>, setting: Option<&Setting>) -> SseBody<Paced> {
    let mut layer = SseLayer::new().no_heartbeat().no_retry();
    let mut accept = "identity";
    if let Some(setting) = setting {
        layer = layer.compress(setting.compression.clone());
        accept = setting.coding.as_str();
    }
    let service = layer.layer(service_fn(move |_: Request<Empty<Bytes>>| {
        let events = events.clone();
        async move {
            let mut response = Response::new(Paced {
                events: events.into_iter(),
                idle: 0,
            });
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/event-stream"),
            );
            Ok::<_, Infallible>(response)
        }
    }));
    let request = Request::builder()
        .header(header::ACCEPT, "text/event-stream")
        .header(header::ACCEPT_ENCODING, accept)
        .body(Empty::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    if let Some(setting) = setting {
        assert_eq!(
            response.headers()[header::CONTENT_ENCODING],
            setting.coding.as_str()
        );
    }
    response.into_body()
}

/// Polls `body` once: the data it hands on, if any.
fn poll_once(body: &mut SseBody<Paced>) -> Poll<Option<Bytes>> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(Some(frame)) => Poll::Ready(frame.unwrap().into_data().ok()),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}

struct Run {
    wire: usize,
    /// Time of the polls that handed each event on, one entry per event.
    per_event: Vec<Duration>,
    total: Duration,
}

/// Runs a whole stream: every event is handed on (and flushed) before the stream goes idle.
fn run(runtime: &tokio::runtime::Runtime, events: &[Bytes], setting: Option<&Setting>) -> Run {
    let mut body = runtime.block_on(open(events.to_vec(), setting));
    let mut wire = 0;
    let mut per_event = Vec::with_capacity(events.len());
    let start = Instant::now();
    let mut since = Instant::now();
    loop {
        match poll_once(&mut body) {
            Poll::Ready(Some(data)) => {
                wire += data.len();
                per_event.push(since.elapsed());
            }
            Poll::Ready(None) => break,
            Poll::Pending => {}
        }
        since = Instant::now();
    }
    // One frame per event: every event was handed on (and, compressed, flushed) on its own.
    assert_eq!(
        per_event.len(),
        events.len() + usize::from(setting.is_some())
    );
    Run {
        wire,
        per_event,
        total: start.elapsed(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// RSS growth per stream of `STREAMS` streams, each fed one event (run in a fresh process).
fn memory(runtime: &tokio::runtime::Runtime, events: &[Bytes], setting: Option<&Setting>) -> f64 {
    let rss_before = rss_bytes().unwrap_or(0);
    let mut bodies = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let mut body = runtime.block_on(open(events[..2].to_vec(), setting));
        // One event in and out (the encoders allocate lazily).
        while poll_once(&mut body).is_pending() {}
        bodies.push(body);
    }
    let rss = rss_bytes().unwrap_or(0).saturating_sub(rss_before) as f64 / STREAMS as f64;
    drop(bodies);
    rss
}

/// Runs this binary again to measure the memory of setting `index` (`identity` for none) on
/// `items` events, in a process of its own.
fn memory_in_child(index: Option<usize>, items: bool) -> f64 {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--memory")
        .arg(index.map_or_else(|| "identity".to_owned(), |i| i.to_string()))
        .arg(if items { "1k" } else { "300" })
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

struct Setting {
    name: &'static str,
    coding: Coding,
    compression: Compression,
}

fn settings() -> Vec<Setting> {
    let only = |coding| Compression::new().order([coding]);
    vec![
        Setting {
            name: "gzip (default: 6, window 2^12, memLevel 4)",
            coding: Coding::Gzip,
            compression: only(Coding::Gzip),
        },
        Setting {
            name: "gzip (zlib's defaults: 6, 2^15, memLevel 8)",
            coding: Coding::Gzip,
            compression: only(Coding::Gzip).gzip(Gzip::new().window_bits(15).mem_level(8)),
        },
        Setting {
            name: "br (default: quality 4, window 2^16)",
            coding: Coding::Br,
            compression: only(Coding::Br),
        },
        Setting {
            name: "br (quality 5, window 2^22)",
            coding: Coding::Br,
            compression: only(Coding::Br).br(Brotli::new().quality(5).window_bits(22)),
        },
        Setting {
            name: "zstd (default: 3, window 2^14, hash/chain 2^12)",
            coding: Coding::Zstd,
            compression: only(Coding::Zstd),
        },
        Setting {
            name: "zstd (level 3, window 2^22, hash 2^17, chain 2^16)",
            coding: Coding::Zstd,
            compression: only(Coding::Zstd)
                .zstd(Zstd::new().window_log(22).hash_log(17).chain_log(16)),
        },
    ]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = settings();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--memory") {
        let setting = args[at + 1].parse::<usize>().ok().map(|i| &settings[i]);
        let events: Vec<Bytes> = (0..2).map(|n| event(n, args[at + 2] == "1k")).collect();
        println!("{}", memory(&runtime, &events, setting));
        return;
    }
    for (label, items) in [
        ("~300 B JSON progress events", false),
        ("~1 KiB events", true),
    ] {
        let events: Vec<Bytes> = (0..N).map(|n| event(n, items)).collect();
        let plain: usize = events.iter().map(Bytes::len).sum();
        println!(
            "\n{label}: {N} events, {:.0} B each on average, one flush per event\n",
            plain as f64 / N as f64
        );
        println!(
            "| setting | wire / identity | per event p50 / p99 (added) | CPU per MB | memory per stream |"
        );
        println!("|---|---|---|---|---|");
        let identity = run(&runtime, &events, None);
        assert_eq!(identity.wire, plain);
        let mut base = identity.per_event.clone();
        base.sort();
        let (base_p50, base_p99) = (percentile(&base, 0.5), percentile(&base, 0.99));
        let id_rss = memory_in_child(None, items);
        println!(
            "| identity | 1.000 ({plain} B) | {:.1} / {:.1} µs | {:.1} ms | {:.1} KiB (the whole stream) |",
            base_p50.as_secs_f64() * 1e6,
            base_p99.as_secs_f64() * 1e6,
            identity.total.as_secs_f64() * 1e3 / (plain as f64 / 1e6),
            id_rss / 1024.0
        );
        for (index, setting) in settings.iter().enumerate() {
            let result = run(&runtime, &events, Some(setting));
            let mut times = result.per_event.clone();
            times.sort();
            let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
            let rss = memory_in_child(Some(index), items);
            println!(
                "| {} | {:.3} ({} B) | {:.1} / {:.1} µs (+{:.1} / +{:.1}) | {:.1} ms | +{:.1} KiB |",
                setting.name,
                result.wire as f64 / plain as f64,
                result.wire,
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                p50.saturating_sub(base_p50).as_secs_f64() * 1e6,
                p99.saturating_sub(base_p99).as_secs_f64() * 1e6,
                result.total.as_secs_f64() * 1e3 / (plain as f64 / 1e6),
                (rss - id_rss) / 1024.0,
            );
        }
    }
}
