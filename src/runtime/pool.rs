//! A persistent thread pool for splitting kernels over cores. Workers are spawned once; a job
//! is a borrowed `Fn(worker_index)` that every participant (the caller is participant 0) runs
//! once, and [`ThreadPool::run`] returns only after all of them finished, which is what makes
//! lending the borrow to the workers sound.
//!
//! A training step hands the pool hundreds of jobs of a few microseconds each, so handing one
//! over must cost far less than that: no lock, no allocation and no system call on the way.
//! The caller publishes the job by bumping an atomic generation; workers that finished their
//! last job less than [`SPIN`] ago are still spinning on it and start at once; workers idle for
//! longer sleep in `park` and the caller unparks them (a system call, paid only after a pause,
//! e.g. between training steps that read data). The caller spins on an atomic count of pending
//! workers.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins on the next job before it parks.
const SPIN: Duration = Duration::from_micros(200);

/// A lifetime-erased pointer to the current job; valid only while `run` waits.
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync));

struct Shared {
    /// Bumped (after `job` is written) to hand out a job; workers read `job` after seeing it.
    generation: AtomicU64,
    /// Written only by the caller of `run`, while no worker reads it (all finished the last
    /// job, and the new generation is not yet published).
    job: UnsafeCell<Option<JobPtr>>,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    shutdown: AtomicBool,
    /// Per worker: it is parked or about to park, so the caller must unpark it.
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is written only while no worker can read it (see the field), and the pointee
// is `Sync`; everything else is atomic.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: Vec<Thread>,
}

impl ThreadPool {
    /// A pool where `threads` participants (the caller plus `threads - 1` workers) run jobs.
    pub fn new(threads: usize) -> ThreadPool {
        let n = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
        });
        let workers: Vec<JoinHandle<()>> = (1..=n)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker_loop(&shared, index))
            })
            .collect();
        let threads = workers.iter().map(|w| w.thread().clone()).collect();
        ThreadPool { shared, workers, threads }
    }

    /// Number of participants in a job.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every participant `i` in `0..threads()` and waits for all of them.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        let sh = &*self.shared;
        // SAFETY of the erased lifetime: this function does not return before `pending` is 0,
        // i.e. before every worker is done calling `f`.
        let ptr: *const (dyn Fn(usize) + Sync) = f;
        let ptr: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(ptr) };
        // SAFETY: no worker reads `job` now: the previous `run` waited for all of them, and
        // they read it only after seeing the generation bumped below.
        unsafe { *sh.job.get() = Some(JobPtr(ptr)) };
        sh.pending.store(self.workers.len(), Ordering::SeqCst);
        sh.generation.fetch_add(1, Ordering::SeqCst);
        for (i, t) in self.threads.iter().enumerate() {
            if sh.sleeping[i].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
        f(0);
        let mut spins = 0u32;
        while sh.pending.load(Ordering::Acquire) > 0 {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // a worker lost its core: let it have ours
                std::thread::yield_now();
            }
        }
    }
}

fn worker_loop(shared: &Shared, index: usize) {
    let sleeping = &shared.sleeping[index - 1];
    let mut seen = 0u64;
    loop {
        // wait for the next generation: spin for a while, then park
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            if shared.generation.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            sleeping.store(true, Ordering::SeqCst);
            // re-check after announcing: `run` bumps the generation before it looks at
            // `sleeping`, so either we see the new generation here or it unparks us
            if shared.generation.load(Ordering::SeqCst) == seen && !shared.shutdown.load(Ordering::SeqCst) {
                std::thread::park();
            }
            sleeping.store(false, Ordering::SeqCst);
        }
        seen = shared.generation.load(Ordering::Acquire);
        // SAFETY: the caller wrote `job` before publishing the generation we saw, and does not
        // write it again until we decrement `pending`.
        if let Some(JobPtr(f)) = unsafe { *shared.job.get() } {
            // SAFETY: `run` keeps the job alive until `pending` reaches 0 below.
            unsafe { (*f)(index) };
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for t in &self.threads {
            t.unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every participant runs every job exactly once, whether the workers are spinning (jobs
    /// back to back) or parked (a pause longer than `SPIN` before the job).
    #[test]
    fn every_participant_runs_every_job_once() {
        let pool = ThreadPool::new(3);
        let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..2000 {
            if round % 500 == 0 {
                std::thread::sleep(SPIN * 5);
            }
            pool.run(&|t| {
                counts[t].fetch_add(1, Ordering::Relaxed);
            });
            for c in &counts {
                assert_eq!(c.load(Ordering::Relaxed), round + 1);
            }
        }
        drop(pool);
        let single = ThreadPool::new(1);
        let n = AtomicUsize::new(0);
        single.run(&|t| {
            assert_eq!(t, 0);
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 1);
    }
}
