//! Benchmarks of a `.model` file (`modelc bench`): the compile time of a graph by stage, then
//! the time of one run after warm-up (median and quartiles over many iterations), optionally a
//! per-kernel profile.
//!
//! - A **train block** is timed as its training step: the step graph (objective, autodiff,
//!   clipping, optimizer update) built for the data block's batch size and run on the *first
//!   real batch* of the training split (epoch 0), with the learning rate of the optimizer and the
//!   Adam bias corrections of the iteration's step number. `Executable::run` is timed whole:
//!   copying the batch in, every kernel, reading `loss` and `grad_norm` out, applying the updates
//!   of parameters and optimizer state.
//! - A **model** is timed as its forward pass at a given batch size (the symbolic dimension `B`)
//!   on deterministic pseudo-random inputs (floats in [-1, 1), integer ids in [0, 4)).

use crate::elab::value::Value;
use crate::elab::{ElabOptions, Program, elaborate_model};
use crate::ir::{DType, Graph, TensorType};
use crate::passes::{PipelineOptions, run_pipeline};
use crate::runtime::{ExecOptions, Executable};
use crate::sched::{Expr, KernelBody, LoopKernel, Schedule, Split, StoreSource};
use crate::tensor::Tensor;
use crate::train::run::{prepare_data, step_key};
use crate::train::spec::Optimizer;
use crate::train::{TrainError, find_train_block, lower_train_block};
use ndarray::{ArrayD, IxDyn};
use std::time::{Duration, Instant};

/// How to time a workload.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub threads: Option<usize>,
    /// Untimed runs before the timed ones.
    pub warmup: usize,
    /// Timed runs; `None` picks enough for about `target_seconds` (at least 10, at most 10000).
    pub iters: Option<usize>,
    pub target_seconds: f64,
    /// Also time every kernel separately (`profile_iters` runs of the kernels).
    pub profile: bool,
    pub seed: u64,
    /// Parameters of a model benchmark loaded from this checkpoint (safetensors keyed by
    /// parameter path, as `modelc train` writes) instead of initialised from `seed`.
    pub checkpoint: Option<std::path::PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            threads: None,
            warmup: 3,
            iters: None,
            target_seconds: 2.0,
            profile: false,
            seed: 0,
            checkpoint: None,
        }
    }
}

/// Summary of the timed runs, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub iters: usize,
    pub warmup: usize,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub min: f64,
    pub max: f64,
    /// Process CPU seconds per run (all threads), averaged over the timed runs: a proxy for the
    /// idle-machine time of a one-thread run on a loaded machine.
    pub cpu_mean: f64,
}

/// Time spent in one kernel per run, with what the kernel is.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub index: usize,
    pub category: &'static str,
    /// The kernel's line of `sched::print_kernels`.
    pub description: String,
    pub seconds: f64,
    pub flops: u64,
}

/// One benchmarked workload.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    /// `train NAME` or `model NAME`.
    pub workload: String,
    /// `train_step` or `inference`.
    pub kind: &'static str,
    pub batch: usize,
    pub threads: usize,
    /// Where the inputs came from: `data` (the first training batch) or `random`.
    pub inputs: &'static str,
    /// Compile time by stage (seconds), in order.
    pub compile: Vec<(&'static str, f64)>,
    /// Seconds to prepare the data block (train blocks only; not part of compiling).
    pub data_seconds: Option<f64>,
    pub nodes: usize,
    pub kernels: usize,
    pub kernels_compiled: usize,
    pub flops: u64,
    pub params: usize,
    /// Bytes of the planned temporaries (slots after reuse) and without reuse.
    pub temp_bytes: (usize, usize),
    pub time: Stats,
    /// Per-kernel times, slowest first (with `BenchOptions::profile`).
    pub profile: Option<Vec<KernelTime>>,
}

impl BenchResult {
    pub fn compile_total(&self) -> f64 {
        self.compile.iter().map(|(_, s)| s).sum()
    }

    /// Per-kernel seconds summed by category, largest first.
    pub fn profile_by_category(&self) -> Vec<(&'static str, f64, usize)> {
        let mut out: Vec<(&'static str, f64, usize)> = Vec::new();
        for k in self.profile.iter().flatten() {
            match out.iter_mut().find(|(c, _, _)| *c == k.category) {
                Some(e) => {
                    e.1 += k.seconds;
                    e.2 += 1;
                }
                None => out.push((k.category, k.seconds, 1)),
            }
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }

    /// The result as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |s: f64| s * 1e3;
        let mut compile = serde_json::Map::new();
        for (stage, s) in &self.compile {
            compile.insert((*stage).into(), serde_json::json!(ms(*s)));
        }
        let mut obj = serde_json::json!({
            "workload": self.workload,
            "kind": self.kind,
            "batch": self.batch,
            "threads": self.threads,
            "inputs": self.inputs,
            "compile_ms": compile,
            "compile_total_ms": ms(self.compile_total()),
            "nodes": self.nodes,
            "kernels": self.kernels,
            "kernels_compiled": self.kernels_compiled,
            "flops": self.flops,
            "params": self.params,
            "temp_bytes": self.temp_bytes.0,
            "temp_bytes_unplanned": self.temp_bytes.1,
            "iters": self.time.iters,
            "warmup": self.time.warmup,
            "median_ms": ms(self.time.median),
            "q1_ms": ms(self.time.q1),
            "q3_ms": ms(self.time.q3),
            "min_ms": ms(self.time.min),
            "max_ms": ms(self.time.max),
            "cpu_ms": ms(self.time.cpu_mean),
        });
        if let Some(d) = self.data_seconds {
            obj["data_ms"] = serde_json::json!(ms(d));
        }
        if let Some(p) = &self.profile {
            let cats: Vec<serde_json::Value> = self
                .profile_by_category()
                .iter()
                .map(|(c, s, n)| serde_json::json!({"category": c, "ms": ms(*s), "kernels": n}))
                .collect();
            obj["profile_categories"] = serde_json::Value::Array(cats);
            let all: Vec<serde_json::Value> = p
                .iter()
                .map(|k| {
                    serde_json::json!({"kernel": k.index, "category": k.category, "ms": ms(k.seconds),
                        "flops": k.flops, "description": k.description})
                })
                .collect();
            obj["profile_kernels"] = serde_json::Value::Array(all);
        }
        obj
    }
}

/// Process CPU time (all threads) in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; the clock id is a constant the kernel knows.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The `p`-quantile (0..=1) of sorted values, linearly interpolated.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let x = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let i = x.floor() as usize;
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] + (sorted[j] - sorted[i]) * (x - i as f64)
}

/// Times `f`: `warmup` runs, then `iters` runs (or enough for `target` seconds).
pub fn time_runs<E>(
    warmup: usize,
    iters: Option<usize>,
    target: f64,
    mut f: impl FnMut(usize) -> Result<(), E>,
) -> Result<Stats, E> {
    let mut warm = Duration::ZERO;
    for i in 0..warmup {
        let t = Instant::now();
        f(i)?;
        warm += t.elapsed();
    }
    let iters = iters.unwrap_or_else(|| {
        let per = if warmup > 0 { warm.as_secs_f64() / warmup as f64 } else { 0.01 };
        ((target / per.max(1e-7)).ceil() as usize).clamp(10, 10_000)
    });
    let mut times = Vec::with_capacity(iters);
    let c0 = cpu_seconds();
    for i in 0..iters {
        let t = Instant::now();
        f(warmup + i)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - c0) / iters.max(1) as f64;
    times.sort_by(f64::total_cmp);
    Ok(Stats {
        iters,
        warmup,
        median: quantile(&times, 0.5),
        q1: quantile(&times, 0.25),
        q3: quantile(&times, 0.75),
        min: times.first().copied().unwrap_or(f64::NAN),
        max: times.last().copied().unwrap_or(f64::NAN),
        cpu_mean: cpu,
    })
}

/// What kind of work a loop kernel does, for profiles.
fn loop_category(l: &LoopKernel) -> &'static str {
    let gathers = l.exprs.iter().any(|e| matches!(e, Expr::GatherLoad { .. }));
    let scatter = l.stores.iter().any(|s| matches!(s.source, StoreSource::AddIndirect { .. }));
    let topk_scan =
        l.stores.iter().any(|s| matches!(s.source, StoreSource::TopK { .. } | StoreSource::ScanSum(_)));
    if scatter {
        "scatter"
    } else if gathers {
        "gather"
    } else if topk_scan {
        "topk/scan"
    } else if !l.reductions.is_empty() {
        "reduction"
    } else {
        "elementwise"
    }
}

/// The category of each kernel of a schedule: `matmul`, `matmul+epilogue`, `reduction` (a
/// loop with row reductions: softmax, norms, sums), `elementwise`, `gather`, `scatter`,
/// `topk/scan`; `(serial)` is appended to loops that must run on one thread.
pub fn kernel_categories(s: &Schedule) -> Vec<&'static str> {
    s.kernels
        .iter()
        .map(|k| match &k.body {
            KernelBody::MatMul(m) => {
                if m.epilogue.is_some() {
                    "matmul+epilogue"
                } else {
                    "matmul"
                }
            }
            KernelBody::Loop(l) => {
                let c = loop_category(l);
                if l.split == Split::Serial {
                    match c {
                        "scatter" => "scatter (serial)",
                        "gather" => "gather (serial)",
                        "topk/scan" => "topk/scan (serial)",
                        "reduction" => "reduction (serial)",
                        _ => "elementwise (serial)",
                    }
                } else {
                    c
                }
            }
        })
        .collect()
}

/// Per-kernel times of `exe` (whose buffers hold the inputs of a previous run), slowest first.
pub fn profile(exe: &mut Executable, iters: usize) -> Vec<KernelTime> {
    let iters = iters.max(1);
    let totals = exe.profile_kernels(iters);
    let s = exe.schedule();
    let cats = kernel_categories(s);
    let lines: Vec<String> = crate::sched::print_kernels(s)
        .lines()
        .skip(1)
        .take(s.kernels.len())
        .map(|l| l.trim().to_string())
        .collect();
    let mut out: Vec<KernelTime> = totals
        .iter()
        .enumerate()
        .map(|(i, t)| KernelTime {
            index: i,
            category: cats[i],
            description: lines.get(i).cloned().unwrap_or_default(),
            seconds: t.as_secs_f64() / iters as f64,
            flops: s.kernels[i].flops,
        })
        .collect();
    out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    out
}

fn scalar_f32(v: f64) -> Tensor {
    Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v as f32))
}

fn profile_iters(median: f64) -> usize {
    ((1.0 / median.max(1e-6)).ceil() as usize).clamp(3, 2000)
}

/// Benchmarks the training step of train block `run` (empty: the only one of the file).
pub fn bench_train(prog: &Program, run: &str, opts: &BenchOptions) -> Result<BenchResult, TrainError> {
    let compile_err = |d| TrainError::Compile { sources: prog.sources.clone(), diagnostics: d };
    let block = find_train_block(prog, run).map_err(compile_err)?;
    let spec = lower_train_block(prog, &block.name.name).map_err(compile_err)?;
    let t = Instant::now();
    let data = prepare_data(prog, &spec, false)?;
    let data_seconds = t.elapsed().as_secs_f64();
    let batch =
        data.prepared.batches("train", 0).map_err(TrainError::Data)?.next().ok_or_else(|| {
            TrainError::Runtime(format!("data `{}`: the training split is empty", spec.data))
        })?;
    // the step graph for the size of this batch (the data block's batch size unless the split
    // is smaller than one batch)
    let fields: Vec<(String, TensorType)> = batch
        .fields
        .iter()
        .map(|(n, t)| (n.clone(), TensorType::new(t.dtype(), t.shape().to_vec())))
        .collect();
    let t = Instant::now();
    let g = crate::train::graph::build_step_graph(prog, block, &spec, &fields, Some(data.label.clone()))
        .map_err(compile_err)?;
    let t_elab = t.elapsed().as_secs_f64();
    let (exe, mut compile, nodes) = compile_graph(g, opts, spec.seed).map_err(TrainError::Runtime)?;
    compile.insert(0, ("elaborate+autodiff", t_elab));
    let mut exe = exe;
    let (b1, b2) = match spec.optimizer {
        Optimizer::Adam { beta1, beta2, .. } => (beta1, beta2),
        Optimizer::Sgd { .. } => (0.0, 0.0),
    };
    let lr = spec.optimizer.lr();
    let seed = spec.seed;
    let mut inputs: Vec<Tensor> = exe
        .graph()
        .inputs
        .iter()
        .map(|i| match i.name.as_str() {
            "@lr" => Ok(scalar_f32(lr)),
            "@c1" | "@c2" => Ok(scalar_f32(1.0)),
            "rng_key" => Ok(Tensor::I32(ArrayD::from_elem(IxDyn(&[]), 0))),
            name => batch
                .get(name)
                .cloned()
                .ok_or_else(|| TrainError::Runtime(format!("step input `{name}` is not a batch field"))),
        })
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = exe.graph().inputs.iter().map(|i| i.name.clone()).collect();
    let time = time_runs(opts.warmup, opts.iters, opts.target_seconds, |i| {
        let t = (i + 1) as i32;
        for (name, x) in names.iter().zip(inputs.iter_mut()) {
            match name.as_str() {
                "@c1" => *x = scalar_f32(1.0 / (1.0 - b1.powi(t))),
                "@c2" => *x = scalar_f32(1.0 / (1.0 - b2.powi(t))),
                "rng_key" => *x = Tensor::I32(ArrayD::from_elem(IxDyn(&[]), step_key(seed, i as u64))),
                _ => {}
            }
        }
        exe.run(&inputs).map(|_| ()).map_err(|e| TrainError::Runtime(e.0))
    })?;
    let profile = opts.profile.then(|| profile(&mut exe, profile_iters(time.median)));
    Ok(BenchResult {
        workload: format!("train {}", spec.name),
        kind: "train_step",
        batch: batch.len(),
        threads: exe.threads(),
        inputs: "data",
        compile,
        data_seconds: Some(data_seconds),
        nodes,
        kernels: exe.schedule().kernels.len(),
        kernels_compiled: exe.timings().kernels_compiled,
        flops: exe.graph().flops(),
        params: exe.graph().params.iter().map(|p| p.ty.numel()).sum(),
        temp_bytes: (exe.schedule().plan.total_bytes(), exe.schedule().plan.unplanned_bytes),
        time,
        profile,
    })
}

/// Compile stages and their seconds, in order.
type Stages = Vec<(&'static str, f64)>;

/// Optimises and compiles `g`; returns the executable, the stages after elaboration and the
/// node count after the passes.
fn compile_graph(g: Graph, opts: &BenchOptions, seed: u64) -> Result<(Executable, Stages, usize), String> {
    let t = Instant::now();
    let optimized = run_pipeline(g, &PipelineOptions::default());
    let t_passes = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let exe =
        Executable::new(&optimized, &ExecOptions { threads: opts.threads, seed, parallel_min_work: None })
            .map_err(|e| e.0)?;
    let t_new = t.elapsed().as_secs_f64();
    let st = exe.timings();
    let (s, c, f) = (st.schedule.as_secs_f64(), st.codegen.as_secs_f64(), st.finalize.as_secs_f64());
    let stages = vec![
        ("passes", t_passes),
        ("schedule", s),
        ("codegen", c),
        ("finalize", f),
        ("buffers+init", (t_new - s - c - f).max(0.0)),
    ];
    Ok((exe, stages, optimized.len()))
}

/// Deterministic inputs for timing: floats in [-1, 1), ints in [0, 4) (valid token ids for
/// every example model), bools alternating.
pub fn random_inputs(g: &Graph) -> Vec<Tensor> {
    let mut state: u32 = 0x9e37_79b9;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    g.inputs
        .iter()
        .map(|i| {
            let n = i.ty.numel();
            let shape = i.ty.shape.clone();
            match i.ty.dtype {
                DType::F32 => Tensor::F32(
                    ArrayD::from_shape_vec(
                        shape,
                        (0..n).map(|_| (next() >> 8) as f32 / 8_388_608.0 - 1.0).collect(),
                    )
                    .expect("shape matches"),
                ),
                DType::I32 => Tensor::I32(
                    ArrayD::from_shape_vec(shape, (0..n).map(|_| (next() % 4) as i32).collect())
                        .expect("shape matches"),
                ),
                DType::Bool => Tensor::I32(
                    ArrayD::from_shape_vec(shape, (0..n).map(|k| (k % 2) as i32).collect())
                        .expect("shape matches"),
                ),
            }
        })
        .collect()
}

/// Why a model benchmark failed.
#[derive(Debug)]
pub enum ModelBenchError {
    Compile(Vec<crate::diag::Diagnostic>),
    Runtime(String),
}

/// Benchmarks the forward pass of `model` with `args`, the symbolic dimensions `dims` and, when
/// given, `B = batch`.
pub fn bench_model(
    prog: &Program,
    model: &str,
    args: &[(String, Value)],
    dims: &[(String, i64)],
    batch: Option<usize>,
    opts: &BenchOptions,
) -> Result<BenchResult, ModelBenchError> {
    let mut eo = ElabOptions { dims: dims.to_vec(), ..ElabOptions::default() };
    if let Some(b) = batch {
        eo.dims.retain(|(n, _)| n != "B");
        eo.dims.push(("B".into(), b as i64));
    }
    let t = Instant::now();
    let e = elaborate_model(prog, model, args, &eo).map_err(ModelBenchError::Compile)?;
    let t_elab = t.elapsed().as_secs_f64();
    let b = e.dims.iter().find(|(n, _)| n == "B").map_or(batch.unwrap_or(0), |(_, v)| *v as usize);
    let (mut exe, mut compile, nodes) =
        compile_graph(e.graph, opts, opts.seed).map_err(ModelBenchError::Runtime)?;
    compile.insert(0, ("elaborate", t_elab));
    if let Some(path) = &opts.checkpoint {
        exe.load_safetensors(path).map_err(|e| ModelBenchError::Runtime(e.0))?;
    }
    let inputs = random_inputs(exe.graph());
    let time = time_runs(opts.warmup, opts.iters, opts.target_seconds, |_| {
        exe.run(&inputs).map(|_| ()).map_err(|e| ModelBenchError::Runtime(e.0))
    })?;
    let profile = opts.profile.then(|| profile(&mut exe, profile_iters(time.median)));
    Ok(BenchResult {
        workload: format!("model {model}"),
        kind: "inference",
        batch: b,
        threads: exe.threads(),
        inputs: "random",
        compile,
        data_seconds: None,
        nodes,
        kernels: exe.schedule().kernels.len(),
        kernels_compiled: exe.timings().kernels_compiled,
        flops: exe.graph().flops(),
        params: exe.graph().params.iter().map(|p| p.ty.numel()).sum(),
        temp_bytes: (exe.schedule().plan.total_bytes(), exe.schedule().plan.unplanned_bytes),
        time,
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.25), 2.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.5), 1.5);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn time_runs_counts_and_orders() {
        let mut calls = Vec::new();
        let s = time_runs::<()>(2, Some(5), 1.0, |i| {
            calls.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!((s.iters, s.warmup), (5, 2));
        assert!(s.min <= s.q1 && s.q1 <= s.median && s.median <= s.q3 && s.q3 <= s.max);
    }
}
