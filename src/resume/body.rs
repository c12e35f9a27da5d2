//! [`ResumeBody`]: hands on whole events, and splices a new upstream response in when the
//! current one fails.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::HeaderName;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::config::Config;
use super::metrics::{GaveUp, GiveUpReason, ResumeMetrics};
use super::replay::{Replay, is_stream};
use super::tracker::Tracker;
use crate::BoxError;
use crate::jitter::jittered_millis;
use crate::scanner::bom_prefix;
use crate::timer::SharedTimer;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

pin_project! {
    /// The response body of a [`ResumeService`](crate::ResumeService).
    ///
    /// For a response that cannot be resumed (not an event stream, or a request that may not be
    /// repeated) it forwards every frame of the inner body with its `size_hint` and
    /// `is_end_stream`. For an event stream of a repeatable request, it hands on whole events:
    /// frames that end at an event boundary at once, the bytes of an incomplete event when the
    /// event completes. When the upstream body fails, it asks again with `Last-Event-ID` and goes
    /// on with the new body; while it waits, it returns `Pending`.
    ///
    /// Dropping it drops the inner body, or the pending request, at once.
    pub struct ResumeBody<B, S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        inner: Inner<B, S, ReqBody>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B, S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Passthrough { #[pin] body: B },
        Resume {
            // `None` between upstream responses, and once the stream is over (fused).
            #[pin]
            body: Option<B>,
            // Boxed once per stream: the body stays `Unpin` when `B` is.
            resumer: Pin<Box<Resumer<S, ReqBody>>>,
        },
    }
}

pin_project! {
    /// The parts of a resumable stream that are not the current body.
    #[project = ResumerProj]
    struct Resumer<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // The request sent again, while it is answered.
        #[pin]
        future: Option<S::Future>,
        timer: SharedTimer,
        state: State<S>,
    }
}

impl<B, S, ReqBody> ResumeBody<B, S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// A body that forwards `body` untouched.
    pub(crate) const fn passthrough(body: B) -> Self {
        Self {
            inner: Inner::Passthrough { body },
        }
    }

    /// An event stream over `body` that `service` can ask for again with `replay`.
    pub(crate) fn resume(
        body: B,
        service: S,
        replay: Replay,
        config: Config,
        metrics: ResumeMetrics,
        gave_up: GaveUp,
    ) -> Self {
        let head = replay.method == http::Method::HEAD;
        Self {
            inner: Inner::Resume {
                body: Some(body),
                resumer: Box::pin(Resumer {
                    future: None,
                    timer: SharedTimer::new(),
                    state: State {
                        service,
                        replay,
                        config,
                        metrics,
                        tracker: Tracker::new(config.max_event),
                        held: BytesMut::new(),
                        phase: Phase::Streaming,
                        forwarded: false,
                        off: false,
                        client_cr: false,
                        head,
                        failures: 0,
                        resumes: 0,
                        wait: Duration::ZERO,
                        last_id: LastId::Original,
                        gave_up,
                    },
                }),
            },
        }
    }
}

impl<B, S, ReqBody> fmt::Debug for ResumeBody<B, S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ResumeBody");
        match &self.inner {
            Inner::Passthrough { .. } => debug.field("mode", &"passthrough"),
            Inner::Resume { resumer, .. } => debug
                .field("mode", &"resume")
                .field("phase", &resumer.state.phase)
                .field("held", &resumer.state.held.len()),
        };
        debug.finish_non_exhaustive()
    }
}

/// Where a resumable stream is.
#[derive(Debug)]
enum Phase {
    /// Handing on the current upstream body.
    Streaming,
    /// Waiting before asking again.
    Waiting(Instant),
    /// Asking again: the service is driven to readiness, called, and its answer awaited.
    Requesting,
    /// Handing on the last bytes (held bytes, or a `retry:` line), then the error or the end.
    Ending {
        data: Option<Bytes>,
        error: Option<BoxError>,
    },
    Done,
}

/// What `Last-Event-ID` the request sent again carries.
#[derive(Debug, Clone)]
enum LastId {
    /// The client's own (no id was given to the client yet).
    Original,
    /// None (the client's last event id is empty).
    Remove,
    Set(HeaderValue),
}

/// Everything a resumable stream keeps besides its pinned parts.
struct State<S> {
    service: S,
    replay: Replay,
    config: Config,
    metrics: ResumeMetrics,
    tracker: Tracker,
    /// Bytes after the last event boundary handed on: an incomplete event.
    held: BytesMut,
    phase: Phase,
    /// An event was handed to the client.
    forwarded: bool,
    /// Resume was given up for this stream (an event past `max_event`): bytes pass through.
    off: bool,
    /// The last byte handed on was a CR (a line written next starts with the LF of a CRLF).
    client_cr: bool,
    head: bool,
    /// Requests that failed in this interruption.
    failures: u32,
    /// Upstream responses spliced in so far.
    resumes: u32,
    /// The wait before each request of this interruption, before jitter.
    wait: Duration,
    last_id: LastId,
    /// Set when a give-up ends the client's stream, for an outer `SseLayer`'s close reason.
    gave_up: GaveUp,
}

impl<S> State<S> {
    /// The normal case, tried first: whether `data`, a frame of whole events (or any frame once
    /// resume is off), goes on as it is. The tracker has then seen it; otherwise
    /// [`on_data`](Self::on_data) takes it.
    #[inline]
    fn whole(&mut self, data: &[u8]) -> bool {
        if self.off {
            return !data.is_empty();
        }
        if !self.held.is_empty() {
            return false;
        }
        match self.tracker.whole_events(data) {
            Some(events) => {
                self.forwarded |= events > 0;
                // The frame ends with an LF.
                self.client_cr = false;
                true
            }
            None => false,
        }
    }

    /// A data frame of the upstream that [`whole`](Self::whole) did not take: what to hand on
    /// now, if anything.
    #[inline(never)]
    fn on_data(&mut self, data: Bytes) -> Option<Bytes> {
        if self.off {
            return (!data.is_empty()).then_some(data);
        }
        let feed = self.tracker.feed_lines(&data);
        self.forwarded |= feed.events > 0;
        if self.held.is_empty() && feed.skip == 0 && feed.release == 0 && self.tracker.at_boundary()
        {
            // The normal case: a frame that ends at an event boundary goes on as it is.
            let last = data.last().copied()?;
            self.client_cr = last == b'\r';
            return Some(data);
        }
        if feed.release > 0 {
            self.held.extend_from_slice(bom_prefix(feed.release));
        }
        let end = if self.tracker.at_boundary() {
            Some(data.len())
        } else {
            feed.boundary
        };
        let mut out = None;
        let tail = match end {
            Some(end) => {
                let head = data.get(feed.skip..end).unwrap_or_default();
                out = Some(if self.held.is_empty() {
                    data.slice_ref(head)
                } else {
                    self.held.extend_from_slice(head);
                    self.held.split().freeze()
                });
                data.get(end..).unwrap_or_default()
            }
            None => data.get(feed.skip..).unwrap_or_default(),
        };
        self.held.extend_from_slice(tail);
        if self.held.len() > self.config.max_event {
            // Past the bound: hand everything on, and go on without resume.
            self.off = true;
            self.give_up(GiveUpReason::TooLarge);
            let held = self.held.split();
            out = Some(match out {
                Some(out) => {
                    let mut all = BytesMut::with_capacity(out.len() + held.len());
                    all.extend_from_slice(&out);
                    all.extend_from_slice(&held);
                    all.freeze()
                }
                None => held.freeze(),
            });
        }
        let out = out.filter(|out| !out.is_empty())?;
        self.client_cr = out.last() == Some(&b'\r');
        Some(out)
    }

    /// The current upstream body failed (`Some(error)`) or ended (`None`).
    #[cold]
    fn interrupted(&mut self, error: Option<BoxError>) {
        let resumable_end = self.config.resume_on_end && !self.head;
        if self.off || (error.is_none() && !resumable_end) {
            self.end(error);
            return;
        }
        self.metrics.interrupted();
        let last_id = match self.tracker.last_id() {
            None if !self.forwarded => Some(LastId::Original),
            Some(Ok([])) if !self.forwarded => Some(LastId::Remove),
            Some(Ok(id)) if !id.is_empty() => HeaderValue::from_bytes(id).ok().map(LastId::Set),
            _ => None,
        };
        let Some(last_id) = last_id else {
            self.give_up(GiveUpReason::NoId);
            self.end(error);
            return;
        };
        if self.resumes >= self.config.max_resumes {
            self.give_up(GiveUpReason::MaxResumes);
            self.end(error);
            return;
        }
        if let Some(error) = &error {
            tracing::debug!(target: "tower_sse::resume", %error, "upstream event stream failed");
        }
        self.last_id = last_id;
        self.held.clear();
        self.tracker.splice();
        self.failures = 0;
        // The upstream's `retry:` wins, up to `max_retry` (the layer's own is not clamped).
        self.wait = self.tracker.retry().map_or(self.config.retry, |millis| {
            Duration::from_millis(millis).min(self.config.max_retry)
        });
        self.schedule();
    }

    /// Waits (jittered) before the next request.
    fn schedule(&mut self) {
        let wait = Duration::from_millis(jittered_millis(self.wait, self.config.jitter));
        self.phase = Phase::Waiting(Instant::now() + wait);
    }

    /// The request sent again.
    fn request<ReqBody: Default>(&self) -> Request<ReqBody> {
        let mut request = self.replay.request();
        match &self.last_id {
            LastId::Original => {}
            LastId::Remove => {
                request.headers_mut().remove(LAST_EVENT_ID);
            }
            LastId::Set(id) => {
                request.headers_mut().insert(LAST_EVENT_ID, id.clone());
            }
        }
        request
    }

    /// A request failed: ask again, or give up after the last attempt.
    fn failed(&mut self, reason: &dyn fmt::Display) {
        self.failures = self.failures.saturating_add(1);
        tracing::debug!(
            target: "tower_sse::resume",
            last_event_id = %self.last_id_text(),
            attempt = self.failures,
            %reason,
            "resume attempt failed"
        );
        if self.failures < self.config.attempts {
            self.schedule();
            return;
        }
        self.give_up(GiveUpReason::Attempts);
        let millis = jittered_millis(self.wait, self.config.jitter);
        let lead = if self.client_cr { "\n" } else { "" };
        self.phase = Phase::Ending {
            data: Some(Bytes::from(format!("{lead}retry: {millis}\n"))),
            error: None,
        };
    }

    /// The new upstream response is an event stream: go on with its body.
    fn spliced(&mut self) {
        self.metrics.resumed();
        tracing::info!(
            target: "tower_sse::resume",
            last_event_id = %self.last_id_text(),
            wait_ms = u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
            attempt = self.failures + 1,
            outcome = "resumed",
            "upstream event stream resumed"
        );
        self.failures = 0;
        self.resumes = self.resumes.saturating_add(1);
        self.phase = Phase::Streaming;
    }

    fn give_up(&self, reason: GiveUpReason) {
        self.metrics.gave_up(reason);
        if reason.ends_stream() {
            self.gave_up.set();
        }
        tracing::info!(
            target: "tower_sse::resume",
            last_event_id = %self.last_id_text(),
            wait_ms = u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
            attempt = self.failures,
            outcome = reason.as_str(),
            ends_stream = reason.ends_stream(),
            "upstream event stream not resumed"
        );
    }

    /// Ends the client's stream as it would end without resume: the held bytes, then `error`.
    fn end(&mut self, error: Option<BoxError>) {
        let held = self.tracker.finish();
        self.held.extend_from_slice(bom_prefix(held));
        let data = (!self.held.is_empty()).then(|| self.held.split().freeze());
        self.phase = Phase::Ending { data, error };
    }

    fn last_id_text(&self) -> String {
        match self.tracker.last_id() {
            Some(Ok(id)) => String::from_utf8_lossy(id).into_owned(),
            Some(Err(())) => "<too long>".to_owned(),
            None => String::new(),
        }
    }
}

impl<B, S, ReqBody> ResumeBody<B, S, ReqBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    ReqBody: Default,
{
    /// Everything but the normal case: `polled`, what the current body gave if it was polled
    /// (a frame that is not whole events, an error or the end), then the phases of a resume.
    #[inline(never)]
    fn poll_rest(
        mut body: Pin<&mut Option<B>>,
        mut resumer: Pin<&mut Resumer<S, ReqBody>>,
        mut polled: Option<Option<Result<Frame<Bytes>, B::Error>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let ResumerProj {
            mut future,
            timer,
            state,
        } = resumer.as_mut().project();
        loop {
            match &mut state.phase {
                Phase::Streaming => {
                    // A frame `poll_frame` handed over has been offered to `whole` already.
                    let (polled, offered) = match polled.take() {
                        Some(polled) => (polled, true),
                        None => {
                            let Some(inner) = body.as_mut().as_pin_mut() else {
                                state.phase = Phase::Done;
                                continue;
                            };
                            (ready!(inner.poll_frame(cx)), false)
                        }
                    };
                    match polled {
                        Some(Ok(frame))
                            if !offered
                                && frame.data_ref().is_some_and(|data| state.whole(data)) =>
                        {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => {
                                if let Some(out) = state.on_data(data) {
                                    return Poll::Ready(Some(Ok(Frame::data(out))));
                                }
                            }
                            Err(frame) => return Poll::Ready(Some(Ok(frame))),
                        },
                        Some(Err(error)) => {
                            body.set(None);
                            state.interrupted(Some(error.into()));
                        }
                        None => {
                            body.set(None);
                            state.interrupted(None);
                        }
                    }
                }
                Phase::Waiting(deadline) => {
                    ready!(timer.poll_until(*deadline, cx));
                    state.phase = Phase::Requesting;
                }
                Phase::Requesting => {
                    if future.is_none() {
                        if let Err(error) = ready!(state.service.poll_ready(cx)) {
                            state.failed(&error.into());
                            continue;
                        }
                        let request = state.request();
                        state.metrics.attempt();
                        future.set(Some(state.service.call(request)));
                    }
                    let Some(pending) = future.as_mut().as_pin_mut() else {
                        continue;
                    };
                    let answer = ready!(pending.poll(cx));
                    future.set(None);
                    match answer {
                        Ok(response) if is_stream(&response) => {
                            body.set(Some(response.into_body()));
                            state.spliced();
                        }
                        Ok(response) if response.status() == StatusCode::NO_CONTENT => {
                            state.give_up(GiveUpReason::NoContent);
                            state.phase = Phase::Done;
                        }
                        Ok(response) => state.failed(&response.status()),
                        Err(error) => state.failed(&error.into()),
                    }
                }
                Phase::Ending { data, error } => {
                    if let Some(data) = data.take() {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let error = error.take();
                    state.phase = Phase::Done;
                    timer.clear();
                    if let Some(error) = error {
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                Phase::Done => {
                    timer.clear();
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl<B, S, ReqBody> Body for ResumeBody<B, S, ReqBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    ReqBody: Default,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (mut body, resumer) = match self.project().inner.project() {
            InnerProj::Passthrough { body } => {
                return body.poll_frame(cx).map_err(Into::into);
            }
            InnerProj::Resume { body, resumer } => (body, resumer),
        };
        // The normal case first, in as little code as can be: a frame of whole events from the
        // current body goes on as it is.
        let state = &mut resumer.as_mut().project().state;
        let polled = match (&state.phase, body.as_mut().as_pin_mut()) {
            (Phase::Streaming, Some(inner)) => match ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) if frame.data_ref().is_some_and(|data| state.whole(data)) => {
                    return Poll::Ready(Some(Ok(frame)));
                }
                polled => Some(polled),
            },
            _ => None,
        };
        Self::poll_rest(body, resumer.as_mut(), polled, cx)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Passthrough { body } => body.is_end_stream(),
            Inner::Resume { resumer, .. } => matches!(resumer.state.phase, Phase::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Passthrough { body } => body.size_hint(),
            Inner::Resume { .. } => SizeHint::default(),
        }
    }
}
