//! The fuzz targets' checks, shared with the stable test `tests/fuzz_seeds.rs`. Every function
//! accepts any input and panics only when an invariant of `docs/rules.md` is broken.
//!
//! - Over the crate's internals (`tower_sse::fuzz_api`): [`check_scanner`] (the framing scanner
//!   against the reference parser) and [`check_headers`] (the header-fixing function).
//! - Through the public API: a real `SseLayer` around a `service_fn` whose event stream is fed
//!   from a channel, on a paused current-thread Tokio runtime that is built once per thread and
//!   reused for every input ([`check_body`], [`check_scanner_layer`], [`check_headers_layer`]).

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame};
use http_body_util::channel::{Channel, Sender};
use tokio::runtime::Runtime;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_sse::fuzz_api::{
    LineEnd, ResumeTracker, Scanner, TrackerFeed, bom_prefix, fix_event_stream_headers,
};
use tower_sse::{CloseReason, SlowClient, SlowClientPolicy, SseLayer, SseMetrics, SseShutdown};

use crate::header_rules;
use crate::seed::split;
use crate::seed::{BodyInput, Options, Policy, RETRY_MS, ScannerInput, Step};
use crate::sse_parser::{Parsed, Parser, parse};

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// With the slow-client buffer, heartbeats are `:` + this byte, which the checks replace in the
/// upstream's bytes: the buffer merges frames into copies, so its heartbeats are told apart by
/// content.
const HEARTBEAT_MARK: u8 = 0x01;

/// The `scanner` input through the public layer: the stream is sent frame by frame with 15 ms of
/// silence after each and a 10 ms heartbeat, so that a heartbeat is due after every frame and
/// injected wherever the scanner allows; the `retry:` hint goes first when `inject_first`. The
/// body checks of [`check_body`] apply (events, injected lines only at line starts, bytes
/// forwarded at once, clean end).
pub fn check_scanner_layer(input: &ScannerInput) {
    check_body(&BodyInput::from_scanner(input));
}

/// The `headers` input through the public layer: a `service_fn` answers `200` with the valid
/// pairs (and `Content-Type: text/event-stream` unless they carry a `Content-Type`).
///
/// Asserts that an event stream's headers are fixed (see [`header_rules::assert_fixed`]), that a
/// response the layer does not take for an event stream keeps its headers exactly (I9), that two
/// nested layers give what one gives, and that the layer over its own output changes nothing.
pub fn check_headers_layer(pairs: &[(Vec<u8>, Vec<u8>)], version: u8) {
    let version = header_rules::version(version);
    let mut app = header_rules::header_map(pairs);
    if !app.contains_key(header::CONTENT_TYPE) {
        app.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
    }
    let once = respond(&app, version, false);
    if tower_sse::is_event_stream(&app) {
        header_rules::assert_fixed(&app, &once, version);
    } else {
        assert_eq!(once, app, "I9: a response that is not SSE was changed");
    }
    let nested = respond(&app, version, true);
    assert_eq!(nested, once, "two nested layers differ from one");
    let again = respond(&once, version, false);
    assert_eq!(again, once, "the layer changed its own output's headers");
}

/// The response headers of a layer (two nested ones when `nested`) over a service answering
/// `200` with `headers` and an empty body.
fn respond(headers: &HeaderMap, version: Version, nested: bool) -> HeaderMap {
    let headers = headers.clone();
    let app = tower::service_fn(move |_: Request<()>| {
        let mut response = Response::new(http_body_util::Empty::<Bytes>::new());
        response.headers_mut().clone_from(&headers);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    if nested {
        call(
            ServiceBuilder::new()
                .layer(SseLayer::new())
                .layer(SseLayer::new())
                .service(app),
            version,
        )
    } else {
        call(
            ServiceBuilder::new().layer(SseLayer::new()).service(app),
            version,
        )
    }
}

/// Calls `service` with a request for an event stream over `version` and returns the response
/// headers. The response future must be ready at once (nothing in it waits).
fn call<S, B>(service: S, version: Version) -> HeaderMap
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
{
    let mut request = Request::new(());
    *request.version_mut() = version;
    request.headers_mut().insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    let future = pin!(service.oneshot(request));
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(response)) => {
            assert_eq!(response.status(), StatusCode::OK, "the status changed");
            response.headers().clone()
        }
        Poll::Pending => panic!("the response future is pending"),
    }
}

/// Plays a `body` script: the upstream sends data frames into a channel, the clock moves, the
/// client stops reading for a while, a drain starts; on a paused current-thread runtime, with
/// the layer configured by the input's options. With the slow-client buffer, heartbeats are
/// `:` + `HEARTBEAT_MARK` and the upstream's bytes never carry that byte, so that the client
/// tells the layer's lines from the upstream's in the copies the buffer makes.
///
/// Asserts, as the client reads:
/// - every frame the layer adds is whole comment or `retry:` lines (digits only, I5), no blank
///   line (I3), written at a line start, ending with CR when the client's last byte is a CR
///   (I2); a heartbeat comes only after a heartbeat interval without output (I8c);
/// - without the slow-client buffer, whenever the body has nothing more to give, every byte the
///   upstream sent has been handed on (I6), minus a leading BOM when the layer wrote first (I4);
///   with it, what was handed on is a prefix of what was sent;
/// - the slow-client buffer holds at most its limit plus the largest frame (I7);
///
/// and at the end:
/// - the body ends with `None`, never an error, stays ended, and counts one close (I8);
/// - when the upstream ended it: the same bytes, events and retry values, plus the layer's
///   opening `retry:` (I1, I8: no blank line appended); when the layer ended it: a prefix of
///   the events, and no task is left (I8); under `DropOldest` and `LatestPerType`, the events
///   are a subsequence (the latest of each type kept under `LatestPerType`).
pub fn check_body(input: &BodyInput) {
    run(input);
}

thread_local! {
    /// The paused current-thread runtime the body checks run on, reused across inputs: building
    /// one per input dominated the fuzz targets' time. Taken out while an input plays, so that a
    /// check that panics (caught by `tests/fuzz_seeds.rs`) drops it with whatever task it left.
    static RUNTIME: Cell<Option<Runtime>> = const { Cell::new(None) };
}

fn run(input: &BodyInput) {
    let runtime = RUNTIME.take().unwrap_or_else(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a paused current-thread runtime")
    });
    runtime.block_on(play(input));
    RUNTIME.set(Some(runtime));
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn layer(options: &Options, metrics: &SseMetrics, shutdown: &SseShutdown) -> SseLayer {
    let mut layer = SseLayer::new()
        .metrics(metrics.clone())
        .no_retry()
        .no_heartbeat();
    if options.retry {
        layer = layer.retry(millis(RETRY_MS));
    }
    if options.heartbeat_ms > 0 {
        layer = layer.heartbeat(millis(options.heartbeat_ms));
    }
    if options.slow.is_some() {
        #[allow(clippy::expect_used)]
        let marked = layer
            .try_heartbeat_comment(char::from(HEARTBEAT_MARK).to_string())
            .expect("a comment without CR or LF");
        layer = marked;
    }
    if options.initial_comment {
        #[allow(clippy::expect_used)]
        let with_comment = layer
            .try_initial_comment(" hi")
            .expect("a comment without CR or LF");
        layer = with_comment;
    }
    if let Some(window) = options.shutdown {
        layer = layer
            .shutdown(shutdown.clone())
            .drain_window(millis(window));
    }
    if options.idle_timeout_ms > 0 {
        layer = layer.idle_timeout(millis(options.idle_timeout_ms));
    }
    if options.max_lifetime_ms > 0 {
        layer = layer
            .max_lifetime(millis(options.max_lifetime_ms))
            .lifetime_jitter(0.0)
            .close_grace(millis(options.grace_ms));
    }
    layer
}

/// What the upstream side and the client share.
struct Upstream {
    /// `None` while a send is under way, and after the end.
    tx: Option<Sender<Bytes, Infallible>>,
    /// Every byte the channel accepted, in order.
    sent: Vec<u8>,
    /// The frames the channel accepted: frames the client gets from them are the upstream's.
    chunks: Vec<Bytes>,
    largest: usize,
    /// The client reads nothing before this.
    resume_at: Instant,
}

/// What the client has read.
struct Client {
    started: Instant,
    /// Every byte, as the client reads it.
    out: Vec<u8>,
    /// The upstream's bytes among them (the output minus the layer's lines).
    upstream: Vec<u8>,
    /// The first frame was the layer's: a leading BOM of the upstream's is removed (I4).
    strip: Option<bool>,
    frames: usize,
    last_frame_at: Option<Instant>,
    /// Where in `Upstream::chunks` the last upstream frame came from.
    cursor: usize,
}

/// Whether `bytes` are whole lines the layer may write: comments and `retry:` with digits,
/// each ending with one CR or LF, no blank line. Returns whether they are comments only.
fn layer_lines(bytes: &[u8]) -> Option<bool> {
    let mut rest = bytes;
    let mut comments_only = true;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\r' || b == b'\n')?;
        let (line, tail) = rest.split_at(end);
        rest = tail.get(1..).unwrap_or_default();
        if line.first() == Some(&b':') {
            continue;
        }
        let digits = line.strip_prefix(b"retry: ")?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        comments_only = false;
    }
    Some(comments_only)
}

/// `sent` as the client must read it: minus a leading BOM when the layer wrote first, and minus
/// a BOM prefix held until the next byte tells whether it is one.
fn normalized(sent: &[u8], strip: bool, ended: bool) -> &[u8] {
    if !strip {
        return sent;
    }
    if let Some(rest) = sent.strip_prefix(BOM) {
        return rest;
    }
    if !ended && !sent.is_empty() && BOM.starts_with(sent) {
        return &[];
    }
    sent
}

impl Client {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            out: Vec::new(),
            upstream: Vec::new(),
            strip: None,
            frames: 0,
            last_frame_at: None,
            cursor: 0,
        }
    }

    /// Whether `data` lies inside one of the frames the upstream sent (they are handed on
    /// without copying).
    fn is_the_upstreams(&mut self, data: &Bytes, upstream: &Upstream) -> bool {
        let start = data.as_ptr() as usize;
        let end = start + data.len();
        let found = upstream
            .chunks
            .iter()
            .enumerate()
            .skip(self.cursor)
            .find(|(_, chunk)| {
                let from = chunk.as_ptr() as usize;
                !chunk.is_empty() && from <= start && end <= from + chunk.len()
            });
        match found {
            Some((index, _)) => {
                self.cursor = index;
                true
            }
            None => false,
        }
    }

    /// Whether `data` is the layer's (`Some(comments only)`) or the upstream's (`None`).
    ///
    /// Frames the upstream sent reach the client as they are (found by address), or, with the
    /// slow-client buffer, merged into copies; a BOM prefix the layer held comes back as a copy
    /// too (it starts with `0xEF`). The layer's frames are whole comment or `retry:` lines: its
    /// opening lines come first; with the buffer, heartbeats carry `HEARTBEAT_MARK` (which the
    /// upstream's bytes never do there), and a `retry:` hint that is not the upstream's next
    /// bytes is the layer's final one.
    fn layer_lines_of(
        &mut self,
        data: &Bytes,
        upstream: &Upstream,
        options: &Options,
        first: bool,
    ) -> Option<bool> {
        if self.is_the_upstreams(data, upstream) {
            return None;
        }
        let lines = layer_lines(data);
        if options.slow.is_none() || lines.is_none() {
            return lines;
        }
        if first && (options.retry || options.initial_comment) {
            return lines;
        }
        if data.contains(&HEARTBEAT_MARK) {
            return lines;
        }
        let strip = self.strip.unwrap_or(false);
        let next = normalized(&upstream.sent, strip, false)
            .get(self.upstream.len()..)
            .unwrap_or_default();
        if lines == Some(false) && !next.starts_with(data) {
            return lines;
        }
        None
    }

    fn on_data(&mut self, data: &Bytes, upstream: &Upstream, options: &Options) {
        if data.is_empty() {
            return;
        }
        let now = Instant::now();
        let first = self.frames == 0;
        self.frames += 1;
        let layer = self.layer_lines_of(data, upstream, options, first);
        if self.strip.is_none() {
            self.strip = Some(layer.is_some());
        }
        if let Some(comments_only) = layer {
            let view = self.out.strip_prefix(BOM).unwrap_or(&self.out);
            let at_line_start = view.is_empty() || matches!(view.last(), Some(b'\n' | b'\r'));
            assert!(
                at_line_start,
                "I2: the layer wrote {data:?} mid-line after {:?}",
                String::from_utf8_lossy(&self.out)
            );
            if view.last() == Some(&b'\r') {
                assert_eq!(
                    data.last(),
                    Some(&b'\r'),
                    "I2: after a CR the layer wrote {data:?}, which does not end with CR"
                );
            }
            let opening = first && (options.retry || options.initial_comment);
            if comments_only && !opening {
                let since = now - self.last_frame_at.unwrap_or(self.started);
                assert!(
                    options.heartbeat_ms > 0 && since >= millis(options.heartbeat_ms),
                    "I8c: a heartbeat after {since:?} of output silence"
                );
            }
        } else {
            self.upstream.extend_from_slice(data);
        }
        self.out.extend_from_slice(data);
        self.last_frame_at = Some(now);
    }

    /// The body has nothing more to give now.
    fn on_pending(&self, upstream: &Upstream, options: &Options) {
        let strip = self.strip.unwrap_or(false);
        let sent = normalized(&upstream.sent, strip, false);
        match options.slow {
            // I6: every frame the upstream sent is handed on in the same poll.
            None => assert!(
                self.upstream == sent,
                "I6: the body is pending with upstream bytes held back: sent {:?}, handed on {:?}",
                String::from_utf8_lossy(sent),
                String::from_utf8_lossy(&self.upstream)
            ),
            Some(slow) if slow.policy == Policy::Disconnect => assert!(
                sent.starts_with(&self.upstream),
                "the buffered stream is not a prefix of the upstream: sent {:?}, handed on {:?}",
                String::from_utf8_lossy(sent),
                String::from_utf8_lossy(&self.upstream)
            ),
            Some(_) => {}
        }
    }
}

/// I7: the slow-client buffer holds at most its limit plus one frame.
fn check_queue(metrics: &SseMetrics, options: &Options, upstream: &Upstream) {
    let queued = metrics.snapshot().queued_bytes;
    let limit = options.slow.map_or(0, |slow| slow.max_buffer) + upstream.largest;
    assert!(
        queued <= limit as u64,
        "I7: {queued} bytes queued, more than the limit plus the largest frame ({limit})"
    );
}

async fn play(input: &BodyInput) {
    let options = &input.options;
    let metrics = SseMetrics::new();
    let shutdown = SseShutdown::new();
    let (tx, channel) = Channel::<Bytes, Infallible>::new(1);
    let mut slot = Some(channel);
    let mut app_headers = HeaderMap::new();
    app_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    let headers = app_headers.clone();
    let app = tower::service_fn(move |_: Request<()>| {
        let body = slot.take().unwrap_or_else(|| Channel::new(1).1);
        let mut response = Response::new(body);
        response.headers_mut().clone_from(&headers);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mut request = Request::new(());
    request.headers_mut().insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    let layer = layer(options, &metrics, &shutdown);
    let result = match options.slow {
        None => {
            ServiceBuilder::new()
                .layer(layer)
                .service(app)
                .oneshot(request)
                .await
        }
        Some(slow) => {
            let policy = match slow.policy {
                Policy::Disconnect => SlowClientPolicy::Disconnect,
                Policy::DropOldest => SlowClientPolicy::DropOldest,
                Policy::LatestPerType => SlowClientPolicy::LatestPerType,
            };
            let slow = SlowClient::new()
                .max_buffer(slow.max_buffer)
                .timeout(millis(slow.timeout_ms))
                .policy(policy);
            ServiceBuilder::new()
                .layer(layer.slow_client(slow))
                .service(app)
                .oneshot(request)
                .await
        }
    };
    let Ok(response) = result;
    assert_eq!(response.status(), StatusCode::OK);
    header_rules::assert_fixed(&app_headers, response.headers(), Version::HTTP_11);

    let state = RefCell::new(Upstream {
        tx: Some(tx),
        sent: Vec::new(),
        chunks: Vec::new(),
        largest: 0,
        resume_at: Instant::now(),
    });
    let mut script_time = Duration::ZERO;
    for step in &input.steps {
        if let Step::Wait(ms) | Step::Stall(ms) = step {
            script_time += millis(u64::from(*ms));
        }
    }

    let driver = async {
        for step in &input.steps {
            match step {
                Step::Data(bytes) => {
                    let Some(mut tx) = state.borrow_mut().tx.take() else {
                        continue;
                    };
                    let chunk: Bytes = if options.slow.is_some() {
                        let unmark = |&b: &u8| if b == HEARTBEAT_MARK { b + 1 } else { b };
                        bytes.iter().map(unmark).collect()
                    } else {
                        Bytes::copy_from_slice(bytes)
                    };
                    if tx.send_data(chunk.clone()).await.is_ok() {
                        let mut state = state.borrow_mut();
                        state.sent.extend_from_slice(&chunk);
                        state.largest = state.largest.max(chunk.len());
                        state.chunks.push(chunk);
                        state.tx = Some(tx);
                    } else {
                        // The layer dropped the inner body: only once the stream is over.
                        assert_eq!(
                            metrics.snapshot().closed_total(),
                            1,
                            "the inner body was dropped while the stream goes on"
                        );
                    }
                }
                Step::Wait(ms) => tokio::time::sleep(millis(u64::from(*ms))).await,
                Step::Stall(ms) => {
                    let mut state = state.borrow_mut();
                    let until = Instant::now() + millis(u64::from(*ms));
                    state.resume_at = state.resume_at.max(until);
                }
                Step::Shutdown => shutdown.drain(),
            }
            check_queue(&metrics, options, &state.borrow());
        }
        // The upstream ends.
        state.borrow_mut().tx = None;
    };

    let client = async {
        let mut body = pin!(response.into_body());
        let mut client = Client::new();
        loop {
            loop {
                let resume_at = state.borrow().resume_at;
                if Instant::now() >= resume_at {
                    break;
                }
                tokio::time::sleep_until(resume_at).await;
            }
            let polled = poll_fn(|cx| {
                let polled = body.as_mut().poll_frame(cx);
                if polled.is_pending() {
                    let state = state.borrow();
                    client.on_pending(&state, options);
                    check_queue(&metrics, options, &state);
                }
                polled
            })
            .await;
            match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let state = state.borrow();
                        client.on_data(&data, &state, options);
                        check_queue(&metrics, options, &state);
                    }
                    Err(frame) => panic!("a frame the upstream never sent: {frame:?}"),
                },
                Some(Err(error)) => panic!("I8: the body ended with an error: {error}"),
                None => break,
            }
        }
        assert!(body.is_end_stream(), "I8: ended but not is_end_stream");
        let again = poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        assert!(again.is_none(), "I8: the body goes on after its end");
        let snapshot = metrics.snapshot();
        if options.slow.is_none() && snapshot.closed(CloseReason::UpstreamEnded) == 0 {
            // The layer ended the stream: the inner body is gone at once.
            if let Some(tx) = state.borrow_mut().tx.as_mut() {
                assert!(
                    tx.try_send(Frame::data(Bytes::new())).is_err(),
                    "I8: the layer ended the stream but kept the inner body"
                );
            }
        }
        client
    };

    let limit = script_time + Duration::from_secs(60);
    let Ok(((), client)) =
        tokio::time::timeout(limit, async { tokio::join!(driver, client) }).await
    else {
        panic!("the stream did not end within {limit:?} after the script's start");
    };
    // Let a pump task see the end.
    tokio::time::sleep(millis(1)).await;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0,
        "I8: a task outlives the stream"
    );
    check_end(&client, &state.borrow(), &metrics, options);
}

/// The checks once the stream is over.
fn check_end(client: &Client, upstream: &Upstream, metrics: &SseMetrics, options: &Options) {
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.open_streams, 0, "a stream is still counted open");
    assert_eq!(snapshot.closed_total(), 1, "not one close counted");
    assert_eq!(snapshot.queued_bytes, 0, "bytes still counted as queued");
    let Some(reason) = CloseReason::ALL
        .into_iter()
        .find(|reason| snapshot.closed(*reason) == 1)
    else {
        panic!("no close reason counted");
    };
    assert!(
        !matches!(reason, CloseReason::ClientGone | CloseReason::UpstreamError),
        "closed as {reason}"
    );
    let upstream_ended = reason == CloseReason::UpstreamEnded;
    let strip = client.strip.unwrap_or(false);
    let expected = parse(&upstream.sent);
    let got = parse(&client.out);
    let dropped = snapshot.events_dropped + snapshot.events_coalesced > 0
        || options
            .slow
            .is_some_and(|slow| slow.policy != Policy::Disconnect);

    if dropped {
        check_subsequence(&got, &expected);
        if upstream_ended
            && options
                .slow
                .is_some_and(|slow| slow.policy == Policy::LatestPerType)
        {
            check_latest_per_type(&got, &expected);
        }
        return;
    }

    let sent = normalized(&upstream.sent, strip, true);
    if upstream_ended {
        assert!(
            client.upstream == sent,
            "I1: the upstream's bytes changed: sent {:?}, handed on {:?}",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(&client.upstream)
        );
        assert_eq!(
            got.triples(),
            expected.triples(),
            "I1: events changed; output {:?}",
            String::from_utf8_lossy(&client.out)
        );
    } else {
        let held = normalized(&upstream.sent, strip, false);
        assert!(
            sent.starts_with(&client.upstream) || held.starts_with(&client.upstream),
            "the upstream's bytes changed before the layer ended the stream: sent {:?}, handed on {:?}",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(&client.upstream)
        );
        assert!(
            expected.triples().starts_with(&got.triples()),
            "I1/I8: the events are no prefix of the upstream's; output {:?}",
            String::from_utf8_lossy(&client.out)
        );
    }
    check_retries(&got.retries, &expected.retries, options, upstream_ended);
}

/// The retry values: the layer's opening hint, the upstream's (all of them, or a prefix when the
/// layer ended the stream), and possibly the layer's final hint (within the drain jitter).
fn check_retries(got: &[u64], upstream: &[u64], options: &Options, upstream_ended: bool) {
    let mut rest = got;
    if options.retry {
        assert_eq!(rest.first(), Some(&RETRY_MS), "no opening retry: {got:?}");
        rest = rest.get(1..).unwrap_or_default();
    }
    if upstream_ended {
        assert_eq!(rest, upstream, "retry values changed: {got:?}");
        return;
    }
    let final_hint = |value: &u64| options.retry && (2400..=3600).contains(value);
    let ok = upstream.starts_with(rest)
        || rest
            .split_last()
            .is_some_and(|(last, init)| final_hint(last) && upstream.starts_with(init));
    assert!(
        ok,
        "retry values {got:?} against the upstream's {upstream:?}"
    );
}

fn pairs(parsed: &Parsed) -> Vec<(&str, &str)> {
    parsed
        .events
        .iter()
        .map(|e| (e.event_type.as_str(), e.data.as_str()))
        .collect()
}

/// Events a slow-client policy thinned out: each is one of the upstream's, in order (types and
/// data; ids may differ, since a dropped event may have set one).
fn check_subsequence(got: &Parsed, expected: &Parsed) {
    let expected = pairs(expected);
    let mut rest = expected.iter();
    for event in pairs(got) {
        assert!(
            rest.any(|e| *e == event),
            "an event the upstream never sent, or out of order: {event:?} in {expected:?}"
        );
    }
}

/// `LatestPerType` never discards the newest event of a type.
fn check_latest_per_type(got: &Parsed, expected: &Parsed) {
    let got = pairs(got);
    let expected = pairs(expected);
    for (index, event) in expected.iter().enumerate() {
        let newest = !expected
            .get(index + 1..)
            .unwrap_or_default()
            .iter()
            .any(|later| later.0 == event.0);
        if newest {
            assert!(
                got.iter().rev().find(|e| e.0 == event.0) == Some(event),
                "the newest {:?} event {event:?} was discarded: got {got:?}",
                event.0
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Over the crate's internals (`tower_sse::fuzz_api`).

const HEARTBEAT_LF: &[u8] = b":hb\n";
const HEARTBEAT_CR: &[u8] = b":hb\r";

/// Feeds `data`, split at `cuts` (clamped, any order), to the framing scanner and injects a
/// heartbeat wherever it allows one: before the first frame when `inject_first` (as a `retry:`
/// hint is), and after every frame, like the layer when the upstream pauses there.
///
/// Asserts that:
/// - a line is injected exactly where the client is at a line start (I2), ending with CR exactly
///   when the client's last byte is a CR (whose LF may follow), never mid-line or inside a BOM;
/// - the output minus the injected lines is the input, minus a leading BOM when something was
///   injected before it (I4, I8b), and it parses to the same events and retry values (I1);
/// - after every frame, the scanner's event count equals the reference parser's, and where the
///   scanner reports an event boundary a blank line would dispatch nothing; its reported
///   boundary offsets follow a line-ending byte.
pub fn check_scanner(data: &[u8], cuts: &[usize], inject_first: bool) {
    let mut relay = Relay::default();
    if inject_first {
        relay.inject();
    }
    for frame in split(data, cuts) {
        relay.feed(frame);
        relay.inject();
    }
    let held = relay.scanner.finish();
    relay.push_upstream(bom_prefix(held));

    let expected_upstream = match data.strip_prefix(BOM) {
        Some(rest) if relay.injected_first => rest,
        _ => data,
    };
    assert_eq!(
        relay.upstream, expected_upstream,
        "the output minus the injected lines is not the input"
    );
    let expected = parse(data);
    let got = parse(&relay.out);
    assert_eq!(
        got.triples(),
        expected.triples(),
        "I1: events changed; output {:?}",
        String::from_utf8_lossy(&relay.out)
    );
    assert_eq!(got.retries, expected.retries, "retry values changed");
    assert_eq!(
        relay.counted,
        expected.events.len() as u64,
        "the scanner counted another number of events"
    );
}

/// The resume layer's tracker over `data` split at `cuts` (through `tower_sse::fuzz_api`).
///
/// Asserts that, for every frame:
/// - when the one-pass path takes the frame, the line-by-line path, from the same state, gives
///   the same events, ends at an event boundary at the frame's end, skips and releases nothing,
///   and leaves the same last event id, `retry:` value and boundary flag;
/// - where the tracker says the client is at an event boundary, a `data: z` event written next
///   would be dispatched by the reference parser, carrying the tracker's last event id.
pub fn check_resume_tracker(data: &[u8], cuts: &[usize]) {
    // Ids of any length are kept, so that every last id can be compared.
    let mut tracker = ResumeTracker::new(usize::MAX);
    let mut seen = 0;
    for (n, frame) in split(data, cuts).into_iter().enumerate() {
        let mut one_pass = tracker.clone();
        let taken = one_pass.whole_events(frame);
        let feed = tracker.feed_lines(frame);
        if let Some(events) = taken {
            let expected = TrackerFeed {
                events,
                boundary: Some(frame.len()),
                ..TrackerFeed::default()
            };
            assert_eq!(feed, expected, "frame {n}: the two paths disagree");
            assert_eq!(one_pass.last_id(), tracker.last_id(), "frame {n}: last id");
            assert_eq!(one_pass.retry(), tracker.retry(), "frame {n}: retry");
            assert_eq!(one_pass.at_boundary(), tracker.at_boundary(), "frame {n}");
        }
        seen += frame.len();
        if tracker.at_boundary() {
            let prefix = &data[..seen];
            let mut more = prefix.to_vec();
            more.extend_from_slice(b"data: z\n\n");
            let (before, after) = (parse(prefix), parse(&more));
            assert_eq!(
                after.events.len(),
                before.events.len() + 1,
                "frame {n}: not at an event boundary"
            );
            let id = after.events.last().map(|event| event.last_event_id.clone());
            let tracked = match tracker.last_id() {
                Some(Ok(id)) => String::from_utf8_lossy(id).into_owned(),
                _ => String::new(),
            };
            assert_eq!(id.unwrap_or_default(), tracked, "frame {n}: last event id");
        }
    }
}

/// Builds a header map from the valid pairs of `pairs`, fixes it as an event stream's headers
/// for the HTTP version `version` stands for (0.9, 1.0, 1.1, 2, 3, modulo 5), twice, with the
/// crate's internal function.
///
/// Asserts that fixing never panics, is idempotent, and gives what
/// [`header_rules::assert_fixed`] requires.
pub fn check_headers(pairs: &[(Vec<u8>, Vec<u8>)], version: u8) {
    let version = header_rules::version(version);
    let before: HeaderMap = header_rules::header_map(pairs);
    let mut once = before.clone();
    fix_event_stream_headers(&mut once, version);
    header_rules::assert_fixed(&before, &once, version);
    let mut twice = once.clone();
    fix_event_stream_headers(&mut twice, version);
    assert_eq!(once, twice, "fixing the headers is not idempotent");
}

/// The scanner, the output as a client reads it, and what the checks need to know.
#[derive(Default)]
struct Relay {
    scanner: Scanner,
    /// Everything written: upstream bytes and injected lines.
    out: Vec<u8>,
    /// The upstream's bytes as written (the output minus the injected lines).
    upstream: Vec<u8>,
    /// Some upstream byte has been fed.
    upstream_started: bool,
    /// A line was injected before the upstream's first byte.
    injected_first: bool,
    /// The output holds a lone CR (a CR followed by anything but LF).
    lone_cr: bool,
    /// The reference parser over the upstream fed so far.
    parser: Parser,
    counted: u64,
    boundaries: Vec<usize>,
}

impl Relay {
    /// What the client has read so far, after the one BOM it skips at the stream start.
    fn view(&self) -> &[u8] {
        self.out.strip_prefix(BOM).unwrap_or(&self.out)
    }

    fn inject(&mut self) {
        let view = self.view();
        let at_line_start = view.is_empty() || matches!(view.last(), Some(b'\n' | b'\r'));
        let after_cr = view.last() == Some(&b'\r');
        // After a CR, a line goes in only once the stream has used a lone CR as a line ending
        // (a CR followed by anything but LF): otherwise it would split a CRLF (I2).
        let lone_cr_seen = after_cr && self.lone_cr;
        match self.scanner.injection() {
            None => assert!(
                !at_line_start || (after_cr && !lone_cr_seen),
                "a heartbeat is refused at a line start: {:?}",
                String::from_utf8_lossy(&self.out)
            ),
            Some(end) => {
                assert!(
                    at_line_start,
                    "I2: injection mid-line: {:?}",
                    String::from_utf8_lossy(&self.out)
                );
                assert!(
                    !after_cr || lone_cr_seen,
                    "I2: a line after a CR of a stream without lone CRs: {:?}",
                    String::from_utf8_lossy(&self.out)
                );
                assert_eq!(
                    end == LineEnd::Cr,
                    after_cr,
                    "I2: injected line ends with {end:?} after {:?}",
                    String::from_utf8_lossy(&self.out)
                );
                self.write(match end {
                    LineEnd::Lf => HEARTBEAT_LF,
                    LineEnd::Cr => HEARTBEAT_CR,
                });
                self.scanner.injected();
                if !self.upstream_started {
                    self.injected_first = true;
                }
            }
        }
    }

    fn feed(&mut self, frame: &[u8]) {
        let mut boundaries = std::mem::take(&mut self.boundaries);
        boundaries.clear();
        let feed = self
            .scanner
            .feed_with_boundaries(frame, |at| boundaries.push(at));
        self.counted += u64::from(feed.events);
        assert!(feed.release <= 2, "released {} BOM bytes", feed.release);
        let kept = frame.get(feed.skip..);
        assert!(kept.is_some(), "skip {} past the frame", feed.skip);
        assert!(
            feed.release == 0 || feed.skip == 0,
            "a frame both releases and skips BOM bytes"
        );
        let mut last = 0;
        for &at in &boundaries {
            assert!(
                at > last && matches!(frame.get(at - 1), Some(b'\r' | b'\n')),
                "boundary {at} of {boundaries:?} in {frame:?} follows no line ending"
            );
            last = at;
        }
        self.boundaries = boundaries;
        self.push_upstream(bom_prefix(feed.release));
        self.push_upstream(kept.unwrap_or_default());
        if !frame.is_empty() {
            self.upstream_started = true;
        }
        self.parser.feed(frame);

        assert_eq!(
            self.counted,
            self.parser.dispatched() as u64,
            "the scanner's event count is behind or ahead of the parser"
        );
        if self.scanner.at_event_boundary() {
            // Nothing is open: a blank line here would dispatch nothing.
            assert_eq!(
                self.parser.dispatches_if_fed(b"\n"),
                0,
                "an event boundary inside an event"
            );
        }
    }

    fn push_upstream(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.upstream.extend_from_slice(bytes);
    }

    /// Appends to the output, noting a CR followed by anything but LF: kept as a flag instead of
    /// scanning the output at every injection. (The output's pairs are the client's view's, plus
    /// pairs inside or after a leading BOM, which start with no CR.)
    fn write(&mut self, bytes: &[u8]) {
        let Some(&first) = bytes.first() else {
            return;
        };
        self.lone_cr |= self.out.last() == Some(&b'\r') && first != b'\n';
        self.lone_cr |= bytes
            .windows(2)
            .any(|pair| pair[0] == b'\r' && pair[1] != b'\n');
        self.out.extend_from_slice(bytes);
    }
}
