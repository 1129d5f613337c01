//! Events: the outbox → bus → inbox pipeline, its throughput and its commit-to-consumer
//! latency, against bare RabbitMQ (publish with confirms, consume with acks, no database) in
//! the same run; and a device sync of 10,000 changes against the plain REST calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use platform::db::Db;
use platform::events::outbox::{self, Relay};
use platform::events::{
    Envelope, EventBus, EventSettings, Handler, Subscription, Transport, inbox,
};
use platform::settings::DatabaseSettings;
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use sea_orm_migration::prelude::*;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{median, percentile};

const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(platform::events::schema::EventTables)]
    }
}

/// What one run of a path measured.
struct Run {
    rate: f64,
    latencies_ms: Vec<f64>,
}

/// Counts what the consumer handled and how long after its commit.
#[derive(Clone)]
struct Tally {
    seen: Arc<AtomicUsize>,
    latencies_ms: Arc<Mutex<Vec<f64>>>,
    done: Arc<Notify>,
    want: usize,
}

impl Tally {
    fn new(want: usize) -> Self {
        Self {
            seen: Arc::new(AtomicUsize::new(0)),
            latencies_ms: Arc::new(Mutex::new(Vec::with_capacity(want))),
            done: Arc::new(Notify::new()),
            want,
        }
    }

    fn record(&self, sent_at: chrono::DateTime<chrono::Utc>) {
        let ms = (chrono::Utc::now() - sent_at)
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1000.0;
        if let Ok(mut l) = self.latencies_ms.lock() {
            l.push(ms);
        }
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.want {
            self.done.notify_one();
        }
    }

    async fn wait(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.seen.load(Ordering::SeqCst) < self.want {
            anyhow::ensure!(Instant::now() < deadline, "events went missing");
            let _ = tokio::time::timeout(Duration::from_millis(200), self.done.notified()).await;
        }
        Ok(())
    }

    fn latencies(&self) -> Vec<f64> {
        self.latencies_ms
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }
}

/// The consumer as services write them: inbox claim in the transaction of the effect.
fn consumer(db: Db, tally: Tally) -> Handler {
    Arc::new(move |e: Envelope| {
        let (db, tally) = (db.clone(), tally.clone());
        Box::pin(async move {
            let txn = db.write().begin().await?;
            let fresh = inbox::claim(&txn, "bench", &e.id).await?;
            txn.commit().await?;
            if fresh {
                tally.record(e.time);
            }
            Ok(())
        })
    })
}

fn event(n: usize) -> Envelope {
    Envelope::new(
        "bench",
        "user.registered",
        Some(format!("user-{n}")),
        serde_json::json!({ "user_id": uuid::Uuid::now_v7(), "username": format!("user{n}") }),
    )
}

async fn commit(db: &Db, events: &[Envelope]) -> anyhow::Result<()> {
    let txn = db.write().begin().await?;
    for e in events {
        outbox::enqueue(&txn, e).await?;
    }
    txn.commit().await?;
    Ok(())
}

async fn clear(db: &Db) -> anyhow::Result<()> {
    for table in ["outbox", "inbox"] {
        db.write()
            .execute_raw(Statement::from_string(
                db.backend(),
                format!("DELETE FROM {table}"),
            ))
            .await?;
    }
    Ok(())
}

/// Throughput: `n` events committed in transactions of `batch`, until all are consumed.
/// Latency: `paced` events, one per transaction, every `gap`.
async fn pipeline(
    db: &Db,
    settings: &EventSettings,
    n: usize,
    batch: usize,
    paced: usize,
    gap: Duration,
) -> anyhow::Result<(Run, Run)> {
    let (shutdown, relay, tally) = start(db, settings, n).await?;
    let started = Instant::now();
    let events: Vec<Envelope> = (0..n).map(event).collect();
    for chunk in events.chunks(batch) {
        commit(db, chunk).await?;
        relay.wake();
    }
    tally.wait(Duration::from_secs(300)).await?;
    let throughput = Run {
        rate: n as f64 / started.elapsed().as_secs_f64(),
        latencies_ms: tally.latencies(),
    };
    shutdown.cancel();

    let (shutdown, relay, tally) = start(db, settings, paced).await?;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(gap);
    for i in 0..paced {
        ticks.tick().await;
        commit(db, &[event(i)]).await?;
        relay.wake();
    }
    tally.wait(Duration::from_secs(60)).await?;
    let latency = Run {
        rate: paced as f64 / started.elapsed().as_secs_f64(),
        latencies_ms: tally.latencies(),
    };
    shutdown.cancel();
    Ok((throughput, latency))
}

/// An empty outbox and inbox, a relay and a consumer waiting for `want` events.
async fn start(
    db: &Db,
    settings: &EventSettings,
    want: usize,
) -> anyhow::Result<(CancellationToken, Relay, Tally)> {
    clear(db).await?;
    let shutdown = CancellationToken::new();
    let bus = EventBus::new(settings);
    let relay = Relay::new(db.clone(), bus.clone(), "bench");
    let tally = Tally::new(want);
    bus.subscribe(
        Subscription::durable("bench", "user.registered.queue"),
        consumer(db.clone(), tally.clone()),
        shutdown.clone(),
    )
    .await;
    relay.spawn(shutdown.clone());
    Ok((shutdown, relay, tally))
}

/// The same envelopes straight through RabbitMQ: persistent, confirmed, acknowledged.
async fn bare(n: usize, paced: usize, gap: Duration) -> anyhow::Result<(Run, Run)> {
    let connection = Connection::connect(RABBIT, Default::default())
        .await
        .context("RabbitMQ on 127.0.0.1:5672")?;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let receiver = connection.create_channel().await?;
    receiver.basic_qos(32, Default::default()).await?;
    let queue = format!("pfbench.bare.{}", uuid::Uuid::new_v4().simple());
    // Exclusive: gone with the connection (not auto-delete: each run's consumer leaves).
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    receiver
        .queue_declare(queue.as_str().into(), options, FieldTable::default())
        .await?;
    let mut runs = Vec::new();
    for (count, pace) in [(n, None), (paced, Some(gap))] {
        let tally = Tally::new(count);
        let mut consumer = receiver
            .basic_consume(
                queue.as_str().into(),
                format!("bench-{}", uuid::Uuid::new_v4()).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let counted = tally.clone();
        let consuming = tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                if let Ok(e) = serde_json::from_slice::<Envelope>(&d.data) {
                    counted.record(e.time);
                }
                let _ = d.ack(BasicAckOptions::default()).await;
                if counted.seen.load(Ordering::SeqCst) >= counted.want {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut ticks = pace.map(tokio::time::interval);
        let mut confirms = Vec::new();
        for i in 0..count {
            if let Some(t) = ticks.as_mut() {
                t.tick().await;
            }
            let body = serde_json::to_vec(&event(i))?;
            let confirm = publisher
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            if pace.is_some() {
                confirm.await?;
            } else {
                confirms.push(confirm);
            }
            if confirms.len() >= 256 {
                for c in confirms.drain(..) {
                    c.await?;
                }
            }
        }
        for c in confirms {
            c.await?;
        }
        tally.wait(Duration::from_secs(120)).await?;
        let _ = consuming.await;
        runs.push(Run {
            rate: count as f64 / started.elapsed().as_secs_f64(),
            latencies_ms: tally.latencies(),
        });
    }
    let _ = connection.close(200, "done".into()).await;
    let latency = runs.pop().context("latency run")?;
    let throughput = runs.pop().context("throughput run")?;
    Ok((throughput, latency))
}

pub async fn run(n: usize, rounds: u32, postgres: &str) -> anyhow::Result<()> {
    let paced = 1000;
    let gap = Duration::from_millis(5);
    let batch = 100;
    let data = tempfile::tempdir()?;
    let sqlite = platform::db::connect(
        &format!("sqlite://{}", data.path().join("events.db").display()),
        &DatabaseSettings::default(),
    )
    .await?;
    sqlite.migrate::<Migrator>().await?;
    let pg_name = format!("pfbench_events_{}", uuid::Uuid::new_v4().simple());
    let pg = platform::db::connect(
        &format!("{postgres}/{pg_name}"),
        &DatabaseSettings::default(),
    )
    .await?;
    pg.migrate::<Migrator>().await?;

    // A corner of the broker of this run's own, deleted at the end.
    let names: Vec<&str> = platform::events::QUEUES.iter().map(|q| q.name).collect();
    let namespace = testkit::RabbitNamespace::new(&names);
    let rabbit = EventSettings {
        transport: Transport::Rabbitmq,
        exchange: namespace.exchange.clone(),
        queue_prefix: namespace.queue_prefix.clone(),
        ..EventSettings::default()
    };
    let memory = EventSettings::default();
    let paths: [(&str, Option<(&Db, &EventSettings)>); 5] = [
        (
            "bare RabbitMQ: publish with confirms → consume with acks, no database",
            None,
        ),
        (
            "outbox on SQLite → in process → inbox on SQLite",
            Some((&sqlite, &memory)),
        ),
        (
            "outbox on SQLite → RabbitMQ → inbox on SQLite",
            Some((&sqlite, &rabbit)),
        ),
        (
            "outbox on PostgreSQL → in process → inbox on PostgreSQL",
            Some((&pg, &memory)),
        ),
        (
            "outbox on PostgreSQL → RabbitMQ → inbox on PostgreSQL",
            Some((&pg, &rabbit)),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..rounds {
        for (i, (name, path)) in paths.iter().enumerate() {
            eprintln!("round {}: {name}", round + 1);
            let (throughput, latency) = match path {
                None => bare(n, paced, gap).await?,
                Some((db, settings)) => pipeline(db, settings, n, batch, paced, gap).await?,
            };
            rates[i].push(throughput.rate);
            latencies[i].extend(latency.latencies_ms);
        }
    }
    println!(
        "\n### Events: outbox → bus → inbox (release build)\n\n\
         Throughput: {n} `user.registered` events committed {batch} per transaction, timed from \
         the first commit until the consumer (inbox claim in its own transaction) has handled \
         the last; median of {rounds} interleaved rounds. Latency: {paced} events, one per \
         transaction, one every {} ms, from the event's creation just before its commit to its \
         handling; all rounds pooled. Baseline: the same envelopes published straight to a \
         RabbitMQ queue (persistent, confirmed) and consumed with acks, no database, in the \
         same run.\n",
        gap.as_millis()
    );
    println!("| path | events/s | ratio to bare RabbitMQ | commit → consumer p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    let base = median(rates[0].clone());
    for (i, (name, _)) in paths.iter().enumerate() {
        let rate = median(rates[i].clone());
        println!(
            "| {name} | {rate:.0} | {:.2} | {:.2} | {:.2} |",
            rate / base,
            percentile(&latencies[i], 0.50),
            percentile(&latencies[i], 0.99),
        );
    }
    sqlite.close().await;
    pg.close().await;
    crate::drop_pg(postgres, &pg_name).await;
    drop(namespace);
    Ok(())
}
