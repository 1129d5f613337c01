//! The transactional outbox and its relay.
//!
//! [`enqueue`] writes an event in the caller's transaction. The [`Relay`] publishes
//! committed events in order, marks them sent once the bus confirms, and backs off on
//! events the bus would not take (they stay unsent; nothing is dropped). On PostgreSQL,
//! replicas share the table: each relay takes rows with `FOR UPDATE SKIP LOCKED`, so two
//! never publish the same rows at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, TransactionTrait, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::schema::{now_ms, statement};
use super::{BACKLOG, Envelope, EventBus, Outcome};
use crate::db::Db;

/// Writes `event` to the outbox of the database `db` belongs to; it is published once the
/// surrounding transaction commits.
pub async fn enqueue<C: ConnectionTrait>(db: &C, event: &Envelope) -> Result<(), DbErr> {
    let envelope =
        serde_json::to_string(event).map_err(|e| DbErr::Custom(format!("event: {e}")))?;
    db.execute_raw(statement(
        db.get_database_backend(),
        "INSERT INTO outbox (id, kind, envelope, created_ms) VALUES ($1, $2, $3, $4)",
        [
            event.id.clone().into(),
            event.kind.clone().into(),
            envelope.into(),
            now_ms().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// What a relay round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub published: usize,
    pub dead_lettered: usize,
    pub failed: usize,
}

/// Publishes one service's outbox. Cheap to clone; [`Relay::wake`] after a commit that
/// enqueued events makes it publish at once instead of at its next poll.
#[derive(Clone)]
pub struct Relay {
    db: Db,
    bus: EventBus,
    service: &'static str,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("service", &self.service)
            .finish()
    }
}

struct Row {
    seq: i64,
    attempts: i32,
    event: Result<Envelope, String>,
}

fn retry_delay_ms(attempts: i32) -> i64 {
    let shift = u32::try_from(attempts.clamp(0, 6)).unwrap_or(6);
    (1000_i64 << shift).min(60_000)
}

impl Relay {
    pub fn new(db: Db, bus: EventBus, service: &'static str) -> Self {
        Self {
            db,
            bus,
            service,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs the relay until `shutdown`.
    pub fn spawn(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let relay = self.clone();
        tokio::spawn(async move { relay.run(shutdown).await })
    }

    async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.bus.settings().relay_poll_ms);
        let retention = Duration::from_secs(self.bus.settings().retention_hours * 3600);
        let mut last_purge: Option<Instant> = None;
        loop {
            loop {
                match self.publish_due().await {
                    // A full batch: there may be more right behind it.
                    Ok(round) if round.published + round.dead_lettered >= self.batch() => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(service = self.service, error = %e, "outbox relay failed; will retry");
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                last_purge = Some(Instant::now());
                if let Err(e) = self.purge(retention).await {
                    tracing::warn!(service = self.service, error = %e, "purging old events failed");
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    fn batch(&self) -> usize {
        usize::try_from(self.bus.settings().relay_batch).unwrap_or(256)
    }

    /// Publishes what is due now, one batch. Also sets the backlog gauge.
    pub async fn publish_due(&self) -> Result<Round, DbErr> {
        let db = self.db.write();
        let round = if db.get_database_backend() == DbBackend::Postgres {
            let txn = db.begin().await?;
            let round = self.round(&txn, " FOR UPDATE SKIP LOCKED").await?;
            txn.commit().await?;
            round
        } else {
            self.round(db, "").await?
        };
        let backlog = self.backlog().await?;
        metrics::gauge!(BACKLOG, "service" => self.service).set(backlog as f64);
        Ok(round)
    }

    async fn round<C: ConnectionTrait>(&self, db: &C, lock: &str) -> Result<Round, DbErr> {
        let backend = db.get_database_backend();
        let now = now_ms();
        let rows = db
            .query_all_raw(statement(
                backend,
                &format!(
                    "SELECT seq, attempts, envelope FROM outbox \
                     WHERE published_ms IS NULL AND next_attempt_ms <= $1 \
                     ORDER BY seq LIMIT $2{lock}"
                ),
                [now.into(), (self.batch() as i64).into()],
            ))
            .await?;
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            let envelope: String = row.try_get("", "envelope")?;
            batch.push(Row {
                seq: row.try_get("", "seq")?,
                attempts: row.try_get("", "attempts")?,
                event: serde_json::from_str(&envelope).map_err(|e| format!("unreadable: {e}")),
            });
        }
        if batch.is_empty() {
            return Ok(Round::default());
        }
        let events: Vec<Envelope> = batch
            .iter()
            .filter_map(|r| r.event.as_ref().ok().cloned())
            .collect();
        let mut outcomes = self.bus.publish(&events).await.into_iter();
        let mut round = Round::default();
        let mut sent: Vec<Value> = Vec::new();
        for row in &batch {
            let outcome = match &row.event {
                Ok(_) => outcomes
                    .next()
                    .unwrap_or_else(|| Err("the bus gave no outcome".into())),
                Err(e) => Ok(Outcome::DeadLettered(e.clone())),
            };
            match outcome {
                Ok(Outcome::Delivered) => {
                    round.published += 1;
                    sent.push(row.seq.into());
                }
                Ok(Outcome::DeadLettered(reason)) => {
                    round.dead_lettered += 1;
                    db.execute_raw(statement(
                        backend,
                        "UPDATE outbox SET published_ms = $1, dead_letter = $2 WHERE seq = $3",
                        [now_ms().into(), reason.into(), row.seq.into()],
                    ))
                    .await?;
                }
                Err(reason) => {
                    round.failed += 1;
                    let attempts = row.attempts.saturating_add(1);
                    db.execute_raw(statement(
                        backend,
                        "UPDATE outbox SET attempts = $1, next_attempt_ms = $2, last_error = $3 \
                         WHERE seq = $4",
                        [
                            attempts.into(),
                            (now_ms() + retry_delay_ms(attempts)).into(),
                            reason.into(),
                            row.seq.into(),
                        ],
                    ))
                    .await?;
                }
            }
        }
        for chunk in sent.chunks(500) {
            let marks = (2..chunk.len() + 2)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut values = vec![Value::from(now_ms())];
            values.extend(chunk.iter().cloned());
            db.execute_raw(statement(
                backend,
                &format!("UPDATE outbox SET published_ms = $1 WHERE seq IN ({marks})"),
                values,
            ))
            .await?;
        }
        if round.failed > 0 {
            tracing::warn!(
                service = self.service,
                failed = round.failed,
                "events not taken by the bus; kept for a later try"
            );
        }
        Ok(round)
    }

    /// Events committed but not yet published.
    pub async fn backlog(&self) -> Result<i64, DbErr> {
        let db = self.db.read();
        let row = db
            .query_one_raw(statement(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM outbox WHERE published_ms IS NULL",
                [],
            ))
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0))
    }

    /// Events given up on, with why: `(event, reason)`, oldest first.
    pub async fn dead_letters(&self, limit: u64) -> Result<Vec<(Envelope, String)>, DbErr> {
        let db = self.db.read();
        let rows = db
            .query_all_raw(statement(
                db.get_database_backend(),
                "SELECT envelope, dead_letter FROM outbox WHERE dead_letter IS NOT NULL \
                 ORDER BY seq LIMIT $1",
                [(limit as i64).into()],
            ))
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let envelope: String = row.try_get("", "envelope")?;
            let reason: String = row.try_get("", "dead_letter")?;
            if let Ok(event) = serde_json::from_str(&envelope) {
                out.push((event, reason));
            }
        }
        Ok(out)
    }

    /// Forgets events sent, and events handled, longer ago than `age`. Dead letters stay.
    pub async fn purge(&self, age: Duration) -> Result<u64, DbErr> {
        let db = self.db.write();
        let backend = db.get_database_backend();
        let cutoff = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX / 2);
        let sent = db
            .execute_raw(statement(
                backend,
                "DELETE FROM outbox WHERE published_ms < $1 AND dead_letter IS NULL",
                [cutoff.into()],
            ))
            .await?;
        let handled = db
            .execute_raw(statement(
                backend,
                "DELETE FROM inbox WHERE handled_ms < $1",
                [cutoff.into()],
            ))
            .await?;
        Ok(sent.rows_affected() + handled.rows_affected())
    }
}
