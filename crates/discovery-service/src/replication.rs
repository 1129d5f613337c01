//! Peer replication, as Eureka nodes do it: each change made on this node is queued for every
//! peer and sent in batches to `POST {peer}/peerreplication/batch/` marked with
//! `x-netflix-discovery-replication: true`; a node never replicates what it received that
//! way. A peer that does not know a renewed instance (404) is sent its registration; a peer
//! holding newer data (409) hands it back and this node takes it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::discovery::{Instance, REPLICATION_HEADER, Status};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::node::{Node, Stats};
use crate::now_ms;
use crate::registry::{Lease, Registry, Renewal};
use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Register,
    Heartbeat,
    Cancel,
    StatusUpdate,
    DeleteStatusOverride,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Register => "Register",
            Action::Heartbeat => "Heartbeat",
            Action::Cancel => "Cancel",
            Action::StatusUpdate => "StatusUpdate",
            Action::DeleteStatusOverride => "DeleteStatusOverride",
        }
    }

    fn parse(text: &str) -> Option<Action> {
        [
            Action::Register,
            Action::Heartbeat,
            Action::Cancel,
            Action::StatusUpdate,
            Action::DeleteStatusOverride,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(text))
    }
}

/// One replicated change (Eureka's `ReplicationInstance`).
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub action: Action,
    pub app: String,
    pub id: String,
    pub last_dirty: i64,
    pub status: Option<Status>,
    pub overridden: Option<Status>,
    pub instance: Option<Instance>,
}

impl Task {
    pub fn simple(action: Action, app: &str, id: &str) -> Task {
        Task {
            action,
            app: app.to_owned(),
            id: id.to_owned(),
            last_dirty: 0,
            status: None,
            overridden: None,
            instance: None,
        }
    }

    /// A registration, carrying the status the instance reported (the override travels
    /// in `overriddenStatus`).
    pub fn register(lease: &Lease) -> Task {
        let mut instance = lease.listed();
        instance.status = lease.reported;
        instance.action_type = None;
        Task {
            action: Action::Register,
            app: instance.app.clone(),
            id: instance.instance_id.clone(),
            last_dirty: instance.last_dirty_ts,
            status: Some(lease.reported),
            overridden: Some(instance.overridden_status),
            instance: Some(instance),
        }
    }

    pub fn heartbeat(lease: &Lease) -> Task {
        let i = &lease.instance;
        Task {
            action: Action::Heartbeat,
            app: i.app.clone(),
            id: i.instance_id.clone(),
            last_dirty: i.last_dirty_ts,
            status: Some(i.status),
            overridden: Some(i.overridden_status),
            instance: None,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("appName".into(), self.app.clone().into());
        o.insert("id".into(), self.id.clone().into());
        o.insert("lastDirtyTimestamp".into(), self.last_dirty.into());
        if let Some(s) = self.overridden {
            o.insert("overriddenStatus".into(), s.as_str().into());
        }
        if let Some(s) = self.status {
            o.insert("status".into(), s.as_str().into());
        }
        if let Some(i) = &self.instance {
            o.insert("instanceInfo".into(), i.to_json());
        }
        o.insert("action".into(), self.action.as_str().into());
        Value::Object(o)
    }

    pub fn from_json(value: &Value) -> Result<Task, String> {
        let o = value
            .as_object()
            .ok_or("a replication item must be an object")?;
        let text = |key: &str| o.get(key).and_then(Value::as_str).map(str::to_owned);
        let status = |key: &str| -> Result<Option<Status>, String> {
            match text(key) {
                None => Ok(None),
                Some(s) => Status::parse(&s)
                    .map(Some)
                    .ok_or_else(|| format!("{key} is not a status")),
            }
        };
        let action = text("action")
            .and_then(|a| Action::parse(&a))
            .ok_or("unknown or missing action")?;
        let instance = match o.get("instanceInfo") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Instance::from_json(v)?),
        };
        let app = text("appName")
            .or_else(|| instance.as_ref().map(|i| i.app.clone()))
            .ok_or("missing appName")?
            .to_ascii_uppercase();
        let id = text("id")
            .or_else(|| instance.as_ref().map(|i| i.instance_id.clone()))
            .ok_or("missing id")?;
        let last_dirty = match o.get("lastDirtyTimestamp") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        };
        if action == Action::Register && instance.is_none() {
            return Err("a Register item needs instanceInfo".into());
        }
        Ok(Task {
            action,
            app,
            id,
            last_dirty,
            status: status("status")?,
            overridden: status("overriddenStatus")?,
            instance,
        })
    }
}

/// Applies a change a peer sent; the answer is the batch response item.
pub fn apply(node: &Node, task: Task) -> Value {
    node.stats.replicated_in.fetch_add(1, Ordering::Relaxed);
    let found = |ok: bool| json!({"statusCode": if ok { 200 } else { 404 }});
    match task.action {
        Action::Register => {
            if let Some(instance) = task.instance {
                node.register(instance, true);
            }
            json!({"statusCode": 200})
        }
        Action::Heartbeat => {
            let dirty = (task.last_dirty > 0).then_some(task.last_dirty);
            match node.renew(&task.app, &task.id, dirty, task.overridden, true) {
                Renewal::Renewed => json!({"statusCode": 200}),
                Renewal::NotFound => json!({"statusCode": 404}),
                Renewal::Conflict(ours) => {
                    json!({"statusCode": 409, "responseEntity": ours.to_json()})
                }
            }
        }
        Action::Cancel => found(node.cancel(&task.app, &task.id, true)),
        Action::StatusUpdate => match task.status {
            Some(s) => found(node.set_override(&task.app, &task.id, s, true)),
            None => json!({"statusCode": 400}),
        },
        Action::DeleteStatusOverride => {
            found(node.remove_override(&task.app, &task.id, task.status, true))
        }
    }
}

/// The peers other than this node itself.
pub fn other_peers(peers: &[String], local: SocketAddr) -> Vec<String> {
    peers
        .iter()
        .filter(|url| !is_self(url, local))
        .cloned()
        .collect()
}

fn is_self(url: &str, local: SocketAddr) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    if parsed.port_or_known_default() != Some(local.port()) {
        return false;
    }
    let host = parsed.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip == local.ip()
                || (local.ip().is_unspecified()
                    && (ip == std::net::IpAddr::from([127, 0, 0, 1])
                        || ip == std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)))
        }
        Err(_) => local.ip().is_unspecified() && host.eq_ignore_ascii_case("localhost"),
    }
}

/// The HTTP client a node talks to its peers with.
pub fn peer_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default()
}

/// Why a request to a peer did not succeed.
#[derive(Debug)]
pub enum PeerError {
    /// The peer answered 4xx: sending the same again cannot succeed.
    Refused(String),
    /// No answer, or a 5xx: worth trying again.
    Unreachable(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Refused(e) | PeerError::Unreachable(e) => f.write_str(e),
        }
    }
}

/// Sends `request` asking for JSON; a non-2xx answer is an error.
pub async fn json_answer(request: reqwest::RequestBuilder) -> Result<Value, PeerError> {
    let response = request
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| PeerError::Unreachable(e.to_string()))?;
    let status = response.status();
    if status.is_client_error() {
        return Err(PeerError::Refused(format!("answered {status}")));
    }
    if !status.is_success() {
        return Err(PeerError::Unreachable(format!("answered {status}")));
    }
    response
        .json()
        .await
        .map_err(|e| PeerError::Unreachable(e.to_string()))
}

struct Peer {
    url: String,
    queue: Mutex<VecDeque<Task>>,
    wake: Notify,
}

/// Queues and sends this node's changes to each peer.
pub struct Replicator {
    peers: Vec<Arc<Peer>>,
    urls: Vec<String>,
    registry: Arc<Mutex<Registry>>,
    stats: Arc<Stats>,
    batch_size: usize,
    batch_bytes: usize,
    queue_limit: usize,
    http: reqwest::Client,
}

impl Replicator {
    pub fn new(
        urls: Vec<String>,
        settings: &Settings,
        batch_bytes: usize,
        registry: Arc<Mutex<Registry>>,
        stats: Arc<Stats>,
    ) -> Replicator {
        let peers = urls
            .iter()
            .map(|url| {
                Arc::new(Peer {
                    url: url.clone(),
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                })
            })
            .collect();
        Replicator {
            peers,
            urls,
            registry,
            stats,
            batch_size: settings.replication_batch_size,
            batch_bytes,
            queue_limit: settings.replication_queue,
            http: peer_client(),
        }
    }

    pub fn peers(&self) -> &[String] {
        &self.urls
    }

    pub fn backlog(&self) -> usize {
        self.peers
            .iter()
            .map(|p| p.queue.lock().map_or(0, |q| q.len()))
            .sum()
    }

    pub fn send(&self, task: Task) {
        for peer in &self.peers {
            self.enqueue(peer, task.clone());
        }
    }

    fn enqueue(&self, peer: &Peer, task: Task) {
        let mut queue = peer.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= self.queue_limit {
            queue.pop_front();
            self.stats
                .replication_dropped
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!("discovery_replication_dropped_total").increment(1);
        }
        queue.push_back(task);
        drop(queue);
        peer.wake.notify_one();
    }

    /// One sending loop per peer, until `shutdown`.
    pub fn start(&self, shutdown: CancellationToken) {
        for peer in &self.peers {
            let sender = Sender {
                peer: peer.clone(),
                registry: self.registry.clone(),
                stats: self.stats.clone(),
                batch_size: self.batch_size,
                batch_bytes: self.batch_bytes,
                queue_limit: self.queue_limit,
                http: self.http.clone(),
            };
            tokio::spawn(sender.run(shutdown.clone()));
        }
    }
}

/// Roughly what an instance takes in a batch: its fixed fields and its metadata.
fn approximate_size(instance: &Instance) -> usize {
    1_200
        + instance
            .metadata
            .iter()
            .map(|(k, v)| 2 * k.len() + v.len() + 8)
            .sum::<usize>()
}

struct Sender {
    peer: Arc<Peer>,
    registry: Arc<Mutex<Registry>>,
    stats: Arc<Stats>,
    batch_size: usize,
    batch_bytes: usize,
    queue_limit: usize,
    http: reqwest::Client,
}

impl Sender {
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let batch: Vec<Task> = {
                let mut queue = self.peer.queue.lock().unwrap_or_else(|e| e.into_inner());
                // Up to `batch_size` items and, past the first, `batch_bytes`, so a
                // batch stays under a peer's body limit.
                let mut bytes = 0;
                let mut n = 0;
                while n < queue.len().min(self.batch_size) && (n == 0 || bytes < self.batch_bytes) {
                    bytes += queue[n].instance.as_ref().map_or(200, approximate_size);
                    n += 1;
                }
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.peer.wake.notified() => continue,
                }
            }
            let unsent = match self.post(&batch).await {
                Ok(answers) => {
                    self.delivered(&batch, &answers);
                    Vec::new()
                }
                Err(PeerError::Refused(e)) => self.one_by_one(batch, &e).await,
                Err(PeerError::Unreachable(e)) => {
                    tracing::debug!(peer = %self.peer.url, error = %e, "replication failed; will retry");
                    batch
                }
            };
            if unsent.is_empty() {
                backoff = Duration::from_millis(100);
                continue;
            }
            self.stats
                .replication_failures
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!("discovery_replication_failures_total").increment(1);
            self.requeue(unsent);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn delivered(&self, batch: &[Task], answers: &[Value]) {
        self.stats
            .replicated_out
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        metrics::counter!("discovery_replicated_total").increment(batch.len() as u64);
        self.handle_answers(batch, answers);
    }

    /// The peer refused a batch as a whole (too large, or unreadable to it): each item goes
    /// alone, and an item refused alone is dropped (its instance's next heartbeat brings the
    /// peer back in step). Returns what could not be sent for want of an answer.
    async fn one_by_one(&self, batch: Vec<Task>, why: &str) -> Vec<Task> {
        tracing::warn!(peer = %self.peer.url, error = %why, items = batch.len(), "peer refused a replication batch; sending its items one by one");
        let mut items = batch.into_iter();
        while let Some(task) = items.next() {
            match self.post(std::slice::from_ref(&task)).await {
                Ok(answers) => self.delivered(std::slice::from_ref(&task), &answers),
                Err(PeerError::Refused(e)) => {
                    tracing::warn!(peer = %self.peer.url, error = %e, app = %task.app, id = %task.id, "peer refused a replicated change; dropped");
                    self.stats
                        .replication_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("discovery_replication_dropped_total").increment(1);
                }
                Err(PeerError::Unreachable(_)) => {
                    return std::iter::once(task).chain(items).collect();
                }
            }
        }
        Vec::new()
    }

    /// Puts an unsent batch back in front; heartbeats are dropped (the next ones replace
    /// them, and a peer that missed a registration asks for it with a 404).
    fn requeue(&self, batch: Vec<Task>) {
        let mut queue = self.peer.queue.lock().unwrap_or_else(|e| e.into_inner());
        for task in batch
            .into_iter()
            .rev()
            .filter(|t| t.action != Action::Heartbeat)
        {
            if queue.len() >= self.queue_limit {
                break;
            }
            queue.push_front(task);
        }
    }

    async fn post(&self, batch: &[Task]) -> Result<Vec<Value>, PeerError> {
        let url = format!(
            "{}/peerreplication/batch/",
            self.peer.url.trim_end_matches('/')
        );
        let body = json!({"replicationList": batch.iter().map(Task::to_json).collect::<Vec<_>>()});
        let answer = json_answer(
            self.http
                .post(&url)
                .header(REPLICATION_HEADER, "true")
                .json(&body),
        )
        .await?;
        Ok(answer
            .get("responseList")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    fn handle_answers(&self, batch: &[Task], answers: &[Value]) {
        for (task, answer) in batch.iter().zip(answers) {
            let code = answer
                .get("statusCode")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            match (task.action, code) {
                (Action::Heartbeat, 404) => {
                    // The peer lost the instance (it restarted, or missed the registration).
                    let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(lease) = registry.lease(&task.app, &task.id) {
                        let register = Task::register(lease);
                        drop(registry);
                        let mut queue = self.peer.queue.lock().unwrap_or_else(|e| e.into_inner());
                        queue.push_back(register);
                        drop(queue);
                        self.peer.wake.notify_one();
                    }
                }
                (Action::Heartbeat, 409) => {
                    // The peer holds newer data: take it.
                    if let Some(Ok(theirs)) = answer.get("responseEntity").map(Instance::from_json)
                    {
                        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
                        registry.register(theirs, now_ms());
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_written() {
        let mut instance = Instance::new("svc", "h:svc:1", "h", "10.0.0.1", 1);
        instance.last_dirty_ts = 42;
        let mut registry = Registry::new(Default::default());
        registry.register(instance, 100);
        let lease = registry.lease("SVC", "h:svc:1").unwrap();
        for task in [
            Task::register(lease),
            Task::heartbeat(lease),
            Task::simple(Action::Cancel, "SVC", "h:svc:1"),
        ] {
            let back = Task::from_json(&task.to_json()).unwrap();
            assert_eq!(back.action, task.action);
            assert_eq!(back.id, task.id);
            assert_eq!(back.last_dirty, task.last_dirty);
            assert_eq!(back.instance.is_some(), task.instance.is_some());
        }
        assert!(
            Task::from_json(&json!({"action": "Register", "appName": "A", "id": "x"})).is_err()
        );
        assert!(Task::from_json(&json!({"action": "Explode"})).is_err());
    }

    #[test]
    fn a_node_skips_itself_among_its_peers() {
        let local: SocketAddr = "127.0.0.2:8761".parse().unwrap();
        let peers = vec![
            "http://127.0.0.1:8761/eureka/".to_owned(),
            "http://127.0.0.2:8761/eureka/".to_owned(),
            "http://127.0.0.3:8761/eureka/".to_owned(),
        ];
        assert_eq!(other_peers(&peers, local).len(), 2);
        let any: SocketAddr = "0.0.0.0:8761".parse().unwrap();
        assert_eq!(
            other_peers(&["http://localhost:8761/eureka/".to_owned()], any).len(),
            0
        );
    }
}
