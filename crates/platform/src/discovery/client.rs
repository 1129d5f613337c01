//! PromptFlow's Eureka client: registration with renewals, deregistration on shutdown, and
//! a cached registry (a full fetch, then deltas checked against the server's hash code; a
//! mismatch fetches everything again).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::instance::{ActionType, Applications, Instance, Status, hashcode};
use super::{DiscoverySettings, Mode};
use crate::clock::now_ms;

/// The registry as this process last saw it: application (upper case) → instances.
#[derive(Debug, Default)]
struct Cache {
    apps: HashMap<String, Vec<Instance>>,
    hashcode: String,
    /// Set once a fetch succeeded (or at once, with a static list).
    loaded: bool,
}

struct Inner {
    settings: DiscoverySettings,
    http: reqwest::Client,
    cache: RwLock<Cache>,
    /// Round-robin position per application.
    turns: RwLock<HashMap<String, Arc<AtomicUsize>>>,
    fetching: std::sync::Once,
    /// Bumped whenever the cached registry changes, so callers can keep views of it.
    generation: AtomicU64,
}

/// A cheap handle to this process's view of the registry.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("mode", &self.inner.settings.mode)
            .finish()
    }
}

impl Default for Discovery {
    /// A static registry with nothing in it.
    fn default() -> Self {
        Self::new(DiscoverySettings {
            mode: Mode::Static,
            ..DiscoverySettings::default()
        })
    }
}

/// A running registration; `finished` completes after the deregistration on shutdown.
pub struct Registration {
    pub instance_id: String,
    pub finished: JoinHandle<()>,
}

impl Discovery {
    pub fn new(settings: DiscoverySettings) -> Discovery {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let mut cache = Cache::default();
        if settings.mode == Mode::Static {
            cache.apps = static_registry(&settings.static_instances);
            cache.loaded = true;
        }
        Discovery {
            inner: Arc::new(Inner {
                settings,
                http,
                cache: RwLock::new(cache),
                turns: RwLock::new(HashMap::new()),
                fetching: std::sync::Once::new(),
                generation: AtomicU64::new(0),
            }),
        }
    }

    pub fn settings(&self) -> &DiscoverySettings {
        &self.inner.settings
    }

    /// The instance this process would register for `app` listening on `addr`.
    pub fn describe(
        &self,
        app: &str,
        addr: SocketAddr,
        metadata: BTreeMap<String, String>,
    ) -> Instance {
        let s = &self.inner.settings;
        let bound = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        let host = s.hostname.clone().unwrap_or_else(|| bound.clone());
        let ip = s.ip_address.clone().unwrap_or_else(|| bound.clone());
        let id = format!("{host}:{}:{}", app.to_ascii_lowercase(), addr.port());
        let mut instance = Instance::new(app, &id, &host, &ip, addr.port());
        if s.prefer_ip_address {
            let base = format!("http://{ip}:{}", addr.port());
            instance.home_page_url = Some(format!("{base}/"));
            instance.status_page_url = Some(format!("{base}/health"));
            instance.health_check_url = Some(format!("{base}/health"));
        }
        instance.lease.renewal_interval_secs = s.renewal_interval_secs;
        instance.lease.duration_secs = s.lease_duration_secs;
        instance.metadata = metadata;
        instance
            .metadata
            .entry("zone".into())
            .or_insert_with(|| s.zone.clone());
        instance
            .metadata
            .entry("version".into())
            .or_insert_with(|| env!("CARGO_PKG_VERSION").to_owned());
        instance
    }

    /// Registers `instance` and keeps its lease renewed until `shutdown`, then cancels it.
    /// With a static list this does nothing. Keeps trying while no server answers.
    pub fn register(&self, instance: Instance, shutdown: CancellationToken) -> Registration {
        let instance_id = instance.instance_id.clone();
        let this = self.clone();
        let finished = tokio::spawn(async move {
            if this.inner.settings.mode == Mode::Static {
                return;
            }
            this.keep_registered(instance, shutdown).await;
        });
        Registration {
            instance_id,
            finished,
        }
    }

    async fn keep_registered(&self, mut instance: Instance, shutdown: CancellationToken) {
        let interval = Duration::from_secs(u64::from(self.inner.settings.renewal_interval_secs));
        let mut registered = false;
        let mut retry = Duration::from_millis(200);
        loop {
            if !registered {
                let now = now_ms();
                instance.last_dirty_ts = now;
                instance.last_updated_ts = now;
                match self.send_registration(&instance).await {
                    Ok(()) => {
                        registered = true;
                        retry = Duration::from_millis(200);
                        tracing::info!(app = %instance.app, id = %instance.instance_id, "registered with discovery");
                    }
                    Err(e) => {
                        tracing::debug!(app = %instance.app, error = %e, "registration failed; retrying");
                    }
                }
            } else {
                match self.send_heartbeat(&instance).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(app = %instance.app, id = %instance.instance_id, "discovery does not know this instance; registering again");
                        registered = false;
                        continue;
                    }
                    Err(e) => tracing::debug!(app = %instance.app, error = %e, "renewal failed"),
                }
            }
            let wait = if registered { interval } else { retry };
            retry = (retry * 2).min(interval);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        if registered {
            match self.send_cancel(&instance).await {
                Ok(()) => {
                    tracing::info!(app = %instance.app, id = %instance.instance_id, "deregistered from discovery")
                }
                Err(e) => {
                    tracing::warn!(app = %instance.app, error = %e, "deregistration failed; the lease will expire")
                }
            }
        }
    }

    fn app_url(base: &str, app: &str) -> String {
        format!("{}/apps/{}", base.trim_end_matches('/'), app)
    }

    fn instance_url(base: &str, instance: &Instance) -> String {
        format!(
            "{}/{}",
            Self::app_url(base, &instance.app),
            crate::text::encode_path_segment(&instance.instance_id)
        )
    }

    /// Sends to each server in turn until one answers; the answer's status is returned.
    async fn to_any_server<F>(&self, build: F) -> Result<StatusCode, String>
    where
        F: Fn(&str) -> reqwest::RequestBuilder,
    {
        let mut last = String::from("no discovery server configured");
        for base in &self.inner.settings.eureka_urls {
            match build(base).send().await {
                Ok(response) if response.status().is_server_error() => {
                    last = format!("{base}: {}", response.status());
                }
                Ok(response) => return Ok(response.status()),
                Err(e) => last = format!("{base}: {e}"),
            }
        }
        Err(last)
    }

    async fn send_registration(&self, instance: &Instance) -> Result<(), String> {
        let body = json!({ "instance": instance.to_json() });
        let status = self
            .to_any_server(|base| {
                self.inner
                    .http
                    .post(Self::app_url(base, &instance.app))
                    .json(&body)
            })
            .await?;
        if status == StatusCode::NO_CONTENT || status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("registration answered {status}"))
        }
    }

    /// `Ok(false)` when the server does not know the instance (register again).
    async fn send_heartbeat(&self, instance: &Instance) -> Result<bool, String> {
        let status = self
            .to_any_server(|base| {
                self.inner
                    .http
                    .put(Self::instance_url(base, instance))
                    .query(&[
                        ("status", instance.status.as_str()),
                        ("lastDirtyTimestamp", &instance.last_dirty_ts.to_string()),
                    ])
            })
            .await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(format!("renewal answered {other}")),
        }
    }

    async fn send_cancel(&self, instance: &Instance) -> Result<(), String> {
        let status = self
            .to_any_server(|base| self.inner.http.delete(Self::instance_url(base, instance)))
            .await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(format!("cancel answered {status}"))
        }
    }

    /// Keeps the cached registry fresh until `shutdown`: one full fetch, then a delta every
    /// `fetch_interval_secs`. Started once per process however often it is called.
    pub fn start_fetching(&self, shutdown: CancellationToken) {
        if self.inner.settings.mode == Mode::Static {
            return;
        }
        let this = self.clone();
        self.inner.fetching.call_once(move || {
            tokio::spawn(async move {
                let every = Duration::from_secs(u64::from(this.inner.settings.fetch_interval_secs));
                loop {
                    if let Err(e) = this.refresh().await {
                        tracing::debug!(error = %e, "registry fetch failed");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(every) => {}
                    }
                }
            });
        });
    }

    /// Brings the cache up to date: a delta when there is a cache, everything otherwise or
    /// when the delta does not add up to the server's registry.
    pub async fn refresh(&self) -> Result<(), String> {
        if self.inner.settings.mode == Mode::Static {
            return Ok(());
        }
        let loaded = self.read_cache(|c| c.loaded);
        if loaded {
            let delta = self.fetch("apps/delta").await?;
            let matches = {
                let mut cache = self.inner.cache.write().unwrap_or_else(|e| e.into_inner());
                if delta.applications.iter().any(|a| !a.instances.is_empty()) {
                    apply_delta(&mut cache.apps, &delta);
                    self.inner.generation.fetch_add(1, Ordering::Release);
                }
                let local = hashcode(cache.apps.values().flatten().map(|i| i.status));
                if local == delta.hashcode {
                    cache.hashcode = local;
                    true
                } else {
                    false
                }
            };
            if matches {
                return Ok(());
            }
            tracing::debug!("registry delta does not match the server's hash code; fetching all");
        }
        let full = self.fetch("apps/").await?;
        let mut cache = self.inner.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.apps = full
            .applications
            .into_iter()
            .map(|a| (a.name, a.instances))
            .collect();
        cache.hashcode = full.hashcode;
        cache.loaded = true;
        self.inner.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Changes whenever the cached registry changes (a view built from `instances` at one
    /// generation is current while the generation stays the same).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    async fn fetch(&self, path: &str) -> Result<Applications, String> {
        let mut last = String::from("no discovery server configured");
        for base in &self.inner.settings.eureka_urls {
            let url = format!("{}/{path}", base.trim_end_matches('/'));
            let response = match self
                .inner
                .http
                .get(&url)
                .header("accept", "application/json")
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    last = format!("{url}: {}", r.status());
                    continue;
                }
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let body: serde_json::Value =
                response.json().await.map_err(|e| format!("{url}: {e}"))?;
            return Applications::from_json(&body).map_err(|e| format!("{url}: {e}"));
        }
        Err(last)
    }

    fn read_cache<T>(&self, f: impl FnOnce(&Cache) -> T) -> T {
        f(&self.inner.cache.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether the registry has been read at least once.
    pub fn loaded(&self) -> bool {
        self.read_cache(|c| c.loaded)
    }

    /// The UP instances of `app`, as last fetched.
    pub fn instances(&self, app: &str) -> Vec<Instance> {
        let app = app.to_ascii_uppercase();
        self.read_cache(|c| {
            c.apps
                .get(&app)
                .map(|list| {
                    list.iter()
                        .filter(|i| i.status == Status::Up)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Every application name with at least one instance, as last fetched.
    pub fn applications(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read_cache(|c| {
            c.apps
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k.clone())
                .collect()
        });
        names.sort();
        names
    }

    /// `lb://service/path` → the URL of `path` on the next UP instance of `service`; any
    /// other URL as it is.
    pub fn resolve(&self, url: &str) -> Result<String, String> {
        let Some(rest) = url.strip_prefix("lb://") else {
            return Ok(url.to_owned());
        };
        let (app, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let base = self
            .next_url(app)
            .ok_or_else(|| format!("no instance of {app} is UP in the registry"))?;
        Ok(format!("{base}/{path}"))
    }

    /// The base URL of the next UP instance of `app`, taking turns between them.
    pub fn next_url(&self, app: &str) -> Option<String> {
        let instances = self.instances(app);
        if instances.is_empty() {
            return None;
        }
        let key = app.to_ascii_uppercase();
        let turn = {
            let turns = self.inner.turns.read().unwrap_or_else(|e| e.into_inner());
            turns.get(&key).cloned()
        }
        .unwrap_or_else(|| {
            let mut turns = self.inner.turns.write().unwrap_or_else(|e| e.into_inner());
            turns.entry(key).or_default().clone()
        });
        let n = turn.fetch_add(1, Ordering::Relaxed) % instances.len();
        Some(instances[n].base_url(self.inner.settings.prefer_ip_address))
    }
}

/// Merges a delta into `apps`: ADDED and MODIFIED replace, DELETED removes.
fn apply_delta(apps: &mut HashMap<String, Vec<Instance>>, delta: &Applications) {
    for app in &delta.applications {
        for changed in &app.instances {
            let list = apps.entry(app.name.clone()).or_default();
            list.retain(|i| i.instance_id != changed.instance_id);
            if changed.action_type != Some(ActionType::Deleted) {
                list.push(changed.clone());
            }
        }
    }
    apps.retain(|_, list| !list.is_empty());
}

fn static_registry(list: &BTreeMap<String, Vec<String>>) -> HashMap<String, Vec<Instance>> {
    list.iter()
        .map(|(app, urls)| {
            let instances = urls
                .iter()
                .filter_map(|url| {
                    let parsed = reqwest::Url::parse(url).ok()?;
                    let host = parsed.host_str()?.to_owned();
                    let port = parsed.port_or_known_default()?;
                    let mut i = Instance::new(app, url, &host, &host, port);
                    if parsed.scheme() == "https" {
                        i.port_enabled = false;
                        i.secure_port = port;
                        i.secure_port_enabled = true;
                    }
                    Some(i)
                })
                .collect();
            (app.to_ascii_uppercase(), instances)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(app: &str, id: &str, status: Status) -> Instance {
        let mut i = Instance::new(app, id, "h", "10.0.0.1", 80);
        i.status = status;
        i
    }

    #[test]
    fn a_delta_replaces_adds_and_removes() {
        let mut apps = HashMap::new();
        apps.insert(
            "A".to_owned(),
            vec![
                instance("A", "a1", Status::Up),
                instance("A", "a2", Status::Up),
            ],
        );
        let mut gone = instance("A", "a1", Status::Up);
        gone.action_type = Some(ActionType::Deleted);
        let mut down = instance("A", "a2", Status::Down);
        down.action_type = Some(ActionType::Modified);
        let mut added = instance("B", "b1", Status::Up);
        added.action_type = Some(ActionType::Added);
        let delta = Applications {
            applications: vec![
                super::super::Application {
                    name: "A".into(),
                    instances: vec![gone, down],
                },
                super::super::Application {
                    name: "B".into(),
                    instances: vec![added],
                },
            ],
            ..Default::default()
        };
        apply_delta(&mut apps, &delta);
        assert_eq!(apps["A"].len(), 1);
        assert_eq!(apps["A"][0].status, Status::Down);
        assert_eq!(apps["B"][0].instance_id, "b1");
        assert_eq!(
            hashcode(apps.values().flatten().map(|i| i.status)),
            "DOWN_1_UP_1_"
        );
    }

    #[tokio::test]
    async fn a_static_list_answers_without_a_server() {
        let mut settings = DiscoverySettings {
            mode: Mode::Static,
            ..DiscoverySettings::default()
        };
        settings.static_instances.insert(
            "user-service".into(),
            vec!["http://user-a:8081".into(), "http://user-b:8081".into()],
        );
        let discovery = Discovery::new(settings);
        assert!(discovery.loaded());
        assert_eq!(discovery.instances("USER-SERVICE").len(), 2);
        let first = discovery.next_url("user-service").unwrap();
        let second = discovery.next_url("user-service").unwrap();
        assert_ne!(first, second, "turns are taken");
        assert_eq!(discovery.next_url("nobody"), None);
        let resolved = discovery
            .resolve("lb://user-service/.well-known/jwks.json")
            .unwrap();
        assert!(resolved.starts_with("http://user-"), "{resolved}");
        assert!(
            resolved.ends_with(":8081/.well-known/jwks.json"),
            "{resolved}"
        );
        assert_eq!(discovery.resolve("http://x/y").unwrap(), "http://x/y");
        assert!(discovery.resolve("lb://nobody/x").is_err());
    }

    #[test]
    fn instance_ids_are_encoded_in_paths() {
        assert_eq!(
            crate::text::encode_path_segment("127.0.0.1:app:80"),
            "127.0.0.1%3Aapp%3A80"
        );
        assert_eq!(crate::text::encode_path_segment("a/b c"), "a%2Fb%20c");
    }
}
