//! Count-based circuit breaker per service, in Resilience4j's model (the one Spring Cloud
//! Gateway uses).
//!
//! Closed counts the outcomes of the last `window` calls; once at least `minimum_calls` are
//! counted (at most `window`) and failures are at least `failure_rate_percent` of them, the
//! circuit opens and refuses calls for `open_ms`. Then it is half open: `half_open_calls`
//! trial calls go through and the others are refused; when all trials are recorded, a failure
//! rate at or above the threshold opens it again, otherwise it closes with a fresh window.
//!
//! Every transition bumps a generation; a permit is counted only in the generation that issued
//! it, so calls started before the circuit opened cannot decide a half-open trial. Whether a
//! call is allowed is read from atomics while closed or open; recording takes the breaker's own
//! short mutex (one per service).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use crate::settings::CircuitBreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// For metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// The settings one breaker works with, made sane: sizes at least 1, the rate 1..=100 (0 %
/// would open on success alone), the minimum at most the window (as Resilience4j does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    enabled: bool,
    window: u32,
    minimum_calls: u32,
    failure_rate_percent: u32,
    open_ms: u64,
    half_open_calls: u32,
}

impl Config {
    fn from(s: &CircuitBreakerSettings) -> Config {
        let window = s.window.max(1);
        Config {
            enabled: s.enabled,
            window,
            minimum_calls: s.minimum_calls.clamp(1, window),
            failure_rate_percent: s.failure_rate_percent.clamp(1, 100),
            open_ms: s.open_ms,
            half_open_calls: s.half_open_calls.max(1),
        }
    }

    fn trips(&self, failures: u32, calls: u32) -> bool {
        u64::from(failures) * 100 >= u64::from(self.failure_rate_percent) * u64::from(calls)
    }
}

/// Statuses 0..1024, one bit each, so checking one takes no lock.
const STATUS_WORDS: usize = 16;

pub struct Breakers {
    failure_statuses: [AtomicU64; STATUS_WORDS],
    registry: RwLock<Registry>,
}

struct Registry {
    config: Config,
    /// Keyed by the lowercased service name.
    breakers: foldhash::HashMap<Box<str>, Arc<Breaker>>,
}

impl Breakers {
    pub fn new(settings: &CircuitBreakerSettings) -> Breakers {
        let breakers = Breakers {
            failure_statuses: std::array::from_fn(|_| AtomicU64::new(0)),
            registry: RwLock::new(Registry {
                config: Config::from(settings),
                breakers: foldhash::HashMap::default(),
            }),
        };
        breakers.set_statuses(&settings.failure_statuses);
        breakers
    }

    fn set_statuses(&self, statuses: &[u16]) {
        let mut words = [0u64; STATUS_WORDS];
        for &status in statuses {
            let status = usize::from(status);
            if status < STATUS_WORDS * 64 {
                words[status / 64] |= 1 << (status % 64);
            }
        }
        for (slot, word) in self.failure_statuses.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
    }

    /// Live reload. A breaker keeps its state unless it was enabled or disabled (then it starts
    /// closed and empty); its window is emptied if the window size changed, and a half-open
    /// phase starts over if the number of trials changed.
    pub fn set_settings(&self, settings: &CircuitBreakerSettings) {
        self.set_statuses(&settings.failure_statuses);
        let config = Config::from(settings);
        let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
        registry.config = config;
        for breaker in registry.breakers.values() {
            breaker.reconfigure(config);
        }
    }

    /// Whether an upstream answer with `status` counts as a failure (`failure_statuses`).
    pub fn counts_as_failure(&self, status: u16) -> bool {
        let status = usize::from(status);
        status < STATUS_WORDS * 64
            && self.failure_statuses[status / 64].load(Ordering::Relaxed) & (1 << (status % 64))
                != 0
    }

    /// The breaker of `service` (names compared ignoring ASCII case). After the first call for
    /// a service this is a read lock and a lookup, without allocation.
    pub fn get(&self, service: &str) -> Arc<Breaker> {
        with_ascii_lowercase(service, |name| {
            {
                let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
                if let Some(breaker) = registry.breakers.get(name) {
                    return breaker.clone();
                }
            }
            let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
            let config = registry.config;
            registry
                .breakers
                .entry(name.into())
                .or_insert_with(|| Arc::new(Breaker::new(config)))
                .clone()
        })
    }

    /// Every service's state, by lowercased name, sorted.
    pub fn states(&self, now_ms: u64) -> Vec<(String, State)> {
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        let mut states: Vec<_> = registry
            .breakers
            .iter()
            .map(|(name, breaker)| (name.to_string(), breaker.state(now_ms)))
            .collect();
        states.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

/// Runs `f` on `s` lowercased (ASCII), copying only when `s` has capitals, on the stack when it
/// is short.
pub(crate) fn with_ascii_lowercase<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    const STACK: usize = 64;
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(s);
    }
    if s.len() <= STACK {
        let mut buf = [0u8; STACK];
        let bytes = &mut buf[..s.len()];
        bytes.copy_from_slice(s.as_bytes());
        bytes.make_ascii_lowercase();
        // Lowercasing ASCII bytes keeps UTF-8 valid; the fallback below is never needed.
        if let Ok(lower) = std::str::from_utf8(bytes) {
            return f(lower);
        }
    }
    f(&s.to_ascii_lowercase())
}

// `fast` word: generation << 2 | one of these.
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const DISABLED: u64 = 3;

pub struct Breaker {
    inner: Arc<Inner>,
}

struct Inner {
    /// Mirror of the core's generation and state, written under the lock, read without it.
    fast: AtomicU64,
    /// Mirror of `Core::open_until`.
    open_until: AtomicU64,
    core: Mutex<Core>,
}

struct Core {
    config: Config,
    state: State,
    generation: u64,
    open_until: u64,
    /// Closed: the last `window` outcomes, one bit each (set: failure), as a ring.
    ring: Vec<u64>,
    counted: u32,
    next: u32,
    failures: u32,
    /// Half open: trial permits handed out (outstanding or recorded), and recorded results.
    issued: u32,
    trial_successes: u32,
    trial_failures: u32,
}

impl Core {
    fn new(config: Config) -> Core {
        Core {
            config,
            state: State::Closed,
            generation: 0,
            open_until: 0,
            ring: vec![0; ring_words(config.window)],
            counted: 0,
            next: 0,
            failures: 0,
            issued: 0,
            trial_successes: 0,
            trial_failures: 0,
        }
    }

    fn clear_window(&mut self) {
        self.ring.clear();
        self.ring.resize(ring_words(self.config.window), 0);
        self.counted = 0;
        self.next = 0;
        self.failures = 0;
    }

    fn enter(&mut self, state: State, now_ms: u64) {
        self.generation += 1;
        self.state = state;
        self.issued = 0;
        self.trial_successes = 0;
        self.trial_failures = 0;
        match state {
            State::Open => self.open_until = now_ms.saturating_add(self.config.open_ms),
            State::Closed => self.clear_window(),
            State::HalfOpen => {}
        }
    }

    /// Open turns half open once its time is up.
    fn advance(&mut self, now_ms: u64) {
        if self.state == State::Open && now_ms >= self.open_until {
            self.enter(State::HalfOpen, now_ms);
        }
    }

    fn fast_word(&self) -> u64 {
        let code = if !self.config.enabled {
            DISABLED
        } else {
            match self.state {
                State::Closed => CLOSED,
                State::Open => OPEN,
                State::HalfOpen => HALF_OPEN,
            }
        };
        (self.generation << 2) | code
    }

    /// Counts a closed-state outcome; true when the window now trips the circuit.
    fn count(&mut self, failure: bool) -> bool {
        let window = self.config.window;
        let (word, bit) = (self.next as usize / 64, 1u64 << (self.next % 64));
        if self.counted == window {
            // Full: the slot being written holds the oldest outcome.
            if self.ring[word] & bit != 0 {
                self.failures -= 1;
            }
        } else {
            self.counted += 1;
        }
        if failure {
            self.ring[word] |= bit;
            self.failures += 1;
        } else {
            self.ring[word] &= !bit;
        }
        self.next = (self.next + 1) % window;
        self.counted >= self.config.minimum_calls && self.config.trips(self.failures, self.counted)
    }
}

fn ring_words(window: u32) -> usize {
    (window as usize).div_ceil(64)
}

impl Breaker {
    fn new(config: Config) -> Breaker {
        let core = Core::new(config);
        Breaker {
            inner: Arc::new(Inner {
                fast: AtomicU64::new(core.fast_word()),
                open_until: AtomicU64::new(0),
                core: Mutex::new(core),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.inner.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reconfigure(&self, config: Config) {
        let mut core = self.lock();
        let old = core.config;
        core.config = config;
        if old.enabled != config.enabled {
            core.enter(State::Closed, 0);
        } else {
            if old.window != config.window {
                core.clear_window();
            }
            if old.half_open_calls != config.half_open_calls && core.state == State::HalfOpen {
                core.enter(State::HalfOpen, 0);
            }
        }
        self.inner.publish(&core);
    }

    /// Ok while closed, and for the half-open trial slots. Err while open: the time until it
    /// turns half open; Err(ZERO) while half open with every trial slot taken (the trials in
    /// flight decide).
    pub fn try_acquire(&self, now_ms: u64) -> Result<Permit, Duration> {
        let fast = self.inner.fast.load(Ordering::Acquire);
        match fast & 3 {
            DISABLED => return Ok(Permit::none()),
            CLOSED => return Ok(Permit::new(&self.inner, fast >> 2, false)),
            OPEN => {
                let until = self.inner.open_until.load(Ordering::Acquire);
                if now_ms < until {
                    return Err(Duration::from_millis(until - now_ms));
                }
            }
            _ => {}
        }
        let mut core = self.lock();
        core.advance(now_ms);
        let result = match core.state {
            _ if !core.config.enabled => Ok(Permit::none()),
            State::Closed => Ok(Permit::new(&self.inner, core.generation, false)),
            State::Open => Err(Duration::from_millis(
                core.open_until.saturating_sub(now_ms),
            )),
            State::HalfOpen if core.issued < core.config.half_open_calls => {
                core.issued += 1;
                Ok(Permit::new(&self.inner, core.generation, true))
            }
            State::HalfOpen => Err(Duration::ZERO),
        };
        self.inner.publish(&core);
        result
    }

    /// The state as of `now_ms` (an open circuit whose time is up reads as half open). A
    /// disabled breaker reads as closed.
    pub fn state(&self, now_ms: u64) -> State {
        let fast = self.inner.fast.load(Ordering::Acquire);
        match fast & 3 {
            CLOSED | DISABLED => State::Closed,
            OPEN if now_ms < self.inner.open_until.load(Ordering::Acquire) => State::Open,
            _ => State::HalfOpen,
        }
    }
}

impl Inner {
    fn publish(&self, core: &Core) {
        self.open_until.store(core.open_until, Ordering::Release);
        self.fast.store(core.fast_word(), Ordering::Release);
    }
}

/// Leave to call: `record` it, or drop it (then it is not counted, and a half-open trial slot
/// is given back).
pub struct Permit {
    /// None when the breaker is disabled: nothing to count.
    inner: Option<Arc<Inner>>,
    generation: u64,
    trial: bool,
}

impl Permit {
    fn none() -> Permit {
        Permit {
            inner: None,
            generation: 0,
            trial: false,
        }
    }

    fn new(inner: &Arc<Inner>, generation: u64, trial: bool) -> Permit {
        Permit {
            inner: Some(inner.clone()),
            generation,
            trial,
        }
    }

    /// Counts the call's outcome (ignored if the circuit changed state since the permit was
    /// given).
    pub fn record(mut self, success: bool, now_ms: u64) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let mut core = inner.core.lock().unwrap_or_else(|e| e.into_inner());
        if core.generation != self.generation || !core.config.enabled {
            return;
        }
        match core.state {
            State::Closed if !self.trial => {
                let tripped = core.count(!success);
                if tripped {
                    core.enter(State::Open, now_ms);
                    inner.publish(&core);
                }
            }
            State::HalfOpen if self.trial => {
                if success {
                    core.trial_successes += 1;
                } else {
                    core.trial_failures += 1;
                }
                let calls = core.config.half_open_calls;
                let recorded = core.trial_successes + core.trial_failures;
                if recorded >= calls {
                    let next = if core.config.trips(core.trial_failures, recorded) {
                        State::Open
                    } else {
                        State::Closed
                    };
                    core.enter(next, now_ms);
                    inner.publish(&core);
                }
            }
            _ => {}
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Only an unrecorded trial permit has something to give back.
        let Some(inner) = self.inner.take() else {
            return;
        };
        if !self.trial {
            return;
        }
        let mut core = inner.core.lock().unwrap_or_else(|e| e.into_inner());
        if core.generation == self.generation && core.state == State::HalfOpen {
            core.issued = core.issued.saturating_sub(1);
        }
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Breakers>();
    send_sync::<Breaker>();
    const fn send<T: Send>() {}
    send::<Permit>();
};

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(window: u32, minimum_calls: u32, rate: u32) -> CircuitBreakerSettings {
        CircuitBreakerSettings {
            enabled: true,
            window,
            minimum_calls,
            failure_rate_percent: rate,
            open_ms: 5_000,
            half_open_calls: 3,
            failure_statuses: vec![502, 503, 504],
        }
    }

    fn call(breaker: &Breaker, success: bool, now_ms: u64) {
        match breaker.try_acquire(now_ms) {
            Ok(permit) => permit.record(success, now_ms),
            Err(wait) => panic!("refused while expecting a permit (wait {wait:?})"),
        }
    }

    /// Opens `breaker` at `now_ms` (window 4, minimum 4, 50 %).
    fn trip(breaker: &Breaker, now_ms: u64) {
        for _ in 0..4 {
            call(breaker, false, now_ms);
        }
        assert_eq!(breaker.state(now_ms), State::Open);
    }

    #[test]
    fn stays_closed_under_the_minimum() {
        let breakers = Breakers::new(&settings(20, 10, 50));
        let b = breakers.get("svc");
        for _ in 0..9 {
            call(&b, false, 1_000);
        }
        assert_eq!(b.state(1_000), State::Closed);
        assert!(b.try_acquire(1_000).is_ok());
        // The tenth counted outcome reaches the minimum: 10 failures of 10 open it.
        call(&b, false, 1_000);
        assert_eq!(b.state(1_000), State::Open);
    }

    #[test]
    fn opens_exactly_at_the_threshold() {
        let breakers = Breakers::new(&settings(10, 10, 50));
        let below = breakers.get("below");
        for i in 0..10 {
            call(&below, i >= 4, 0); // 4 failures of 10: 40 %
        }
        assert_eq!(below.state(0), State::Closed);

        let at = breakers.get("at");
        for i in 0..9 {
            call(&at, i >= 5, 0); // 5 failures, 4 successes: under the minimum still
        }
        assert_eq!(at.state(0), State::Closed);
        call(&at, true, 0); // 5 of 10: 50 %
        assert_eq!(at.state(0), State::Open);
    }

    #[test]
    fn window_slides_old_outcomes_out() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        // F S S S: 25 %; then S evicts the F: 0 %.
        for success in [false, true, true, true, true] {
            call(&b, success, 0);
        }
        // S S S F: 25 %.
        call(&b, false, 0);
        assert_eq!(b.state(0), State::Closed);
        // S S F F: 50 % of the last four (3 failures of 7 overall would be 43 %).
        call(&b, false, 0);
        assert_eq!(b.state(0), State::Open);
    }

    #[test]
    fn refuses_while_open_with_the_remaining_time() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        trip(&b, 10_000);
        assert_eq!(
            b.try_acquire(10_000).err(),
            Some(Duration::from_millis(5_000))
        );
        assert_eq!(
            b.try_acquire(12_500).err(),
            Some(Duration::from_millis(2_500))
        );
        assert_eq!(b.try_acquire(14_999).err(), Some(Duration::from_millis(1)));
        assert_eq!(b.state(14_999), State::Open);
        assert_eq!(b.state(15_000), State::HalfOpen);
        assert!(b.try_acquire(15_000).is_ok());
    }

    #[test]
    fn half_open_admits_exactly_the_trial_calls() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        trip(&b, 0);
        let trials: Vec<_> = (0..3).map(|_| b.try_acquire(5_000)).collect();
        assert!(trials.iter().all(Result::is_ok));
        assert_eq!(b.try_acquire(5_000).err(), Some(Duration::ZERO));
        assert_eq!(b.try_acquire(9_000).err(), Some(Duration::ZERO));
        assert_eq!(b.state(9_000), State::HalfOpen);
    }

    #[test]
    fn good_trials_close_with_a_fresh_window() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        trip(&b, 0);
        let trials: Vec<_> = (0..3).filter_map(|_| b.try_acquire(5_000).ok()).collect();
        assert_eq!(trials.len(), 3);
        let mut trials = trials.into_iter();
        // One failure of three (33 %) is under 50 %; the state holds until all are in.
        if let Some(t) = trials.next() {
            t.record(false, 5_001);
        }
        assert_eq!(b.state(5_001), State::HalfOpen);
        for t in trials {
            t.record(true, 5_002);
        }
        assert_eq!(b.state(5_002), State::Closed);
        // Fresh window: three failures are under the minimum of four.
        for _ in 0..3 {
            call(&b, false, 5_003);
        }
        assert_eq!(b.state(5_003), State::Closed);
    }

    #[test]
    fn bad_trials_open_again() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        trip(&b, 0);
        let trials: Vec<_> = (0..3).filter_map(|_| b.try_acquire(5_000).ok()).collect();
        assert_eq!(trials.len(), 3);
        // Two failures of three: 67 %.
        for (i, t) in trials.into_iter().enumerate() {
            t.record(i == 0, 6_000);
        }
        assert_eq!(b.state(6_000), State::Open);
        assert_eq!(
            b.try_acquire(6_000).err(),
            Some(Duration::from_millis(5_000))
        );
        assert_eq!(b.state(11_000), State::HalfOpen);
    }

    #[test]
    fn dropped_trial_permits_free_their_slot() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        trip(&b, 0);
        let mut trials: Vec<_> = (0..3).filter_map(|_| b.try_acquire(5_000).ok()).collect();
        assert_eq!(trials.len(), 3);
        assert!(b.try_acquire(5_000).is_err());
        trials.pop();
        let again = b.try_acquire(5_000);
        assert!(again.is_ok());
        assert!(b.try_acquire(5_000).is_err());
        // The dropped one is not counted: the two left and the new one decide.
        for t in trials {
            t.record(true, 5_100);
        }
        assert_eq!(b.state(5_100), State::HalfOpen);
        if let Ok(t) = again {
            t.record(true, 5_100);
        }
        assert_eq!(b.state(5_100), State::Closed);
    }

    #[test]
    fn dropped_closed_permits_are_not_counted() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        for _ in 0..10 {
            drop(b.try_acquire(0));
        }
        for _ in 0..3 {
            call(&b, false, 0);
        }
        assert_eq!(b.state(0), State::Closed);
    }

    #[test]
    fn permits_from_before_opening_do_not_count_as_trials() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        let early: Vec<_> = (0..5).filter_map(|_| b.try_acquire(0).ok()).collect();
        assert_eq!(early.len(), 5);
        trip(&b, 0);
        let trials: Vec<_> = (0..3).filter_map(|_| b.try_acquire(5_000).ok()).collect();
        assert_eq!(trials.len(), 3);
        for p in early {
            p.record(false, 5_000);
        }
        for t in trials {
            t.record(true, 5_000);
        }
        assert_eq!(b.state(5_000), State::Closed);
    }

    #[test]
    fn disabled_never_refuses() {
        let mut s = settings(4, 4, 50);
        s.enabled = false;
        let breakers = Breakers::new(&s);
        let b = breakers.get("svc");
        for _ in 0..100 {
            call(&b, false, 0);
        }
        assert_eq!(b.state(0), State::Closed);
        assert!(b.try_acquire(0).is_ok());
    }

    #[test]
    fn disabling_live_lets_an_open_circuit_through() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        trip(&b, 0);
        let mut s = settings(4, 4, 50);
        s.enabled = false;
        breakers.set_settings(&s);
        assert!(b.try_acquire(1).is_ok());
        assert_eq!(b.state(1), State::Closed);
        // Enabled again: closed with an empty window.
        breakers.set_settings(&settings(4, 4, 50));
        assert_eq!(b.state(2), State::Closed);
        for _ in 0..3 {
            call(&b, false, 2);
        }
        assert_eq!(b.state(2), State::Closed);
        call(&b, false, 2);
        assert_eq!(b.state(2), State::Open);
    }

    #[test]
    fn new_window_size_empties_the_window() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        for _ in 0..3 {
            call(&b, false, 0);
        }
        breakers.set_settings(&settings(6, 6, 50));
        // Had the three earlier failures been kept, the third below would open it.
        for _ in 0..5 {
            call(&b, false, 0);
        }
        assert_eq!(b.state(0), State::Closed);
        call(&b, false, 0);
        assert_eq!(b.state(0), State::Open);
        // A breaker created after the reload uses the new minimum (the old one, 4, would have
        // opened it).
        let c = breakers.get("other");
        for _ in 0..5 {
            call(&c, false, 0);
        }
        assert_eq!(c.state(0), State::Closed);
    }

    #[test]
    fn services_are_independent() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let a = breakers.get("a");
        let b = breakers.get("b");
        trip(&a, 0);
        assert_eq!(b.state(0), State::Closed);
        assert!(b.try_acquire(0).is_ok());
        assert!(a.try_acquire(0).is_err());
        assert_eq!(
            breakers.states(0),
            vec![
                ("a".to_string(), State::Open),
                ("b".to_string(), State::Closed)
            ]
        );
    }

    #[test]
    fn service_names_ignore_case() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let a = breakers.get("User-Service");
        let b = breakers.get("user-service");
        let c = breakers.get("USER-SERVICE");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &c));
        trip(&a, 0);
        assert_eq!(c.state(0), State::Open);
        assert_eq!(
            breakers.states(0),
            vec![("user-service".to_string(), State::Open)]
        );
        let long = "A".repeat(100);
        assert!(Arc::ptr_eq(
            &breakers.get(&long),
            &breakers.get(&long.to_lowercase())
        ));
    }

    #[test]
    fn failure_statuses() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        assert!(breakers.counts_as_failure(503));
        assert!(!breakers.counts_as_failure(500));
        assert!(!breakers.counts_as_failure(200));
        let mut s = settings(4, 4, 50);
        s.failure_statuses = vec![500, 429, 9999];
        breakers.set_settings(&s);
        assert!(breakers.counts_as_failure(500));
        assert!(breakers.counts_as_failure(429));
        assert!(!breakers.counts_as_failure(503));
        assert!(!breakers.counts_as_failure(9999));
    }

    #[test]
    fn threads_share_the_trial_slots() {
        let breakers = Breakers::new(&settings(4, 4, 50));
        let b = breakers.get("svc");
        trip(&b, 0);
        let permits = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        if let Ok(p) = b.try_acquire(5_000) {
                            permits.lock().unwrap_or_else(|e| e.into_inner()).push(p);
                        }
                    }
                });
            }
        });
        let permits = permits.into_inner().unwrap_or_else(|e| e.into_inner());
        assert_eq!(permits.len(), 3);
    }

    #[test]
    fn odd_settings_are_made_sane() {
        // Zero sizes: window 1, minimum 1, one trial; a 0 % rate counts as 1 %.
        let s = CircuitBreakerSettings {
            enabled: true,
            window: 0,
            minimum_calls: 0,
            failure_rate_percent: 0,
            open_ms: 1_000,
            half_open_calls: 0,
            failure_statuses: Vec::new(),
        };
        let breakers = Breakers::new(&s);
        let b = breakers.get("svc");
        for _ in 0..10 {
            call(&b, true, 0);
        }
        assert_eq!(b.state(0), State::Closed);
        call(&b, false, 0);
        assert_eq!(b.state(0), State::Open);
        let trial = b.try_acquire(1_000);
        assert!(trial.is_ok());
        assert!(b.try_acquire(1_000).is_err());
    }
}
