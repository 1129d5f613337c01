//! `promptflow`: the one binary. `up` runs every service in one process on SQLite;
//! `serve <service>` runs one service, for the split deployment.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
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

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    settings
        .events
        .check()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    settings
        .discovery
        .check()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    let mut discovery_settings = settings.discovery;
    // The gateway reads its section again when the settings change.
    let config_file = cli.config.clone();
    let reload_gateway: gateway_service::Reload = Arc::new(move || {
        platform::settings::load::<Settings>(config_file.as_deref(), std::env::vars())
            .map(|s| s.gateway)
            .map_err(|e| e.to_string())
    });
    let shutdown = platform::server::shutdown_on_signal();
    let mut common = Common {
        events: EventBus::new(&settings.events),
        data_dir: cli
            .data_dir
            .or(settings.data_dir)
            .unwrap_or_else(|| PathBuf::from("data")),
        http: settings.http,
        discovery: Discovery::new(discovery_settings.clone()),
    };
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
            std::fs::create_dir_all(&common.data_dir).with_context(|| {
                format!("creating the data folder {}", common.data_dir.display())
            })?;
            tracing::info!(data_dir = %common.data_dir.display(), "starting every service in one process");
            // config-service first, as in Spring Cloud: the others may read from it.
            let config =
                config_service::start(settings.config_service, &common, shutdown.clone()).await?;
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
