//! business-service settings (section `business`, `PROMPTFLOW_BUSINESS__*`).

use std::net::SocketAddr;

use platform::settings::DatabaseSettings;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the service listens (seed port 8082).
    pub listen: SocketAddr,
    /// `business_db`; by default `business.db` in the data folder.
    pub database: DatabaseSettings,
    /// Tokens are accepted from this issuer, for this audience (user-service's settings).
    pub issuer: String,
    pub audience: String,
    /// user-service's public keys; `lb://user-service/...` finds user-service through
    /// discovery.
    pub jwks_url: String,
    /// Longest prompt text accepted, in characters.
    pub max_content_chars: usize,
    /// Deleted prompts stay restorable this long, then are purged.
    pub trash_retention_days: u32,
    /// A text search ranks at most this many of the newest matches (keeps a very common
    /// word as fast as a rare one).
    pub search_candidates: u32,
    /// Largest import accepted, in bytes.
    pub import_limit: usize,
    /// Prompts a newly provisioned library may hold.
    pub default_quota: u64,
    /// New libraries get a starter folder with a few example prompts.
    pub starter_content: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8082)),
            database: DatabaseSettings::default(),
            issuer: "promptflow".into(),
            audience: "promptflow".into(),
            jwks_url: "lb://user-service/.well-known/jwks.json".into(),
            max_content_chars: 100_000,
            trash_retention_days: 30,
            search_candidates: 1000,
            import_limit: 32 * 1024 * 1024,
            default_quota: 100_000,
            starter_content: true,
        }
    }
}
