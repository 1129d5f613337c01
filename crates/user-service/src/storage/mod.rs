//! Everything user-service keeps in `user_db`. Handlers call these methods; no SQL lives
//! outside this folder.

pub mod entities;
pub mod login_failures;
pub mod migrations;
pub mod sagas;
pub mod service_accounts;
pub mod sessions;
pub mod signing_keys;
pub mod users;

use platform::db::Db;

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}
