//! The settings a [`ResumeLayer`](super::ResumeLayer) hands to each of its services and streams,
//! and their defaults.

use std::time::Duration;

/// Default bound on the bytes of an incomplete event held back.
pub(crate) const DEFAULT_MAX_EVENT: usize = 1 << 20;
/// Default number of requests per interruption.
pub(crate) const DEFAULT_ATTEMPTS: u32 = 3;
/// Default wait before asking again, when the upstream sent no `retry:` (as browsers do).
pub(crate) const DEFAULT_RETRY: Duration = Duration::from_secs(3);
/// Default spread of the waits: ±50 %.
pub(crate) const DEFAULT_JITTER: f64 = 0.5;
/// Default bound on an upstream's `retry:` value used as the wait.
pub(crate) const DEFAULT_MAX_RETRY: Duration = Duration::from_secs(30);
/// Default bound on the resumes of one client stream.
pub(crate) const DEFAULT_MAX_RESUMES: u32 = 100;

/// The configuration a layer hands to each of its services and streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) resume_on_end: bool,
    pub(crate) max_event: usize,
    pub(crate) attempts: u32,
    pub(crate) retry: Duration,
    pub(crate) max_retry: Duration,
    pub(crate) jitter: f64,
    pub(crate) max_resumes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            resume_on_end: false,
            max_event: DEFAULT_MAX_EVENT,
            attempts: DEFAULT_ATTEMPTS,
            retry: DEFAULT_RETRY,
            max_retry: DEFAULT_MAX_RETRY,
            jitter: DEFAULT_JITTER,
            max_resumes: DEFAULT_MAX_RESUMES,
        }
    }
}
