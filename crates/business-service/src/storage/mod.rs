//! Everything business-service keeps in `business_db`. Handlers call these methods; no SQL
//! lives outside this folder.

pub mod categories;
pub mod changes;
pub mod entities;
pub mod folders;
pub mod library;
pub mod migrations;
pub mod prompts;
pub mod search;
pub mod sync;
pub mod tags;

use platform::db::Db;
use platform::events::outbox::Relay;
use sea_orm::DbErr;

#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    relay: Option<Relay>,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db, relay: None }
    }

    /// A store whose writes wake `relay` to publish their events at once.
    pub fn with_relay(db: Db, relay: Relay) -> Self {
        Self {
            db,
            relay: Some(relay),
        }
    }

    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
    }

    /// After a commit that wrote events.
    fn wake(&self) {
        if let Some(r) = &self.relay {
            r.wake();
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Refreshes the statistics the query planners choose indexes by. Without them, a
    /// planner takes "this user's prompts" for a handful of rows, and a search over a large
    /// library scans it whole instead of looking up its candidates.
    pub async fn optimize(&self) -> Result<(), DbErr> {
        use sea_orm::ConnectionTrait;
        let db = self.db.write();
        match db.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                db.execute_unprepared("ANALYZE prompts, prompt_search, prompt_tags, favorites")
                    .await?;
            }
            _ => {
                // Sampled statistics, over every table (0x10000), as SQLite recommends.
                db.execute_unprepared("PRAGMA analysis_limit=20000; PRAGMA optimize=0x10002")
                    .await?;
            }
        }
        Ok(())
    }
}

/// A statement written with PostgreSQL's `$n` placeholders, for `db`'s backend.
pub(crate) fn statement(
    db: &impl sea_orm::ConnectionTrait,
    pg: &str,
    values: Vec<sea_orm::Value>,
) -> sea_orm::Statement {
    platform::db::statement(db.get_database_backend(), pg, values)
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("not found")]
    NotFound,
    /// Someone changed the resource since the caller read it; this is its revision now.
    #[error("stale: the current revision is {0}")]
    Stale(i64),
    #[error("the slug is taken")]
    SlugTaken,
    /// The library holds as many prompts as its quota allows.
    #[error("the library is full ({0} prompts)")]
    QuotaExceeded(u64),
    /// A client-chosen id that something already has.
    #[error("the id is taken")]
    IdTaken,
    #[error("unknown folder")]
    UnknownFolder,
    #[error("a folder with this name exists here")]
    NameTaken,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}
