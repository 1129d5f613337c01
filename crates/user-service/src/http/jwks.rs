//! `GET /.well-known/jwks.json`: the public keys that verify PromptFlow's access tokens.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

pub async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            // Short, so that a verifier behind a cache still sees a new key soon.
            HeaderValue::from_static("public, max-age=60"),
        )],
        axum::Json(state.issuer.jwks()),
    )
        .into_response()
}
