//! config-service (:8888): the Spring Cloud Config Server API (`interop/spring-config.md`)
//! over a git repository or a plain folder, with Spring's symmetric `{cipher}` scheme.
//!
//! `router(config, common)` is the whole HTTP app; `start`/`run` bind and serve it.

pub mod cipher;
pub mod environment;
pub mod http;
pub mod repo;
pub mod settings;

use std::sync::Arc;

use axum::Router;
use platform::server::{Check, Service, Serving};
use platform::settings::Common;
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
        let backend = match settings.backend {
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
            location: backend.location(),
            backend,
            search_paths: settings.search_paths.clone(),
            cipher,
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
        Ok(Environment {
            name: applications.join(","),
            profiles: profiles.to_vec(),
            label: snapshot.label.clone(),
            version: snapshot.version.clone(),
            state: None,
            property_sources: sources,
        })
    }

    /// The search folders, most specific first, then the root.
    fn dirs(&self, applications: &[String]) -> Vec<String> {
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

/// The whole HTTP app.
pub fn router(config: Arc<Config>, common: &Common) -> Router {
    platform::server::app(
        Service {
            name: NAME,
            checks: vec![("repository", config.readiness())],
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
