//! One timer wheel per tokio runtime, shared by every event stream polled on it.
//!
//! A stream's timer used to be a tokio [`Sleep`] of its own: 112 bytes per stream, and one entry
//! of tokio's timer to reset after every heartbeat. Here a stream holds an index into the wheel
//! (16 bytes with the wheel's handle); the wheel keeps one 32-byte slot per stream (its waker,
//! its tick and two links) in lists of the streams due at the same tick, and one task sleeps
//! until the earliest tick and wakes every stream due then, in one go.
//!
//! Deadlines are rounded up to the next [`TICK`] since the wheel was made (tokio's own timer
//! rounds up to the millisecond too): a stream's timer fires at most one tick after its deadline,
//! never before. Under tokio's paused clock (`start_paused`, `time::advance`) the wheel's task
//! sleeps on the paused clock like any other, so tests see the same times.
//!
//! The task runs while some stream waits on the wheel and ends when none does (a stream that
//! ends, or whose body is dropped, leaves the wheel at once); the next stream that waits starts a
//! new one. Streams are woken outside the wheel's lock.

use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::runtime::{Handle, Id};
use tokio::time::Instant;

/// The wheel's resolution: a timer fires at most this long after its deadline.
pub(crate) const TICK: Duration = Duration::from_millis(1);
/// The wheel's memory per stream that waits on it (besides a tick's entry of its own when no
/// other stream is due at the same tick).
#[cfg(test)]
pub(crate) const SLOT_SIZE: usize = std::mem::size_of::<Slot>();
/// "No slot", "no link".
const NIL: u32 = u32::MAX;
/// "Not registered".
const NONE: u64 = u64::MAX;

/// A stream's place in its runtime's wheel: nothing until it first waits.
#[derive(Debug, Default)]
pub(crate) struct SharedTimer {
    wheel: Option<Arc<Wheel>>,
    slot: u32,
}

impl SharedTimer {
    /// Creates a new [`SharedTimer`], not armed.
    pub(crate) const fn new() -> Self {
        Self {
            wheel: None,
            slot: NIL,
        }
    }

    /// Polls for `deadline`: ready once it has passed; otherwise the task is woken at most one
    /// [`TICK`] after it. A timer already set for an earlier tick is left as it is (it fires
    /// early, the caller polls again and the timer is set for what is left), so that traffic,
    /// which only moves deadlines later, costs no work here.
    ///
    /// Outside a tokio runtime nothing can wake the task: the timer never fires.
    pub(crate) fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        if self.wheel.is_none() {
            self.wheel = Wheel::current();
        }
        if let Some(wheel) = &self.wheel {
            wheel.register(&mut self.slot, deadline, cx.waker());
        }
        Poll::Pending
    }

    /// The first instant at or after `at` on a grid of `step` that every stream of this runtime
    /// shares (counted from when the runtime's wheel was made), so that deadlines aligned with
    /// the same `step` fall on the same ticks and are woken together. `at` itself when `step` is
    /// under two ticks, or outside a tokio runtime.
    pub(crate) fn align(&mut self, at: Instant, step: Duration) -> Instant {
        if step < TICK * 2 {
            return at;
        }
        if self.wheel.is_none() {
            self.wheel = Wheel::current();
        }
        self.wheel
            .as_ref()
            .map_or(at, |wheel| wheel.align(at, step))
    }

    /// Leaves the wheel (the stream is over); the slot goes back to the wheel.
    pub(crate) fn clear(&mut self) {
        if let Some(wheel) = &self.wheel
            && self.slot != NIL
        {
            wheel.release(self.slot);
            self.slot = NIL;
        }
    }
}

impl Drop for SharedTimer {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The wheel of one runtime.
struct Wheel {
    /// Tick 0.
    epoch: Instant,
    /// Where the wheel's task is spawned.
    handle: Handle,
    state: Mutex<State>,
}

impl std::fmt::Debug for Wheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel").finish_non_exhaustive()
    }
}

struct State {
    slots: Vec<Slot>,
    /// Released slots, reused first.
    free: Vec<u32>,
    /// Tick → the first slot of the list of slots due at that tick.
    ticks: BTreeMap<u64, u32>,
    /// Slots in a list.
    armed: usize,
    /// The task that sleeps until the first tick, if one runs.
    driver: Option<Driver>,
    /// Identifies drivers, so that one that ends late does not clear its successor.
    drivers: u64,
}

struct Slot {
    waker: Option<Waker>,
    /// The tick the slot is listed at, or [`NONE`].
    tick: u64,
    prev: u32,
    next: u32,
}

struct Driver {
    id: u64,
    waker: Option<Waker>,
    /// The tick its sleep is set for ([`NONE`]: not polled yet).
    at: u64,
}

/// What to do once the lock is released.
enum Then {
    Nothing,
    Spawn(u64),
    Wake(Waker),
}

impl Wheel {
    /// The wheel of the runtime this is called on, made on first use; `None` outside a runtime.
    fn current() -> Option<Arc<Self>> {
        static WHEELS: Mutex<Vec<(Id, Weak<Wheel>)>> = Mutex::new(Vec::new());
        let handle = Handle::try_current().ok()?;
        let id = handle.id();
        let mut wheels = WHEELS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(wheel) = wheels
            .iter()
            .find(|(of, _)| *of == id)
            .and_then(|(_, wheel)| wheel.upgrade())
        {
            return Some(wheel);
        }
        // Wheels of runtimes that are gone, or that no stream uses any more.
        wheels.retain(|(_, wheel)| wheel.strong_count() > 0);
        let wheel = Arc::new(Self {
            epoch: Instant::now(),
            handle,
            state: Mutex::new(State {
                slots: Vec::new(),
                free: Vec::new(),
                ticks: BTreeMap::new(),
                armed: 0,
                driver: None,
                drivers: 0,
            }),
        });
        wheels.push((id, Arc::downgrade(&wheel)));
        Some(wheel)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; were it poisoned, the state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first tick at or after `at`.
    fn tick_at_or_after(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        let tick = TICK.as_nanos();
        u64::try_from(nanos.div_ceil(tick)).unwrap_or(NONE - 1)
    }

    /// The last tick at or before `at`.
    fn tick_at_or_before(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos / TICK.as_nanos()).unwrap_or(NONE - 1)
    }

    fn instant(&self, tick: u64) -> Instant {
        let nanos = u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX);
        self.epoch
            .checked_add(Duration::from_nanos(tick.saturating_mul(nanos)))
            // Beyond what an `Instant` holds: as good as never.
            .unwrap_or_else(|| self.epoch + Duration::from_secs(86_400 * 365 * 30))
    }

    /// See [`SharedTimer::align`]; `step` is not zero.
    fn align(&self, at: Instant, step: Duration) -> Instant {
        // In u64 nanoseconds (584 years from the wheel's epoch): this runs at every wait of a
        // stream with heartbeats, and a u128 division is a call into compiler-builtins.
        let (Ok(since), Ok(step)) = (
            u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()),
            u64::try_from(step.as_nanos()),
        ) else {
            return at;
        };
        since
            .div_ceil(step.max(1))
            .checked_mul(step.max(1))
            .and_then(|nanos| self.epoch.checked_add(Duration::from_nanos(nanos)))
            // Beyond what an `Instant` holds: unaligned.
            .map_or(at, |aligned| aligned.max(at))
    }

    /// Lists `slot` (allocated if [`NIL`]) at the tick of `deadline`, unless it is listed at an
    /// earlier one; `waker` is the one woken.
    fn register(self: &Arc<Self>, slot: &mut u32, deadline: Instant, waker: &Waker) {
        let tick = self.tick_at_or_after(deadline);
        let then = {
            let mut state = self.lock();
            let state = &mut *state;
            if *slot == NIL {
                *slot = state.allocate();
            }
            let Some(entry) = state.slots.get_mut(*slot as usize) else {
                return;
            };
            match &entry.waker {
                Some(current) if current.will_wake(waker) => {}
                _ => entry.waker = Some(waker.clone()),
            }
            if entry.tick <= tick {
                return;
            }
            state.unlink(*slot);
            state.link(*slot, tick);
            match &mut state.driver {
                None => {
                    state.drivers += 1;
                    state.driver = Some(Driver {
                        id: state.drivers,
                        waker: None,
                        at: NONE,
                    });
                    Then::Spawn(state.drivers)
                }
                Some(driver) if tick < driver.at => {
                    driver.waker.take().map_or(Then::Nothing, Then::Wake)
                }
                Some(_) => Then::Nothing,
            }
        };
        match then {
            Then::Nothing => {}
            Then::Wake(waker) => waker.wake(),
            Then::Spawn(id) => {
                // Outside the lock: on a runtime that is shutting down the task is dropped at
                // once, and its guard takes the lock.
                let guard = DriverGuard {
                    wheel: Arc::clone(self),
                    id,
                };
                drop(self.handle.spawn(guard.run()));
            }
        }
    }

    /// Gives `slot` back: unlisted, its waker dropped.
    fn release(&self, slot: u32) {
        let wake = {
            let mut state = self.lock();
            state.unlink(slot);
            if let Some(entry) = state.slots.get_mut(slot as usize) {
                entry.waker = None;
                state.free.push(slot);
            }
            // The last stream left: the task ends now rather than at its next tick.
            let idle = state.armed == 0;
            match &mut state.driver {
                Some(driver) if idle => driver.waker.take(),
                _ => None,
            }
        };
        if let Some(waker) = wake {
            waker.wake();
        }
    }
}

impl State {
    fn allocate(&mut self) -> u32 {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        self.slots.push(Slot {
            waker: None,
            tick: NONE,
            prev: NIL,
            next: NIL,
        });
        u32::try_from(self.slots.len() - 1).unwrap_or(NIL)
    }

    fn entry(&mut self, slot: u32) -> Option<&mut Slot> {
        self.slots.get_mut(slot as usize)
    }

    /// Puts `slot` first in the list of `tick`.
    fn link(&mut self, slot: u32, tick: u64) {
        let head = self.ticks.insert(tick, slot).unwrap_or(NIL);
        if let Some(old) = self.entry(head) {
            old.prev = slot;
        }
        if let Some(entry) = self.entry(slot) {
            entry.tick = tick;
            entry.prev = NIL;
            entry.next = head;
            self.armed += 1;
        }
    }

    /// Takes `slot` out of its list, if it is in one.
    fn unlink(&mut self, slot: u32) {
        let Some(entry) = self.entry(slot) else {
            return;
        };
        if entry.tick == NONE {
            return;
        }
        let (tick, prev, next) = (entry.tick, entry.prev, entry.next);
        entry.tick = NONE;
        entry.prev = NIL;
        entry.next = NIL;
        self.armed -= 1;
        if let Some(after) = self.entry(next) {
            after.prev = prev;
        }
        if let Some(before) = self.entry(prev) {
            before.next = next;
        } else if next == NIL {
            self.ticks.remove(&tick);
        } else {
            self.ticks.insert(tick, next);
        }
    }

    /// Unlists every slot due at or before `through` and collects their wakers.
    fn expire(&mut self, through: u64, wake: &mut Vec<Waker>) {
        while let Some(first) = self.ticks.first_entry() {
            if *first.key() > through {
                break;
            }
            let mut slot = first.remove();
            while let Some(entry) = self.entry(slot) {
                slot = entry.next;
                entry.tick = NONE;
                entry.prev = NIL;
                entry.next = NIL;
                if let Some(waker) = entry.waker.take() {
                    wake.push(waker);
                }
                self.armed -= 1;
            }
        }
    }
}

/// The wheel's task; when it ends (or is dropped with its runtime), the wheel knows it.
struct DriverGuard {
    wheel: Arc<Wheel>,
    id: u64,
}

impl DriverGuard {
    async fn run(self) {
        let wheel = &self.wheel;
        let mut sleep = pin!(tokio::time::sleep_until(wheel.epoch));
        let mut set_for = NONE;
        let mut wake = Vec::new();
        poll_fn(|cx| {
            loop {
                // The tick the sleep fired for is due even if the clock reads a hair earlier.
                let mut through = wheel.tick_at_or_before(Instant::now());
                if set_for != NONE && sleep.is_elapsed() {
                    through = through.max(set_for);
                }
                let next = {
                    let mut state = wheel.lock();
                    if state.driver.as_ref().is_none_or(|d| d.id != self.id) {
                        // Replaced (it was dropped with its runtime and a new one started).
                        return Poll::Ready(());
                    }
                    state.expire(through, &mut wake);
                    let next = state.ticks.first_key_value().map(|(tick, _)| *tick);
                    let Some(driver) = state.driver.as_mut() else {
                        return Poll::Ready(());
                    };
                    let Some(next) = next else {
                        // No stream waits: the task ends.
                        state.driver = None;
                        drop(state);
                        wake.drain(..).for_each(Waker::wake);
                        return Poll::Ready(());
                    };
                    driver.at = next;
                    match &driver.waker {
                        Some(current) if current.will_wake(cx.waker()) => {}
                        _ => driver.waker = Some(cx.waker().clone()),
                    }
                    next
                };
                wake.drain(..).for_each(Waker::wake);
                if next != set_for {
                    sleep.as_mut().reset(wheel.instant(next));
                    set_for = next;
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await;
    }
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        let mut state = self.wheel.lock();
        if state.driver.as_ref().is_some_and(|d| d.id == self.id) {
            state.driver = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn poll_at(timer: &mut SharedTimer, deadline: Instant) -> Poll<()> {
        timer.poll_until(deadline, &mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_and_rearms_for_a_later_one() {
        let mut timer = SharedTimer::new();
        let start = Instant::now();
        poll_fn(|cx| timer.poll_until(start + Duration::from_secs(1), cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        poll_fn(|cx| timer.poll_until(start + Duration::from_secs(3), cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_between_ticks_fires_within_one_tick_after_it() {
        let mut timer = SharedTimer::new();
        let start = Instant::now();
        let deadline = start + Duration::from_micros(2_500);
        poll_fn(|cx| timer.poll_until(deadline, cx)).await;
        assert!(Instant::now() >= deadline);
        assert!(Instant::now() <= deadline + TICK, "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_timer_is_moved_earlier() {
        let mut timer = SharedTimer::new();
        let start = Instant::now();
        assert!(poll_at(&mut timer, start + Duration::from_secs(9)).is_pending());
        let woken = Arc::new(AtomicUsize::new(0));
        let waker = counting_waker(&woken);
        assert!(
            timer
                .poll_until(
                    start + Duration::from_secs(6),
                    &mut Context::from_waker(&waker)
                )
                .is_pending()
        );
        // The wheel's task runs at 6 s; the test looks a tick later.
        tokio::time::sleep(Duration::from_secs(6) + TICK).await;
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert!(poll_at(&mut timer, start + Duration::from_secs(6)).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn many_streams_due_at_one_tick_are_woken_together_and_the_task_ends() {
        let woken = Arc::new(AtomicUsize::new(0));
        let waker = counting_waker(&woken);
        let start = Instant::now();
        let mut timers: Vec<SharedTimer> = (0..100).map(|_| SharedTimer::new()).collect();
        for (i, timer) in timers.iter_mut().enumerate() {
            // Half at 1 s, half spread over the next tick.
            let at = start + Duration::from_secs(1) + Duration::from_micros((i % 2) as u64 * 700);
            assert!(
                timer
                    .poll_until(at, &mut Context::from_waker(&waker))
                    .is_pending()
            );
        }
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 100);
        let wheel = Arc::clone(timers[0].wheel.as_ref().unwrap());
        assert_eq!(wheel.lock().armed, 0);
        assert!(
            wheel.lock().driver.is_none(),
            "the task ends when no stream waits"
        );
        drop(timers);
        assert_eq!(wheel.lock().free.len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_timer_is_never_woken_and_its_slot_is_reused() {
        let woken = Arc::new(AtomicUsize::new(0));
        let waker = counting_waker(&woken);
        let start = Instant::now();
        let mut first = SharedTimer::new();
        let mut second = SharedTimer::new();
        for timer in [&mut first, &mut second] {
            assert!(
                timer
                    .poll_until(
                        start + Duration::from_secs(1),
                        &mut Context::from_waker(&waker)
                    )
                    .is_pending()
            );
        }
        let slot = first.slot;
        drop(first);
        let mut third = SharedTimer::new();
        assert!(poll_at(&mut third, start + Duration::from_secs(5)).is_pending());
        assert_eq!(third.slot, slot);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(woken.load(Ordering::SeqCst), 1, "only the second timer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_honoured_after_an_early_fire() {
        let mut timer = SharedTimer::new();
        let start = Instant::now();
        assert!(poll_at(&mut timer, start + Duration::from_secs(5)).is_pending());
        tokio::time::sleep(Duration::from_secs(5)).await;
        // The deadline moved to 9 s meanwhile: the timer that fired is set again, not reported.
        assert!(poll_at(&mut timer, start + Duration::from_secs(9)).is_pending());
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(poll_at(&mut timer, start + Duration::from_secs(9)).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn aligned_deadlines_share_a_grid_and_are_never_early() {
        let (mut first, mut second) = (SharedTimer::new(), SharedTimer::new());
        let start = Instant::now();
        let step = Duration::from_millis(100);
        let ms = |n| start + Duration::from_millis(n);
        // The runtime's wheel is made by the first call: its grid starts now.
        assert_eq!(first.align(ms(1_201), step), ms(1_300));
        assert_eq!(second.align(ms(1_299), step), ms(1_300));
        assert_eq!(second.align(ms(1_300), step), ms(1_300));
        assert_eq!(second.align(ms(1_300) + TICK / 2, step), ms(1_400));
        // Under two ticks: no grid.
        assert_eq!(first.align(ms(1_201), TICK), ms(1_201));
        assert_eq!(first.align(ms(1_201), Duration::ZERO), ms(1_201));
    }

    #[test]
    fn outside_a_runtime_nothing_is_aligned() {
        let mut timer = SharedTimer::new();
        let at = Instant::now() + Duration::from_millis(1_234);
        assert_eq!(timer.align(at, Duration::from_secs(1)), at);
    }

    #[test]
    fn outside_a_runtime_the_timer_never_fires() {
        let mut timer = SharedTimer::new();
        let far = Instant::now() + Duration::from_secs(60);
        assert!(poll_at(&mut timer, far).is_pending());
        assert!(timer.wheel.is_none());
        assert!(poll_at(&mut timer, Instant::now()).is_ready());
    }

    #[test]
    fn a_streams_handle_and_slot_are_small() {
        assert_eq!(std::mem::size_of::<SharedTimer>(), 16);
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }

    fn counting_waker(count: &Arc<AtomicUsize>) -> Waker {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        Waker::from(Arc::new(Count(Arc::clone(count))))
    }
}
