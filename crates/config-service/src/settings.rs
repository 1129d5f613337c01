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
        }
    }
}
