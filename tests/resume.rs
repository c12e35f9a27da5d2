//! Upstream resume (I10): an interrupted upstream event stream is asked for again with
//! `Last-Event-ID` and spliced into the client's open response.
//!
//! - in-process upstreams (`service_fn`, scripted bodies, paused clock): the property test, the
//!   cases that are not resumed, the answers to the new request, the hold of incomplete events;
//! - loopback upstreams (a raw HTTP/1.1 server on `127.0.0.1:0` that honours `Last-Event-ID` and
//!   dies by TCP reset, a truncated body, a clean end, a 204 or by not listening), reached through
//!   hyper-util's client;
//! - the fleet: two upstream instances restarted in turn behind one client response.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use proptest::prelude::*;
use support::{BoxError, sse_parser};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_sse::resume::GiveUpReason;
use tower_sse::{CloseReason, ResumeLayer, ResumeMetrics, SseLayer};
use tower_sse_test_support::dying_upstream::{
    Plan, answer, dying_upstream, event, read_last_event_id,
};

type Chunk = Result<Frame<Bytes>, BoxError>;
/// The `Last-Event-ID` of each request an upstream saw.
type Seen = Arc<Mutex<Vec<Option<String>>>>;
type Scripted = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Chunk>>>;

/// An event-stream response whose body is `chunks`.
fn scripted(chunks: Vec<Chunk>) -> Response<Scripted> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(StreamBody::new(tokio_stream::iter(chunks)))
        .unwrap()
}

fn data(bytes: &[u8]) -> Chunk {
    Ok(Frame::data(Bytes::copy_from_slice(bytes)))
}

fn reset() -> Chunk {
    Err(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )))
}

/// Reads a body to its end: the bytes, and the error it ended with, if any.
async fn read_all<B>(mut body: B) -> (Vec<u8>, Option<String>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            Err(error) => return (out, Some(error.to_string())),
        }
    }
    (out, None)
}

fn last_event_id<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The last event id of each event a client parses from `bytes`.
fn ids_of(bytes: &[u8]) -> Vec<String> {
    sse_parser::parse(bytes)
        .events
        .into_iter()
        .map(|e| e.last_event_id)
        .collect()
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Property: any events with ids, any framing, any death points.

/// How one event is written.
#[derive(Debug, Clone)]
struct Style {
    ending: &'static str,
    comment: bool,
    retry: Option<u8>,
    event_type: bool,
    id_last: bool,
    lines: u8,
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![any_style(), plain_style()]
}

/// The commonest event: an `id`, maybe an `event` line, one `data` line, LF endings.
fn plain_style() -> impl Strategy<Value = Style> {
    any::<bool>().prop_map(|event_type| Style {
        ending: "\n",
        comment: false,
        retry: None,
        event_type,
        id_last: false,
        lines: 1,
    })
}

fn any_style() -> impl Strategy<Value = Style> {
    (
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        any::<bool>(),
        proptest::option::of(0_u8..50),
        any::<bool>(),
        any::<bool>(),
        1_u8..3,
    )
        .prop_map(
            |(ending, comment, retry, event_type, id_last, lines)| Style {
                ending,
                comment,
                retry,
                event_type,
                id_last,
                lines,
            },
        )
}

fn write_event(out: &mut Vec<u8>, id: usize, style: &Style) {
    let e = style.ending;
    let mut push = |line: String| {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(e.as_bytes());
    };
    if style.comment {
        push(format!(": before {id}"));
    }
    if !style.id_last {
        push(format!("id: {id}"));
    }
    if style.event_type {
        push(format!("event: t{id}"));
    }
    for line in 0..style.lines {
        push(format!("data: event {id} line {line}"));
    }
    if let Some(retry) = style.retry {
        push(format!("retry: {retry}"));
    }
    if style.id_last {
        push(format!("id: {id}"));
    }
    push(String::new());
}

/// The upstream's stream of the events after `after` (all when `None`), with a leading BOM.
fn stream_after(styles: &[Style], after: Option<usize>, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    for (index, style) in styles.iter().enumerate().skip(after.unwrap_or(0)) {
        write_event(&mut out, index + 1, style);
    }
    out
}

/// One upstream response of the script: where it dies, and how its bytes are framed.
#[derive(Debug, Clone)]
struct Death {
    at: usize,
    cuts: Vec<usize>,
    bom: bool,
    /// Answer 503 first (a failed attempt).
    unavailable: bool,
}

fn death() -> impl Strategy<Value = Death> {
    (
        any::<usize>(),
        proptest::collection::vec(any::<usize>(), 0..6),
        any::<bool>(),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(at, cuts, bom, unavailable)| Death {
            at,
            cuts,
            bom,
            unavailable,
        })
}

/// The frames of `bytes`: cut at `cuts` (wrapped to its length), or, when `whole`, after each
/// `\n\n`, one event per frame where the events end with LF (the layer's one-pass path).
fn frames(bytes: &[u8], cuts: &[usize], whole: bool) -> Vec<Chunk> {
    let whole_cuts: Vec<usize>;
    let cuts = if whole {
        whole_cuts = (2..bytes.len())
            .filter(|&at| bytes.get(at - 2..at) == Some(&b"\n\n"[..]))
            .collect();
        &whole_cuts
    } else {
        cuts
    };
    tower_sse_test_support::split_wrapping(bytes, cuts)
        .iter()
        .map(|c| data(c))
        .collect()
}

fn check_splice(
    styles: &[Style],
    deaths: &[Death],
    last_cuts: &[usize],
    whole: bool,
) -> Result<(), TestCaseError> {
    let expected = sse_parser::parse(&stream_after(styles, None, false));
    let script = Arc::new(Mutex::new((deaths.to_vec(), 0_usize)));
    let styles_owned = styles.to_vec();
    let upstream = tower::service_fn(move |request: Request<Empty<Bytes>>| {
        let script = Arc::clone(&script);
        let styles = styles_owned.clone();
        async move {
            let after = last_event_id(&request).map(|id| id.parse::<usize>().unwrap());
            let mut script = script.lock().unwrap();
            let (deaths, served) = &mut *script;
            let call = *served;
            *served += 1;
            let Some(death) = deaths.get_mut(call).cloned() else {
                let bytes = stream_after(&styles, after, false);
                return Ok::<_, Infallible>(scripted(frames(&bytes, last_cuts, whole)));
            };
            // A 503 to the first request would reach the client: only requests sent again get one.
            if death.unavailable && call > 0 {
                deaths[call].unavailable = false;
                *served -= 1;
                let mut response = scripted(Vec::new());
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return Ok(response);
            }
            let bytes = stream_after(&styles, after, death.bom);
            let at = death.at % (bytes.len() + 1);
            let mut chunks = frames(&bytes[..at], &death.cuts, whole);
            chunks.push(reset());
            Ok(scripted(chunks))
        }
    });
    let layer = ResumeLayer::new()
        .retry(Duration::from_millis(100))
        .resume_attempts(3);
    let metrics = layer.metrics_handle();
    let service = layer.layer(upstream);
    let (bytes, error) = paused_runtime().block_on(async move {
        let response = service.oneshot(Request::new(Empty::new())).await.unwrap();
        read_all(response.into_body()).await
    });
    prop_assert_eq!(error, None);
    let parsed = sse_parser::parse(&bytes);
    prop_assert_eq!(parsed.triples(), expected.triples());
    prop_assert_eq!(metrics.snapshot().gave_up_total(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// I10: whatever the events, their framing and where each upstream response dies, a client
    /// of an upstream that honours `Last-Event-ID` parses each event exactly once, in order.
    #[test]
    fn spliced_events_equal_the_upstreams_exactly_once(
        styles in proptest::collection::vec(style(), 1..8),
        deaths in proptest::collection::vec(death(), 0..5),
        last_cuts in proptest::collection::vec(any::<usize>(), 0..6),
        whole in any::<bool>(),
    ) {
        check_splice(&styles, &deaths, &last_cuts, whole)?;
    }
}

// ---------------------------------------------------------------------------------------------
// In-process cases.

/// An upstream that answers the calls in order with the given responses (then panics).
fn answers(
    responses: Vec<Response<Scripted>>,
) -> (
    impl Service<Request<Full<Bytes>>, Response = Response<Scripted>, Error = Infallible> + Clone,
    Seen,
) {
    let queue = Arc::new(Mutex::new(responses.into_iter()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let service = tower::service_fn(move |request: Request<Full<Bytes>>| {
        log.lock().unwrap().push(last_event_id(&request));
        let response = queue.lock().unwrap().next().expect("no more answers");
        async move { Ok::<_, Infallible>(response) }
    });
    (service, seen)
}

fn get() -> Request<Full<Bytes>> {
    Request::new(Full::default())
}

#[tokio::test(start_paused = true)]
async fn a_post_stream_that_dies_is_not_repeated() {
    let (upstream, seen) = answers(vec![scripted(vec![data(b"id: 1\ndata: a\n\n"), reset()])]);
    let service = ResumeLayer::new().layer(upstream);
    let request = Request::builder()
        .method(Method::POST)
        .body(Full::from("job"))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    assert_eq!(bytes, b"id: 1\ndata: a\n\n");
    assert!(error.is_some());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_get_with_a_body_is_not_repeated() {
    let (upstream, seen) = answers(vec![scripted(vec![data(b"id: 1\ndata: a\n\n"), reset()])]);
    let service = ResumeLayer::new().layer(upstream);
    let response = service
        .oneshot(Request::new(Full::from("x")))
        .await
        .unwrap();
    let (_, error) = read_all(response.into_body()).await;
    assert!(error.is_some());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_ids_is_not_resumed_once_events_were_forwarded() {
    let (upstream, seen) = answers(vec![scripted(vec![data(b"data: a\n\ndata: b"), reset()])]);
    let layer = ResumeLayer::new();
    let metrics = layer.metrics_handle();
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    // As without resume: the bytes, then the error.
    assert_eq!(bytes, b"data: a\n\ndata: b");
    assert!(error.is_some());
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(metrics.snapshot().gave_up(GiveUpReason::NoId), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_before_any_event_is_asked_for_again_with_the_clients_id() {
    let (upstream, seen) = answers(vec![
        scripted(vec![data(b": hello\n\ndata: a"), reset()]),
        scripted(vec![data(b"id: 8\ndata: b\n\n")]),
    ]);
    let service = ResumeLayer::new().layer(upstream);
    let request = Request::builder()
        .header("last-event-id", "7")
        .body(Full::default())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    assert_eq!(error, None);
    assert_eq!(bytes, b": hello\n\nid: 8\ndata: b\n\n");
    assert_eq!(
        *seen.lock().unwrap(),
        [Some("7".to_owned()), Some("7".to_owned())]
    );
}

#[tokio::test(start_paused = true)]
async fn the_clients_id_is_replaced_by_the_last_one_given() {
    let (upstream, seen) = answers(vec![
        scripted(vec![data(b"id: 8\ndata: a\n\nid: 9\ndata: b\n"), reset()]),
        scripted(vec![data(b"id: 9\ndata: b\n\n")]),
    ]);
    let service = ResumeLayer::new().layer(upstream);
    let request = Request::builder()
        .header("last-event-id", "7")
        .body(Full::default())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let (bytes, _) = read_all(response.into_body()).await;
    assert_eq!(bytes, b"id: 8\ndata: a\n\nid: 9\ndata: b\n\n");
    assert_eq!(seen.lock().unwrap()[1].as_deref(), Some("8"));
}

#[tokio::test(start_paused = true)]
async fn a_204_on_the_new_request_ends_the_stream_cleanly() {
    let mut stop = scripted(Vec::new());
    *stop.status_mut() = StatusCode::NO_CONTENT;
    let (upstream, seen) = answers(vec![
        scripted(vec![data(b"id: 1\ndata: a\n\n"), reset()]),
        stop,
    ]);
    let layer = ResumeLayer::new();
    let metrics = layer.metrics_handle();
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    assert_eq!(
        (bytes.as_slice(), error),
        (&b"id: 1\ndata: a\n\n"[..], None)
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(metrics.snapshot().gave_up(GiveUpReason::NoContent), 1);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_end_the_stream_cleanly_after_a_retry_line() {
    let unavailable = || {
        let mut response = scripted(Vec::new());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
    };
    let (upstream, seen) = answers(vec![
        scripted(vec![data(b"id: 1\ndata: a\n\n"), reset()]),
        unavailable(),
        unavailable(),
        unavailable(),
    ]);
    let layer = ResumeLayer::new().retry(Duration::from_secs(1)).jitter(0.0);
    let metrics = layer.metrics_handle();
    let started = tokio::time::Instant::now();
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    assert_eq!(error, None);
    assert_eq!(bytes, b"id: 1\ndata: a\n\nretry: 1000\n");
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.attempts, 3);
    assert_eq!(snapshot.gave_up(GiveUpReason::Attempts), 1);
}

#[tokio::test(start_paused = true)]
async fn the_upstreams_retry_value_sets_the_wait() {
    let (upstream, _) = answers(vec![
        scripted(vec![data(b"retry: 250\nid: 1\ndata: a\n\n"), reset()]),
        scripted(vec![data(b"id: 2\ndata: b\n\n")]),
    ]);
    let service = ResumeLayer::new().jitter(0.0).layer(upstream);
    let started = tokio::time::Instant::now();
    let response = service.oneshot(get()).await.unwrap();
    let (bytes, _) = read_all(response.into_body()).await;
    assert_eq!(bytes, b"retry: 250\nid: 1\ndata: a\n\nid: 2\ndata: b\n\n");
    assert_eq!(started.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn an_absurd_upstream_retry_value_is_clamped_to_max_retry() {
    for (layer, wait) in [
        (ResumeLayer::new(), Duration::from_secs(30)),
        (
            ResumeLayer::new().max_retry(Duration::from_secs(5)),
            Duration::from_secs(5),
        ),
        (ResumeLayer::new().max_retry(Duration::ZERO), Duration::ZERO),
    ] {
        let (upstream, seen) = answers(vec![
            scripted(vec![data(b"retry: 999999999\nid: 1\ndata: a\n\n"), reset()]),
            scripted(vec![data(b"id: 2\ndata: b\n\n")]),
        ]);
        let started = tokio::time::Instant::now();
        let response = layer
            .jitter(0.0)
            .layer(upstream)
            .oneshot(get())
            .await
            .unwrap();
        let (bytes, error) = read_all(response.into_body()).await;
        assert_eq!(error, None);
        assert_eq!(ids_of(&bytes), ["1", "2"]);
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(started.elapsed(), wait);
    }
}

#[tokio::test(start_paused = true)]
async fn the_layers_own_retry_is_not_clamped_by_max_retry() {
    let (upstream, _) = answers(vec![
        scripted(vec![data(b"id: 1\ndata: a\n\n"), reset()]),
        scripted(vec![data(b"id: 2\ndata: b\n\n")]),
    ]);
    let layer = ResumeLayer::new()
        .retry(Duration::from_secs(60))
        .max_retry(Duration::from_secs(1))
        .jitter(0.0);
    let started = tokio::time::Instant::now();
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    let (bytes, _) = read_all(response.into_body()).await;
    assert_eq!(ids_of(&bytes), ["1", "2"]);
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn the_attempts_retry_line_uses_the_clamped_wait() {
    let unavailable = || {
        let mut response = scripted(Vec::new());
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    };
    let (upstream, _) = answers(vec![
        scripted(vec![data(b"retry: 86400000\nid: 1\ndata: a\n\n"), reset()]),
        unavailable(),
    ]);
    let layer = ResumeLayer::new()
        .max_retry(Duration::from_secs(2))
        .resume_attempts(1)
        .jitter(0.0);
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    assert_eq!(error, None);
    assert!(bytes.ends_with(b"\n\nretry: 2000\n"), "{bytes:?}");
}

#[tokio::test(start_paused = true)]
async fn resumes_stop_after_max_resumes_and_the_stream_ends_as_without_the_layer() {
    for max in [0_u32, 1, 3] {
        // Every response gives one event, then fails.
        let responses = (1..=5)
            .map(|id| {
                scripted(vec![
                    data(format!("id: {id}\ndata: e\n\n").as_bytes()),
                    reset(),
                ])
            })
            .collect();
        let (upstream, seen) = answers(responses);
        let layer = ResumeLayer::new()
            .max_resumes(max)
            .retry(Duration::from_millis(10));
        let metrics = layer.metrics_handle();
        let response = layer.layer(upstream).oneshot(get()).await.unwrap();
        let (bytes, error) = read_all(response.into_body()).await;
        let n = usize::try_from(max).unwrap() + 1;
        // The last upstream's failure reaches the client, as it would without resume.
        assert!(error.is_some(), "max {max}");
        let want: Vec<String> = (1..=n).map(|id| id.to_string()).collect();
        assert_eq!(ids_of(&bytes), want, "max {max}");
        assert_eq!(seen.lock().unwrap().len(), n);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.resumed, u64::from(max));
        assert_eq!(snapshot.interrupted, u64::from(max) + 1);
        assert_eq!(snapshot.gave_up(GiveUpReason::MaxResumes), 1);
        assert_eq!(snapshot.gave_up_total(), 1);
        assert_eq!(snapshot.ended_streams(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_clean_end_is_resumed_only_with_resume_on_end() {
    let twice = || {
        answers(vec![
            scripted(vec![data(b"id: 1\ndata: a\n\n")]),
            scripted(vec![data(b"id: 2\ndata: b\n\n")]),
            {
                let mut stop = scripted(Vec::new());
                *stop.status_mut() = StatusCode::NO_CONTENT;
                stop
            },
        ])
    };
    let (upstream, seen) = twice();
    let response = ResumeLayer::new()
        .layer(upstream)
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(
        read_all(response.into_body()).await.0,
        b"id: 1\ndata: a\n\n"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (upstream, seen) = twice();
    let response = ResumeLayer::new()
        .resume_on_end(true)
        .layer(upstream)
        .oneshot(get())
        .await
        .unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    assert_eq!(bytes, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n");
    assert_eq!(error, None);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_event_past_max_event_gives_up_resume_and_passes_through() {
    let (upstream, seen) = answers(vec![scripted(vec![
        data(b"id: 1\ndata: a\n\nid: 2\ndata: 0123"),
        data(b"456789"),
        data(b"abc\n\n"),
        reset(),
    ])]);
    let layer = ResumeLayer::new().max_event(16);
    let metrics = layer.metrics_handle();
    let response = layer.layer(upstream).oneshot(get()).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "id: 1\ndata: a\n\n");
    // 14 bytes held, then 20: past the bound, everything goes on.
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "id: 2\ndata: 0123456789");
    let (rest, error) = read_all(body).await;
    assert_eq!(rest, b"abc\n\n");
    assert!(error.is_some());
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(metrics.snapshot().gave_up(GiveUpReason::TooLarge), 1);
    // The stream went on without resume: no close reason of the layer.
    assert_eq!(metrics.snapshot().ended_streams(), 0);
}

#[tokio::test(start_paused = true)]
async fn frames_at_event_boundaries_pass_at_once_and_others_wait_for_their_event() {
    let (tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(8);
    let response = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap();
    let upstream = tower::service_fn({
        let response = Arc::new(Mutex::new(Some(response)));
        move |_: Request<Full<Bytes>>| {
            let response = response.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(response) }
        }
    });
    let response = ResumeLayer::new()
        .layer(upstream)
        .oneshot(get())
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut tx = tx;
    tx.send_data(Bytes::from_static(b"id: 1\ndata: a\n\n"))
        .await
        .unwrap();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, "id: 1\ndata: a\n\n");
    tx.send_data(Bytes::from_static(b"id: 2\ndata: b\n\nid: 3\nda"))
        .await
        .unwrap();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, "id: 2\ndata: b\n\n");
    tx.send_data(Bytes::from_static(b"ta: c\n")).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_secs(1), body.frame()).await;
    assert!(pending.is_err(), "an incomplete event is held");
    tx.send_data(Bytes::from_static(b"\n")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, "id: 3\ndata: c\n\n");
}

/// An outer `SseLayer` counts a stream that resume gave up on as `ResumeGivenUp`, not as an
/// upstream end; a stream resume went on with ends as usual.
#[tokio::test(start_paused = true)]
async fn an_outer_sse_layer_counts_a_given_up_resume_as_its_close_reason() {
    let unavailable = || {
        let mut response = scripted(Vec::new());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
    };
    let (upstream, _) = answers(vec![
        // Given up: one interruption, then every attempt fails.
        scripted(vec![data(b"id: 1\ndata: a\n\n"), reset()]),
        unavailable(),
        unavailable(),
        // Resumed once, then a clean end (not resumed without `resume_on_end`).
        scripted(vec![data(b"id: 1\ndata: a\n\n"), reset()]),
        scripted(vec![data(b"id: 2\ndata: b\n\n")]),
    ]);
    let sse = SseLayer::new().no_heartbeat().no_retry();
    let metrics = sse.metrics_handle();
    let service = ServiceBuilder::new()
        .layer(sse)
        .layer(
            ResumeLayer::new()
                .retry(Duration::from_secs(1))
                .jitter(0.0)
                .resume_attempts(2),
        )
        .service(upstream);
    let response = service.clone().oneshot(get()).await.unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    assert_eq!(error, None);
    assert_eq!(bytes, b"id: 1\ndata: a\n\nretry: 1000\n");
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.closed(CloseReason::ResumeGivenUp), 1);
    assert_eq!(snapshot.closed(CloseReason::UpstreamEnded), 0);

    let response = service.oneshot(get()).await.unwrap();
    let (bytes, _) = read_all(response.into_body()).await;
    assert_eq!(bytes, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n");
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.closed(CloseReason::ResumeGivenUp), 1);
    assert_eq!(snapshot.closed(CloseReason::UpstreamEnded), 1);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_of_an_outer_sse_layer_flow_while_resume_waits() {
    let (upstream, _) = answers(vec![
        scripted(vec![data(b"id: 1\ndata: a\n\n"), reset()]),
        scripted(vec![data(b"id: 2\ndata: b\n\n")]),
    ]);
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().heartbeat(Duration::from_secs(1)).no_retry())
        .layer(
            ResumeLayer::new()
                .retry(Duration::from_millis(3500))
                .jitter(0.0),
        )
        .service(upstream);
    let response = service.oneshot(get()).await.unwrap();
    let (bytes, error) = read_all(response.into_body()).await;
    assert_eq!(error, None);
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(text, "id: 1\ndata: a\n\n:\n:\n:\nid: 2\ndata: b\n\n");
}

#[tokio::test(start_paused = true)]
async fn responses_that_are_not_event_streams_pass_through() {
    let upstream = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::from("{}")))
    });
    let response = ResumeLayer::new()
        .layer(upstream)
        .oneshot(get())
        .await
        .unwrap();
    let body = response.into_body();
    assert_eq!(body.size_hint().exact(), Some(2));
    assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
}

// ---------------------------------------------------------------------------------------------
// Loopback upstreams.

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

fn hyper_client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

fn request_to(addr: SocketAddr) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(format!("http://{addr}/events"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Empty::new())
        .unwrap()
}

/// The event ids a client parsed from `bytes`, and checks each event's data.
fn ids(bytes: &[u8]) -> Vec<usize> {
    sse_parser::parse(bytes)
        .events
        .iter()
        .map(|e| {
            let id: usize = e.last_event_id.parse().unwrap();
            assert_eq!(e.data, format!("event {id}"));
            id
        })
        .collect()
}

fn quick() -> ResumeLayer {
    ResumeLayer::new()
        .retry(Duration::from_millis(30))
        .jitter(0.5)
}

#[tokio::test]
async fn loopback_upstream_dying_in_every_way_is_resumed_on_one_response() {
    let (addr, seen) = dying_upstream(vec![
        Plan::ResetAtBoundary(3),
        Plan::ResetMidEvent(2),
        Plan::TruncatedMidLine(2),
        Plan::Unavailable,
        Plan::End(2),
        Plan::NoContent,
    ])
    .await;
    let layer = quick().resume_on_end(true);
    let metrics = layer.metrics_handle();
    let service = layer.layer(hyper_client());
    let response = service.oneshot(request_to(addr)).await.unwrap();
    let (bytes, error) =
        tokio::time::timeout(Duration::from_secs(5), read_all(response.into_body()))
            .await
            .unwrap();
    assert_eq!(error, None);
    assert_eq!(ids(&bytes), (1..=9).collect::<Vec<_>>());
    assert_eq!(
        *seen.lock().unwrap(),
        [None, Some("3"), Some("5"), Some("7"), Some("7"), Some("9")]
            .map(|id| id.map(str::to_owned))
    );
    let snapshot = metrics.snapshot();
    assert_eq!((snapshot.attempts, snapshot.resumed), (5, 3));
    assert_eq!(snapshot.gave_up(GiveUpReason::NoContent), 1);
}

#[tokio::test]
async fn loopback_clean_end_without_resume_on_end_ends_the_clients_stream() {
    let (addr, seen) = dying_upstream(vec![Plan::ResetMidEvent(1), Plan::End(2)]).await;
    let service = quick().layer(hyper_client());
    let response = service.oneshot(request_to(addr)).await.unwrap();
    let (bytes, error) =
        tokio::time::timeout(Duration::from_secs(5), read_all(response.into_body()))
            .await
            .unwrap();
    assert_eq!(error, None);
    assert_eq!(ids(&bytes), [1, 2, 3]);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn loopback_upstream_down_ends_the_stream_after_the_attempts_with_a_retry_line() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // One connection served, then the listener is gone: connections are refused.
    let serving = {
        let seen = Arc::clone(&seen);
        async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(listener);
            answer(stream, Plan::ResetAtBoundary(2), &seen)
                .await
                .unwrap();
        }
    };
    tokio::spawn(serving);
    let layer = quick();
    let metrics = layer.metrics_handle();
    let service = layer.layer(hyper_client());
    let response = service.oneshot(request_to(addr)).await.unwrap();
    let (bytes, error) =
        tokio::time::timeout(Duration::from_secs(5), read_all(response.into_body()))
            .await
            .unwrap();
    assert_eq!(error, None);
    assert_eq!(ids(&bytes), [1, 2]);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.starts_with(&format!("{}{}retry: ", event(1), event(2))),
        "{text:?}"
    );
    assert!(text.ends_with('\n'));
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.attempts, 3);
    assert_eq!(snapshot.gave_up(GiveUpReason::Attempts), 1);
}

// ---------------------------------------------------------------------------------------------
// The fleet: two instances, restarted in turn, behind one client response.

/// One upstream instance: serves events 1.. honouring `Last-Event-ID`, one every 10 ms, until
/// it is stopped (its connections reset, its port closed).
struct Instance {
    addr: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Instance {
    async fn start(addr: SocketAddr, total: usize) -> Self {
        let listener = bind_again(addr).await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut stopped_accept = stopped.clone();
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    _ = stopped_accept.changed() => return,
                };
                let stopped = stopped.clone();
                tokio::spawn(stream_events(stream, total, stopped));
            }
        });
        Self {
            addr,
            stop: Some(stop),
        }
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cannot bind {addr} again");
}

async fn stream_events(
    mut stream: TcpStream,
    total: usize,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Some(id) = read_last_event_id(&mut stream).await? else {
        return Ok(());
    };
    let next = id.map_or(1, |id| id.parse::<usize>().unwrap() + 1);
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await?;
    for id in next..=total {
        // Each event in two chunks, so that a stop may fall inside one.
        let text = event(id);
        let (a, b) = text.split_at(text.len() / 2);
        for part in [a, b] {
            if *stopped.borrow() {
                stream.set_zero_linger()?;
                return Ok(());
            }
            stream
                .write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                .await?;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = stopped.changed() => {}
            }
        }
    }
    stream.write_all(b"0\r\n\r\n").await?;
    stream.shutdown().await
}

#[tokio::test]
async fn fleet_rolling_restart_loses_and_duplicates_nothing_and_the_client_never_reconnects() {
    const TOTAL: usize = 120;
    let mut a = Instance::start("127.0.0.1:0".parse().unwrap(), TOTAL).await;
    let mut b = Instance::start("127.0.0.1:0".parse().unwrap(), TOTAL).await;
    let addrs = [a.addr, b.addr];

    // The upstream service: round-robin between the two instances.
    let next = Arc::new(AtomicUsize::new(0));
    let client = hyper_client();
    let upstream = tower::service_fn(move |mut request: Request<Empty<Bytes>>| {
        let addr = addrs[next.fetch_add(1, Ordering::SeqCst) % 2];
        *request.uri_mut() = format!("http://{addr}/events").parse().unwrap();
        let mut client = client.clone();
        async move { client.call(request).await }
    });

    // The front: SseLayer outside ResumeLayer, served on loopback; count its requests.
    let front_requests = Arc::new(AtomicUsize::new(0));
    let resume = ResumeLayer::new()
        .retry(Duration::from_millis(20))
        .resume_attempts(5)
        .resume_on_end(false);
    let metrics: ResumeMetrics = resume.metrics_handle();
    let front = ServiceBuilder::new()
        .layer(
            SseLayer::new()
                .no_retry()
                .heartbeat(Duration::from_millis(50)),
        )
        .layer(resume)
        .service(upstream);
    let counter = Arc::clone(&front_requests);
    let front = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let (parts, _) = request.into_parts();
        let request = Request::from_parts(parts, Empty::<Bytes>::new());
        front.clone().oneshot(request)
    });
    let front_addr = support::serve(front).await;

    let reader = tokio::spawn(async move {
        let client = support::client(false);
        let request = Request::builder()
            .uri(format!("http://{front_addr}/events"))
            .header(header::ACCEPT, "text/event-stream")
            .body(Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        read_all(response.into_body()).await
    });

    // Rolling restart: a, then b, twice, while the stream runs (~1.2 s for 120 events).
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        a.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        a = Instance::start(a.addr, TOTAL).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        b.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        b = Instance::start(b.addr, TOTAL).await;
    }

    let (bytes, error) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(error, None);
    assert_eq!(ids(&bytes), (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(
        front_requests.load(Ordering::SeqCst),
        1,
        "the client never reconnected"
    );
    let snapshot = metrics.snapshot();
    assert!(snapshot.resumed >= 2, "{snapshot:?}");
    assert_eq!(snapshot.gave_up_total(), 0, "{snapshot:?}");
}
