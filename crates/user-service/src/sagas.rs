//! user-service's side of the sagas: it consumes business-service's answers
//! (`user.saga.queue`), compensates sagas whose answer is overdue, and lets a request wait
//! a moment for its saga to settle so that, when all goes well, registering answers with an
//! active account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use platform::events::contracts::{self, LibraryReply};
use platform::events::outbox::Relay;
use platform::events::{Envelope, Failure, Handler, Subscription};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::storage::Store;
use crate::storage::sagas::{DELETION, REGISTRATION};

/// Requests waiting for an account's saga to settle.
#[derive(Clone, Default)]
pub struct Waiters {
    waiting: Arc<Mutex<HashMap<Uuid, Arc<Notify>>>>,
}

impl Waiters {
    /// Registers interest in `user_id` before its state is read, so a settlement between
    /// the read and the wait is not missed.
    pub fn watch(&self, user_id: Uuid) -> Watch {
        let notify = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(user_id)
            .or_default()
            .clone();
        Watch {
            waiters: self.clone(),
            user_id,
            notify,
        }
    }

    pub fn settled(&self, user_id: Uuid) {
        if let Some(n) = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&user_id)
        {
            n.notify_waiters();
            n.notify_one();
        }
    }
}

pub struct Watch {
    waiters: Waiters,
    user_id: Uuid,
    notify: Arc<Notify>,
}

impl Watch {
    /// Waits until the saga settles or `limit` passes.
    pub async fn wait(&self, limit: StdDuration) {
        let _ = tokio::time::timeout(limit, self.notify.notified()).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiting = self
            .waiters
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's entry and ours: no one else waits on this account.
        if waiting
            .get(&self.user_id)
            .is_some_and(|n| Arc::strong_count(n) <= 2)
        {
            waiting.remove(&self.user_id);
        }
    }
}

/// Handles `library.*` answers from business-service.
pub fn handler(store: Store, relay: Relay, waiters: Waiters) -> Handler {
    Arc::new(move |event: Envelope| {
        let (store, relay, waiters) = (store.clone(), relay.clone(), waiters.clone());
        Box::pin(async move {
            let reply: LibraryReply = event.data_as()?;
            let why = || {
                reply
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no reason given".into())
            };
            let (saga, outcome) = match event.kind.as_str() {
                contracts::LIBRARY_PROVISIONED => (REGISTRATION, Ok(())),
                contracts::LIBRARY_PROVISIONING_FAILED => (REGISTRATION, Err(why())),
                contracts::LIBRARY_DELETED => (DELETION, Ok(())),
                contracts::LIBRARY_DELETION_FAILED => (DELETION, Err(why())),
                other => {
                    return Err(Failure::Permanent(format!(
                        "user-service does not handle {other} events"
                    )));
                }
            };
            let settled = store
                .finish_saga(saga, &event.id, reply.user_id, outcome)
                .await?;
            if let Some(settled) = settled {
                tracing::info!(user_id = %reply.user_id, event = %event.kind, ?settled, "saga settled");
                relay.wake();
                waiters.settled(reply.user_id);
            }
            Ok(())
        })
    })
}

/// Starts consuming the answers, and compensates overdue sagas every few seconds.
pub async fn start(
    store: Store,
    relay: Relay,
    waiters: Waiters,
    grace: chrono::Duration,
    shutdown: CancellationToken,
) {
    relay
        .bus()
        .subscribe(
            Subscription::durable(crate::NAME, "user.saga.queue"),
            handler(store.clone(), relay.clone(), waiters.clone()),
            shutdown.clone(),
        )
        .await;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(StdDuration::from_secs(2));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match store.time_out_sagas(grace).await {
                Ok(settled) => {
                    if !settled.is_empty() {
                        relay.wake();
                    }
                    for (user_id, _) in settled {
                        waiters.settled(user_id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking overdue sagas failed; will retry"),
            }
        }
    });
}
