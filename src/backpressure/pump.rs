//! The pump: a task that polls the inner body independently of the client and fills the queue.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use tokio::time::Instant;

use super::SlowClientPolicy;
use super::queue::{End, Shared};
use crate::BoxError;
use crate::scanner::Scanner;
use crate::timer::SharedTimer;

/// Runs until the upstream ends, the client stalls, or the receiving body is dropped; then drops
/// the upstream at once.
///
/// `heartbeat`: the stream's heartbeat interval and slack. The stall timer then waits on the
/// slack's grid, the one the stream's heartbeats use: a stall is found at most one slack after
/// it is due (never before), and the timers of many streams (heartbeats and stalls) that fall
/// due within one slack wake the runtime once.
pub(crate) async fn pump<B>(body: B, shared: Arc<Shared>, heartbeat: Option<(Duration, Duration)>)
where
    B: Body,
    B::Data: 'static,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    // A slot in the runtime's timer wheel (16 bytes here) rather than a `Sleep` (112 bytes).
    let mut timer = SharedTimer::new();
    let mut scanner = Scanner::new();
    let mut cuts: Vec<usize> = Vec::new();
    poll_fn(|cx| {
        poll_pump(
            body.as_mut(),
            &mut timer,
            &shared,
            &mut scanner,
            &mut cuts,
            heartbeat,
            cx,
        )
    })
    .await;
}

fn poll_pump<B>(
    mut body: std::pin::Pin<&mut B>,
    timer: &mut SharedTimer,
    shared: &Shared,
    scanner: &mut Scanner,
    cuts: &mut Vec<usize>,
    heartbeat: Option<(Duration, Duration)>,
    cx: &mut Context<'_>,
) -> Poll<()>
where
    B: Body,
    B::Data: 'static,
    B::Error: Into<BoxError>,
{
    loop {
        let mut state = shared.lock();
        if state.receiver_gone {
            state.clear(shared);
            return Poll::Ready(());
        }
        // Stall: bytes are waiting (or a heartbeat is due) and the client took nothing.
        let now = Instant::now();
        let stall_at = if state.is_empty() {
            heartbeat.map(|(interval, _)| state.last_progress + interval + shared.slow.timeout)
        } else {
            Some(state.last_progress + shared.slow.timeout)
        };
        if let Some(at) = stall_at
            && now >= at
        {
            let queued = state.bytes;
            state.clear(shared);
            state.end = Some(End::SlowClient);
            state.wake_consumer();
            // Reported here, not when the body is dropped: a stalled connection may keep the
            // body alive (and unpolled) long after the stream is over for the producer.
            drop(state);
            let (_, first) = shared
                .closed
                .close(&shared.metrics, crate::CloseReason::SlowClient);
            if first {
                tracing::debug!(
                    target: "tower_sse",
                    reason = crate::CloseReason::SlowClient.as_str(),
                    queued_bytes = queued,
                    "sse stream closed"
                );
            }
            return Poll::Ready(());
        }
        state.register_producer(cx);
        let room = state.has_room(&shared.slow);
        state.producer_blocked = !room;
        drop(state);

        if room {
            match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            // Moved when it already is `Bytes` (see `data::into_bytes`).
                            let data = crate::data::into_bytes(data);
                            enqueue(data, shared, scanner, cuts, now);
                            continue;
                        }
                        Err(frame) => frame,
                    };
                    if let Ok(trailers) = frame.into_trailers() {
                        return finish(shared, End::Ended(Some(trailers)));
                    }
                    continue;
                }
                Poll::Ready(Some(Err(error))) => return finish(shared, End::Error(error.into())),
                Poll::Ready(None) => return finish(shared, End::Ended(None)),
                Poll::Pending => {}
            }
        }

        // Waiting for the upstream, or for the client to make room: watch for a stall.
        // The timer is re-armed lazily: progress only moves `last_progress`. It waits on the
        // heartbeat slack's grid (never before the stall is due): the timers of a runtime's
        // streams that fall due within one slack wake it once.
        if let Some(at) = stall_at {
            let slack = heartbeat.map_or(Duration::ZERO, |(_, slack)| slack);
            let at = timer.align(at, slack);
            if timer.poll_until(at, cx).is_ready() {
                continue;
            }
        }
        return Poll::Pending;
    }
}

fn enqueue(
    data: Bytes,
    shared: &Shared,
    scanner: &mut Scanner,
    cuts: &mut Vec<usize>,
    now: Instant,
) {
    if shared.slow.policy == SlowClientPolicy::Disconnect {
        // Nothing is ever dropped: frames need no event boundaries, and pass whole.
        let mut state = shared.lock();
        state.push(data, false, shared, now);
        state.wake_consumer();
        return;
    }
    cuts.clear();
    scanner.feed_with_boundaries(&data, |at| cuts.push(at));
    let mut state = shared.lock();
    let mut rest = data;
    let mut taken = 0;
    for &cut in cuts.iter() {
        let piece = rest.split_to(cut - taken);
        taken = cut;
        state.push(piece, true, shared, now);
    }
    state.push(rest, false, shared, now);
    state.make_room(shared);
    state.wake_consumer();
}

fn finish(shared: &Shared, end: End) -> Poll<()> {
    let mut state = shared.lock();
    state.end = Some(end);
    state.wake_consumer();
    Poll::Ready(())
}
