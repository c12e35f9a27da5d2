//! A discrete-event simulation of reconnect storms: `instances` tower-sse instances behind a
//! round-robin load balancer, `clients` `EventSource` clients, and the events a fleet lives
//! through (rolling deploys, the loss of an instance, lifetime rotation, app restarts).
//!
//! The clients follow the WHATWG rules: after a stream ends or a connection fails they wait
//! the last `retry:` value they received (3 s when none came), with no jitter of their own,
//! and reconnect with `Last-Event-ID`. Each connection goes to the next ready instance in
//! round-robin order; an instance at its capacity refuses it (a network error: the client
//! waits its retry again).
//!
//! What the layer changes, and what the simulation models of it:
//!
//! - `retry_jitter` j: each stream's hint is `retry · (1 ± j·U)`;
//! - a drain over a window W: each stream of the draining instance ends at a uniformly random
//!   moment in W, its final hint jittered by at least 20 % (the layer's rule); the load
//!   balancer sends no new connection to a draining instance (its `/readyz` is down);
//! - `max_lifetime` L with `lifetime_jitter` f: a stream ends after `L · (1 − f·U)`, with the
//!   same final hint as a drain;
//! - resume: when an app (upstream) instance restarts, the proxy re-requests the stream from
//!   another app and the client sees nothing. Without resume the client's stream ends.
//!
//! Time is in microseconds; every run is deterministic for a seed. Reconnects (every
//! connection attempt but a client's first) are counted per 100 ms bucket.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

/// The width of a bucket of the reconnect histogram.
pub const BUCKET: Duration = Duration::from_millis(100);
const BUCKET_US: u64 = 100_000;
/// The layer's minimum jitter of the final `retry:` hint of a drain or lifetime end.
pub const FINAL_HINT_JITTER: f64 = 0.2;
/// The reconnection time of a client that never received a `retry:` field.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// A small deterministic random source (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Creates a new [`Rng`] from a seed.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub const fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniformly distributed value in `0.0..1.0`.
    #[expect(
        clippy::cast_precision_loss,
        reason = "53 random bits scaled into a float"
    )]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// `micros` moved by a random amount within ±`jitter` of itself.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "durations far below 2^53 µs, the factor in 0..=2"
)]
fn jittered(micros: u64, jitter: f64, rng: &mut Rng) -> u64 {
    if jitter <= 0.0 {
        return micros;
    }
    (micros as f64 * (1.0 + jitter * (2.0 * rng.unit() - 1.0))).round() as u64
}

/// `micros` times a uniform value in `0.0..1.0`.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "durations far below 2^53 µs, the factor in 0..1"
)]
fn fraction_of(micros: u64, rng: &mut Rng) -> u64 {
    (micros as f64 * rng.unit()) as u64
}

fn us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The layer's settings on every instance (and the proxy's resume setting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The `retry:` hint written at stream start.
    pub retry: Duration,
    /// The hint's jitter, `0.0..=1.0`.
    pub retry_jitter: f64,
    /// The drain window of a rolling deploy (zero: every stream ends at once).
    pub drain_window: Duration,
    /// The fraction of `max_lifetime` cut at random per stream.
    pub lifetime_jitter: f64,
    /// Whether the final hint of a drain or lifetime end is jittered by at least 20 % (the
    /// layer does it; a server without it just closes).
    pub final_hint_jitter: bool,
    /// Whether the proxy resumes a stream whose app instance went away.
    pub resume: bool,
}

impl Settings {
    /// A fleet without tower-sse's help: a fixed 3 s hint, no drain window, no lifetime jitter,
    /// streams closed as they are, no resume.
    #[must_use]
    pub const fn without() -> Self {
        Self {
            retry: DEFAULT_RETRY,
            retry_jitter: 0.0,
            drain_window: Duration::ZERO,
            lifetime_jitter: 0.0,
            final_hint_jitter: false,
            resume: false,
        }
    }

    /// The settings FLEET.md recommends: `retry` 3 s ± 100 % (hints spread over 0–6 s, their
    /// mean the fixed hint's 3 s), a drain window of `drain_window`,
    /// lifetimes jittered 20 %, resume on.
    #[must_use]
    pub const fn with(drain_window: Duration) -> Self {
        Self {
            retry: DEFAULT_RETRY,
            retry_jitter: 1.0,
            drain_window,
            lifetime_jitter: 0.2,
            final_hint_jitter: true,
            resume: true,
        }
    }
}

/// What happens to the fleet during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every instance in turn: drained (over the drain window), stopped, started again after
    /// `restart`, and the next one `step` after the previous drain began.
    RollingDeploy {
        /// When the first drain begins.
        start: Duration,
        /// Between the starts of two drains.
        step: Duration,
        /// From the end of the drain until the instance is ready again.
        restart: Duration,
    },
    /// Instance 0 dies at `at` (kill -9: every stream cut at once) and is back `down` later.
    InstanceLoss {
        /// When it dies.
        at: Duration,
        /// How long it stays down.
        down: Duration,
    },
    /// Streams end after a maximum lifetime (with the settings' lifetime jitter).
    LifetimeRotation {
        /// The maximum lifetime.
        lifetime: Duration,
    },
    /// `apps` app instances behind the proxies restart in turn, `step` apart from `start`.
    AppRestart {
        /// The number of app instances (each stream reads from one, round robin).
        apps: u32,
        /// When the first app restarts.
        start: Duration,
        /// Between two restarts.
        step: Duration,
    },
}

impl Scenario {
    /// When the scenario's first action happens (the lifetime rotation: the first lifetime
    /// end that can happen, `lifetime · (1 − jitter)` after the ramp starts).
    #[must_use]
    pub fn first_action(&self, settings: &Settings) -> Duration {
        match *self {
            Self::RollingDeploy { start, .. } | Self::AppRestart { start, .. } => start,
            Self::InstanceLoss { at, .. } => at,
            Self::LifetimeRotation { lifetime } => {
                lifetime.mul_f64(1.0 - settings.lifetime_jitter.clamp(0.0, 1.0))
            }
        }
    }
}

/// The shape of the fleet and the length of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fleet {
    /// Instances behind the load balancer.
    pub instances: u32,
    /// Clients.
    pub clients: u32,
    /// Streams one instance accepts at most (0: no limit).
    pub capacity: u32,
    /// The clients' first connections are spread uniformly over this long from time zero.
    pub ramp: Duration,
    /// From a client's connection attempt until its stream is open.
    pub connect_latency: Duration,
    /// How long the run lasts.
    pub duration: Duration,
    /// From a stream's end until its client notices, at least (a loaded machine's delay).
    pub close_delay: Duration,
    /// Plus a uniformly random amount of at most this.
    pub close_spread: Duration,
    /// The random seed.
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Reconnects (connection attempts but the first of each client) per 100 ms bucket.
    pub reconnects: Vec<u32>,
    /// Connections refused because the instance was full.
    pub refused: u64,
    /// Streams the proxy resumed from another app without the client noticing.
    pub resumed: u64,
    /// Streams open at the end, per instance.
    pub open_per_instance: Vec<u32>,
}

impl Outcome {
    /// All reconnects of the run.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.reconnects.iter().map(|&n| u64::from(n)).sum()
    }

    /// The largest bucket at or after `from`, and its start.
    #[must_use]
    pub fn peak_from(&self, from: Duration) -> (Duration, u32) {
        let first = usize::try_from(us(from) / BUCKET_US).unwrap_or(usize::MAX);
        let mut best = (Duration::ZERO, 0);
        for (index, &count) in self.reconnects.iter().enumerate().skip(first) {
            if count > best.1 {
                best = (BUCKET * u32::try_from(index).unwrap_or(u32::MAX), count);
            }
        }
        best
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (at, peak) = self.peak_from(Duration::ZERO);
        write!(
            f,
            "{} reconnects, peak {peak} per 100 ms at {:.1} s, {} refused, {} resumed",
            self.total(),
            at.as_secs_f64(),
            self.refused,
            self.resumed
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A client attempts a connection.
    Connect { client: u32 },
    /// The layer ends a client's stream (drain or lifetime), with a final hint.
    EndStream { client: u32, generation: u32 },
    /// Instance `i` begins to drain.
    Drain { instance: u32 },
    /// Instance `i` stops (after a drain) or dies (kill -9): every stream on it is cut.
    Stop { instance: u32 },
    /// Instance `i` is ready again.
    Ready { instance: u32 },
    /// App `a` restarts: its streams end, or are resumed.
    AppRestart { app: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Client {
    /// The instance it is connected to, if any.
    instance: Option<u32>,
    /// The app its stream reads from.
    app: u32,
    /// Counts its streams, so that an end scheduled for an old stream is ignored.
    generation: u32,
    /// The last `retry:` value it received, in µs.
    retry_us: u64,
    /// Whether it has connected before.
    connected_once: bool,
}

struct World {
    fleet: Fleet,
    settings: Settings,
    scenario: Scenario,
    rng: Rng,
    clients: Vec<Client>,
    ready: Vec<bool>,
    up: Vec<bool>,
    open: Vec<u32>,
    next_instance: u32,
    apps: u32,
    next_app: u32,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    outcome: Outcome,
}

/// Runs one scenario and returns what it measured.
#[must_use]
pub fn run(fleet: Fleet, settings: Settings, scenario: Scenario) -> Outcome {
    let apps = match scenario {
        Scenario::AppRestart { apps, .. } => apps.max(1),
        _ => 1,
    };
    let instances = fleet.instances.max(1);
    let buckets = usize::try_from(us(fleet.duration) / BUCKET_US + 1).unwrap_or(0);
    let count = usize::try_from(instances).unwrap_or(0);
    let mut world = World {
        fleet,
        settings,
        scenario,
        rng: Rng::new(fleet.seed),
        clients: vec![
            Client {
                instance: None,
                app: 0,
                generation: 0,
                retry_us: us(DEFAULT_RETRY),
                connected_once: false,
            };
            usize::try_from(fleet.clients).unwrap_or(0)
        ],
        ready: vec![true; count],
        up: vec![true; count],
        open: vec![0; count],
        next_instance: 0,
        apps,
        next_app: 0,
        queue: BinaryHeap::new(),
        sequence: 0,
        outcome: Outcome {
            reconnects: vec![0; buckets],
            ..Outcome::default()
        },
    };
    world.fleet.instances = instances;
    world.schedule_start();
    let end = us(fleet.duration);
    while let Some(Reverse((time, _, event))) = world.queue.pop() {
        if time > end {
            break;
        }
        world.handle(time, event);
    }
    world.outcome.open_per_instance = world.open;
    world.outcome
}

impl World {
    fn push(&mut self, time: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((time, self.sequence, event)));
    }

    fn schedule_start(&mut self) {
        let ramp = us(self.fleet.ramp);
        for client in 0..self.fleet.clients {
            let at = fraction_of(ramp, &mut self.rng);
            self.push(at, Event::Connect { client });
        }
        match self.scenario {
            Scenario::RollingDeploy { start, step, .. } => {
                for instance in 0..self.fleet.instances {
                    let at = us(start) + us(step) * u64::from(instance);
                    self.push(at, Event::Drain { instance });
                }
            }
            Scenario::InstanceLoss { at, down } => {
                self.push(us(at), Event::Stop { instance: 0 });
                self.push(us(at + down), Event::Ready { instance: 0 });
            }
            Scenario::LifetimeRotation { .. } => {}
            Scenario::AppRestart { apps, start, step } => {
                for app in 0..apps {
                    let at = us(start) + us(step) * u64::from(app);
                    self.push(at, Event::AppRestart { app });
                }
            }
        }
    }

    fn index(value: u32) -> usize {
        usize::try_from(value).unwrap_or(usize::MAX)
    }

    fn handle(&mut self, now: u64, event: Event) {
        match event {
            Event::Connect { client } => self.connect(now, client),
            Event::EndStream { client, generation } => {
                let Some(state) = self.clients.get(Self::index(client)) else {
                    return;
                };
                if state.generation == generation && state.instance.is_some() {
                    let hint = self.final_hint();
                    self.disconnect(now, client, Some(hint));
                }
            }
            Event::Drain { instance } => self.drain(now, instance),
            Event::Stop { instance } => {
                if let Some(up) = self.up.get_mut(Self::index(instance)) {
                    *up = false;
                }
                if let Some(ready) = self.ready.get_mut(Self::index(instance)) {
                    *ready = false;
                }
                for client in 0..self.fleet.clients {
                    if self
                        .clients
                        .get(Self::index(client))
                        .is_some_and(|c| c.instance == Some(instance))
                    {
                        self.disconnect(now, client, None);
                    }
                }
            }
            Event::Ready { instance } => {
                if let Some(up) = self.up.get_mut(Self::index(instance)) {
                    *up = true;
                }
                if let Some(ready) = self.ready.get_mut(Self::index(instance)) {
                    *ready = true;
                }
            }
            Event::AppRestart { app } => {
                for client in 0..self.fleet.clients {
                    let Some(state) = self.clients.get_mut(Self::index(client)) else {
                        continue;
                    };
                    if state.instance.is_none() || state.app != app {
                        continue;
                    }
                    if self.settings.resume {
                        // The proxy re-requests the stream from the next app, with the last
                        // event's id; the client's response stays open.
                        state.app = (app + 1) % self.apps;
                        self.outcome.resumed += 1;
                    } else {
                        self.disconnect(now, client, None);
                    }
                }
            }
        }
    }

    /// The hint the layer writes when it ends a stream itself.
    fn final_hint(&mut self) -> u64 {
        let retry = us(self.settings.retry);
        if self.settings.final_hint_jitter {
            let jitter = self.settings.retry_jitter.max(FINAL_HINT_JITTER);
            jittered(retry, jitter, &mut self.rng)
        } else {
            retry
        }
    }

    fn connect(&mut self, now: u64, client: u32) {
        let index = Self::index(client);
        let Some(state) = self.clients.get_mut(index) else {
            return;
        };
        if state.connected_once {
            let bucket = Self::index(u32::try_from(now / BUCKET_US).unwrap_or(u32::MAX));
            if let Some(count) = self.outcome.reconnects.get_mut(bucket) {
                *count += 1;
            }
        }
        state.connected_once = true;
        // Round robin over the ready instances.
        let n = self.fleet.instances;
        let mut chosen = None;
        for offset in 0..n {
            let candidate = (self.next_instance + offset) % n;
            if self.ready.get(Self::index(candidate)).copied() == Some(true) {
                chosen = Some(candidate);
                self.next_instance = (candidate + 1) % n;
                break;
            }
        }
        let retry_us = state.retry_us;
        let latency = us(self.fleet.connect_latency);
        let Some(instance) = chosen else {
            // No instance ready: the connection fails, the client waits its retry.
            self.push(now + latency + retry_us, Event::Connect { client });
            return;
        };
        let open = self.open.get(Self::index(instance)).copied().unwrap_or(0);
        if self.fleet.capacity > 0 && open >= self.fleet.capacity {
            self.outcome.refused += 1;
            self.push(now + latency + retry_us, Event::Connect { client });
            return;
        }
        if let Some(open) = self.open.get_mut(Self::index(instance)) {
            *open += 1;
        }
        let hint = jittered(
            us(self.settings.retry),
            self.settings.retry_jitter,
            &mut self.rng,
        );
        let app = self.next_app;
        self.next_app = (self.next_app + 1) % self.apps;
        let Some(state) = self.clients.get_mut(index) else {
            return;
        };
        state.instance = Some(instance);
        state.app = app;
        state.generation = state.generation.wrapping_add(1);
        state.retry_us = hint;
        let generation = state.generation;
        if let Scenario::LifetimeRotation { lifetime } = self.scenario {
            let cut = fraction_of(us(lifetime), &mut self.rng);
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "durations far below 2^53 µs, the factor in 0..=1"
            )]
            let cut = (cut as f64 * self.settings.lifetime_jitter.clamp(0.0, 1.0)) as u64;
            let end = now + latency + us(lifetime) - cut;
            self.push(end, Event::EndStream { client, generation });
        }
    }

    /// The client's stream ends now; it reconnects after `hint` (a final hint the layer wrote)
    /// or its last hint.
    fn disconnect(&mut self, now: u64, client: u32, hint: Option<u64>) {
        let Some(state) = self.clients.get_mut(Self::index(client)) else {
            return;
        };
        let Some(instance) = state.instance.take() else {
            return;
        };
        if let Some(hint) = hint {
            state.retry_us = hint;
        }
        let wait = state.retry_us;
        if let Some(open) = self.open.get_mut(Self::index(instance)) {
            *open = open.saturating_sub(1);
        }
        let noticed =
            us(self.fleet.close_delay) + fraction_of(us(self.fleet.close_spread), &mut self.rng);
        self.push(now + noticed + wait, Event::Connect { client });
    }

    fn drain(&mut self, now: u64, instance: u32) {
        if let Some(ready) = self.ready.get_mut(Self::index(instance)) {
            *ready = false;
        }
        let window = us(self.settings.drain_window);
        for client in 0..self.fleet.clients {
            let Some(state) = self.clients.get(Self::index(client)) else {
                continue;
            };
            if state.instance != Some(instance) {
                continue;
            }
            let generation = state.generation;
            let at = now + fraction_of(window, &mut self.rng);
            self.push(at, Event::EndStream { client, generation });
        }
        let Scenario::RollingDeploy { restart, .. } = self.scenario else {
            return;
        };
        // The instance exits when the window closes (its last streams end just before) and is
        // ready again `restart` later.
        self.push(now + window + 1, Event::Stop { instance });
        self.push(now + window + 1 + us(restart), Event::Ready { instance });
    }
}

/// A named scenario with the run's shape, the way the CLI and FLEET.md name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Named {
    /// Every instance drained and restarted in turn.
    RollingDeploy,
    /// One instance killed with -9.
    InstanceLoss,
    /// Streams ended at a maximum lifetime.
    LifetimeRotation,
    /// The app instances behind the proxies restarted in turn.
    AppRestart,
}

impl Named {
    /// Every named scenario.
    pub const ALL: [Self; 4] = [
        Self::RollingDeploy,
        Self::InstanceLoss,
        Self::LifetimeRotation,
        Self::AppRestart,
    ];

    /// The name used on the command line and in file names.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::RollingDeploy => "rolling-deploy",
            Self::InstanceLoss => "instance-loss",
            Self::LifetimeRotation => "lifetime-rotation",
            Self::AppRestart => "app-restart",
        }
    }
}

/// The timing of the named scenarios (shared by the simulation and the loopback script).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the scenario's first action happens.
    pub start: Duration,
    /// Between the restarts of two instances (rolling deploy and app restart).
    pub step: Duration,
    /// From the end of a drain until the instance is ready again.
    pub restart: Duration,
    /// How long a killed instance stays down.
    pub down: Duration,
    /// The maximum lifetime of the rotation scenario.
    pub lifetime: Duration,
    /// The number of app instances.
    pub apps: u32,
}

impl Named {
    /// The scenario, with the given timing, for a fleet of `instances`.
    #[must_use]
    pub const fn scenario(self, timing: &Timing) -> Scenario {
        match self {
            Self::RollingDeploy => Scenario::RollingDeploy {
                start: timing.start,
                step: timing.step,
                restart: timing.restart,
            },
            Self::InstanceLoss => Scenario::InstanceLoss {
                at: timing.start,
                down: timing.down,
            },
            Self::LifetimeRotation => Scenario::LifetimeRotation {
                lifetime: timing.lifetime,
            },
            Self::AppRestart => Scenario::AppRestart {
                apps: timing.apps,
                start: timing.start,
                step: timing.step,
            },
        }
    }

    /// How long a run of this scenario lasts: until the last action's reconnects are over.
    #[must_use]
    pub fn duration(self, timing: &Timing, instances: u32, drain_window: Duration) -> Duration {
        let tail = Duration::from_secs(10);
        match self {
            Self::RollingDeploy => {
                timing.start + timing.step * instances.saturating_sub(1) + drain_window + tail
            }
            Self::InstanceLoss => timing.start + timing.down.max(Duration::from_secs(5)) + tail,
            Self::LifetimeRotation => timing.lifetime * 2 + tail,
            Self::AppRestart => timing.start + timing.step * timing.apps.saturating_sub(1) + tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(instances: u32, clients: u32, seconds: u64) -> Fleet {
        Fleet {
            instances,
            clients,
            capacity: 0,
            ramp: Duration::from_secs(2),
            connect_latency: Duration::ZERO,
            close_delay: Duration::ZERO,
            close_spread: Duration::ZERO,
            duration: Duration::from_secs(seconds),
            seed: 7,
        }
    }

    fn reconnect_times(outcome: &Outcome) -> Vec<usize> {
        outcome
            .reconnects
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_kill_without_jitter_puts_every_reconnect_of_the_instance_in_one_bucket() {
        let outcome = run(
            fleet(4, 4000, 20),
            Settings::without(),
            Scenario::InstanceLoss {
                at: Duration::from_secs(5),
                down: Duration::from_secs(5),
            },
        );
        // 1000 clients on the dead instance, all back 3 s after the kill.
        assert_eq!(outcome.total(), 1000);
        assert_eq!(outcome.reconnects[80], 1000, "{outcome}");
        assert_eq!(
            outcome.peak_from(Duration::ZERO),
            (Duration::from_secs(8), 1000)
        );
    }

    #[test]
    fn a_jittered_retry_spreads_reconnects_over_plus_minus_j() {
        let settings = Settings {
            retry_jitter: 0.5,
            ..Settings::without()
        };
        let outcome = run(
            fleet(4, 4000, 20),
            settings,
            Scenario::InstanceLoss {
                at: Duration::from_secs(5),
                down: Duration::from_secs(5),
            },
        );
        assert_eq!(outcome.total(), 1000);
        let times = reconnect_times(&outcome);
        // Kill at 5 s, hints 1.5–4.5 s: buckets 65..=95.
        assert!(times.iter().all(|&b| (65..=95).contains(&b)), "{times:?}");
        assert!(times.len() >= 28, "{times:?}");
        // 1000 over 30 buckets: about 33 each.
        let (_, peak) = outcome.peak_from(Duration::ZERO);
        assert!((33..=60).contains(&peak), "{outcome}");
    }

    #[test]
    fn a_drain_over_w_spreads_n_reconnects_to_a_peak_near_n_tenth_over_w() {
        let window = Duration::from_secs(10);
        let settings = Settings {
            drain_window: window,
            final_hint_jitter: true,
            ..Settings::without()
        };
        // One instance of two drains: its 10,000 clients move to the other.
        let outcome = run(
            fleet(2, 20_000, 40),
            settings,
            Scenario::RollingDeploy {
                start: Duration::from_secs(5),
                step: Duration::from_secs(100),
                restart: Duration::from_secs(1),
            },
        );
        assert_eq!(outcome.total(), 10_000);
        // N · 0.1 / W = 100 per bucket; the final hint's jitter blurs the edges only.
        let (_, peak) = outcome.peak_from(Duration::ZERO);
        assert!((100..=150).contains(&peak), "{outcome}");
        let times = reconnect_times(&outcome);
        // Drain 5–15 s, hints 2.4–3.6 s: reconnects within 7.4–18.6 s.
        assert!(times.iter().all(|&b| (74..=186).contains(&b)), "{times:?}");
    }

    #[test]
    fn a_drain_with_window_zero_and_fixed_hint_is_one_storm() {
        let outcome = run(
            fleet(2, 2000, 40),
            Settings::without(),
            Scenario::RollingDeploy {
                start: Duration::from_secs(5),
                step: Duration::from_secs(100),
                restart: Duration::from_secs(1),
            },
        );
        assert_eq!(
            outcome.peak_from(Duration::ZERO),
            (Duration::from_secs(8), 1000)
        );
    }

    #[test]
    fn a_rolling_deploy_moves_every_client_and_keeps_them_all_connected() {
        let outcome = run(
            fleet(5, 5000, 80),
            Settings::with(Duration::from_secs(5)),
            Scenario::RollingDeploy {
                start: Duration::from_secs(5),
                step: Duration::from_secs(10),
                restart: Duration::from_secs(1),
            },
        );
        assert_eq!(outcome.open_per_instance.iter().sum::<u32>(), 5000);
        // Clients pile onto the instances restarted last; every client moved at least once.
        assert!(outcome.total() >= 5000, "{outcome}");
    }

    #[test]
    fn resume_turns_an_app_restart_into_zero_reconnects() {
        let scenario = Scenario::AppRestart {
            apps: 2,
            start: Duration::from_secs(5),
            step: Duration::from_secs(5),
        };
        let with = run(fleet(3, 3000, 20), Settings::with(Duration::ZERO), scenario);
        assert_eq!(with.total(), 0);
        // App 0's 1500 streams move to app 1, then app 1's 3000 move back to app 0.
        assert_eq!(with.resumed, 4500);
        let without = run(fleet(3, 3000, 20), Settings::without(), scenario);
        // App 0's 1500 clients reconnect at 8 s (half of them land on app 1), then app 1's
        // 2250 at 13 s.
        assert_eq!(without.total(), 3750);
        assert_eq!(
            without.peak_from(Duration::ZERO),
            (Duration::from_secs(13), 2250)
        );
    }

    #[test]
    fn lifetimes_without_jitter_repeat_the_first_connect_wave() {
        let lifetime = Duration::from_secs(20);
        let scenario = Scenario::LifetimeRotation { lifetime };
        let mut shape = fleet(2, 10_000, 30);
        shape.ramp = Duration::from_millis(100);
        let without = run(shape, Settings::without(), scenario);
        // Every stream ends at 20 s (+ ramp), reconnects 3 s later.
        assert_eq!(
            without.peak_from(Duration::ZERO),
            (Duration::from_secs(23), 10_000)
        );
        let with = run(shape, Settings::with(Duration::ZERO), scenario);
        let (_, peak) = with.peak_from(Duration::ZERO);
        // Spread over 4 s of lifetimes (20 %) and ±1.5 s of hints: well under a tenth.
        assert!(peak < 1000 / 3, "{with}");
    }

    #[test]
    fn a_full_instance_refuses_and_its_client_tries_again() {
        let mut shape = fleet(2, 300, 10);
        shape.capacity = 100;
        let outcome = run(
            shape,
            Settings::without(),
            Scenario::LifetimeRotation {
                lifetime: Duration::from_secs(3600),
            },
        );
        assert!(outcome.refused >= 100, "{outcome}");
        assert_eq!(outcome.open_per_instance, vec![100, 100]);
    }

    #[test]
    fn round_robin_spreads_clients_evenly() {
        let outcome = run(
            fleet(20, 100_000, 5),
            Settings::without(),
            Scenario::LifetimeRotation {
                lifetime: Duration::from_secs(3600),
            },
        );
        assert!(outcome.open_per_instance.iter().all(|&n| n == 5000));
    }

    #[test]
    fn a_slow_notice_of_the_close_delays_and_spreads_the_storm() {
        let mut shape = fleet(4, 4000, 20);
        shape.close_delay = Duration::from_millis(500);
        shape.close_spread = Duration::from_millis(1000);
        let outcome = run(
            shape,
            Settings::without(),
            Scenario::InstanceLoss {
                at: Duration::from_secs(5),
                down: Duration::from_secs(5),
            },
        );
        let times = reconnect_times(&outcome);
        // Kill at 5 s, 3 s hint, noticed 0.5–1.5 s later: buckets 85..=95, ~100 each.
        assert!(times.iter().all(|&b| (85..=95).contains(&b)), "{times:?}");
        assert!(outcome.peak_from(Duration::ZERO).1 < 200, "{outcome}");
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let scenario = Scenario::InstanceLoss {
            at: Duration::from_secs(3),
            down: Duration::from_secs(3),
        };
        let settings = Settings::with(Duration::from_secs(5));
        let a = run(fleet(3, 3000, 12), settings, scenario);
        let b = run(fleet(3, 3000, 12), settings, scenario);
        assert_eq!(a, b);
    }
}
