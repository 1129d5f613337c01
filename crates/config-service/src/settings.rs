//! config-service's own settings (section `config_service`). Like Spring's config server,
//! it reads them from its local file and environment, never from itself.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A git repository: labels are branches, tags or commits.
    #[default]
    Git,
    /// A plain folder: no labels, no versions.
    Folder,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptSettings {
    /// The symmetric key (Spring's `encrypt.key`). Empty: `ENCRYPT_KEY` from the
    /// environment, else no encryption.
    pub key: String,
    /// Hex, as Spring's `encrypt.salt`.
    pub salt: String,
}

impl Default for EncryptSettings {
    fn default() -> Self {
        Self {
            key: String::new(),
            salt: "deadbeef".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub backend: BackendKind,
    /// The repository or folder. Empty: `<data_dir>/config-repo`.
    pub path: Option<PathBuf>,
    /// The label served when a request names none.
    pub default_label: String,
    /// Folders inside the repository searched besides its root (Spring's `search-paths`);
    /// `{application}` stands for the application asked for.
    pub search_paths: Vec<String>,
    pub encrypt: EncryptSettings,
    /// Who may write (rollback). No password: only loopback peers may.
    pub admin: AdminSettings,
    /// Who may read (Spring's `spring.security.user`): with a password, every endpoint but
    /// the health checks, metrics and `/monitor` (it has `monitor_secret`) needs these
    /// credentials (or the admin's) over HTTP Basic. No password: reads are open.
    pub reader: ReaderSettings,
    /// A git server to mirror; `path` then holds a bare copy fetched from it.
    pub remote: RemoteSettings,
    /// How often the refs are read to announce changes (`config.refresh`); 0 = never.
    pub watch_interval_ms: u64,
    /// When set, `/monitor` requests must be signed (`X-Hub-Signature-256`) or carry it
    /// (`X-Gitlab-Token`).
    pub monitor_secret: String,
    /// Assembled environments kept per (commit, applications, profiles); 0 = no cache.
    pub cache_entries: usize,
    /// Also announce each change as Spring Cloud Bus's `RefreshRemoteApplicationEvent` on
    /// the `springCloudBus` exchange (RabbitMQ only), so Java services refresh too.
    pub spring_cloud_bus: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    pub username: String,
    pub password: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            password: String::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReaderSettings {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteSettings {
    /// The repository to mirror (`file://`, or `https://` when built with https). Empty:
    /// none, `path` is the repository itself.
    pub uri: String,
    /// Seconds between fetches; 0 = only when `/monitor` is called.
    pub fetch_interval_secs: u64,
    pub username: String,
    pub password: String,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            uri: String::new(),
            fetch_interval_secs: 30,
            username: String::new(),
            password: String::new(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8888)),
            backend: BackendKind::Git,
            path: None,
            default_label: "main".into(),
            search_paths: Vec::new(),
            encrypt: EncryptSettings::default(),
            admin: AdminSettings::default(),
            reader: ReaderSettings::default(),
            remote: RemoteSettings::default(),
            watch_interval_ms: 100,
            monitor_secret: String::new(),
            cache_entries: 256,
            spring_cloud_bus: true,
        }
    }
}
