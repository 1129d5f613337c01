//! Load balancing over a service's instances, with ejection of instances that refuse
//! connections (outlier detection).
//!
//! Each instance's live stats (requests in flight, connection failures in a row, ejection) are
//! atomics kept by instance id, so endpoint lists can be rebuilt without losing them and a pick
//! or a report takes no lock. Round robin keeps one counter per service behind a read lock;
//! least requests needs no shared state at all.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::uri::{Authority, Scheme};

use crate::breaker::with_ascii_lowercase;
use crate::settings::{BalancePolicy, LoadBalancerSettings};

const LEAST_REQUESTS: u8 = 0;
const ROUND_ROBIN: u8 = 1;

/// Random tries at a usable first candidate before the exact pass over all endpoints.
const PROBES: usize = 4;

pub struct Balancer {
    policy: AtomicU8,
    ejection_failures: AtomicU32,
    ejection_ms: AtomicU64,
    max_ejection_ms: AtomicU64,
    stats: Mutex<foldhash::HashMap<Arc<str>, Arc<Stats>>>,
    /// Round-robin counters, by lowercased service name.
    turns: RwLock<foldhash::HashMap<Box<str>, AtomicUsize>>,
}

/// One instance's live stats, on a cache line of its own: `in_flight` changes on every
/// request.
#[repr(align(64))]
#[derive(Default)]
struct Stats {
    in_flight: AtomicU32,
    /// Connection failures in a row.
    failures: AtomicU32,
    /// Ejections in a row (each doubles the next one's length).
    ejections: AtomicU32,
    ejected_until: AtomicU64,
}

impl Stats {
    fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until.load(Ordering::Acquire)
    }

    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct Endpoint {
    pub id: Arc<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    stats: Arc<Stats>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("in_flight", &self.stats.in_flight())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Refused, unreachable, connect timeout: counts toward ejection.
    ConnectFailure,
    /// Connected but failed later (e.g. no answer in time): says nothing about reachability.
    Failure,
}

/// The chosen endpoint's index; counts as in flight until dropped.
#[derive(Debug)]
pub struct Picked<'e> {
    pub index: usize,
    _in_flight: InFlight<'e>,
}

/// Borrowed from the endpoint list the pick came from (a clone of the shared `Arc` per
/// request would be one more write to memory every worker touches).
struct InFlight<'e>(&'e Stats);

impl fmt::Debug for InFlight<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InFlight")
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn policy_code(policy: BalancePolicy) -> u8 {
    match policy {
        BalancePolicy::LeastRequests => LEAST_REQUESTS,
        BalancePolicy::RoundRobin => ROUND_ROBIN,
    }
}

impl Balancer {
    pub fn new(settings: &LoadBalancerSettings) -> Balancer {
        let balancer = Balancer {
            policy: AtomicU8::new(LEAST_REQUESTS),
            ejection_failures: AtomicU32::new(0),
            ejection_ms: AtomicU64::new(0),
            max_ejection_ms: AtomicU64::new(0),
            stats: Mutex::new(foldhash::HashMap::default()),
            turns: RwLock::new(foldhash::HashMap::default()),
        };
        balancer.set_settings(settings);
        balancer
    }

    /// Live reload. `ejection_failures: 0` or `ejection_ms: 0` turns ejection off; ejections
    /// already in force run out as they were.
    pub fn set_settings(&self, settings: &LoadBalancerSettings) {
        self.policy
            .store(policy_code(settings.policy), Ordering::Relaxed);
        self.ejection_failures
            .store(settings.ejection_failures, Ordering::Relaxed);
        self.ejection_ms
            .store(settings.ejection_ms, Ordering::Relaxed);
        self.max_ejection_ms
            .store(settings.max_ejection_ms, Ordering::Relaxed);
    }

    /// The endpoint for instance `id` (compared exactly) at `scheme`/`authority`; the same id
    /// shares its live stats with every endpoint made for it until `retain` drops it.
    pub fn endpoint(&self, id: &str, scheme: Scheme, authority: Authority) -> Endpoint {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let (id, stats) = match stats.get_key_value(id) {
            Some((id, s)) => (id.clone(), s.clone()),
            None => {
                let id: Arc<str> = Arc::from(id);
                let s = Arc::new(Stats::default());
                stats.insert(id.clone(), s.clone());
                (id, s)
            }
        };
        Endpoint {
            id,
            scheme,
            authority,
            stats,
        }
    }

    /// Chooses among `endpoints` of `service`, skipping the indexes in `tried`. Ejected
    /// endpoints are chosen only when no other untried one is left. None when every endpoint
    /// was tried or there is none.
    pub fn pick<'e>(
        &self,
        service: &str,
        endpoints: &'e [Endpoint],
        tried: &[usize],
        now_ms: u64,
    ) -> Option<Picked<'e>> {
        let index = if self.policy.load(Ordering::Relaxed) == ROUND_ROBIN {
            if endpoints.is_empty() {
                return None;
            }
            round_robin(endpoints, tried, now_ms, self.turn(service))
        } else {
            least_requests(endpoints, tried, now_ms)
        }?;
        let stats = &*endpoints[index].stats;
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            index,
            _in_flight: InFlight(stats),
        })
    }

    /// The next round-robin turn of `service`; a new service starts at a random place, so
    /// gateways started together do not all begin with the same instance.
    fn turn(&self, service: &str) -> usize {
        with_ascii_lowercase(service, |name| {
            {
                let turns = self.turns.read().unwrap_or_else(|e| e.into_inner());
                if let Some(turn) = turns.get(name) {
                    return turn.fetch_add(1, Ordering::Relaxed);
                }
            }
            let mut turns = self.turns.write().unwrap_or_else(|e| e.into_inner());
            turns
                .entry(name.into())
                .or_insert_with(|| AtomicUsize::new(fastrand::usize(..)))
                .fetch_add(1, Ordering::Relaxed)
        })
    }

    /// Reports how an attempt on `endpoint` ended; Some(length) when this report ejected it.
    ///
    /// Connection failures reported while the endpoint is ejected do not count: they come from
    /// attempts started before (or from trying it anyway), and must not stack up doublings.
    pub fn record(&self, endpoint: &Endpoint, outcome: Outcome, now_ms: u64) -> Option<Duration> {
        let stats = &endpoint.stats;
        match outcome {
            Outcome::Failure => None,
            Outcome::Success => {
                // Read first: the usual success has nothing to reset, and a store would
                // invalidate the line in every other core's cache.
                if stats.failures.load(Ordering::Relaxed) != 0 {
                    stats.failures.store(0, Ordering::Relaxed);
                }
                if stats.ejections.load(Ordering::Relaxed) != 0 {
                    stats.ejections.store(0, Ordering::Relaxed);
                }
                None
            }
            Outcome::ConnectFailure => {
                let threshold = self.ejection_failures.load(Ordering::Relaxed);
                let base = self.ejection_ms.load(Ordering::Relaxed);
                if threshold == 0 || base == 0 {
                    return None;
                }
                let until = stats.ejected_until.load(Ordering::Acquire);
                if now_ms < until {
                    return None;
                }
                let failures = stats
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if failures < threshold {
                    return None;
                }
                let streak = stats.ejections.load(Ordering::Relaxed);
                let cap = self.max_ejection_ms.load(Ordering::Relaxed).max(base);
                let ms = if streak >= 64 {
                    cap
                } else {
                    base.saturating_mul(1u64 << streak).min(cap)
                };
                // Of concurrent reports crossing the threshold, the one that moves
                // `ejected_until` ejects; the others see it ejected.
                stats
                    .ejected_until
                    .compare_exchange(
                        until,
                        now_ms.saturating_add(ms),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .ok()?;
                stats.failures.store(0, Ordering::Relaxed);
                stats.ejections.fetch_add(1, Ordering::Relaxed);
                Some(Duration::from_millis(ms))
            }
        }
    }

    pub fn is_ejected(&self, endpoint: &Endpoint, now_ms: u64) -> bool {
        endpoint.stats.is_ejected(now_ms)
    }

    pub fn in_flight(&self, endpoint: &Endpoint) -> u32 {
        endpoint.stats.in_flight()
    }

    /// Forgets the stats of instances not in `live_ids`. Endpoints still held for them keep
    /// working, but `endpoint()` for such an id starts afresh.
    pub fn retain(&self, live_ids: &HashSet<&str>) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.retain(|id, _| live_ids.contains(&**id));
    }
}

/// Power of two choices: of two distinct random usable endpoints, the one with fewer requests
/// in flight.
fn least_requests(endpoints: &[Endpoint], tried: &[usize], now_ms: u64) -> Option<usize> {
    let n = endpoints.len();
    let up = |i: usize| !tried.contains(&i) && !endpoints[i].stats.is_ejected(now_ms);
    let fewer = |a: usize, b: usize| {
        if endpoints[b].stats.in_flight() < endpoints[a].stats.in_flight() {
            b
        } else {
            a
        }
    };

    // Usual case, few endpoints tried or ejected: random probes find a pair at once. Sampling
    // by rejection keeps the choice uniform, and so does falling back to the exact pass.
    if n >= 2 {
        for _ in 0..PROBES {
            let a = fastrand::usize(..n);
            if !up(a) {
                continue;
            }
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            if up(b) {
                return Some(fewer(a, b));
            }
            break;
        }
    }

    // Exact, in one pass so that endpoints ejected meanwhile by other requests cannot make the
    // choice vanish: a uniform pair of the usable endpoints, and one of the untried ejected
    // ones in case none is usable.
    let mut usable = Pair::default();
    let mut ejected = Pair::default();
    for i in (0..n).filter(|i| !tried.contains(i)) {
        if endpoints[i].stats.is_ejected(now_ms) {
            ejected.offer(i);
        } else {
            usable.offer(i);
        }
    }
    usable.choose(fewer).or_else(|| ejected.choose(fewer))
}

/// Reservoir sampling of two: after any number of offers, each pair of them is equally likely.
#[derive(Default)]
struct Pair {
    seen: usize,
    a: usize,
    b: usize,
}

impl Pair {
    fn offer(&mut self, i: usize) {
        self.seen += 1;
        match self.seen {
            1 => self.a = i,
            2 => self.b = i,
            seen => match fastrand::usize(..seen) {
                0 => self.a = i,
                1 => self.b = i,
                _ => {}
            },
        }
    }

    fn choose(&self, fewer: impl Fn(usize, usize) -> usize) -> Option<usize> {
        match self.seen {
            0 => None,
            1 => Some(self.a),
            // The earlier offer tends to sit in `a`, and ties go to the first argument: in
            // random order, so idle endpoints share evenly.
            _ if fastrand::bool() => Some(fewer(self.a, self.b)),
            _ => Some(fewer(self.b, self.a)),
        }
    }
}

/// The next usable endpoint from `turn` on; an ejected one only if no usable one is left.
fn round_robin(endpoints: &[Endpoint], tried: &[usize], now_ms: u64, turn: usize) -> Option<usize> {
    let n = endpoints.len();
    let start = turn % n;
    let mut ejected = None;
    for offset in 0..n {
        let i = if start + offset >= n {
            start + offset - n
        } else {
            start + offset
        };
        if tried.contains(&i) {
            continue;
        }
        if !endpoints[i].stats.is_ejected(now_ms) {
            return Some(i);
        }
        ejected.get_or_insert(i);
    }
    ejected
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Balancer>();
    send_sync::<Endpoint>();
    send_sync::<Picked>();
};

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(policy: BalancePolicy) -> Balancer {
        Balancer::new(&LoadBalancerSettings {
            policy,
            ejection_failures: 1,
            ejection_ms: 1_000,
            max_ejection_ms: 5_000,
        })
    }

    fn endpoints(b: &Balancer, n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| {
                let authority: Authority = format!("10.0.0.{i}:8080").parse().expect("authority");
                b.endpoint(&format!("svc-{i}"), Scheme::HTTP, authority)
            })
            .collect()
    }

    /// How often each index is picked in `rounds` picks (each dropped at once).
    fn spread(
        b: &Balancer,
        eps: &[Endpoint],
        tried: &[usize],
        now_ms: u64,
        rounds: usize,
    ) -> Vec<usize> {
        let mut counts = vec![0; eps.len()];
        for _ in 0..rounds {
            let picked = b.pick("svc", eps, tried, now_ms).expect("a pick");
            counts[picked.index] += 1;
        }
        counts
    }

    /// Holds `count` requests in flight on `index`.
    fn load<'e>(b: &Balancer, eps: &'e [Endpoint], index: usize, count: usize) -> Vec<Picked<'e>> {
        let others: Vec<usize> = (0..eps.len()).filter(|&i| i != index).collect();
        (0..count)
            .map(|_| {
                let p = b.pick("svc", eps, &others, 0).expect("a pick");
                assert_eq!(p.index, index);
                p
            })
            .collect()
    }

    const BOTH: [BalancePolicy; 2] = [BalancePolicy::LeastRequests, BalancePolicy::RoundRobin];

    #[test]
    fn least_requests_prefers_the_idle_one() {
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 2);
        let _busy = load(&b, &eps, 0, 20);
        assert_eq!(spread(&b, &eps, &[], 0, 1_000), vec![0, 1_000]);
    }

    #[test]
    fn least_requests_spreads_over_the_idle_ones() {
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 3);
        let _busy = load(&b, &eps, 1, 5);
        // Any pair holding the busy one also holds an idle one.
        let counts = spread(&b, &eps, &[], 0, 3_000);
        assert_eq!(counts[1], 0);
        assert!(counts[0] > 1_200 && counts[2] > 1_200, "{counts:?}");
    }

    #[test]
    fn least_requests_balances_held_requests() {
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 4);
        let held: Vec<_> = (0..400)
            .map(|_| b.pick("svc", &eps, &[], 0).expect("a pick"))
            .collect();
        for e in &eps {
            let n = b.in_flight(e);
            assert!((80..=120).contains(&n), "{n}");
        }
        drop(held);
    }

    #[test]
    fn round_robin_takes_turns() {
        let b = balancer(BalancePolicy::RoundRobin);
        let eps = endpoints(&b, 3);
        let picks: Vec<usize> = (0..9)
            .map(|_| b.pick("svc", &eps, &[], 0).expect("a pick").index)
            .collect();
        for w in picks.windows(2) {
            assert_eq!(w[1], (w[0] + 1) % 3, "{picks:?}");
        }
    }

    #[test]
    fn round_robin_turns_are_per_service() {
        let b = balancer(BalancePolicy::RoundRobin);
        let eps = endpoints(&b, 2);
        let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for service in ["a", "b", "b", "a", "B", "a", "b", "a", "a", "b"] {
            let index = b.pick(service, &eps, &[], 0).expect("a pick").index;
            let key = if service.eq_ignore_ascii_case("a") {
                "a"
            } else {
                "b"
            };
            if let Some(prev) = last.insert(key, index) {
                assert_ne!(prev, index, "{service} did not alternate");
            }
        }
    }

    #[test]
    fn tried_indexes_are_skipped() {
        for policy in BOTH {
            let b = balancer(policy);
            let eps = endpoints(&b, 3);
            assert_eq!(spread(&b, &eps, &[0, 2], 0, 50), vec![0, 50, 0]);
            let counts = spread(&b, &eps, &[1], 0, 200);
            assert_eq!(counts[1], 0, "{policy:?}");
            assert!(counts[0] > 0 && counts[2] > 0, "{policy:?} {counts:?}");
        }
    }

    #[test]
    fn none_when_all_tried_or_empty() {
        for policy in BOTH {
            let b = balancer(policy);
            let eps = endpoints(&b, 2);
            assert!(b.pick("svc", &eps, &[0, 1], 0).is_none());
            assert!(b.pick("svc", &eps, &[1, 0, 1], 0).is_none());
            assert!(b.pick("svc", &[], &[], 0).is_none());
            // Out-of-range tried indexes are harmless.
            assert!(b.pick("svc", &eps, &[0, 7], 0).is_some());
        }
    }

    #[test]
    fn ejected_endpoint_gets_no_traffic_until_its_time_is_up() {
        for policy in BOTH {
            let b = balancer(policy);
            let eps = endpoints(&b, 2);
            assert_eq!(
                b.record(&eps[0], Outcome::ConnectFailure, 10_000),
                Some(Duration::from_millis(1_000))
            );
            assert!(b.is_ejected(&eps[0], 10_999));
            assert_eq!(
                spread(&b, &eps, &[], 10_500, 200),
                vec![0, 200],
                "{policy:?}"
            );
            assert_eq!(
                spread(&b, &eps, &[], 10_999, 200),
                vec![0, 200],
                "{policy:?}"
            );
            assert!(!b.is_ejected(&eps[0], 11_000));
            let counts = spread(&b, &eps, &[], 11_000, 200);
            assert!(counts[0] > 50 && counts[1] > 50, "{policy:?} {counts:?}");
        }
    }

    #[test]
    fn ejections_in_a_row_double_up_to_the_cap() {
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 1);
        let mut now = 0;
        for expected in [1_000, 2_000, 4_000, 5_000, 5_000] {
            assert_eq!(
                b.record(&eps[0], Outcome::ConnectFailure, now),
                Some(Duration::from_millis(expected))
            );
            assert!(b.is_ejected(&eps[0], now + expected - 1));
            assert!(!b.is_ejected(&eps[0], now + expected));
            now += expected;
        }
    }

    #[test]
    fn failures_while_ejected_do_not_extend_it() {
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 1);
        assert!(b.record(&eps[0], Outcome::ConnectFailure, 0).is_some());
        // Attempts started before the ejection report in: ignored.
        for t in [1, 10, 999] {
            assert_eq!(b.record(&eps[0], Outcome::ConnectFailure, t), None);
        }
        assert!(!b.is_ejected(&eps[0], 1_000));
        // The next ejection is the second in a row, not the fifth.
        assert_eq!(
            b.record(&eps[0], Outcome::ConnectFailure, 1_000),
            Some(Duration::from_millis(2_000))
        );
    }

    #[test]
    fn success_resets_the_streak_and_the_doubling() {
        let b = Balancer::new(&LoadBalancerSettings {
            policy: BalancePolicy::LeastRequests,
            ejection_failures: 3,
            ejection_ms: 1_000,
            max_ejection_ms: 60_000,
        });
        let eps = endpoints(&b, 1);
        let e = &eps[0];
        assert_eq!(b.record(e, Outcome::ConnectFailure, 0), None);
        assert_eq!(b.record(e, Outcome::ConnectFailure, 0), None);
        assert_eq!(b.record(e, Outcome::Success, 0), None);
        assert_eq!(b.record(e, Outcome::ConnectFailure, 0), None);
        assert_eq!(b.record(e, Outcome::ConnectFailure, 0), None);
        assert!(!b.is_ejected(e, 0));
        assert_eq!(
            b.record(e, Outcome::ConnectFailure, 0),
            Some(Duration::from_millis(1_000))
        );
        // Back, three failures again: doubled.
        for _ in 0..2 {
            assert_eq!(b.record(e, Outcome::ConnectFailure, 1_000), None);
        }
        assert_eq!(
            b.record(e, Outcome::ConnectFailure, 1_000),
            Some(Duration::from_millis(2_000))
        );
        // Back, one success: the next ejection is the first length again.
        assert_eq!(b.record(e, Outcome::Success, 3_000), None);
        for _ in 0..2 {
            assert_eq!(b.record(e, Outcome::ConnectFailure, 3_000), None);
        }
        assert_eq!(
            b.record(e, Outcome::ConnectFailure, 3_000),
            Some(Duration::from_millis(1_000))
        );
    }

    #[test]
    fn other_failures_change_neither_streak_nor_doubling() {
        let b = Balancer::new(&LoadBalancerSettings {
            policy: BalancePolicy::LeastRequests,
            ejection_failures: 2,
            ejection_ms: 1_000,
            max_ejection_ms: 60_000,
        });
        let eps = endpoints(&b, 1);
        let e = &eps[0];
        assert_eq!(b.record(e, Outcome::ConnectFailure, 0), None);
        for _ in 0..10 {
            assert_eq!(b.record(e, Outcome::Failure, 0), None);
        }
        assert_eq!(
            b.record(e, Outcome::ConnectFailure, 0),
            Some(Duration::from_millis(1_000))
        );
        assert_eq!(b.record(e, Outcome::Failure, 1_000), None);
        assert_eq!(b.record(e, Outcome::ConnectFailure, 1_000), None);
        assert_eq!(
            b.record(e, Outcome::ConnectFailure, 1_000),
            Some(Duration::from_millis(2_000))
        );
    }

    #[test]
    fn few_usable_among_many_ejected() {
        for policy in BOTH {
            let b = balancer(policy);
            let eps = endpoints(&b, 10);
            for i in [0, 1, 2, 4, 5, 6, 8, 9] {
                assert!(b.record(&eps[i], Outcome::ConnectFailure, 0).is_some());
            }
            let counts = spread(&b, &eps, &[], 10, 1_000);
            assert_eq!(counts[3] + counts[7], 1_000, "{policy:?} {counts:?}");
            assert!(counts[3] > 350 && counts[7] > 350, "{policy:?} {counts:?}");
            let counts = spread(&b, &eps, &[7], 10, 100);
            assert_eq!(counts[3], 100, "{policy:?} {counts:?}");
        }
        // Six usable of twenty, least requests: the pair is mostly drawn by the exact pass and
        // each usable one still gets its sixth.
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 20);
        let usable = [1, 5, 6, 11, 15, 19];
        for (i, e) in eps.iter().enumerate() {
            if !usable.contains(&i) {
                assert!(b.record(e, Outcome::ConnectFailure, 0).is_some());
            }
        }
        let counts = spread(&b, &eps, &[], 10, 6_000);
        assert_eq!(usable.iter().map(|&i| counts[i]).sum::<usize>(), 6_000);
        assert!(usable.iter().all(|&i| counts[i] > 800), "{counts:?}");
    }

    #[test]
    fn only_ejected_left_still_picks_one() {
        for policy in BOTH {
            let b = balancer(policy);
            let eps = endpoints(&b, 3);
            for e in &eps {
                assert!(b.record(e, Outcome::ConnectFailure, 0).is_some());
            }
            let counts = spread(&b, &eps, &[], 10, 300);
            assert!(counts.iter().all(|&c| c > 0), "{policy:?} {counts:?}");
            // One healthy but tried, the rest ejected: an ejected one is tried.
            let b = balancer(policy);
            let eps = endpoints(&b, 3);
            assert!(b.record(&eps[0], Outcome::ConnectFailure, 0).is_some());
            assert!(b.record(&eps[2], Outcome::ConnectFailure, 0).is_some());
            let counts = spread(&b, &eps, &[1], 10, 100);
            assert_eq!(counts[1], 0, "{policy:?}");
            assert!(b.pick("svc", &eps, &[0, 1, 2], 10).is_none());
            // Healthy and untried wins over ejected.
            assert_eq!(
                spread(&b, &eps, &[], 10, 100),
                vec![0, 100, 0],
                "{policy:?}"
            );
        }
    }

    #[test]
    fn ejection_can_be_turned_off() {
        for (failures, ms) in [(0, 1_000), (1, 0)] {
            let b = Balancer::new(&LoadBalancerSettings {
                policy: BalancePolicy::LeastRequests,
                ejection_failures: failures,
                ejection_ms: ms,
                max_ejection_ms: 60_000,
            });
            let eps = endpoints(&b, 1);
            for _ in 0..5 {
                assert_eq!(b.record(&eps[0], Outcome::ConnectFailure, 0), None);
            }
            assert!(!b.is_ejected(&eps[0], 0));
        }
    }

    #[test]
    fn stats_survive_a_new_endpoint_and_vanish_after_retain() {
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 2);
        assert!(b.record(&eps[0], Outcome::ConnectFailure, 0).is_some());
        let held = b.pick("svc", &eps, &[0], 0).expect("a pick");
        assert_eq!(held.index, 1);

        // The registry changed: lists rebuilt, one instance moved to another port.
        let again = b.endpoint(
            "svc-0",
            Scheme::HTTPS,
            "10.0.0.9:8443".parse().expect("authority"),
        );
        assert!(b.is_ejected(&again, 10));
        assert!(Arc::ptr_eq(&again.id, &eps[0].id));
        let other = b.endpoint(
            "svc-1",
            Scheme::HTTP,
            "10.0.0.1:8080".parse().expect("authority"),
        );
        assert_eq!(b.in_flight(&other), 1);

        b.retain(&HashSet::from(["svc-1"]));
        let fresh = b.endpoint(
            "svc-0",
            Scheme::HTTP,
            "10.0.0.0:8080".parse().expect("authority"),
        );
        assert!(!b.is_ejected(&fresh, 10));
        let kept = b.endpoint(
            "svc-1",
            Scheme::HTTP,
            "10.0.0.1:8080".parse().expect("authority"),
        );
        assert_eq!(b.in_flight(&kept), 1);
        drop(held);
        assert_eq!(b.in_flight(&kept), 0);
    }

    #[test]
    fn in_flight_follows_picks_and_drops() {
        for policy in BOTH {
            let b = balancer(policy);
            let eps = endpoints(&b, 1);
            let first = b.pick("svc", &eps, &[], 0).expect("a pick");
            let second = b.pick("svc", &eps, &[], 0).expect("a pick");
            assert_eq!(b.in_flight(&eps[0]), 2);
            drop(first);
            assert_eq!(b.in_flight(&eps[0]), 1);
            drop(second);
            assert_eq!(b.in_flight(&eps[0]), 0);
        }
    }

    #[test]
    fn settings_reload_live() {
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 2);
        let _busy = load(&b, &eps, 0, 10);
        assert_eq!(spread(&b, &eps, &[], 0, 100), vec![0, 100]);
        b.set_settings(&LoadBalancerSettings {
            policy: BalancePolicy::RoundRobin,
            ejection_failures: 2,
            ejection_ms: 3_000,
            max_ejection_ms: 5_000,
        });
        // Round robin ignores the load.
        assert_eq!(spread(&b, &eps, &[], 0, 100), vec![50, 50]);
        assert_eq!(b.record(&eps[1], Outcome::ConnectFailure, 0), None);
        assert_eq!(
            b.record(&eps[1], Outcome::ConnectFailure, 0),
            Some(Duration::from_millis(3_000))
        );
    }

    #[test]
    fn concurrent_picks_leave_no_requests_in_flight() {
        let b = balancer(BalancePolicy::LeastRequests);
        let eps = endpoints(&b, 3);
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let (b, eps) = (&b, &eps);
                scope.spawn(move || {
                    for i in 0..2_000u64 {
                        let picked = b.pick("svc", eps, &[], i).expect("a pick");
                        if (i + t) % 97 == 0 {
                            b.record(&eps[picked.index], Outcome::ConnectFailure, i);
                        } else {
                            b.record(&eps[picked.index], Outcome::Success, i);
                        }
                    }
                });
            }
        });
        for e in &eps {
            assert_eq!(b.in_flight(e), 0);
        }
    }
}
