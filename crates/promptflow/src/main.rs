//! `promptflow`: the one binary. `up` runs every service in one process on SQLite;
//! `serve <service>` runs one service, for the split deployment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use platform::config_client::{ConfigClient, ConfigClientSettings, Overlay};
use platform::discovery::{Discovery, DiscoverySettings, Registration};
use platform::events::{EventBus, EventSettings};
use platform::server::Serving;
use platform::settings::{Common, HttpSettings, LogSettings};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "promptflow",
    version,
    about = "PromptFlow: self-hosted prompt management"
)]
struct Cli {
    /// Settings file (YAML). Environment variables `PROMPTFLOW_<SECTION>__<KEY>` override it.
    #[arg(long, global = true, env = "PROMPTFLOW_CONFIG_FILE")]
    config: Option<PathBuf>,
    /// Folder for SQLite databases and other local data (setting `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in this one process, each on its own port, on SQLite.
    Up,
    /// Run one service in this process.
    Serve {
        #[arg(value_enum)]
        service: ServiceName,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ServiceName {
    #[value(name = "user-service", alias = "user")]
    User,
    #[value(name = "business-service", alias = "business")]
    Business,
    #[value(name = "discovery-service", alias = "discovery")]
    Discovery,
    #[value(name = "gateway-service", alias = "gateway")]
    Gateway,
    #[value(name = "config-service", alias = "config")]
    Config,
}

/// Every setting, by section. Services not built yet have no section.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    data_dir: Option<PathBuf>,
    log: LogSettings,
    http: HttpSettings,
    events: EventSettings,
    user: user_service::Settings,
    business: business_service::Settings,
    /// How this process's services register and find each other.
    discovery: DiscoverySettings,
    discovery_service: discovery_service::Settings,
    gateway: gateway_service::Settings,
    config_service: config_service::Settings,
    /// Where this process reads its shared settings (config-service).
    config_client: ConfigClientSettings,
    /// Feature switches (see `platform::live::features`), changed live.
    features: BTreeMap<String, bool>,
}

/// The sections config-service may set. The rest of what it serves is not PromptFlow's
/// (Spring keys in an `application.yml` shared with Java services) or not for it to say
/// (where to read config from, the config server's own settings, the data folder).
const REMOTE_SECTIONS: &[&str] = &[
    "log",
    "http",
    "events",
    "user",
    "business",
    "discovery",
    "discovery_service",
    "gateway",
    "features",
];

/// Sections applied live when config-service changes them; the rest wait for a restart.
const LIVE_PREFIXES: &[&str] = &["log.level", "features.", "gateway."];

/// The settings' layers: defaults < config-service's overlay < the file < the environment.
/// The overlay changes when config-service announces a change; the gateway reads through
/// this too, so its live reload sees it.
#[derive(Clone)]
struct Sources {
    file: Option<PathBuf>,
    overlay: Arc<std::sync::RwLock<Option<serde_json::Value>>>,
}

impl Sources {
    fn load(&self) -> Result<Settings, platform::settings::SettingsError> {
        platform::settings::load_layered(
            self.overlay().as_ref(),
            self.file.as_deref(),
            std::env::vars(),
        )
    }

    /// Lays `tree` under the local settings; returns the tree it replaced.
    fn set_overlay(&self, tree: Option<serde_json::Value>) -> Option<serde_json::Value> {
        let tree = tree.map(|t| match t {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.into_iter()
                    .filter(|(k, _)| REMOTE_SECTIONS.contains(&k.as_str()))
                    .collect(),
            ),
            _ => serde_json::Value::Object(Default::default()),
        });
        std::mem::replace(
            &mut *self
                .overlay
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            tree,
        )
    }

    fn overlay(&self) -> Option<serde_json::Value> {
        self.overlay
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Password hashing allocates ~19 MiB at a time. glibc raises its mmap threshold after such
/// a block is freed, so later ones come from the heap and stay resident for good; a fixed
/// threshold keeps large blocks mmapped, returned to the system as soon as they are freed.
fn return_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

fn main() -> ExitCode {
    return_large_allocations_to_the_system();
    let cli = Cli::parse();
    let settings: Settings = match platform::settings::load(cli.config.as_deref(), std::env::vars())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("promptflow: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = platform::telemetry::init(&settings.log) {
        eprintln!("promptflow: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("promptflow: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "promptflow stopped with an error");
            eprintln!("promptflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, local: Settings) -> anyhow::Result<()> {
    check(&local)?;
    let shutdown = platform::server::shutdown_on_signal();
    let data_dir = cli
        .data_dir
        .clone()
        .or(local.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("data"));
    let sources = Sources {
        file: cli.config.clone(),
        overlay: Default::default(),
    };
    // config-service first, as in Spring Cloud: the others read their settings from it.
    // In one process it shares the in-process bus its announcements travel on.
    let mut events = None;
    let mut config_serving = None;
    let (client_settings, applications) = match cli.command {
        Command::Up => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating the data folder {}", data_dir.display()))?;
            tracing::info!(data_dir = %data_dir.display(), "starting every service in one process");
            let bus = EventBus::new(&local.events);
            let common = Common {
                events: bus.clone(),
                data_dir: data_dir.clone(),
                http: local.http.clone(),
                ..Common::default()
            };
            let serving =
                config_service::start(local.config_service.clone(), &common, shutdown.clone())
                    .await?;
            let mut client = local.config_client.clone();
            if client.uri.is_empty() {
                client.uri = format!("http://{}", loopback(serving.local_addr));
            }
            events = Some(bus);
            config_serving = Some(serving);
            (
                client,
                vec![
                    discovery_service::NAME,
                    user_service::NAME,
                    business_service::NAME,
                    gateway_service::NAME,
                ],
            )
        }
        Command::Serve {
            service: ServiceName::Config,
        } => (ConfigClientSettings::default(), vec![]),
        Command::Serve { service } => (local.config_client.clone(), vec![service.name()]),
    };
    let client = ConfigClient::new(&client_settings, &applications).map(|client| {
        if client_settings.uri.starts_with("lb://") {
            // Discovery-first: config-service is found in the registry, read with the local
            // discovery settings (config-service cannot tell where it is itself).
            let discovery = Discovery::new(local.discovery.clone());
            discovery.start_fetching(shutdown.clone());
            client.with_discovery(discovery)
        } else {
            client
        }
    });
    let (settings, first) = match &client {
        Some(client) => first_reading(client, &sources, local).await?,
        None => (local, None),
    };
    check(&settings)?;
    if let Err(e) = platform::telemetry::set_level(&settings.log.level) {
        tracing::warn!(error = %e, "log.level from config-service is not applied");
    }
    let mut discovery_settings = settings.discovery;
    // The gateway reads its section again when the settings change.
    let reader = sources.clone();
    let reload_gateway: gateway_service::Reload =
        Arc::new(move || reader.load().map(|s| s.gateway).map_err(|e| e.to_string()));
    let mut common = Common {
        events: events.unwrap_or_else(|| EventBus::new(&settings.events)),
        data_dir,
        http: settings.http,
        discovery: Discovery::new(discovery_settings.clone()),
        live: Default::default(),
    };
    common.live.set_features(settings.features.clone());
    if let Some(client) = client {
        tokio::spawn(watch_config(
            client,
            common.clone(),
            sources.clone(),
            first,
            shutdown.clone(),
        ));
    }
    // `up` points its services at its own discovery-service once that listens.
    // A discovery node does not read the registry from itself (Eureka's
    // `fetchRegistry: false` for servers).
    if matches!(
        cli.command,
        Command::Serve {
            service: ServiceName::User | ServiceName::Business | ServiceName::Gateway
        }
    ) {
        common.discovery.start_fetching(shutdown.clone());
    }
    let services: Vec<(&str, Serving)> = match cli.command {
        Command::Up => {
            let config = config_serving.context("config-service started first")?;
            let discovery =
                discovery_service::start(settings.discovery_service, &common, shutdown.clone())
                    .await?;
            // In one process the services register where discovery listens.
            if discovery_settings.eureka_urls == DiscoverySettings::default().eureka_urls {
                discovery_settings.eureka_urls =
                    vec![format!("http://{}/eureka/", loopback(discovery.local_addr))];
                common.discovery = Discovery::new(discovery_settings.clone());
                common.discovery.start_fetching(shutdown.clone());
            }
            let user = user_service::start(settings.user, &common, shutdown.clone()).await?;
            let mut business = settings.business;
            // In one process business-service reads user-service's keys where it listens.
            if business.jwks_url == business_service::Settings::default().jwks_url {
                business.jwks_url =
                    format!("http://{}/.well-known/jwks.json", loopback(user.local_addr));
            }
            let business = business_service::start(business, &common, shutdown.clone()).await?;
            let gateway = gateway_service::start(
                settings.gateway,
                &common,
                shutdown.clone(),
                Some(reload_gateway),
            )
            .await?;
            vec![
                (config_service::NAME, config),
                (discovery_service::NAME, discovery),
                (user_service::NAME, user),
                (business_service::NAME, business),
                (gateway_service::NAME, gateway),
            ]
        }
        Command::Serve {
            service: ServiceName::User,
        } => {
            if settings.user.provision_library
                && common.events.transport() == platform::events::Transport::Memory
            {
                anyhow::bail!(
                    "invalid setting: user.provision_library needs events.transport: rabbitmq \
                     when user-service runs on its own (the registration saga waits for \
                     business-service's answer); set user.provision_library: false to run \
                     user-service without business-service"
                );
            }
            vec![(
                user_service::NAME,
                user_service::start(settings.user, &common, shutdown.clone()).await?,
            )]
        }
        Command::Serve {
            service: ServiceName::Business,
        } => vec![(
            business_service::NAME,
            business_service::start(settings.business, &common, shutdown.clone()).await?,
        )],
        Command::Serve {
            service: ServiceName::Gateway,
        } => vec![(
            gateway_service::NAME,
            gateway_service::start(
                settings.gateway,
                &common,
                shutdown.clone(),
                Some(reload_gateway),
            )
            .await?,
        )],
        Command::Serve {
            service: ServiceName::Config,
        } => vec![(
            config_service::NAME,
            config_service::start(settings.config_service, &common, shutdown.clone()).await?,
        )],
        Command::Serve {
            service: ServiceName::Discovery,
        } => vec![(
            discovery_service::NAME,
            discovery_service::start(settings.discovery_service, &common, shutdown.clone()).await?,
        )],
    };
    let discovery = common.discovery.clone();
    let mut registrations = Vec::new();
    for (name, serving) in &services {
        tracing::info!(service = name, address = %serving.local_addr, "ready");
        // A discovery node does not register with itself (Eureka's
        // `registerWithEureka: false` for servers).
        if *name != discovery_service::NAME {
            let instance = discovery.describe(name, serving.local_addr, Default::default());
            registrations.push(discovery.register(instance, shutdown.clone()));
        }
    }
    let result = wait_all(services, shutdown).await;
    deregistered(registrations).await;
    result
}

fn check(settings: &Settings) -> anyhow::Result<()> {
    settings
        .events
        .check()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    settings
        .discovery
        .check()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))
}

impl ServiceName {
    fn name(self) -> &'static str {
        match self {
            Self::User => user_service::NAME,
            Self::Business => business_service::NAME,
            Self::Discovery => discovery_service::NAME,
            Self::Gateway => gateway_service::NAME,
            Self::Config => config_service::NAME,
        }
    }
}

/// The settings to start on: config-service's under the local ones. When config-service
/// cannot be read, or what it serves does not load, the start goes on with the local
/// settings alone (the watcher keeps trying) unless `config_client.fail_fast`.
async fn first_reading(
    client: &ConfigClient,
    sources: &Sources,
    local: Settings,
) -> anyhow::Result<(Settings, Option<Overlay>)> {
    let fail_fast = client.settings().fail_fast;
    let uri = client.settings().uri.clone();
    let overlay = match client.fetch().await {
        Ok(overlay) => overlay,
        Err(e) if fail_fast => anyhow::bail!("{e} (config_client.fail_fast is set)"),
        Err(e) => {
            tracing::warn!(error = %e, "starting on the local settings alone");
            return Ok((local, None));
        }
    };
    sources.set_overlay(Some(overlay.tree.clone()));
    match sources.load() {
        Ok(settings) => {
            tracing::info!(%uri, version = overlay.version.as_deref().unwrap_or("-"), "settings read from config-service");
            applied(overlay.version.as_deref());
            Ok((settings, Some(overlay)))
        }
        Err(e) if fail_fast => Err(anyhow::anyhow!("config-service's settings: {e}")),
        Err(e) => {
            tracing::warn!(error = %e, "config-service's settings do not load; starting on the local settings alone");
            sources.set_overlay(None);
            Ok((local, Some(overlay)))
        }
    }
}

/// Applies every change config-service announces: log level and feature switches here,
/// then tells the services (the gateway reloads its routes and limits). A change that does
/// not load is refused whole and the settings in force stay.
async fn watch_config(
    client: ConfigClient,
    common: Common,
    sources: Sources,
    first: Option<Overlay>,
    shutdown: CancellationToken,
) {
    let bus = common.events.clone();
    client
        .watch(
            &bus,
            first,
            move |overlay| {
                let version = overlay.version.clone();
                let old = sources.set_overlay(Some(overlay.tree));
                let settings = match sources.load() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(version = version.as_deref().unwrap_or("-"), error = %e, "config-service's new settings do not load; the settings in force stay");
                        sources.set_overlay(old);
                        return;
                    }
                };
                if let Err(e) = platform::telemetry::set_level(&settings.log.level) {
                    tracing::warn!(error = %e, "log.level is not applied");
                }
                common.live.set_features(settings.features);
                common.live.announce();
                let empty = serde_json::Value::Object(Default::default());
                let moved = platform::config_client::changed_keys(
                    old.as_ref().unwrap_or(&empty),
                    &sources.overlay().unwrap_or_default(),
                );
                let later: Vec<&String> = moved
                    .iter()
                    .filter(|k| !LIVE_PREFIXES.iter().any(|p| k.starts_with(p)))
                    .collect();
                if !later.is_empty() {
                    tracing::warn!(settings = ?later, "changed settings that take effect at the next restart");
                }
                tracing::info!(version = version.as_deref().unwrap_or("-"), changed = moved.len(), "settings from config-service applied");
                applied(version.as_deref());
            },
            shutdown,
        )
        .await;
}

/// `config_applied_total` and `config_version_info{version}` on `/metrics`: which commit
/// this process runs on.
fn applied(version: Option<&str>) {
    // `serve` reads config-service before any service has installed the recorder.
    platform::metrics::install();
    static LAST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(old) = last.take() {
        metrics::gauge!("config_version_info", "version" => old).set(0.0);
    }
    let version = version.unwrap_or("none").to_owned();
    metrics::gauge!("config_version_info", "version" => version.clone()).set(1.0);
    metrics::counter!("config_applied_total").increment(1);
    *last = Some(version);
}

/// Waits (briefly) for every service to have left the registry.
async fn deregistered(registrations: Vec<Registration>) {
    let all = futures_util::future::join_all(registrations.into_iter().map(|r| r.finished));
    if tokio::time::timeout(std::time::Duration::from_secs(5), all)
        .await
        .is_err()
    {
        tracing::warn!("deregistration from discovery did not finish; the leases will expire");
    }
}

/// The address to reach a service listening on `addr` from this machine.
fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Waits for every service; the first to fail stops the others.
async fn wait_all(
    services: Vec<(&str, Serving)>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut first_error = None;
    let mut tasks: tokio::task::JoinSet<(String, anyhow::Result<()>)> = tokio::task::JoinSet::new();
    for (name, serving) in services {
        let name = name.to_owned();
        tasks.spawn(async move {
            let result = match serving.task.await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("{name} panicked: {e}")),
            };
            (name, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((name, Err(e))) = joined {
            tracing::error!(service = %name, error = format!("{e:#}"), "service failed; stopping the others");
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
