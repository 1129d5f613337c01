//! The registry: leases by application and instance id, status overrides, the recent
//! changes a delta is made of, the renewal rate self-preservation judges by, and eviction.
//!
//! No I/O and no clock: every call takes `now` in milliseconds, so the rules are tested
//! without waiting. Eureka's rules (see `interop/eureka.md`), with two deliberate changes:
//! a lease expires `duration` after its last renewal (Eureka's known bug counts it twice),
//! and removing an override puts back the status the instance itself last reported.

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::body::Bytes;

use platform::discovery::instance::hashcode;
use platform::discovery::{ActionType, Application, Applications, Instance, Status};

#[derive(Debug, Clone)]
pub struct Lease {
    /// The instance as listed: `status` is the effective status, `overridden_status` the
    /// override in force.
    pub instance: Instance,
    /// What the instance itself last said its status was.
    pub reported: Status,
    pub registered_at: i64,
    pub last_renewal: i64,
    pub service_up_at: i64,
    /// Bumped on every change listings show.
    pub revision: u64,
    /// The instance as listings write it, once rendered (JSON and XML), and when.
    pub rendered: [Option<(Bytes, i64)>; 2],
}

/// A listing's format, as an index into `Lease::rendered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json = 0,
    Xml = 1,
}

/// One instance of a listing being put together: written already, or to be written.
pub enum Piece {
    Rendered(Bytes),
    ToRender {
        instance: Box<Instance>,
        revision: u64,
    },
}

/// The whole registry, ready to be written without holding the lock.
pub struct FullSnapshot {
    pub generation: u64,
    /// When the first instance written into it grows too old; the listing is rebuilt then.
    pub expires_at: i64,
    pub hashcode: String,
    pub applications: Vec<(String, Vec<(String, Piece)>)>,
}

impl Lease {
    /// Marks a change: listings write this instance afresh.
    fn touch(&mut self) {
        self.revision += 1;
        self.rendered = [None, None];
    }

    fn expires_at(&self) -> i64 {
        self.last_renewal + i64::from(self.instance.lease.duration_secs) * 1000
    }

    /// The instance with its lease times filled in, as clients read it.
    pub fn listed(&self) -> Instance {
        let mut i = self.instance.clone();
        i.lease.registration_ts = self.registered_at;
        i.lease.last_renewal_ts = self.last_renewal;
        i.lease.service_up_ts = self.service_up_at;
        i.lease.eviction_ts = 0;
        i
    }
}

/// How the registry judges self-preservation and keeps deltas.
#[derive(Debug, Clone)]
pub struct Rules {
    pub self_preservation: bool,
    /// Share of expected renewals below which leases stop expiring (Eureka: 0.85).
    pub renewal_percent_threshold: f64,
    /// The window renewals are counted over (Eureka: one minute).
    pub renewal_window_ms: i64,
    /// How long a change stays in `/apps/delta` (Eureka: three minutes).
    pub delta_retention_ms: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            self_preservation: true,
            renewal_percent_threshold: 0.85,
            renewal_window_ms: 60_000,
            delta_retention_ms: 180_000,
        }
    }
}

/// Renewals counted per window; the last complete window is what is judged.
#[derive(Debug, Default)]
struct MeasuredRate {
    window_start: Option<i64>,
    current: u64,
    last: u64,
}

impl MeasuredRate {
    fn roll(&mut self, now: i64, window: i64) {
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return;
        };
        let elapsed = now - start;
        if elapsed < window {
            return;
        }
        // A gap of more than one window means the last window saw nothing.
        self.last = if elapsed < 2 * window {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.window_start = Some(now - elapsed % window);
    }
}

#[derive(Debug)]
struct Change {
    at: i64,
    instance: Instance,
}

/// The outcome of a renewal.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// Unknown here, or the caller holds newer data: it should register.
    NotFound,
    /// A peer's replicated renewal carries older data than this node holds: here is ours.
    Conflict(Box<Instance>),
}

/// Self-preservation figures, for the dashboard and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preservation {
    pub enabled: bool,
    pub renewals_last_window: u64,
    pub threshold: u64,
    /// Leases are not expiring because renewals fell below the threshold.
    pub active: bool,
}

#[derive(Debug, Default)]
pub struct Registry {
    rules: Rules,
    apps: BTreeMap<String, BTreeMap<String, Lease>>,
    /// Overrides by instance id; they outlive a re-registration, as in Eureka.
    overrides: HashMap<String, Status>,
    recent: VecDeque<Change>,
    renewals: MeasuredRate,
    /// Bumped on every change a listing shows (cached listings are keyed by it).
    generation: u64,
    /// Bumped on every change and when old changes leave the delta.
    delta_generation: u64,
    size: usize,
}

impl Registry {
    pub fn new(rules: Rules) -> Registry {
        Registry {
            rules,
            ..Registry::default()
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn delta_generation(&self) -> u64 {
        self.delta_generation
    }

    pub fn len(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn lease_mut(&mut self, app: &str, id: &str) -> Option<&mut Lease> {
        self.apps.get_mut(app).and_then(|a| a.get_mut(id))
    }

    pub fn lease(&self, app: &str, id: &str) -> Option<&Lease> {
        self.apps.get(app).and_then(|a| a.get(id))
    }

    /// The effective status: the instance's own DOWN or STARTING wins, then an override,
    /// then what it reported.
    fn effective(reported: Status, overridden: Option<Status>) -> Status {
        match (reported, overridden) {
            (Status::Down | Status::Starting, _) => reported,
            (_, Some(o)) if o != Status::Unknown => o,
            _ => reported,
        }
    }

    fn record(&mut self, now: i64, lease_instance: Instance, action: ActionType) {
        let mut instance = lease_instance;
        instance.action_type = Some(action);
        self.recent.push_back(Change { at: now, instance });
        self.generation += 1;
        self.delta_generation += 1;
    }

    /// Registers (or re-registers) `incoming`. An existing lease with newer data is kept,
    /// as Eureka does, so a stale replica cannot roll an instance back.
    pub fn register(&mut self, mut incoming: Instance, now: i64) {
        let app = incoming.app.to_ascii_uppercase();
        incoming.app.clone_from(&app);
        let id = incoming.instance_id.clone();
        // A client that sends no lastDirtyTimestamp (eureka-js-client) registers what it is
        // now, as Eureka reads a missing one.
        if incoming.last_dirty_ts == 0 {
            incoming.last_dirty_ts = now;
        }
        let existing = self.lease(&app, &id).cloned();
        if let Some(existing) = &existing
            && existing.instance.last_dirty_ts > incoming.last_dirty_ts
        {
            incoming = existing.instance.clone();
            incoming.status = existing.reported;
        }
        if incoming.overridden_status != Status::Unknown {
            self.overrides
                .entry(id.clone())
                .or_insert(incoming.overridden_status);
        }
        let reported = incoming.status;
        let overridden = self.overrides.get(&id).copied();
        incoming.overridden_status = overridden.unwrap_or(Status::Unknown);
        incoming.status = Self::effective(reported, overridden);
        incoming.last_updated_ts = now;
        let service_up_at = match &existing {
            Some(e) if e.service_up_at > 0 => e.service_up_at,
            _ if incoming.status == Status::Up => now,
            _ => 0,
        };
        let lease = Lease {
            instance: incoming.clone(),
            reported,
            registered_at: now,
            last_renewal: now,
            service_up_at,
            revision: existing.as_ref().map_or(0, |e| e.revision + 1),
            rendered: [None, None],
        };
        if existing.is_none() {
            self.size += 1;
        }
        self.apps.entry(app).or_default().insert(id, lease);
        self.record(now, incoming, ActionType::Added);
    }

    /// A heartbeat. `last_dirty` is the client's (or the peer's) `lastDirtyTimestamp`;
    /// `overridden` the override a peer's heartbeat carries.
    pub fn renew(
        &mut self,
        app: &str,
        id: &str,
        last_dirty: Option<i64>,
        overridden: Option<Status>,
        replicated: bool,
        now: i64,
    ) -> Renewal {
        // A peer's heartbeat carries its view of the override; it is kept only when the
        // peer holds newer data (as Eureka does). Overrides and their removal travel as
        // their own actions, which a heartbeat sent earlier must not undo.
        if replicated
            && let (Some(o), Some(dirty), Some(lease)) =
                (overridden, last_dirty, self.lease(app, id))
            && o != Status::Unknown
            && dirty > lease.instance.last_dirty_ts
        {
            self.overrides.insert(id.to_owned(), o);
        }
        let override_now = self.overrides.get(id).copied();
        let window = self.rules.renewal_window_ms;
        let Some(lease) = self.lease_mut(app, id) else {
            return Renewal::NotFound;
        };
        if let Some(dirty) = last_dirty {
            let ours = lease.instance.last_dirty_ts;
            if dirty > ours {
                return Renewal::NotFound;
            }
            if dirty < ours && replicated {
                return Renewal::Conflict(Box::new(lease.listed()));
            }
        }
        lease.last_renewal = now;
        let status = Self::effective(lease.reported, override_now);
        let changed = status != lease.instance.status
            || lease.instance.overridden_status != override_now.unwrap_or(Status::Unknown);
        if changed {
            lease.instance.status = status;
            lease.instance.overridden_status = override_now.unwrap_or(Status::Unknown);
            lease.instance.last_updated_ts = now;
            lease.touch();
        }
        let snapshot = changed.then(|| lease.instance.clone());
        self.renewals.roll(now, window);
        self.renewals.current += 1;
        if let Some(instance) = snapshot {
            self.record(now, instance, ActionType::Modified);
        }
        Renewal::Renewed
    }

    /// Removes a lease; `false` when there was none.
    pub fn cancel(&mut self, app: &str, id: &str, now: i64) -> bool {
        let Some(leases) = self.apps.get_mut(app) else {
            return false;
        };
        let Some(lease) = leases.remove(id) else {
            return false;
        };
        if leases.is_empty() {
            self.apps.remove(app);
        }
        self.size -= 1;
        self.overrides.remove(id);
        let mut gone = lease.listed();
        gone.last_updated_ts = now;
        self.record(now, gone, ActionType::Deleted);
        true
    }

    /// Sets an override (`PUT .../status?value=`); `false` for an unknown instance.
    pub fn set_override(&mut self, app: &str, id: &str, status: Status, now: i64) -> bool {
        if self.lease(app, id).is_none() {
            return false;
        }
        self.overrides.insert(id.to_owned(), status);
        let Some(lease) = self.lease_mut(app, id) else {
            return false;
        };
        lease.instance.overridden_status = status;
        lease.instance.status = status;
        lease.instance.last_updated_ts = now;
        lease.touch();
        let snapshot = lease.instance.clone();
        self.record(now, snapshot, ActionType::Modified);
        true
    }

    /// Removes an override; the status becomes `status` if given, else the instance's own.
    pub fn remove_override(
        &mut self,
        app: &str,
        id: &str,
        status: Option<Status>,
        now: i64,
    ) -> bool {
        if self.lease(app, id).is_none() {
            return false;
        }
        self.overrides.remove(id);
        let Some(lease) = self.lease_mut(app, id) else {
            return false;
        };
        if let Some(s) = status {
            lease.reported = s;
        }
        lease.instance.overridden_status = Status::Unknown;
        lease.instance.status = lease.reported;
        lease.instance.last_updated_ts = now;
        lease.touch();
        let snapshot = lease.instance.clone();
        self.record(now, snapshot, ActionType::Modified);
        true
    }

    /// Merges metadata into an instance's; `false` for an unknown instance.
    pub fn merge_metadata(
        &mut self,
        app: &str,
        id: &str,
        entries: &BTreeMap<String, String>,
        now: i64,
    ) -> bool {
        let Some(lease) = self.lease_mut(app, id) else {
            return false;
        };
        for (k, v) in entries {
            lease.instance.metadata.insert(k.clone(), v.clone());
        }
        lease.instance.last_updated_ts = now;
        lease.instance.last_dirty_ts = now.max(lease.instance.last_dirty_ts + 1);
        lease.touch();
        let snapshot = lease.instance.clone();
        self.record(now, snapshot, ActionType::Modified);
        true
    }

    /// Renewals expected per window from the leases held: each instance renews
    /// `window / interval` times.
    fn expected_renewals(&self) -> f64 {
        let window = self.rules.renewal_window_ms as f64;
        self.apps
            .values()
            .flat_map(BTreeMap::values)
            .map(|l| window / (f64::from(l.instance.lease.renewal_interval_secs.max(1)) * 1000.0))
            .sum()
    }

    pub fn preservation(&mut self, now: i64) -> Preservation {
        self.renewals.roll(now, self.rules.renewal_window_ms);
        let threshold = (self.expected_renewals() * self.rules.renewal_percent_threshold) as u64;
        let renewals = self.renewals.last;
        let expiring = !self.rules.self_preservation || (threshold > 0 && renewals > threshold);
        Preservation {
            enabled: self.rules.self_preservation,
            renewals_last_window: renewals,
            threshold,
            active: self.rules.self_preservation && !expiring && self.size > 0,
        }
    }

    /// Cancels expired leases, unless self-preservation holds them; at most
    /// `size − int(size × threshold)` per run, chosen at random, so one run cannot empty
    /// the registry. Returns the evicted instances.
    pub fn evict(&mut self, now: i64, mut pick: impl FnMut(usize) -> usize) -> Vec<Instance> {
        let p = self.preservation(now);
        if p.enabled && (p.threshold == 0 || p.renewals_last_window <= p.threshold) {
            return Vec::new();
        }
        let mut expired: Vec<(String, String)> = self
            .apps
            .iter()
            .flat_map(|(app, leases)| {
                leases
                    .iter()
                    .filter(|(_, l)| l.expires_at() < now)
                    .map(|(id, _)| (app.clone(), id.clone()))
            })
            .collect();
        let keep = (self.size as f64 * self.rules.renewal_percent_threshold) as usize;
        let limit = self.size - keep.min(self.size);
        let limit = if self.rules.self_preservation {
            limit
        } else {
            expired.len()
        };
        let mut evicted = Vec::new();
        while evicted.len() < limit && !expired.is_empty() {
            let (app, id) = expired.swap_remove(pick(expired.len()));
            if let Some(lease) = self.lease(&app, &id) {
                let mut gone = lease.listed();
                gone.lease.eviction_ts = now;
                evicted.push(gone);
            }
            self.cancel(&app, &id, now);
        }
        evicted
    }

    /// Drops changes older than the delta retention.
    pub fn purge_recent(&mut self, now: i64) {
        let oldest = now - self.rules.delta_retention_ms;
        let before = self.recent.len();
        while self.recent.front().is_some_and(|c| c.at < oldest) {
            self.recent.pop_front();
        }
        if self.recent.len() != before {
            self.delta_generation += 1;
        }
    }

    pub fn hashcode(&self) -> String {
        hashcode(
            self.apps
                .values()
                .flat_map(BTreeMap::values)
                .map(|l| l.instance.status),
        )
    }

    /// Everything, applications by name and instances by id.
    pub fn full(&self) -> Applications {
        Applications {
            versions_delta: self.generation.to_string(),
            hashcode: self.hashcode(),
            applications: self
                .apps
                .iter()
                .map(|(name, leases)| Application {
                    name: name.clone(),
                    instances: leases.values().map(Lease::listed).collect(),
                })
                .collect(),
        }
    }

    /// The whole registry for a listing in `format`: instances written less than `max_age`
    /// ago are shared, the others copied to be written outside the lock, so lease times in
    /// listings are at most that old (as in Eureka's cached listings). Each instance's age
    /// limit is shortened by up to half, by its id, so they are not all written again at
    /// once.
    pub fn full_snapshot(&self, format: Format, now: i64, max_age: i64) -> FullSnapshot {
        let limit = |id: &str| {
            let spread = id
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            max_age - i64::try_from(spread % (max_age.max(2) as u64 / 2)).unwrap_or(0)
        };
        let mut expires_at = i64::MAX;
        let snapshot = FullSnapshot {
            generation: self.generation,
            expires_at: 0,
            hashcode: self.hashcode(),
            applications: self
                .apps
                .iter()
                .map(|(name, leases)| {
                    let pieces = leases
                        .iter()
                        .map(|(id, lease)| {
                            let limit = limit(id);
                            let piece = match &lease.rendered[format as usize] {
                                Some((bytes, at)) if now - at < limit => {
                                    expires_at = expires_at.min(at + limit);
                                    Piece::Rendered(bytes.clone())
                                }
                                _ => {
                                    expires_at = expires_at.min(now + limit);
                                    Piece::ToRender {
                                        instance: Box::new(lease.listed()),
                                        revision: lease.revision,
                                    }
                                }
                            };
                            (id.clone(), piece)
                        })
                        .collect();
                    (name.clone(), pieces)
                })
                .collect(),
        };
        FullSnapshot {
            expires_at: if expires_at == i64::MAX {
                now + max_age
            } else {
                expires_at
            },
            ..snapshot
        }
    }

    /// Keeps instances written for a listing, unless they changed meanwhile.
    pub fn keep_rendered(
        &mut self,
        format: Format,
        rendered: Vec<(String, String, u64, Bytes)>,
        now: i64,
    ) {
        for (app, id, revision, bytes) in rendered {
            if let Some(lease) = self.lease_mut(&app, &id)
                && lease.revision == revision
            {
                lease.rendered[format as usize] = Some((bytes, now));
            }
        }
    }

    /// What changed in the delta retention, each instance once as it last changed, with
    /// the hash code of the whole registry.
    pub fn delta(&self) -> Applications {
        let mut latest: BTreeMap<(&str, &str), &Instance> = BTreeMap::new();
        for change in &self.recent {
            latest.insert(
                (&change.instance.app, &change.instance.instance_id),
                &change.instance,
            );
        }
        let mut apps: BTreeMap<&str, Vec<Instance>> = BTreeMap::new();
        for ((app, id), changed) in latest {
            // A live instance is listed with its current lease times.
            let listed = match (changed.action_type, self.lease(app, id)) {
                (Some(ActionType::Deleted), _) | (_, None) => changed.clone(),
                (action, Some(lease)) => {
                    let mut i = lease.listed();
                    i.action_type = action;
                    i
                }
            };
            apps.entry(app).or_default().push(listed);
        }
        Applications {
            versions_delta: self.generation.to_string(),
            hashcode: self.hashcode(),
            applications: apps
                .into_iter()
                .map(|(name, instances)| Application {
                    name: name.to_owned(),
                    instances,
                })
                .collect(),
        }
    }

    pub fn application(&self, app: &str) -> Option<Application> {
        self.apps.get(app).map(|leases| Application {
            name: app.to_owned(),
            instances: leases.values().map(Lease::listed).collect(),
        })
    }

    /// Every instance with this id, whatever its application.
    pub fn by_id(&self, id: &str) -> Option<Instance> {
        self.apps
            .values()
            .find_map(|leases| leases.get(id))
            .map(Lease::listed)
    }

    /// Instances whose (secure) VIP address lists `vip`, grouped by application.
    pub fn by_vip(&self, vip: &str, secure: bool) -> Applications {
        let applications = self
            .apps
            .iter()
            .filter_map(|(name, leases)| {
                let instances: Vec<Instance> = leases
                    .values()
                    .filter(|l| {
                        let addr = if secure {
                            &l.instance.secure_vip_address
                        } else {
                            &l.instance.vip_address
                        };
                        addr.as_deref().is_some_and(|a| {
                            a.split(',').any(|v| v.trim().eq_ignore_ascii_case(vip))
                        })
                    })
                    .map(Lease::listed)
                    .collect();
                (!instances.is_empty()).then(|| Application {
                    name: name.clone(),
                    instances,
                })
            })
            .collect();
        Applications {
            versions_delta: self.generation.to_string(),
            hashcode: self.hashcode(),
            applications,
        }
    }

    /// Instance counts by status, for metrics.
    pub fn counts(&self) -> BTreeMap<Status, usize> {
        let mut counts: BTreeMap<Status, usize> = Status::ALL.into_iter().map(|s| (s, 0)).collect();
        for lease in self.apps.values().flat_map(BTreeMap::values) {
            *counts.entry(lease.instance.status).or_default() += 1;
        }
        counts
    }

    pub fn application_count(&self) -> usize {
        self.apps.len()
    }

    /// Every lease, for the dashboard.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.apps.values().flat_map(BTreeMap::values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn instance(app: &str, id: &str) -> Instance {
        let mut i = Instance::new(app, id, "h", "10.0.0.1", 8080);
        i.last_dirty_ts = 1;
        i
    }

    fn registry_with(n: usize, rules: Rules) -> Registry {
        let mut r = Registry::new(rules);
        for k in 0..n {
            r.register(instance("SVC", &format!("i{k}")), 1_000);
        }
        r
    }

    /// Every instance renews every 30 s from `from` to `to`.
    fn renew_all(r: &mut Registry, ids: &[String], from: i64, to: i64) {
        let mut t = from;
        while t <= to {
            for id in ids {
                assert_eq!(r.renew("SVC", id, None, None, false, t), Renewal::Renewed);
            }
            t += 30_000;
        }
    }

    #[test]
    fn an_override_holds_through_heartbeats_until_removed() {
        let mut r = registry_with(1, Rules::default());
        assert!(r.set_override("SVC", "i0", Status::OutOfService, 2_000));
        r.renew("SVC", "i0", None, None, false, 3_000);
        let lease = r.lease("SVC", "i0").unwrap();
        assert_eq!(lease.instance.status, Status::OutOfService);
        assert_eq!(lease.instance.overridden_status, Status::OutOfService);
        // A re-registration saying UP keeps the override.
        r.register(instance("SVC", "i0"), 4_000);
        assert_eq!(
            r.lease("SVC", "i0").unwrap().instance.status,
            Status::OutOfService
        );
        assert!(r.remove_override("SVC", "i0", None, 5_000));
        assert_eq!(r.lease("SVC", "i0").unwrap().instance.status, Status::Up);
        assert!(!r.set_override("SVC", "nobody", Status::Down, 6_000));
    }

    #[test]
    fn the_instance_own_down_beats_an_override() {
        let mut r = registry_with(1, Rules::default());
        r.set_override("SVC", "i0", Status::Up, 2_000);
        let mut down = instance("SVC", "i0");
        down.status = Status::Down;
        down.last_dirty_ts = 3;
        r.register(down, 3_000);
        assert_eq!(r.lease("SVC", "i0").unwrap().instance.status, Status::Down);
    }

    #[test]
    fn renewals_answer_not_found_for_unknown_or_newer_data() {
        let mut r = registry_with(1, Rules::default());
        assert_eq!(
            r.renew("SVC", "ghost", None, None, false, 2_000),
            Renewal::NotFound
        );
        assert_eq!(
            r.renew("SVC", "i0", Some(99), None, false, 2_000),
            Renewal::NotFound,
            "the client holds newer data: it must register it"
        );
        assert_eq!(
            r.renew("SVC", "i0", Some(0), None, false, 2_000),
            Renewal::Renewed
        );
        assert!(matches!(
            r.renew("SVC", "i0", Some(0), None, true, 2_000),
            Renewal::Conflict(_)
        ));
    }

    #[test]
    fn a_late_peer_heartbeat_does_not_undo_an_override() {
        let mut r = registry_with(1, Rules::default());
        r.set_override("SVC", "i0", Status::OutOfService, 2_000);
        // Sent by a peer before it learnt of the override.
        let dirty = r.lease("SVC", "i0").unwrap().instance.last_dirty_ts;
        r.renew("SVC", "i0", Some(dirty), Some(Status::Unknown), true, 3_000);
        assert_eq!(
            r.lease("SVC", "i0").unwrap().instance.status,
            Status::OutOfService
        );
    }

    #[test]
    fn a_registration_without_a_dirty_time_replaces_the_old_one() {
        let mut r = registry_with(1, Rules::default());
        let mut moved = instance("SVC", "i0");
        moved.last_dirty_ts = 0;
        moved.port = 9999;
        r.register(moved, 5_000);
        assert_eq!(r.lease("SVC", "i0").unwrap().instance.port, 9999);
    }

    #[test]
    fn written_instances_are_reused_until_they_change_or_grow_old() {
        let mut r = registry_with(2, Rules::default());
        let to_render = |r: &Registry, now: i64| -> Vec<String> {
            r.full_snapshot(Format::Json, now, 1_000).applications[0]
                .1
                .iter()
                .filter(|(_, p)| matches!(p, Piece::ToRender { .. }))
                .map(|(id, _)| id.clone())
                .collect()
        };
        assert_eq!(to_render(&r, 0), vec!["i0", "i1"]);
        let revision = |r: &Registry, id: &str| r.lease("SVC", id).unwrap().revision;
        let written = vec![
            (
                "SVC".into(),
                "i0".into(),
                revision(&r, "i0"),
                Bytes::from_static(b"{}"),
            ),
            (
                "SVC".into(),
                "i1".into(),
                revision(&r, "i1"),
                Bytes::from_static(b"{}"),
            ),
        ];
        r.keep_rendered(Format::Json, written, 10_000);
        assert!(to_render(&r, 10_000).is_empty());
        let snapshot = r.full_snapshot(Format::Json, 10_000, 1_000);
        assert!(
            (10_500..=11_000).contains(&snapshot.expires_at),
            "the listing lasts as long as its oldest instance: {}",
            snapshot.expires_at
        );
        r.set_override("SVC", "i1", Status::OutOfService, 11_000);
        assert_eq!(to_render(&r, 10_000), vec!["i1"], "changed");
        assert_eq!(to_render(&r, 11_001), vec!["i0", "i1"], "grown old");
        // A rendering of an older revision is not kept.
        r.keep_rendered(
            Format::Json,
            vec![("SVC".into(), "i1".into(), 0, Bytes::from_static(b"{}"))],
            12_000,
        );
        assert_eq!(to_render(&r, 10_000), vec!["i1"]);
    }

    #[test]
    fn an_older_registration_does_not_roll_back_a_newer_one() {
        let mut r = Registry::new(Rules::default());
        let mut newer = instance("SVC", "a");
        newer.last_dirty_ts = 200;
        newer.metadata.insert("v".into(), "2".into());
        r.register(newer, 1_000);
        let mut older = instance("SVC", "a");
        older.last_dirty_ts = 100;
        older.metadata.insert("v".into(), "1".into());
        r.register(older, 2_000);
        assert_eq!(r.lease("SVC", "a").unwrap().instance.metadata["v"], "2");
    }

    #[test]
    fn expired_leases_are_evicted_a_few_at_a_time() {
        let rules = Rules {
            self_preservation: false,
            ..Rules::default()
        };
        let mut r = registry_with(10, rules);
        assert!(r.evict(50_000, |_| 0).is_empty(), "not expired yet");
        let evicted = r.evict(100_000, |_| 0);
        assert_eq!(evicted.len(), 10, "self-preservation off: all expired go");
        assert!(evicted.iter().all(|i| i.lease.eviction_ts == 100_000));
        assert!(r.is_empty());
    }

    #[test]
    fn self_preservation_holds_the_registry_through_a_network_split() {
        let mut r = registry_with(20, Rules::default());
        let ids: Vec<String> = (0..20).map(|k| format!("i{k}")).collect();
        // Everyone renews for three minutes: leases expire normally after that.
        renew_all(&mut r, &ids, 1_000, 3 * MIN);
        let p = r.preservation(3 * MIN + 1_000);
        assert_eq!(p.threshold, 34, "20 clients × 2/min × 0.85");
        assert!(p.renewals_last_window >= 40);
        assert!(!p.active);
        // One instance stops renewing: it is evicted once its lease ends.
        renew_all(&mut r, &ids[1..], 3 * MIN + 30_000, 5 * MIN);
        let evicted = r.evict(5 * MIN + 1_000, |_| 0);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].instance_id, "i0");
        // A split: all but two stop renewing. The last minute's renewals fall under the
        // threshold and nothing expires, however long it lasts.
        renew_all(&mut r, &ids[1..3], 5 * MIN + 30_000, 10 * MIN);
        let p = r.preservation(10 * MIN);
        assert!(p.active, "{p:?}");
        assert!(r.evict(10 * MIN, |_| 0).is_empty());
        assert_eq!(r.len(), 19);
        // The split heals: renewals come back and expiry resumes.
        renew_all(&mut r, &ids[1..], 10 * MIN + 30_000, 12 * MIN);
        assert!(!r.preservation(12 * MIN + 1).active);
    }

    #[test]
    fn eviction_takes_at_most_fifteen_percent_per_run() {
        let mut r = registry_with(100, Rules::default());
        let ids: Vec<String> = (0..100).map(|k| format!("i{k}")).collect();
        renew_all(&mut r, &ids, 1_000, 2 * MIN);
        // 30 stop renewing; the other 70 renew twice as often, so renewals stay above
        // the threshold (170 a minute) and expiry is on.
        let mut t = 2 * MIN + 15_000;
        while t <= 5 * MIN {
            for id in &ids[30..] {
                r.renew("SVC", id, None, None, false, t);
            }
            t += 15_000;
        }
        let evicted = r.evict(5 * MIN + 1, |n| n - 1);
        assert_eq!(evicted.len(), 15, "100 − int(100 × 0.85)");
        assert!(evicted.iter().all(|i| ids[..30].contains(&i.instance_id)));
        assert_eq!(r.len(), 85);
    }

    #[test]
    fn the_delta_lists_each_change_once_with_the_whole_registry_hash() {
        let mut r = registry_with(3, Rules::default());
        r.purge_recent(1_000 + 180_001);
        assert!(r.delta().applications.is_empty());
        r.set_override("SVC", "i1", Status::OutOfService, 200_000);
        r.cancel("SVC", "i2", 200_001);
        r.register(instance("OTHER", "o1"), 200_002);
        let delta = r.delta();
        assert_eq!(delta.hashcode, "OUT_OF_SERVICE_1_UP_2_");
        let actions: Vec<(String, Option<ActionType>)> = delta
            .applications
            .iter()
            .flat_map(|a| a.instances.iter())
            .map(|i| (i.instance_id.clone(), i.action_type))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("o1".into(), Some(ActionType::Added)),
                ("i1".into(), Some(ActionType::Modified)),
                ("i2".into(), Some(ActionType::Deleted)),
            ]
        );
        assert_eq!(r.full().hashcode, delta.hashcode);
    }

    #[test]
    fn the_renewal_rate_forgets_a_silent_window() {
        let mut rate = MeasuredRate::default();
        rate.roll(0, 1000);
        rate.current = 10;
        rate.roll(1500, 1000);
        assert_eq!(rate.last, 10);
        rate.current = 7;
        rate.roll(5000, 1000);
        assert_eq!(rate.last, 0, "more than a window passed without a roll");
    }
}
