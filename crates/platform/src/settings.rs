//! Settings in layers: built-in defaults (each type's `Default`) < what config-service
//! serves (see `config_client`) < a YAML file < environment variables
//! `PROMPTFLOW_<SECTION>__<KEY>` (double underscore between levels).
//!
//! Every settings struct denies unknown fields, so a misspelt key, in the file or in the
//! environment, stops the start with a message that names it, as does a value of the wrong
//! type.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

pub const ENV_PREFIX: &str = "PROMPTFLOW";
/// Environment variables that select the run, not a setting; they are not read as settings.
pub const RESERVED_ENV: &[&str] = &["PROMPTFLOW_CONFIG_FILE", "PROMPTFLOW_LOG"];

#[derive(Debug, thiserror::Error)]
#[error("invalid setting: {0}")]
pub struct SettingsError(pub String);

/// Loads `T` from its defaults, then `file` (YAML) if given, then the `PROMPTFLOW_*` entries
/// of `env`.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, SettingsError> {
    load_layered(None, file, env)
}

/// As [`load`], with `overlay` (what config-service serves, as a tree) between the
/// defaults and the file: a value set on the host pins it.
pub fn load_layered<T: DeserializeOwned>(
    overlay: Option<&serde_json::Value>,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, SettingsError> {
    let mut builder = config::Config::builder();
    if let Some(tree) = overlay {
        let source = config::Config::try_from(tree)
            .map_err(|e| SettingsError(format!("from config-service: {e}")))?;
        builder = builder.add_source(source);
    }
    if let Some(path) = file {
        if !path.exists() {
            return Err(SettingsError(format!(
                "settings file {} does not exist",
                path.display()
            )));
        }
        builder = builder
            .add_source(config::File::from(path.to_path_buf()).format(config::FileFormat::Yaml));
    }
    let prefix = format!("{ENV_PREFIX}_");
    let vars: HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix) && !RESERVED_ENV.contains(&k.as_str()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(vars)),
    );
    let config = builder.build().map_err(|e| SettingsError(e.to_string()))?;
    config
        .try_deserialize::<T>()
        .map_err(|e| SettingsError(e.to_string()))
}

/// HTTP server settings shared by every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// A request still running after this long is answered with a 503 problem.
    pub request_timeout_secs: u64,
    /// On SIGTERM/SIGINT, requests in flight get this long to finish.
    pub shutdown_grace_secs: u64,
    /// Peers whose `X-Forwarded-For` is believed (the gateway, a load balancer).
    #[serde(deserialize_with = "list_or_csv")]
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: crate::extract::DEFAULT_BODY_LIMIT,
            request_timeout_secs: 30,
            shutdown_grace_secs: 20,
            trusted_proxies: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1]),
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `info,user_service=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// Where a service keeps its data. Empty `url`: a SQLite file named after the service in
/// the data folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host:5432/user_db`.
    pub url: Option<String>,
    /// Connections kept by the pool (readers, for SQLite; SQLite has one writer).
    pub max_connections: u32,
    /// On PostgreSQL, create the database if it does not exist.
    pub create_if_missing: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            create_if_missing: true,
        }
    }
}

impl DatabaseSettings {
    /// The URL to connect to: the configured one, or `<data_dir>/<file>` on SQLite.
    pub fn url_or_sqlite(&self, data_dir: &Path, file: &str) -> String {
        match &self.url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => format!("sqlite://{}", data_dir.join(file).display()),
        }
    }
}

/// What every service's `run` gets besides its own settings.
#[derive(Debug, Clone)]
pub struct Common {
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    /// The event bus every service of this process publishes to and consumes from.
    pub events: crate::events::EventBus,
    /// This process's view of the service registry (`lb://service/...` URLs resolve by it).
    pub discovery: crate::discovery::Discovery,
    /// Feature switches and the signal that settings changed (config-service's refresh).
    pub live: crate::live::Live,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http: HttpSettings::default(),
            events: crate::events::EventBus::default(),
            discovery: crate::discovery::Discovery::default(),
            live: crate::live::Live::default(),
        }
    }
}

/// Accepts a YAML list or, as environment variables give, a comma-separated string.
pub fn list_or_csv<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        List(Vec<T>),
        Text(String),
    }
    match Either::<T>::deserialize(deserializer)? {
        Either::List(v) => Ok(v),
        Either::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<T>()
                    .map_err(|e| serde::de::Error::custom(format!("`{s}`: {e}")))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Top {
        http: HttpSettings,
        name: String,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "http:\n  body_limit: 2048\n  shutdown_grace_secs: 3\nname: file"
        )
        .unwrap();
        let top: Top = load(
            Some(file.path()),
            env(&[
                ("PROMPTFLOW_HTTP__BODY_LIMIT", "4096"),
                ("PROMPTFLOW_NAME", "12345"),
                ("PROMPTFLOW_HTTP__TRUSTED_PROXIES", "10.0.0.1, ::1"),
                ("PROMPTFLOW_CONFIG_FILE", "ignored"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(top.http.body_limit, 4096, "environment beats the file");
        assert_eq!(top.http.shutdown_grace_secs, 3, "the file beats defaults");
        assert_eq!(top.http.request_timeout_secs, 30, "defaults fill the rest");
        assert_eq!(
            top.name, "12345",
            "a numeric-looking value still reads as text"
        );
        assert_eq!(top.http.trusted_proxies.len(), 2);
    }

    #[test]
    fn config_service_sits_under_the_file_and_the_environment() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "http:\n  shutdown_grace_secs: 3").unwrap();
        let overlay = serde_json::json!({
            "http": {"shutdown_grace_secs": 9, "request_timeout_secs": "7", "body_limit": 1},
            "name": "remote"
        });
        let top: Top = load_layered(
            Some(&overlay),
            Some(file.path()),
            env(&[("PROMPTFLOW_HTTP__BODY_LIMIT", "4096")]),
        )
        .unwrap();
        assert_eq!(
            top.http.shutdown_grace_secs, 3,
            "the file beats config-service"
        );
        assert_eq!(
            top.http.body_limit, 4096,
            "the environment beats config-service"
        );
        assert_eq!(
            top.http.request_timeout_secs, 7,
            "config-service beats defaults, text read as a number as .properties give it"
        );
        assert_eq!(top.name, "remote");
        let bad = serde_json::json!({"http": {"body_limt": 1}});
        let err = load_layered::<Top>(Some(&bad), None, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("body_limt"), "{err}");
    }

    #[test]
    fn a_wrong_setting_is_named() {
        let err = load::<Top>(None, env(&[("PROMPTFLOW_HTTP__BODY_LIMIT", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("body_limit"), "{err}");
        let err = load::<Top>(None, env(&[("PROMPTFLOW_HTTP__BODY_LIMT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("body_limt"), "{err}");
        let err = load::<Top>(None, env(&[("PROMPTFLOW_HTTP__TRUSTED_PROXIES", "nope")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
