//! What business-service consumes: the sagas' requests from user-service
//! (`user.registered.queue`, `user.deleted.queue`), and every `data.sync` on a queue of
//! this instance's own, fanned out to the devices connected here (live sync stream).

use std::sync::Arc;

use platform::events::contracts::{self, DataSync, UserDeleted, UserRegistered};
use platform::events::{Envelope, EventBus, Failure, Handler, Subscription};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::storage::Store;

/// Live changes for the sync streams of the devices connected to this instance.
#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<DataSync>,
}

impl Default for Live {
    fn default() -> Self {
        // A slow stream that falls this far behind is told to catch up from its cursor.
        let (sender, _) = broadcast::channel(4096);
        Self { sender }
    }
}

impl Live {
    pub fn subscribe(&self) -> broadcast::Receiver<DataSync> {
        self.sender.subscribe()
    }

    fn publish(&self, change: DataSync) {
        // No receiver is not an error: no device is listening here.
        let _ = self.sender.send(change);
    }
}

fn provisioning(store: Store, quota: u64, starter: bool) -> Handler {
    Arc::new(move |event: Envelope| {
        let store = store.clone();
        Box::pin(async move {
            if event.kind != contracts::USER_REGISTERED {
                return Err(Failure::Permanent(format!(
                    "unexpected {} event",
                    event.kind
                )));
            }
            let data: UserRegistered = event.data_as()?;
            if let Some(answer) = store
                .provision_library(&event.id, data.user_id, data.deadline, quota, starter)
                .await?
            {
                tracing::info!(user_id = %data.user_id, answer = answer.kind, prompts = answer.reply.prompts, "library provisioning answered");
            }
            Ok(())
        })
    })
}

fn deletion(store: Store) -> Handler {
    Arc::new(move |event: Envelope| {
        let store = store.clone();
        Box::pin(async move {
            if event.kind != contracts::USER_DELETED {
                return Err(Failure::Permanent(format!(
                    "unexpected {} event",
                    event.kind
                )));
            }
            let data: UserDeleted = event.data_as()?;
            if let Some(answer) = store
                .delete_library(&event.id, data.user_id, data.deadline)
                .await?
            {
                tracing::info!(user_id = %data.user_id, answer = answer.kind, prompts = answer.reply.prompts, reason = %data.reason, "library deletion answered");
            }
            Ok(())
        })
    })
}

fn live(hub: Live) -> Handler {
    Arc::new(move |event: Envelope| {
        let hub = hub.clone();
        Box::pin(async move {
            let change: DataSync = event.data_as()?;
            hub.publish(change);
            Ok(())
        })
    })
}

/// Subscribes business-service's consumers on `bus`.
pub async fn start(
    bus: &EventBus,
    store: Store,
    hub: Live,
    settings: &crate::Settings,
    shutdown: CancellationToken,
) {
    bus.subscribe(
        Subscription::durable(crate::NAME, "user.registered.queue"),
        provisioning(
            store.clone(),
            settings.default_quota,
            settings.starter_content,
        ),
        shutdown.clone(),
    )
    .await;
    bus.subscribe(
        Subscription::durable(crate::NAME, "user.deleted.queue"),
        deletion(store),
        shutdown.clone(),
    )
    .await;
    bus.subscribe(
        Subscription::per_instance(crate::NAME, "data.sync.live", &[contracts::DATA_SYNC]),
        live(hub),
        shutdown,
    )
    .await;
}
