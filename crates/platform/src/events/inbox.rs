//! Handled-event records: a consumer claims an event id in the transaction that applies the
//! event, so a redelivered event finds its claim and changes nothing.

use sea_orm::{ConnectionTrait, DbErr};

use super::schema::{now_ms, statement};

/// Records that `consumer` handles `event_id`; `false` if it already has (then do nothing).
/// Call it inside the transaction that applies the event: if that rolls back, so does the
/// claim, and the redelivery is handled afresh.
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    consumer: &str,
    event_id: &str,
) -> Result<bool, DbErr> {
    let done = db
        .execute_raw(statement(
            db.get_database_backend(),
            "INSERT INTO inbox (consumer, event_id, handled_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            [consumer.into(), event_id.into(), now_ms().into()],
        ))
        .await?;
    Ok(done.rows_affected() == 1)
}
