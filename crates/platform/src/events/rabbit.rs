//! The RabbitMQ transport (AMQP 0-9-1, lapin). Events are persistent messages on the topic
//! exchange, routed by their type, published with publisher confirms. Each durable queue
//! dead-letters to `<queue>.dlq` through the `<exchange>.dlx` exchange. A lost connection
//! is opened again on the next publish, and by each consumer's own loop.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio_util::sync::CancellationToken;

use super::topology::{dead_letter_exchange, dead_letter_queue};
use super::{
    DEAD_LETTERED, Envelope, EventSettings, Foreign, Handler, Outcome, PUBLISHED, QUEUES,
    Subscription, handle_with_retries,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct Link {
    connection: Connection,
    channel: Channel,
}

pub(super) struct Bus {
    settings: Arc<EventSettings>,
    link: tokio::sync::Mutex<Option<Link>>,
}

fn s(v: &str) -> ShortString {
    v.into()
}

async fn open(settings: &EventSettings, name: &str) -> Result<Link, String> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connection = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&settings.url, properties),
    )
    .await
    .map_err(|_| "connecting to RabbitMQ timed out".to_owned())?
    .map_err(|e| format!("connecting to RabbitMQ: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("opening a RabbitMQ channel: {e}"))?;
    declare_topology(&channel, settings)
        .await
        .map_err(|e| format!("declaring the RabbitMQ queues: {e}"))?;
    Ok(Link {
        connection,
        channel,
    })
}

async fn declare_topology(channel: &Channel, settings: &EventSettings) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            s(&settings.exchange),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            s(&dead_letter_exchange(&settings.exchange)),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    for q in QUEUES {
        let bindings: Vec<String> = q.bindings.iter().map(|b| (*b).to_owned()).collect();
        let name = format!("{}{}", settings.queue_prefix, q.name);
        declare_durable_queue(channel, settings, &name, &bindings, q.max_length).await?;
    }
    Ok(())
}

async fn declare_durable_queue(
    channel: &Channel,
    settings: &EventSettings,
    name: &str,
    bindings: &[String],
    max_length: Option<u32>,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dlx = dead_letter_exchange(&settings.exchange);
    let dlq = dead_letter_queue(name);
    channel
        .queue_declare(s(&dlq), durable, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            s(&dlq),
            s(&dlx),
            s(name),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        s("x-dead-letter-exchange"),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    args.insert(
        s("x-dead-letter-routing-key"),
        AMQPValue::LongString(name.into()),
    );
    if let Some(n) = max_length {
        args.insert(s("x-max-length"), AMQPValue::LongUInt(n));
    }
    channel.queue_declare(s(name), durable, args).await?;
    for binding in bindings {
        channel
            .queue_bind(
                s(name),
                s(&settings.exchange),
                s(binding),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

fn properties(event: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(tp) = &event.traceparent {
        headers.insert(s("traceparent"), AMQPValue::LongString(tp.as_str().into()));
    }
    BasicProperties::default()
        .with_content_type(s("application/cloudevents+json"))
        .with_delivery_mode(2)
        .with_message_id(s(&event.id))
        .with_type(s(&event.kind))
        .with_timestamp(u64::try_from(event.time.timestamp()).unwrap_or(0))
        .with_headers(headers)
}

impl Bus {
    pub(super) fn new(settings: Arc<EventSettings>) -> Self {
        Self {
            settings,
            link: tokio::sync::Mutex::new(None),
        }
    }

    /// The publishing channel, opened (with confirms on) if there is none or it broke.
    async fn channel(&self) -> Result<Channel, String> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref()
            && l.connection.status().connected()
            && l.channel.status().connected()
        {
            return Ok(l.channel.clone());
        }
        *link = None;
        let opened = open(&self.settings, "promptflow-publisher").await?;
        opened
            .channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("turning on publisher confirms: {e}"))?;
        let channel = opened.channel.clone();
        *link = Some(opened);
        Ok(channel)
    }

    async fn forget(&self) {
        *self.link.lock().await = None;
    }

    pub(super) async fn check(&self) -> Result<(), String> {
        self.channel().await.map(|_| ())
    }

    pub(super) async fn publish(&self, events: &[Envelope]) -> Vec<Result<Outcome, String>> {
        let channel = match self.channel().await {
            Ok(c) => c,
            Err(e) => return events.iter().map(|_| Err(e.clone())).collect(),
        };
        // Publish them all, then wait for the confirms: one round trip for the batch.
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let body = match serde_json::to_vec(event) {
                Ok(b) => b,
                Err(e) => {
                    pending.push(Err(format!("encoding the event: {e}")));
                    continue;
                }
            };
            let sent = channel
                .basic_publish(
                    s(&self.settings.exchange),
                    s(&event.kind),
                    BasicPublishOptions::default(),
                    &body,
                    properties(event),
                )
                .await
                .map_err(|e| format!("publishing to RabbitMQ: {e}"));
            pending.push(sent);
        }
        let mut results = Vec::with_capacity(events.len());
        let mut broken = false;
        for (event, sent) in events.iter().zip(pending) {
            let result = match sent {
                Ok(confirm) => match confirm.await {
                    Ok(Confirmation::Ack(_)) => Ok(Outcome::Delivered),
                    Ok(Confirmation::Nack(_)) => Err("RabbitMQ refused the event".into()),
                    Ok(Confirmation::NotRequested) => Err("publisher confirms are off".into()),
                    Err(e) => Err(format!("waiting for RabbitMQ's confirm: {e}")),
                },
                Err(e) => Err(e),
            };
            match &result {
                Ok(_) => metrics::counter!(PUBLISHED, "type" => event.kind.clone()).increment(1),
                Err(_) => broken = true,
            }
            results.push(result);
        }
        if broken {
            self.forget().await;
        }
        results
    }

    /// One message in another system's format on its own topic exchange (declared durable,
    /// as Spring Cloud Stream declares its destinations), with a publisher confirm.
    pub(super) async fn publish_foreign(&self, message: &Foreign<'_>) -> Result<(), String> {
        let channel = self.channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let sent = async {
            channel
                .exchange_declare(
                    s(message.exchange),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
            let mut headers = FieldTable::default();
            headers.insert(
                s("contentType"),
                AMQPValue::LongString(message.content_type.into()),
            );
            channel
                .basic_publish(
                    s(message.exchange),
                    s(message.routing_key),
                    BasicPublishOptions::default(),
                    message.body,
                    BasicProperties::default()
                        .with_content_type(s(message.content_type))
                        .with_delivery_mode(2)
                        .with_headers(headers),
                )
                .await?
                .await
        }
        .await;
        match sent {
            Ok(Confirmation::Ack(_)) => Ok(()),
            Ok(_) => Err("RabbitMQ did not confirm the message".into()),
            Err(e) => {
                self.forget().await;
                Err(format!("publishing to RabbitMQ: {e}"))
            }
        }
    }

    /// Starts a consumer loop; returns once it consumes (or after a while if the broker is
    /// down: the loop keeps trying).
    pub(super) async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) {
        let (ready, started) = tokio::sync::oneshot::channel();
        tokio::spawn(consume_loop(
            self.settings.clone(),
            subscription,
            handler,
            shutdown,
            ready,
        ));
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, started).await;
    }
}

async fn consume_loop(
    settings: Arc<EventSettings>,
    subscription: Subscription,
    handler: Handler,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut wait = Duration::from_millis(250);
    while !shutdown.is_cancelled() {
        let consumed =
            consume_once(&settings, &subscription, &handler, &shutdown, &mut ready).await;
        match consumed {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(queue = %subscription.queue, error = %e, retry_in_ms = wait.as_millis() as u64, "event consumer lost RabbitMQ; reconnecting");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// Consumes until the connection breaks (`Err`) or `shutdown` (`Ok`).
async fn consume_once(
    settings: &EventSettings,
    subscription: &Subscription,
    handler: &Handler,
    shutdown: &CancellationToken,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), String> {
    let queue = format!("{}{}", settings.queue_prefix, subscription.queue);
    let link = open(settings, &format!("promptflow-{queue}")).await?;
    let channel = &link.channel;
    let failed = |e: lapin::Error| format!("setting up {}: {e}", subscription.queue);
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await
        .map_err(failed)?;
    if subscription.per_instance {
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        channel
            .queue_declare(s(&queue), options, FieldTable::default())
            .await
            .map_err(failed)?;
        for binding in &subscription.bindings {
            channel
                .queue_bind(
                    s(&queue),
                    s(&settings.exchange),
                    s(binding),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(failed)?;
        }
    } else if !QUEUES.iter().any(|q| q.name == subscription.queue) {
        declare_durable_queue(channel, settings, &queue, &subscription.bindings, None)
            .await
            .map_err(failed)?;
    }
    let consumer = channel
        .basic_consume(
            s(&queue),
            s(&format!(
                "{}-{}",
                subscription.service,
                uuid::Uuid::now_v7()
            )),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    tracing::info!(queue = %subscription.queue, "consuming events from RabbitMQ");
    let work = consumer.for_each_concurrent(usize::from(settings.prefetch), |delivery| async {
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(queue = %subscription.queue, error = %e, "event delivery failed");
                return;
            }
        };
        let event = match serde_json::from_slice::<Envelope>(&delivery.data) {
            Ok(e) => e,
            Err(e) => {
                metrics::counter!(DEAD_LETTERED, "service" => subscription.service, "queue" => subscription.queue.clone(), "type" => "unreadable").increment(1);
                tracing::error!(queue = %subscription.queue, error = %e, "unreadable event; dead-lettered");
                let _ = delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
                return;
            }
        };
        match handle_with_retries(handler, event, subscription, settings, shutdown).await {
            Ok(()) => {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            // Stopping: unacknowledged, it is delivered again once a consumer is back.
            Err(reason) if reason.is_empty() => {}
            Err(_) => {
                let _ = delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
            }
        }
    });
    tokio::select! {
        () = work => Err(format!("the consumer of {} stopped", subscription.queue)),
        () = shutdown.cancelled() => {
            let _ = link.connection.close(200, s("shutting down")).await;
            Ok(())
        }
    }
}
