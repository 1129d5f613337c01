//! The client side of config-service (Spring Cloud Config's client): a process reads the
//! environment of the applications it runs at start, and again whenever config-service
//! announces a change on the bus (`config.refresh`) or, as a fallback for a lost
//! announcement, every `poll_secs`.
//!
//! What it reads is an *overlay*: a settings tree laid under the local settings file and
//! the environment (`settings::load_layered`), so a value set on the host pins it there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::events::contracts::{CONFIG_REFRESH, ConfigRefresh};
use crate::events::{EventBus, Subscription};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigClientSettings {
    /// config-service's address, e.g. `http://config:8888`, or `lb://config-service` to find
    /// it through discovery. Empty: settings come from the local file and environment only
    /// (`promptflow up` uses its own config-service).
    pub uri: String,
    /// The profiles asked for (Spring's `spring.profiles.active`).
    #[serde(deserialize_with = "crate::settings::list_or_csv")]
    pub profiles: Vec<String>,
    /// A branch, tag or commit; empty: config-service's default label.
    pub label: String,
    /// Refuse to start when config-service cannot be read (else start on local settings and
    /// keep trying).
    pub fail_fast: bool,
    /// Read again this often even without an announcement (0: only on announcements).
    pub poll_secs: u64,
    pub timeout_ms: u64,
    /// HTTP Basic credentials, when config-service asks for them.
    pub username: String,
    pub password: String,
}

impl Default for ConfigClientSettings {
    fn default() -> Self {
        Self {
            uri: String::new(),
            profiles: vec!["default".into()],
            label: String::new(),
            fail_fast: false,
            poll_secs: 30,
            timeout_ms: 5000,
            username: String::new(),
            password: String::new(),
        }
    }
}

/// One reading of config-service.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// The commit served (`None` from a folder backend).
    pub version: Option<String>,
    /// The merged properties, as a settings tree.
    pub tree: Value,
}

#[derive(Clone)]
pub struct ConfigClient {
    http: reqwest::Client,
    settings: Arc<ConfigClientSettings>,
    applications: Vec<String>,
    /// Finds config-service when `uri` is `lb://config-service` (Spring's discovery-first
    /// bootstrap).
    discovery: Option<crate::discovery::Discovery>,
}

impl ConfigClient {
    /// A client for `applications` (the services this process runs); `None` when no `uri`.
    pub fn new(settings: &ConfigClientSettings, applications: &[&str]) -> Option<Self> {
        if settings.uri.trim().is_empty() || applications.is_empty() {
            return None;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms.max(1)))
            .build()
            .ok()?;
        Some(Self {
            http,
            settings: Arc::new(settings.clone()),
            applications: applications.iter().map(|a| (*a).to_owned()).collect(),
            discovery: None,
        })
    }

    /// Resolves an `lb://` uri through `discovery` (its registry kept fresh by its owner).
    pub fn with_discovery(mut self, discovery: crate::discovery::Discovery) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// Where config-service is now: the uri, or an UP instance of the service it names.
    async fn base(&self) -> Result<String, String> {
        let uri = self.settings.uri.trim_end_matches('/');
        let Some(discovery) = self.discovery.as_ref().filter(|_| uri.starts_with("lb://")) else {
            return Ok(uri.to_owned());
        };
        match discovery.resolve(uri) {
            Ok(url) => Ok(url),
            Err(_) => {
                // Not in the registry read so far: read it once more, now.
                discovery.refresh().await?;
                discovery.resolve(uri)
            }
        }
        .map(|u| u.trim_end_matches('/').to_owned())
    }

    pub fn settings(&self) -> &ConfigClientSettings {
        &self.settings
    }

    /// `GET /{applications}/{profiles}[/{label}]`, merged (the first property source wins).
    pub async fn fetch(&self) -> Result<Overlay, String> {
        let segment = |s: &str| crate::text::encode_path_segment(&s.replace('/', "(_)"));
        let mut url = format!(
            "{}/{}/{}",
            self.base().await?,
            segment(&self.applications.join(",")),
            segment(&self.settings.profiles.join(",")),
        );
        if !self.settings.label.is_empty() {
            url.push('/');
            url.push_str(&segment(&self.settings.label));
        }
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json");
        if !self.settings.username.is_empty() {
            request = request.basic_auth(&self.settings.username, Some(&self.settings.password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("config-service at {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("config-service at {url} answered {status}"));
        }
        let env: Environment = response
            .json()
            .await
            .map_err(|e| format!("config-service at {url}: not an environment: {e}"))?;
        Ok(Overlay {
            version: env.version,
            tree: unflatten(&merge(env.property_sources)),
        })
    }

    /// Reads again on every announcement for these applications and every `poll_secs`,
    /// calling `changed` with each reading that differs from the last (starting from
    /// `last`), until `shutdown`.
    pub async fn watch(
        self,
        bus: &EventBus,
        mut last: Option<Overlay>,
        changed: impl Fn(Overlay) + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) {
        // One slot: announcements arriving while a reading runs make one more reading.
        let (wake, mut woken) = tokio::sync::mpsc::channel::<()>(1);
        let applications = self.applications.clone();
        bus.subscribe(
            Subscription::per_instance("config-client", "config.refresh", &[CONFIG_REFRESH]),
            Arc::new(move |event| {
                let wake = wake.clone();
                let mine = event
                    .data_as::<ConfigRefresh>()
                    .map(|r| applications.iter().any(|a| r.concerns(a)));
                Box::pin(async move {
                    if mine? {
                        let _ = wake.try_send(());
                    }
                    Ok(())
                })
            }),
            shutdown.clone(),
        )
        .await;
        let poll = match self.settings.poll_secs {
            0 => Duration::from_secs(365 * 24 * 3600),
            n => Duration::from_secs(n),
        };
        let mut last_error = String::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(poll) => {}
                Some(()) = woken.recv() => {}
            }
            match self.fetch().await {
                Ok(overlay) => {
                    last_error.clear();
                    if last.as_ref() != Some(&overlay) {
                        last = Some(overlay.clone());
                        changed(overlay);
                    }
                }
                Err(e) => {
                    if e != last_error {
                        tracing::warn!(error = %e, "cannot read config-service; the settings in force stay");
                    }
                    last_error = e;
                }
            }
        }
    }
}

/// Spring's Environment JSON, as far as a client needs it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Environment {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    property_sources: Vec<PropertySource>,
}

#[derive(Deserialize)]
struct PropertySource {
    #[serde(default)]
    source: serde_json::Map<String, Value>,
}

/// Flat properties, the first source's value winning (profile-specific before default).
fn merge(sources: Vec<PropertySource>) -> BTreeMap<String, Value> {
    let mut flat = BTreeMap::new();
    for source in sources {
        for (key, value) in source.source {
            // The v2 media type wraps values as {value, origin}.
            let value = match value {
                Value::Object(mut o) if o.contains_key("value") && o.contains_key("origin") => {
                    o.remove("value").unwrap_or(Value::Null)
                }
                v => v,
            };
            flat.entry(key).or_insert(value);
        }
    }
    flat
}

/// Lists longer than this in flat keys (`a[999999]`) are cut there, not allocated.
const MAX_LIST_INDEX: usize = 10_000;

/// Flat keys back into a tree (`a.b` → `{a: {b}}`, `l[0]` → a list). A key that is both a
/// value and a parent keeps the parent; a key that starts with an index is dropped (it
/// would make the whole tree a list).
pub fn unflatten(flat: &BTreeMap<String, Value>) -> Value {
    let mut root = Value::Object(serde_json::Map::new());
    for (key, value) in flat {
        let parts = split_key(key);
        if !matches!(parts.first(), Some(Part::Name(_))) {
            continue;
        }
        let mut node = &mut root;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            node = match part {
                Part::Name(name) => {
                    if !node.is_object() {
                        *node = Value::Object(serde_json::Map::new());
                    }
                    let Value::Object(map) = node else { break };
                    let slot = map.entry(name.clone()).or_insert(Value::Null);
                    if last && !slot.is_object() && !slot.is_array() {
                        *slot = value.clone();
                    }
                    slot
                }
                Part::Index(n) => {
                    if !node.is_array() {
                        *node = Value::Array(Vec::new());
                    }
                    let Value::Array(list) = node else { break };
                    if *n > MAX_LIST_INDEX {
                        break;
                    }
                    while list.len() <= *n {
                        list.push(Value::Null);
                    }
                    let slot = &mut list[*n];
                    if last && !slot.is_object() && !slot.is_array() {
                        *slot = value.clone();
                    }
                    slot
                }
            };
        }
    }
    root
}

enum Part {
    Name(String),
    Index(usize),
}

/// `a.b[0].c` → `a`, `b`, 0, `c`; a non-numeric `[x]` is a name.
fn split_key(key: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut name = String::new();
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !name.is_empty() {
                    parts.push(Part::Name(std::mem::take(&mut name)));
                }
            }
            '[' => {
                if !name.is_empty() {
                    parts.push(Part::Name(std::mem::take(&mut name)));
                }
                let inside: String = chars.by_ref().take_while(|&c| c != ']').collect();
                match inside.parse::<usize>() {
                    Ok(n) => parts.push(Part::Index(n)),
                    Err(_) => parts.push(Part::Name(inside)),
                }
            }
            c => name.push(c),
        }
    }
    if !name.is_empty() {
        parts.push(Part::Name(name));
    }
    parts
}

/// The keys whose values differ between two trees (added, removed or changed), flat.
pub fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    keys.sort();
    keys
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(list) if !list.is_empty() => {
            for (i, v) in list.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        v => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_source_wins_and_keys_become_a_tree() {
        let sources: Vec<PropertySource> = serde_json::from_value(json!([
            {"name": "gateway-service-dev.yml", "source": {
                "gateway.rate_limit.default.replenish_rate": 3,
                "gateway.routes[1].id": "b"}},
            {"name": "application.yml", "source": {
                "gateway.rate_limit.default.replenish_rate": 50,
                "gateway.routes[0].id": {"value": "a", "origin": "application.yml:3"},
                "log.level": "info"}},
        ]))
        .unwrap();
        let tree = unflatten(&merge(sources));
        assert_eq!(
            tree,
            json!({
                "gateway": {"rate_limit": {"default": {"replenish_rate": 3}},
                            "routes": [{"id": "a"}, {"id": "b"}]},
                "log": {"level": "info"}
            })
        );
    }

    #[test]
    fn hostile_keys_are_bounded_not_obeyed() {
        let flat: BTreeMap<String, Value> = [
            ("a[99999999999]", json!(1)),
            ("b[x]", json!(1)),
            ("[0]", json!("would make the tree a list")),
            ("d", json!("scalar")),
            ("d.e", json!("the parent wins")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(
            unflatten(&flat),
            json!({"a": [], "b": {"x": 1}, "d": {"e": "the parent wins"}})
        );
    }

    #[test]
    fn changed_keys_name_what_moved() {
        let old = json!({"log": {"level": "info"}, "user": {"listen": "0.0.0.0:8081"}});
        let new = json!({"log": {"level": "debug"}, "features": {"registration": false},
                         "user": {"listen": "0.0.0.0:8081"}});
        assert_eq!(
            changed_keys(&old, &new),
            vec!["features.registration".to_owned(), "log.level".to_owned()]
        );
    }
}
