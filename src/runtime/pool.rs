//! A persistent thread pool for splitting kernels over cores. Workers are spawned once; a job
//! is a borrowed `Fn(chunk)` and a chunk count: participants (the caller and the workers) claim
//! chunks from an atomic counter until none is left, and [`ThreadPool::run`] returns only after
//! every chunk ran and no worker is inside the job, which is what makes lending the borrow to
//! the workers sound.
//!
//! A training step hands the pool hundreds of jobs of a few microseconds each, so handing one
//! over must cost far less than that: no lock, no allocation and no system call on the way.
//! The caller publishes the job by bumping an atomic generation; workers that finished their
//! last job less than [`SPIN`] ago are still spinning on it and start at once; workers idle for
//! longer sleep in `park` and the caller unparks them (a system call, paid only after a pause,
//! e.g. between training steps that read data). Because chunks are claimed, not assigned, a
//! worker that has no core at the moment (the machine is busy) costs nothing: the caller runs
//! the chunks it did not claim, and waits only for chunks a worker actually started.

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
    /// Bumped (after the job is set up) to hand out a job.
    generation: AtomicU64,
    /// Written only by the caller of `run` while `closed` is set and no worker is inside.
    job: UnsafeCell<Option<JobPtr>>,
    chunks: AtomicUsize,
    /// The next chunk to claim.
    next: AtomicUsize,
    /// Chunks finished.
    done: AtomicUsize,
    /// Set once every chunk of the current job finished: workers must not enter it any more.
    closed: AtomicBool,
    shutdown: AtomicBool,
    /// Per worker: it is inside the current job (may read `job`).
    inside: Vec<AtomicBool>,
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

/// Claims and runs chunks of the current job until none is left.
///
/// # Safety
/// `f` must be the current job, alive until `done` reaches the chunk count.
unsafe fn run_chunks(sh: &Shared, f: *const (dyn Fn(usize) + Sync), chunks: usize) {
    loop {
        let c = sh.next.fetch_add(1, Ordering::AcqRel);
        if c >= chunks {
            return;
        }
        // SAFETY: see the function contract.
        unsafe { (*f)(c) };
        sh.done.fetch_add(1, Ordering::Release);
    }
}

impl ThreadPool {
    /// A pool where `threads` participants (the caller plus `threads - 1` workers) run jobs.
    pub fn new(threads: usize) -> ThreadPool {
        let n = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            chunks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            closed: AtomicBool::new(true),
            shutdown: AtomicBool::new(false),
            inside: (0..n).map(|_| AtomicBool::new(false)).collect(),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
        });
        let workers: Vec<JoinHandle<()>> = (1..=n)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker_loop(&shared, index - 1))
            })
            .collect();
        let threads = workers.iter().map(|w| w.thread().clone()).collect();
        ThreadPool { shared, workers, threads }
    }

    /// Number of participants in a job.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(c)` exactly once for every chunk `c` in `0..chunks`, on any participants, and
    /// returns when all are done.
    pub fn run(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || chunks <= 1 {
            (0..chunks).for_each(f);
            return;
        }
        let sh = &*self.shared;
        // SAFETY of the erased lifetime: this function does not return before every chunk is
        // done and no worker is inside the job (so none can call `f` later).
        let ptr: *const (dyn Fn(usize) + Sync) = f;
        let ptr: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(ptr) };
        // SAFETY: `closed` is set and no worker is inside (the previous `run` waited for it),
        // so no worker reads `job` until `closed` is cleared below.
        unsafe { *sh.job.get() = Some(JobPtr(ptr)) };
        sh.chunks.store(chunks, Ordering::SeqCst);
        sh.next.store(0, Ordering::SeqCst);
        sh.done.store(0, Ordering::SeqCst);
        sh.closed.store(false, Ordering::SeqCst);
        sh.generation.fetch_add(1, Ordering::SeqCst);
        for (i, t) in self.threads.iter().enumerate() {
            if sh.sleeping[i].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
        // SAFETY: `f` is alive for the whole call.
        unsafe { run_chunks(sh, ptr, chunks) };
        // chunks a worker claimed and has not finished
        let mut spins = 0u32;
        while sh.done.load(Ordering::Acquire) < chunks {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // the worker lost its core: let it have ours
                std::thread::yield_now();
            }
        }
        sh.closed.store(true, Ordering::SeqCst);
        // a worker that entered before `closed` was set may still be about to claim (and find
        // nothing); wait until it has left
        for inside in &sh.inside {
            while inside.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        }
    }
}

fn worker_loop(shared: &Shared, w: usize) {
    // workers run nothing but kernels: subnormals flushed, as on the calling thread
    super::fpenv::flush_subnormals_forever();
    let sleeping = &shared.sleeping[w];
    let inside = &shared.inside[w];
    let mut seen = 0u64;
    loop {
        // wait for the next generation: spin for a while, then park
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
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
        // enter the job unless it is already closed (checked after announcing, so `run`
        // either sees us inside or we see it closed)
        inside.store(true, Ordering::SeqCst);
        if !shared.closed.load(Ordering::SeqCst) {
            // SAFETY: not closed, so the caller set `job` and `chunks` before clearing
            // `closed` and keeps the job alive until every chunk is done.
            if let Some(JobPtr(f)) = unsafe { *shared.job.get() } {
                let chunks = shared.chunks.load(Ordering::SeqCst);
                unsafe { run_chunks(shared, f, chunks) };
            }
        }
        inside.store(false, Ordering::SeqCst);
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

    /// Every chunk of every job runs exactly once, whether the workers are spinning (jobs back
    /// to back), parked (a pause longer than `SPIN` before the job) or slow to start.
    #[test]
    fn every_chunk_runs_exactly_once() {
        let pool = ThreadPool::new(3);
        let counts: Vec<AtomicUsize> = (0..7).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..2000 {
            if round % 500 == 0 {
                std::thread::sleep(SPIN * 5);
            }
            let chunks = 1 + round % 7;
            pool.run(chunks, &|c| {
                counts[c].fetch_add(1, Ordering::Relaxed);
            });
            for (c, n) in counts.iter().enumerate() {
                assert_eq!(n.swap(0, Ordering::Relaxed), usize::from(c < chunks), "round {round} chunk {c}");
            }
        }
        drop(pool);
        let single = ThreadPool::new(1);
        let n = AtomicUsize::new(0);
        single.run(3, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }
}
