//! user-service (:8081): accounts, login, tokens, sessions, roles and service accounts.
//!
//! `router(state)` gives the whole HTTP app (routes plus what every service has);
//! `start`/`run` connect to `user_db`, migrate, seed, and serve until shutdown.

pub mod domain;
pub mod http;
pub mod passwords;
pub mod sagas;
pub mod settings;
pub mod storage;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, bail};
use axum::Router;
use chrono::Duration;
use platform::auth::TokenVerifier;
use platform::server::{Service, Serving};
use platform::settings::Common;
use tokio_util::sync::CancellationToken;

pub use http::AppState;
pub use settings::Settings;

use crate::domain::roles::{Role, validate_scopes};
use crate::domain::validation as v;
use crate::passwords::Passwords;
use crate::storage::Store;
use crate::storage::migrations::Migrator;
use crate::storage::users::{CreateUserError, NewUser};
use crate::tokens::Issuer;

pub const NAME: &str = "user-service";

/// A saga is compensated this long after its deadline, so that an answer sent just
/// before the deadline, or a clock a little ahead elsewhere, still counts.
const SAGA_GRACE: Duration = Duration::seconds(5);

fn secs(value: u64) -> Duration {
    Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX / 4))
}

fn check_settings(s: &Settings) -> anyhow::Result<()> {
    if s.issuer.trim().is_empty() {
        bail!("invalid setting: user.issuer may not be empty");
    }
    if s.audience.trim().is_empty() {
        bail!("invalid setting: user.audience may not be empty");
    }
    if !(60..=86_400).contains(&s.access_token_ttl_secs) {
        bail!("invalid setting: user.access_token_ttl_secs must be 60 to 86400");
    }
    if s.refresh_token_ttl_secs < s.access_token_ttl_secs {
        bail!(
            "invalid setting: user.refresh_token_ttl_secs must be at least user.access_token_ttl_secs"
        );
    }
    if !(5..=86_400).contains(&s.saga_timeout_secs) {
        bail!("invalid setting: user.saga_timeout_secs must be 5 to 86400");
    }
    if s.saga_wait_ms > 60_000 {
        bail!("invalid setting: user.saga_wait_ms must be at most 60000");
    }
    if s.key_rotation_interval_secs != 0 && s.key_rotation_interval_secs < 3600 {
        bail!("invalid setting: user.key_rotation_interval_secs must be 0 (off) or at least 3600");
    }
    for (i, account) in s.service_accounts.iter().enumerate() {
        v::username(&account.client_id).map_err(|e| {
            anyhow::anyhow!("invalid setting: user.service_accounts[{i}].client_id {e}")
        })?;
        if account.client_secret.len() < 16 {
            bail!(
                "invalid setting: user.service_accounts[{i}].client_secret must be at least 16 characters"
            );
        }
        validate_scopes(&account.scopes).map_err(|e| {
            anyhow::anyhow!("invalid setting: user.service_accounts[{i}].scopes: {e}")
        })?;
    }
    if let Some(admin) = &s.bootstrap_admin {
        v::username(&admin.username)
            .map_err(|e| anyhow::anyhow!("invalid setting: user.bootstrap_admin.username {e}"))?;
        v::email(&admin.email)
            .map_err(|e| anyhow::anyhow!("invalid setting: user.bootstrap_admin.email {e}"))?;
        v::password(&admin.password)
            .map_err(|e| anyhow::anyhow!("invalid setting: user.bootstrap_admin.password {e}"))?;
    }
    Ok(())
}

/// Connects to `user_db`, applies migrations, loads the signing keys and seeds the
/// settings' administrator and service accounts.
pub async fn build(settings: Settings, common: &Common) -> anyhow::Result<AppState> {
    check_settings(&settings)?;
    let url = settings.database.url_or_sqlite(&common.data_dir, "user.db");
    let db = platform::db::connect(&url, &settings.database).await?;
    db.migrate::<Migrator>().await?;
    let store = Store::new(db);
    let passwords = Passwords::new(&settings.password_hash)?;
    let issuer = Arc::new(
        Issuer::start(
            store.clone(),
            settings.issuer.clone(),
            settings.audience.clone(),
            secs(settings.access_token_ttl_secs),
        )
        .await
        .context("loading the token signing keys")?,
    );
    let fetch_from = issuer.clone();
    let verifier = TokenVerifier::new(
        &settings.issuer,
        &settings.audience,
        Arc::new(move || {
            let issuer = fetch_from.clone();
            Box::pin(async move {
                issuer.reload().await?;
                Ok(issuer.jwks())
            })
        }),
    );
    verifier.refresh().await?;
    let relay =
        platform::events::outbox::Relay::new(store.db().clone(), common.events.clone(), NAME);
    let state = AppState {
        store,
        issuer,
        verifier,
        passwords,
        settings: Arc::new(settings),
        relay,
        waiters: sagas::Waiters::default(),
        live: common.live.clone(),
    };
    seed(&state).await?;
    Ok(state)
}

async fn seed(state: &AppState) -> anyhow::Result<()> {
    if let Some(admin) = &state.settings.bootstrap_admin
        && state
            .store
            .user_by_username(&admin.username)
            .await?
            .is_none()
    {
        let hash = state.passwords.hash(admin.password.clone()).await?;
        match state
            .store
            .create_user(NewUser {
                username: admin.username.clone(),
                email: admin.email.clone(),
                password_hash: hash,
                display_name: None,
                roles: vec![Role::User, Role::Admin],
            })
            .await
        {
            Ok(user) => {
                tracing::info!(user_id = %user.id, username = %user.username, "bootstrap administrator created");
                if state.settings.provision_library {
                    state.store.announce(&user).await?;
                }
            }
            Err(CreateUserError::EmailTaken) => bail!(
                "user.bootstrap_admin.email {} belongs to another account",
                admin.email
            ),
            Err(CreateUserError::UsernameTaken) => {}
            Err(CreateUserError::Db(e)) => return Err(e.into()),
        }
    }
    for account in &state.settings.service_accounts {
        let scopes = validate_scopes(&account.scopes).map_err(anyhow::Error::msg)?;
        let hash = state.passwords.hash(account.client_secret.clone()).await?;
        let name = account
            .name
            .clone()
            .unwrap_or_else(|| account.client_id.clone());
        state
            .store
            .put_service_account(&account.client_id, &name, hash, scopes, true)
            .await?;
    }
    Ok(())
}

/// The whole HTTP app of user-service.
pub fn router(state: AppState, common: &Common) -> Router {
    let database = platform::server::database_check(state.store.db().clone());
    let events = state.relay.bus().readiness();
    platform::server::app(
        Service {
            name: NAME,
            routes: http::routes(state),
            checks: vec![("database", database), ("events", events)],
        },
        &common.http,
    )
}

/// Builds the service, serves it on `settings.listen`, and keeps its keys and tables tidy
/// in the background until `shutdown`.
pub async fn start(
    settings: Settings,
    common: &Common,
    shutdown: CancellationToken,
) -> anyhow::Result<Serving> {
    let listen = settings.listen;
    let state = build(settings, common).await?;
    tokio::spawn(maintain(state.clone(), shutdown.clone()));
    state.relay.spawn(shutdown.clone());
    sagas::start(
        state.store.clone(),
        state.relay.clone(),
        state.waiters.clone(),
        SAGA_GRACE,
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
    serving.task.await.context("user-service task")?
}

/// Every minute: pick up keys rotated by other replicas, rotate when due. Every hour: forget
/// sessions and counters long over.
async fn maintain(state: AppState, shutdown: CancellationToken) {
    let every = StdDuration::from_secs(tokens::RELOAD_INTERVAL.num_seconds().unsigned_abs());
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        n += 1;
        let rotation = state.settings.key_rotation_interval_secs;
        let result: anyhow::Result<()> = async {
            state.issuer.reload().await?;
            if rotation > 0 {
                state.issuer.rotate_if_due(secs(rotation)).await?;
            }
            state.verifier.refresh().await?;
            if n % 60 == 1 {
                let purged = state.store.purge_sessions(Duration::days(30)).await?;
                let window = secs(state.settings.login_throttle.window_secs)
                    .max(secs(state.settings.login_throttle.max_block_secs));
                let counters = state
                    .store
                    .purge_login_failures(platform::clock::now() - window)
                    .await?;
                tracing::debug!(purged, counters, "old sessions and counters forgotten");
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(
                error = format!("{e:#}"),
                "user-service maintenance failed; will retry"
            );
        }
    }
}
