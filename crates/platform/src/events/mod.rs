//! Events between services.
//!
//! A service never publishes straight from a handler: it writes a CloudEvents 1.0 envelope
//! to its `outbox` table in the same transaction as the change the event reports
//! ([`outbox::enqueue`]), and a relay ([`outbox::Relay`]) publishes what is committed and
//! marks it sent once the bus has confirmed it. Consumers claim each event id in their
//! `inbox` table inside the transaction that applies it ([`inbox::claim`]), so a
//! redelivery changes nothing twice. Delivery is at least once; the effect, exactly once.
//!
//! One [`EventBus`] type, two transports chosen by a setting: in-process (all-in-one mode)
//! and RabbitMQ (split mode), with the same queues, retries and dead letters.

pub mod contracts;
pub mod inbox;
mod memory;
pub mod outbox;
mod rabbit;
pub mod schema;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use topology::{QUEUES, QueueSpec};

pub const PUBLISHED: &str = "events_published_total";
pub const CONSUMED: &str = "events_consumed_total";
pub const RETRIED: &str = "events_retried_total";
pub const DEAD_LETTERED: &str = "events_dead_lettered_total";
pub const BACKLOG: &str = "events_outbox_backlog";

/// A CloudEvents 1.0 envelope in the structured JSON mode, with the W3C `traceparent`
/// extension so a trace follows the event from the change to every consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// UUIDv7: unique, and ordered by creation time.
    pub id: String,
    /// The service that made the change, e.g. `/user-service`.
    pub source: String,
    /// The event name, also its routing key: `user.registered`, `prompt.updated`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// What the event is about: a user or prompt id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    #[serde(default = "json_content_type")]
    pub datacontenttype: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

fn json_content_type() -> String {
    "application/json".into()
}

impl Envelope {
    pub fn new(
        source: &str,
        kind: &str,
        subject: impl Into<Option<String>>,
        data: serde_json::Value,
    ) -> Self {
        Self {
            specversion: "1.0".into(),
            id: uuid::Uuid::now_v7().to_string(),
            source: format!("/{source}"),
            kind: kind.into(),
            subject: subject.into(),
            time: crate::clock::now(),
            datacontenttype: json_content_type(),
            data,
            traceparent: Some(
                TRACEPARENT
                    .try_with(Clone::clone)
                    .ok()
                    .flatten()
                    .unwrap_or_else(new_traceparent),
            ),
        }
    }

    /// Carries on the trace of the request that caused the event, when it sent one.
    pub fn in_trace(mut self, traceparent: Option<&str>) -> Self {
        if let Some(tp) = traceparent.filter(|tp| valid_traceparent(tp)) {
            self.traceparent = Some(tp.to_owned());
        }
        self
    }

    /// The `data` as `T`; a malformed payload is a permanent failure (retrying cannot fix it).
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_value(self.data.clone()).map_err(|e| {
            Failure::Permanent(format!("{} event {} has bad data: {e}", self.kind, self.id))
        })
    }
}

/// A fresh W3C trace context (version 00, sampled).
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

tokio::task_local! {
    /// The trace of the request being handled, if its caller sent one.
    pub static TRACEPARENT: Option<String>;
}

/// Is `tp` a W3C trace context header value (version 00)?
pub fn valid_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    parts.len() == 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

/// Why a handler did not finish an event.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Worth another try (a database or a peer was unavailable).
    #[error("{0}")]
    Retry(String),
    /// Will never succeed (malformed event): straight to the dead letters.
    #[error("{0}")]
    Permanent(String),
}

impl From<sea_orm::DbErr> for Failure {
    fn from(e: sea_orm::DbErr) -> Self {
        Failure::Retry(format!("database: {e}"))
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Retry(format!("{e:#}"))
    }
}

/// What a consumer does with one event. It runs again on redelivery, so it claims the
/// event in its inbox first (see [`inbox::claim`]).
pub type Handler = Arc<dyn Fn(Envelope) -> BoxFuture<'static, Result<(), Failure>> + Send + Sync>;

/// Where a subscription's events wait.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The service consuming, for logs and metrics.
    pub service: &'static str,
    pub queue: String,
    pub bindings: Vec<String>,
    /// Durable queues are shared by every replica of the consuming service and keep events
    /// while it is down. A per-instance queue lives as long as this process and sees every
    /// event bound to it (fan-out to each replica, e.g. for live streams to devices).
    pub per_instance: bool,
}

impl Subscription {
    /// One of the durable queues of [`QUEUES`].
    pub fn durable(service: &'static str, queue: &str) -> Self {
        let spec = topology::spec(queue);
        Self {
            service,
            queue: queue.into(),
            bindings: spec
                .map(|s| s.bindings.iter().map(|b| (*b).to_owned()).collect())
                .unwrap_or_default(),
            per_instance: false,
        }
    }

    /// A queue of this process alone, named `<prefix>.<random>`.
    pub fn per_instance(service: &'static str, prefix: &str, bindings: &[&str]) -> Self {
        Self {
            service,
            queue: format!("{prefix}.{}", uuid::Uuid::now_v7().simple()),
            bindings: bindings.iter().map(|b| (*b).to_owned()).collect(),
            per_instance: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// In this process: for `promptflow up`, where every service shares one process.
    #[default]
    Memory,
    /// A RabbitMQ broker, for services in separate processes.
    Rabbitmq,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    pub transport: Transport,
    /// The broker, for `transport: rabbitmq`.
    pub url: String,
    /// The topic exchange every event is published to.
    pub exchange: String,
    /// Put before every queue's name, to keep several systems (or test runs) apart on one
    /// broker.
    pub queue_prefix: String,
    /// Tries of a handler before the event goes to the dead letters.
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles on each further one.
    pub retry_backoff_ms: u64,
    /// Events a consumer handles at once.
    pub prefetch: u16,
    /// Events the relay publishes per round.
    pub relay_batch: u64,
    /// How often the relay looks for events it was not told about (after a restart, or
    /// written by another replica).
    pub relay_poll_ms: u64,
    /// Sent events and handled-event records are kept this long, then deleted.
    pub retention_hours: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            transport: Transport::Memory,
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            exchange: "promptflow.events".into(),
            queue_prefix: String::new(),
            max_attempts: 5,
            retry_backoff_ms: 200,
            prefetch: 32,
            relay_batch: 256,
            relay_poll_ms: 1000,
            retention_hours: 24 * 7,
        }
    }
}

impl EventSettings {
    pub fn check(&self) -> Result<(), String> {
        if self.exchange.trim().is_empty() {
            return Err("events.exchange may not be empty".into());
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err("events.max_attempts must be 1 to 100".into());
        }
        if self.prefetch == 0 {
            return Err("events.prefetch must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.relay_batch) {
            return Err("events.relay_batch must be 1 to 10000".into());
        }
        if !(10..=60_000).contains(&self.relay_poll_ms) {
            return Err("events.relay_poll_ms must be 10 to 60000".into());
        }
        if self.transport == Transport::Rabbitmq && !self.url.starts_with("amqp") {
            return Err("events.url must be an amqp:// or amqps:// address".into());
        }
        Ok(())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ms = self
            .retry_backoff_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
        Duration::from_millis(ms.min(30_000))
    }
}

/// A message outside PromptFlow's envelope, for [`EventBus::publish_foreign`].
#[derive(Debug, Clone, Copy)]
pub struct Foreign<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// What became of one published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bus has it (RabbitMQ confirmed it; in process, every consumer handled it).
    Delivered,
    /// In process: a consumer gave up on it; the reason is kept with the outbox row.
    DeadLettered(String),
}

/// The bus, in process or over RabbitMQ. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    inner: Inner,
    settings: Arc<EventSettings>,
}

#[derive(Clone)]
enum Inner {
    Memory(Arc<memory::Bus>),
    Rabbit(Arc<rabbit::Bus>),
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.inner {
            Inner::Memory(_) => "memory",
            Inner::Rabbit(_) => "rabbitmq",
        };
        f.debug_struct("EventBus")
            .field("transport", &transport)
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(&EventSettings::default())
    }
}

impl EventBus {
    /// A bus as the settings say. Connecting to a broker happens on first use and again
    /// whenever the connection is lost.
    pub fn new(settings: &EventSettings) -> Self {
        let settings = Arc::new(settings.clone());
        let inner = match settings.transport {
            Transport::Memory => Inner::Memory(Arc::new(memory::Bus::default())),
            Transport::Rabbitmq => Inner::Rabbit(Arc::new(rabbit::Bus::new(settings.clone()))),
        };
        Self { inner, settings }
    }

    pub fn settings(&self) -> &EventSettings {
        &self.settings
    }

    pub fn transport(&self) -> Transport {
        match self.inner {
            Inner::Memory(_) => Transport::Memory,
            Inner::Rabbit(_) => Transport::Rabbitmq,
        }
    }

    /// Publishes `events` in order; one outcome per event, or why it was not taken (it is
    /// then tried again later).
    pub async fn publish(&self, events: &[Envelope]) -> Vec<Result<Outcome, String>> {
        match &self.inner {
            Inner::Memory(bus) => bus.publish(events, &self.settings).await,
            Inner::Rabbit(bus) => bus.publish(events).await,
        }
    }

    /// Publishes a message of another system (Spring Cloud Bus's refresh events, for Java
    /// services on the same broker). In process there is no one else to tell: `Ok` at once.
    pub async fn publish_foreign(&self, message: &Foreign<'_>) -> Result<(), String> {
        match &self.inner {
            Inner::Memory(_) => Ok(()),
            Inner::Rabbit(bus) => bus.publish_foreign(message).await,
        }
    }

    /// Starts consuming `subscription` with `handler` until `shutdown`.
    pub async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) {
        match &self.inner {
            Inner::Memory(bus) => bus.subscribe(subscription, handler, shutdown),
            Inner::Rabbit(bus) => bus.subscribe(subscription, handler, shutdown).await,
        }
    }

    /// For `/health/ready`: can events be published now?
    pub async fn check(&self) -> Result<(), String> {
        match &self.inner {
            Inner::Memory(_) => Ok(()),
            Inner::Rabbit(bus) => bus.check().await,
        }
    }

    /// A readiness check for [`crate::server::Service::checks`].
    pub fn readiness(&self) -> crate::server::Check {
        let bus = self.clone();
        Arc::new(move || {
            let bus = bus.clone();
            Box::pin(async move { bus.check().await })
        })
    }
}

/// Runs `handler` on `event`, retrying with backoff; `Err` carries why it finally gave up.
async fn handle_with_retries(
    handler: &Handler,
    event: Envelope,
    subscription: &Subscription,
    settings: &EventSettings,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let labels = [
        ("service", subscription.service.to_owned()),
        ("queue", queue_label(subscription)),
        ("type", event.kind.clone()),
    ];
    let mut attempt = 1;
    loop {
        match handler(event.clone()).await {
            Ok(()) => {
                metrics::counter!(CONSUMED, &labels).increment(1);
                return Ok(());
            }
            Err(Failure::Permanent(reason)) => {
                metrics::counter!(DEAD_LETTERED, &labels).increment(1);
                tracing::error!(event_id = %event.id, event_type = %event.kind, queue = %subscription.queue, reason, "event refused for good; dead-lettered");
                return Err(reason);
            }
            Err(Failure::Retry(reason)) if attempt >= settings.max_attempts => {
                metrics::counter!(DEAD_LETTERED, &labels).increment(1);
                tracing::error!(event_id = %event.id, event_type = %event.kind, queue = %subscription.queue, attempts = attempt, reason, "event kept failing; dead-lettered");
                return Err(reason);
            }
            Err(Failure::Retry(reason)) => {
                metrics::counter!(RETRIED, &labels).increment(1);
                tracing::warn!(event_id = %event.id, event_type = %event.kind, queue = %subscription.queue, attempt, reason, "event handler failed; will retry");
                tokio::select! {
                    () = tokio::time::sleep(settings.backoff(attempt)) => {}
                    // Stopping: leave the event to be delivered again after the restart.
                    () = shutdown.cancelled() => return Err(String::new()),
                }
                attempt += 1;
            }
        }
    }
}

/// Per-instance queues have random names; their metrics share one label.
fn queue_label(subscription: &Subscription) -> String {
    if subscription.per_instance {
        subscription
            .queue
            .rsplit_once('.')
            .map_or(subscription.queue.clone(), |(prefix, _)| {
                format!("{prefix}.*")
            })
    } else {
        subscription.queue.clone()
    }
}

/// Does a topic binding (`*` one word, `#` any number) match a routing key?
pub fn topic_matches(binding: &str, key: &str) -> bool {
    fn go(b: &[&str], k: &[&str]) -> bool {
        match (b.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&b[1..], k) || (!k.is_empty() && go(b, &k[1..])),
            (Some(&"*"), Some(_)) => go(&b[1..], &k[1..]),
            (Some(w), Some(x)) if w == x => go(&b[1..], &k[1..]),
            _ => false,
        }
    }
    let b: Vec<&str> = binding.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&b, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_match_as_rabbitmq_does() {
        assert!(topic_matches("user.registered", "user.registered"));
        assert!(!topic_matches("user.registered", "user.deleted"));
        assert!(topic_matches("library.*", "library.provisioned"));
        assert!(!topic_matches("library.*", "library.provisioned.late"));
        assert!(topic_matches("prompt.#", "prompt"));
        assert!(topic_matches("prompt.#", "prompt.created"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("*.deleted", "user.deleted"));
        assert!(!topic_matches("*.deleted", "deleted"));
    }

    #[test]
    fn envelopes_are_cloudevents() {
        let e = Envelope::new(
            "user-service",
            "user.registered",
            Some("u1".to_owned()),
            serde_json::json!({"a": 1}),
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "user.registered");
        assert_eq!(json["source"], "/user-service");
        assert_eq!(json["datacontenttype"], "application/json");
        assert!(valid_traceparent(json["traceparent"].as_str().unwrap()));
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        let kept = e.clone().in_trace(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ));
        assert_eq!(
            kept.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let ignored = e.clone().in_trace(Some("garbage"));
        assert_eq!(ignored.traceparent, e.traceparent);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = EventSettings::default();
        assert_eq!(s.backoff(1), Duration::from_millis(200));
        assert_eq!(s.backoff(2), Duration::from_millis(400));
        assert_eq!(s.backoff(3), Duration::from_millis(800));
        assert_eq!(s.backoff(30), Duration::from_secs(30));
    }
}
