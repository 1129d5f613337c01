//! The database layer every service uses: one code path (SeaORM) over SQLite and PostgreSQL,
//! migrations applied at start.
//!
//! On SQLite the service holds two pools on the same file: one writer connection (SQLite
//! admits one writer at a time; a single connection means no `SQLITE_BUSY` on lock upgrade)
//! and several read-only connections (WAL lets readers run beside the writer). On PostgreSQL
//! both are the same pool.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sea_orm::sqlx::postgres::PgConnectOptions;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
    TransactionTrait, Value,
};
use sea_orm_migration::MigratorTrait;

use crate::settings::DatabaseSettings;

#[derive(Debug, Clone)]
pub struct Db {
    read: DatabaseConnection,
    write: DatabaseConnection,
}

impl Db {
    /// For queries that only read.
    pub fn read(&self) -> &DatabaseConnection {
        &self.read
    }

    /// For anything that writes, and for reads that must see the latest write in the same
    /// breath (check-then-act inside a transaction).
    pub fn write(&self) -> &DatabaseConnection {
        &self.write
    }

    pub fn backend(&self) -> DbBackend {
        self.write.get_database_backend()
    }

    pub async fn ping(&self) -> Result<(), sea_orm::DbErr> {
        self.write.ping().await?;
        self.read.ping().await
    }

    /// Applies every pending migration of `M`. On PostgreSQL an advisory lock keeps two
    /// replicas starting at once from migrating the same database together.
    pub async fn migrate<M: MigratorTrait>(&self) -> anyhow::Result<()> {
        let txn = self.write.begin().await?;
        if self.backend() == DbBackend::Postgres {
            txn.execute_unprepared("SELECT pg_advisory_xact_lock(7461726700001)")
                .await?;
        }
        M::up(&txn, None).await.context("applying migrations")?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn close(self) {
        let _ = self.read.close().await;
        let _ = self.write.close().await;
    }
}

/// A statement written with PostgreSQL's `$1, $2, …` placeholders, numbered in the order
/// they appear, for either backend.
pub fn statement(
    backend: DbBackend,
    sql: &str,
    values: impl IntoIterator<Item = Value>,
) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(c);
                }
            }
            out
        }
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Connects to `url` (`sqlite://…` or `postgres://…`).
pub async fn connect(url: &str, settings: &DatabaseSettings) -> anyhow::Result<Db> {
    if url.starts_with("sqlite:") {
        connect_sqlite(url, settings).await
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        connect_postgres(url, settings).await
    } else {
        bail!("database url must start with sqlite:// or postgres://, not `{url}`")
    }
}

async fn connect_sqlite(url: &str, settings: &DatabaseSettings) -> anyhow::Result<Db> {
    let parsed = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("database url `{url}` is not a SQLite url"))?;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if !in_memory
        && let Some(dir) = parsed.get_filename().parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data folder {}", dir.display()))?;
    }

    let mut write = ConnectOptions::new(url.to_owned());
    write
        .max_connections(1)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.create_if_missing(true)
                // Reads through the OS page cache instead of a copy per connection.
                .pragma("mmap_size", "268435456")
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit that was acknowledged survives a power cut too.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
        });
    write.map_sqlx_sqlite_pool_opts(stable_query_plans);
    let write = Database::connect(write)
        .await
        .with_context(|| format!("opening the SQLite database {url}"))?;
    if in_memory {
        return Ok(Db {
            read: write.clone(),
            write,
        });
    }

    let mut read = ConnectOptions::new(url.to_owned());
    read.max_connections(settings.max_connections.max(1))
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.read_only(true)
                .pragma("mmap_size", "268435456")
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
        });
    read.map_sqlx_sqlite_pool_opts(stable_query_plans);
    let read = Database::connect(read)
        .await
        .with_context(|| format!("opening the SQLite database {url} for reading"))?;
    Ok(Db { read, write })
}

/// Turns on SQLite's query-planner stability guarantee on every connection. Without it, a
/// statement whose plan looked at a bound value (SeaORM's `LIMIT ?` does) is compiled again
/// at every execution; with it, cached statements are reused as they should be. This was a
/// quarter of the CPU of an authenticated request.
fn stable_query_plans(
    options: sea_orm::sqlx::pool::PoolOptions<sea_orm::sqlx::Sqlite>,
) -> sea_orm::sqlx::pool::PoolOptions<sea_orm::sqlx::Sqlite> {
    options.after_connect(|conn, _meta| {
        Box::pin(async move {
            let mut handle = conn.lock_handle().await?;
            let db = handle.as_raw_handle().as_ptr();
            // SAFETY: `db` is this connection's open handle, held locked for the call;
            // SQLITE_DBCONFIG_ENABLE_QPSG takes an int and an optional int* for the result.
            let rc = unsafe {
                libsqlite3_sys::sqlite3_db_config(
                    db,
                    libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
                    1 as std::ffi::c_int,
                    std::ptr::null_mut::<std::ffi::c_int>(),
                )
            };
            if rc != libsqlite3_sys::SQLITE_OK {
                tracing::warn!(rc, "SQLite refused the query-planner stability setting");
            }
            Ok(())
        })
    })
}

async fn connect_postgres(url: &str, settings: &DatabaseSettings) -> anyhow::Result<Db> {
    if settings.create_if_missing {
        create_postgres_database(url).await?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(settings.max_connections.max(1))
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    Ok(Db {
        read: db.clone(),
        write: db,
    })
}

/// Creates the database named in `url` unless it exists, with a UTF-8 character type so that
/// trigram indexes serve non-ASCII text.
pub async fn create_postgres_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("database url `{}` is not a PostgreSQL url", redact(url)))?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = options.clone().database("postgres");
    let mut conn = admin
        .connect()
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    let exists: Option<i32> =
        sea_orm::sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut conn)
            .await?;
    if exists.is_none() {
        let quoted = name.replace('"', "\"\"");
        let create = |locale: &str| {
            sea_orm::sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{quoted}\" ENCODING 'UTF8' {locale} TEMPLATE template0"
            ))
        };
        // Another process creating it at the same moment is as good as creating it here.
        let duplicate = |e: &sea_orm::sqlx::Error| {
            e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04")
        };
        let utf8 = sea_orm::sqlx::query(create("LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"))
            .execute(&mut conn)
            .await;
        match utf8 {
            Ok(_) => {}
            Err(e) if duplicate(&e) => {}
            Err(e) => {
                // A server without the C.UTF-8 locale: take its default, still UTF-8.
                tracing::warn!(error = %e, "creating {name} with C.UTF-8 failed; using the server default locale");
                match sea_orm::sqlx::query(create("")).execute(&mut conn).await {
                    Ok(_) => {}
                    Err(e) if duplicate(&e) => {}
                    Err(e) => return Err(e).with_context(|| format!("creating database {name}")),
                }
            }
        }
        tracing::info!(database = %name, "created PostgreSQL database");
    }
    conn.close().await.ok();
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The kind of unique-key clash an insert or update ran into, if that is what failed.
pub fn unique_violation(err: &sea_orm::DbErr) -> Option<String> {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(detail)) => Some(detail),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/user_db"),
            "postgres://app@db:5432/user_db"
        );
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
