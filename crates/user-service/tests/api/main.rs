//! API tests of user-service: every flow and every refusal, on SQLite and on PostgreSQL.

mod helpers;

mod admin;
mod auth;
mod hostile;
mod platform_endpoints;
mod profile;
mod service_accounts;
mod sessions;
mod tokens;
