//! What the per-frame benches share (`benches/body.rs`, `benches/resume.rs`): the inner body
//! [`Frames`], [`drain`] and [`run`] to time whole streams, and [`median_ns`] to read back what
//! criterion measured in this run, so that a bench can print ratios to its own baseline measured
//! in the same process (`benches/scanner.rs` too).

use std::fmt::Debug;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::Buf;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

/// Where criterion writes its results: `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion` or
/// `target/criterion` of the workspace (cargo runs benches from the package root, which is the
/// workspace root for `tower-sse`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    PathBuf::from("target/criterion")
}

/// The median time of one iteration of `group/function`, in ns, if criterion measured it in this
/// run (its estimates file was written after `since`).
pub fn median_ns(group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    point_estimate(&text, "\"median\"")
}

/// The `point_estimate` of the statistic `key` in criterion's `estimates.json`.
fn point_estimate(json: &str, key: &str) -> Option<f64> {
    let after_key = json.get(json.find(key)? + key.len()..)?;
    let field = "\"point_estimate\":";
    let value = after_key.get(after_key.find(field)? + field.len()..)?;
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(value.len());
    value.get(..end)?.trim().parse().ok()
}

/// A body of `left` data frames, each a clone of one static `frame` (no allocation per frame):
/// the inner body of the per-frame benches.
#[derive(Debug)]
pub struct Frames {
    left: usize,
    frame: &'static [u8],
}

impl Frames {
    /// A body of `left` frames of `frame`.
    pub const fn new(left: usize, frame: &'static [u8]) -> Self {
        Self { left, frame }
    }
}

impl http_body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            self.frame,
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

/// Sends `request` through `service` and polls the response body to its end, each frame passed
/// through [`black_box`] and dropped as it arrives; returns the frames and the data bytes seen.
///
/// # Panics
///
/// When the service or the body fails (a bench has nothing better to do).
pub async fn drain<S, R, B>(service: S, request: Request<R>) -> (usize, usize)
where
    S: Service<Request<R>, Response = Response<B>>,
    S::Error: Debug,
    B: Body + Unpin,
    B::Error: Debug,
{
    let mut body = service.oneshot(request).await.unwrap().into_body();
    let (mut frames, mut bytes) = (0, 0);
    while let Some(frame) = body.frame().await {
        let frame = black_box(frame.unwrap());
        frames += 1;
        bytes += frame.data_ref().map_or(0, Buf::remaining);
    }
    (frames, bytes)
}

/// Times `iters` streams on `runtime`: each a [`drain`] of a fresh `request()` through a clone of
/// `service` (for criterion's `iter_custom`).
pub fn run<S, R, B>(
    runtime: &Runtime,
    service: &S,
    request: fn() -> Request<R>,
    iters: u64,
) -> Duration
where
    S: Service<Request<R>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: Body + Unpin,
    B::Error: Debug,
{
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(drain(service.clone(), request()).await);
        }
        start.elapsed()
    })
}
