//! gateway-service (:8080): the single public entry. Routes requests to the services found
//! through discovery (or to fixed URLs), checks access tokens at the edge, limits request
//! rates, balances load over instances, retries what is safe to retry, and streams bodies
//! both ways. Its settings are read again without a restart (a change of the settings
//! file, SIGHUP, or `POST /actuator/gateway/refresh`).

pub mod auth;
pub mod balancer;
pub mod breaker;
pub mod budget;
pub mod cors;
pub mod engine;
pub mod headers;
pub mod http;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod settings;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use platform::auth::TokenVerifier;
use platform::server::{Check, Serving};
use platform::settings::Common;
use tokio_util::sync::CancellationToken;

pub use proxy::{Gateway, Reload};
pub use settings::Settings;

pub const NAME: &str = "gateway-service";

/// Everything the gateway needs, ready to serve. The token keys are fetched now if
/// user-service answers, else when the first token arrives.
pub async fn build(
    settings: Settings,
    common: &Common,
    reload: Option<Reload>,
) -> anyhow::Result<Arc<Gateway>> {
    let fetch =
        platform::auth::remote_jwks_via(settings.jwks_url.clone(), common.discovery.clone());
    let verifier = TokenVerifier::new(&settings.issuer, &settings.audience, fetch);
    if let Err(e) = verifier.refresh().await {
        tracing::warn!(error = format!("{e:#}"), url = %settings.jwks_url, "the token keys cannot be fetched yet; they will be when a token arrives");
    }
    let auth = auth::EdgeAuth::new(verifier, settings.token_cache_entries);
    metrics::describe();
    let gateway = Gateway::new(
        settings,
        auth,
        common.discovery.clone(),
        common.http.trusted_proxies.clone(),
        reload,
    )
    .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    Ok(Arc::new(gateway))
}

/// The gateway's own routes (health, readiness, metrics, actuator).
pub fn router(gateway: Arc<Gateway>, common: &Common) -> Router {
    let discovery = common.discovery.clone();
    let registry: Check = Arc::new(move || {
        let loaded = discovery.loaded();
        Box::pin(async move {
            if loaded {
                Ok(())
            } else {
                Err("the service registry has not been read yet".to_owned())
            }
        })
    });
    let limiter_gateway = gateway.clone();
    let limiter: Check = Arc::new(move || {
        let limiter = limiter_gateway.limiter();
        Box::pin(async move { limiter.ready().await })
    });
    http::routes(
        gateway,
        vec![("registry", registry), ("rate_limiter", limiter)],
    )
}

/// Builds the gateway and serves it on `settings.listen` until `shutdown`; re-reads its
/// settings with `reload` every `reload_interval_secs`, on SIGHUP and when `common.live`
/// announces a change.
pub async fn start(
    settings: Settings,
    common: &Common,
    shutdown: CancellationToken,
    reload: Option<Reload>,
) -> anyhow::Result<Serving> {
    let listen = settings.listen;
    let workers = match settings.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let cors =
        cors::Cors::new(&settings.cors).map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    let gateway = build(settings, common, reload).await?;
    let own = router(gateway.clone(), common);
    let listeners = bind_workers(listen, workers)?;
    tokio::spawn(maintain(
        gateway.clone(),
        common.live.subscribe(),
        shutdown.clone(),
    ));
    let grace = Duration::from_secs(common.http.shutdown_grace_secs);
    serve_on_workers(listeners, gateway, own, cors, grace, shutdown)
}

/// One listening socket, handed to `n` workers: each waits on it and the first free one
/// takes the next connection. (Separate `SO_REUSEPORT` sockets would let the kernel's hash
/// put most of a few busy connections on one worker while the other idles.)
fn bind_workers(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("{NAME}: cannot listen on {addr}"))?;
    let first = socket.listen(1024)?.into_std()?;
    let mut listeners = Vec::with_capacity(n.max(1));
    for _ in 1..n.max(1) {
        listeners.push(first.try_clone()?);
    }
    listeners.push(first);
    Ok(listeners)
}

/// Serves on each listener from a thread with a single-threaded runtime of its own, so a
/// request, its upstream connection and its answer never wait on another thread's wake-up
/// (nginx's workers). The returned task ends when every worker has stopped.
fn serve_on_workers(
    listeners: Vec<std::net::TcpListener>,
    gateway: Arc<Gateway>,
    own: Router,
    cors: Option<cors::Cors>,
    grace: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Serving> {
    let local_addr = listeners
        .first()
        .context("no listening socket")?
        .local_addr()?;
    tracing::info!(service = NAME, %local_addr, workers = listeners.len(), "listening");
    let mut threads = Vec::new();
    let n_workers = listeners.len();
    let (workers, inboxes) = engine::Workers::new(n_workers);
    let settings = gateway.clone();
    tokio::spawn(engine::workers::balance(
        workers.clone(),
        engine::affinity::Cpus::of_this_thread(),
        move || settings.table_now().settings.pack_workers,
        shutdown.clone(),
    ));
    for ((i, listener), inbox) in listeners.into_iter().enumerate().zip(inboxes) {
        let workers = workers.clone();
        let (gateway, own, cors) = (gateway.clone(), own.clone(), cors.clone());
        // A token of the worker's own: waiters of one token share a lock.
        let shutdown = shutdown.child_token();
        let thread = std::thread::Builder::new()
            .name(format!("gateway-{i}"))
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_park(metrics::flush)
                    .build()?;
                // Made on its thread: it holds this worker's own (`Rc`) handles.
                let engine = engine::Engine::new(gateway, own, cors, shutdown, (workers, i));
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    // A task of its own: what `block_on` waits for is polled on every wake-up
                    // of any connection, and a join handle is the cheapest thing to poll.
                    let served = tokio::task::spawn_local(engine::serve(
                        std::rc::Rc::new(engine),
                        listener,
                        grace,
                        inbox,
                    ));
                    served.await.context("gateway worker")?;
                    anyhow::Ok(())
                })
            })?;
        threads.push(thread);
    }
    let task = tokio::task::spawn_blocking(move || {
        let mut result = Ok(());
        for thread in threads {
            let outcome = thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a gateway worker panicked")));
            if let Err(e) = outcome {
                result = Err(e);
            }
        }
        tracing::info!(service = NAME, "stopped");
        result
    });
    let task = tokio::spawn(async move { task.await.context("gateway workers")? });
    Ok(Serving { local_addr, task })
}

/// Upkeep every few seconds (gauges, forgotten tokens and instances, the rate limiter's
/// own upkeep), and the settings read again when due, on SIGHUP, and at once when
/// config-service changed them (`changes`).
async fn maintain(
    gateway: Arc<Gateway>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut hangup = hangups();
    let mut limiter = gateway.limiter();
    let mut limiter_upkeep = shutdown.child_token();
    limiter.spawn_housekeeping(limiter_upkeep.clone());
    let mut last_reload = tokio::time::Instant::now();
    let mut last_error = String::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        let signalled = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => false,
            Some(()) = hangup.recv() => true,
            Ok(()) = changes.changed() => true,
        };
        n += 1;
        let every = gateway.table().settings.reload_interval_secs;
        let due = every > 0 && last_reload.elapsed() >= Duration::from_secs(every);
        if signalled || due {
            last_reload = tokio::time::Instant::now();
            let worker = gateway.clone();
            match tokio::task::spawn_blocking(move || worker.reload()).await {
                Ok(Ok(_)) => last_error.clear(),
                Ok(Err(e)) => {
                    if e != last_error || signalled {
                        tracing::warn!(error = %e, "the changed gateway settings were not applied; the old ones stay in force");
                    }
                    last_error = e;
                }
                Err(e) => tracing::warn!(error = %e, "reading the gateway settings failed"),
            }
        }
        let current = gateway.limiter();
        if !Arc::ptr_eq(&current, &limiter) {
            limiter_upkeep.cancel();
            limiter = current;
            limiter_upkeep = shutdown.child_token();
            limiter.spawn_housekeeping(limiter_upkeep.clone());
        }
        if n.is_multiple_of(5) {
            gateway.housekeeping();
        }
    }
}

/// SIGHUP as a stream of `()` (nothing on other systems).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while signal.recv().await.is_some() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}
