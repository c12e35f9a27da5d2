//! Framing-scanner throughput, against a bare `memchr2` pass over the same bytes.
//!
//! Run with: `cargo bench --features __internals --bench scanner` (short: add
//! `-- --warm-up-time 1 --measurement-time 3`).
//!
//! The scanner is `pub(crate)`; this bench reaches it through `tower_sse::fuzz_api`, which the
//! hidden, unstable feature `__internals` compiles (the bench's `required-features`): a thin
//! wrapper around the crate's own scanner, nothing copied.
//!
//! Inputs are streams of equal-sized events (`id: NNNNNN` + one `data:` line + a blank line),
//! with LF or CRLF line endings, 256 KiB long (4 KiB for 1-byte frames), fed to one scanner in
//! frames of 1 B, 64 B, 1 KiB, 16 KiB or 64 KiB. The "speed of light" is `memchr2_iter(b'\r',
//! b'\n', ..)` over the whole input: finding every line ending and nothing more. After the
//! criterion run, a table prints each case's median throughput and its ratio to that baseline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, Throughput};

use tower_sse::fuzz_api::Scanner;
use tower_sse_test_support::bench_summary;

/// Bytes of one input stream.
const INPUT: usize = 256 * 1024;
/// Bytes of the input fed in 1-byte frames.
const SMALL_INPUT: usize = 4 * 1024;
const EVENT_SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")];
const FRAMES: [(usize, &str); 4] = [
    (64, "64B"),
    (1024, "1KiB"),
    (16 * 1024, "16KiB"),
    (64 * 1024, "64KiB"),
];

/// `total` bytes of events of `event` bytes each: `id: NNNNNN`, `data: xxx…`, a blank line.
fn stream(event: usize, crlf: bool, total: usize) -> Vec<u8> {
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    // `id: NNNNNN` (10) + eol + `data: ` (6) + payload + eol + eol.
    let payload = event - 16 - 3 * eol.len();
    let mut out = Vec::with_capacity(total + event);
    let mut id = 0u32;
    while out.len() < total {
        out.extend_from_slice(format!("id: {:06}", id % 1_000_000).as_bytes());
        out.extend_from_slice(eol);
        out.extend_from_slice(b"data: ");
        out.extend((0..payload).map(|i| b'a' + (i % 26) as u8));
        for _ in 0..2 {
            out.extend_from_slice(eol);
        }
        id += 1;
    }
    out.truncate(total);
    out
}

/// Feeds `input` to a fresh scanner in `frame`-byte frames; returns the events it completed.
fn scan(input: &[u8], frame: usize) -> u32 {
    let mut scanner = Scanner::new();
    let mut events = 0u32;
    for chunk in input.chunks(frame) {
        events += scanner.feed(black_box(chunk)).events;
    }
    events
}

fn line_endings(input: &[u8]) -> usize {
    memchr::memchr2_iter(b'\r', b'\n', input).count()
}

fn benches(c: &mut Criterion) {
    for (event, event_name) in EVENT_SIZES {
        for crlf in [false, true] {
            let input = stream(event, crlf, INPUT);
            let expected = input.len() / event;
            assert_eq!(
                scan(&input, 1024) as usize,
                expected,
                "{event_name} crlf={crlf}"
            );
            let ending = if crlf { "crlf" } else { "lf" };
            let mut group = c.benchmark_group(format!("scanner_{event_name}_{ending}"));
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_function("memchr2", |b| b.iter(|| line_endings(black_box(&input))));
            for (frame, frame_name) in FRAMES {
                group.bench_function(format!("frame_{frame_name}"), |b| {
                    b.iter(|| scan(black_box(&input), frame));
                });
            }
            group.finish();
        }
    }
    // One-byte frames: the worst case of per-frame overhead, on a small input.
    for crlf in [false, true] {
        let input = stream(64, crlf, SMALL_INPUT);
        let ending = if crlf { "crlf" } else { "lf" };
        let mut group = c.benchmark_group(format!("scanner_small_64B_{ending}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function("memchr2", |b| b.iter(|| line_endings(black_box(&input))));
        group.bench_function("frame_1B", |b| b.iter(|| scan(black_box(&input), 1)));
        group.bench_function("frame_64B", |b| b.iter(|| scan(black_box(&input), 64)));
        group.finish();
    }
}

fn main() {
    let started = SystemTime::now();
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();

    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (_, event_name) in EVENT_SIZES {
        for ending in ["lf", "crlf"] {
            let frames = FRAMES.iter().map(|(_, name)| format!("frame_{name}"));
            groups.push((format!("scanner_{event_name}_{ending}"), frames.collect()));
        }
    }
    for ending in ["lf", "crlf"] {
        groups.push((
            format!("scanner_small_64B_{ending}"),
            vec!["frame_1B".into(), "frame_64B".into()],
        ));
    }
    println!("\nscanner throughput (median), ratio to memchr2 over the same bytes, this run:");
    println!(
        "{:<26} {:<12} {:>10} {:>10} {:>8}",
        "input", "case", "GB/s", "memchr2", "ratio"
    );
    for (group, cases) in groups {
        let bytes = if group.contains("small") {
            SMALL_INPUT
        } else {
            INPUT
        };
        let Some(base) = bench_summary::median_ns(&group, "memchr2", started) else {
            continue;
        };
        let base_gbs = bytes as f64 / base;
        for case in cases {
            if let Some(ns) = bench_summary::median_ns(&group, &case, started) {
                let gbs = bytes as f64 / ns;
                println!(
                    "{group:<26} {case:<12} {gbs:>10.2} {base_gbs:>10.2} {:>8.3}",
                    gbs / base_gbs
                );
            }
        }
    }
}
