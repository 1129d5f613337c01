//! The device a session belongs to.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    #[default]
    Web,
    Android,
    Ios,
    Cli,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::Web => "web",
            DeviceType::Android => "android",
            DeviceType::Ios => "ios",
            DeviceType::Cli => "cli",
        }
    }

    pub fn parse(s: &str) -> DeviceType {
        match s {
            "android" => DeviceType::Android,
            "ios" => DeviceType::Ios,
            "cli" => DeviceType::Cli,
            _ => DeviceType::Web,
        }
    }
}

/// What a client says about the device it logs in from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    /// A stable id the app keeps for this device; logging in again from it replaces its
    /// previous session.
    pub id: Option<String>,
    #[serde(rename = "type", default)]
    pub device_type: DeviceType,
    pub name: Option<String>,
}
