//! The in-process transport. Publishing hands each event to every consumer whose bindings
//! match and returns when they have handled it, so the relay marks an event sent only once
//! it has taken effect: a crash in between means it is published again after the restart,
//! and the consumers' inboxes make that harmless.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{
    Envelope, EventSettings, Handler, Outcome, QUEUES, Subscription, handle_with_retries,
    topic_matches,
};

struct Consumer {
    subscription: Subscription,
    handler: Handler,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
}

#[derive(Default)]
pub(super) struct Bus {
    consumers: RwLock<Vec<Arc<Consumer>>>,
    turn: AtomicUsize,
}

impl Bus {
    pub(super) fn subscribe(
        &self,
        subscription: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(64));
        let mut consumers = self
            .consumers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        consumers.retain(|c| !c.shutdown.is_cancelled());
        consumers.push(Arc::new(Consumer {
            subscription,
            handler,
            permits,
            shutdown,
        }));
    }

    /// The consumer of each queue `kind` routes to: one per queue (replicas of a durable
    /// queue's consumer take turns, as RabbitMQ's competing consumers do).
    fn route(&self, kind: &str) -> BTreeMap<String, Arc<Consumer>> {
        let consumers = self
            .consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut by_queue: BTreeMap<String, Vec<Arc<Consumer>>> = BTreeMap::new();
        for c in consumers.iter() {
            if !c.shutdown.is_cancelled()
                && c.subscription
                    .bindings
                    .iter()
                    .any(|b| topic_matches(b, kind))
            {
                by_queue
                    .entry(c.subscription.queue.clone())
                    .or_default()
                    .push(c.clone());
            }
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        by_queue
            .into_iter()
            .map(|(queue, cs)| {
                let chosen = cs[turn % cs.len()].clone();
                (queue, chosen)
            })
            .collect()
    }

    async fn deliver(&self, event: &Envelope, settings: &EventSettings) -> Result<Outcome, String> {
        let route = self.route(&event.kind);
        // A queue a PromptFlow service consumes must not lose the event because that
        // service is not running (yet): the event stays in the outbox until it is.
        for spec in QUEUES.iter().filter(|q| q.consumed) {
            if spec.bindings.iter().any(|b| topic_matches(b, &event.kind))
                && !route.contains_key(spec.name)
            {
                return Err(format!("no consumer of {} is running", spec.name));
            }
        }
        let runs = route.into_iter().map(|(queue, c)| async move {
            let Ok(_permit) = c.permits.acquire().await else {
                return (queue, Err(String::new()));
            };
            let result = handle_with_retries(
                &c.handler,
                event.clone(),
                &c.subscription,
                settings,
                &c.shutdown,
            )
            .await;
            (queue, result)
        });
        let mut dead = Vec::new();
        for (queue, result) in join_all(runs).await {
            match result {
                Ok(()) => {}
                Err(reason) if reason.is_empty() => {
                    return Err(format!("the consumer of {queue} is stopping"));
                }
                Err(reason) => dead.push(format!("{queue}: {reason}")),
            }
        }
        if dead.is_empty() {
            Ok(Outcome::Delivered)
        } else {
            Ok(Outcome::DeadLettered(dead.join("; ")))
        }
    }

    pub(super) async fn publish(
        &self,
        events: &[Envelope],
        settings: &EventSettings,
    ) -> Vec<Result<Outcome, String>> {
        join_all(events.iter().map(|e| self.deliver(e, settings))).await
    }
}
