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
    /// config-service's address, e.g. `http://config:8888`. Empty: settings come from the
    /// local file and environment only (`promptflow up` uses its own config-service).
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
        })
    }

    pub fn settings(&self) -> &ConfigClientSettings {
        &self.settings
    }

    /// `GET /{applications}/{profiles}[/{label}]`, merged (the first property source wins).
    pub async fn fetch(&self) -> Result<Overlay, String> {
        let segment = |s: &str| crate::text::encode_path_segment(&s.replace('/', "(_)"));
        let mut url = format!(
            "{}/{}/{}",
            self.settings.uri.trim_end_matches('/'),
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

/// Lists longer than this in flat keys (`a[999999]`) are refused, not allocated.
const MAX_LIST_INDEX: usize = 10_000;

/// Flat keys (`a.b`, `list[0].c`) back into a tree. A key that does not fit the tree built
/// so far (a scalar where a map is wanted) is dropped; the first writer wins.
pub fn unflatten(flat: &BTreeMap<String, Value>) -> Value {
    let mut root = Value::Object(Default::default());
    for (key, value) in flat {
        let Some(path) = key_path(key) else { continue };
        insert(&mut root, &path, value.clone());
    }
    root
}

#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn key_path(key: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if name.is_empty() && steps.is_empty() {
            return None;
        }
        if !name.is_empty() {
            steps.push(Step::Key(name.to_owned()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            let index: usize = inner[..end].parse().ok()?;
            if index > MAX_LIST_INDEX {
                return None;
            }
            steps.push(Step::Index(index));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    (!steps.is_empty()).then_some(steps)
}

fn insert(node: &mut Value, path: &[Step], value: Value) {
    let Some((step, rest)) = path.split_first() else {
        return;
    };
    let fresh = || match rest.first() {
        Some(Step::Index(_)) => Value::Array(Vec::new()),
        _ => Value::Object(Default::default()),
    };
    let child = match (step, node) {
        (Step::Key(k), Value::Object(map)) => {
            if rest.is_empty() {
                map.entry(k.clone()).or_insert(value);
                return;
            }
            map.entry(k.clone()).or_insert_with(fresh)
        }
        (Step::Index(i), Value::Array(list)) => {
            if list.len() <= *i {
                list.resize(*i + 1, Value::Null);
            }
            if rest.is_empty() {
                if list[*i].is_null() {
                    list[*i] = value;
                }
                return;
            }
            if list[*i].is_null() {
                list[*i] = fresh();
            }
            &mut list[*i]
        }
        _ => return,
    };
    insert(child, rest, value);
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
    fn hostile_keys_are_dropped_not_obeyed() {
        let flat: BTreeMap<String, Value> = [
            ("a[99999999999]", json!(1)),
            ("b[x]", json!(1)),
            ("[0]", json!(1)),
            ("d", json!("scalar")),
            ("d.e", json!("no room under a scalar")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(unflatten(&flat), json!({"d": "scalar"}));
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
