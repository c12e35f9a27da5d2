//! Test support shared by `tower-sse`'s unit tests, integration tests, benches and fuzz targets,
//! in one `publish = false` crate (like h2's `tests/h2-support`) instead of `#[path]` includes.
//!
//! - [`sse_parser`]: the reference SSE parser (the WHATWG rules) and its conformance cases;
//! - [`script_body`]: a mock inner body playing a script on the tokio clock;
//! - [`seed`]: the fuzz inputs' byte formats (also the format of `fuzz/seeds/<target>/*`);
//! - [`checks`]: the fuzz targets' checks, shared with `tests/fuzz_seeds.rs`;
//! - [`header_rules`]: assertions over an event stream's fixed response headers;
//! - [`bench_summary`]: the per-frame benches' inner body, stream timing, and criterion's
//!   results read back for their tables;
//! - [`grpc`] (feature `grpc`, on by default): a `String` codec for tonic;
//! - [`loopback`] (feature `loopback`, on by default): servers on `127.0.0.1:0`, raw and hyper
//!   clients, for the integration tests;
//! - [`dying_upstream`] (feature `loopback`): a raw upstream that honours `Last-Event-ID` and
//!   dies in a chosen way on each connection, for the resume tests;
//! - [`browser`] (feature `browser`, on by default): headless Chromium launched for DevTools,
//!   a Node with a global `WebSocket`, child processes killed on drop, for the browser tests
//!   (with `js/devtools.mjs`, their shared DevTools client);
//! - [`decode`] (feature `decoders`): an incremental gzip, br and zstd decoder, for the
//!   compression tests and bench;
//! - [`events_of`], [`split_wrapping`], [`eventually`], [`rss_bytes`]: small helpers.
//!
//! It depends on `tower-sse` itself (as h2-support depends on h2), with the hidden, unstable
//! `__internals` feature that exposes `tower_sse::fuzz_api`. A unit test inside `tower-sse`
//! links another copy of `tower-sse` through this crate: share only types that do not come from
//! `tower-sse` with unit tests (the parser, [`script_body`], the helpers).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod bench_summary;
#[cfg(feature = "browser")]
pub mod browser;
pub mod checks;
#[cfg(feature = "decoders")]
pub mod decode;
#[cfg(feature = "loopback")]
pub mod dying_upstream;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod header_rules;
#[cfg(feature = "loopback")]
pub mod loopback;
pub mod script_body;
pub mod seed;
pub mod sse_parser;

use std::time::Duration;

/// The `(type, data, last event id)` of every event parsed, owned.
pub fn events_of(parsed: &sse_parser::Parsed) -> Vec<(String, String, String)> {
    parsed
        .events
        .iter()
        .map(|e| {
            (
                e.event_type.clone(),
                e.data.clone(),
                e.last_event_id.clone(),
            )
        })
        .collect()
}

/// Splits `bytes` at `cuts`, each taken modulo the length + 1 (any `usize` a proptest draws is a
/// cut), sorted; repeated cuts make empty chunks. Unlike [`seed::split`], which clamps offsets
/// and borrows, for proptests.
pub fn split_wrapping(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(bytes[start..cut].to_vec());
        start = cut;
    }
    chunks.push(bytes[start..].to_vec());
    chunks
}

/// Polls `condition` every 5 ms (on the tokio clock) until it holds or `timeout` passes; returns
/// whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`), or `None` where
/// that file does not exist or says nothing usable (not Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
