//! The gateway's workers and which of them serve the connections.
//!
//! Connections are packed onto as few workers as carry the load, and spread over more as
//! soon as one of those is busy. At a moderate load, two workers each sleeping and waking
//! for half of the requests cost more CPU per request than one worker serving them all
//! (it finds several requests ready per wake-up), and wake a second core for nothing:
//! measured at 14,000 req/s over 8 connections, 31.8 µs of CPU per request on one worker
//! against 39.6 µs spread over two (BENCHMARKS.md). nginx's workers end up packed this way
//! by accident (the one awake takes the next connection); here it is decided from what
//! each worker is measured to do, so a busy worker never keeps its connections to itself.
//!
//! A coordinator ([`balance`]) looks every [`TICK`] at each worker's figures from the
//! kernel's scheduler statistics and at how many of its connections made a request. A
//! worker is *saturated* when it hardly ever sleeps: it runs, or has work and waits for a
//! CPU. Waiting counts: a worker held to a CPU that other processes keep busy is served
//! sooner by a second worker on the other CPU (measured with 32 connections at saturation
//! on 2 CPUs shared with the load generator and the backend: one worker ran 65 % of the
//! time and waited 30 %, and two workers answered 20 % more requests). The *work* a worker
//! does is its time on a CPU. It decides how many workers are *active*: only
//! those listen for new connections; the others hand theirs over. Connections move only
//! between two requests, with nothing read ahead, so a move never touches a request in
//! flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::affinity::Cpus;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// A connection handed from one worker to another.
pub type Handed = (std::net::TcpStream, SocketAddr);
/// Connections handed to a worker.
pub type Inbox = UnboundedReceiver<Handed>;

/// How often the coordinator looks.
pub const TICK: Duration = Duration::from_millis(50);
/// An active worker awake (running or waiting for a CPU) for more than this share of one
/// tick brings in another: it is saturated.
const GROW_ABOVE: f64 = 0.98;
/// Or more than this on average over [`FAST`] (a burst above a moderate load reads high
/// for a tick, and does not count). Measured on 2 CPUs: one worker at saturation is awake
/// 0.95 of the time, at 40 % of that rate 0.65.
const GROW_ABOVE_FAST: f64 = 0.9;
/// The time a worker's demand is averaged over for [`GROW_ABOVE_FAST`].
const FAST: Duration = Duration::from_millis(100);
/// When growing, enough workers for each to be busy about this much.
const GROW_TO: f64 = 0.6;
/// One worker fewer when the work of all of them (CPU time, averaged over [`SLOW`]) would
/// keep the remaining ones below this share of a CPU each. Spread work costs more CPU
/// than packed, so what moves weighs less where it lands.
const SHRINK_BELOW: f64 = 0.7;
/// The time the work that shrinks is averaged over.
const SLOW: Duration = Duration::from_secs(1);
/// No shrinking sooner than this after a change (a burst's lull is not the end of load).
const HOLD: Duration = Duration::from_secs(2);
/// A shrink undone within this doubles the hold before the next one (up to [`MAX_HOLD`]):
/// a load that sits on the threshold does not make the workers flap.
const FLAP: Duration = Duration::from_secs(10);
const MAX_HOLD: Duration = Duration::from_secs(120);

/// What the workers know of each other.
pub struct Workers {
    slots: Vec<Slot>,
    /// The first `active` workers take new connections.
    active: AtomicUsize,
}

/// One worker's figures. Aligned so that one worker's writes do not evict another's line.
#[repr(align(128))]
struct Slot {
    /// Connections it serves.
    open: AtomicUsize,
    /// Its connections that made a request since the coordinator's last look.
    busy: AtomicUsize,
    /// Moved on at each look: a connection counts itself in `busy` once per epoch.
    epoch: AtomicU32,
    /// Connections to move to `shed_to` at their next request boundary.
    shed: AtomicUsize,
    shed_to: AtomicUsize,
    /// Connections it moved away since the last look.
    moved: AtomicUsize,
    /// Its kernel thread id (0 until the worker has started).
    tid: AtomicI32,
    /// Told when `active` changes, so an idle worker stops or starts listening.
    changed: Notify,
    inbox: UnboundedSender<Handed>,
}

impl Workers {
    pub fn new(n: usize) -> (Arc<Workers>, Vec<Inbox>) {
        let (slots, receivers) = (0..n.max(1))
            .map(|_| {
                let (inbox, receiver) = tokio::sync::mpsc::unbounded_channel();
                let slot = Slot {
                    open: AtomicUsize::new(0),
                    busy: AtomicUsize::new(0),
                    epoch: AtomicU32::new(0),
                    shed: AtomicUsize::new(0),
                    shed_to: AtomicUsize::new(0),
                    moved: AtomicUsize::new(0),
                    tid: AtomicI32::new(0),
                    changed: Notify::new(),
                    inbox,
                };
                (slot, receiver)
            })
            .unzip();
        // All active until the coordinator has measured: serving never waits on it.
        let active = AtomicUsize::new(n.max(1));
        (Arc::new(Workers { slots, active }), receivers)
    }

    pub fn count(&self) -> usize {
        self.slots.len()
    }

    pub fn is_active(&self, me: usize) -> bool {
        me < self.active.load(Ordering::Relaxed)
    }

    /// Waits until the set of active workers changes.
    pub async fn changed(&self, me: usize) {
        self.slots[me].changed.notified().await
    }

    /// Called by worker `me`'s thread when it starts: the coordinator reads its scheduler
    /// statistics by this id.
    pub fn started(&self, me: usize) {
        #[cfg(target_os = "linux")]
        // SAFETY: gettid has no preconditions.
        self.slots[me]
            .tid
            .store(unsafe { libc::gettid() }, Ordering::Relaxed);
        #[cfg(not(target_os = "linux"))]
        let _ = me;
    }

    pub fn opened(&self, me: usize) {
        self.slots[me].open.fetch_add(1, Ordering::Relaxed);
    }

    /// True when that was the worker's last connection.
    pub fn closed(&self, me: usize) -> bool {
        self.slots[me].open.fetch_sub(1, Ordering::Relaxed) == 1
    }

    pub fn open(&self, me: usize) -> usize {
        self.slots[me].open.load(Ordering::Relaxed)
    }

    /// `stream` back when worker `me`, which accepted it, should serve it; None when it
    /// went to the active worker serving fewest connections.
    pub fn place(&self, me: usize, stream: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        let active = self.active.load(Ordering::Relaxed).min(self.count());
        let mine = (me < active).then(|| self.open(me));
        let Some((least, _)) = (0..active)
            .filter(|&i| i != me)
            .map(|i| (i, self.open(i)))
            .filter(|&(_, n)| mine.is_none_or(|mine| n < mine))
            .min_by_key(|&(_, n)| n)
        else {
            return Some(stream);
        };
        self.send(least, stream, peer)
    }

    /// Called after each request a connection of worker `me` served (`seen`: the
    /// connection's own note of the epoch it last counted itself in; `movable`: nothing
    /// read ahead). True when this connection should now move to another worker.
    pub fn served(&self, me: usize, seen: &mut u32, movable: bool) -> bool {
        let slot = &self.slots[me];
        let epoch = slot.epoch.load(Ordering::Relaxed);
        if *seen != epoch {
            *seen = epoch;
            slot.busy.fetch_add(1, Ordering::Relaxed);
        }
        movable
            && slot.shed.load(Ordering::Relaxed) > 0
            && slot
                .shed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }

    /// Moves a connection of worker `me` to where its sheds go; `stream` back if it
    /// cannot go.
    pub fn shed(&self, me: usize, stream: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        let to = self.slots[me].shed_to.load(Ordering::Relaxed);
        if to == me || to >= self.count() {
            return Some(stream);
        }
        let kept = self.send(to, stream, peer);
        if kept.is_none() {
            self.slots[me].moved.fetch_add(1, Ordering::Relaxed);
            crate::metrics::connection_moved();
        }
        kept
    }

    fn send(&self, to: usize, stream: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        // Leaving this worker's reactor: the receiving one registers it with its own.
        let Ok(std) = stream.into_std() else {
            return None;
        };
        match self.slots[to].inbox.send((std, peer)) {
            Ok(()) => None,
            // That worker has stopped: served here after all.
            Err(returned) => TcpStream::from_std(returned.0.0).ok(),
        }
    }

    /// Applies a plan: who is active, who sheds how many connections to whom.
    fn apply(&self, plan: &Plan) {
        let before = self.active.swap(plan.active, Ordering::Relaxed);
        for (slot, &(count, to)) in self.slots.iter().zip(&plan.shed) {
            slot.shed_to.store(to, Ordering::Relaxed);
            slot.shed.store(count, Ordering::Relaxed);
        }
        if before != plan.active {
            for slot in &self.slots {
                slot.changed.notify_one();
            }
        }
    }
}

/// What the coordinator saw of one worker over the last tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seen {
    /// Share of the tick it was awake: on a CPU or waiting for one (1.0: it never slept);
    /// None when the kernel does not tell, taken as saturated.
    pub demand: Option<f64>,
    /// Its time on a CPU, as a share of the tick (None: unknown, taken as 1.0).
    pub work: Option<f64>,
    /// Connections that made a request.
    pub busy: usize,
    /// Connections open.
    pub open: usize,
    /// Connections it moved away.
    pub moved: usize,
}

/// How many workers are active and, per worker, how many connections it sheds to whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub active: usize,
    pub shed: Vec<(usize, usize)>,
}

/// The coordinator's decisions, apart from what it measures (so they can be tested).
#[derive(Debug)]
pub struct Packer {
    n: usize,
    active: usize,
    /// Each worker's work averaged over [`SLOW`].
    slow: Vec<f64>,
    /// Each worker's busy share averaged over [`FAST`].
    fast: Vec<f64>,
    since_change: Duration,
    hold: Duration,
    /// Time since the last shrink (None: none yet).
    since_shrink: Option<Duration>,
}

impl Packer {
    /// Starts with one worker active: a new gateway is idle, and a load spreads within a tick.
    pub fn new(n: usize) -> Packer {
        Packer {
            n: n.max(1),
            active: 1,
            slow: vec![0.0; n.max(1)],
            fast: vec![0.0; n.max(1)],
            since_change: Duration::ZERO,
            hold: HOLD,
            since_shrink: None,
        }
    }

    pub fn active(&self) -> usize {
        self.active
    }

    /// Decides from one tick's figures, `dt` after the last. With `pack` off, every worker
    /// is active and nothing moves (connections are placed by count, as before).
    pub fn step(&mut self, seen: &[Seen], dt: Duration, pack: bool) -> Plan {
        let n = self.n;
        let demand = |i: usize| seen.get(i).and_then(|s| s.demand).unwrap_or(1.0);
        let work = |i: usize| seen.get(i).and_then(|s| s.work).unwrap_or(1.0);
        let alpha = |over: Duration| (dt.as_secs_f64() / over.as_secs_f64()).clamp(0.0, 1.0);
        let (a_slow, a_fast) = (alpha(SLOW), alpha(FAST));
        for (i, (slow, fast)) in self.slow.iter_mut().zip(&mut self.fast).enumerate() {
            *slow += (work(i) - *slow) * a_slow;
            *fast += (demand(i) - *fast) * a_fast;
        }
        self.since_change += dt;
        if let Some(t) = &mut self.since_shrink {
            *t += dt;
        }
        if !pack || n == 1 {
            self.active = n;
            return Plan {
                active: n,
                shed: vec![(0, 0); n],
            };
        }
        // Connections moved in the last tick were counted by both workers: wait a tick
        // before judging how they are spread.
        let settling = seen.iter().any(|s| s.moved > 0);
        let saturated = |i: usize| demand(i) > GROW_ABOVE || self.fast[i] > GROW_ABOVE_FAST;
        if (0..self.active).any(saturated) && self.active < n && !settling {
            let total: f64 = (0..self.active).map(demand).sum();
            let needed = (total / GROW_TO).ceil() as usize;
            self.active = needed.clamp(self.active + 1, n);
            self.since_change = Duration::ZERO;
            if self.since_shrink.is_some_and(|t| t < FLAP) {
                self.hold = (self.hold * 2).min(MAX_HOLD);
            }
        } else if self.active > 1
            && self.since_change >= self.hold
            && self.slow.iter().sum::<f64>() < SHRINK_BELOW * (self.active - 1) as f64
        {
            self.active -= 1;
            self.since_change = Duration::ZERO;
            if self.since_shrink.is_some_and(|t| t > MAX_HOLD) {
                // Calm for long enough: back to the short hold.
                self.hold = HOLD;
            }
            self.since_shrink = Some(Duration::ZERO);
        }
        let active = self.active;
        let busy = |i: usize| seen.get(i).map_or(0, |s| s.busy);
        // Where sheds go: the active worker with the fewest connections making requests.
        let coolest = (0..active).min_by_key(|&i| busy(i)).unwrap_or(0);
        let mut shed = vec![(0, 0); n];
        for (i, slot) in shed.iter_mut().enumerate().skip(active) {
            // Not active: every connection goes at its next request.
            *slot = (seen.get(i).map_or(0, |s| s.open), coolest);
        }
        if active > 1 && !settling {
            let sum: usize = (0..active).map(busy).sum();
            let fair = sum.div_ceil(active);
            for (i, slot) in shed.iter_mut().enumerate().take(active) {
                let excess = busy(i).saturating_sub(fair);
                // A difference of one is as even as it gets.
                if excess > 0 && busy(i) - busy(coolest) >= 2 {
                    *slot = (excess, coolest);
                }
            }
        }
        Plan { active, shed }
    }
}

/// Reads each worker's figures, decides, and applies, every [`TICK`] until `shutdown`.
/// `pack` says whether packing is on now (a setting that can change while running).
pub async fn balance(
    workers: Arc<Workers>,
    cpus: Cpus,
    pack: impl Fn() -> bool,
    shutdown: CancellationToken,
) {
    let n = workers.count();
    if n < 2 {
        return;
    }
    let mut packer = Packer::new(n);
    let mut clocks: Vec<Clock> = (0..n).map(|_| Clock::default()).collect();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    // Whether the workers are held to a CPU each (None: not set yet).
    let mut pinned = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        let dt = now.duration_since(last);
        last = now;
        let mut ready = true;
        let seen: Vec<Seen> = workers
            .slots
            .iter()
            .zip(&mut clocks)
            .map(|(slot, clock)| {
                let busy = slot.busy.swap(0, Ordering::Relaxed);
                slot.epoch.fetch_add(1, Ordering::Relaxed);
                let (demand, work) = match clock.read(slot.tid.load(Ordering::Relaxed), dt) {
                    Reading::Known(share, work) => (Some(share), Some(work)),
                    Reading::Unavailable => (None, None),
                    Reading::NotYet => {
                        ready = false;
                        (None, None)
                    }
                };
                Seen {
                    demand,
                    work,
                    busy,
                    open: slot.open.load(Ordering::Relaxed),
                    moved: slot.moved.swap(0, Ordering::Relaxed),
                }
            })
            .collect();
        if !ready {
            continue;
        }
        let before = packer.active();
        let plan = packer.step(&seen, dt, pack());
        if plan.active != before {
            tracing::debug!(
                active = plan.active,
                ?seen,
                "gateway workers active changed"
            );
        }
        workers.apply(&plan);
        crate::metrics::workers_active(plan.active);
        let pin = cpus.can_pin(n) && plan.active == n;
        if pinned != Some(pin) {
            for (i, slot) in workers.slots.iter().enumerate() {
                if !cpus.place(slot.tid.load(Ordering::Relaxed), i, pin) {
                    tracing::debug!(worker = i, pin, "could not set the worker's CPUs");
                }
            }
            pinned = Some(pin);
        }
    }
}

/// What a worker's scheduler statistics said.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    /// Not started, or the first reading: nothing to compare with.
    NotYet,
    /// The kernel does not tell.
    Unavailable,
    /// Demand and work (see [`Seen`]).
    Known(f64, f64),
}

/// One worker's scheduler statistics, read again at each tick.
#[derive(Default)]
struct Clock {
    file: Option<std::fs::File>,
    /// Nanoseconds on a CPU and waiting for one, at the last reading.
    last: Option<(u64, u64)>,
}

impl Clock {
    /// Since the last reading, `dt` ago: the share of `dt` the thread was awake (on a CPU
    /// or waiting for one), and its time on a CPU as a share of `dt`.
    fn read(&mut self, tid: i32, dt: Duration) -> Reading {
        if tid == 0 {
            return Reading::NotYet;
        }
        let Some(now) = self.figures(tid) else {
            return Reading::Unavailable;
        };
        let Some((on, waited)) = self.last.replace(now) else {
            return Reading::NotYet;
        };
        let dt = dt.as_nanos().max(1) as f64;
        let on = now.0.saturating_sub(on) as f64;
        let waited = now.1.saturating_sub(waited) as f64;
        // The coordinator's clock and the kernel's accounting differ by a little.
        Reading::Known(((on + waited) / dt).clamp(0.0, 1.0), on / dt)
    }

    fn figures(&mut self, tid: i32) -> Option<(u64, u64)> {
        if tid == 0 {
            return None;
        }
        if self.file.is_none() {
            self.file = std::fs::File::open(format!("/proc/self/task/{tid}/schedstat")).ok();
        }
        let file = self.file.as_ref()?;
        let mut buf = [0u8; 96];
        // Read from the start each time: the kernel writes the figures afresh.
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, 0).ok()?;
        parse_schedstat(&buf[..n])
    }
}

/// `/proc/<pid>/task/<tid>/schedstat`: nanoseconds on a CPU, nanoseconds waiting for one,
/// time slices.
fn parse_schedstat(text: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let on: u64 = fields.next()?.parse().ok()?;
    let waiting: u64 = fields.next()?.parse().ok()?;
    Some((on, waiting))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker busy `share` of the time, its work the same share of a CPU.
    fn seen(share: f64, busy: usize, open: usize) -> Seen {
        Seen {
            demand: Some(share),
            work: Some(share),
            busy,
            open,
            moved: 0,
        }
    }

    const DT: Duration = TICK;

    #[test]
    fn a_light_load_stays_on_one_worker_and_a_heavy_one_spreads_at_once() {
        let mut p = Packer::new(2);
        // Eight connections on worker 0, half a CPU: nothing changes.
        for _ in 0..100 {
            let plan = p.step(&[seen(0.5, 8, 8), seen(0.0, 0, 0)], DT, true);
            assert_eq!(plan.active, 1);
            assert_eq!(plan.shed, vec![(0, 0), (0, 0)]);
        }
        // Saturated: a second worker comes in at the next look, and takes half.
        let plan = p.step(&[seen(1.0, 32, 32), seen(0.0, 0, 0)], DT, true);
        assert_eq!(plan.active, 2);
        assert_eq!(plan.shed, vec![(16, 1), (0, 0)]);
        // While the moves settle, nothing more is asked.
        let mut moving = [seen(1.0, 32, 16), seen(0.5, 16, 16)];
        moving[0].moved = 16;
        assert_eq!(p.step(&moving, DT, true).shed, vec![(0, 0), (0, 0)]);
        // Spread evenly: it stays so under load.
        for _ in 0..100 {
            let plan = p.step(&[seen(1.0, 16, 16), seen(1.0, 16, 16)], DT, true);
            assert_eq!(plan.active, 2);
            assert_eq!(plan.shed, vec![(0, 0), (0, 0)]);
        }
    }

    #[test]
    fn a_load_that_drops_is_packed_back_after_a_while() {
        let mut p = Packer::new(2);
        p.step(&[seen(1.0, 8, 8), seen(0.0, 0, 0)], DT, true);
        assert_eq!(p.active(), 2);
        // Busy for a few seconds, then light: not at once (the average and the hold).
        for _ in 0..60 {
            p.step(&[seen(0.9, 4, 4), seen(0.9, 4, 4)], DT, true);
        }
        let light = [seen(0.2, 4, 4), seen(0.2, 4, 4)];
        let mut ticks = 0;
        let plan = loop {
            let plan = p.step(&light, DT, true);
            ticks += 1;
            if plan.active == 1 {
                break plan;
            }
            assert!(ticks < 200, "never packed");
        };
        assert!(ticks >= 10, "packed after {ticks} ticks: too soon");
        // Worker 1 hands every connection to worker 0.
        assert_eq!(plan.shed, vec![(0, 0), (4, 0)]);
        // And the packed load (0.4) does not bring the second worker back.
        for _ in 0..100 {
            assert_eq!(
                p.step(&[seen(0.4, 8, 8), seen(0.0, 0, 0)], DT, true).active,
                1
            );
        }
    }

    #[test]
    fn an_uneven_spread_is_evened_by_connections_making_requests() {
        let mut p = Packer::new(3);
        p.step(
            &[seen(1.0, 9, 9), seen(0.0, 0, 0), seen(0.0, 0, 0)],
            DT,
            true,
        );
        assert_eq!(p.active(), 2, "one saturated worker: one more");
        p.step(
            &[seen(1.0, 9, 9), seen(1.0, 0, 0), seen(0.0, 0, 0)],
            DT,
            true,
        );
        assert_eq!(p.active(), 3, "two saturated: a third");
        let plan = p.step(
            &[seen(1.0, 9, 9), seen(0.1, 1, 1), seen(0.1, 2, 2)],
            DT,
            true,
        );
        // 12 making requests over 3: 4 each; worker 0 sheds 5 to the least busy.
        assert_eq!(plan.shed[0], (5, 1));
        // Idle connections are not what counts: 1 busy against 0 is even.
        let plan = p.step(
            &[seen(1.0, 1, 30), seen(0.9, 0, 0), seen(0.9, 1, 1)],
            DT,
            true,
        );
        assert_eq!(plan.shed, vec![(0, 0); 3]);
    }

    #[test]
    fn unknown_demand_counts_as_busy_and_packing_off_keeps_every_worker() {
        let mut p = Packer::new(2);
        let unknown = Seen {
            demand: None,
            work: None,
            ..seen(0.0, 1, 1)
        };
        assert_eq!(p.step(&[unknown, unknown], DT, true).active, 2);
        for _ in 0..200 {
            assert_eq!(p.step(&[unknown, unknown], DT, true).active, 2);
        }
        let mut p = Packer::new(2);
        let plan = p.step(&[seen(0.0, 0, 0), seen(0.0, 0, 0)], DT, false);
        assert_eq!(plan.active, 2);
        assert_eq!(plan.shed, vec![(0, 0), (0, 0)]);
    }

    #[test]
    fn a_burst_above_a_moderate_load_does_not_spread_it_but_a_lasting_one_does() {
        let mut p = Packer::new(2);
        for _ in 0..20 {
            p.step(&[seen(0.7, 8, 8), seen(0.0, 0, 0)], DT, true);
        }
        // One tick at 0.97 after moderate ones: still packed.
        assert_eq!(
            p.step(&[seen(0.97, 8, 8), seen(0.0, 0, 0)], DT, true)
                .active,
            1
        );
        assert_eq!(
            p.step(&[seen(0.7, 8, 8), seen(0.0, 0, 0)], DT, true).active,
            1
        );
        // 0.97 lasting a few ticks: spread.
        let ticks = (0..20)
            .position(|_| {
                p.step(&[seen(0.97, 8, 8), seen(0.0, 0, 0)], DT, true)
                    .active
                    == 2
            })
            .expect("never spread");
        assert!((1..=8).contains(&ticks), "spread after {ticks} more ticks");
    }

    /// As measured at saturation on 2 CPUs shared with the load generator and the backend.
    #[test]
    fn a_worker_that_waits_for_its_cpu_spreads_and_the_spread_load_stays_spread() {
        let waiting = |work: f64, demand: f64, busy: usize| Seen {
            demand: Some(demand),
            work: Some(work),
            ..seen(0.0, busy, busy)
        };
        let mut p = Packer::new(2);
        // Runs 0.65 of the time and waits 0.30: it never idles, though it never runs flat out.
        let ticks = (0..20)
            .position(|_| {
                p.step(&[waiting(0.65, 0.95, 32), seen(0.0, 0, 0)], DT, true)
                    .active
                    == 2
            })
            .expect("never spread");
        assert!(ticks <= 8, "spread after {ticks} ticks");
        // Spread, each runs 0.42 and waits 0.52: 0.84 of work is more than one worker's share.
        for _ in 0..(30_000 / 50) {
            let seen = [waiting(0.42, 0.94, 16), waiting(0.42, 0.94, 16)];
            assert_eq!(p.step(&seen, DT, true).active, 2);
        }
    }

    #[test]
    fn a_load_on_the_threshold_does_not_make_the_workers_flap() {
        let mut p = Packer::new(2);
        let mut changes = 0;
        let mut active = p.active();
        // Packed it saturates; spread it looks light enough to pack: the worst case.
        for _ in 0..(60_000 / 50) {
            let seen = if active == 1 {
                [seen(1.0, 8, 8), seen(0.0, 0, 0)]
            } else {
                [seen(0.3, 4, 4), seen(0.3, 4, 4)]
            };
            let now = p.step(&seen, DT, true).active;
            changes += usize::from(now != active);
            active = now;
        }
        // A minute of it: the hold doubles each time (2, 4, 8, 16, 32 s).
        assert!(changes <= 10, "{changes} changes in a minute");
    }

    #[test]
    fn schedstat_lines_are_read_and_garbage_is_not() {
        assert_eq!(parse_schedstat(b"405072 1000 2\n"), Some((405072, 1000)));
        assert_eq!(parse_schedstat(b"1 x 2"), None);
        assert_eq!(parse_schedstat(b""), None);
        assert_eq!(parse_schedstat(b"18446744073709551616 1 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_spinning_thread_reads_as_busy_and_a_sleeping_one_as_idle() {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let sleep = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tx.send(unsafe { libc::gettid() }).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let tids: Vec<i32> = rx.iter().take(2).collect();
        let mut clocks = [Clock::default(), Clock::default()];
        let mut found = std::collections::HashMap::new();
        let start = Instant::now();
        for (tid, clock) in tids.iter().zip(&mut clocks) {
            assert_eq!(clock.read(*tid, Duration::from_millis(1)), Reading::NotYet);
        }
        std::thread::sleep(Duration::from_millis(300));
        let dt = start.elapsed();
        for (tid, clock) in tids.iter().zip(&mut clocks) {
            let Reading::Known(share, work) = clock.read(*tid, dt) else {
                panic!("no reading for {tid}");
            };
            found.insert(*tid, (share, work));
        }
        stop.store(true, Ordering::Relaxed);
        spin.join().unwrap();
        sleep.join().unwrap();
        // Whichever sent first, one spun and one slept. The spinner never slept, however
        // long it waited for a CPU with the other tests about.
        let mut v: Vec<(f64, f64)> = found.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (idle, busy) = (v[0], v[1]);
        assert!(busy.0 > 0.95, "spinning thread read as busy {busy:?}");
        assert!(busy.1 > 0.0 && busy.1 <= 1.05, "its work {busy:?}");
        assert!(idle.0 < 0.2, "sleeping thread read as busy {idle:?}");
        assert!(idle.1 < 0.2, "its work {idle:?}");
    }

    /// Two spinning threads held to one CPU: each runs about half the time and waits the
    /// rest, and reads as saturated (awake all the time), its work about half a CPU.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_kept_waiting_for_its_cpu_reads_as_saturated() {
        let cpus = Arc::new(Cpus::of_this_thread());
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let (stop, tx, cpus) = (stop.clone(), tx.clone(), cpus.clone());
                std::thread::spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    // Both as worker 0: held to the same CPU.
                    assert!(cpus.place(tid, 0, true), "could not pin a spinner");
                    tx.send(tid).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let tid: i32 = rx.iter().take(2).last().expect("both spinners started");
        let mut clock = Clock::default();
        assert_eq!(clock.read(tid, Duration::from_millis(1)), Reading::NotYet);
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(400));
        let reading = clock.read(tid, start.elapsed());
        stop.store(true, Ordering::Relaxed);
        for s in spinners {
            s.join().unwrap();
        }
        let Reading::Known(demand, work) = reading else {
            panic!("no reading: {reading:?}");
        };
        assert!(demand > 0.95, "a thread that never slept read as {demand}");
        assert!(
            work < 0.75,
            "two threads on one CPU, yet one had {work} of it"
        );
        assert!(work > 0.1, "it ran only {work} of the time");
    }
}
