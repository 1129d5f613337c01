//! business-service's HTTP API, all under `/api/business/**`.

mod caller;
mod categories;
pub mod error;
mod folders;
mod includes;
mod list;
mod prompts;
mod sync;
mod tags;
mod transfer;
mod versions;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{delete, get, patch, post};
use platform::auth::TokenVerifier;
use platform::extract::BodyLimit;

use crate::settings::Settings;
use crate::storage::Store;

pub use caller::Caller;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub verifier: TokenVerifier,
    pub settings: Arc<Settings>,
    /// Changes to push to this instance's live sync streams.
    pub live: crate::events::Live,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub fn routes(state: AppState) -> Router {
    let import_limit = state.settings.import_limit;
    Router::new()
        .route(
            "/api/business/prompts",
            get(list::list_prompts).post(prompts::create),
        )
        .route(
            "/api/business/prompts/{id}",
            get(prompts::get)
                .put(prompts::replace)
                .patch(prompts::patch)
                .delete(prompts::delete),
        )
        .route("/api/business/prompts/{id}/restore", post(prompts::restore))
        .route("/api/business/prompts/{id}/archive", post(prompts::archive))
        .route(
            "/api/business/prompts/{id}/unarchive",
            post(prompts::unarchive),
        )
        .route(
            "/api/business/prompts/{id}/favorite",
            post(prompts::favorite).delete(prompts::unfavorite),
        )
        .route("/api/business/prompts/{id}/use", post(prompts::record_use))
        .route("/api/business/prompts/{id}/render", post(prompts::render))
        .route("/api/business/prompts/{id}/versions", get(versions::list))
        .route(
            "/api/business/prompts/{id}/versions/{n}",
            get(versions::get),
        )
        .route(
            "/api/business/prompts/{id}/versions/{n}/restore",
            post(versions::restore),
        )
        .route("/api/business/prompts/{id}/diff", get(versions::diff))
        .route(
            "/api/business/folders",
            get(folders::list).post(folders::create),
        )
        .route(
            "/api/business/folders/{id}",
            get(folders::get)
                .patch(folders::update)
                .delete(folders::remove),
        )
        .route("/api/business/tags", get(tags::list))
        .route("/api/business/tags/rename", post(tags::rename))
        .route("/api/business/tags/merge", post(tags::merge))
        .route("/api/business/tags/{tag}", delete(tags::remove))
        .route(
            "/api/business/categories",
            get(categories::list).post(categories::create),
        )
        .route(
            "/api/business/categories/{id}",
            patch(categories::update).delete(categories::remove),
        )
        .route("/api/business/sync/changes", get(sync::changes))
        .route("/api/business/sync/push", post(sync::push))
        .route("/api/business/sync/stream", get(sync::stream))
        .route("/api/business/export", get(transfer::export))
        .route(
            "/api/business/import",
            post(transfer::import).route_layer(
                tower::ServiceBuilder::new()
                    .layer(axum::Extension(BodyLimit(import_limit)))
                    .layer(DefaultBodyLimit::max(import_limit)),
            ),
        )
        .layer(axum::middleware::from_fn(with_device))
        .with_state(state)
}

/// Tags the request's changes with the device that made them (`X-Device-Id`), so that
/// device's live stream does not echo them back.
async fn with_device(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let device = req
        .headers()
        .get("x-device-id")
        .and_then(|v| v.to_str().ok())
        .filter(|d| sync::valid_token(d))
        .map(str::to_owned);
    crate::storage::changes::DEVICE
        .scope(device, next.run(req))
        .await
}
