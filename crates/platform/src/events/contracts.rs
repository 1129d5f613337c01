//! The events PromptFlow's services exchange: names (also routing keys) and `data` shapes.
//! Consumers ignore fields they do not know, so a field can be added without a lock-step
//! release.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const USER_REGISTERED: &str = "user.registered";
pub const USER_DELETED: &str = "user.deleted";
pub const LIBRARY_PROVISIONED: &str = "library.provisioned";
pub const LIBRARY_PROVISIONING_FAILED: &str = "library.provisioning_failed";
pub const LIBRARY_DELETED: &str = "library.deleted";
pub const LIBRARY_DELETION_FAILED: &str = "library.deletion_failed";
pub const PROMPT_CREATED: &str = "prompt.created";
pub const PROMPT_UPDATED: &str = "prompt.updated";
pub const PROMPT_DELETED: &str = "prompt.deleted";
pub const DATA_SYNC: &str = "data.sync";
pub const CONFIG_REFRESH: &str = "config.refresh";

/// `config.refresh`: config-service saw a change (a new commit on a label, or a git host's
/// webhook on `/monitor`); every process serving one of `destination` reads its settings
/// again. Not behind an outbox: a lost announcement is made good by each client's poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRefresh {
    /// Application names (`gateway-service`), or `*` for all (`application*.yml` changed).
    pub destination: Vec<String>,
    /// The label (branch or tag) that moved, when known.
    #[serde(default)]
    pub label: Option<String>,
    /// The commit now served for `label`, when known.
    #[serde(default)]
    pub version: Option<String>,
    /// The changed files, relative to the repository's root.
    #[serde(default)]
    pub paths: Vec<String>,
}

impl ConfigRefresh {
    /// Is `application` one of the destinations? Spring Cloud Bus's `name:**` names one.
    pub fn concerns(&self, application: &str) -> bool {
        self.destination.iter().any(|d| {
            let name = d.split(':').next().unwrap_or(d);
            name == "*" || name == "**" || name == application
        })
    }
}

/// Spring Cloud Bus's exchange (a Spring Cloud Stream destination) and the routing key its
/// producers use.
pub const SPRING_CLOUD_BUS: &str = "springCloudBus";

/// Spring Cloud Bus's `RefreshRemoteApplicationEvent` as Jackson writes it, so Java
/// services on the same broker refresh too. `destination` is `name:**`, or `**` for all.
pub fn spring_refresh_event(origin: &str, destination: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "RefreshRemoteApplicationEvent",
        "timestamp": crate::clock::now().timestamp_millis(),
        "originService": origin,
        "destinationService": destination,
        "id": Uuid::new_v4().to_string(),
    })
}

/// `user.registered`: an account was created. With a `deadline`, user-service waits for
/// the library (registration saga) and business-service must not provision after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub username: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

/// `user.deleted`: the account is going (deletion saga, with a `deadline` after which
/// business-service must refuse, since the account may be back to active), or is gone
/// (a failed registration: no deadline, delete whatever exists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user_id: Uuid,
    pub reason: String,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

/// business-service's answers: `library.provisioned`, `library.provisioning_failed`,
/// `library.deleted`, `library.deletion_failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibraryReply {
    pub user_id: Uuid,
    #[serde(default)]
    pub reason: Option<String>,
    /// Prompts created (provisioning) or removed (deletion).
    #[serde(default)]
    pub prompts: u64,
}

/// `prompt.created`, `prompt.updated`, `prompt.deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptChanged {
    pub prompt_id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub version: i32,
    pub revision: i64,
    pub visibility: String,
    /// For `prompt.deleted`: `true` when purged for good rather than moved to the trash.
    #[serde(default)]
    pub permanent: bool,
}

/// `data.sync`: something of `user_id`'s changed; devices pull from `cursor` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSync {
    pub user_id: Uuid,
    pub cursor: i64,
    /// `prompt`, `folder` or `tag`.
    pub entity: String,
    pub entity_id: String,
    /// `upsert` or `delete`.
    pub op: String,
    /// The device whose push made the change, so it can skip its own echo.
    #[serde(default)]
    pub device_id: Option<String>,
}
