//! What the gateway keeps between requests and decides for each: the settings in force,
//! token checks, rate limits, the service's instances, load balancing, circuit breakers and
//! the retry budget. The engine (`crate::engine`) moves the bytes.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use platform::Problem;
use platform::auth::Claims;
use platform::discovery::Discovery;

use crate::auth::EdgeAuth;
use crate::balancer::{Balancer, Endpoint};
use crate::breaker::Breakers;
use crate::budget::RetryBudget;
use crate::metrics as m;
use crate::ratelimit::{Decision, RateLimiter};
use crate::settings::{KeyResolver, LimitSpec, Settings};
use crate::table::{Table, split_base};

/// Reads the gateway's settings again (from the file and environment it started with).
pub type Reload = Arc<dyn Fn() -> Result<Settings, String> + Send + Sync>;

/// A service's endpoints as of a registry generation.
type ServiceEndpoints = (u64, Arc<[Endpoint]>);

/// Everything the gateway keeps between requests. Settings that change are swapped in
/// whole (`apply`); requests in flight finish on the table they started with.
pub struct Gateway {
    table: ArcSwap<Table>,
    auth: EdgeAuth,
    limiter: ArcSwap<RateLimiter>,
    balancer: Balancer,
    breakers: Breakers,
    budget: RetryBudget,
    discovery: Discovery,
    trusted_proxies: Vec<IpAddr>,
    endpoints: RwLock<foldhash::HashMap<Arc<str>, ServiceEndpoints>>,
    last_registry_refresh: Mutex<Option<Instant>>,
    reload: Option<Reload>,
    epoch: Instant,
}

impl Gateway {
    pub fn new(
        settings: Settings,
        auth: EdgeAuth,
        discovery: Discovery,
        trusted_proxies: Vec<IpAddr>,
        reload: Option<Reload>,
    ) -> Result<Gateway, String> {
        let balancer = Balancer::new(&settings.load_balancer);
        let limiter = RateLimiter::new(&settings.rate_limit)?;
        let breakers = Breakers::new(&settings.circuit_breaker);
        let budget = RetryBudget::new(
            settings.retry.budget_ratio,
            settings.retry.budget_min_per_sec,
        );
        let table = Table::compile(settings, &balancer)?;
        Ok(Gateway {
            table: ArcSwap::from_pointee(table),
            auth,
            limiter: ArcSwap::from_pointee(limiter),
            balancer,
            breakers,
            budget,
            discovery,
            trusted_proxies,
            endpoints: RwLock::new(foldhash::HashMap::default()),
            last_registry_refresh: Mutex::new(None),
            reload,
            epoch: Instant::now(),
        })
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// The table in force, for a moment (no reference count taken).
    pub fn table_now(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// Changes whenever the registry's view of the services does.
    pub fn registry_generation(&self) -> u64 {
        self.discovery.generation()
    }

    pub fn limiter(&self) -> Arc<RateLimiter> {
        self.limiter.load_full()
    }

    pub fn auth(&self) -> &EdgeAuth {
        &self.auth
    }

    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Milliseconds on the gateway's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Puts new settings in force. `Ok(false)`: nothing changed. Settings read only at
    /// start (listen, CORS, token issuer) are named in a warning and keep their old value.
    pub fn apply(&self, settings: Settings) -> Result<bool, String> {
        let current = self.table.load();
        let old = &current.settings;
        if settings == *old {
            return Ok(false);
        }
        let table = Table::compile(settings, &self.balancer)?;
        let new = &table.settings;
        if new.rate_limit.backend != old.rate_limit.backend
            || new.rate_limit.redis != old.rate_limit.redis
        {
            self.limiter
                .store(Arc::new(RateLimiter::new(&new.rate_limit)?));
        }
        let fixed_at_start = [
            ("listen", new.listen != old.listen),
            ("cors", new.cors != old.cors),
            ("jwks_url", new.jwks_url != old.jwks_url),
            ("issuer", new.issuer != old.issuer),
            ("audience", new.audience != old.audience),
            (
                "token_cache_entries",
                new.token_cache_entries != old.token_cache_entries,
            ),
        ];
        for (name, changed) in fixed_at_start {
            if changed {
                tracing::warn!(
                    setting = format!("gateway.{name}"),
                    "changed, but is read only at start; restart the gateway to apply it"
                );
            }
        }
        self.balancer.set_settings(&new.load_balancer);
        self.breakers.set_settings(&new.circuit_breaker);
        self.budget
            .set(new.retry.budget_ratio, new.retry.budget_min_per_sec);
        tracing::info!(routes = table.routes.len(), "gateway settings applied");
        self.table.store(Arc::new(table));
        Ok(true)
    }

    /// Reads the settings again and applies them; `Ok(false)` when nothing changed.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(reload) = &self.reload else {
            return Ok(false);
        };
        self.apply(reload()?)
    }

    /// The UP instances of `service`, rebuilt only when the registry changed. When there
    /// are none, the registry is asked again at once (at most once a second): a service
    /// that just registered should not wait for the next fetch.
    pub async fn endpoints_of(&self, service: &Arc<str>) -> Result<Arc<[Endpoint]>, Problem> {
        let generation = self.discovery.generation();
        if let Some((g, list)) = read(&self.endpoints).get(service)
            && *g == generation
            && !list.is_empty()
        {
            return Ok(list.clone());
        }
        let mut list = self.build_endpoints(service);
        let mut generation = generation;
        if list.is_empty() && self.may_refresh_registry() {
            if let Err(e) = self.discovery.refresh().await {
                tracing::debug!(error = %e, "registry refresh failed");
            }
            generation = self.discovery.generation();
            list = self.build_endpoints(service);
        }
        write(&self.endpoints).insert(service.clone(), (generation, list.clone()));
        if list.is_empty() {
            return Err(
                Problem::unavailable(format!("no instance of {service} is up"))
                    .header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            );
        }
        Ok(list)
    }

    fn build_endpoints(&self, service: &str) -> Arc<[Endpoint]> {
        let prefer_ip = self.discovery.settings().prefer_ip_address;
        self.discovery
            .instances(service)
            .iter()
            .filter_map(|i| {
                let (scheme, authority) = split_base(&i.base_url(prefer_ip))?;
                (scheme == http::uri::Scheme::HTTP)
                    .then(|| self.balancer.endpoint(&i.instance_id, scheme, authority))
            })
            .collect()
    }

    fn may_refresh_registry(&self) -> bool {
        let Ok(mut last) = self.last_registry_refresh.try_lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Every endpoint the gateway currently knows, by service (for gauges and clean-up).
    pub fn known_endpoints(&self) -> Vec<(Arc<str>, Arc<[Endpoint]>)> {
        read(&self.endpoints)
            .iter()
            .map(|(s, (_, list))| (s.clone(), list.clone()))
            .collect()
    }

    /// Whether `ip` is a proxy whose `X-Forwarded-*` fields are believed.
    pub fn trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.contains(&ip)
    }

    /// The client's address behind a trusted proxy `peer`, from the raw `X-Forwarded-For`
    /// values.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        platform::server::client_ip_from(peer, forwarded_for, &self.trusted_proxies)
    }

    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Ids of every endpoint in use (registry views and fixed URLs).
    pub fn endpoint_ids(&self) -> HashSet<Arc<str>> {
        let mut ids: HashSet<Arc<str>> = self
            .known_endpoints()
            .iter()
            .flat_map(|(_, list)| list.iter().map(|e| e.id.clone()))
            .collect();
        let table = self.table.load();
        for route in table.routes.iter() {
            if let Some(list) = table.fixed_endpoints(route) {
                ids.extend(list.iter().map(|e| e.id.clone()));
            }
        }
        ids
    }

    /// The caller of a protected route, from its `Authorization` field.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Arc<Claims>, Problem> {
        let token = authorization
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
                    .filter(|t| !t.is_empty())
            });
        let Some(token) = token else {
            m::auth_failure("missing");
            return Err(Problem::unauthorized(
                "send an access token as `Authorization: Bearer <token>`",
            ));
        };
        self.auth.verify(token).await.map_err(|e| {
            m::auth_failure(m::token_error_label(&e));
            Problem::from(e)
        })
    }

    pub async fn take_token(
        &self,
        route: &str,
        spec: &LimitSpec,
        claims: Option<&Claims>,
        client_ip: IpAddr,
    ) -> Decision {
        let limiter = self.limiter.load();
        let address;
        let key = match (spec.key, claims) {
            (KeyResolver::Route, _) => route,
            (KeyResolver::User, Some(c)) => c.sub.as_str(),
            (KeyResolver::User | KeyResolver::Address, _) => {
                address = client_ip.to_string();
                address.as_str()
            }
        };
        limiter.check(route, key, spec).await
    }

    /// Forgets what is no longer needed; publishes the gauges. Run every few seconds.
    pub fn housekeeping(&self) {
        let tokens = self.auth.purge();
        metrics::gauge!(m::TOKEN_CACHE).set(tokens as f64);
        let now = self.now_ms();
        for (service, endpoints) in &self.known_endpoints() {
            for e in endpoints.iter() {
                let labels = [
                    ("service", service.to_string()),
                    ("instance", e.id.to_string()),
                ];
                metrics::gauge!(m::IN_FLIGHT, &labels).set(f64::from(self.balancer.in_flight(e)));
                metrics::gauge!(m::EJECTED, &labels).set(if self.balancer.is_ejected(e, now) {
                    1.0
                } else {
                    0.0
                });
            }
        }
        let live = self.endpoint_ids();
        self.balancer
            .retain(&live.iter().map(|id| &**id).collect::<HashSet<&str>>());
        for (service, state) in self.breakers.states(now) {
            metrics::gauge!(m::CIRCUIT, "service" => service).set(m::circuit_value(state));
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
