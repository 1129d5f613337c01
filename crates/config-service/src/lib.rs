//! config-service (:8888): the Spring Cloud Config Server API (`interop/spring-config.md`)
//! over a git repository or a plain folder, with Spring's symmetric `{cipher}` scheme.
//!
//! `router(config, common)` is the whole HTTP app; `start`/`run` bind and serve it, and run
//! the ref watcher (`config.refresh` announcements) and, with a remote, the fetcher.

pub mod cache;
pub mod cipher;
pub mod environment;
pub mod history;
pub mod http;
pub mod remote;
pub mod repo;
pub mod settings;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use platform::events::EventBus;
use platform::server::{Check, Service, Serving};
use platform::settings::Common;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use environment::{Environment, ParseError};
pub use settings::Settings;

pub const NAME: &str = "config-service";

/// The served repository and the key, shared by every request.
pub struct Config {
    backend: repo::Backend,
    location: String,
    search_paths: Vec<String>,
    cipher: Option<cipher::Cipher>,
    events: EventBus,
    /// Also tell Spring Cloud Bus (`settings.spring_cloud_bus`).
    spring_cloud_bus: bool,
    cache: cache::Cache<Arc<Environment>>,
    /// The JSON answers, by commit, label and media type.
    answers: cache::Cache<axum::body::Bytes>,
    remote: Option<remote::Remote>,
    /// Wakes the ref watcher after a fetch.
    watch_wake: Arc<Notify>,
    pub(crate) admin: settings::AdminSettings,
    pub(crate) reader: settings::ReaderSettings,
    pub(crate) monitor_secret: String,
}

/// A plain file as found: where, its bytes, and the commit read (git).
pub struct PlainFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub version: Option<String>,
}

/// Why an environment could not be assembled.
#[derive(Debug)]
pub enum Error {
    Repo(repo::Error),
    Parse(ParseError),
}

impl Config {
    pub fn open(settings: &Settings, common: &Common) -> anyhow::Result<Self> {
        let path = settings
            .path
            .clone()
            .unwrap_or_else(|| common.data_dir.join("config-repo"));
        let remote = match (settings.backend, settings.remote.uri.is_empty()) {
            (_, true) => None,
            (settings::BackendKind::Git, false) => {
                Some(remote::Remote::open(path.clone(), &settings.remote)?)
            }
            (settings::BackendKind::Folder, false) => anyhow::bail!(
                "invalid setting: config_service.remote needs config_service.backend: git"
            ),
        };
        let backend = match settings.backend {
            // A mirror: the first fetch (at start) fills it.
            settings::BackendKind::Git if remote.is_some() => {
                repo::Backend::git(&path, &settings.default_label)
                    .map_err(|e| anyhow::anyhow!("{NAME}: cannot open the mirror: {e:?}"))?
            }
            settings::BackendKind::Git => {
                if repo::create_if_missing(&path, &settings.default_label).map_err(|e| {
                    anyhow::anyhow!(
                        "{NAME}: cannot create the repository {}: {e}",
                        path.display()
                    )
                })? {
                    tracing::info!(path = %path.display(), "created the configuration repository");
                }
                repo::Backend::git(&path, &settings.default_label)
                    .map_err(|e| anyhow::anyhow!("{NAME}: cannot open the repository: {e:?}"))?
            }
            settings::BackendKind::Folder => repo::Backend::Folder(path),
        };
        let key = if settings.encrypt.key.is_empty() {
            std::env::var("ENCRYPT_KEY").unwrap_or_default()
        } else {
            settings.encrypt.key.clone()
        };
        let cipher = if key.is_empty() {
            None
        } else {
            Some(
                cipher::Cipher::new(&key, &settings.encrypt.salt)
                    .map_err(|e| anyhow::anyhow!("invalid setting: config_service.encrypt: {e}"))?,
            )
        };
        Ok(Self {
            // Sources are named after where they really come from, as Spring names them.
            location: remote
                .as_ref()
                .map_or_else(|| backend.location(), |r| r.uri.clone()),
            backend,
            search_paths: settings.search_paths.clone(),
            cipher,
            events: common.events.clone(),
            spring_cloud_bus: settings.spring_cloud_bus,
            cache: cache::Cache::new(settings.cache_entries),
            answers: cache::Cache::new(settings.cache_entries),
            remote,
            watch_wake: Arc::new(Notify::new()),
            admin: settings.admin.clone(),
            reader: settings.reader.clone(),
            monitor_secret: settings.monitor_secret.clone(),
        })
    }

    pub fn cipher(&self) -> Option<&cipher::Cipher> {
        self.cipher.as_ref()
    }

    /// The environment of `applications` under `profiles` at `label`. Blocking (git reads).
    pub fn environment(
        &self,
        applications: &[String],
        profiles: &[String],
        label: Option<&str>,
    ) -> Result<Environment, Error> {
        let snapshot = self.backend.snapshot(label).map_err(Error::Repo)?;
        // Only git snapshots are cached: a commit never changes, a folder does.
        if let Some(version) = &snapshot.version
            && let Some(env) = self.cache.get(version, applications, profiles)
        {
            let mut env = (*env).clone();
            env.label.clone_from(&snapshot.label);
            return Ok(env);
        }
        let mut sources = Vec::new();
        for file in environment::candidates(applications, profiles) {
            for dir in self.dirs(applications) {
                let path = if dir.is_empty() {
                    file.clone()
                } else {
                    format!("{dir}/{file}")
                };
                if let Some(bytes) = snapshot.read(&path).map_err(Error::Repo)? {
                    let display = format!("{}/{path}", self.location.trim_end_matches('/'));
                    sources.extend(
                        environment::parse_file(&display, &file, &bytes, profiles)
                            .map_err(Error::Parse)?,
                    );
                }
            }
        }
        environment::decrypt(&mut sources, self.cipher.as_ref());
        let env = Environment {
            name: applications.join(","),
            profiles: profiles.to_vec(),
            label: snapshot.label.clone(),
            version: snapshot.version.clone(),
            state: None,
            property_sources: sources,
        };
        if let Some(version) = &snapshot.version {
            self.cache
                .put(version, applications, profiles, Arc::new(env.clone()));
        }
        Ok(env)
    }

    /// The environment as its JSON answer (`v2`: each value with its origin), made once
    /// per commit, label and media type. Blocking (git reads).
    pub fn answer(
        &self,
        applications: &[String],
        profiles: &[String],
        label: Option<&str>,
        v2: bool,
    ) -> Result<axum::body::Bytes, Error> {
        let resolved = self.backend.snapshot(label).map_err(Error::Repo)?;
        let key = resolved.version.as_ref().map(|version| {
            let label = resolved.label.as_deref().unwrap_or_default();
            format!("{version} {label} {v2}")
        });
        if let Some(key) = &key
            && let Some(body) = self.answers.get(key, applications, profiles)
        {
            return Ok(body);
        }
        drop(resolved);
        let env = self.environment(applications, profiles, label)?;
        let body = axum::body::Bytes::from(environment::to_json(&env, v2));
        if let Some(key) = &key
            && env.version.as_deref().is_some_and(|v| key.starts_with(v))
        {
            self.answers.put(key, applications, profiles, body.clone());
        }
        Ok(body)
    }

    /// A plain file for `applications` under `profiles` at `label`: in the search folders
    /// (most specific first, then the root), a profile's variant (`nginx-dev.conf`, the
    /// last profile first) before the file itself, as Spring's ResourceController looks.
    /// The path found, its bytes and the commit read.
    pub fn plain_file(
        &self,
        applications: &[String],
        profiles: &[String],
        label: Option<&str>,
        path: &str,
    ) -> Result<Option<PlainFile>, Error> {
        let snapshot = self.backend.snapshot(label).map_err(Error::Repo)?;
        let (dir_part, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let mut names: Vec<String> = profiles
            .iter()
            .rev()
            .filter(|p| p.as_str() != "default")
            .map(|p| match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}-{p}.{ext}"),
                None => format!("{name}-{p}"),
            })
            .collect();
        names.push(name.to_owned());
        for dir in self.dirs(applications) {
            for name in &names {
                let file = [dir.as_str(), dir_part, name.as_str()]
                    .iter()
                    .filter(|p| !p.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/");
                if let Some(bytes) = snapshot.read(&file).map_err(Error::Repo)? {
                    return Ok(Some(PlainFile {
                        path: file,
                        bytes,
                        version: snapshot.version.clone(),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The served repository when it is git.
    pub fn git(&self) -> Option<&repo::Git> {
        self.backend.as_git()
    }

    pub fn search_paths(&self) -> &[String] {
        &self.search_paths
    }

    pub fn remote_uri(&self) -> Option<&str> {
        self.remote.as_ref().map(|r| r.uri.as_str())
    }

    /// Fetches from the remote now (when there is one) and lets the watcher look at once.
    pub async fn fetch_now(self: &Arc<Self>) {
        if self.remote.is_none() {
            return;
        }
        let config = self.clone();
        let fetched =
            tokio::task::spawn_blocking(move || config.remote.as_ref().map(remote::Remote::fetch))
                .await;
        if let Ok(Some(Ok(()))) = fetched {
            self.watch_wake.notify_one();
        }
    }

    /// The search folders, most specific first, then the root.
    pub fn dirs(&self, applications: &[String]) -> Vec<String> {
        let mut dirs = Vec::new();
        for pattern in &self.search_paths {
            for app in applications {
                let dir = pattern
                    .replace("{application}", app)
                    .trim_matches('/')
                    .to_owned();
                if !dir.split('/').any(|p| p == "..") && !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        if !dirs.iter().any(String::is_empty) {
            dirs.push(String::new());
        }
        dirs
    }

    fn readiness(self: &Arc<Self>) -> Check {
        let config = self.clone();
        Arc::new(move || {
            let config = config.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || config.backend.check())
                    .await
                    .map_err(|e| e.to_string())?
            })
        })
    }
}

impl Config {
    fn remote_readiness(self: &Arc<Self>) -> Check {
        let config = self.clone();
        Arc::new(move || {
            let config = config.clone();
            Box::pin(async move { config.remote.as_ref().map_or(Ok(()), remote::Remote::check) })
        })
    }
}

/// The background tasks: the fetcher (with a remote) and the ref watcher.
fn spawn_tasks(
    config: &Arc<Config>,
    settings: &Settings,
    shutdown: &CancellationToken,
    fetched: bool,
) {
    if config.remote.is_some() {
        let (c, stop) = (config.clone(), shutdown.clone());
        let every = settings.remote.fetch_interval_secs;
        tokio::spawn(async move {
            if !fetched {
                c.fetch_now().await;
            }
            loop {
                let wait = async {
                    if every == 0 {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_secs(every)).await;
                };
                tokio::select! {
                    () = wait => {}
                    () = stop.cancelled() => return,
                }
                c.fetch_now().await;
            }
        });
    }
    if settings.watch_interval_ms > 0 && config.git().is_some() {
        tokio::spawn(watch::watch(
            config.clone(),
            Duration::from_millis(settings.watch_interval_ms),
            config.watch_wake.clone(),
            shutdown.clone(),
        ));
    }
}

/// The whole HTTP app.
pub fn router(config: Arc<Config>, common: &Common) -> Router {
    platform::server::app(
        Service {
            name: NAME,
            checks: {
                let mut checks = vec![("repository", config.readiness())];
                if config.remote.is_some() {
                    checks.push(("remote", config.remote_readiness()));
                }
                checks
            },
            routes: http::routes(config),
        },
        &common.http,
    )
}

/// Opens the repository, binds the port and serves until `shutdown`.
pub async fn start(
    settings: Settings,
    common: &Common,
    shutdown: CancellationToken,
) -> anyhow::Result<Serving> {
    let config = Arc::new(Config::open(&settings, common)?);
    // An empty mirror is fetched before serving, so it answers from the start; one that
    // holds a past fetch serves that at once (a slow remote must not hold up the start).
    let empty = config
        .git()
        .is_some_and(|g| g.refs().map_or(true, |r| r.is_empty()));
    let fetched = config.remote.is_some() && empty;
    if fetched {
        config.fetch_now().await;
    }
    spawn_tasks(&config, &settings, &shutdown, fetched);
    let app = router(config, common);
    platform::server::start(NAME, settings.listen, app, &common.http, shutdown).await
}

pub async fn run(
    settings: Settings,
    common: &Common,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let serving = start(settings, common, shutdown).await?;
    serving.task.await?
}

/// `["a", "b"]` as owned strings, for the unit tests.
#[cfg(test)]
pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}
