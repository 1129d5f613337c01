//! user-service's HTTP API: `/api/auth/**`, `/api/users/**`, `/.well-known/jwks.json`.

mod admin;
mod auth;
mod caller;
pub mod error;
mod jwks;
mod me;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{delete, get, post, put};
use platform::auth::TokenVerifier;

use crate::passwords::Passwords;
use crate::settings::Settings;
use crate::storage::Store;
use crate::tokens::Issuer;

pub use caller::{Admin, CurrentUser};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub issuer: Arc<Issuer>,
    pub verifier: TokenVerifier,
    pub passwords: Passwords,
    pub settings: Arc<Settings>,
    pub relay: platform::events::outbox::Relay,
    pub waiters: crate::sagas::Waiters,
    /// Feature switches, changed live by config-service.
    pub live: platform::live::Live,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Every route of user-service, with its state.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/token", post(auth::client_credentials))
        .route("/api/auth/keys/rotate", post(admin::rotate_keys))
        .route(
            "/api/users/me",
            get(me::get_me).patch(me::patch_me).delete(me::delete_me),
        )
        .route("/api/users/me/password", post(me::change_password))
        .route(
            "/api/users/me/sessions",
            get(me::list_sessions).delete(me::revoke_other_sessions),
        )
        .route("/api/users/me/sessions/{id}", delete(me::revoke_session))
        .route("/api/users", get(admin::list_users))
        .route(
            "/api/users/service-accounts",
            get(admin::list_service_accounts).post(admin::create_service_account),
        )
        .route(
            "/api/users/service-accounts/{client_id}",
            delete(admin::disable_service_account),
        )
        .route("/api/users/{id}", get(admin::get_user))
        .route("/api/users/{id}/roles", put(admin::set_roles))
        .route("/api/users/{id}/disable", post(admin::disable_user))
        .route("/api/users/{id}/enable", post(admin::enable_user))
        .with_state(state)
}
