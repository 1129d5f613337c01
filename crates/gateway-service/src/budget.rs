//! Retry budget: retries may add at most a share of recent traffic, so a struggling upstream
//! is not buried under retries (Finagle's and Linkerd's retry budgets).
//!
//! A retry may go when the retries of the last 10 s are fewer than `ratio` × the requests of
//! the last 10 s, or when the retries of the current second are fewer than `min_per_sec`
//! (the floor lets a quiet service retry at all). Counts are kept in ten one-second buckets;
//! each bucket's second and count share one atomic word, so a bucket can be reused for a new
//! second without a lock and without a count landing in the wrong second. Within a second the
//! allowance is exact under concurrency; across a second boundary, callers whose clocks differ
//! by a few milliseconds may together pass it by one retry each.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const SLOTS: usize = 10;

pub struct RetryBudget {
    /// `f64` bits.
    ratio: AtomicU64,
    min_per_sec: AtomicU32,
    requests: [AtomicU64; SLOTS],
    retries: [AtomicU64; SLOTS],
}

/// A bucket word: the second (wrapping u32) in the high half, the count in the low half.
fn pack(sec: u32, count: u32) -> u64 {
    (u64::from(sec) << 32) | u64::from(count)
}

fn second_of(word: u64) -> u32 {
    (word >> 32) as u32
}

fn count_of(word: u64) -> u32 {
    word as u32
}

/// How many seconds `word`'s bucket is older than `sec`; negative when a caller with a later
/// clock already moved it on.
fn age(word: u64, sec: u32) -> i32 {
    sec.wrapping_sub(second_of(word)) as i32
}

/// The count `word` contributes to the 10 s window ending at `sec`.
fn live_count(word: u64, sec: u32) -> u32 {
    let age = age(word, sec);
    if age > -(SLOTS as i32) && age < SLOTS as i32 {
        count_of(word)
    } else {
        0
    }
}

fn sanitize(ratio: f64) -> f64 {
    if ratio.is_finite() && ratio > 0.0 {
        ratio
    } else {
        0.0
    }
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_sec: u32) -> RetryBudget {
        RetryBudget {
            ratio: AtomicU64::new(sanitize(ratio).to_bits()),
            min_per_sec: AtomicU32::new(min_per_sec),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            retries: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Live reload; counts are kept.
    pub fn set(&self, ratio: f64, min_per_sec: u32) {
        self.ratio
            .store(sanitize(ratio).to_bits(), Ordering::Relaxed);
        self.min_per_sec.store(min_per_sec, Ordering::Relaxed);
    }

    /// Counts an original request (not a retry).
    pub fn record_request(&self, now_ms: u64) {
        let sec = (now_ms / 1000) as u32;
        let slot = &self.requests[sec as usize % SLOTS];
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            if age(word, sec) <= 0 {
                // This second's bucket (or a later one, from a caller whose clock is ahead).
                slot.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // The bucket still holds a second ten or more seconds ago: start it afresh.
            match slot.compare_exchange_weak(
                word,
                pack(sec, 1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }

    /// True when a retry may go; it is then counted.
    pub fn try_retry(&self, now_ms: u64) -> bool {
        let sec = (now_ms / 1000) as u32;
        let current = sec as usize % SLOTS;
        let ratio = f64::from_bits(self.ratio.load(Ordering::Relaxed));
        let floor = self.min_per_sec.load(Ordering::Relaxed);

        let mut requests = 0u64;
        let mut older_retries = 0u64;
        for i in 0..SLOTS {
            requests += u64::from(live_count(self.requests[i].load(Ordering::Relaxed), sec));
            if i != current {
                older_retries +=
                    u64::from(live_count(self.retries[i].load(Ordering::Relaxed), sec));
            }
        }
        let allowance = ratio * requests as f64;

        // Decide on the current bucket's count and commit it in one exchange, so concurrent
        // callers cannot together pass the allowance.
        let slot = &self.retries[current];
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            let (stamp, count) = if age(word, sec) <= 0 {
                (second_of(word), count_of(word))
            } else {
                (sec, 0)
            };
            let after = count.saturating_add(1);
            let within_floor = after <= floor;
            let within_ratio = (older_retries + u64::from(after)) as f64 <= allowance;
            if !within_floor && !within_ratio {
                return false;
            }
            match slot.compare_exchange_weak(
                word,
                pack(stamp, after),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    fn retries_allowed(budget: &RetryBudget, now_ms: u64, attempts: usize) -> usize {
        (0..attempts).filter(|_| budget.try_retry(now_ms)).count()
    }

    #[test]
    fn floor_allows_min_per_sec_without_traffic() {
        let budget = RetryBudget::new(0.2, 5);
        assert_eq!(retries_allowed(&budget, 1_000, 20), 5);
        // Still the same second.
        assert!(!budget.try_retry(1_999));
        // The next second has its own floor.
        assert_eq!(retries_allowed(&budget, 2_000, 20), 5);
    }

    #[test]
    fn zero_floor_and_no_traffic_refuses() {
        let budget = RetryBudget::new(0.5, 0);
        assert!(!budget.try_retry(5_000));
    }

    #[test]
    fn ratio_of_many_requests() {
        let budget = RetryBudget::new(0.2, 10);
        for _ in 0..1_000 {
            budget.record_request(50_000);
        }
        // 20 % of 1000: more than the floor, so the ratio rules.
        assert_eq!(retries_allowed(&budget, 50_500, 1_000), 200);
        // A second later the ratio is spent (200 retries, 1000 requests in the window), but the
        // floor allows its 10 for this second.
        assert_eq!(retries_allowed(&budget, 51_000, 1_000), 10);
    }

    #[test]
    fn requests_spread_over_the_window_all_count() {
        let budget = RetryBudget::new(0.1, 0);
        for s in 0..10u64 {
            for _ in 0..100 {
                budget.record_request(100_000 + s * 1_000);
            }
        }
        assert_eq!(retries_allowed(&budget, 109_999, 1_000), 100);
    }

    #[test]
    fn window_slides_old_requests_and_retries_stop_counting() {
        let budget = RetryBudget::new(0.5, 0);
        for _ in 0..100 {
            budget.record_request(20_000);
        }
        assert_eq!(retries_allowed(&budget, 20_100, 10), 10);
        // 9.999 s later the requests still count: 50 allowed, 10 used.
        assert_eq!(retries_allowed(&budget, 29_999, 1_000), 40);
        // At 30 s the requests of second 20 have left the window.
        assert!(!budget.try_retry(30_000));
        // At 40 s the retries of seconds 20 and 29 are gone too: new requests get their full
        // share.
        for _ in 0..10 {
            budget.record_request(40_000);
        }
        assert_eq!(retries_allowed(&budget, 40_001, 100), 5);
    }

    #[test]
    fn bucket_is_reused_after_ten_seconds() {
        let budget = RetryBudget::new(1.0, 0);
        for _ in 0..1_000 {
            budget.record_request(3_000);
        }
        // Second 13 maps to the same bucket as second 3; the old count must not carry over.
        budget.record_request(13_000);
        assert_eq!(retries_allowed(&budget, 13_000, 100), 1);
    }

    #[test]
    fn set_changes_the_allowance() {
        let budget = RetryBudget::new(0.0, 1);
        for _ in 0..100 {
            budget.record_request(0);
        }
        assert_eq!(retries_allowed(&budget, 0, 100), 1);
        budget.set(0.3, 1);
        assert_eq!(retries_allowed(&budget, 0, 100), 29);
        // Nonsense ratios count as none.
        budget.set(f64::NAN, 0);
        assert!(!budget.try_retry(0));
        budget.set(-1.0, 0);
        assert!(!budget.try_retry(0));
    }

    #[test]
    fn threads_never_exceed_the_allowance() {
        let budget = Arc::new(RetryBudget::new(0.1, 3));
        for _ in 0..1_000 {
            budget.record_request(7_000);
        }
        let granted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                let granted = granted.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if budget.try_retry(7_500) {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(granted.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn threads_recording_and_retrying_stay_within_ratio() {
        let budget = Arc::new(RetryBudget::new(0.25, 0));
        let granted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                let granted = granted.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u64 {
                        // Time moves on within one second; each thread sends 5000 requests
                        // and tries a retry after each.
                        let now = 60_000 + i / 10;
                        budget.record_request(now);
                        if budget.try_retry(now) {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let granted = granted.load(Ordering::Relaxed);
        // 40_000 requests, 25 %: never more, and the budget is not starved either.
        assert!(granted <= 10_000, "{granted}");
        assert!(granted >= 9_900, "{granted}");
    }
}
