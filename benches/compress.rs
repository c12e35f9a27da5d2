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

//! What `SseLayer::compress` costs and saves on event streams, through the public API: wire bytes
//! as a ratio of identity, CPU per MB of events and encoder memory per stream (in process), and
//! the latency each coding adds per event on loopback, for gzip, br and zstd at their defaults
//! and at larger settings.
//!
//! Run with: `cargo bench -p tower-sse --features gzip,br,zstd --bench compress`
//! (`-- --only ratio` or `-- --only latency` for one part; `-- --only scan` for what smaller
//! settings than the defaults give up; `-- --only br-hashers` for the `brotli` crate's encoder
//! driven directly with hasher settings `Brotli` does not expose).
//!
//! Events: JSON progress events of ~300 B (job, record id, counters, a rate, a stage, a worker, a
//! timestamp in microseconds and as text, an error object on about one event in ten) and ~1 KiB
//! events (the same plus a list of items).
//!
//! Ratio and CPU: `N` events, each its own frame of the inner body followed by pending polls (as
//! at 1 event/ms, where the stream goes idle after every event: the worst case, one sync flush
//! per event), on one thread; the output is decoded as it comes and checked against the events.
//! "Encode + decode per event" is the time of the poll that hands an event on (inner frame,
//! encode, sync flush) plus the time to decode what it handed on: the CPU a coding adds to each
//! event's latency, without the network or the scheduler. CPU per MB is the time spent in the
//! layer's polls for the whole stream.
//!
//! Memory: a fresh process (this binary, run again with `--memory <setting> <events>`) opens
//! `STREAMS` streams and feeds each `EVENTS_PER_STREAM` events (more than the largest default
//! window, so that buffers are touched); "heap" is the growth of the bytes allocated through
//! Rust's global allocator (counted by `cap`, which sees C zlib's state, allocated through the
//! wrapper's `zalloc`, and the `brotli` crate's, but not libzstd's, which uses C `malloc`), "RSS" the growth of `VmRSS` (which sees
//! both, but only pages really touched), each per stream and minus the same for identity
//! streams.
//!
//! Latency: a real server on 127.0.0.1 (hyper, `TCP_NODELAY` on both ends) sends `LATENCY_N`
//! events at 1 event/ms, each carrying the time it was handed to the layer; a hyper client on
//! the same runtime decodes the body incrementally as it arrives and, for each complete event,
//! takes the difference between now and that time. Identity and the three codings run at the
//! same time (one stream each, so that a stall of the machine hits all four), `ROUNDS` times,
//! and their percentiles are compared: "added" is a coding's minus identity's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::System;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cap::Cap;
use http::{Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tower::{Layer, ServiceExt, service_fn};
use tower_sse::{Brotli, Coding, Compression, Gzip, SseBody, SseLayer, Zstd};
use tower_sse_test_support::decode::Decoder;
use tower_sse_test_support::rss_bytes;

/// Counts the bytes allocated through Rust's allocator (for the memory figures).
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Events per stream for the ratio and CPU figures.
const N: usize = 5_000;
/// Streams held open for the memory figure.
const STREAMS: usize = 1_000;
/// Events each of those streams sends before it is measured.
const EVENTS_PER_STREAM: usize = 32;
/// Events per run of the latency figure, at 1 event/ms.
const LATENCY_N: usize = 2_000;
/// Runs of the latency figure (each with the four streams at once).
const ROUNDS: usize = 3;

/// A base for `ts_us`, as a Unix time in microseconds would be (2025-12-02).
const TS_BASE_US: u64 = 1_764_633_600_000_000;

/// A JSON progress event of about 300 bytes (or about 1 KiB with `items`), sent at `ts_us`
/// microseconds after the run began.
fn event(n: usize, items: bool, ts_us: u64) -> Bytes {
    // Pseudo-random but repeatable values (a multiplicative hash of the event number).
    let r = |k: usize| (n.wrapping_mul(2_654_435_761).wrapping_add(k * 40_503)) % 1_000_000;
    let ms = ts_us / 1000;
    let mut event = format!(
        "id: {n}\nevent: progress\ndata: {{\"job\":\"export-7f3a9c\",\"record\":\"rec-{:06}\",\
         \"seq\":{n},\"processed\":{},\"failed\":{},\"skipped\":{},\"total\":250000,\
         \"percent\":{:.2},\"rate\":{}.{},\"bytes\":{},\"eta_s\":{},\"stage\":\"{}\",\
         \"worker\":\"w-{}\",\"ts_us\":{},\"ts\":\"2026-12-02T10:{:02}:{:02}.{:03}Z\"",
        r(1),
        n * 3 + r(2) % 3,
        n / 41,
        n / 97,
        (n * 3) as f64 / 2500.0,
        880 + r(3) % 90,
        r(4) % 10,
        n * 2113 + r(5) % 5000,
        250_000_usize.saturating_sub(n * 3) / 900,
        ["fetch", "transform", "load"][n / 1700 % 3],
        r(6) % 8,
        TS_BASE_US + ts_us,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    );
    if r(7) % 10 == 0 {
        event.push_str(&format!(
            ",\"error\":{{\"code\":\"UPSTREAM_TIMEOUT\",\"message\":\"upstream timed out after \
             30 s while fetching page {} of the export; retrying (attempt {} of 5)\"}}",
            r(8) % 400,
            r(9) % 5 + 1
        ));
    }
    if items {
        event.push_str(",\"items\":[");
        for i in 0..8 {
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

/// The events of one stream, as if sent at 1 event/ms.
fn events(count: usize, items: bool) -> Vec<Bytes> {
    (0..count)
        .map(|n| event(n, items, n as u64 * 1000))
        .collect()
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
    /// Time in the layer's polls (CPU per MB).
    total: Duration,
    /// Per event: the poll that hands it on (inner frame, encode, sync flush) plus decoding
    /// what it handed on.
    per_event: Vec<Duration>,
}

/// Runs a whole stream: every event is handed on (and flushed) before the stream goes idle, and
/// decoded as it comes.
fn run(runtime: &tokio::runtime::Runtime, events: &[Bytes], setting: Option<&Setting>) -> Run {
    let mut body = runtime.block_on(open(events.to_vec(), setting));
    let mut decoder = Decoder::new(setting.map(|s| s.coding.as_str()));
    let mut wire = 0;
    let mut total = Duration::ZERO;
    let mut per_event = Vec::with_capacity(events.len());
    loop {
        let start = Instant::now();
        let polled = poll_once(&mut body);
        let polled_at = Instant::now();
        total += polled_at - start;
        match polled {
            Poll::Ready(Some(data)) => {
                wire += data.len();
                decoder.feed(&data);
                per_event.push(start.elapsed());
            }
            Poll::Ready(None) => break,
            Poll::Pending => {}
        }
    }
    // One frame per event (and the end of the compressed stream): every event was handed on
    // (and, compressed, flushed) on its own.
    assert_eq!(
        per_event.len(),
        events.len() + usize::from(setting.is_some())
    );
    per_event.truncate(events.len());
    // And it decodes to the events.
    let plain: Vec<u8> = events.iter().flat_map(|e| e.iter().copied()).collect();
    assert!(decoder.feed(&[]) == plain.as_slice());
    Run {
        wire,
        total,
        per_event,
    }
}

/// The median and the 99th percentile of `times`, in microseconds.
fn p50_p99(times: &[Duration]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

/// Heap and RSS growth per stream of `STREAMS` streams, each fed `events` (in a fresh process).
fn memory(
    runtime: &tokio::runtime::Runtime,
    events: &[Bytes],
    setting: Option<&Setting>,
) -> (f64, f64) {
    let mut bodies = Vec::with_capacity(STREAMS);
    let (heap_before, rss_before) = (ALLOCATOR.allocated(), rss_bytes().unwrap_or(0));
    for _ in 0..STREAMS {
        let mut body = runtime.block_on(open(events.to_vec(), setting));
        // Every event in and out, but not the end (which frees nothing, but is not the state of
        // an open stream).
        let mut left = events.len();
        while left > 0 {
            if let Poll::Ready(Some(_)) = poll_once(&mut body) {
                left -= 1;
            }
        }
        bodies.push(body);
    }
    let heap = ALLOCATOR.allocated().saturating_sub(heap_before) as f64 / STREAMS as f64;
    let rss = rss_bytes().unwrap_or(0).saturating_sub(rss_before) as f64 / STREAMS as f64;
    drop(bodies);
    (heap, rss)
}

/// Runs this binary again to measure the memory of setting `index` (`identity` for none) on
/// `items` events, in a process of its own: (heap, RSS) per stream.
fn memory_in_child(index: Option<usize>, items: bool) -> (f64, f64) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--memory")
        .arg(index.map_or_else(|| "identity".to_owned(), |i| i.to_string()))
        .arg(if items { "1k" } else { "300" })
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut figures = text.split_whitespace().map(|f| f.parse().unwrap());
    (figures.next().unwrap(), figures.next().unwrap())
}

struct Setting {
    name: &'static str,
    coding: Coding,
    compression: Compression,
    /// Only in the scan of smaller settings (`--only scan`).
    scan: bool,
}

fn settings() -> Vec<Setting> {
    let only = |coding| Compression::new().order([coding]);
    vec![
        Setting {
            name: "gzip, default (level 6, window 2^12, memLevel 4)",
            coding: Coding::Gzip,
            scan: false,
            compression: only(Coding::Gzip),
        },
        Setting {
            name: "gzip, zlib's defaults (level 6, window 2^15, memLevel 8)",
            coding: Coding::Gzip,
            scan: false,
            compression: only(Coding::Gzip).gzip(Gzip::new().window_bits(15).mem_level(8)),
        },
        Setting {
            name: "br, default (quality 3, window 2^12)",
            coding: Coding::Br,
            scan: false,
            compression: only(Coding::Br),
        },
        Setting {
            name: "br, quality 4, window 2^16 (the previous default)",
            coding: Coding::Br,
            scan: false,
            compression: only(Coding::Br).br(Brotli::new().quality(4).window_bits(16)),
        },
        Setting {
            name: "zstd, default (level 3, window 2^12, hash/chain 2^10)",
            coding: Coding::Zstd,
            scan: false,
            compression: only(Coding::Zstd),
        },
        Setting {
            name: "zstd, level 3, window 2^14, hash/chain 2^12 (the previous default)",
            coding: Coding::Zstd,
            scan: false,
            compression: only(Coding::Zstd)
                .zstd(Zstd::new().window_log(14).hash_log(12).chain_log(12)),
        },
        Setting {
            name: "zstd, level 3, window 2^22, hash 2^17, chain 2^16",
            coding: Coding::Zstd,
            scan: false,
            compression: only(Coding::Zstd)
                .zstd(Zstd::new().window_log(22).hash_log(17).chain_log(16)),
        },
        // The scan: what smaller settings give up (`--only scan`).
        Setting {
            name: "gzip, window 2^9, memLevel 1 (the smallest)",
            coding: Coding::Gzip,
            scan: true,
            compression: only(Coding::Gzip).gzip(Gzip::new().window_bits(9).mem_level(1)),
        },
        Setting {
            name: "gzip, window 2^10, memLevel 3",
            coding: Coding::Gzip,
            scan: true,
            compression: only(Coding::Gzip).gzip(Gzip::new().window_bits(10).mem_level(3)),
        },
        Setting {
            name: "gzip, window 2^11, memLevel 4",
            coding: Coding::Gzip,
            scan: true,
            compression: only(Coding::Gzip).gzip(Gzip::new().window_bits(11)),
        },
        Setting {
            name: "gzip, window 2^12, memLevel 1",
            coding: Coding::Gzip,
            scan: true,
            compression: only(Coding::Gzip).gzip(Gzip::new().mem_level(1)),
        },
        Setting {
            name: "gzip, window 2^13, memLevel 4",
            coding: Coding::Gzip,
            scan: true,
            compression: only(Coding::Gzip).gzip(Gzip::new().window_bits(13)),
        },
        Setting {
            name: "gzip, window 2^13, memLevel 5",
            coding: Coding::Gzip,
            scan: true,
            compression: only(Coding::Gzip).gzip(Gzip::new().window_bits(13).mem_level(5)),
        },
        Setting {
            name: "gzip, level 1, window 2^12, memLevel 4",
            coding: Coding::Gzip,
            scan: true,
            compression: only(Coding::Gzip).gzip(Gzip::new().level(1)),
        },
        Setting {
            name: "gzip, level 9, window 2^12, memLevel 4",
            coding: Coding::Gzip,
            scan: true,
            compression: only(Coding::Gzip).gzip(Gzip::new().level(9)),
        },
        Setting {
            name: "br, quality 0, window 2^12",
            coding: Coding::Br,
            scan: true,
            compression: only(Coding::Br).br(Brotli::new().quality(0)),
        },
        Setting {
            name: "br, quality 1, window 2^12",
            coding: Coding::Br,
            scan: true,
            compression: only(Coding::Br).br(Brotli::new().quality(1)),
        },
        Setting {
            name: "br, quality 2, window 2^12",
            coding: Coding::Br,
            scan: true,
            compression: only(Coding::Br).br(Brotli::new().quality(2)),
        },
        Setting {
            name: "br, quality 3, window 2^10",
            coding: Coding::Br,
            scan: true,
            compression: only(Coding::Br).br(Brotli::new().window_bits(10)),
        },
        Setting {
            name: "br, quality 3, window 2^14",
            coding: Coding::Br,
            scan: true,
            compression: only(Coding::Br).br(Brotli::new().window_bits(14)),
        },
        Setting {
            name: "zstd, level 3, window 2^13, hash/chain 2^11",
            coding: Coding::Zstd,
            scan: true,
            compression: only(Coding::Zstd)
                .zstd(Zstd::new().window_log(13).hash_log(11).chain_log(11)),
        },
        Setting {
            name: "zstd, level 1, window 2^12, hash/chain 2^10",
            coding: Coding::Zstd,
            scan: true,
            compression: only(Coding::Zstd).zstd(Zstd::new().level(1)),
        },
        Setting {
            name: "zstd, level 3, window 2^16, hash/chain 2^12",
            coding: Coding::Zstd,
            scan: true,
            compression: only(Coding::Zstd)
                .zstd(Zstd::new().window_log(16).hash_log(12).chain_log(12)),
        },
    ]
}

/// Ratio, CPU and memory of every setting of the main tables (`scan == false`: on ~300 B and
/// ~1 KiB events) or of the scan (`true`: ~300 B events).
fn ratio_tables(runtime: &tokio::runtime::Runtime, settings: &[Setting], scan: bool) {
    let sizes: &[(&str, bool)] = if scan {
        &[("~300 B JSON progress events, smaller settings", false)]
    } else {
        &[
            ("~300 B JSON progress events", false),
            ("~1 KiB events", true),
        ]
    };
    for &(label, items) in sizes {
        let events = events(N, items);
        let plain: usize = events.iter().map(Bytes::len).sum();
        println!(
            "\n{label}: {N} events, {:.0} B each on average, one flush per event; memory: \
             {STREAMS} streams of {EVENTS_PER_STREAM} events\n",
            plain as f64 / N as f64
        );
        println!(
            "| setting | wire / identity | encode + decode per event p50 / p99 (added) | CPU per MB | heap per stream | RSS per stream |"
        );
        println!("|---|---|---|---|---|---|");
        let identity = run(runtime, &events, None);
        assert_eq!(identity.wire, plain);
        let base = p50_p99(&identity.per_event);
        let (id_heap, id_rss) = memory_in_child(None, items);
        println!(
            "| identity | 1.000 ({plain} B) | {:.1} / {:.1} µs | {:.1} ms | {:.1} KiB (the whole stream) | {:.1} KiB |",
            base.0,
            base.1,
            identity.total.as_secs_f64() * 1e3 / (plain as f64 / 1e6),
            id_heap / 1024.0,
            id_rss / 1024.0
        );
        for (index, setting) in settings.iter().enumerate() {
            if setting.scan != scan {
                continue;
            }
            let result = run(runtime, &events, Some(setting));
            let times = p50_p99(&result.per_event);
            let (heap, rss) = memory_in_child(Some(index), items);
            println!(
                "| {} | {:.3} ({} B) | {:.1} / {:.1} µs (+{:.1} / +{:.1}) | {:.1} ms | +{:.1} KiB | +{:.1} KiB |",
                setting.name,
                result.wire as f64 / plain as f64,
                result.wire,
                times.0,
                times.1,
                times.0 - base.0,
                times.1 - base.1,
                result.total.as_secs_f64() * 1e3 / (plain as f64 / 1e6),
                (heap - id_heap) / 1024.0,
                (rss - id_rss) / 1024.0,
            );
        }
    }
}

/// The instant the latency runs measure from (server and client are one process).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_since_epoch() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap()
}

/// Serves event streams at 1 event/ms through a layer compressing with `compression`, on
/// 127.0.0.1 with `TCP_NODELAY`. Returns the address.
async fn latency_server(compression: Compression, items: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = SseLayer::new()
        .no_heartbeat()
        .no_retry()
        .compress(compression);
    let service = layer.layer(service_fn(
        move |_: Request<hyper::body::Incoming>| async move {
            let (mut tx, mut response) = tower_sse_test_support::loopback::sse_channel();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_millis(1));
                for n in 0..LATENCY_N {
                    interval.tick().await;
                    if tx
                        .send_data(event(n, items, micros_since_epoch()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/event-stream"),
            );
            Ok::<_, Infallible>(response)
        },
    ));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            stream.set_nodelay(true).unwrap();
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One stream from `addr`, asking for `coding`: the latency of every event in microseconds, the
/// bytes received and the bytes they decoded to.
async fn latency_run(
    addr: std::net::SocketAddr,
    coding: Option<Coding>,
) -> (Vec<u64>, usize, usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .uri("/events")
        .header(header::HOST, "127.0.0.1")
        .header(header::ACCEPT, "text/event-stream")
        .header(
            header::ACCEPT_ENCODING,
            coding.map_or("identity", Coding::as_str),
        )
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap()),
        coding.map(Coding::as_str)
    );
    let mut body = response.into_body();
    let mut decoder = Decoder::new(coding.map(Coding::as_str));
    let mut scanned = 0;
    let mut latencies = Vec::with_capacity(LATENCY_N);
    let mut wire = 0;
    while latencies.len() < LATENCY_N {
        let frame = body.frame().await.expect("stream ended early").unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        wire += data.len();
        let decoded = decoder.feed(&data);
        let now = micros_since_epoch();
        while let Some(end) = memchr::memmem::find(&decoded[scanned..], b"\n\n") {
            let event = &decoded[scanned..scanned + end];
            scanned += end + 2;
            let at =
                memchr::memmem::find(event, b"\"ts_us\":").expect("an event without ts_us") + 8;
            let digits = event[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let sent: u64 = std::str::from_utf8(&event[at..at + digits])
                .unwrap()
                .parse()
                .unwrap();
            latencies.push(now.saturating_sub(sent - TS_BASE_US));
        }
    }
    (latencies, wire, scanned)
}

fn percentile_us(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Latency per event on loopback at 1 event/ms: identity and each coding's default, at once.
fn latency_tables(runtime: &tokio::runtime::Runtime) {
    let codings: [Option<Coding>; 4] = [
        None,
        Some(Coding::Gzip),
        Some(Coding::Br),
        Some(Coding::Zstd),
    ];
    for (label, items) in [
        ("~300 B JSON progress events", false),
        ("~1 KiB events", true),
    ] {
        let mut all: Vec<Vec<u64>> = vec![Vec::new(); codings.len()];
        let mut bytes = [(0, 0); 4];
        runtime.block_on(async {
            // One server per coding (each offers only its own), all up before the first run.
            let mut servers = Vec::new();
            for coding in codings {
                let compression = Compression::new().order(coding);
                servers.push(latency_server(compression, items).await);
            }
            for _ in 0..ROUNDS {
                // All four at once: a stall of the machine hits them alike.
                let runs = codings
                    .iter()
                    .zip(&servers)
                    .map(|(coding, server)| tokio::spawn(latency_run(*server, *coding)));
                for (i, run) in runs.collect::<Vec<_>>().into_iter().enumerate() {
                    let (latencies, wire, decoded) = run.await.unwrap();
                    all[i].extend(latencies);
                    bytes[i].0 += wire;
                    bytes[i].1 += decoded;
                }
            }
        });
        println!(
            "\n{label}, loopback, 1 event/ms, {ROUNDS} rounds of {LATENCY_N} events, the four \
             streams at once\n"
        );
        println!(
            "| coding (default settings) | wire / decoded | p50 | p90 | p99 | max | added p50 / p90 / p99 |"
        );
        println!("|---|---|---|---|---|---|---|");
        let mut base = [0; 3];
        for (i, coding) in codings.iter().enumerate() {
            let mut sorted = all[i].clone();
            sorted.sort_unstable();
            let p = [0.5, 0.9, 0.99].map(|p| percentile_us(&sorted, p));
            if coding.is_none() {
                base = p;
            }
            let added = |k: usize| p[k] as i64 - base[k] as i64;
            println!(
                "| {} | {:.3} | {} µs | {} µs | {} µs | {} µs | {:+} / {:+} / {:+} µs |",
                coding.map_or("identity", Coding::as_str),
                bytes[i].0 as f64 / bytes[i].1 as f64,
                p[0],
                p[1],
                p[2],
                sorted.last().unwrap(),
                added(0),
                added(1),
                added(2),
            );
        }
    }
}

/// The `brotli` crate's encoder with its hasher parameters set directly (`params.hasher`, which
/// `Brotli` does not expose), to see whether any setting keeps its state within 64 KiB with a
/// useful ratio: state per stream (bytes allocated through Rust's allocator by 100 encoders that
/// each encoded and flushed 32 events), wire / identity and CPU per MB at one flush per event.
fn br_hashers() {
    use brotli::enc::StandardAlloc;
    use brotli::enc::backward_references::BrotliEncoderMode;
    use brotli::enc::encode::{
        BrotliEncoderOperation, BrotliEncoderParameter, BrotliEncoderStateStruct,
    };

    type State = Box<BrotliEncoderStateStruct<StandardAlloc>>;
    /// (quality, lgwin, (bucket_bits, block_bits, hash_len) or the crate's choice).
    type Config = (u32, u32, Option<(i32, i32, i32)>);
    fn new(config: Config) -> State {
        let mut state = Box::new(BrotliEncoderStateStruct::new(StandardAlloc::default()));
        state.set_parameter(BrotliEncoderParameter::BROTLI_PARAM_QUALITY, config.0);
        state.set_parameter(BrotliEncoderParameter::BROTLI_PARAM_LGWIN, config.1);
        state.set_parameter(
            BrotliEncoderParameter::BROTLI_PARAM_MODE,
            BrotliEncoderMode::BROTLI_MODE_TEXT as u32,
        );
        if let Some((bucket_bits, block_bits, hash_len)) = config.2 {
            state.params.hasher.bucket_bits = bucket_bits;
            state.params.hasher.block_bits = block_bits;
            state.params.hasher.hash_len = hash_len;
        }
        state
    }
    /// Encodes `input` and flushes: the bytes written.
    fn flush(state: &mut State, input: &[u8], buffer: &mut [u8]) -> usize {
        let mut wire = 0;
        let (mut available_in, mut input_offset) = (input.len(), 0);
        for operation in [
            BrotliEncoderOperation::BROTLI_OPERATION_PROCESS,
            BrotliEncoderOperation::BROTLI_OPERATION_FLUSH,
        ] {
            loop {
                let (mut available_out, mut output_offset) = (buffer.len(), 0);
                assert!(state.compress_stream(
                    operation,
                    &mut available_in,
                    input,
                    &mut input_offset,
                    &mut available_out,
                    buffer,
                    &mut output_offset,
                    &mut None,
                    &mut |_, _, _, _| (),
                ));
                wire += output_offset;
                if available_in == 0 && !state.has_more_output() {
                    break;
                }
            }
        }
        wire
    }

    let events = events(N, false);
    let plain: usize = events.iter().map(Bytes::len).sum();
    let mut buffer = vec![0; 4096];
    println!("\n`brotli` crate, hasher set directly, ~300 B events, one flush per event\n");
    println!(
        "| quality | lgwin | hasher (bucket, block, hash_len) | wire / identity | CPU per MB | state per stream |"
    );
    println!("|---|---|---|---|---|---|");
    let mut configs: Vec<Config> = (0..=4).map(|q| (q, 12, None)).collect();
    configs.push((5, 12, None));
    for q in [5, 7] {
        for hasher in [(9, 3, 5), (10, 2, 5), (11, 1, 5), (12, 1, 5)] {
            configs.push((q, 12, Some(hasher)));
        }
        configs.push((q, 16, Some((11, 2, 5))));
    }
    for config in configs {
        // Quality 5 with the crate's own hasher holds tens of MiB: fewer of those.
        let count = if config.2.is_none() && config.0 >= 5 {
            4
        } else {
            100
        };
        let before = ALLOCATOR.allocated();
        let held: Vec<State> = (0..count)
            .map(|_| {
                let mut state = new(config);
                for event in &events[..EVENTS_PER_STREAM] {
                    flush(&mut state, event, &mut buffer);
                }
                state
            })
            .collect();
        let state = (ALLOCATOR.allocated() - before) as f64 / f64::from(count);
        drop(held);
        let mut encoder = new(config);
        let start = Instant::now();
        let wire: usize = events
            .iter()
            .map(|event| flush(&mut encoder, event, &mut buffer))
            .sum();
        let cpu = start.elapsed().as_secs_f64() * 1e3 / (plain as f64 / 1e6);
        println!(
            "| {} | {} | {} | {:.3} | {cpu:.1} ms | {:.1} KiB |",
            config.0,
            config.1,
            config
                .2
                .map_or_else(|| "the crate's".to_owned(), |h| format!("{h:?}")),
            wire as f64 / plain as f64,
            state / 1024.0
        );
    }
}

fn main() {
    let settings = settings();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--memory") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let setting = args[at + 1].parse::<usize>().ok().map(|i| &settings[i]);
        let events = events(EVENTS_PER_STREAM, args[at + 2] == "1k");
        let (heap, rss) = memory(&runtime, &events, setting);
        println!("{heap} {rss}");
        return;
    }
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|at| args[at + 1].clone());
    if only.as_deref() == Some("br-hashers") {
        br_hashers();
        return;
    }
    if only.as_deref() == Some("scan") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        ratio_tables(&runtime, &settings, true);
        return;
    }
    if only.as_deref() != Some("latency") {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        ratio_tables(&runtime, &settings, false);
    }
    if only.as_deref() != Some("ratio") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        latency_tables(&runtime);
    }
}
