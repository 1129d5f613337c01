//! The gateway's own routes: health, metrics, and the actuator endpoints for
//! administrators. The engine hands them these paths; it routes every other one.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use platform::Problem;
use platform::server::Check;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;

use crate::proxy::Gateway;

/// The gateway's own routes; every other path is the engine's to route.
pub fn routes(gateway: Arc<Gateway>, checks: Vec<(&'static str, Check)>) -> Router {
    Router::new()
        .route("/actuator/gateway/routes", get(list_routes))
        .route("/actuator/gateway/refresh", post(refresh))
        .with_state(gateway)
        .merge(platform::server::health_routes(checks))
        .fallback(|| async { Problem::not_found("no resource lives at this path") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(CatchPanicLayer::custom(platform::server::panic_to_problem))
}

/// Only administrators see and steer the gateway's insides.
async fn admin(gateway: &Gateway, headers: &HeaderMap) -> Result<(), Problem> {
    let token = platform::auth::bearer(headers).ok_or_else(|| {
        Problem::unauthorized("send an access token as `Authorization: Bearer <token>`")
    })?;
    let claims = gateway.auth().verify(token).await?;
    if claims.has_role("admin") || claims.has_scope("users:admin") {
        Ok(())
    } else {
        Err(Problem::forbidden("only administrators may do this"))
    }
}

/// The routes in force, in match order (Spring's `/actuator/gateway/routes`), with the
/// state of each service's circuit.
async fn list_routes(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(p) = admin(&gateway, &headers).await {
        return p.into_response();
    }
    let table = gateway.table();
    let circuits: serde_json::Map<String, serde_json::Value> = gateway
        .breakers()
        .states(gateway.now_ms())
        .into_iter()
        .map(|(service, state)| (service, json!(format!("{state:?}").to_lowercase())))
        .collect();
    axum::Json(json!({ "routes": table.routes.describe(), "circuits": circuits })).into_response()
}

/// Reads the settings again now (Spring's `POST /actuator/gateway/refresh`).
async fn refresh(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(p) = admin(&gateway, &headers).await {
        return p.into_response();
    }
    match gateway.reload() {
        Ok(changed) => {
            axum::Json(json!({ "changed": changed, "routes": gateway.table().routes.len() }))
                .into_response()
        }
        Err(e) => Problem::invalid_field("settings", e).into_response(),
    }
}
