//! Buckets in Redis, shared by every gateway using the same Redis and key prefix: one hash per
//! bucket, taken from by one Lua script on Redis's clock.
//!
//! The connection is made on the first `check` or `ready`, in the background; the first
//! checks wait for it up to `timeout_ms`. Once a connect fails, or a call fails at the
//! connection level or gets no answer within `timeout_ms`, Redis counts as down: checks
//! answer the `on_error` decision at once, while a new connection is tried right away and
//! then at most once a second, one attempt at a time, until one succeeds. (An error Redis
//! answers for one call, such as a wrong key type, fails only that call.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError, Script};
use tokio::sync::watch;

use super::{Decision, ERRORS_METRIC, WarnEvery, spec_works, unworkable_spec};
use crate::settings::{LimitSpec, OnRedisError, RedisLimiterSettings};

/// KEYS[1]: the bucket's hash; ARGV: replenish_rate, burst_capacity, requested_tokens.
/// Returns {allowed (0|1), whole tokens left, ms until `requested` tokens are there}.
/// Tokens are kept in thousandths: a rate of r tokens/s is r thousandths per ms, so the
/// arithmetic stays in integers at millisecond precision.
const TAKE: &str = r"
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2]) * 1000
local need = tonumber(ARGV[3]) * 1000
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = tokens + (now - ts) * rate
end
if tokens > capacity then
  tokens = capacity
end
if tokens < need then
  return {0, 0, math.ceil((need - tokens) / rate)}
end
tokens = tokens - need
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
local fill_ms = math.ceil(capacity / rate)
redis.call('PEXPIRE', KEYS[1], math.max(2 * fill_ms, 1000))
return {1, math.floor(tokens / 1000), 0}
";

/// Pause between connect attempts while Redis is down.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A connect (TCP, handshake) may take longer than one call is allowed to.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct RedisLimiter {
    client: Client,
    timeout: Duration,
    connect_timeout: Duration,
    on_error: OnRedisError,
    key_prefix: String,
    script: Script,
    link: Mutex<Link>,
    /// Bumped after every connect attempt, for the checks waiting on the first one.
    attempt_done: watch::Sender<u64>,
    warn: WarnEvery,
    attempts: AtomicU64,
}

#[derive(Default)]
struct Link {
    /// The connection in use, with its generation (so a late failure of an old connection
    /// does not bring down a newer one).
    manager: Option<(u64, ConnectionManager)>,
    generation: u64,
    /// A call or connect failed and no connect succeeded since: checks do not wait.
    down: bool,
    connecting: bool,
    /// No connect attempt starts before this.
    next_attempt: Option<Instant>,
    last_error: String,
}

enum Failure {
    /// Known down; nothing was asked.
    Down,
    /// No answer within `timeout_ms`.
    Timeout,
    Error(RedisError),
}

impl RedisLimiter {
    pub(super) fn new(settings: &RedisLimiterSettings) -> Result<Self, String> {
        let client = Client::open(settings.url.as_str())
            .map_err(|e| format!("rate_limit.redis.url: {e}"))?;
        if settings.timeout_ms == 0 {
            return Err("rate_limit.redis.timeout_ms must be at least 1".into());
        }
        let timeout = Duration::from_millis(settings.timeout_ms);
        Ok(Self {
            client,
            timeout,
            connect_timeout: timeout.max(MIN_CONNECT_TIMEOUT),
            on_error: settings.on_error,
            key_prefix: settings.key_prefix.clone(),
            script: Script::new(TAKE),
            link: Mutex::new(Link::default()),
            attempt_done: watch::Sender::new(0),
            warn: WarnEvery::new(),
            attempts: AtomicU64::new(0),
        })
    }

    pub(super) async fn check(
        self: &Arc<Self>,
        route_id: &str,
        key: &str,
        spec: &LimitSpec,
    ) -> Decision {
        if !spec_works(spec) {
            return unworkable_spec("redis", &self.warn, spec);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (generation, mut conn) = match self.connection(deadline, false).await {
            Ok(connection) => connection,
            Err(failure) => return self.failed(failure),
        };
        // The hash tag keeps a bucket's key in one cluster slot while buckets spread over all.
        let bucket = format!("{}:{{{route_id}:{key}}}", self.key_prefix);
        let mut take = self.script.prepare_invoke();
        take.key(bucket)
            .arg(spec.replenish_rate)
            .arg(spec.burst_capacity)
            .arg(spec.requested_tokens);
        let answer =
            tokio::time::timeout_at(deadline, take.invoke_async::<(i64, i64, i64)>(&mut conn))
                .await;
        match answer {
            Ok(Ok((1, remaining, _))) => Decision::Allowed { remaining },
            Ok(Ok((_, _, wait_ms))) => Decision::Limited {
                retry_after: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)),
            },
            Ok(Err(e)) => {
                if means_down(&e) {
                    self.mark_down(generation, &e.to_string());
                }
                self.failed(Failure::Error(e))
            }
            Err(_) => {
                self.mark_down(generation, "no answer within timeout_ms");
                self.failed(Failure::Timeout)
            }
        }
    }

    pub(super) async fn ready(self: &Arc<Self>) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (generation, mut conn) =
            self.connection(deadline, true)
                .await
                .map_err(|failure| match failure {
                    Failure::Down => format!("redis unreachable: {}", self.lock().last_error),
                    Failure::Timeout => format!(
                        "redis: no connection within {} ms",
                        self.timeout.as_millis()
                    ),
                    Failure::Error(e) => format!("redis: {e}"),
                })?;
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout_at(deadline, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                if means_down(&e) {
                    self.mark_down(generation, &e.to_string());
                }
                Err(format!("redis: {e}"))
            }
            Err(_) => {
                self.mark_down(generation, "no answer within timeout_ms");
                Err(format!(
                    "redis: no answer to PING within {} ms",
                    self.timeout.as_millis()
                ))
            }
        }
    }

    /// The connection to use, starting a connect attempt when none is running and one is
    /// due. Only while Redis is not known to be down (the first connect), or for `ready`
    /// (`patient`), is the attempt in flight waited for, until `deadline`.
    async fn connection(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
        patient: bool,
    ) -> Result<(u64, ConnectionManager), Failure> {
        let mut attempt_done = {
            let mut link = self.lock();
            if let Some((generation, manager)) = &link.manager {
                return Ok((*generation, manager.clone()));
            }
            self.start_attempt_if_due(&mut link);
            if !link.connecting || (link.down && !patient) {
                return Err(Failure::Down);
            }
            // Subscribed under the lock: the attempt's end cannot slip by unseen.
            self.attempt_done.subscribe()
        };
        if tokio::time::timeout_at(deadline, attempt_done.changed())
            .await
            .is_err()
        {
            if !patient {
                // Slow to connect: the next checks answer at once rather than wait too.
                let mut link = self.lock();
                if link.manager.is_none() {
                    link.down = true;
                    "no connection within timeout_ms".clone_into(&mut link.last_error);
                }
            }
            return Err(Failure::Timeout);
        }
        match &self.lock().manager {
            Some((generation, manager)) => Ok((*generation, manager.clone())),
            None => Err(Failure::Down),
        }
    }

    fn start_attempt_if_due(self: &Arc<Self>, link: &mut Link) {
        let now = Instant::now();
        if link.connecting || link.next_attempt.is_some_and(|at| now < at) {
            return;
        }
        link.connecting = true;
        link.next_attempt = Some(now + RETRY_INTERVAL);
        tokio::spawn(Arc::clone(self).connect());
    }

    async fn connect(self: Arc<Self>) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        // One try per attempt: the pacing between attempts is ours.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.connect_timeout));
        let connecting = ConnectionManager::new_with_config(self.client.clone(), config);
        let result = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(manager)) => Ok(manager),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no connection within {} ms",
                self.connect_timeout.as_millis()
            )),
        };
        let (recovered, failed) = {
            let mut link = self.lock();
            link.connecting = false;
            match result {
                Ok(manager) => {
                    link.generation += 1;
                    link.manager = Some((link.generation, manager));
                    (std::mem::replace(&mut link.down, false), None)
                }
                Err(e) => {
                    link.down = true;
                    link.last_error.clone_from(&e);
                    (false, Some(e))
                }
            }
        };
        if recovered {
            tracing::info!("rate limiter reaches Redis again");
        }
        if let Some(e) = failed {
            // Checks answering `on_error` meanwhile warn (rarely); this is the detail.
            tracing::debug!(error = %e, "rate limiter cannot connect to Redis");
        }
        self.attempt_done.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A call on connection `generation` failed: drop it and try a new one (now, if the last
    /// attempt was over a second ago, else when it is).
    fn mark_down(self: &Arc<Self>, generation: u64, error: &str) {
        let mut link = self.lock();
        if link.manager.as_ref().is_some_and(|(g, _)| *g == generation) {
            link.manager = None;
            link.down = true;
            error.clone_into(&mut link.last_error);
            self.start_attempt_if_due(&mut link);
        }
    }

    /// Redis could not be asked: count it, warn now and then, answer `on_error`.
    fn failed(&self, failure: Failure) -> Decision {
        metrics::counter!(ERRORS_METRIC, "backend" => "redis").increment(1);
        if let Some(count) = self.warn.due() {
            let error = match failure {
                Failure::Down => self.lock().last_error.clone(),
                Failure::Timeout => format!("no answer within {} ms", self.timeout.as_millis()),
                Failure::Error(e) => e.to_string(),
            };
            let on_error = match self.on_error {
                OnRedisError::Allow => "allow",
                OnRedisError::Deny => "deny",
            };
            tracing::warn!(%error, count, on_error, "rate limiter cannot ask Redis");
        }
        match self.on_error {
            OnRedisError::Allow => Decision::Allowed { remaining: -1 },
            OnRedisError::Deny => Decision::Unavailable,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether an error says the connection (or the server) is gone, rather than this one call
/// being refused (a script or type error leaves Redis up for the other buckets).
fn means_down(e: &RedisError) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::Server(::redis::ServerErrorKind::ResponseError)
            | ErrorKind::Server(::redis::ServerErrorKind::ExecAbort)
            | ErrorKind::Server(::redis::ServerErrorKind::NoScript)
            | ErrorKind::Extension
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Parse
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::AtomicBool;

    use super::super::RateLimiter;
    use super::super::test_support::*;
    use super::*;

    fn redis_limiter(limiter: &RateLimiter) -> &Arc<RedisLimiter> {
        match &limiter.backend {
            super::super::Backend::Redis(redis) => redis,
            super::super::Backend::Memory(_) => panic!("not a Redis limiter"),
        }
    }

    async fn direct_connection() -> ::redis::aio::MultiplexedConnection {
        Client::open(redis_url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("the test Redis must be reachable (PROMPTFLOW_TEST_REDIS)")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_concurrent_checks_against_a_burst_of_ten_let_exactly_ten_through() {
        let limiter = redis();
        let spec = spec(1, 10, 1);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let limiter = limiter.clone();
                let spec = spec.clone();
                tokio::spawn(async move { limiter.check("upload", "alice", &spec).await })
            })
            .collect();
        let mut remaining = BTreeSet::new();
        let mut limited = 0;
        for task in tasks {
            match task.await.expect("check task") {
                Decision::Allowed { remaining: r } => {
                    assert!(remaining.insert(r), "remaining {r} seen twice");
                }
                Decision::Limited { .. } => limited += 1,
                Decision::Unavailable => panic!("the test Redis must be reachable"),
            }
        }
        assert_eq!(
            remaining,
            (0..10).collect(),
            "each token went to exactly one check"
        );
        assert_eq!(limited, 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_gateways_on_one_redis_and_prefix_share_a_bucket() {
        let prefix = fresh_prefix();
        let one = redis_at(&redis_url(), &prefix, OnRedisError::Deny);
        let two = redis_at(&redis_url(), &prefix, OnRedisError::Deny);
        let spec = spec(1, 5, 1);
        for expected in [4, 3, 2] {
            assert_eq!(
                one.check("r", "k", &spec).await,
                Decision::Allowed {
                    remaining: expected
                }
            );
        }
        assert_eq!(
            two.check("r", "k", &spec).await,
            Decision::Allowed { remaining: 1 }
        );
        assert_eq!(
            one.check("r", "k", &spec).await,
            Decision::Allowed { remaining: 0 }
        );
        assert!(matches!(
            two.check("r", "k", &spec).await,
            Decision::Limited { .. }
        ));
        // Another prefix is another set of buckets.
        let other = redis_at(&redis_url(), &fresh_prefix(), OnRedisError::Deny);
        assert_eq!(
            other.check("r", "k", &spec).await,
            Decision::Allowed { remaining: 4 }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_spec_keeps_the_bucket_capped_at_the_new_burst() {
        let limiter = redis();
        let wide = spec(1, 10, 1);
        for _ in 0..5 {
            limiter.check("r", "k", &wide).await;
        }
        assert_eq!(
            limiter.check("r", "k", &wide).await,
            Decision::Allowed { remaining: 4 }
        );
        // 4 left, capacity now 3: capped to 3, one taken.
        let narrow = spec(1, 3, 1);
        assert_eq!(
            limiter.check("r", "k", &narrow).await,
            Decision::Allowed { remaining: 2 }
        );
        // Back to 10: the bucket carries on from 2, it does not start full.
        assert_eq!(
            limiter.check("r", "k", &wide).await,
            Decision::Allowed { remaining: 1 }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bucket_is_one_hash_tagged_key_that_expires() {
        let prefix = fresh_prefix();
        let limiter = redis_at(&redis_url(), &prefix, OnRedisError::Deny);
        // Fills in 10 / 2 = 5 s, so it lives about 10 s after its last use.
        let spec = spec(2, 10, 3);
        assert_eq!(
            limiter.check("users", "alice", &spec).await,
            Decision::Allowed { remaining: 7 }
        );
        let mut redis = direct_connection().await;
        let key = format!("{prefix}:{{users:alice}}");
        let (tokens, ts): (f64, i64) = ::redis::cmd("HMGET")
            .arg(&key)
            .arg("tokens")
            .arg("ts")
            .query_async(&mut redis)
            .await
            .expect("HMGET");
        assert_eq!(tokens, 7000.0, "thousandths of a token");
        let (seconds, micros): (i64, i64) = ::redis::cmd("TIME")
            .query_async(&mut redis)
            .await
            .expect("TIME");
        let now_ms = seconds * 1000 + micros / 1000;
        assert!(
            (now_ms - ts).abs() < 5_000,
            "ts {ts} is Redis time in ms ({now_ms})"
        );
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .expect("PTTL");
        assert!(
            ttl > 9_000 && ttl <= 10_000,
            "PTTL {ttl} ms: twice the 5 s to fill"
        );
        let matching: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut redis)
            .await
            .expect("KEYS");
        assert_eq!(matching, [key], "one key per bucket");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_for_one_bucket_leaves_redis_up_for_the_others() {
        let prefix = fresh_prefix();
        let limiter = redis_at(&redis_url(), &prefix, OnRedisError::Deny);
        let spec = spec(1, 5, 1);
        let mut redis = direct_connection().await;
        // Someone else's string where a bucket's hash would be: WRONGTYPE.
        let _: () = ::redis::cmd("SET")
            .arg(format!("{prefix}:{{r:taken}}"))
            .arg("not a bucket")
            .arg("EX")
            .arg(60)
            .query_async(&mut redis)
            .await
            .expect("SET");
        assert_eq!(
            limiter.check("r", "taken", &spec).await,
            Decision::Unavailable
        );
        assert_eq!(
            limiter.check("r", "free", &spec).await,
            Decision::Allowed { remaining: 4 },
            "Redis is not taken for down"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_redis_with_allow_lets_through_at_once() {
        let limiter = redis_at("redis://127.0.0.1:1", &fresh_prefix(), OnRedisError::Allow);
        let spec = spec(1, 1, 1);
        let started = Instant::now();
        assert_eq!(
            limiter.check("r", "k", &spec).await,
            Decision::Allowed { remaining: -1 }
        );
        let first = started.elapsed();
        assert!(
            first < Duration::from_millis(300),
            "first check took {first:?}"
        );
        let mut slowest = Duration::ZERO;
        let mut answering = Duration::ZERO;
        let started = Instant::now();
        for _ in 1..100 {
            let call = Instant::now();
            assert_eq!(
                limiter.check("r", "k", &spec).await,
                Decision::Allowed { remaining: -1 }
            );
            slowest = slowest.max(call.elapsed());
            answering += call.elapsed();
            // Spread over ~1.2 s, so pacing of connect attempts shows.
            tokio::time::sleep(Duration::from_millis(12)).await;
        }
        assert!(
            slowest < Duration::from_millis(50),
            "a check took {slowest:?}"
        );
        assert!(
            answering < Duration::from_millis(250),
            "99 checks took {answering:?}"
        );
        let attempts = redis_limiter(&limiter).attempts.load(Ordering::Relaxed);
        let elapsed = first + started.elapsed();
        assert!(
            attempts <= elapsed.as_secs() + 1,
            "{attempts} connect attempts in {elapsed:?}: at most one a second"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_redis_with_deny_is_unavailable() {
        let limiter = redis_at("redis://127.0.0.1:1", &fresh_prefix(), OnRedisError::Deny);
        let spec = spec(1, 1, 1);
        for _ in 0..10 {
            assert_eq!(limiter.check("r", "k", &spec).await, Decision::Unavailable);
        }
    }

    /// Accepts connections and never answers (a hung Redis, or a firewall that drops).
    fn silent_server() -> (String, Arc<Mutex<Vec<TcpStream>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("redis://{}", listener.local_addr().expect("addr"));
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&held);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().expect("held").push(stream);
            }
        });
        (url, held)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_redis_costs_one_timeout_then_checks_answer_at_once() {
        let (url, _held) = silent_server();
        let limiter = redis_at(&url, &fresh_prefix(), OnRedisError::Deny);
        let spec = spec(1, 1, 1);
        let started = Instant::now();
        assert_eq!(limiter.check("r", "k", &spec).await, Decision::Unavailable);
        let first = started.elapsed();
        assert!(
            first >= Duration::from_millis(150) && first < Duration::from_millis(600),
            "the first check waits for the connect up to timeout_ms (200): {first:?}"
        );
        let started = Instant::now();
        for _ in 0..50 {
            assert_eq!(limiter.check("r", "k", &spec).await, Decision::Unavailable);
        }
        let rest = started.elapsed();
        assert!(rest < Duration::from_millis(150), "50 more took {rest:?}");
        assert!(limiter.ready().await.is_err());
    }

    /// A TCP proxy to the test Redis that can be cut and restored.
    struct Proxy {
        url: String,
        up: Arc<AtomicBool>,
        open: Arc<Mutex<Vec<TcpStream>>>,
    }

    impl Proxy {
        fn start() -> Proxy {
            let target = redis_url()
                .trim_start_matches("redis://")
                .trim_end_matches('/')
                .to_owned();
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let url = format!("redis://{}", listener.local_addr().expect("addr"));
            let up = Arc::new(AtomicBool::new(true));
            let open = Arc::new(Mutex::new(Vec::new()));
            let (is_up, opened) = (Arc::clone(&up), Arc::clone(&open));
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    if !is_up.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(&target) else {
                        continue;
                    };
                    for stream in [&client, &server] {
                        if let Ok(clone) = stream.try_clone() {
                            opened.lock().expect("open").push(clone);
                        }
                    }
                    pump(&client, &server);
                    pump(&server, &client);
                }
            });
            Proxy { url, up, open }
        }

        fn cut(&self) {
            self.up.store(false, Ordering::SeqCst);
            for stream in self.open.lock().expect("open").drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }

        fn restore(&self) {
            self.up.store(true, Ordering::SeqCst);
        }
    }

    fn pump(from: &TcpStream, to: &TcpStream) {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
            return;
        };
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_use_redis_again_once_it_is_back() {
        let proxy = Proxy::start();
        let limiter = redis_at(&proxy.url, &fresh_prefix(), OnRedisError::Allow);
        let half = spec(1, 100, 50);
        assert_eq!(
            limiter.check("r", "k", &half).await,
            Decision::Allowed { remaining: 50 }
        );
        assert_eq!(limiter.ready().await, Ok(()));

        proxy.cut();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let one = spec(1, 100, 1);
        let started = Instant::now();
        for _ in 0..20 {
            assert_eq!(
                limiter.check("r", "k", &one).await,
                Decision::Allowed { remaining: -1 }
            );
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        assert!(limiter.ready().await.is_err());

        proxy.restore();
        let started = Instant::now();
        let attempts_before = redis_limiter(&limiter).attempts.load(Ordering::Relaxed);
        let recovered = loop {
            match limiter.check("r", "k", &one).await {
                Decision::Allowed { remaining } if remaining >= 0 => break Some(remaining),
                _ if started.elapsed() > Duration::from_secs(4) => break None,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let remaining = recovered.expect("Redis answers again within a few seconds");
        // The bucket outlived the cut: 50 left, a token a second since, one taken now (a
        // fresh bucket would say 99).
        assert!((49..=56).contains(&remaining), "remaining {remaining}");
        let attempts = redis_limiter(&limiter).attempts.load(Ordering::Relaxed) - attempts_before;
        let allowed = started.elapsed().as_secs() + 2;
        assert!(
            attempts <= allowed,
            "{attempts} connect attempts in {:?}",
            started.elapsed()
        );
        assert_eq!(limiter.ready().await, Ok(()));
    }

    /// Counts `gateway_rate_limiter_errors_total{backend="redis"}`.
    #[derive(Default)]
    struct ErrorCounter(Arc<AtomicU64>);

    impl metrics::Recorder for ErrorCounter {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let redis_label = key
                .labels()
                .any(|l| l.key() == "backend" && l.value() == "redis");
            if key.name() == ERRORS_METRIC && redis_label {
                metrics::Counter::from_arc(Arc::clone(&self.0))
            } else {
                metrics::Counter::noop()
            }
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn each_check_answered_without_redis_is_counted() {
        // A local recorder is per thread: a current-thread runtime keeps every check on it.
        let recorder = ErrorCounter::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let spec = spec(1, 1, 1);
            let up = redis();
            up.check("r", "k", &spec).await;
            up.check("r", "k", &spec).await;
            assert_eq!(
                recorder.0.load(Ordering::Relaxed),
                0,
                "answers from Redis are no errors"
            );
            let down = redis_at("redis://127.0.0.1:1", &fresh_prefix(), OnRedisError::Allow);
            for _ in 0..7 {
                down.check("r", "k", &spec).await;
            }
        });
        assert_eq!(recorder.0.load(Ordering::Relaxed), 7);
    }
}
