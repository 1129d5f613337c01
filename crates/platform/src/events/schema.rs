//! The outbox and inbox tables, the same in every service's database: each service adds
//! [`EventTables`] to its own migrations.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

pub struct EventTables;

impl MigrationName for EventTables {
    fn name(&self) -> &str {
        "m_platform_0001_event_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for EventTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Times are Unix milliseconds: one type that both engines compare the same way.
        let (seq, int, without_rowid) = match manager.get_database_backend() {
            DbBackend::Postgres => ("BIGSERIAL PRIMARY KEY", "BIGINT", ""),
            _ => (
                "INTEGER PRIMARY KEY AUTOINCREMENT",
                "INTEGER",
                " WITHOUT ROWID",
            ),
        };
        let sql = format!(
            "CREATE TABLE outbox (
                seq {seq},
                id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                envelope TEXT NOT NULL,
                created_ms {int} NOT NULL,
                published_ms {int},
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_ms {int} NOT NULL DEFAULT 0,
                last_error TEXT,
                dead_letter TEXT
            );
            CREATE INDEX outbox_unsent ON outbox (seq) WHERE published_ms IS NULL;
            CREATE INDEX outbox_sent ON outbox (published_ms) WHERE published_ms IS NOT NULL;
            CREATE TABLE inbox (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                handled_ms {int} NOT NULL,
                PRIMARY KEY (consumer, event_id)
            ){without_rowid};
            CREATE INDEX inbox_handled ON inbox (handled_ms);"
        );
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE inbox; DROP TABLE outbox;")
            .await?;
        Ok(())
    }
}

pub(crate) use crate::db::statement;

pub(crate) use crate::clock::now_ms;
