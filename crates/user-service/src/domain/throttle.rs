//! The login-throttle policy: how long a key (an account name or a client address) is
//! blocked after repeated failures. Pure arithmetic; storage keeps the counters.

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failures {
    pub count: u32,
    pub last_failure_at: DateTime<Utc>,
    pub blocked_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub free_failures: u32,
    pub window: Duration,
    pub max_block: Duration,
}

impl Policy {
    /// How much longer the key stays blocked, if it is.
    pub fn blocked_for(&self, f: &Failures, now: DateTime<Utc>) -> Option<Duration> {
        f.blocked_until.filter(|u| *u > now).map(|u| u - now)
    }

    /// The counters after one more failure. A key idle for a whole window starts afresh.
    pub fn after_failure(&self, previous: Option<&Failures>, now: DateTime<Utc>) -> Failures {
        let count = match previous {
            Some(p) if now - p.last_failure_at <= self.window => p.count.saturating_add(1),
            _ => 1,
        };
        let blocked_until = (count > self.free_failures).then(|| {
            let doublings = (count - self.free_failures - 1).min(30);
            let block = Duration::seconds(1_i64 << doublings).min(self.max_block);
            now + block
        });
        Failures {
            count,
            last_failure_at: now,
            blocked_until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            free_failures: 3,
            window: Duration::minutes(15),
            max_block: Duration::minutes(15),
        }
    }

    #[test]
    fn free_failures_then_doubling_blocks_up_to_the_cap() {
        let p = policy();
        let t0 = Utc::now();
        let mut f = p.after_failure(None, t0);
        for _ in 0..2 {
            f = p.after_failure(Some(&f), t0);
        }
        assert_eq!(f.count, 3);
        assert_eq!(p.blocked_for(&f, t0), None, "three failures are free");
        f = p.after_failure(Some(&f), t0);
        assert_eq!(p.blocked_for(&f, t0), Some(Duration::seconds(1)));
        f = p.after_failure(Some(&f), t0);
        assert_eq!(p.blocked_for(&f, t0), Some(Duration::seconds(2)));
        for _ in 0..40 {
            f = p.after_failure(Some(&f), t0);
        }
        assert_eq!(p.blocked_for(&f, t0), Some(Duration::minutes(15)));
        assert_eq!(p.blocked_for(&f, t0 + Duration::minutes(16)), None);
    }

    #[test]
    fn a_quiet_window_forgives() {
        let p = policy();
        let t0 = Utc::now();
        let mut f = p.after_failure(None, t0);
        for _ in 0..5 {
            f = p.after_failure(Some(&f), t0);
        }
        let later = t0 + Duration::minutes(31);
        let f = p.after_failure(Some(&f), later);
        assert_eq!(f.count, 1);
        assert_eq!(p.blocked_for(&f, later), None);
    }
}
