//! Service discovery, Eureka's way: the wire model both the discovery server and the
//! services use, and the client every PromptFlow service runs to register itself, renew its
//! lease, deregister on shutdown and find the others through a cached registry kept fresh by
//! deltas. A settings switch replaces the registry with a static list (tests, Kubernetes
//! DNS names).

pub mod client;
pub mod instance;

pub use client::{Discovery, Registration};
pub use instance::{ActionType, Application, Applications, Instance, Status};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The header that marks a request from one discovery node to another.
pub const REPLICATION_HEADER: &str = "x-netflix-discovery-replication";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Register with the discovery servers and read the registry from them.
    #[default]
    Eureka,
    /// Register nowhere; other services are the ones listed in `static_instances`.
    Static,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySettings {
    pub mode: Mode,
    /// Discovery servers' Eureka base URLs, tried in order (`http://host:8761/eureka/`).
    #[serde(deserialize_with = "crate::settings::list_or_csv")]
    pub eureka_urls: Vec<String>,
    /// How often a service renews its lease.
    pub renewal_interval_secs: u32,
    /// How long the server keeps a lease that is not renewed.
    pub lease_duration_secs: u32,
    /// How often the cached registry asks for a delta.
    pub fetch_interval_secs: u32,
    /// The name others reach this host by; the bound address, or 127.0.0.1, when empty.
    pub hostname: Option<String>,
    /// The address others reach this host at; as `hostname` when empty.
    pub ip_address: Option<String>,
    /// Call other instances by address rather than by host name.
    pub prefer_ip_address: bool,
    /// Sent as the `zone` metadata of every instance registered from this process.
    pub zone: String,
    /// `mode: static`: application name → base URLs of its instances.
    pub static_instances: BTreeMap<String, Vec<String>>,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            mode: Mode::Eureka,
            eureka_urls: vec!["http://127.0.0.1:8761/eureka/".to_owned()],
            renewal_interval_secs: 30,
            lease_duration_secs: 90,
            fetch_interval_secs: 30,
            hostname: None,
            ip_address: None,
            prefer_ip_address: true,
            zone: "default".to_owned(),
            static_instances: BTreeMap::new(),
        }
    }
}

impl DiscoverySettings {
    pub fn check(&self) -> Result<(), String> {
        if self.mode == Mode::Eureka && self.eureka_urls.is_empty() {
            return Err(
                "discovery.eureka_urls may not be empty with discovery.mode: eureka".into(),
            );
        }
        for url in &self.eureka_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "discovery.eureka_urls: `{url}` is not an http(s) URL"
                ));
            }
        }
        if self.renewal_interval_secs == 0 || self.lease_duration_secs <= self.renewal_interval_secs
        {
            return Err(
                "discovery.lease_duration_secs must be longer than discovery.renewal_interval_secs (> 0)"
                    .into(),
            );
        }
        if self.fetch_interval_secs == 0 {
            return Err("discovery.fetch_interval_secs must be at least 1".into());
        }
        for (app, urls) in &self.static_instances {
            for url in urls {
                if reqwest::Url::parse(url).is_err() {
                    return Err(format!(
                        "discovery.static_instances.{app}: `{url}` is not a URL"
                    ));
                }
            }
        }
        Ok(())
    }
}
