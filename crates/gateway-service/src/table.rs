//! The settings in force, compiled once per change for the hot path: routes, the methods
//! that may be retried, identity headers, and each fixed-URL route's endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::uri::{Authority, Scheme};

use crate::balancer::{Balancer, Endpoint};
use crate::headers::IdentityHeaders;
use crate::ratelimit;
use crate::routes::{Route, RouteTimeout, Routes, Target};
use crate::settings::{LimitSpec, Settings};

pub struct Table {
    pub settings: Settings,
    pub routes: Routes,
    pub identity: IdentityHeaders,
    retry_methods: Vec<Method>,
    /// Endpoints of routes to a fixed URL, by route id.
    fixed: HashMap<Arc<str>, Arc<[Endpoint]>>,
    /// `metrics_allowed_from`, parsed.
    metrics_from: Vec<ipnet::IpNet>,
}

/// `10.0.0.0/8`, `::1/128`, or one address (a network of one).
fn networks(list: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!("gateway.metrics_allowed_from: `{s}` is not a network or an address")
                })
        })
        .collect()
}

impl Table {
    /// Compiles `settings`; an error names the setting that is wrong.
    pub fn compile(settings: Settings, balancer: &Balancer) -> Result<Table, String> {
        check(&settings)?;
        let routes = Routes::compile(
            &settings.routes,
            &settings.default_filters,
            &settings.rate_limit.default,
        )?;
        for route in routes.iter() {
            if let Some(spec) = &route.rate_limit {
                ratelimit::check_spec(spec)
                    .map_err(|e| format!("route `{}`: RequestRateLimiter: {e}", route.id))?;
            }
        }
        let identity = IdentityHeaders::new(&settings.identity_headers)?;
        let retry_methods = methods(&settings.retry.methods, "gateway.retry.methods")?;
        let metrics_from = networks(&settings.metrics_allowed_from)?;
        let mut fixed = HashMap::new();
        for route in routes.iter() {
            if let Target::Url { scheme, authority } = &route.target {
                let endpoint = balancer.endpoint(&route.uri, scheme.clone(), authority.clone());
                fixed.insert(route.id.clone(), Arc::from(vec![endpoint]));
            }
        }
        Ok(Table {
            settings,
            routes,
            identity,
            retry_methods,
            fixed,
            metrics_from,
        })
    }

    /// May a client at `ip` read `/metrics`?
    pub fn metrics_allowed(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.metrics_from.iter().any(|n| n.contains(&ip))
    }

    pub fn fixed_endpoints(&self, route: &Route) -> Option<Arc<[Endpoint]>> {
        self.fixed.get(&route.id).cloned()
    }

    /// The limit a route's requests take from, if any.
    pub fn limit<'t>(&'t self, route: &'t Route) -> Option<&'t LimitSpec> {
        route.rate_limit.as_ref().or_else(|| {
            self.settings
                .rate_limit
                .enabled
                .then_some(&self.settings.rate_limit.default)
        })
    }

    /// Further attempts allowed for `method` on `route`, and whether the method may be
    /// retried after its request was sent.
    pub fn retries(&self, route: &Route, method: &Method) -> (u32, bool) {
        match &route.retry {
            Some(r) => {
                let idempotent = r
                    .methods
                    .as_deref()
                    .unwrap_or(&self.retry_methods)
                    .contains(method);
                (r.retries, idempotent)
            }
            None => (
                self.settings.retry.retries,
                self.retry_methods.contains(method),
            ),
        }
    }

    pub fn connect_timeout(&self, route: &Route) -> Duration {
        route.connect_timeout.unwrap_or(Duration::from_millis(
            self.settings.timeouts.connect_timeout_ms,
        ))
    }

    pub fn response_timeout(&self, route: &Route) -> Option<Duration> {
        match route.response_timeout {
            RouteTimeout::Off => None,
            RouteTimeout::After(d) => Some(d),
            RouteTimeout::Default => match self.settings.timeouts.response_timeout_ms {
                0 => None,
                ms => Some(Duration::from_millis(ms)),
            },
        }
    }

    pub fn body_limit(&self, route: &Route) -> u64 {
        route.max_body.map_or(self.settings.body_limit, |m| {
            m.min(self.settings.body_limit)
        })
    }
}

fn methods(names: &[String], setting: &str) -> Result<Vec<Method>, String> {
    names
        .iter()
        .map(|m| {
            Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{setting}: `{m}` is not an HTTP method"))
        })
        .collect()
}

/// Checks what the route compiler does not see.
fn check(s: &Settings) -> Result<(), String> {
    ratelimit::check_spec(&s.rate_limit.default)
        .map_err(|e| format!("gateway.rate_limit.default: {e}"))?;
    if s.rate_limit.redis.timeout_ms == 0 {
        return Err("gateway.rate_limit.redis.timeout_ms must be at least 1".into());
    }
    if !(0.0..=10.0).contains(&s.retry.budget_ratio) {
        return Err("gateway.retry.budget_ratio must be between 0 and 10".into());
    }
    if s.retry.retries > 10 {
        return Err("gateway.retry.retries may be at most 10".into());
    }
    let cb = &s.circuit_breaker;
    if cb.window == 0 || cb.minimum_calls == 0 || cb.half_open_calls == 0 {
        return Err(
            "gateway.circuit_breaker.window, minimum_calls and half_open_calls must be at least 1"
                .into(),
        );
    }
    if !(1..=100).contains(&cb.failure_rate_percent) {
        return Err("gateway.circuit_breaker.failure_rate_percent must be 1 to 100".into());
    }
    if let Some(bad) = cb
        .failure_statuses
        .iter()
        .find(|c| !(100..=599).contains(*c))
    {
        return Err(format!(
            "gateway.circuit_breaker.failure_statuses: {bad} is not an HTTP status"
        ));
    }
    let lb = &s.load_balancer;
    if lb.ejection_failures == 0 {
        return Err("gateway.load_balancer.ejection_failures must be at least 1".into());
    }
    if lb.max_ejection_ms < lb.ejection_ms {
        return Err(
            "gateway.load_balancer.max_ejection_ms may not be shorter than ejection_ms".into(),
        );
    }
    if s.timeouts.connect_timeout_ms == 0 {
        return Err("gateway.timeouts.connect_timeout_ms must be at least 1".into());
    }
    if s.body_limit == 0 {
        return Err("gateway.body_limit must be at least 1".into());
    }
    if s.jwks_url.trim().is_empty() {
        return Err("gateway.jwks_url may not be empty".into());
    }
    Ok(())
}

/// The scheme and authority of an instance's base URL (`http://10.0.0.5:8082`).
pub fn split_base(base: &str) -> Option<(Scheme, Authority)> {
    let uri: http::Uri = base.parse().ok()?;
    Some((uri.scheme()?.clone(), uri.authority()?.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(from: &[&str]) -> Result<Table, String> {
        let settings = Settings {
            metrics_allowed_from: from.iter().map(|s| (*s).to_owned()).collect(),
            ..Settings::default()
        };
        Table::compile(settings, &Balancer::new(&Default::default()))
    }

    #[test]
    fn metrics_are_for_this_machine_and_private_networks_by_default() {
        let t = Table::compile(Settings::default(), &Balancer::new(&Default::default())).unwrap();
        for ip in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.20.0.9",
            "192.168.1.1",
            "fd00::5",
            "::ffff:10.0.0.1",
        ] {
            assert!(t.metrics_allowed(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!t.metrics_allowed(ip.parse().unwrap()), "{ip}");
        }
        let one = table(&["203.0.113.7"]).unwrap();
        assert!(one.metrics_allowed("203.0.113.7".parse().unwrap()));
        assert!(!one.metrics_allowed("127.0.0.1".parse().unwrap()));
        let err = table(&["10.0.0.0/33"]).err().unwrap();
        assert!(
            err.contains("metrics_allowed_from") && err.contains("10.0.0.0/33"),
            "{err}"
        );
    }
}
