//! The executor: schedules and compiles a graph once, owns its planned buffers and parameters,
//! runs the kernels in order (large ones split over a persistent thread pool), exchanges
//! [`Tensor`]s at the API, applies `Graph::updates` in place, and loads / saves parameters as
//! safetensors keyed by parameter path.

pub mod checkpoint;
mod fpenv;
mod gemv;
mod init;
mod pool;
mod zeroed;

pub use fpenv::FlushSubnormals;
pub use init::init_params;
pub use pool::ThreadPool;
use zeroed::ZeroedBuf;

use crate::ir::{DType, Graph, ShapeDisplay};
use crate::jit::{self, KernelFn};
use crate::sched::{self, BufferRole, KernelBody, MatMulKernel, Schedule, Split};
use crate::tensor::Tensor;
use ndarray::ArrayD;
use std::fmt;
use std::time::{Duration, Instant};

/// An error at the executor's boundary: wrong inputs, bad weights, a kernel that failed to
/// compile. The message names what is wrong and how it differs from what was expected.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeError(pub String);

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuntimeError {}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// How to build an [`Executable`].
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Threads per kernel; `None` reads `MODELC_THREADS`, else uses every core.
    pub threads: Option<usize>,
    /// Seed of the initial parameters (see [`init_params`]).
    pub seed: u64,
    /// Work (elements x passes, or multiply-adds) from which a kernel is split over threads;
    /// `None` is 32768. Tests set 1 to split even tiny kernels.
    pub parallel_min_work: Option<usize>,
}

/// The thread count an [`ExecOptions`] resolves to.
pub fn resolve_threads(opt: Option<usize>) -> usize {
    opt.or_else(|| std::env::var("MODELC_THREADS").ok().and_then(|s| s.trim().parse().ok()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// Wall time of each stage of building an [`Executable`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimings {
    pub schedule: Duration,
    pub codegen: Duration,
    pub finalize: Duration,
    /// Not compilation: allocating the buffers, initialising the parameters from the seed and
    /// starting the thread pool.
    pub init: Duration,
    /// Kernels compiled for this executable (the rest came from the process-wide cache).
    pub kernels_compiled: usize,
}

/// Raw buffer pointers handed to kernels on several threads.
struct Ptrs(Vec<*mut u8>);

// SAFETY: kernels split over threads write disjoint rows of their outputs; the pointers stay
// valid because buffers are allocated once and never resized.
unsafe impl Sync for Ptrs {}
unsafe impl Send for Ptrs {}

enum Step {
    /// `work`: [`loop_work`]; `granule`: chunk boundaries fall on multiples of it (whole
    /// blocks for a row-blocked kernel, see `run_step`).
    Loop {
        f: KernelFn,
        args: Ptrs,
        range: usize,
        split: Split,
        work: usize,
        granule: usize,
    },
    MatMul {
        mm: Box<MatMulKernel>,
        args: Ptrs,
        epilogue: Option<KernelFn>,
    },
}

/// A compiled graph with its buffers.
pub struct Executable {
    schedule: Schedule,
    steps: Vec<Step>,
    /// Storage: inputs, parameters and plan slots, 4-byte elements.
    inputs: Vec<ZeroedBuf>,
    params: Vec<Vec<u32>>,
    slots: Vec<ZeroedBuf>,
    pool: ThreadPool,
    parallel_min_work: usize,
    timings: StageTimings,
}

/// Chunks per thread of a loop kernel split over the pool.
const LOOP_CHUNKS_PER_THREAD: usize = 4;

/// Default work (elements x passes) below which a kernel runs on one thread.
const PARALLEL_MIN_WORK: usize = 1 << 15;

impl Executable {
    /// Schedules and compiles `g`, allocates its buffers and initialises its parameters from
    /// `options.seed`.
    pub fn new(g: &Graph, options: &ExecOptions) -> Result<Executable> {
        let t0 = Instant::now();
        let schedule = sched::schedule(g);
        let schedule_time = t0.elapsed();
        let mut loops = Vec::new();
        for k in &schedule.kernels {
            match &k.body {
                KernelBody::Loop(l) => loops.push(l),
                KernelBody::MatMul(m) => {
                    if let Some(e) = &m.epilogue {
                        loops.push(e);
                    }
                }
            }
        }
        let (fns, jt) =
            jit::compile(&loops).map_err(|e| RuntimeError(format!("kernel compilation failed: {}", e.0)))?;
        let t_init = Instant::now();
        let inputs: Vec<ZeroedBuf> =
            schedule.graph.inputs.iter().map(|i| ZeroedBuf::new(i.ty.numel())).collect();
        let params: Vec<Vec<u32>> = schedule.graph.params.iter().map(|p| vec![0u32; p.ty.numel()]).collect();
        let slots: Vec<ZeroedBuf> = schedule.plan.slots.iter().map(|&n| ZeroedBuf::new(n)).collect();
        let mut exe = Executable {
            schedule,
            steps: Vec::new(),
            inputs,
            params,
            slots,
            pool: ThreadPool::new(resolve_threads(options.threads)),
            parallel_min_work: options.parallel_min_work.unwrap_or(PARALLEL_MIN_WORK),
            timings: StageTimings {
                schedule: schedule_time,
                codegen: jt.codegen,
                finalize: jt.finalize,
                init: Duration::ZERO,
                kernels_compiled: jt.compiled,
            },
        };
        let mut fns = fns.into_iter();
        let mut steps = Vec::new();
        let Executable { schedule, inputs, params, slots, .. } = &mut exe;
        for k in &schedule.kernels {
            let args = Ptrs(k.args.iter().map(|&b| buffer_ptr(schedule, inputs, params, slots, b)).collect());
            steps.push(match &k.body {
                KernelBody::Loop(l) => Step::Loop {
                    f: fns.next().expect("one function per loop kernel"),
                    args,
                    range: l.range(),
                    split: l.split,
                    work: loop_work(l),
                    granule: if crate::jit::row_blocked(l) { crate::jit::ROW_BLOCK } else { 1 },
                },
                KernelBody::MatMul(m) => Step::MatMul {
                    mm: m.clone(),
                    args,
                    epilogue: m.epilogue.as_ref().map(|_| fns.next().expect("one function per epilogue")),
                },
            });
        }
        exe.steps = steps;
        init::init_param_storage(&exe.schedule.graph, options.seed, &mut exe.params);
        exe.timings.init = t_init.elapsed();
        Ok(exe)
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn graph(&self) -> &Graph {
        &self.schedule.graph
    }

    pub fn timings(&self) -> StageTimings {
        self.timings
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Replaces every parameter; `values` follow `Graph::params` order.
    pub fn set_params(&mut self, values: &[Tensor]) -> Result<()> {
        let g = &self.schedule.graph;
        if values.len() != g.params.len() {
            return Err(RuntimeError(format!(
                "expected {} parameters, got {}",
                g.params.len(),
                values.len()
            )));
        }
        for (i, (p, t)) in g.params.iter().zip(values).enumerate() {
            if !t.fits(&p.ty) {
                return Err(RuntimeError(format!(
                    "parameter `{}`: expected {}, got {}{}",
                    p.path,
                    p.ty,
                    t.dtype(),
                    ShapeDisplay(t.shape())
                )));
            }
            write_tensor(&mut self.params[i], t);
        }
        Ok(())
    }

    /// The current parameter values in `Graph::params` order.
    pub fn params(&self) -> Vec<Tensor> {
        let g = &self.schedule.graph;
        g.params
            .iter()
            .zip(&self.params)
            .map(|(p, data)| read_tensor(data, p.ty.dtype, &p.ty.shape))
            .collect()
    }

    /// Runs the graph on `inputs` (in `Graph::inputs` order), returns the outputs in
    /// `Graph::outputs` order and applies the graph's parameter updates.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let g = &self.schedule.graph;
        if inputs.len() != g.inputs.len() {
            return Err(RuntimeError(format!("expected {} inputs, got {}", g.inputs.len(), inputs.len())));
        }
        for (i, (info, t)) in g.inputs.iter().zip(inputs).enumerate() {
            if !t.fits(&info.ty) {
                return Err(RuntimeError(format!(
                    "input `{}`: expected {}, got {}{}",
                    info.name,
                    info.ty,
                    t.dtype(),
                    ShapeDisplay(t.shape())
                )));
            }
            write_tensor(&mut self.inputs[i], t);
        }
        let fp = fpenv::FlushSubnormals::new();
        for step in &self.steps {
            run_step(&self.pool, step, self.parallel_min_work);
        }
        drop(fp);
        let outputs = self
            .schedule
            .outputs
            .iter()
            .zip(&g.outputs)
            .map(|(&b, o)| {
                let ty = g.ty(o.node);
                read_tensor(self.buffer_slice(b), ty.dtype, &ty.shape)
            })
            .collect();
        for &(p, b) in &self.schedule.updates {
            let buf = &self.schedule.buffers[b.0 as usize];
            let dst = p as usize;
            // copy without allocating (the steady state of a training loop allocates nothing
            // but the returned tensors); a parameter copied from another parameter is the rare
            // case that needs a split borrow
            match buf.role {
                BufferRole::Temp => {
                    if let Some(s) = self.schedule.plan.slot_of[b.0 as usize] {
                        self.params[dst].copy_from_slice(&self.slots[s][..buf.elems]);
                    }
                }
                BufferRole::Input(i) => self.params[dst].copy_from_slice(&self.inputs[i as usize]),
                BufferRole::Param(q) if q as usize != dst => {
                    let src = self.params[q as usize].clone();
                    self.params[dst].copy_from_slice(&src);
                }
                BufferRole::Param(_) => {}
            }
        }
        Ok(outputs)
    }

    /// Runs the kernels on the buffers as they are (inputs from the last `run`), without
    /// copying anything in or out; for benchmarks of the kernels alone.
    pub fn run_kernels(&mut self) {
        let _fp = fpenv::FlushSubnormals::new();
        for step in &self.steps {
            run_step(&self.pool, step, self.parallel_min_work);
        }
    }

    /// Runs the kernels `iters` times on the buffers as they are (inputs from the last `run`,
    /// no updates applied), timing each kernel separately; returns the total wall time of each
    /// kernel, in `Schedule::kernels` order. For profiles (`modelc bench --profile`).
    pub fn profile_kernels(&mut self, iters: usize) -> Vec<Duration> {
        let mut total = vec![Duration::ZERO; self.steps.len()];
        let _fp = fpenv::FlushSubnormals::new();
        for _ in 0..iters {
            for (t, step) in total.iter_mut().zip(&self.steps) {
                let start = Instant::now();
                run_step(&self.pool, step, self.parallel_min_work);
                *t += start.elapsed();
            }
        }
        total
    }

    fn buffer_slice(&self, b: sched::BufferId) -> &[u32] {
        let buf = &self.schedule.buffers[b.0 as usize];
        match buf.role {
            BufferRole::Input(i) => &self.inputs[i as usize],
            BufferRole::Param(i) => &self.params[i as usize],
            BufferRole::Temp => match self.schedule.plan.slot_of[b.0 as usize] {
                Some(s) => &self.slots[s][..buf.elems],
                None => &[],
            },
        }
    }

    /// Fills every temporary buffer with a NaN pattern, so a test can tell an element no
    /// kernel wrote from a computed one.
    pub fn poison_buffers(&mut self) {
        for slot in &mut self.slots {
            slot.fill(f32::NAN.to_bits());
        }
    }

    /// Loads every parameter from a safetensors file keyed by parameter path.
    pub fn load_safetensors(&mut self, path: &std::path::Path) -> Result<()> {
        let values = checkpoint::load(&self.schedule.graph, path)?;
        self.set_params(&values)
    }

    /// Saves every parameter to a safetensors file keyed by parameter path.
    pub fn save_safetensors(&self, path: &std::path::Path) -> Result<()> {
        checkpoint::save(&self.schedule.graph, &self.params(), path)
    }
}

/// The address of buffer `b` in the executor's storage.
fn buffer_ptr(
    schedule: &Schedule,
    inputs: &mut [ZeroedBuf],
    params: &mut [Vec<u32>],
    slots: &mut [ZeroedBuf],
    b: sched::BufferId,
) -> *mut u8 {
    match schedule.buffers[b.0 as usize].role {
        BufferRole::Input(i) => inputs[i as usize].as_mut_ptr().cast(),
        BufferRole::Param(i) => params[i as usize].as_mut_ptr().cast(),
        BufferRole::Temp => match schedule.plan.slot_of[b.0 as usize] {
            Some(s) => slots[s].as_mut_ptr().cast(),
            None => std::ptr::NonNull::<u32>::dangling().as_ptr().cast(),
        },
    }
}

fn write_tensor(dst: &mut [u32], t: &Tensor) {
    match t {
        Tensor::F32(a) => copy_bits(dst, a, f32::to_bits),
        Tensor::I32(a) => copy_bits(dst, a, |v| v as u32),
    }
}

/// `dst[i] = bits(a[i])` in logical order. A standard-layout array is one slice (a plain,
/// vectorised copy); the n-dimensional iterator costs ~1.5 ns per element (half of a
/// 128x128x128 product's run).
fn copy_bits<T: Copy>(dst: &mut [u32], a: &ArrayD<T>, bits: impl Fn(T) -> u32) {
    match a.as_slice() {
        Some(s) => dst.iter_mut().zip(s).for_each(|(d, &v)| *d = bits(v)),
        None => dst.iter_mut().zip(a.iter()).for_each(|(d, &v)| *d = bits(v)),
    }
}

fn read_tensor(src: &[u32], dtype: DType, shape: &[usize]) -> Tensor {
    match dtype {
        DType::F32 => Tensor::F32(
            ArrayD::from_shape_vec(shape.to_vec(), src.iter().map(|&b| f32::from_bits(b)).collect())
                .expect("buffer length matches the type"),
        ),
        DType::I32 | DType::Bool => Tensor::I32(
            ArrayD::from_shape_vec(shape.to_vec(), src.iter().map(|&b| b as i32).collect())
                .expect("buffer length matches the type"),
        ),
    }
}

/// Elements a loop kernel visits, what decides whether it is split over threads: one per pass,
/// or one per element store when a pass stores several (the pieces of a concatenation).
fn loop_work(l: &crate::sched::LoopKernel) -> usize {
    let stores = l.stores.iter().filter(|s| matches!(s.source, crate::sched::StoreSource::Elem(_))).count();
    l.rows() * l.inner * (l.passes as usize).max(stores)
}

/// The `t`-th of `n` near-equal chunks of `0..len`.
fn chunk(len: usize, n: usize, t: usize) -> (usize, usize) {
    (len * t / n, len * (t + 1) / n)
}

fn run_step(pool: &ThreadPool, step: &Step, min_work: usize) {
    match step {
        Step::Loop { f, args, range, split, work, granule } => {
            let n = if *split == Split::Serial || *work < min_work { 1 } else { pool.threads().min(*range) };
            // a row-blocked kernel's rows go in whole blocks: its rows are columns of a matrix,
            // and threads that split a block would read the same cache lines (16 f32 columns)
            let g = *granule;
            let units = range.div_ceil(g);
            // a few chunks per thread, claimed dynamically: a thread that is late (no free
            // core) leaves its chunks to the others; rows are computed alike in any chunk
            let chunks = (n * LOOP_CHUNKS_PER_THREAD).min(units);
            if n <= 1 || chunks <= 1 {
                // SAFETY: the kernel reads and writes only inside its buffers for this range.
                unsafe { f(args.0.as_ptr(), 0, *range as i64) };
                return;
            }
            pool.run(chunks, &|t| {
                let (s, e) = chunk(units, chunks, t);
                let (s, e) = ((s * g).min(*range), (e * g).min(*range));
                if s < e {
                    // SAFETY: as above; chunks are disjoint row ranges.
                    unsafe { f(args.0.as_ptr(), s as i64, e as i64) };
                }
            });
        }
        Step::MatMul { mm, args, epilogue } => {
            let rows = mm.rows();
            let work = rows * mm.n * mm.k.max(1);
            // a one-row product streams B once at memory speed: worth a second thread only
            // when that takes well over the hand-off (a 256x256 layer does not)
            let min = if mm.m == 1 { min_work * GEMV_MIN_WORK_FACTOR } else { min_work };
            let n = if work < min { 1 } else { pool.threads() };
            // Each part of a split product packs the operand it does not split again: split
            // the rows when A (m x k) is the larger operand, the columns when B (k x n) is,
            // in blocks of whole micro-kernel tiles.
            let by_columns = n > 1 && mm.m < mm.n && mm.n >= COLUMN_BLOCK * n;
            let parts = if by_columns { n } else { n.min(rows) };
            let job = |t: usize| {
                if by_columns {
                    let blocks = mm.n.div_ceil(COLUMN_BLOCK);
                    let (b0, b1) = chunk(blocks, parts, t);
                    let (c0, c1) = (b0 * COLUMN_BLOCK, (b1 * COLUMN_BLOCK).min(mm.n));
                    if c0 < c1 {
                        // SAFETY: operand views were checked by the scheduler to lie inside
                        // their buffers; parts write disjoint output columns.
                        unsafe { matmul_block(mm, &args.0, 0, rows, c0, c1, None) };
                    }
                    return;
                }
                let (s, e) = chunk(rows, parts, t);
                if s < e {
                    // SAFETY: as above; parts write disjoint output rows.
                    // (the epilogue runs inside, on each block of rows as it is finished)
                    unsafe { matmul_block(mm, &args.0, s, e, 0, mm.n, *epilogue) };
                }
            };
            if parts <= 1 {
                job(0);
            } else {
                pool.run(parts, &job);
            }
            if by_columns && let Some(f) = epilogue {
                // the epilogue runs over whole rows, once every column is done
                let chunks = n.min(rows);
                pool.run(chunks, &|t| {
                    let (s, e) = chunk(rows, chunks, t);
                    if s < e {
                        // SAFETY: the epilogue reads and writes only these rows.
                        unsafe { f(args.0.as_ptr(), s as i64, e as i64) };
                    }
                });
            }
        }
    }
}

/// How much more work a one-row product needs than other kernels before it is split.
const GEMV_MIN_WORK_FACTOR: usize = 16;

/// Columns per block when a product is split by columns (a multiple of the GEMM's register
/// tile width).
const COLUMN_BLOCK: usize = 32;

/// Offsets of batch entry `b`'s A, B and C (at row and column 0).
fn batch_offsets(mm: &MatMulKernel, b: usize) -> (i64, i64, i64) {
    let (mut oa, mut ob, mut oc) = (mm.a.offset, mm.b.offset, mm.c.offset);
    let mut rem = b;
    // batch coordinates of b (row-major over mm.batch)
    for d in (0..mm.batch.len()).rev() {
        let c = (rem % mm.batch[d]) as i64;
        rem /= mm.batch[d];
        oa += c * mm.a.batch[d];
        ob += c * mm.b.batch[d];
        oc += c * mm.c.batch[d];
    }
    (oa, ob, oc)
}

/// Output rows `r0..r1` (over `batch x m`), columns `c0..c1` of a strided batched GEMM.
///
/// # Safety
/// `args` must hold the kernel's buffers, large enough for every operand view.
unsafe fn matmul_block(
    mm: &MatMulKernel,
    args: &[*mut u8],
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
    epilogue: Option<KernelFn>,
) {
    let m = mm.m.max(1);
    let mut r = r0;
    while r < r1 {
        let b = r / m;
        let i0 = r % m;
        let i1 = (m).min(i0 + (r1 - r));
        let (mut oa, mut ob, mut oc) = batch_offsets(mm, b);
        let b_entry = ob;
        oa += i0 as i64 * mm.a.rs;
        oc += i0 as i64 * mm.c.rs + c0 as i64 * mm.c.cs;
        ob += c0 as i64 * mm.b.cs;
        let cols = c1 - c0;
        // SAFETY: offsets stay inside the buffers (see the function contract).
        unsafe {
            let a = (args[mm.a.buf as usize] as *const f32).offset(oa as isize);
            let bp = (args[mm.b.buf as usize] as *const f32).offset(ob as isize);
            if i1 == m && r + (i1 - i0) < r1 && !mm.batch.is_empty() {
                // the next batch entry's operands, while this one is multiplied
                let (na, nb, _) = batch_offsets(mm, b + 1);
                let a_next = (args[mm.a.buf as usize] as *const f32).wrapping_offset(na as isize);
                crate::jit::gemm::prefetch(a_next, m, mm.k, mm.a.rs as isize, mm.a.cs as isize);
                if nb != b_entry {
                    // (a B shared by the entries is in cache already)
                    let b_next = bp.wrapping_offset((nb - b_entry) as isize);
                    crate::jit::gemm::prefetch(b_next, mm.k, cols, mm.b.rs as isize, mm.b.cs as isize);
                }
            }
            let c = (args[mm.c.buf as usize] as *mut f32).offset(oc as isize);
            // one-row products (by shape, so every thread count takes the same path)
            if mm.m == 1 && mm.k > 0 && gemv::applies(mm.b.rs as isize, mm.b.cs as isize, mm.c.cs as isize) {
                let (a_cs, b_rs, b_cs) = (mm.a.cs as isize, mm.b.rs as isize, mm.b.cs as isize);
                gemv::gemv_row(gemv::Row { k: mm.k, n: cols, a, a_cs, b: bp, b_rs, b_cs, c });
                if let Some(f) = epilogue {
                    // SAFETY: the epilogue reads and writes only this row.
                    f(args.as_ptr(), r as i64, r as i64 + 1);
                }
                r += 1;
                continue;
            }
            // the epilogue runs on each block of rows as soon as it is final (still in cache)
            let first_row = r;
            let mut rows_done = |s: usize, e: usize| {
                if let Some(f) = epilogue {
                    // SAFETY: the epilogue reads and writes only these rows.
                    f(args.as_ptr(), (first_row + s) as i64, (first_row + e) as i64);
                }
            };
            crate::jit::gemm::strided(
                i1 - i0,
                mm.k,
                cols,
                1.0,
                a,
                mm.a.rs as isize,
                mm.a.cs as isize,
                bp,
                mm.b.rs as isize,
                mm.b.cs as isize,
                0.0,
                c,
                mm.c.rs as isize,
                mm.c.cs as isize,
                &mut rows_done,
            );
        }
        r += i1 - i0;
    }
}
