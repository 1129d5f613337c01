//! user-service settings (section `user` of the settings file, `PROMPTFLOW_USER__*`).

use std::net::SocketAddr;

use platform::settings::DatabaseSettings;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the service listens (seed port 8081).
    pub listen: SocketAddr,
    /// `user_db`; by default `user.db` in the data folder.
    pub database: DatabaseSettings,
    /// `iss` of every token issued here.
    pub issuer: String,
    /// `aud` of every token issued here; every PromptFlow service expects it.
    pub audience: String,
    pub access_token_ttl_secs: u64,
    /// A refresh token not used within this time expires, and its session with it.
    pub refresh_token_ttl_secs: u64,
    /// The signing key is replaced this often (0: only when an admin rotates it).
    pub key_rotation_interval_secs: u64,
    pub password_hash: PasswordHashSettings,
    pub login_throttle: LoginThrottleSettings,
    /// Creates this administrator at start if no account has its username.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// Service accounts kept in step with this list at start (client credentials).
    pub service_accounts: Vec<ServiceAccountSeed>,
    /// New accounts stay `pending` until business-service has provisioned their library
    /// (the registration saga). Off only for a user-service deployed without it.
    pub provision_library: bool,
    /// business-service must answer a saga step within this; past it (and a few seconds'
    /// grace) the saga is compensated.
    pub saga_timeout_secs: u64,
    /// Registering (and deleting an account) waits this long for the saga to settle before
    /// answering `202 Accepted` with the account still pending.
    pub saga_wait_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            database: DatabaseSettings::default(),
            issuer: "promptflow".into(),
            audience: "promptflow".into(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            key_rotation_interval_secs: 30 * 24 * 3600,
            password_hash: PasswordHashSettings::default(),
            login_throttle: LoginThrottleSettings::default(),
            bootstrap_admin: None,
            service_accounts: Vec::new(),
            provision_library: true,
            saga_timeout_secs: 60,
            saga_wait_ms: 5000,
        }
    }
}

/// Argon2id cost. The defaults are OWASP's (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordHashSettings {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// How repeated failed logins are slowed down. Past `free_failures` within `window_secs`,
/// each further failure blocks the key for twice as long as the last, up to
/// `max_block_secs`. Keys are the account name tried and the client address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LoginThrottleSettings {
    pub account_free_failures: u32,
    pub address_free_failures: u32,
    pub window_secs: u64,
    pub max_block_secs: u64,
}

impl Default for LoginThrottleSettings {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            address_free_failures: 20,
            window_secs: 15 * 60,
            max_block_secs: 15 * 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAdmin {
    pub username: String,
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountSeed {
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(deserialize_with = "platform::settings::list_or_csv")]
    pub scopes: Vec<String>,
}
