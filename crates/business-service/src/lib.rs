//! business-service (:8082): prompts, versions, folders, tags, categories, search,
//! rendering and import/export.
//!
//! `router(state)` gives the whole HTTP app; `start`/`run` connect to `business_db`,
//! migrate, and serve until shutdown. Callers are verified against user-service's JWKS.

pub mod domain;
pub mod events;
pub mod http;
pub mod settings;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use platform::auth::TokenVerifier;
use platform::server::{Service, Serving};
use platform::settings::Common;
use tokio_util::sync::CancellationToken;

pub use http::AppState;
pub use settings::Settings;

use crate::storage::Store;
use crate::storage::migrations::Migrator;

pub const NAME: &str = "business-service";

fn check_settings(s: &Settings) -> anyhow::Result<()> {
    if !(1..=1_000_000).contains(&s.max_content_chars) {
        bail!("invalid setting: business.max_content_chars must be 1 to 1000000");
    }
    if !(10..=100_000).contains(&s.search_candidates) {
        bail!("invalid setting: business.search_candidates must be 10 to 100000");
    }
    if s.jwks_url.trim().is_empty() {
        bail!("invalid setting: business.jwks_url may not be empty");
    }
    Ok(())
}

/// Connects to `business_db`, applies migrations, and sets up token verification.
pub async fn build(settings: Settings, common: &Common) -> anyhow::Result<AppState> {
    check_settings(&settings)?;
    let url = settings
        .database
        .url_or_sqlite(&common.data_dir, "business.db");
    let db = platform::db::connect(&url, &settings.database).await?;
    db.migrate::<Migrator>().await?;
    let verifier = TokenVerifier::new(
        &settings.issuer,
        &settings.audience,
        platform::auth::remote_jwks_via(settings.jwks_url.clone(), common.discovery.clone()),
    );
    // user-service may still be starting: keys are fetched on the first token if need be.
    if let Err(e) = verifier.refresh().await {
        tracing::warn!(error = %e, url = %settings.jwks_url, "signing keys not fetched yet");
    }
    let relay = platform::events::outbox::Relay::new(db.clone(), common.events.clone(), NAME);
    let store = Store::with_relay(db, relay);
    if let Err(e) = store.optimize().await {
        tracing::warn!(error = %e, "refreshing planner statistics failed");
    }
    Ok(AppState {
        store,
        verifier,
        settings: Arc::new(settings),
        live: events::Live::default(),
    })
}

pub fn router(state: AppState, common: &Common) -> Router {
    let database = platform::server::database_check(state.store.db().clone());
    let events = common.events.readiness();
    platform::server::app(
        Service {
            name: NAME,
            routes: http::routes(state),
            checks: vec![("database", database), ("events", events)],
        },
        &common.http,
    )
}

pub async fn start(
    settings: Settings,
    common: &Common,
    shutdown: CancellationToken,
) -> anyhow::Result<Serving> {
    let listen = settings.listen;
    let state = build(settings, common).await?;
    tokio::spawn(maintain(state.clone(), shutdown.clone()));
    if let Some(relay) = state.store.relay() {
        relay.spawn(shutdown.clone());
    }
    events::start(
        &common.events,
        state.store.clone(),
        state.live.clone(),
        &state.settings,
        shutdown.clone(),
    )
    .await;
    platform::server::start(NAME, listen, router(state, common), &common.http, shutdown).await
}

pub async fn run(
    settings: Settings,
    common: &Common,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let serving = start(settings, common, shutdown).await?;
    serving.task.await.context("business-service task")?
}

/// Every hour: purge prompts that have been in the trash longer than the retention, and
/// refresh the planner's statistics.
async fn maintain(state: AppState, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(3600));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let cutoff = platform::clock::now()
            - chrono::Duration::days(i64::from(state.settings.trash_retention_days));
        match state.store.purge_trash(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "trash emptied of old prompts"),
            Err(e) => tracing::warn!(error = %e, "purging the trash failed; will retry"),
        }
        // A device retries a push within minutes or days, not months.
        if let Err(e) = state.store.purge_receipts(30 * 24 * 3600 * 1000).await {
            tracing::warn!(error = %e, "purging old push receipts failed; will retry");
        }
        if let Err(e) = state.store.optimize().await {
            tracing::warn!(error = %e, "refreshing planner statistics failed");
        }
    }
}
