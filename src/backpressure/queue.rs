//! The byte-bounded queue of whole events between the pump task and the response body.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

/// Pieces shorter than this are merged with the ones after them, up to this many bytes.
const MERGE_LIMIT: usize = 16 * 1024;
use http::HeaderMap;
use tokio::time::Instant;

use super::{SlowClient, SlowClientPolicy};
use crate::BoxError;
use crate::metrics::{CloseSlot, SseMetrics};

/// One event in the queue (or the incomplete one at its tail), as the pieces of the frames that
/// carried it: frames are split at event boundaries, never copied.
#[derive(Debug, Default)]
struct Item {
    pieces: VecDeque<Bytes>,
    len: usize,
    /// Ends with a blank line.
    complete: bool,
    /// Some of it went to the client: it can no longer be dropped.
    started: bool,
    /// For `LatestPerType`: a hash of the event type, when the event carries data.
    kind: Option<u64>,
}

/// How the upstream ended, to be reported once the queue is drained.
#[derive(Debug)]
pub(crate) enum End {
    Ended(Option<HeaderMap>),
    Error(BoxError),
    /// The client stalled: the pump dropped the upstream and the queue.
    SlowClient,
}

#[derive(Debug)]
pub(crate) struct State {
    items: VecDeque<Item>,
    pub(crate) bytes: usize,
    pub(crate) end: Option<End>,
    /// The receiving body was dropped.
    pub(crate) receiver_gone: bool,
    /// The last time the client accepted bytes (data or a heartbeat), or the queue went from
    /// empty to non-empty: the stall clock starts there.
    pub(crate) last_progress: Instant,
    /// The pump waits for room: wake it when the client takes bytes.
    pub(crate) producer_blocked: bool,
    /// An item was queued before (the first one is pinned).
    had_items: bool,
    consumer: Option<Waker>,
    producer: Option<Waker>,
}

/// What the pump and the body share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) slow: SlowClient,
    pub(crate) metrics: SseMetrics,
    /// Where the stream's close is counted, by the pump (a stalled client) or the body.
    pub(crate) closed: Arc<CloseSlot>,
}

impl Shared {
    pub(crate) fn new(slow: SlowClient, metrics: SseMetrics) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                end: None,
                receiver_gone: false,
                last_progress: Instant::now(),
                producer_blocked: false,
                had_items: false,
                consumer: None,
                producer: None,
            }),
            slow,
            metrics,
            closed: Arc::default(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Whether the pump may pull another frame from the upstream.
    pub(crate) fn has_room(&self, slow: &SlowClient) -> bool {
        // An empty queue always takes a frame: a zero limit holds one frame at a time.
        match slow.policy {
            SlowClientPolicy::Disconnect => self.bytes < slow.max_buffer || self.bytes == 0,
            // `make_room` brings the queue back to at most the limit after each frame, so a queue
            // at exactly the limit takes the next one. Over it, nothing could be dropped (one
            // event larger than the limit, or an event already partly sent): wait.
            SlowClientPolicy::DropOldest | SlowClientPolicy::LatestPerType => {
                self.bytes <= slow.max_buffer
            }
        }
    }

    pub(crate) fn wake_consumer(&mut self) {
        if let Some(waker) = self.consumer.take() {
            waker.wake();
        }
    }

    pub(crate) fn wake_producer(&mut self) {
        if let Some(waker) = self.producer.take() {
            waker.wake();
        }
    }

    pub(crate) fn register_producer(&mut self, cx: &Context<'_>) {
        if !self
            .producer
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.producer = Some(cx.waker().clone());
        }
    }

    /// Appends one piece of a frame; `boundary`: the piece ends an event.
    pub(crate) fn push(&mut self, piece: Bytes, boundary: bool, shared: &Shared, now: Instant) {
        if piece.is_empty() && !boundary {
            return;
        }
        if self.is_empty() {
            self.last_progress = now;
        }
        let len = piece.len();
        let item = match self.items.back_mut() {
            Some(item) if !item.complete => item,
            _ => {
                // The stream's first event is never dropped: the client would then see the
                // next event's first bytes at the stream start, where a U+FEFF that was an
                // ordinary character becomes a skipped BOM (and the first event's own BOM
                // would hide its type from `event_kind`).
                let first = !self.had_items;
                self.had_items = true;
                self.items.push_back(Item {
                    started: first,
                    ..Item::default()
                });
                match self.items.back_mut() {
                    Some(item) => item,
                    None => return,
                }
            }
        };
        item.len += len;
        if !piece.is_empty() {
            item.pieces.push_back(piece);
        }
        if boundary {
            item.complete = true;
            if shared.slow.policy == SlowClientPolicy::LatestPerType {
                item.kind = event_kind(&item.pieces);
            }
        }
        self.bytes += len;
        SseMetrics::add(&shared.metrics.counters.queued_bytes, len as u64);
    }

    /// Applies the policy while the queue holds more than its limit.
    pub(crate) fn make_room(&mut self, shared: &Shared) {
        let limit = shared.slow.max_buffer;
        match shared.slow.policy {
            SlowClientPolicy::Disconnect => {}
            SlowClientPolicy::DropOldest => {
                while self.bytes > limit {
                    let Some(index) = self
                        .items
                        .iter()
                        .position(|item| item.complete && !item.started)
                    else {
                        break;
                    };
                    self.remove(index, shared);
                    SseMetrics::add(&shared.metrics.counters.events_dropped, 1);
                }
            }
            SlowClientPolicy::LatestPerType => {
                if self.bytes <= limit {
                    return;
                }
                // Keep the newest event of each type; remove older ones, newest first.
                let mut kinds: Vec<u64> = Vec::new();
                let mut index = self.items.len();
                while index > 0 {
                    index -= 1;
                    let Some(item) = self.items.get(index) else {
                        break;
                    };
                    let Some(kind) = item.kind.filter(|_| item.complete) else {
                        continue;
                    };
                    if kinds.contains(&kind) {
                        if !item.started {
                            self.remove(index, shared);
                            SseMetrics::add(&shared.metrics.counters.events_coalesced, 1);
                        }
                    } else {
                        kinds.push(kind);
                    }
                }
            }
        }
    }

    fn remove(&mut self, index: usize, shared: &Shared) {
        if let Some(item) = self.items.remove(index) {
            self.bytes -= item.len;
            shared
                .metrics
                .counters
                .queued_bytes
                .fetch_sub(item.len as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Drops everything queued (the stream is over).
    pub(crate) fn clear(&mut self, shared: &Shared) {
        shared
            .metrics
            .counters
            .queued_bytes
            .fetch_sub(self.bytes as u64, std::sync::atomic::Ordering::Relaxed);
        self.items.clear();
        self.bytes = 0;
    }

    /// The length of the next piece the client would get, if one is queued.
    fn next_piece_len(&self) -> Option<usize> {
        self.items
            .iter()
            .find_map(|item| item.pieces.front().map(Bytes::len))
    }

    /// Removes the next piece, marking its event started.
    fn pop_piece(&mut self, shared: &Shared) -> Option<Bytes> {
        while let Some(front) = self.items.front_mut() {
            if let Some(piece) = front.pieces.pop_front() {
                front.started = true;
                front.len -= piece.len();
                self.bytes -= piece.len();
                shared
                    .metrics
                    .counters
                    .queued_bytes
                    .fetch_sub(piece.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if front.complete && front.pieces.is_empty() {
                    self.items.pop_front();
                }
                return Some(piece);
            }
            if front.complete {
                self.items.pop_front();
            } else {
                return None;
            }
        }
        None
    }

    /// Takes the next piece for the client, or registers the consumer.
    pub(crate) fn poll_take(
        &mut self,
        cx: &Context<'_>,
        shared: &Shared,
        now: Instant,
    ) -> Poll<Option<Result<Take, BoxError>>> {
        if let Some(first) = self.pop_piece(shared) {
            // Events split apart for the policies go out together again (up to `MERGE_LIMIT`),
            // so that a frame of many small events does not become as many HTTP chunks.
            let data = if first.len() < MERGE_LIMIT && self.next_piece_len().is_some() {
                let mut merged = BytesMut::with_capacity(MERGE_LIMIT);
                merged.extend_from_slice(&first);
                while let Some(len) = self.next_piece_len() {
                    if merged.len() + len > MERGE_LIMIT {
                        break;
                    }
                    match self.pop_piece(shared) {
                        Some(piece) => merged.extend_from_slice(&piece),
                        None => break,
                    }
                }
                merged.freeze()
            } else {
                first
            };
            self.last_progress = now;
            if self.producer_blocked && self.has_room(&shared.slow) {
                self.producer_blocked = false;
                self.wake_producer();
            }
            return Poll::Ready(Some(Ok(Take::Data(data))));
        }
        if self.is_empty() {
            match self.end.take() {
                Some(End::Ended(Some(trailers))) => {
                    self.end = Some(End::Ended(None));
                    return Poll::Ready(Some(Ok(Take::Trailers(trailers))));
                }
                Some(End::Ended(None)) => {
                    self.end = Some(End::Ended(None));
                    return Poll::Ready(None);
                }
                Some(End::Error(error)) => {
                    self.end = Some(End::Ended(None));
                    return Poll::Ready(Some(Err(error)));
                }
                Some(End::SlowClient) => {
                    self.end = Some(End::SlowClient);
                    return Poll::Ready(None);
                }
                None => {}
            }
        }
        if !self
            .consumer
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.consumer = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// What the body takes from the queue.
#[derive(Debug)]
pub(crate) enum Take {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// A hash of the event type of a complete event, or `None` when it dispatches nothing (no
/// `data` field). Lines are read across the pieces; the type is the last `event` field's value,
/// `message` when there is none.
fn event_kind(pieces: &VecDeque<Bytes>) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};

    let mut line: Vec<u8> = Vec::new();
    let mut event_type: Vec<u8> = b"message".to_vec();
    let mut data = false;
    let mut after_cr = false;
    let finish_line = |line: &mut Vec<u8>, event_type: &mut Vec<u8>, data: &mut bool| {
        let (name, value): (&[u8], &[u8]) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (name, rest) = line.split_at(colon);
                let value = rest.get(1..).unwrap_or_default();
                (name, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line.as_slice(), &[]),
        };
        if name == b"data" {
            *data = true;
        } else if name == b"event" {
            *event_type = if value.is_empty() {
                b"message".to_vec()
            } else {
                value.to_vec()
            };
        }
        line.clear();
    };
    for piece in pieces {
        for &byte in piece.iter() {
            match byte {
                b'\n' if after_cr => after_cr = false,
                b'\r' | b'\n' => {
                    after_cr = byte == b'\r';
                    if !line.is_empty() {
                        finish_line(&mut line, &mut event_type, &mut data);
                    }
                }
                _ => {
                    after_cr = false;
                    line.push(byte);
                }
            }
        }
    }
    data.then(|| {
        let mut hasher = DefaultHasher::new();
        event_type.hash(&mut hasher);
        hasher.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<u64> {
        event_kind(&VecDeque::from([Bytes::copy_from_slice(text.as_bytes())]))
    }

    #[test]
    fn event_kinds_follow_the_event_field() {
        assert_eq!(kind("data: 1\n\n"), kind("event: message\ndata: 2\n\n"));
        assert_eq!(
            kind("event: progress\ndata: 1\r\n\r\n"),
            kind("event:progress\rdata\r\r")
        );
        assert_ne!(kind("event: a\ndata: 1\n\n"), kind("event: b\ndata: 1\n\n"));
        assert_eq!(kind("event: a\n\n"), None);
        assert_eq!(kind(": comment\n\n"), None);
    }
}
