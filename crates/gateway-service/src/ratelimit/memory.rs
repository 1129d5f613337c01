//! Buckets in this gateway's memory: one governor keyed limiter per (route, rate, burst),
//! keyed by the caller.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, QuantaClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use tokio_util::sync::CancellationToken;

use super::{Decision, WarnEvery, spec_works, unworkable_spec};
use crate::settings::LimitSpec;

type Keyed = governor::RateLimiter<
    String,
    DashMapStateStore<String, foldhash::fast::RandomState>,
    QuantaClock,
    StateInformationMiddleware,
>;

/// How often idle buckets are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// Keys longer than this are not copied into the per-thread buffer (which would then stay
/// that large); they cost one allocation per check instead.
const MAX_BUFFERED_KEY: usize = 256;

thread_local! {
    /// governor looks keys up by `&K`: an owned `String`. Reusing one per thread spares an
    /// allocation per check; the map clones it only when it inserts a new caller.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(super) struct MemoryLimiter {
    /// Route id → its limiters, one per (rate, burst) in use (normally one; two around a
    /// reload that changed the spec). Looked up by `&str`, so a hit allocates nothing.
    routes: RwLock<foldhash::HashMap<Box<str>, Vec<Arc<Bucket>>>>,
    warn: WarnEvery,
}

struct Bucket {
    replenish_rate: u32,
    burst_capacity: u32,
    limiter: Keyed,
}

impl Bucket {
    fn new(replenish_rate: NonZeroU32, burst_capacity: NonZeroU32) -> Self {
        let quota = Quota::per_second(replenish_rate).allow_burst(burst_capacity);
        Self {
            replenish_rate: replenish_rate.get(),
            burst_capacity: burst_capacity.get(),
            limiter: governor::RateLimiter::dashmap_with_clock_and_hasher(
                quota,
                QuantaClock::default(),
                foldhash::fast::RandomState::default(),
            )
            .with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn is(&self, spec: &LimitSpec) -> bool {
        self.replenish_rate == spec.replenish_rate && self.burst_capacity == spec.burst_capacity
    }

    fn take(&self, key: &str, n: NonZeroU32) -> Option<Decision> {
        let outcome = if key.len() <= MAX_BUFFERED_KEY {
            KEY.try_with(|buf| match buf.try_borrow_mut() {
                Ok(mut buf) => {
                    buf.clear();
                    buf.push_str(key);
                    self.limiter.check_key_n(&buf, n)
                }
                Err(_) => self.limiter.check_key_n(&key.to_owned(), n),
            })
            .unwrap_or_else(|_| self.limiter.check_key_n(&key.to_owned(), n))
        } else {
            self.limiter.check_key_n(&key.to_owned(), n)
        };
        match outcome {
            Ok(Ok(snapshot)) => Some(Decision::Allowed {
                remaining: i64::from(snapshot.remaining_burst_capacity()),
            }),
            Ok(Err(not_until)) => Some(Decision::Limited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            }),
            // n > burst: `spec_works` already refused it.
            Err(_) => None,
        }
    }
}

impl MemoryLimiter {
    pub(super) fn new() -> Self {
        Self {
            routes: RwLock::new(foldhash::HashMap::default()),
            warn: WarnEvery::new(),
        }
    }

    pub(super) fn check(&self, route_id: &str, key: &str, spec: &LimitSpec) -> Decision {
        let (Some(rate), Some(burst), Some(n), true) = (
            NonZeroU32::new(spec.replenish_rate),
            NonZeroU32::new(spec.burst_capacity),
            NonZeroU32::new(spec.requested_tokens),
            spec_works(spec),
        ) else {
            return unworkable_spec("memory", &self.warn, spec);
        };
        let decision = {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            routes
                .get(route_id)
                .and_then(|buckets| buckets.iter().find(|b| b.is(spec)))
                .map(|bucket| bucket.take(key, n))
        };
        let decision = decision.unwrap_or_else(|| {
            // First request under this (route, rate, burst). The bucket is taken from while
            // the write lock is held, so a sweep cannot drop the new limiter as empty first.
            let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
            let buckets = match routes.get_mut(route_id) {
                Some(buckets) => buckets,
                None => routes.entry(route_id.into()).or_default(),
            };
            let bucket = match buckets.iter().position(|b| b.is(spec)) {
                Some(i) => &buckets[i],
                None => {
                    buckets.push(Arc::new(Bucket::new(rate, burst)));
                    &buckets[buckets.len() - 1]
                }
            };
            bucket.take(key, n)
        });
        decision.unwrap_or_else(|| unworkable_spec("memory", &self.warn, spec))
    }

    /// Forgets callers whose buckets are full again (indistinguishable from new ones), then
    /// limiters left without callers. Returns the number of caller buckets kept.
    pub(super) fn sweep(&self) -> usize {
        // Work on clones of the Arcs so checks (and a new route's insert) never wait for it.
        let buckets: Vec<Arc<Bucket>> = {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            routes.values().flatten().cloned().collect()
        };
        let mut kept = 0;
        let mut any_empty = false;
        for bucket in &buckets {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
            let len = bucket.limiter.len();
            kept += len;
            any_empty |= len == 0;
        }
        drop(buckets);
        if any_empty {
            // Checks take from a limiter only under the lock, so one found empty here stays so.
            let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
            routes.retain(|_, buckets| {
                buckets.retain(|b| !b.limiter.is_empty());
                !buckets.is_empty()
            });
            routes.shrink_to_fit();
        }
        kept
    }

    #[cfg(test)]
    fn limiters(&self) -> usize {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        routes.values().map(Vec::len).sum()
    }
}

pub(super) fn spawn_housekeeping(limiter: Weak<MemoryLimiter>, shutdown: CancellationToken) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            "rate limiter housekeeping needs a Tokio runtime; idle buckets will not be forgotten"
        );
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Weak: a limiter replaced on reload is not kept alive by its housekeeping.
            let Some(limiter) = limiter.upgrade() else {
                return;
            };
            // Millions of callers take a while to sweep; keep it off the request workers.
            let swept = tokio::task::spawn_blocking(move || limiter.sweep()).await;
            if let Err(e) = swept {
                tracing::warn!(error = %e, "rate limiter sweep failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::test_support::spec;
    use super::*;

    #[test]
    fn a_changed_spec_starts_a_fresh_bucket() {
        let limiter = MemoryLimiter::new();
        let old = spec(1, 2, 1);
        limiter.check("r", "k", &old);
        limiter.check("r", "k", &old);
        assert!(matches!(
            limiter.check("r", "k", &old),
            Decision::Limited { .. }
        ));
        let new = spec(1, 3, 1);
        assert_eq!(
            limiter.check("r", "k", &new),
            Decision::Allowed { remaining: 2 }
        );
        // requested_tokens is no part of the identity: same bucket as `old`.
        assert!(matches!(
            limiter.check("r", "k", &spec(1, 2, 2)),
            Decision::Limited { .. }
        ));
        assert_eq!(limiter.limiters(), 2);
    }

    #[test]
    fn long_keys_work_too() {
        let limiter = MemoryLimiter::new();
        let long = "x".repeat(MAX_BUFFERED_KEY + 1);
        let spec = spec(1, 1, 1);
        assert_eq!(
            limiter.check("r", &long, &spec),
            Decision::Allowed { remaining: 0 }
        );
        assert!(matches!(
            limiter.check("r", &long, &spec),
            Decision::Limited { .. }
        ));
        // The long key's bucket is not the one of its buffered prefix.
        assert_eq!(
            limiter.check("r", &long[..MAX_BUFFERED_KEY], &spec),
            Decision::Allowed { remaining: 0 }
        );
    }

    #[test]
    fn sweeping_forgets_idle_callers_and_limiters() {
        let limiter = MemoryLimiter::new();
        // Refills a token per ms: idle callers are indistinguishable from new ones quickly.
        let fast = spec(1000, 1, 1);
        // Refills one per second: callers stay for a while.
        let slow = spec(1, 5, 1);
        for i in 0..10_000 {
            limiter.check("flood", &format!("10.0.{}.{}", i / 256, i % 256), &fast);
        }
        limiter.check("users", "alice", &slow);
        assert_eq!(limiter.limiters(), 2);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(limiter.sweep(), 1, "only alice's bucket is not full again");
        assert_eq!(limiter.limiters(), 1, "the flood's limiter is gone");
        // Alice's bucket survived the sweep: still 4 left minus this one.
        assert_eq!(
            limiter.check("users", "alice", &slow),
            Decision::Allowed { remaining: 3 }
        );
        // A swept route works again from scratch.
        assert_eq!(
            limiter.check("flood", "10.0.0.1", &fast),
            Decision::Allowed { remaining: 0 }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn housekeeping_stops_on_shutdown_and_keeps_no_limiter_alive() {
        let limiter = Arc::new(MemoryLimiter::new());
        let shutdown = CancellationToken::new();
        spawn_housekeeping(Arc::downgrade(&limiter), shutdown.clone());
        assert_eq!(
            Arc::weak_count(&limiter),
            1,
            "the task holds a weak reference"
        );
        assert_eq!(Arc::strong_count(&limiter), 1, "and no strong one");
        shutdown.cancel();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Arc::weak_count(&limiter) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(Arc::weak_count(&limiter), 0, "the task ended on shutdown");
    }

    #[test]
    fn housekeeping_outside_a_runtime_does_nothing() {
        let limiter = Arc::new(MemoryLimiter::new());
        spawn_housekeeping(Arc::downgrade(&limiter), CancellationToken::new());
        assert_eq!(Arc::weak_count(&limiter), 0, "no task holds it");
    }
}
