//! The jobs: each one's event log, its simulated work, and the streams that follow it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::Event;
use futures_util::Stream;
use futures_util::stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::json::json_str;

pub(crate) const DEFAULT_TOTAL: u32 = 300;
pub(crate) const DEFAULT_DELAY_MS: u64 = 15;
pub(crate) const MAX_TOTAL: u32 = 100_000;
pub(crate) const MAX_DELAY_MS: u64 = 1_000;
/// The most jobs the server keeps.
pub(crate) const MAX_JOBS: usize = 1_000;
/// Records whose id is a multiple of this fail.
const FAIL_EVERY: u32 = 17;

#[derive(Default)]
pub(crate) struct AppState {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl AppState {
    /// The job called `name`, made on first use; `None` when [`MAX_JOBS`] jobs exist and `name`
    /// is not one of them (jobs are never removed: without a bound, a client could grow the
    /// server's memory one name at a time).
    pub(crate) fn job(&self, name: &str) -> Option<Arc<Job>> {
        let mut jobs = lock(&self.jobs);
        if let Some(job) = jobs.get(name) {
            return Some(Arc::clone(job));
        }
        if jobs.len() >= MAX_JOBS {
            return None;
        }
        let job = Arc::new(Job::new(name));
        jobs.insert(name.to_owned(), Arc::clone(&job));
        Some(job)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One job: the event log of its current run, its state, and the signals streams wait on.
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) inner: Mutex<JobInner>,
    /// The id of the last event in the log; bumped on every append.
    pub(crate) appended: watch::Sender<u64>,
    /// Bumped by `POST /jobs/{name}/cut`: every stream open at that moment ends.
    pub(crate) cut: watch::Sender<u64>,
    /// Event streams of this job open now.
    pub(crate) streams: AtomicUsize,
}

#[derive(Default)]
pub(crate) struct JobInner {
    /// The id just before `log[0]`: event `log[i]` has id `base + i + 1`. Ids never repeat
    /// within a job; a restart drops the previous run's events and continues the numbering.
    pub(crate) base: u64,
    pub(crate) log: Vec<LogEvent>,
    pub(crate) run: u64,
    pub(crate) total: u32,
    pub(crate) processed: u32,
    pub(crate) failures: Vec<u32>,
    pub(crate) done: bool,
    pub(crate) worker: Option<JoinHandle<()>>,
}

#[derive(Clone)]
pub(crate) struct LogEvent {
    id: u64,
    kind: &'static str,
    data: Arc<str>,
}

impl Job {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            inner: Mutex::default(),
            appended: watch::Sender::new(0),
            cut: watch::Sender::new(0),
            streams: AtomicUsize::new(0),
        }
    }

    /// Appends an event to the log (the caller holds the lock) and wakes the streams.
    pub(crate) fn push(&self, inner: &mut JobInner, kind: &'static str, data: String) {
        let id = inner.base + inner.log.len() as u64 + 1;
        inner.log.push(LogEvent {
            id,
            kind,
            data: data.into(),
        });
        self.appended.send_replace(id);
    }
}

/// Where a stream starts in the log, given the client's `Last-Event-ID`.
#[derive(Debug, PartialEq, Eq)]
enum Resume {
    /// Send `log[index..]`.
    At(usize),
    /// The id is unknown to this server (sent by an earlier process): send a `reset` event
    /// carrying id `base`, then the whole log.
    Reset,
}

fn resume(base: u64, len: usize, last_event_id: Option<u64>) -> Resume {
    match last_event_id {
        // A fresh connection: the whole current run (it starts with its `start` event).
        None => Resume::At(0),
        // An id from a previous run: its `start` event resets the client, replay the run.
        Some(id) if id < base => Resume::At(0),
        // Exactly the events after `id`.
        Some(id) if id - base <= len as u64 => {
            Resume::At(usize::try_from(id - base).unwrap_or(len))
        }
        Some(_) => Resume::Reset,
    }
}

pub(crate) fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The simulated work: one record every `delay`; records whose id is a multiple of 17 fail.
pub(crate) async fn run_job(job: Arc<Job>, run: u64, total: u32, delay: Duration) {
    for id in 1..=total {
        tokio::time::sleep(delay).await;
        let mut inner = lock(&job.inner);
        if inner.run != run {
            return; // restarted meanwhile
        }
        if let Some(error) = record_error(id) {
            inner.failures.push(id);
            let data = format!(r#"{{"id":{id},"error":{}}}"#, json_str(&error));
            job.push(&mut inner, "failure", data);
        }
        inner.processed = id;
        job.push(
            &mut inner,
            "progress",
            format!(r#"{{"processed":{id},"total":{total}}}"#),
        );
    }
    let mut inner = lock(&job.inner);
    if inner.run != run {
        return;
    }
    inner.done = true;
    inner.worker = None;
    let failures = inner.failures.len();
    job.push(
        &mut inner,
        "done",
        format!(r#"{{"total":{total},"failures":{failures}}}"#),
    );
    tracing::info!(job = %job.name, run, total, failures, "job done");
}

/// Deterministic failures: every multiple of 17, with one of two messages.
fn record_error(id: u32) -> Option<String> {
    if !id.is_multiple_of(FAIL_EVERY) {
        return None;
    }
    Some(if (id / FAIL_EVERY).is_multiple_of(2) {
        format!("record {id}: checksum mismatch")
    } else {
        format!(r#"record {id}: field "amount" is not a number"#)
    })
}
/// One client's view of a job: a cursor into the log and the signals to wait on.
pub(crate) struct JobStream {
    job: Arc<Job>,
    /// The id of the last event handed to the client.
    cursor: u64,
    pending: VecDeque<Event>,
    appended: watch::Receiver<u64>,
    cut: watch::Receiver<u64>,
}

impl JobStream {
    pub(crate) fn open(job: Arc<Job>, last: Option<u64>) -> Self {
        // Subscribe before reading the log: an append after this point wakes the stream.
        let appended = job.appended.subscribe();
        let cut = job.cut.subscribe();
        let inner = lock(&job.inner);
        let mut pending = VecDeque::new();
        let start = match resume(inner.base, inner.log.len(), last) {
            Resume::At(index) => index,
            Resume::Reset => {
                pending.push_back(
                    Event::default()
                        .event("reset")
                        .id(inner.base.to_string())
                        .data("{}"),
                );
                0
            }
        };
        let cursor = inner.base + start as u64;
        drop(inner);
        job.streams.fetch_add(1, Ordering::Relaxed);
        Self {
            job,
            cursor,
            pending,
            appended,
            cut,
        }
    }

    /// Copies the events after the cursor. A restart moves `base` past the cursor: the client
    /// then gets the new run from its `start` event, which resets it.
    fn fetch(&mut self) {
        self.appended.borrow_and_update();
        let inner = lock(&self.job.inner);
        let from = self.cursor.saturating_sub(inner.base);
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        for event in inner.log.iter().skip(from) {
            self.pending.push_back(
                Event::default()
                    .event(event.kind)
                    .id(event.id.to_string())
                    .data(&*event.data),
            );
            self.cursor = event.id;
        }
    }

    pub(crate) fn into_stream(
        self,
    ) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        stream::unfold(self, |mut this| async move {
            loop {
                if this.cut.has_changed().unwrap_or(true) {
                    return None; // cut: the body ends, the client reconnects
                }
                if let Some(event) = this.pending.pop_front() {
                    return Some((Ok(event), this));
                }
                this.fetch();
                if !this.pending.is_empty() {
                    continue;
                }
                tokio::select! {
                    changed = this.appended.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = this.cut.changed() => return None,
                }
            }
        })
    }
}

impl Drop for JobStream {
    fn drop(&mut self) {
        self.job.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_sends_exactly_the_events_after_the_last_id() {
        // Run 2: events 11..=15 (base 10).
        assert_eq!(resume(10, 5, None), Resume::At(0));
        assert_eq!(resume(10, 5, Some(10)), Resume::At(0));
        assert_eq!(resume(10, 5, Some(13)), Resume::At(3));
        assert_eq!(resume(10, 5, Some(15)), Resume::At(5));
        // From run 1: replay run 2 from its `start`.
        assert_eq!(resume(10, 5, Some(4)), Resume::At(0));
        // From another process.
        assert_eq!(resume(10, 5, Some(16)), Resume::Reset);
        assert_eq!(resume(0, 0, Some(1)), Resume::Reset);
    }

    #[test]
    fn jobs_are_bounded_and_existing_ones_stay_reachable() {
        let state = AppState::default();
        for n in 0..MAX_JOBS {
            assert!(state.job(&format!("job-{n}")).is_some());
        }
        assert!(state.job("one-too-many").is_none());
        let again = state.job("job-7").map(|job| job.name.clone());
        assert_eq!(again.as_deref(), Some("job-7"));
    }

    #[test]
    fn every_seventeenth_record_fails() {
        let failing: Vec<u32> = (1..=300).filter(|id| record_error(*id).is_some()).collect();
        assert_eq!(failing.len(), 17);
        assert_eq!(failing.first(), Some(&17));
        assert_eq!(
            record_error(34).as_deref(),
            Some("record 34: checksum mismatch")
        );
        assert_eq!(
            record_error(17).as_deref(),
            Some(r#"record 17: field "amount" is not a number"#)
        );
    }
}
