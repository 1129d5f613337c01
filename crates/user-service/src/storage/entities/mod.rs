//! One module per table of `user_db`.

pub mod login_failures;
pub mod refresh_tokens;
pub mod sagas;
pub mod service_accounts;
pub mod sessions;
pub mod signing_keys;
pub mod users;
