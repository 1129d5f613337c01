//! The one error type of user-service's handlers. Client errors are problems already;
//! database and other internal failures are logged here and reach the client only as an
//! `internal` problem.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::Problem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Problem(#[from] Problem),
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Problem(p) => p.into_response(),
            Error::Db(e) => {
                tracing::error!(error = %e, "database failure");
                Problem::internal().into_response()
            }
            Error::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal failure");
                Problem::internal().into_response()
            }
        }
    }
}

// The problems only user-service answers with. Their `type` slugs are part of the API.

pub fn registration_closed() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "registration-closed",
        "Registration is closed",
    )
    .detail("this server does not take new accounts now (feature switch `registration`)")
}

pub fn username_taken() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "username-taken",
        "The username is taken",
    )
    .detail("another account already has this username")
}

pub fn email_taken() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "email-taken",
        "The email address is taken",
    )
    .detail("another account already uses this email address")
}

pub fn invalid_credentials() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "Wrong account name or password",
    )
    .detail("the account name or the password is wrong")
}

pub fn account_disabled() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "account-disabled",
        "The account is disabled",
    )
    .detail("an administrator has disabled this account")
}

pub fn account_pending() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "account-pending",
        "The account is being set up",
    )
    .detail("the account's library is being prepared; try again in a moment")
    .with("retry_after", 1)
}

pub fn account_deleting() -> Problem {
    Problem::new(
        StatusCode::GONE,
        "account-deleting",
        "The account is being deleted",
    )
    .detail("this account's deletion was asked for and is under way")
}

pub fn registration_failed() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "registration-failed",
        "The account could not be set up",
    )
    .detail("the account's library could not be prepared, so the account was not kept; try again")
}

pub fn login_throttled(retry_after_secs: u64) -> Problem {
    Problem::too_many_requests(
        retry_after_secs,
        "too many failed attempts; wait before trying again",
    )
}

pub fn invalid_refresh_token(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
        "The refresh token is not valid",
    )
    .detail(detail.to_owned())
}

pub fn refresh_token_reused() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "refresh-token-reused",
        "The refresh token was already used",
    )
    .detail("this refresh token had been used before, so it may have been stolen; its session has been revoked and must log in again")
}

pub fn session_ended() -> Problem {
    Problem::unauthorized("the session of this token has ended; log in again")
}

pub fn last_admin() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "last-admin",
        "The last administrator must stay",
    )
    .detail("this change would leave no active administrator")
}

pub fn invalid_client() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-client",
        "Client authentication failed",
    )
    .detail("the client id or secret is wrong, or the client is disabled")
    .with("error", "invalid_client")
}
