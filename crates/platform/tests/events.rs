//! The event bus with its outbox and inbox, on SQLite and PostgreSQL, in process and over
//! the machine's RabbitMQ (127.0.0.1:5672; a test that cannot reach it fails).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lapin::options::BasicGetOptions;
use platform::db::Db;
use platform::events::outbox::{self, Relay};
use platform::events::{
    Envelope, EventBus, EventSettings, Failure, Handler, QUEUES, Subscription, Transport, inbox,
};
use platform::settings::DatabaseSettings;
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use sea_orm_migration::prelude::*;
use testkit::{Backend, Databases, RabbitNamespace, on_both_backends};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct TestMigrator;

impl MigratorTrait for TestMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(platform::events::schema::EventTables),
            Box::new(Effects),
        ]
    }
}

/// What consumers do in these tests: one row per handled event, so an event applied twice
/// shows as two rows.
struct Effects;

impl MigrationName for Effects {
    fn name(&self) -> &str {
        "m_test_effects"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Effects {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared("CREATE TABLE effects (event_id TEXT NOT NULL)")
            .await?;
        Ok(())
    }
}

async fn database(backend: Backend) -> (Db, Databases) {
    let mut databases = Databases::new(backend);
    let url = databases.url("events");
    let db = platform::db::connect(&url, &DatabaseSettings::default())
        .await
        .unwrap_or_else(|e| panic!("database on {backend:?}: {e:#}"));
    db.migrate::<TestMigrator>().await.unwrap();
    (db, databases)
}

fn event(kind: &str, n: usize) -> Envelope {
    Envelope::new(
        "test",
        kind,
        Some(format!("subject-{n}")),
        serde_json::json!({ "n": n }),
    )
}

/// Writes `events` to the outbox in one committed transaction.
async fn commit(db: &Db, events: &[Envelope]) {
    let txn = db.write().begin().await.unwrap();
    for e in events {
        outbox::enqueue(&txn, e).await.unwrap();
    }
    txn.commit().await.unwrap();
}

async fn scalar(db: &Db, sql: &str) -> i64 {
    let row = db
        .read()
        .query_one_raw(Statement::from_string(db.backend(), sql.to_owned()))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn effects(db: &Db) -> (i64, i64) {
    (
        scalar(db, "SELECT COUNT(*) FROM effects").await,
        scalar(db, "SELECT COUNT(DISTINCT event_id) FROM effects").await,
    )
}

/// A consumer that applies each event once: inbox claim and effect in one transaction.
fn recorder(db: Db, handled: Arc<AtomicU32>) -> Handler {
    Arc::new(move |e: Envelope| {
        let (db, handled) = (db.clone(), handled.clone());
        Box::pin(async move {
            handled.fetch_add(1, Ordering::SeqCst);
            let txn = db.write().begin().await?;
            if inbox::claim(&txn, "test-consumer", &e.id).await? {
                txn.execute_raw(Statement::from_sql_and_values(
                    txn.get_database_backend(),
                    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
                        "INSERT INTO effects (event_id) VALUES ($1)"
                    } else {
                        "INSERT INTO effects (event_id) VALUES (?)"
                    },
                    [e.id.clone().into()],
                ))
                .await?;
            }
            txn.commit().await?;
            Ok(())
        })
    })
}

async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn quick(settings: EventSettings) -> EventSettings {
    EventSettings {
        retry_backoff_ms: 10,
        relay_poll_ms: 50,
        ..settings
    }
}

on_both_backends!(
    in_process_every_committed_event_takes_effect_once,
    in_process_a_failing_consumer_is_retried_then_dead_lettered,
    rabbitmq_outage_and_relay_crash_mid_stream_lose_nothing_and_repeat_nothing,
);

async fn in_process_every_committed_event_takes_effect_once(backend: Backend) {
    let (db, _dbs) = database(backend).await;
    let bus = EventBus::new(&quick(EventSettings::default()));
    let relay = Relay::new(db.clone(), bus.clone(), "test");
    let shutdown = CancellationToken::new();

    // Written before anyone consumes: it waits in the outbox, it is not dropped.
    let early: Vec<Envelope> = (0..5).map(|n| event("user.registered", n)).collect();
    commit(&db, &early).await;
    let round = relay.publish_due().await.unwrap();
    assert_eq!(round.published, 0, "{round:?}");
    assert_eq!(relay.backlog().await.unwrap(), 5);

    let handled = Arc::new(AtomicU32::new(0));
    bus.subscribe(
        Subscription::durable("test", "user.registered.queue"),
        recorder(db.clone(), handled.clone()),
        shutdown.clone(),
    )
    .await;
    relay.spawn(shutdown.clone());

    // A rolled-back transaction publishes nothing.
    let txn = db.write().begin().await.unwrap();
    outbox::enqueue(&txn, &event("user.registered", 99))
        .await
        .unwrap();
    txn.rollback().await.unwrap();

    let later: Vec<Envelope> = (5..50).map(|n| event("user.registered", n)).collect();
    commit(&db, &later).await;
    relay.wake();
    eventually(
        "every event to take effect",
        Duration::from_secs(30),
        async || effects(&db).await.0 == 50,
    )
    .await;
    eventually("the outbox to drain", Duration::from_secs(10), async || {
        relay.backlog().await.unwrap() == 0
    })
    .await;

    // Delivered again (as after a crash between effect and mark): nothing changes twice.
    let all: Vec<Envelope> = early.iter().chain(&later).cloned().collect();
    let outcomes = bus.publish(&all).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(effects(&db).await, (50, 50));
    assert!(handled.load(Ordering::SeqCst) >= 100);
    shutdown.cancel();
}

async fn in_process_a_failing_consumer_is_retried_then_dead_lettered(backend: Backend) {
    let (db, _dbs) = database(backend).await;
    let bus = EventBus::new(&EventSettings {
        max_attempts: 3,
        ..quick(EventSettings::default())
    });
    let relay = Relay::new(db.clone(), bus.clone(), "test");
    let shutdown = CancellationToken::new();
    let tries = Arc::new(AtomicU32::new(0));
    let counted = tries.clone();
    let flaky: Handler = Arc::new(move |e: Envelope| {
        let tries = counted.clone();
        Box::pin(async move {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            match e.data["n"].as_u64() {
                // Fails twice, then works: retried, not dead-lettered.
                Some(1) if n < 2 => Err(Failure::Retry("not yet".into())),
                Some(1) => Ok(()),
                // Never works.
                Some(2) => Err(Failure::Retry("always broken".into())),
                // Malformed: not retried at all.
                _ => Err(Failure::Permanent("malformed".into())),
            }
        })
    });
    bus.subscribe(
        Subscription::durable("test", "user.deleted.queue"),
        flaky,
        shutdown.clone(),
    )
    .await;
    commit(&db, &[event("user.deleted", 1)]).await;
    let round = relay.publish_due().await.unwrap();
    assert_eq!(round.published, 1, "{round:?}");
    assert_eq!(tries.load(Ordering::SeqCst), 3);

    tries.store(0, Ordering::SeqCst);
    commit(&db, &[event("user.deleted", 2), event("user.deleted", 3)]).await;
    let round = relay.publish_due().await.unwrap();
    assert_eq!(round.dead_lettered, 2, "{round:?}");
    // Three tries of the broken one, one of the malformed one.
    assert_eq!(tries.load(Ordering::SeqCst), 4);
    assert_eq!(relay.backlog().await.unwrap(), 0);
    let dead = relay.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead[0].1.contains("always broken"), "{dead:?}");
    assert!(dead[1].1.contains("malformed"), "{dead:?}");
    assert_eq!(dead[0].0.data["n"], 2);
    // Dead letters outlive the purge of old sent events.
    relay.purge(Duration::ZERO).await.unwrap();
    assert_eq!(relay.dead_letters(10).await.unwrap().len(), 2);
    shutdown.cancel();
}

/// Settings on a broker corner of our own (see [`RabbitNamespace`]).
struct Broker {
    settings: EventSettings,
    _namespace: RabbitNamespace,
}

impl Broker {
    fn new(url: &str) -> Broker {
        let names: Vec<&str> = QUEUES.iter().map(|q| q.name).collect();
        let namespace = RabbitNamespace::new(&names);
        Broker {
            settings: quick(EventSettings {
                transport: Transport::Rabbitmq,
                url: url.to_owned(),
                exchange: namespace.exchange.clone(),
                queue_prefix: namespace.queue_prefix.clone(),
                ..EventSettings::default()
            }),
            _namespace: namespace,
        }
    }

    fn via(&self, url: &str) -> EventSettings {
        EventSettings {
            url: url.to_owned(),
            ..self.settings.clone()
        }
    }

    /// Takes the messages waiting in one of our queues.
    async fn drain(&self, queue: &str) -> Vec<Envelope> {
        let connection = lapin::Connection::connect(RABBIT, Default::default())
            .await
            .expect("RabbitMQ on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)");
        let channel = connection.create_channel().await.unwrap();
        let name = format!("{}{queue}", self.settings.queue_prefix);
        let mut got = Vec::new();
        while let Some(m) = channel
            .basic_get(name.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            got.push(serde_json::from_slice(&m.delivery.data).unwrap());
        }
        got
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_every_event_reaches_its_queue() {
    let broker = Broker::new(RABBIT);
    let bus = EventBus::new(&broker.settings);
    bus.check()
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)");
    let events = [
        event("user.registered", 1),
        event("user.deleted", 2),
        event("library.provisioned", 3),
        event("prompt.created", 4),
        event("data.sync", 5),
        event("prompt.updated", 6),
    ];
    let outcomes = bus.publish(&events).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    for (queue, want) in [
        ("user.registered.queue", vec![&events[0]]),
        ("user.deleted.queue", vec![&events[1]]),
        ("user.saga.queue", vec![&events[2]]),
        ("prompt.created.queue", vec![&events[3]]),
        ("data.sync.queue", vec![&events[4]]),
    ] {
        let got = broker.drain(queue).await;
        let want: Vec<Envelope> = want.into_iter().cloned().collect();
        assert_eq!(got, want, "queue {queue}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_failing_consumer_is_retried_then_dead_lettered() {
    let broker = Broker::new(RABBIT);
    let settings = EventSettings {
        max_attempts: 3,
        ..broker.settings.clone()
    };
    let bus = EventBus::new(&settings);
    let shutdown = CancellationToken::new();
    let tries = Arc::new(AtomicU32::new(0));
    let counted = tries.clone();
    let broken: Handler = Arc::new(move |_e: Envelope| {
        counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(Failure::Retry("always broken".into())) })
    });
    bus.subscribe(
        Subscription::durable("test", "user.deleted.queue"),
        broken,
        shutdown.clone(),
    )
    .await;
    let poison = event("user.deleted", 7);
    let outcomes = bus.publish(std::slice::from_ref(&poison)).await;
    assert_eq!(outcomes, vec![Ok(platform::events::Outcome::Delivered)]);
    eventually("three tries", Duration::from_secs(10), async || {
        tries.load(Ordering::SeqCst) >= 3
    })
    .await;
    let mut dead = Vec::new();
    eventually("the dead letter", Duration::from_secs(10), async || {
        dead.extend(broker.drain("user.deleted.queue.dlq").await);
        !dead.is_empty()
    })
    .await;
    assert_eq!(dead, vec![poison]);
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    shutdown.cancel();
}

/// A TCP relay to RabbitMQ that can be cut (every connection dropped, the port closed)
/// and restored on the same port: a broker outage as the services see it.
struct Outage {
    port: u16,
    cut: CancellationToken,
}

impl Outage {
    async fn start(port: u16) -> Outage {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = CancellationToken::new();
        let stop = cut.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
                    () = stop.cancelled() => return,
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Outage { port, cut }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

async fn rabbitmq_outage_and_relay_crash_mid_stream_lose_nothing_and_repeat_nothing(
    backend: Backend,
) {
    let (db, _dbs) = database(backend).await;
    let broker = Broker::new(RABBIT);
    let link = Outage::start(0).await;
    let settings = broker.via(&link.url());
    let shutdown = CancellationToken::new();

    // The consumer and the relay both reach the broker through the link.
    let consumer_bus = EventBus::new(&settings);
    let handled = Arc::new(AtomicU32::new(0));
    consumer_bus
        .subscribe(
            Subscription::durable("test", "user.registered.queue"),
            recorder(db.clone(), handled.clone()),
            shutdown.clone(),
        )
        .await;
    let relay_stop = CancellationToken::new();
    let relay = Relay::new(db.clone(), EventBus::new(&settings), "test");
    relay.spawn(relay_stop.clone());

    let mut n = 0;
    let mut batch = |size: usize| {
        let events: Vec<Envelope> = (n..n + size).map(|i| event("user.registered", i)).collect();
        n += size;
        events
    };
    for _ in 0..5 {
        commit(&db, &batch(20)).await;
        relay.wake();
    }
    // The broker goes away mid-stream; the service keeps committing.
    link.cut.cancel();
    for _ in 0..5 {
        commit(&db, &batch(20)).await;
        relay.wake();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        relay.backlog().await.unwrap() > 0,
        "with the broker gone, events wait in the outbox"
    );
    // The relay crashes too; a new one starts once the broker is back.
    relay_stop.cancel();
    let link = Outage::start(link.port).await;
    let relay = Relay::new(db.clone(), EventBus::new(&settings), "test");
    relay.spawn(shutdown.clone());
    for _ in 0..5 {
        commit(&db, &batch(20)).await;
        relay.wake();
    }
    eventually(
        "all 300 events to take effect",
        Duration::from_secs(90),
        async || effects(&db).await.1 == 300,
    )
    .await;
    eventually("the outbox to drain", Duration::from_secs(30), async || {
        relay.backlog().await.unwrap() == 0
    })
    .await;
    // Nothing applied twice, though some events may have been delivered twice.
    assert_eq!(effects(&db).await, (300, 300));
    assert!(handled.load(Ordering::SeqCst) >= 300);
    shutdown.cancel();
    link.cut.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_foreign_message_reaches_whoever_listens_on_its_exchange() {
    use lapin::options::ExchangeDeleteOptions;
    let broker = Broker::new(RABBIT);
    let exchange = format!("{}.springCloudBus", broker.settings.exchange);
    let bus = EventBus::new(&broker.settings);
    let connection = lapin::Connection::connect(RABBIT, Default::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)");
    let channel = connection.create_channel().await.unwrap();
    // The exchange does not exist yet: publishing declares it, as a Java service would.
    bus.publish_foreign(&platform::events::Foreign {
        exchange: &exchange,
        routing_key: "springCloudBus",
        content_type: "application/json",
        body: b"{}",
    })
    .await
    .unwrap();
    // A Spring Cloud Stream consumer: an exclusive queue bound with `#`.
    let queue = testkit::listen_on(&channel, &exchange).await;
    let body = br#"{"type":"RefreshRemoteApplicationEvent","destinationService":"foo:**"}"#;
    bus.publish_foreign(&platform::events::Foreign {
        exchange: &exchange,
        routing_key: "springCloudBus",
        content_type: "application/json",
        body,
    })
    .await
    .unwrap();
    let got = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message arrived");
    assert_eq!(got.delivery.data, body.to_vec());
    let props = &got.delivery.properties;
    assert_eq!(
        props.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    let headers = props.headers().as_ref().expect("headers");
    assert!(
        headers.inner().contains_key("contentType"),
        "Spring Cloud Stream reads the type from the contentType header: {headers:?}"
    );
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    // In process there is no broker and no one else: nothing to do, and no error.
    EventBus::default()
        .publish_foreign(&platform::events::Foreign {
            exchange: "springCloudBus",
            routing_key: "springCloudBus",
            content_type: "application/json",
            body,
        })
        .await
        .unwrap();
}
