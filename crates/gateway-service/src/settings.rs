//! gateway-service settings (section `gateway` of the settings file, `PROMPTFLOW_GATEWAY__*`).
//!
//! Routes take the shape Spring Cloud Gateway users know (`id`, `uri`, `predicates`,
//! `filters`, `metadata`, `order`), in either of Spring's two forms: the shortcut string
//! (`Path=/api/users/**`, `StripPrefix=1`) or `{name, args}`. Everything but `listen` and
//! `cors` is applied again when the settings change, without a restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the gateway listens (seed port 8080).
    pub listen: SocketAddr,
    /// Threads serving requests, each with a runtime of its own, taking connections from
    /// one listening socket as nginx's workers do: no request crosses threads. 0: one per
    /// core.
    pub workers: usize,
    /// Serve connections on as few workers as carry the load, spreading them over more as
    /// soon as one is busy (less CPU per request and fewer cores woken at a moderate load).
    /// Off: every worker takes connections all the time, placed by count.
    pub pack_workers: bool,
    /// Routes, tried by `order`, then as listed; the first whose predicates all match wins.
    pub routes: Vec<RouteDefinition>,
    /// Filters applied to every route before its own (Spring's `default-filters`).
    pub default_filters: Vec<Definition>,
    /// Where the access tokens' public keys are (`lb://` goes through discovery).
    pub jwks_url: String,
    /// `iss` the access tokens must carry.
    pub issuer: String,
    /// `aud` the access tokens must carry.
    pub audience: String,
    /// Verified tokens remembered (until they expire), so a token's signature is checked
    /// once, not on every request.
    pub token_cache_entries: usize,
    /// Headers a client may not send: they are removed before a request goes upstream. A
    /// trailing `*` matches any suffix.
    pub identity_headers: Vec<String>,
    pub rate_limit: RateLimitSettings,
    pub load_balancer: LoadBalancerSettings,
    pub retry: RetrySettings,
    pub circuit_breaker: CircuitBreakerSettings,
    pub timeouts: TimeoutSettings,
    pub cors: CorsSettings,
    /// Largest request body forwarded, in bytes (imports are large; the services enforce
    /// their own limits too).
    pub body_limit: u64,
    /// One log line per proxied request (method, path, route, status, upstream, latency).
    pub access_log: bool,
    /// How often the settings file is checked for changes (0: only on SIGHUP).
    pub reload_interval_secs: u64,
    /// A kept-alive client connection with no request for this long is closed.
    pub client_idle_timeout_secs: u64,
    /// A request head must arrive whole within this (slow-header clients are cut off).
    pub client_header_timeout_secs: u64,
    /// A request body may pause this long between reads.
    pub client_body_timeout_secs: u64,
    /// A client not reading its answer for this long is cut off.
    pub client_send_timeout_secs: u64,
    /// Largest request head (request line and header fields), in bytes (431 beyond).
    pub max_head_bytes: usize,
    /// Idle upstream connections kept per instance (per worker).
    pub pool_max_idle_per_host: usize,
    /// An idle upstream connection is closed after this long.
    pub pool_idle_timeout_secs: u64,
    /// Who may read `/metrics` on the public port (networks, `10.0.0.0/8` or one address):
    /// by default this machine and private networks (a scraper in the cluster), never the
    /// internet. Anyone else is answered 404, as if there were nothing there.
    #[serde(deserialize_with = "platform::settings::list_or_csv")]
    pub metrics_allowed_from: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            workers: 0,
            pack_workers: true,
            routes: default_routes(),
            default_filters: Vec::new(),
            jwks_url: "lb://user-service/.well-known/jwks.json".into(),
            issuer: "promptflow".into(),
            audience: "promptflow".into(),
            token_cache_entries: 100_000,
            identity_headers: vec![
                "x-user-*".into(),
                "x-auth-*".into(),
                "x-authenticated-*".into(),
                "x-forwarded-user".into(),
                "x-remote-user".into(),
                "remote-user".into(),
            ],
            rate_limit: RateLimitSettings::default(),
            load_balancer: LoadBalancerSettings::default(),
            retry: RetrySettings::default(),
            circuit_breaker: CircuitBreakerSettings::default(),
            timeouts: TimeoutSettings::default(),
            cors: CorsSettings::default(),
            body_limit: 64 * 1024 * 1024,
            access_log: true,
            reload_interval_secs: 5,
            client_idle_timeout_secs: 75,
            client_header_timeout_secs: 10,
            client_body_timeout_secs: 60,
            client_send_timeout_secs: 60,
            max_head_bytes: 64 * 1024,
            pool_max_idle_per_host: 256,
            metrics_allowed_from: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            ]
            .map(String::from)
            .to_vec(),
            pool_idle_timeout_secs: 60,
        }
    }
}

impl Settings {
    pub fn client_send_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.client_send_timeout_secs.max(1))
    }
}

/// PromptFlow's public routes: user-service for accounts, business-service for prompts.
/// Only register, login, refresh, client credentials, logout and the JWKS are reachable
/// without an access token.
pub fn default_routes() -> Vec<RouteDefinition> {
    let route = |id: &str, uri: &str, path: &str, public: bool| RouteDefinition {
        id: id.into(),
        uri: uri.into(),
        predicates: vec![Definition::Shortcut(format!("Path={path}"))],
        public,
        ..RouteDefinition::default()
    };
    vec![
        route(
            "auth-public",
            "lb://user-service",
            "/api/auth/register,/api/auth/login,/api/auth/refresh,/api/auth/token,/api/auth/logout",
            true,
        ),
        route("jwks", "lb://user-service", "/.well-known/jwks.json", true),
        route("auth", "lb://user-service", "/api/auth/**", false),
        route("users", "lb://user-service", "/api/users/**", false),
        route(
            "business",
            "lb://business-service",
            "/api/business/**",
            false,
        ),
    ]
}

/// One route, as Spring Cloud Gateway writes it, plus `public`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RouteDefinition {
    pub id: String,
    /// `lb://service-name` (through discovery) or `http://host:port[/base/path]`.
    pub uri: String,
    /// Lower first; equal orders keep the listed order.
    pub order: i32,
    pub predicates: Vec<Definition>,
    pub filters: Vec<Definition>,
    pub metadata: RouteMetadata,
    /// Reachable without an access token. Routes are protected unless they say so.
    pub public: bool,
}

/// A predicate or filter: Spring's shortcut `Name=arg1,arg2` or its full `{name, args}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Definition {
    Shortcut(String),
    Full(FullDefinition),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullDefinition {
    pub name: String,
    /// Named arguments; a value is a string, a number, a boolean or a list of them.
    #[serde(default)]
    pub args: BTreeMap<String, serde_json::Value>,
}

/// Spring's per-route metadata keys, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RouteMetadata {
    /// Time allowed for the upstream's response head; -1: none.
    #[serde(rename = "response-timeout", alias = "response_timeout")]
    pub response_timeout: Option<i64>,
    /// Time allowed to connect to an instance.
    #[serde(rename = "connect-timeout", alias = "connect_timeout")]
    pub connect_timeout: Option<u64>,
}

/// A token bucket: `burst_capacity` tokens, refilled at `replenish_rate` per second; each
/// request takes `requested_tokens` (Spring's RedisRateLimiter arguments).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSpec {
    pub replenish_rate: u32,
    pub burst_capacity: u32,
    pub requested_tokens: u32,
    /// Whose bucket a request takes from.
    pub key: KeyResolver,
}

impl Default for LimitSpec {
    fn default() -> Self {
        Self {
            replenish_rate: 50,
            burst_capacity: 100,
            requested_tokens: 1,
            key: KeyResolver::User,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeyResolver {
    /// The signed-in user (the token's `sub`), or the client's address when anonymous.
    #[default]
    User,
    /// The client's address.
    Address,
    /// One bucket for the whole route.
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LimiterBackend {
    /// Buckets in this gateway's memory.
    #[default]
    Memory,
    /// Buckets in Redis, shared by every gateway using it.
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Let requests through while Redis cannot be reached (Spring's behaviour).
    #[default]
    Allow,
    /// Refuse them (503) while Redis cannot be reached.
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Apply `default` to routes without a `RequestRateLimiter` filter of their own.
    pub enabled: bool,
    pub default: LimitSpec,
    pub backend: LimiterBackend,
    pub redis: RedisLimiterSettings,
    /// `X-RateLimit-Remaining`, `-Replenish-Rate`, `-Burst-Capacity`, `-Requested-Tokens`
    /// on every limited route's answers.
    pub include_headers: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            default: LimitSpec::default(),
            backend: LimiterBackend::Memory,
            redis: RedisLimiterSettings::default(),
            include_headers: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisLimiterSettings {
    pub url: String,
    /// A Redis call taking longer than this counts as Redis being down.
    pub timeout_ms: u64,
    pub on_error: OnRedisError,
    /// Prefix of every bucket's key.
    pub key_prefix: String,
}

impl Default for RedisLimiterSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            timeout_ms: 100,
            on_error: OnRedisError::Allow,
            key_prefix: "promptflow:rate".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// The one with fewer requests in flight of two instances chosen at random.
    #[default]
    LeastRequests,
    RoundRobin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadBalancerSettings {
    pub policy: BalancePolicy,
    /// Connection failures in a row that eject an instance.
    pub ejection_failures: u32,
    /// First ejection's length; each further one in a row doubles it, up to `max_ejection_ms`.
    pub ejection_ms: u64,
    pub max_ejection_ms: u64,
}

impl Default for LoadBalancerSettings {
    fn default() -> Self {
        Self {
            policy: BalancePolicy::LeastRequests,
            ejection_failures: 1,
            ejection_ms: 10_000,
            max_ejection_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Further attempts, on other instances, after a connection failure.
    pub retries: u32,
    /// Methods retried when the connection failed after the request was sent; any method
    /// is retried when it could not connect at all.
    pub methods: Vec<String>,
    /// Retries may add at most this share of the requests of the last 10 seconds...
    pub budget_ratio: f64,
    /// ...or this many per second, whichever is more.
    pub budget_min_per_sec: u32,
    /// Bodies up to this size are kept so the request can be sent again; larger ones
    /// stream and are not retried.
    pub max_buffered_body: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            retries: 2,
            methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
                .map(String::from)
                .to_vec(),
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            max_buffered_body: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerSettings {
    pub enabled: bool,
    /// Outcomes of the last this many requests to a service are counted.
    pub window: u32,
    /// The circuit never opens before this many outcomes are counted.
    pub minimum_calls: u32,
    /// Failures in the window, in percent, that open the circuit.
    pub failure_rate_percent: u32,
    /// An open circuit refuses requests for this long, then lets `half_open_calls` through.
    pub open_ms: u64,
    pub half_open_calls: u32,
    /// Upstream answers that count as failures (besides connection failures and timeouts).
    pub failure_statuses: Vec<u16>,
}

impl Default for CircuitBreakerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 100,
            minimum_calls: 20,
            failure_rate_percent: 50,
            open_ms: 10_000,
            half_open_calls: 5,
            failure_statuses: vec![502, 503, 504],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutSettings {
    pub connect_timeout_ms: u64,
    /// Time allowed for an upstream's response head (0: none). A streamed body may go on.
    pub response_timeout_ms: u64,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 1_000,
            response_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins allowed, exactly (`https://app.example.com`) or by a leading `*.`
    /// (`https://*.example.com`); empty: no CORS headers at all.
    #[serde(deserialize_with = "platform::settings::list_or_csv")]
    pub allowed_origins: Vec<String>,
    #[serde(deserialize_with = "platform::settings::list_or_csv")]
    pub allowed_methods: Vec<String>,
    #[serde(deserialize_with = "platform::settings::list_or_csv")]
    pub allowed_headers: Vec<String>,
    #[serde(deserialize_with = "platform::settings::list_or_csv")]
    pub exposed_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_secs: u64,
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            allowed_headers: [
                "authorization",
                "content-type",
                "if-match",
                "if-none-match",
                "x-request-id",
                "x-device-id",
                "traceparent",
            ]
            .map(String::from)
            .to_vec(),
            exposed_headers: [
                "etag",
                "location",
                "retry-after",
                "x-request-id",
                "x-ratelimit-remaining",
                "x-ratelimit-replenish-rate",
                "x-ratelimit-burst-capacity",
                "x-ratelimit-requested-tokens",
            ]
            .map(String::from)
            .to_vec(),
            allow_credentials: false,
            max_age_secs: 600,
        }
    }
}
