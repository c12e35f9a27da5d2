//! Per-frame cost of [`SseBody`](tower_sse::SseBody), through the public API, against the same
//! inner body polled alone.
//!
//! Run with: `cargo bench --bench body` (short: `cargo bench --bench body -- --warm-up-time 1
//! --measurement-time 3`).
//!
//! One iteration = one request through `oneshot` on a `service_fn` whose response body yields
//! `N` = 10,000 data frames of one 100-byte event each, then polling that body to its end (each
//! frame dropped as it arrives). The baseline is the same `service_fn` without the layer, so the
//! difference divided by `N` is the layer's cost per frame (with its once-per-stream setup spread
//! over the frames: a few hundred ns / 10,000). Cases:
//!
//! - `sse`: `text/event-stream`, baseline / `SseLayer::new()` / `SseLayer::new().slow_client(..)`
//!   (the pump task runs on the same current-thread runtime as the consumer); every frame is
//!   ready at once, so the layer hands them on merged (a few 32 KiB frames: one copy per byte,
//!   far fewer frames for hyper to write);
//! - `sse_paced`: the events come from a producer task through a one-slot channel, one at a
//!   time (the producer yields after each): mostly nothing is ready to merge, and the layer pays
//!   one extra poll of the inner body per frame to find that out;
//! - `json`: `application/json`, baseline / `SseLayer::new()` (passthrough).
//!
//! After the criterion run, a table prints ns per frame and the overhead per frame.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::convert::Infallible;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use futures_util::StreamExt;
use http::{Request, Response, header};
use http_body::Frame;
use http_body_util::{Empty, StreamBody};
use tokio_stream::wrappers::ReceiverStream;
use tower::{Layer, Service, service_fn};
use tower_sse::{SlowClient, SseLayer};
use tower_sse_test_support::bench_summary::{self, Frames, drain, run};

/// Frames per stream.
const N: usize = 10_000;
/// One event of exactly 100 bytes.
const EVENT: &[u8; 100] =
    b"data: {\"seq\":1,\"price\":101.25,\"symbol\":\"ACME\",\"side\":\"buy\",\"qty\":300,\"venue\":\"XNYS\",\"pad\":\"xxxxx\"}\n\n";

/// The inner service: a response of `N` frames with the given content type.
fn inner(
    content_type: &'static str,
) -> impl Service<Request<Empty<Bytes>>, Response = Response<Frames>, Error = Infallible> + Clone {
    service_fn(move |_: Request<Empty<Bytes>>| async move {
        let mut response = Response::new(Frames::new(N, EVENT));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        Ok::<_, Infallible>(response)
    })
}

/// A body fed one frame at a time by a producer task through a channel of one slot, the
/// producer yielding after each send: the consumer mostly finds one frame ready, then `Pending`.
type Paced = StreamBody<
    futures_util::stream::Map<ReceiverStream<Bytes>, fn(Bytes) -> Result<Frame<Bytes>, Infallible>>,
>;

/// The inner service with a [`Paced`] body of `N` events.
fn paced_inner()
-> impl Service<Request<Empty<Bytes>>, Response = Response<Paced>, Error = Infallible> + Clone {
    service_fn(|_: Request<Empty<Bytes>>| async {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..N {
                if tx.send(Bytes::from_static(EVENT)).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        let frames: fn(Bytes) -> Result<Frame<Bytes>, Infallible> = |data| Ok(Frame::data(data));
        let mut response = Response::new(StreamBody::new(ReceiverStream::new(rx).map(frames)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        Ok::<_, Infallible>(response)
    })
}

fn request() -> Request<Empty<Bytes>> {
    Request::builder()
        .header(header::ACCEPT, "text/event-stream")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Empty::new())
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The bodies are what the benchmark says they are: all frames ready at once are merged
    // into a few large ones; paced frames pass one by one (+ the `retry:` line).
    let sse = SseLayer::new().layer(inner("text/event-stream"));
    let (frames, bytes) = runtime.block_on(drain(sse.clone(), request()));
    assert!(frames < N / 100 && bytes == N * EVENT.len() + "retry: 3000\n".len());
    let paced = SseLayer::new().layer(paced_inner());
    let (frames, bytes) = runtime.block_on(drain(paced.clone(), request()));
    assert!(frames > N / 2 && bytes == N * EVENT.len() + "retry: 3000\n".len());
    let buffered = SseLayer::new()
        .slow_client(SlowClient::new())
        .layer(inner("text/event-stream"));
    let json = SseLayer::new().layer(inner("application/json"));
    assert_eq!(runtime.block_on(drain(json.clone(), request())).0, N);

    let mut group = c.benchmark_group("body_sse");
    group.throughput(Throughput::Elements(N as u64));
    let bare = inner("text/event-stream");
    group.bench_function("inner", |b| {
        b.iter_custom(|i| run(&runtime, &bare, request, i))
    });
    group.bench_function("layer", |b| {
        b.iter_custom(|i| run(&runtime, &sse, request, i))
    });
    group.bench_function("layer_slow_client", |b| {
        b.iter_custom(|i| run(&runtime, &buffered, request, i));
    });
    group.finish();

    let mut group = c.benchmark_group("body_sse_paced");
    group.throughput(Throughput::Elements(N as u64));
    let bare = paced_inner();
    group.bench_function("inner", |b| {
        b.iter_custom(|i| run(&runtime, &bare, request, i))
    });
    group.bench_function("layer", |b| {
        b.iter_custom(|i| run(&runtime, &paced, request, i))
    });
    group.finish();

    let mut group = c.benchmark_group("body_json");
    group.throughput(Throughput::Elements(N as u64));
    let bare = inner("application/json");
    group.bench_function("inner", |b| {
        b.iter_custom(|i| run(&runtime, &bare, request, i))
    });
    group.bench_function("layer", |b| {
        b.iter_custom(|i| run(&runtime, &json, request, i))
    });
    group.finish();
}

fn main() {
    let started = SystemTime::now();
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();

    println!(
        "\nper-frame cost (median of criterion's samples), this run; N = {N} frames of 100 B:"
    );
    println!(
        "{:<10} {:<18} {:>12} {:>16} {:>8}",
        "group", "case", "ns/frame", "overhead ns/fr", "ratio"
    );
    for (group, cases) in [
        ("body_sse", &["layer", "layer_slow_client"][..]),
        ("body_sse_paced", &["layer"][..]),
        ("body_json", &["layer"][..]),
    ] {
        let Some(base) = bench_summary::median_ns(group, "inner", started) else {
            continue;
        };
        let base = base / N as f64;
        println!(
            "{group:<10} {:<18} {base:>12.2} {:>16} {:>8}",
            "inner", "-", "1.000"
        );
        for case in cases {
            if let Some(ns) = bench_summary::median_ns(group, case, started) {
                let ns = ns / N as f64;
                println!(
                    "{group:<10} {case:<18} {ns:>12.2} {:>16.2} {:>8.3}",
                    ns - base,
                    ns / base
                );
            }
        }
    }
}
