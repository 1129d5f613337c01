//! The one error type of business-service's handlers: client errors are problems already;
//! database and other internal failures are logged here and reach the client only as an
//! `internal` problem.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::Problem;

use crate::storage::WriteError;

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

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotFound => Problem::not_found("no such resource").into(),
            WriteError::Stale(current) => stale(current).into(),
            WriteError::SlugTaken => {
                Problem::new(StatusCode::CONFLICT, "slug-taken", "The slug is taken")
                    .detail("another of your prompts (perhaps one in the trash) has this slug")
                    .into()
            }
            WriteError::QuotaExceeded(quota) => Problem::new(
                StatusCode::CONFLICT,
                "quota-exceeded",
                "The library is full",
            )
            .detail(format!(
                "your library holds its quota of {quota} prompts (the trash counts); delete some to make room"
            ))
            .with("quota", quota)
            .into(),
            WriteError::IdTaken => {
                Problem::new(StatusCode::CONFLICT, "id-taken", "The id is taken")
                    .detail(
                        "something already has this id; create it without one, or with a new UUID",
                    )
                    .into()
            }
            WriteError::UnknownFolder => {
                Problem::invalid_field("folder_id", "no folder of yours has this id").into()
            }
            WriteError::NameTaken => {
                Problem::new(StatusCode::CONFLICT, "name-taken", "The name is taken")
                    .detail("another item here already has this name")
                    .into()
            }
            WriteError::Refused(why) => {
                Problem::new(StatusCode::CONFLICT, "refused", "The change was refused")
                    .detail(why)
                    .into()
            }
            WriteError::Db(e) => Error::Db(e),
        }
    }
}

pub fn stale(current: i64) -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "stale-version",
        "The prompt changed since you read it",
    )
    .detail(
        "the If-Match ETag is not the current one; read the prompt again and reapply your change",
    )
    .with("current_etag", super::views::etag(current))
}

pub fn precondition_required() -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_REQUIRED,
        "precondition-required",
        "If-Match is required",
    )
    .detail("replace a prompt with If-Match set to the ETag you read, so a change made meanwhile is not overwritten")
}
