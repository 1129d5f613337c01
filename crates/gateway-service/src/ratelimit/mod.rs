//! Request rate limits: token buckets per route and caller (Spring's RedisRateLimiter).
//!
//! A bucket holds `burst_capacity` tokens, refills at `replenish_rate` per second, and each
//! request takes `requested_tokens`. Buckets live in this gateway's memory (governor's GCRA,
//! which is a token bucket) or in Redis, shared by every gateway using the same Redis and
//! key prefix.
//!
//! A bucket is identified by route and caller key. In memory it is also identified by
//! (`replenish_rate`, `burst_capacity`), as governor's state only means something under its
//! quota: a route whose rate or burst changes starts fresh, full buckets, and the old ones
//! are dropped by housekeeping once idle. In Redis the bucket carries on under the new spec:
//! its tokens are capped at the new burst and refill at the new rate. `requested_tokens` and
//! the key resolver are not part of a bucket's identity on either backend.

mod memory;
mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tokio_util::sync::CancellationToken;

use crate::settings::{LimitSpec, LimiterBackend, RateLimitSettings};

use self::memory::MemoryLimiter;
use self::redis::RedisLimiter;

/// Name of the counter of checks answered without a bucket (Redis down, or a spec that
/// cannot work); label `backend`.
pub const ERRORS_METRIC: &str = "gateway_rate_limiter_errors_total";

pub const REMAINING_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const REPLENISH_RATE_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-replenish-rate");
pub const BURST_CAPACITY_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-burst-capacity");
pub const REQUESTED_TOKENS_HEADER: HeaderName =
    HeaderName::from_static("x-ratelimit-requested-tokens");

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Let through; `remaining` tokens are left in the bucket (-1 when unknown: Redis could
    /// not be asked and `on_error: allow`).
    Allowed { remaining: i64 },
    /// Refuse (429); this many tokens will be there after `retry_after`.
    Limited { retry_after: Duration },
    /// Redis could not be asked and `on_error: deny` (the lead answers 503). Also the answer
    /// for a spec that `check_spec` refuses, on either backend (a configuration error).
    Unavailable,
}

/// Cheap to clone (Arc inside); one per gateway, rebuilt by the lead when backend/redis
/// settings change.
#[derive(Clone)]
pub struct RateLimiter {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<MemoryLimiter>),
    Redis(Arc<RedisLimiter>),
}

impl RateLimiter {
    /// Checks the settings (redis URL parses, default spec valid); no I/O, callable outside a
    /// runtime.
    pub fn new(settings: &RateLimitSettings) -> Result<RateLimiter, String> {
        check_spec(&settings.default).map_err(|e| format!("rate_limit.default: {e}"))?;
        let backend = match settings.backend {
            LimiterBackend::Memory => Backend::Memory(Arc::new(MemoryLimiter::new())),
            LimiterBackend::Redis => Backend::Redis(Arc::new(RedisLimiter::new(&settings.redis)?)),
        };
        Ok(RateLimiter { backend })
    }

    /// Takes `spec.requested_tokens` from the bucket of (`route_id`, `key`) under `spec`.
    /// `key` is already resolved by the caller (a user id, an address, or the route id).
    pub async fn check(&self, route_id: &str, key: &str, spec: &LimitSpec) -> Decision {
        match &self.backend {
            Backend::Memory(memory) => memory.check(route_id, key, spec),
            Backend::Redis(redis) => redis.check(route_id, key, spec).await,
        }
    }

    pub fn backend(&self) -> LimiterBackend {
        match self.backend {
            Backend::Memory(_) => LimiterBackend::Memory,
            Backend::Redis(_) => LimiterBackend::Redis,
        }
    }

    /// Readiness: memory always Ok; Redis: a PING within the timeout.
    pub async fn ready(&self) -> Result<(), String> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(redis) => redis.ready().await,
        }
    }

    /// Background upkeep until `shutdown` (memory: forget idle buckets so memory stays
    /// bounded). The task also ends once every clone of this limiter is dropped, so a
    /// limiter replaced on reload does not linger. Redis needs none (its keys expire). Call
    /// within a Tokio runtime; outside one this logs a warning and does nothing.
    pub fn spawn_housekeeping(&self, shutdown: CancellationToken) {
        if let Backend::Memory(memory) = &self.backend {
            memory::spawn_housekeeping(Arc::downgrade(memory), shutdown);
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// A spec that can work: replenish_rate ≥ 1, burst_capacity ≥ 1, 1 ≤ requested_tokens ≤
/// burst_capacity. Error text names the field, e.g. "requested_tokens (12) may not exceed
/// burst_capacity (10)".
pub fn check_spec(spec: &LimitSpec) -> Result<(), String> {
    if spec.replenish_rate < 1 {
        return Err(format!(
            "replenish_rate ({}) must be at least 1",
            spec.replenish_rate
        ));
    }
    if spec.burst_capacity < 1 {
        return Err(format!(
            "burst_capacity ({}) must be at least 1",
            spec.burst_capacity
        ));
    }
    if spec.requested_tokens < 1 {
        return Err(format!(
            "requested_tokens ({}) must be at least 1",
            spec.requested_tokens
        ));
    }
    if spec.requested_tokens > spec.burst_capacity {
        return Err(format!(
            "requested_tokens ({}) may not exceed burst_capacity ({})",
            spec.requested_tokens, spec.burst_capacity
        ));
    }
    Ok(())
}

/// `check_spec` without building an error text, for the hot path.
fn spec_works(spec: &LimitSpec) -> bool {
    spec.replenish_rate >= 1
        && spec.burst_capacity >= 1
        && spec.requested_tokens >= 1
        && spec.requested_tokens <= spec.burst_capacity
}

/// Spring Cloud Gateway's headers for an answer under `spec`: X-RateLimit-Remaining (0 when
/// limited, -1 when unknown), X-RateLimit-Replenish-Rate, X-RateLimit-Burst-Capacity,
/// X-RateLimit-Requested-Tokens, with their values. Runs on every request: no allocation.
pub fn header_fields(spec: &LimitSpec, decision: &Decision) -> [(HeaderName, i64); 4] {
    let remaining = match decision {
        Decision::Allowed { remaining } => *remaining,
        Decision::Limited { .. } => 0,
        Decision::Unavailable => -1,
    };
    [
        (REMAINING_HEADER, remaining),
        (REPLENISH_RATE_HEADER, i64::from(spec.replenish_rate)),
        (BURST_CAPACITY_HEADER, i64::from(spec.burst_capacity)),
        (REQUESTED_TOKENS_HEADER, i64::from(spec.requested_tokens)),
    ]
}

/// Logs at most one warning per `INTERVAL`, telling how many went unlogged in between.
struct WarnEvery {
    start: std::time::Instant,
    /// Milliseconds since `start` of the last warning; `u64::MAX`: none yet.
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl WarnEvery {
    const INTERVAL_MS: u64 = 10_000;

    fn new() -> Self {
        Self {
            start: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(occurrences since the last warning)` when a warning is due now.
    fn due(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= Self::INTERVAL_MS;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed) + 1)
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// An unworkable spec reached `check` (the lead validates specs with `check_spec` when
/// loading routes, so this is a bug or a missed check): refuse with 503, count, log rarely.
fn unworkable_spec(backend: &'static str, warn: &WarnEvery, spec: &LimitSpec) -> Decision {
    metrics::counter!(ERRORS_METRIC, "backend" => backend).increment(1);
    if let Some(count) = warn.due() {
        let reason = check_spec(spec).err().unwrap_or_default();
        tracing::warn!(backend, error = %reason, count, "rate limit spec cannot work; answering 503");
    }
    Decision::Unavailable
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::settings::{
        KeyResolver, LimitSpec, OnRedisError, RateLimitSettings, RedisLimiterSettings,
    };

    use super::*;

    pub fn redis_url() -> String {
        std::env::var("PROMPTFLOW_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    pub fn spec(replenish_rate: u32, burst_capacity: u32, requested_tokens: u32) -> LimitSpec {
        LimitSpec {
            replenish_rate,
            burst_capacity,
            requested_tokens,
            key: KeyResolver::User,
        }
    }

    pub fn memory() -> RateLimiter {
        let settings = RateLimitSettings::default();
        RateLimiter::new(&settings).expect("memory limiter")
    }

    /// A Redis limiter with its own key prefix, so tests running at once share no bucket.
    pub fn redis_at(url: &str, prefix: &str, on_error: OnRedisError) -> RateLimiter {
        let settings = RateLimitSettings {
            backend: LimiterBackend::Redis,
            redis: RedisLimiterSettings {
                url: url.into(),
                key_prefix: prefix.into(),
                on_error,
                timeout_ms: 200,
            },
            ..RateLimitSettings::default()
        };
        RateLimiter::new(&settings).expect("redis limiter")
    }

    pub fn fresh_prefix() -> String {
        format!("promptflow-test:{}", uuid::Uuid::new_v4())
    }

    pub fn redis() -> RateLimiter {
        redis_at(&redis_url(), &fresh_prefix(), OnRedisError::Deny)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http::{HeaderMap, HeaderValue};

    use super::test_support::*;
    use super::*;
    use crate::settings::OnRedisError;

    fn remaining(decision: &Decision) -> i64 {
        match decision {
            Decision::Allowed { remaining } => *remaining,
            other => panic!("expected Allowed, got {other:?}"),
        }
    }

    fn retry_after(decision: &Decision) -> Duration {
        match decision {
            Decision::Limited { retry_after } => *retry_after,
            other => panic!("expected Limited, got {other:?}"),
        }
    }

    /// Both backends, same expectations.
    fn both() -> [(&'static str, RateLimiter); 2] {
        [("memory", memory()), ("redis", redis())]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_goes_through_then_the_next_is_refused_until_a_token_is_back() {
        // 2 tokens/s: one token every 500 ms, far longer than the burst takes.
        let spec = spec(2, 5, 1);
        for (name, limiter) in both() {
            let mut seen = Vec::new();
            for _ in 0..5 {
                seen.push(remaining(&limiter.check("users", "alice", &spec).await));
            }
            assert_eq!(seen, [4, 3, 2, 1, 0], "{name}: remaining counts down");
            let limited = limiter.check("users", "alice", &spec).await;
            let wait = retry_after(&limited);
            assert!(
                wait > Duration::from_millis(300) && wait <= Duration::from_millis(500),
                "{name}: retry_after {wait:?} should be about 1/replenish_rate (500 ms)"
            );
            tokio::time::sleep(wait + Duration::from_millis(20)).await;
            assert_eq!(
                limiter.check("users", "alice", &spec).await,
                Decision::Allowed { remaining: 0 },
                "{name}: one token is back after retry_after"
            );
            assert!(
                matches!(
                    limiter.check("users", "alice", &spec).await,
                    Decision::Limited { .. }
                ),
                "{name}: and only one"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requested_tokens_take_that_many_and_wait_for_that_many() {
        // 4 per request from 10, refilled at 4/s: 10 → 6 → 2, then 2 missing = 500 ms.
        let spec = spec(4, 10, 4);
        for (name, limiter) in both() {
            assert_eq!(
                remaining(&limiter.check("r", "k", &spec).await),
                6,
                "{name}"
            );
            assert_eq!(
                remaining(&limiter.check("r", "k", &spec).await),
                2,
                "{name}"
            );
            let wait = retry_after(&limiter.check("r", "k", &spec).await);
            assert!(
                wait > Duration::from_millis(300) && wait <= Duration::from_millis(500),
                "{name}: retry_after {wait:?} should be about (4 - 2) / 4 s"
            );
            // A request for 1 token (same bucket, smaller cost) still fits.
            let one = super::test_support::spec(4, 10, 1);
            assert_eq!(remaining(&limiter.check("r", "k", &one).await), 1, "{name}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_and_routes_have_their_own_buckets() {
        let spec = spec(1, 1, 1);
        for (name, limiter) in both() {
            assert_eq!(remaining(&limiter.check("users", "alice", &spec).await), 0);
            assert!(
                matches!(
                    limiter.check("users", "alice", &spec).await,
                    Decision::Limited { .. }
                ),
                "{name}: alice's bucket is empty"
            );
            assert_eq!(
                limiter.check("users", "bob", &spec).await,
                Decision::Allowed { remaining: 0 },
                "{name}: bob has his own"
            );
            assert_eq!(
                limiter.check("business", "alice", &spec).await,
                Decision::Allowed { remaining: 0 },
                "{name}: alice has another on another route"
            );
            // A key that contains what looks like a route separator stays its own bucket.
            assert_eq!(
                limiter.check("users:alice", "", &spec).await,
                Decision::Allowed { remaining: 0 },
                "{name}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unworkable_spec_is_refused_with_unavailable_on_both_backends() {
        for (name, limiter) in both() {
            for bad in [
                spec(0, 10, 1),
                spec(1, 0, 1),
                spec(1, 10, 0),
                spec(1, 10, 11),
            ] {
                assert_eq!(
                    limiter.check("r", "k", &bad).await,
                    Decision::Unavailable,
                    "{name}: {bad:?}"
                );
            }
        }
    }

    #[test]
    fn check_spec_names_the_field() {
        assert_eq!(check_spec(&spec(1, 1, 1)), Ok(()));
        assert_eq!(check_spec(&spec(50, 100, 100)), Ok(()));
        assert_eq!(
            check_spec(&spec(0, 10, 1)),
            Err("replenish_rate (0) must be at least 1".into())
        );
        assert_eq!(
            check_spec(&spec(1, 0, 1)),
            Err("burst_capacity (0) must be at least 1".into())
        );
        assert_eq!(
            check_spec(&spec(1, 10, 0)),
            Err("requested_tokens (0) must be at least 1".into())
        );
        assert_eq!(
            check_spec(&spec(5, 10, 12)),
            Err("requested_tokens (12) may not exceed burst_capacity (10)".into())
        );
    }

    #[test]
    fn new_checks_the_settings_without_io_or_runtime() {
        let settings = RateLimitSettings {
            default: spec(10, 5, 6),
            ..RateLimitSettings::default()
        };
        let err = RateLimiter::new(&settings).expect_err("bad default spec");
        assert!(err.contains("requested_tokens (6)"), "{err}");

        let mut settings = RateLimitSettings {
            backend: LimiterBackend::Redis,
            ..RateLimitSettings::default()
        };
        settings.redis.url = "http://not-redis".into();
        let err = RateLimiter::new(&settings).expect_err("bad url");
        assert!(err.contains("rate_limit.redis.url"), "{err}");

        settings.redis.url = "redis://127.0.0.1:1".into();
        settings.redis.timeout_ms = 0;
        let err = RateLimiter::new(&settings).expect_err("zero timeout");
        assert!(err.contains("timeout_ms"), "{err}");

        // Unreachable is fine here: nothing connects before the first check.
        settings.redis.timeout_ms = 100;
        let limiter = RateLimiter::new(&settings).expect("redis limiter");
        assert_eq!(limiter.backend(), LimiterBackend::Redis);
        assert_eq!(memory().backend(), LimiterBackend::Memory);
    }

    fn write_headers(spec: &LimitSpec, decision: &Decision, out: &mut HeaderMap) {
        for (name, value) in header_fields(spec, decision) {
            out.insert(name, HeaderValue::from(value));
        }
    }

    fn header(out: &HeaderMap, name: &str) -> String {
        out.get(name)
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn headers_for_allowed_limited_and_unknown() {
        let spec = spec(50, 100, 3);
        let mut out = HeaderMap::new();
        out.insert(REMAINING_HEADER, HeaderValue::from_static("stale"));
        write_headers(&spec, &Decision::Allowed { remaining: 97 }, &mut out);
        assert_eq!(header(&out, "x-ratelimit-remaining"), "97");
        assert_eq!(out.get_all("x-ratelimit-remaining").iter().count(), 1);
        assert_eq!(header(&out, "x-ratelimit-replenish-rate"), "50");
        assert_eq!(header(&out, "x-ratelimit-burst-capacity"), "100");
        assert_eq!(header(&out, "x-ratelimit-requested-tokens"), "3");
        assert_eq!(out.len(), 4);

        let limited = Decision::Limited {
            retry_after: Duration::from_millis(20),
        };
        write_headers(&spec, &limited, &mut out);
        assert_eq!(header(&out, "x-ratelimit-remaining"), "0");

        write_headers(&spec, &Decision::Allowed { remaining: -1 }, &mut out);
        assert_eq!(header(&out, "x-ratelimit-remaining"), "-1");
        write_headers(&spec, &Decision::Unavailable, &mut out);
        assert_eq!(header(&out, "x-ratelimit-remaining"), "-1");
        assert_eq!(out.len(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness() {
        assert_eq!(memory().ready().await, Ok(()));
        assert_eq!(redis().ready().await, Ok(()));
        let unreachable = redis_at("redis://127.0.0.1:1", &fresh_prefix(), OnRedisError::Allow);
        let started = Instant::now();
        let err = unreachable
            .ready()
            .await
            .expect_err("nothing listens on port 1");
        assert!(err.contains("redis"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn warnings_are_rate_limited() {
        let warn = WarnEvery::new();
        assert_eq!(warn.due(), Some(1));
        assert_eq!(warn.due(), None);
        assert_eq!(warn.due(), None);
        // Pretend the last warning was 10 s ago.
        warn.last_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        let warn = WarnEvery {
            start: Instant::now() - Duration::from_secs(11),
            ..warn
        };
        assert_eq!(warn.due(), Some(3), "two suppressed plus this one");
        assert_eq!(warn.due(), None);
    }
}
