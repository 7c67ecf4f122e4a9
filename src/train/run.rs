//! The training loop: data prepared once, a compiled step executable per batch size (the last
//! partial batch of an epoch gets its own), evaluation, `metrics.jsonl`, checkpoints, resume,
//! faults and interruption.
//!
//! Reproducibility: the batch order and augmentation come from `(data seed, epoch)`, the
//! random key of step `s` from `(train seed, s)`, and the parameters from the train seed, so a
//! run resumed from the checkpoint after step `s` computes exactly what an uninterrupted run
//! computes (at one thread; sums split over threads may round differently).

use super::checkpoint::{self, CheckpointMeta};
use super::graph::{build_eval_graph, build_step_graph};
use super::spec::{Length, MetricKind, Optimizer, TrainSpec, find_train_block, lower_train_block};
use crate::data::{DataError, PreparedData, RunOptions, lower_data_block};
use crate::diag::Diagnostic;
use crate::elab::Program;
use crate::ir::{Graph, TensorType};
use crate::passes::{PipelineOptions, run_pipeline};
use crate::runtime::{ExecOptions, Executable};
use crate::source::{SourceMap, Span};
use crate::syntax::ast::{ConfigBlock, Item};
use crate::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How to run a train block (the CLI's flags).
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Train block name; empty for the only one of the file.
    pub run: String,
    pub steps: Option<u64>,
    pub epochs: Option<u64>,
    pub out: Option<PathBuf>,
    pub seed: Option<u64>,
    pub threads: Option<usize>,
    pub resume: bool,
    /// Progress on stderr: a redrawn bar (`Bar`), plain lines (`Lines`) or nothing.
    pub progress: Progress,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    Bar,
    #[default]
    Lines,
    Quiet,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub run: String,
    pub steps: u64,
    pub wall_seconds: f64,
    /// Seconds spent building (elaborating, differentiating, compiling) the step graph.
    pub compile_seconds: f64,
    pub out_dir: PathBuf,
    pub checkpoint: Option<PathBuf>,
    pub last_train_loss: Option<f64>,
    /// Metrics of the final evaluation: `(split, metric, value)`.
    pub final_metrics: Vec<(String, String, f64)>,
    pub resumed_from: Option<u64>,
}

/// Why a run stopped without finishing.
#[derive(Debug)]
pub enum TrainError {
    /// Problems in the file (rendered against `sources`).
    Compile {
        sources: SourceMap,
        diagnostics: Vec<Diagnostic>,
    },
    Data(DataError),
    /// A run-time failure (bad checkpoint, unwritable directory...).
    Runtime(String),
    /// A non-finite loss or gradient; the diagnostic points at the first non-finite value.
    NonFinite {
        sources: SourceMap,
        diagnostic: Box<Diagnostic>,
        step: u64,
    },
    /// Ctrl-C: a checkpoint of the last finished step was written.
    Interrupted {
        step: u64,
        checkpoint: PathBuf,
    },
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Compile { diagnostics, .. } => {
                for d in diagnostics {
                    writeln!(f, "[{}]: {}", d.code, d.message)?;
                }
                Ok(())
            }
            TrainError::Data(e) => write!(f, "{e}"),
            TrainError::Runtime(m) => write!(f, "error: {m}"),
            TrainError::NonFinite { diagnostic, .. } => {
                write!(f, "error[{}]: {}", diagnostic.code, diagnostic.message)
            }
            TrainError::Interrupted { step, checkpoint } => {
                write!(f, "interrupted after step {step}; saved {}", checkpoint.display())
            }
        }
    }
}

impl std::error::Error for TrainError {}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks a running training loop to stop after its current step (what Ctrl-C does).
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// A hash of every source file of the program (the model source, used files, the stdlib).
pub fn source_hash(prog: &Program) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (_, f) in prog.sources.files() {
        h.update(f.text.as_bytes());
        h.update(&[0]);
    }
    format!("{:016x}", h.digest())
}

fn compile_err(prog: &Program, diagnostics: Vec<Diagnostic>) -> TrainError {
    TrainError::Compile { sources: prog.sources.clone(), diagnostics }
}

/// The data block, prepared, with the batch fields of the training split.
pub struct RunData {
    pub prepared: PreparedData,
    pub fields: Vec<(String, TensorType)>,
    pub batch: usize,
    pub label: (Span, String),
}

/// Lowers and runs the data block named by the train spec.
pub fn prepare_data(prog: &Program, spec: &TrainSpec, progress: bool) -> Result<RunData, TrainError> {
    let found = prog.resolve(prog.root, &spec.data).and_then(|r| match prog.item(r) {
        Item::Data(b) => Some((r, b)),
        _ => None,
    });
    let Some((r, block)) = found else {
        let d = Diagnostic::error("E0111", format!("`{}` is not a `data` block", spec.data))
            .at(spec.span, "in this run")
            .with_help("declare it with `data NAME { ... }` in this file or a used one");
        return Err(compile_err(prog, vec![d]));
    };
    // Paths in a data block are relative to the file that declares it.
    let file = crate::source::FileId(r.file);
    let base = prog.sources.get(file).path.as_ref().and_then(|p| p.parent().map(Path::to_path_buf));
    let plan = lower_data_block(block, base.as_deref().unwrap_or(Path::new(".")))
        .map_err(|d| compile_err(prog, d.0))?;
    let prepared = crate::data::run::run(&plan, &RunOptions { write_removed: None, progress })
        .map_err(TrainError::Data)?;
    let first =
        prepared.batches("train", 0).map_err(TrainError::Data)?.next().ok_or_else(|| {
            TrainError::Runtime(format!("data `{}`: the training split is empty", spec.data))
        })?;
    let fields: Vec<(String, TensorType)> = first
        .fields
        .iter()
        .map(|(n, t)| (n.clone(), TensorType::new(t.dtype(), t.shape().to_vec())))
        .collect();
    let sig: Vec<String> = fields.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    let label = (block.name.span, format!("batches of `{}`: {}", spec.data, sig.join(", ")));
    Ok(RunData { prepared, batch: plan.batch.size, fields, label })
}

fn with_batch(fields: &[(String, TensorType)], b: usize) -> Vec<(String, TensorType)> {
    fields
        .iter()
        .map(|(n, t)| {
            let mut shape = t.shape.clone();
            if let Some(d) = shape.first_mut() {
                *d = b;
            }
            (n.clone(), TensorType::new(t.dtype, shape))
        })
        .collect()
}

fn scalar_f32(v: f64) -> Tensor {
    Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v as f32))
}

fn first_f32(t: &Tensor) -> f64 {
    match t {
        Tensor::F32(a) => a.iter().next().copied().unwrap_or(f32::NAN) as f64,
        Tensor::I32(a) => a.iter().next().copied().unwrap_or(0) as f64,
    }
}

/// The i32 random key of step `step`.
pub fn step_key(seed: u64, step: u64) -> i32 {
    use crate::ir::random_mix32;
    let a = random_mix32(seed as u32 ^ 0x85eb_ca6b) ^ (seed >> 32) as u32;
    random_mix32(a ^ random_mix32(step as u32 ^ 0xc2b2_ae35) ^ (step >> 32) as u32) as i32
}

/// A compiled graph and its unoptimised source (for locating faults).
struct Compiled {
    exe: Executable,
    reference: Graph,
}

/// Evaluation graphs compiled per batch size.
pub struct Evaluator {
    evals: HashMap<usize, Executable>,
    options: ExecOptions,
}

impl Evaluator {
    pub fn new(options: ExecOptions) -> Evaluator {
        Evaluator { evals: HashMap::new(), options }
    }

    fn exe(
        &mut self,
        prog: &Program,
        block: &ConfigBlock,
        spec: &TrainSpec,
        fields: &[(String, TensorType)],
        b: usize,
    ) -> Result<&mut Executable, TrainError> {
        if !self.evals.contains_key(&b) {
            let fields = with_batch(fields, b);
            let g = build_eval_graph(prog, block, spec, &fields).map_err(|d| compile_err(prog, d))?;
            let optimized = run_pipeline(g, &PipelineOptions::default());
            let exe = Executable::new(&optimized, &self.options).map_err(|e| TrainError::Runtime(e.0))?;
            self.evals.insert(b, exe);
        }
        Ok(self.evals.get_mut(&b).expect("built above"))
    }

    /// Mean loss and metrics over a split (batch means weighted by rows), with the parameters
    /// `params` (by path; optimizer state is ignored).
    pub fn evaluate(
        &mut self,
        prog: &Program,
        block: &ConfigBlock,
        spec: &TrainSpec,
        data: &RunData,
        params: &[(String, Tensor)],
        split: &str,
    ) -> Result<Vec<(String, f64)>, TrainError> {
        let batches: Vec<_> = data.prepared.batches(split, 0).map_err(TrainError::Data)?.collect();
        // Per output: the row-weighted sum of each element, and the output's shape.
        let mut sums: Vec<(Vec<f64>, Vec<usize>)> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut rows = 0usize;
        let mut loaded: Vec<usize> = Vec::new();
        for batch in batches {
            let b = batch.len();
            if b == 0 {
                continue;
            }
            let exe = self.exe(prog, block, spec, &data.fields, b)?;
            if !loaded.contains(&b) {
                let values: Vec<Tensor> = exe
                    .graph()
                    .params
                    .iter()
                    .map(|p| {
                        params.iter().find(|(n, _)| *n == p.path).map(|(_, t)| t.clone()).ok_or_else(|| {
                            TrainError::Runtime(format!("evaluation parameter `{}` is not trained", p.path))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                exe.set_params(&values).map_err(|e| TrainError::Runtime(e.0))?;
                loaded.push(b);
            }
            let inputs = exe
                .graph()
                .inputs
                .iter()
                .map(|i| {
                    batch.get(&i.name).cloned().ok_or_else(|| {
                        TrainError::Runtime(format!("evaluation input `{}` is not a batch field", i.name))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = exe.run(&inputs).map_err(|e| TrainError::Runtime(e.0))?;
            if names.is_empty() {
                names = exe.graph().outputs.iter().map(|o| o.name.clone()).collect();
                sums =
                    out.iter().map(|t| (vec![0.0; t.shape().iter().product()], t.shape().to_vec())).collect();
            }
            for ((s, _), t) in sums.iter_mut().zip(&out) {
                let vals: Vec<f64> = match t {
                    Tensor::F32(a) => a.iter().map(|&v| v as f64).collect(),
                    Tensor::I32(a) => a.iter().map(|&v| v as f64).collect(),
                };
                for (acc, v) in s.iter_mut().zip(vals) {
                    *acc += v * b as f64;
                }
            }
            rows += b;
        }
        if rows == 0 {
            return Err(TrainError::Runtime(format!("split `{split}` has no rows to evaluate")));
        }
        // A scalar metric is one value; a tensor metric is reported element by element as
        // `name.i.j` (e.g. the load of expert j in block i).
        let mut out: Vec<(String, f64)> = Vec::new();
        for (name, (s, shape)) in names.into_iter().zip(sums) {
            if s.len() == 1 {
                out.push((name, s[0] / rows as f64));
                continue;
            }
            for (flat, v) in s.iter().enumerate() {
                let mut idx = Vec::new();
                let mut rest = flat;
                for &d in shape.iter().rev() {
                    idx.push(rest % d.max(1));
                    rest /= d.max(1);
                }
                idx.reverse();
                let suffix: Vec<String> = idx.iter().map(ToString::to_string).collect();
                out.push((format!("{name}.{}", suffix.join(".")), v / rows as f64));
            }
        }
        let loss = out.first().map_or(f64::NAN, |(_, l)| *l);
        for m in &spec.metrics {
            if let MetricKind::Perplexity = m.kind {
                out.push((m.name.clone(), loss.exp()));
            }
        }
        // Metrics in the order declared, loss first.
        let mut ordered = vec![("loss".to_string(), loss)];
        for m in &spec.metrics {
            let prefix = format!("{}.", m.name);
            for (n, v) in out.iter().filter(|(n, _)| *n == m.name || n.starts_with(&prefix)) {
                ordered.push((n.clone(), *v));
            }
        }
        Ok(ordered)
    }
}

/// Everything a run needs between steps.
struct Runner<'a> {
    prog: &'a Program,
    block: &'a ConfigBlock,
    spec: TrainSpec,
    data: RunData,
    opts: &'a TrainOptions,
    seed: u64,
    steps: HashMap<usize, Compiled>,
    evaluator: Evaluator,
    /// Batch size of the step executable holding the current parameters.
    current: usize,
    out_dir: PathBuf,
    metrics: std::fs::File,
    hash: String,
}

impl Runner<'_> {
    fn exec_options(&self) -> ExecOptions {
        ExecOptions { threads: self.opts.threads, seed: self.seed, parallel_min_work: None }
    }

    fn build_step(&self, b: usize) -> Result<Compiled, TrainError> {
        let fields = with_batch(&self.data.fields, b);
        let g = build_step_graph(self.prog, self.block, &self.spec, &fields, Some(self.data.label.clone()))
            .map_err(|d| compile_err(self.prog, d))?;
        let optimized = run_pipeline(g.clone(), &PipelineOptions::default());
        let exe = Executable::new(&optimized, &self.exec_options()).map_err(|e| TrainError::Runtime(e.0))?;
        Ok(Compiled { exe, reference: g })
    }

    /// Makes the step executable for batch size `b` current, carrying the parameters over.
    fn step_exe(&mut self, b: usize) -> Result<&mut Compiled, TrainError> {
        if !self.steps.contains_key(&b) {
            let c = self.build_step(b)?;
            self.steps.insert(b, c);
        }
        if b != self.current {
            let values = self.steps[&self.current].exe.params();
            self.steps
                .get_mut(&b)
                .expect("built above")
                .exe
                .set_params(&values)
                .map_err(|e| TrainError::Runtime(e.0))?;
            self.current = b;
        }
        Ok(self.steps.get_mut(&b).expect("built above"))
    }

    fn params_by_path(&self) -> Vec<(String, Tensor)> {
        let c = &self.steps[&self.current];
        c.exe.graph().params.iter().map(|p| p.path.clone()).zip(c.exe.params()).collect()
    }

    fn evaluate(&mut self, split: &str) -> Result<Vec<(String, f64)>, TrainError> {
        let params = self.params_by_path();
        self.evaluator.evaluate(self.prog, self.block, &self.spec, &self.data, &params, split)
    }

    fn log(&mut self, line: serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.metrics, "{line}")
            .and_then(|_| self.metrics.flush())
            .map_err(|e| TrainError::Runtime(format!("cannot write metrics.jsonl: {e}")))
    }

    fn save(&mut self, step: u64, epoch: u64, batch_in_epoch: u64) -> Result<PathBuf, TrainError> {
        let meta = CheckpointMeta {
            run: self.spec.name.clone(),
            step,
            epoch,
            batch_in_epoch,
            seed: self.seed,
            source_hash: self.hash.clone(),
            vocab: self.data.prepared.vocab().map(|v| v.chars.iter().collect()),
        };
        let params = self.params_by_path();
        let dir = self.out_dir.join("checkpoints");
        checkpoint::save(&dir, &params, &meta, self.spec.keep).map_err(TrainError::Runtime)
    }

    /// Finds the first node of the step graph whose value is newly non-finite (NaN appearing,
    /// or an infinity from finite arguments) on this batch and the current parameters.
    fn locate_fault(&self, inputs: &[Tensor], step: u64, loss: f64, norm: f64) -> TrainError {
        let c = &self.steps[&self.current];
        let g = &c.reference;
        let params = c.exe.params();
        // The passes keep `Graph::params`, so the optimised executable's parameters (unchanged
        // by the guarded step) feed the unoptimised reference graph as they are.
        let mut diag = Diagnostic::error(
            "E0807",
            format!(
                "step {}: the loss is {} and the gradient norm {}",
                step + 1,
                fmt_num(loss),
                fmt_num(norm)
            ),
        )
        .with_help(
            "the parameters were left at their values before this step and the last checkpoint is intact; \
             look at the operation above, lower the learning rate, or clip gradients with `clip: 1.0`",
        );
        match crate::interp::run_all_nodes::<f32>(g, inputs, &params) {
            Ok(values) => {
                let bad = |t: &Tensor| -> (bool, bool) {
                    match t {
                        Tensor::F32(a) => (a.iter().any(|v| v.is_nan()), a.iter().any(|v| v.is_infinite())),
                        Tensor::I32(_) => (false, false),
                    }
                };
                for id in g.node_ids() {
                    let n = g.node(id);
                    if n.args.is_empty()
                        && !matches!(n.op, crate::ir::Op::Param { .. } | crate::ir::Op::Input { .. })
                    {
                        continue; // constants such as -inf masks are non-finite by design
                    }
                    let (nan, inf) = bad(&values[id.index()]);
                    if !nan && !inf {
                        continue;
                    }
                    let args: Vec<(bool, bool)> = n.args.iter().map(|a| bad(&values[a.index()])).collect();
                    let new_nan = nan && !args.iter().any(|a| a.0);
                    let new_inf = inf && !args.iter().any(|a| a.0 || a.1);
                    if !(new_nan || new_inf) {
                        continue;
                    }
                    let what = if new_nan { "NaN" } else { "an infinity" };
                    let scope = g.scope_path(id);
                    let text = format!(
                        "`{}` gives {what} here{}",
                        n.op.name(),
                        if scope.is_empty() { String::new() } else { format!(" (in `{scope}`)") }
                    );
                    diag = match g.span(id) {
                        Some(s) => diag.at(s, text),
                        None => diag.with_note(text),
                    };
                    if let crate::ir::Op::Param { index } = n.op {
                        diag = diag.with_note(format!(
                            "parameter `{}` is not finite",
                            g.params[index as usize].path
                        ));
                    }
                    break;
                }
            }
            Err(e) => diag = diag.with_note(format!("the fault could not be located: {e}")),
        }
        TrainError::NonFinite {
            sources: self.prog.sources.clone(),
            diagnostic: Box::new(diag),
            step: step + 1,
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+inf".into() } else { "-inf".into() }
    } else {
        format!("{v:.4}")
    }
}

/// Runs train block `opts.run` of `prog` to the end (or a fault, or Ctrl-C).
pub fn train(prog: &Program, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    INTERRUPTED.store(false, Ordering::SeqCst);
    let block = find_train_block(prog, &opts.run).map_err(|d| compile_err(prog, d))?;
    let mut spec = lower_train_block(prog, &block.name.name).map_err(|d| compile_err(prog, d))?;
    if let Some(s) = opts.steps {
        spec.length = Length::Steps(s);
    }
    if let Some(e) = opts.epochs {
        spec.length = Length::Epochs(e);
    }
    let seed = opts.seed.unwrap_or(spec.seed);
    let data = prepare_data(prog, &spec, opts.progress == Progress::Bar)?;
    for s in &spec.eval_on {
        if !data.prepared.split_names().iter().any(|n| n == s) {
            let d = Diagnostic::error(
                "E0808",
                format!("`eval` names split `{s}`, which data `{}` does not have", spec.data),
            )
            .at(spec.span, "in this run")
            .with_help(format!("the splits are {}", data.prepared.split_names().join(", ")));
            return Err(compile_err(prog, vec![d]));
        }
    }
    if spec.eval_on.is_empty() {
        spec.eval_on = data.prepared.split_names().iter().filter(|s| *s != "train").cloned().collect();
    }
    let out_dir = opts.out.clone().unwrap_or_else(|| {
        spec.out.as_ref().map_or_else(|| Path::new("runs").join(&spec.name), PathBuf::from)
    });
    std::fs::create_dir_all(out_dir.join("checkpoints"))
        .map_err(|e| TrainError::Runtime(format!("cannot create `{}`: {e}", out_dir.display())))?;
    let hash = source_hash(prog);
    // Resume: the latest readable checkpoint, and the metrics logged up to it.
    let resume = if opts.resume {
        checkpoint::latest(&out_dir.join("checkpoints")).map_err(TrainError::Runtime)?
    } else {
        None
    };
    let metrics_path = out_dir.join("metrics.jsonl");
    if let Some((_, meta)) = &resume {
        if meta.source_hash != hash {
            return Err(TrainError::Runtime(format!(
                "the checkpoints in `{}` were written for a different version of the sources; \
                 train without --resume, or into a fresh directory with --out",
                out_dir.display()
            )));
        }
        let kept: String = std::fs::read_to_string(&metrics_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= meta.step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::runtime::checkpoint::write_atomically(&metrics_path, kept.as_bytes())
            .map_err(|e| TrainError::Runtime(e.0))?;
    }
    let metrics =
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&metrics_path)
            .map_err(|e| TrainError::Runtime(format!("cannot open `{}`: {e}", metrics_path.display())))?;
    if resume.is_none() {
        metrics.set_len(0).map_err(|e| TrainError::Runtime(format!("cannot truncate metrics.jsonl: {e}")))?;
    }
    let batch = data.batch;
    let mut r = Runner {
        prog,
        block,
        spec,
        data,
        opts,
        seed,
        steps: HashMap::new(),
        evaluator: Evaluator::new(ExecOptions { threads: opts.threads, seed, parallel_min_work: None }),
        current: batch,
        out_dir,
        metrics,
        hash,
    };
    let compile_start = Instant::now();
    r.steps.insert(batch, r.build_step(batch)?);
    let compile_seconds = compile_start.elapsed().as_secs_f64();
    // Schedule length: steps, or epochs times the batches of the first epoch.
    let (total, max_epochs) = match r.spec.length {
        Length::Steps(s) => (s, None),
        Length::Epochs(e) => {
            let per_epoch = r.data.prepared.batches("train", 0).map_err(TrainError::Data)?.count() as u64;
            (e * per_epoch, Some(e))
        }
    };
    let (mut step, mut epoch, mut skip) = (0u64, 0u64, 0u64);
    let mut resumed_from = None;
    if let Some((path, meta)) = &resume {
        let values = checkpoint::load(path, r.steps[&batch].exe.graph()).map_err(TrainError::Runtime)?;
        r.steps
            .get_mut(&batch)
            .expect("built")
            .exe
            .set_params(&values)
            .map_err(|e| TrainError::Runtime(e.0))?;
        (step, epoch, skip) = (meta.step, meta.epoch, meta.batch_in_epoch);
        resumed_from = Some(meta.step);
    }
    let loop_start = Instant::now();
    let start_step = step;
    let mut last_loss = None;
    let mut last_ckpt = resume.map(|(p, _)| p);
    let mut last_logged_ckpt = step;
    let is_adam = matches!(r.spec.optimizer, Optimizer::Adam { .. });
    'outer: loop {
        if max_epochs.is_some_and(|e| epoch >= e) || (max_epochs.is_none() && step >= total) {
            break;
        }
        let batches = r.data.prepared.batches("train", epoch).map_err(TrainError::Data)?;
        let mut bi = 0u64;
        for batch_data in batches {
            if bi < skip {
                bi += 1;
                continue;
            }
            if max_epochs.is_none() && step >= total {
                break 'outer;
            }
            let factor = r.spec.schedule.factor(step, total);
            let lr = r.spec.optimizer.lr() * factor;
            let (b1, b2) = match r.spec.optimizer {
                Optimizer::Adam { beta1, beta2, .. } => (beta1, beta2),
                Optimizer::Sgd { .. } => (0.0, 0.0),
            };
            let t = (step + 1) as i32;
            let seed = r.seed;
            let c = r.step_exe(batch_data.len())?;
            let inputs: Vec<Tensor> = c
                .exe
                .graph()
                .inputs
                .iter()
                .map(|i| match i.name.as_str() {
                    "@lr" => Ok(scalar_f32(lr)),
                    "@c1" if is_adam => Ok(scalar_f32(1.0 / (1.0 - b1.powi(t)))),
                    "@c2" if is_adam => Ok(scalar_f32(1.0 / (1.0 - b2.powi(t)))),
                    "rng_key" => Ok(Tensor::I32(ArrayD::from_elem(IxDyn(&[]), step_key(seed, step)))),
                    name => batch_data.get(name).cloned().ok_or_else(|| {
                        TrainError::Runtime(format!("step input `{name}` is not a batch field"))
                    }),
                })
                .collect::<Result<_, _>>()?;
            let out = c.exe.run(&inputs).map_err(|e| TrainError::Runtime(e.0))?;
            let loss = first_f32(&out[0]);
            let norm = first_f32(&out[1]);
            if !loss.is_finite() || !norm.is_finite() {
                return Err(r.locate_fault(&inputs, step, loss, norm));
            }
            step += 1;
            bi += 1;
            last_loss = Some(loss);
            let elapsed = loop_start.elapsed().as_secs_f64();
            if step % r.spec.log_every == 0 || step == total {
                r.log(serde_json::json!({
                    "step": step, "split": "train", "loss": loss, "grad_norm": norm, "lr": lr,
                    "epoch": epoch, "seconds": elapsed,
                }))?;
                report_progress(opts.progress, step, total, loss, elapsed, step - start_step);
            }
            if r.spec.eval_every.is_some_and(|n| step % n == 0) && step != total {
                let splits = r.spec.eval_on.clone();
                for s in &splits {
                    let m = r.evaluate(s)?;
                    log_eval(&mut r, step, s, &m, opts.progress)?;
                }
            }
            if r.spec.checkpoint_every.is_some_and(|n| step % n == 0) {
                last_ckpt = Some(r.save(step, epoch, bi)?);
                last_logged_ckpt = step;
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                let p = if last_logged_ckpt == step {
                    last_ckpt.clone().expect("just saved")
                } else {
                    r.save(step, epoch, bi)?
                };
                if opts.progress == Progress::Bar {
                    eprintln!();
                }
                return Err(TrainError::Interrupted { step, checkpoint: p });
            }
        }
        skip = 0;
        epoch += 1;
    }
    if opts.progress == Progress::Bar {
        eprintln!();
    }
    // Final evaluation on the listed splits and every other held-out split.
    let mut splits = r.spec.eval_on.clone();
    for s in r.data.prepared.split_names().to_vec() {
        if s != "train" && !splits.contains(&s) {
            splits.push(s);
        }
    }
    let mut final_metrics = Vec::new();
    for s in &splits {
        let m = r.evaluate(s)?;
        log_eval(&mut r, step, s, &m, opts.progress)?;
        for (name, v) in m {
            final_metrics.push((s.clone(), name, v));
        }
    }
    if last_logged_ckpt != step || last_ckpt.is_none() {
        last_ckpt = Some(r.save(step, epoch, 0)?);
    }
    Ok(TrainSummary {
        run: r.spec.name.clone(),
        steps: step,
        wall_seconds: started.elapsed().as_secs_f64(),
        compile_seconds,
        out_dir: r.out_dir.clone(),
        checkpoint: last_ckpt,
        last_train_loss: last_loss,
        final_metrics,
        resumed_from,
    })
}

fn log_eval(
    r: &mut Runner<'_>,
    step: u64,
    split: &str,
    m: &[(String, f64)],
    progress: Progress,
) -> Result<(), TrainError> {
    let mut obj = serde_json::Map::new();
    obj.insert("step".into(), step.into());
    obj.insert("split".into(), split.into());
    for (n, v) in m {
        obj.insert(n.clone(), serde_json::json!(v));
    }
    r.log(serde_json::Value::Object(obj))?;
    if progress != Progress::Quiet {
        let text: Vec<String> = m.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        if progress == Progress::Bar {
            eprint!("\r\x1b[2K");
        }
        eprintln!("step {step} {split}: {}", text.join(", "));
    }
    Ok(())
}

fn report_progress(progress: Progress, step: u64, total: u64, loss: f64, elapsed: f64, done: u64) {
    let rate = done as f64 / elapsed.max(1e-9);
    let eta = (total.saturating_sub(step)) as f64 / rate.max(1e-9);
    match progress {
        Progress::Quiet => {}
        Progress::Lines => eprintln!("step {step}/{total} loss {loss:.4} {rate:.1} steps/s eta {eta:.0}s"),
        Progress::Bar => {
            let width = 24;
            let filled = ((step as f64 / total.max(1) as f64) * width as f64) as usize;
            eprint!(
                "\r\x1b[2Kstep {step}/{total} [{}{}] loss {loss:.4} {rate:.1} steps/s eta {eta:.0}s",
                "#".repeat(filled.min(width)),
                ".".repeat(width - filled.min(width))
            );
        }
    }
}
