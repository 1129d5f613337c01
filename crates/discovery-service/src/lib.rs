//! discovery-service (:8761): a registry Eureka clients use unchanged (`interop/eureka.md`).
//!
//! `router(node)` gives the whole HTTP app (the Eureka API under `/eureka/` and
//! `/eureka/v2/`, the dashboard at `/`, and what every service has); `start`/`run` fill the
//! registry from the peers, then serve, evict expired leases and replicate changes until
//! shutdown. The registry lives in memory, as Eureka's does: peers are its redundancy.

pub mod dashboard;
pub mod http;
pub mod node;
pub mod registry;
pub mod replication;
pub mod settings;
pub mod xml;

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use axum::Router;
use platform::server::{Service, Serving};
use platform::settings::Common;
use tokio_util::sync::CancellationToken;

pub use node::Node;
pub use settings::Settings;

pub const NAME: &str = "discovery-service";

fn check_settings(s: &Settings) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&s.renewal_percent_threshold) {
        bail!("invalid setting: discovery_service.renewal_percent_threshold must be 0 to 1");
    }
    if s.eviction_interval_ms < 100 || s.renewal_window_ms < 100 {
        bail!(
            "invalid setting: discovery_service.eviction_interval_ms and renewal_window_ms must be at least 100"
        );
    }
    if s.replication_batch_size == 0 || s.replication_queue == 0 {
        bail!(
            "invalid setting: discovery_service.replication_batch_size and replication_queue must be at least 1"
        );
    }
    for peer in &s.peers {
        if reqwest::Url::parse(peer).is_err() {
            bail!("invalid setting: discovery_service.peers: `{peer}` is not a URL");
        }
    }
    Ok(())
}

/// The whole HTTP app of a node.
pub fn router(node: Arc<Node>, common: &Common) -> Router {
    platform::server::app(
        Service {
            name: NAME,
            routes: http::routes(node.clone()).merge(dashboard::routes(node)),
            checks: Vec::new(),
        },
        &common.http,
    )
}

/// Binds the port, fills the registry from the peers, and serves until `shutdown`.
pub async fn start(
    settings: Settings,
    common: &Common,
    shutdown: CancellationToken,
) -> anyhow::Result<Serving> {
    check_settings(&settings)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("{NAME}: cannot listen on {}: {e}", settings.listen))?;
    let local_addr = listener.local_addr()?;
    // Batches to peers stay under half the body limit (peers share the setting).
    let node = Node::new(settings, local_addr, common.http.body_limit / 2);
    node.sync_from_peers().await;
    node.spawn_tasks(shutdown.clone());
    let app = router(node, common);
    platform::server::serve(NAME, listener, app, &common.http, shutdown)
}

/// Runs a node until `shutdown`.
pub async fn run(
    settings: Settings,
    common: &Common,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let serving = start(settings, common, shutdown).await?;
    serving.task.await?
}

pub(crate) use platform::clock::now_ms;

pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
