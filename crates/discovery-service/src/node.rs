//! One discovery node: the registry behind a lock, listings cached until the registry
//! changes, and every change made here (not one a peer replicated) sent to the peers.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use platform::discovery::{Applications, Instance, Status};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::registry::{Piece, Preservation, Registry, Renewal, Rules};
use crate::replication::{Action, Replicator, Task};
use crate::settings::Settings;
use crate::{millis, now_ms, xml};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listing {
    Full,
    Delta,
}

pub use crate::registry::Format;

/// A listing rendered once per registry generation, plain and gzipped.
struct Cached {
    generation: u64,
    /// When the oldest lease times it shows grow too old.
    expires_at: i64,
    plain: Bytes,
    gzip: Option<Bytes>,
}

impl Cached {
    /// Still the listing of the registry at `generation`, and not too old.
    fn current(&self, generation: u64) -> bool {
        self.generation == generation && now_ms() < self.expires_at
    }
}

/// Lease times in a listing are at most this old: each instance's written form is reused
/// for up to this long (less by a spread, so they are not all written again at once), and a
/// cached listing lasts until its oldest one must be written again (Eureka's cache expires
/// its entries after 180 s).
const FRESH_MS: i64 = 180_000;

/// Counts shown on the status page (per node, where `/metrics` is per process).
#[derive(Debug, Default)]
pub struct Stats {
    pub replicated_in: AtomicU64,
    pub replicated_out: AtomicU64,
    pub replication_failures: AtomicU64,
    pub replication_dropped: AtomicU64,
    pub evicted: AtomicU64,
}

pub struct Node {
    registry: Arc<Mutex<Registry>>,
    cache: Mutex<HashMap<(Listing, Format), Cached>>,
    /// Held while a listing (full, delta) is rebuilt, so clients asking at once after a
    /// change wait, without holding a thread, for one rebuild instead of each making their
    /// own.
    rebuilding: [Arc<tokio::sync::Mutex<()>>; 2],
    replicator: Replicator,
    pub settings: Settings,
    pub local_addr: SocketAddr,
    pub started_ms: i64,
    pub stats: Arc<Stats>,
}

impl Node {
    /// `batch_bytes`: about how large a replication batch may grow.
    pub fn new(settings: Settings, local_addr: SocketAddr, batch_bytes: usize) -> Arc<Node> {
        let rules = Rules {
            self_preservation: settings.self_preservation,
            renewal_percent_threshold: settings.renewal_percent_threshold,
            renewal_window_ms: i64::try_from(settings.renewal_window_ms).unwrap_or(i64::MAX),
            delta_retention_ms: i64::try_from(settings.delta_retention_ms).unwrap_or(i64::MAX),
        };
        let registry = Arc::new(Mutex::new(Registry::new(rules)));
        let stats = Arc::new(Stats::default());
        let peers = crate::replication::other_peers(&settings.peers, local_addr);
        let replicator = Replicator::new(
            peers,
            &settings,
            batch_bytes,
            registry.clone(),
            stats.clone(),
        );
        Arc::new(Node {
            registry,
            cache: Mutex::new(HashMap::new()),
            rebuilding: [Arc::default(), Arc::default()],
            replicator,
            settings,
            local_addr,
            started_ms: now_ms(),
            stats,
        })
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub fn peers(&self) -> &[String] {
        self.replicator.peers()
    }

    pub fn register(&self, instance: Instance, replicated: bool) {
        let (app, id) = (instance.app.clone(), instance.instance_id.clone());
        let task = {
            let mut registry = self.registry();
            registry.register(instance, now_ms());
            (!replicated)
                .then(|| registry.lease(&app, &id).map(Task::register))
                .flatten()
        };
        metrics::counter!("discovery_registrations_total").increment(1);
        if let Some(task) = task {
            self.replicator.send(task);
        }
    }

    pub fn renew(
        &self,
        app: &str,
        id: &str,
        last_dirty: Option<i64>,
        overridden: Option<Status>,
        replicated: bool,
    ) -> Renewal {
        let (outcome, task) = {
            let mut registry = self.registry();
            let outcome = registry.renew(app, id, last_dirty, overridden, replicated, now_ms());
            let task = (!replicated && outcome == Renewal::Renewed)
                .then(|| registry.lease(app, id).map(Task::heartbeat))
                .flatten();
            (outcome, task)
        };
        metrics::counter!("discovery_renewals_total").increment(1);
        if let Some(task) = task {
            self.replicator.send(task);
        }
        outcome
    }

    pub fn cancel(&self, app: &str, id: &str, replicated: bool) -> bool {
        let done = self.registry().cancel(app, id, now_ms());
        if done {
            metrics::counter!("discovery_cancellations_total").increment(1);
            if !replicated {
                self.replicator.send(Task::simple(Action::Cancel, app, id));
            }
        }
        done
    }

    pub fn set_override(&self, app: &str, id: &str, status: Status, replicated: bool) -> bool {
        let done = self.registry().set_override(app, id, status, now_ms());
        if done && !replicated {
            let mut task = Task::simple(Action::StatusUpdate, app, id);
            task.status = Some(status);
            self.replicator.send(task);
        }
        done
    }

    pub fn remove_override(
        &self,
        app: &str,
        id: &str,
        status: Option<Status>,
        replicated: bool,
    ) -> bool {
        let (done, reported) = {
            let mut registry = self.registry();
            let done = registry.remove_override(app, id, status, now_ms());
            (done, registry.lease(app, id).map(|l| l.reported))
        };
        if done && !replicated {
            let mut task = Task::simple(Action::DeleteStatusOverride, app, id);
            task.status = reported;
            self.replicator.send(task);
        }
        done
    }

    /// Metadata changes are sent to peers as a re-registration (Eureka has no replicated
    /// metadata action); the change marks the instance dirty, so the peers take it.
    pub fn merge_metadata(
        &self,
        app: &str,
        id: &str,
        entries: &BTreeMap<String, String>,
        replicated: bool,
    ) -> bool {
        let task = {
            let mut registry = self.registry();
            if !registry.merge_metadata(app, id, entries, now_ms()) {
                return false;
            }
            (!replicated)
                .then(|| registry.lease(app, id).map(Task::register))
                .flatten()
        };
        if let Some(task) = task {
            self.replicator.send(task);
        }
        true
    }

    /// The listing as cached for the registry as it is now, if it is and in the form asked
    /// for; `None` when it must be built (`listing`, off the async workers).
    pub fn cached(&self, listing: Listing, format: Format, gzip: bool) -> Option<Bytes> {
        let generation = self.generation(listing);
        let cache = lock(&self.cache);
        let cached = cache
            .get(&(listing, format))
            .filter(|c| c.current(generation))?;
        if gzip {
            cached.gzip.clone()
        } else {
            Some(cached.plain.clone())
        }
    }

    /// The lock a rebuild of `listing` is made under.
    pub fn rebuild_lock(&self, listing: Listing) -> Arc<tokio::sync::Mutex<()>> {
        self.rebuilding[listing as usize].clone()
    }

    fn generation(&self, listing: Listing) -> u64 {
        let registry = self.registry();
        match listing {
            Listing::Full => registry.generation(),
            Listing::Delta => registry.delta_generation(),
        }
    }

    /// The full registry or the delta in `format`, gzipped when `gzip`, built at most once
    /// per change of the registry (callers hold `rebuild_lock`). Blocks for as long as a
    /// rebuild takes (tens of milliseconds for 10,000 instances): call it off the async
    /// workers.
    pub fn listing(&self, listing: Listing, format: Format, gzip: bool) -> Bytes {
        if let Some(bytes) = self.cached(listing, format, gzip) {
            return bytes;
        }
        let generation = self.generation(listing);
        let plain = lock(&self.cache)
            .get(&(listing, format))
            .filter(|c| c.current(generation))
            .map(|c| (c.plain.clone(), c.expires_at));
        let (generation, expires_at, plain) = match (plain, listing) {
            // Only the gzipped form is missing.
            (Some((plain, expires_at)), _) => (generation, expires_at, plain),
            (None, Listing::Full) => self.full_listing(format),
            (None, Listing::Delta) => {
                let (generation, apps) = {
                    let registry = self.registry();
                    (registry.delta_generation(), registry.delta())
                };
                let expires_at = now_ms() + FRESH_MS;
                (generation, expires_at, render_applications(&apps, format))
            }
        };
        let z = gzip.then(|| gzip_bytes(&plain));
        lock(&self.cache).insert(
            (listing, format),
            Cached {
                generation,
                expires_at,
                plain: plain.clone(),
                gzip: z.clone(),
            },
        );
        if gzip { z.unwrap_or(plain) } else { plain }
    }

    /// The full listing, put together from each instance as last written; only instances
    /// changed since are written again, and outside the registry's lock.
    fn full_listing(&self, format: Format) -> (u64, i64, Bytes) {
        let snapshot = self.registry().full_snapshot(format, now_ms(), FRESH_MS);
        // Write what must be written, then put it all together in one buffer of the
        // right size.
        let mut written = Vec::new();
        let applications: Vec<(String, Vec<Bytes>)> = snapshot
            .applications
            .into_iter()
            .map(|(app, pieces)| {
                let instances = pieces
                    .into_iter()
                    .map(|(id, piece)| match piece {
                        Piece::Rendered(bytes) => bytes,
                        Piece::ToRender { instance, revision } => {
                            let bytes = render_instance(&instance, format);
                            written.push((app.clone(), id, revision, bytes.clone()));
                            bytes
                        }
                    })
                    .collect();
                (app, instances)
            })
            .collect();
        self.registry().keep_rendered(format, written, now_ms());

        let json = format == Format::Json;
        let generation = snapshot.generation.to_string();
        let (head, app_heads): (Vec<u8>, Vec<Vec<u8>>) = if json {
            let head = format!(
                "{{\"applications\":{{\"versions__delta\":{},\"apps__hashcode\":{},\"application\":[",
                json_string(&generation),
                json_string(&snapshot.hashcode)
            );
            let app_heads = applications
                .iter()
                .map(|(app, _)| {
                    format!("{{\"name\":{},\"instance\":[", json_string(app)).into_bytes()
                })
                .collect();
            (head.into_bytes(), app_heads)
        } else {
            let head = format!(
                "{}<applications>{}{}",
                xml::DECLARATION,
                xml::fragment("versions__delta", &Value::from(generation)),
                xml::fragment("apps__hashcode", &Value::from(snapshot.hashcode))
            );
            let app_heads = applications
                .iter()
                .map(|(app, _)| {
                    format!(
                        "<application>{}",
                        xml::fragment("name", &Value::from(app.as_str()))
                    )
                    .into_bytes()
                })
                .collect();
            (head.into_bytes(), app_heads)
        };
        let (app_tail, tail): (&[u8], &[u8]) = if json {
            (b"]}", b"]}}")
        } else {
            (b"</application>", b"</applications>")
        };
        let total = head.len()
            + tail.len()
            + applications
                .iter()
                .zip(&app_heads)
                .map(|((_, instances), app_head)| {
                    app_head.len()
                        + app_tail.len()
                        + 1
                        + instances.iter().map(|i| i.len() + 1).sum::<usize>()
                })
                .sum::<usize>();
        let mut out: Vec<u8> = Vec::with_capacity(total);
        out.extend_from_slice(&head);
        for (k, ((_, instances), app_head)) in applications.iter().zip(&app_heads).enumerate() {
            if json && k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(app_head);
            for (n, instance) in instances.iter().enumerate() {
                if json && n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(instance);
            }
            out.extend_from_slice(app_tail);
        }
        out.extend_from_slice(tail);
        (snapshot.generation, snapshot.expires_at, Bytes::from(out))
    }

    pub fn preservation(&self) -> Preservation {
        self.registry().preservation(now_ms())
    }

    /// Fills the registry from the first peers that answer, trying until
    /// `peer_sync_timeout_ms`; a node alone (or whose peers are all down) starts empty.
    pub async fn sync_from_peers(&self) {
        let peers = self.peers().to_vec();
        if peers.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + millis(self.settings.peer_sync_timeout_ms);
        let http = crate::replication::peer_client();
        loop {
            let mut filled = 0usize;
            let mut answered = false;
            for peer in &peers {
                let url = format!("{}/apps/", peer.trim_end_matches('/'));
                let fetched = crate::replication::json_answer(http.get(&url))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|body| Applications::from_json(&body));
                match fetched {
                    Ok(apps) => {
                        answered = true;
                        for instance in apps.applications.into_iter().flat_map(|a| a.instances) {
                            self.register(instance, true);
                            filled += 1;
                        }
                    }
                    Err(e) => {
                        tracing::info!(peer = %peer, error = %e, "peer not reachable for the initial sync")
                    }
                }
            }
            if answered {
                tracing::info!(instances = filled, "registry filled from peers");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("no peer answered; starting with an empty registry");
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Eviction, delta clean-up and the registry's gauges, until `shutdown`.
    pub fn spawn_tasks(self: &Arc<Self>, shutdown: CancellationToken) {
        self.replicator.start(shutdown.clone());
        let node = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(millis(node.settings.eviction_interval_ms));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = every.tick() => {}
                }
                let now = now_ms();
                let evicted = {
                    let mut registry = node.registry();
                    let evicted = registry.evict(now, |n| fastrand::usize(..n));
                    registry.purge_recent(now);
                    evicted
                };
                if !evicted.is_empty() {
                    node.stats
                        .evicted
                        .fetch_add(evicted.len() as u64, Ordering::Relaxed);
                    metrics::counter!("discovery_evictions_total").increment(evicted.len() as u64);
                    for i in &evicted {
                        tracing::info!(app = %i.app, id = %i.instance_id, "lease expired; instance evicted");
                    }
                }
            }
        });
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                node.publish_gauges();
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }

    fn publish_gauges(&self) {
        let (counts, apps, p) = {
            let mut registry = self.registry();
            let p = registry.preservation(now_ms());
            (registry.counts(), registry.application_count(), p)
        };
        for (status, n) in counts {
            metrics::gauge!("discovery_instances", "status" => status.as_str()).set(n as f64);
        }
        metrics::gauge!("discovery_applications").set(apps as f64);
        metrics::gauge!("discovery_self_preservation_enabled").set(f64::from(u8::from(p.enabled)));
        metrics::gauge!("discovery_self_preservation_active").set(f64::from(u8::from(p.active)));
        metrics::gauge!("discovery_renewals_last_window").set(p.renewals_last_window as f64);
        metrics::gauge!("discovery_renewals_threshold").set(p.threshold as f64);
        metrics::gauge!("discovery_replication_backlog").set(self.replicator.backlog() as f64);
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// One instance as listings write it (the object in JSON, the `<instance>` element in XML).
fn render_instance(instance: &Instance, format: Format) -> Bytes {
    let tree = instance.to_json();
    match format {
        Format::Json => Bytes::from(serde_json::to_vec(&tree).unwrap_or_default()),
        Format::Xml => Bytes::from(xml::fragment("instance", &tree)),
    }
}

pub fn render_applications(apps: &Applications, format: Format) -> Bytes {
    let tree = apps.to_json();
    render(&tree, format)
}

/// Renders a `{"root": value}` tree as JSON, or as XML with `root` as the element.
pub fn render(tree: &Value, format: Format) -> Bytes {
    match format {
        Format::Json => Bytes::from(serde_json::to_vec(tree).unwrap_or_default()),
        Format::Xml => {
            let (root, value) = tree
                .as_object()
                .and_then(|o| o.iter().next())
                .map_or(("empty", &Value::Null), |(k, v)| (k.as_str(), v));
            Bytes::from(xml::write(root, value))
        }
    }
}

fn gzip_bytes(plain: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(plain);
    Bytes::from(encoder.finish().unwrap_or_default())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Arc<Node> {
        Node::new(
            Settings::default(),
            "127.0.0.1:8761".parse().unwrap(),
            1024 * 1024,
        )
    }

    fn register(node: &Node, app: &str, id: &str) {
        let mut i = Instance::new(app, id, "h<&>", "10.0.0.1", 80);
        i.metadata
            .insert("note".into(), "\"quoted\" & <tagged> 中文".into());
        node.register(i, true);
    }

    /// The listing put together from written instances is byte for byte the one written
    /// from the whole tree.
    fn assert_same_as_whole(node: &Node) {
        for format in [Format::Json, Format::Xml] {
            let whole = render_applications(&node.registry().full(), format);
            let pieced = node.listing(Listing::Full, format, false);
            assert_eq!(
                String::from_utf8_lossy(&pieced),
                String::from_utf8_lossy(&whole),
                "{format:?}"
            );
        }
    }

    #[test]
    fn full_listings_are_pieced_from_written_instances_exactly() {
        let node = node();
        assert_same_as_whole(&node);
        for k in 0..5 {
            register(&node, "B-APP", &format!("b{k}"));
            register(&node, "a-app", &format!("a{k}"));
        }
        assert_same_as_whole(&node);
        // Changes write only the changed instances again; the rest are reused.
        node.set_override("B-APP", "b2", Status::OutOfService, true);
        node.cancel("A-APP", "a0", true);
        register(&node, "C-APP", "c0");
        assert_same_as_whole(&node);
        let reused = node
            .registry()
            .lease("B-APP", "b1")
            .is_some_and(|l| l.rendered[Format::Json as usize].is_some());
        assert!(reused, "an unchanged instance keeps its written form");
        let rewritten = node
            .registry()
            .lease("B-APP", "b2")
            .is_some_and(|l| l.rendered[Format::Json as usize].is_some());
        assert!(rewritten, "the changed one is written again and kept");
    }
}
