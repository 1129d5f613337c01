use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// discovery-service settings (section `discovery_service`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The other discovery nodes' Eureka base URLs (`http://10.0.0.2:8761/eureka/`). This
    /// node's own address may be in the list; it is skipped.
    #[serde(deserialize_with = "platform::settings::list_or_csv")]
    pub peers: Vec<String>,
    /// Hold every lease while renewals fall below the expected rate (a network split).
    pub self_preservation: bool,
    /// Share of the expected renewals under which self-preservation holds (Eureka: 0.85).
    pub renewal_percent_threshold: f64,
    /// How often expired leases are evicted.
    pub eviction_interval_ms: u64,
    /// The window renewals are counted over for self-preservation (Eureka: a minute).
    pub renewal_window_ms: u64,
    /// How long a change stays in `/apps/delta` (Eureka: three minutes).
    pub delta_retention_ms: u64,
    /// At start, how long to try filling the registry from the peers.
    pub peer_sync_timeout_ms: u64,
    /// Replicated changes sent to a peer in one batch, at most.
    pub replication_batch_size: usize,
    /// Replicated changes waiting for a peer, at most; beyond that the oldest are dropped
    /// (the peer's answers to later heartbeats bring it back in step).
    pub replication_queue: usize,
    /// Shown on the dashboard.
    pub environment: String,
    pub datacenter: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8761)),
            peers: Vec::new(),
            self_preservation: true,
            renewal_percent_threshold: 0.85,
            eviction_interval_ms: 60_000,
            renewal_window_ms: 60_000,
            delta_retention_ms: 180_000,
            peer_sync_timeout_ms: 5_000,
            replication_batch_size: 250,
            replication_queue: 100_000,
            environment: "production".to_owned(),
            datacenter: "default".to_owned(),
        }
    }
}
