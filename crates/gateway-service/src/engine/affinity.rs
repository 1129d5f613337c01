//! Which CPUs the workers run on, set by the coordinator ([`super::workers::balance`]) as
//! the number of active workers changes.
//!
//! With every worker active and a worker for every CPU, each stays on a CPU of its own, as
//! nginx's workers stay put: a thread the scheduler moves arrives to cold caches, and
//! measured here the workers moved about a thousand times a second under load. Packed onto
//! fewer workers than CPUs, they may run on any: a worker held to one CPU waits whenever
//! the load generator or the backend runs there, while the scheduler would have woken it on
//! the other, idle one (measured at 29,800 req/s on 2 CPUs, BENCHMARKS.md). Fewer workers
//! than CPUs are never pinned: on the first CPUs they would crowd while others idle (and
//! every replica on the host would pick the same ones). Best effort: where the kernel
//! refuses, the workers run as they are.

/// The CPUs this process may use, read once.
#[derive(Clone)]
pub struct Cpus {
    #[cfg(target_os = "linux")]
    allowed: Vec<usize>,
}

impl Cpus {
    /// The calling thread's CPUs: call it before anything is pinned.
    pub fn of_this_thread() -> Cpus {
        #[cfg(target_os = "linux")]
        return Cpus {
            allowed: cpus_of(0).unwrap_or_default(),
        };
        #[cfg(not(target_os = "linux"))]
        Cpus {}
    }

    /// Whether `n` workers would each have a CPU of their own when all are active.
    pub fn can_pin(&self, n: usize) -> bool {
        #[cfg(target_os = "linux")]
        return self.allowed.len() >= 2 && n >= self.allowed.len();
        #[cfg(not(target_os = "linux"))]
        {
            let _ = n;
            false
        }
    }

    /// Holds thread `tid` (worker `i`) to its own CPU when `pinned`, else lets it run on
    /// any of them. False when the kernel refused.
    pub fn place(&self, tid: i32, i: usize, pinned: bool) -> bool {
        #[cfg(target_os = "linux")]
        {
            if self.allowed.is_empty() {
                return false;
            }
            // SAFETY: `set` is a plain bit set owned here; the call reads it and sets the
            // affinity of one of this process's threads.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                if pinned {
                    libc::CPU_SET(self.allowed[i % self.allowed.len()], &mut set);
                } else {
                    for &c in &self.allowed {
                        libc::CPU_SET(c, &mut set);
                    }
                }
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (tid, i, pinned);
            false
        }
    }
}

/// The CPUs thread `tid` (0: the calling thread) may run on; None: the kernel does not tell.
#[cfg(target_os = "linux")]
fn cpus_of(tid: i32) -> Option<Vec<usize>> {
    // SAFETY: `set` is a plain bit set owned here; the call only writes it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|c| libc::CPU_ISSET(*c, &set))
                .collect(),
        )
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_held_to_its_own_cpu_and_let_go_again() {
        let cpus = Cpus::of_this_thread();
        assert!(!cpus.allowed.is_empty(), "no CPU to run on");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        // Worker 1 takes the second allowed CPU (the first when there is only one).
        assert!(cpus.place(tid, 1, true));
        let second = cpus.allowed[1 % cpus.allowed.len()];
        assert_eq!(cpus_of(tid), Some(vec![second]));
        assert!(cpus.place(tid, 1, false));
        assert_eq!(cpus_of(tid), Some(cpus.allowed.clone()));
        // A thread that is gone is refused, and nothing panics.
        stop_tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(!cpus.place(tid, 0, true));
        // One worker for two CPUs or more is never pinned; one per CPU is.
        assert!(!cpus.can_pin(1));
        assert_eq!(cpus.can_pin(cpus.allowed.len()), cpus.allowed.len() >= 2);
    }
}
