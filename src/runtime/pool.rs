//! A persistent thread pool for splitting kernels over cores. Workers are spawned once and
//! sleep on a condition variable between jobs; a job is a borrowed `Fn(worker_index)` that
//! every participant (the caller is participant 0) runs once, and [`ThreadPool::run`] returns
//! only after all of them finished, which is what makes lending the borrow to the workers sound.
//! No allocation happens per job.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A lifetime-erased pointer to the current job; valid only while `run` waits.
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync` and outlives every use (see `ThreadPool::run`).
unsafe impl Send for JobPtr {}

struct State {
    generation: u64,
    job: Option<JobPtr>,
    /// Workers that have not finished the current job.
    pending: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ThreadPool {
    /// A pool where `threads` participants (the caller plus `threads - 1` workers) run jobs.
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { generation: 0, job: None, pending: 0, shutdown: false }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker_loop(&shared, index))
            })
            .collect();
        ThreadPool { shared, workers }
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
        // SAFETY of the erased lifetime: this function does not return before `pending` is 0,
        // i.e. before every worker is done calling `f`.
        let ptr: *const (dyn Fn(usize) + Sync) = f;
        let ptr: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(ptr) };
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.job = Some(JobPtr(ptr));
            st.pending = self.workers.len();
            st.generation += 1;
        }
        self.shared.work.notify_all();
        f(0);
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.pending > 0 {
            st = self.shared.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.job = None;
    }
}

fn worker_loop(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            while st.generation == seen && !st.shutdown {
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.job
        };
        if let Some(JobPtr(f)) = job {
            // SAFETY: `run` keeps the job alive until `pending` reaches 0 below.
            unsafe { (*f)(index) };
        }
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.pending -= 1;
        if st.pending == 0 {
            shared.done.notify_one();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).shutdown = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
