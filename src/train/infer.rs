//! Using a trained checkpoint: `eval` (the loss and metrics of a train block on a split),
//! `predict` (classes of the rows of a split or of a CSV file) and `generate` (text from a
//! character-level language model).

use super::checkpoint;
use super::graph::build_eval_graph;
use super::run::{Evaluator, RunData, TrainError, prepare_data, source_hash};
use super::spec::{TrainSpec, find_train_block, lower_train_block};
use crate::diag::Diagnostic;
use crate::elab::value::Value;
use crate::elab::{ConstEvaluator, ElabOptions, Program, elaborate_model_at, train_model_call};
use crate::ir::Graph;
use crate::passes::{PipelineOptions, run_pipeline};
use crate::runtime::{ExecOptions, Executable};
use crate::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn compile_err(prog: &Program, diagnostics: Vec<Diagnostic>) -> TrainError {
    TrainError::Compile { sources: prog.sources.clone(), diagnostics }
}

fn runtime(e: impl std::fmt::Display) -> TrainError {
    TrainError::Runtime(e.to_string())
}

/// A checkpoint's tensors for graph `g` (its parameters by path), and whether the checkpoint
/// was written for the same sources.
fn load_for(prog: &Program, path: &Path, g: &Graph) -> Result<(Vec<(String, Tensor)>, bool), TrainError> {
    let meta = checkpoint::read_meta(path).map_err(TrainError::Runtime)?;
    let values = checkpoint::load(path, g).map_err(TrainError::Runtime)?;
    let same = meta.source_hash == source_hash(prog);
    Ok((g.params.iter().map(|p| p.path.clone()).zip(values).collect(), same))
}

fn setup<'p>(
    prog: &'p Program,
    run: &str,
) -> Result<(TrainSpec, &'p crate::syntax::ast::ConfigBlock), TrainError> {
    let block = find_train_block(prog, run).map_err(|d| compile_err(prog, d))?;
    let spec = lower_train_block(prog, &block.name.name).map_err(|d| compile_err(prog, d))?;
    Ok((spec, block))
}

/// What `eval` reports.
pub struct EvalReport {
    /// `(split, metric, value)`.
    pub metrics: Vec<(String, String, f64)>,
    /// False when the checkpoint was written for other sources (a warning, not an error).
    pub same_sources: bool,
}

/// Evaluates train block `run` with the parameters of `ckpt` on `splits` (empty: every split
/// but `train`).
pub fn evaluate_checkpoint(
    prog: &Program,
    run: &str,
    ckpt: &Path,
    splits: &[String],
    threads: Option<usize>,
) -> Result<EvalReport, TrainError> {
    let (spec, block) = setup(prog, run)?;
    let data = prepare_data(prog, &spec, false)?;
    let g = build_eval_graph(prog, block, &spec, &data.fields).map_err(|d| compile_err(prog, d))?;
    let (params, same_sources) = load_for(prog, ckpt, &g)?;
    let splits: Vec<String> = if splits.is_empty() {
        data.prepared.split_names().iter().filter(|s| *s != "train").cloned().collect()
    } else {
        splits.to_vec()
    };
    let mut ev = Evaluator::new(ExecOptions { threads, seed: 0, parallel_min_work: None });
    let mut metrics = Vec::new();
    for s in &splits {
        for (name, v) in ev.evaluate(prog, block, &spec, &data, &params, s)? {
            metrics.push((s.clone(), name, v));
        }
    }
    Ok(EvalReport { metrics, same_sources })
}

/// The model of train block `run`, elaborated for inference with the given dimensions, and
/// compiled with the parameters of `ckpt`.
fn inference_model(
    prog: &Program,
    block: &crate::syntax::ast::ConfigBlock,
    dims: Vec<(String, i64)>,
    ckpt: &Path,
    threads: Option<usize>,
) -> Result<(Executable, bool), TrainError> {
    let Some((e, name, args)) = train_model_call(block) else {
        return Err(runtime(format!("train block `{}` names no model", block.name.name)));
    };
    let mut ce = ConstEvaluator::new(prog);
    let vals: Vec<(String, Value, Option<crate::source::Span>)> =
        args.iter().filter_map(|(n, x)| n.as_ref().map(|n| (n.clone(), ce.eval(x), Some(x.span)))).collect();
    let diags = ce.into_diagnostics();
    if diags.iter().any(Diagnostic::is_error) {
        return Err(compile_err(prog, diags));
    }
    let opts = ElabOptions { dims, ..ElabOptions::default() };
    let el = elaborate_model_at(prog, &name, &vals, Some(e.span), &opts).map_err(|d| compile_err(prog, d))?;
    let (params, same) = load_for(prog, ckpt, &el.graph)?;
    let g = run_pipeline(el.graph, &PipelineOptions::default());
    let mut exe = Executable::new(&g, &ExecOptions { threads, seed: 0, parallel_min_work: None })
        .map_err(|e| runtime(e.0))?;
    let values: Vec<Tensor> = params.into_iter().map(|(_, t)| t).collect();
    exe.set_params(&values).map_err(|e| runtime(e.0))?;
    Ok((exe, same))
}

/// How to generate text.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub run: String,
    pub checkpoint: PathBuf,
    pub prompt: String,
    pub tokens: usize,
    /// Softmax temperature; 0 picks the most likely character.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub seed: u64,
    pub threads: Option<usize>,
}

/// Samples `tokens` characters after `prompt` from a character-level language model whose
/// `forward` takes `ids: i32[B, T]` and returns logits `[B, T, vocab]` (or a tuple starting
/// with them). Returns the generated text (without the prompt).
pub fn generate(prog: &Program, opts: &GenerateOptions) -> Result<String, TrainError> {
    let (_, block) = setup(prog, &opts.run)?;
    let meta = checkpoint::read_meta(&opts.checkpoint).map_err(TrainError::Runtime)?;
    let Some(vocab) = meta.vocab else {
        return Err(runtime(format!(
            "`{}` has no vocabulary: `generate` needs a model trained on text with `tokens: chars()`",
            opts.checkpoint.display()
        )));
    };
    let chars: Vec<char> = vocab.chars().collect();
    let encode = |c: char| chars.iter().position(|&v| v == c).map_or(0, |i| i as i32 + 1);
    let (mut exe, _) = inference_model(prog, block, vec![("B".into(), 1)], &opts.checkpoint, opts.threads)?;
    let ty = exe
        .graph()
        .inputs
        .first()
        .map(|i| i.ty.clone())
        .ok_or_else(|| runtime("the model takes no input"))?;
    if ty.shape.len() != 2 || ty.shape[0] != 1 {
        return Err(runtime(format!("`generate` needs a model taking ids [B, T]; this one takes {ty}")));
    }
    let t = ty.shape[1];
    let mut ids: Vec<i32> = opts.prompt.chars().map(encode).collect();
    if ids.is_empty() {
        ids.push(encode('\n'));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut out = String::new();
    for _ in 0..opts.tokens {
        let start = ids.len().saturating_sub(t);
        let window = &ids[start..];
        let mut input = vec![0i32; t];
        input[..window.len()].copy_from_slice(window);
        let x = Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[1, t]), input).expect("1 x T ids"));
        let outs = exe.run(&[x]).map_err(|e| runtime(e.0))?;
        let Some(Tensor::F32(logits)) = outs.first() else {
            return Err(runtime("the model's first output is not f32 logits"));
        };
        let v = *logits.shape().last().unwrap_or(&0);
        if logits.len() != t * v {
            return Err(runtime(format!("expected logits [1, {t}, vocab], got {:?}", logits.shape())));
        }
        let flat: Vec<f32> = logits.iter().copied().collect();
        let row = &flat[(window.len() - 1) * v..window.len() * v];
        let next = sample(row, opts.temperature, opts.top_k, chars.len() + 1, &mut rng);
        ids.push(next as i32);
        out.push(if next == 0 { '\u{fffd}' } else { chars[next - 1] });
    }
    Ok(out)
}

/// Samples an id below `n` from logits (ids the vocabulary does not have are excluded).
fn sample(logits: &[f32], temperature: f64, top_k: Option<usize>, n: usize, rng: &mut ChaCha8Rng) -> usize {
    let n = n.min(logits.len());
    let mut order: Vec<usize> = (1..n).collect(); // id 0 is the unknown character
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if temperature <= 0.0 || order.len() == 1 {
        return order[0];
    }
    if let Some(k) = top_k {
        order.truncate(k.max(1));
    }
    let m = logits[order[0]] as f64;
    let w: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - m) / temperature).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (i, wi) in order.iter().zip(&w) {
        r -= wi;
        if r <= 0.0 {
            return *i;
        }
    }
    *order.last().expect("non-empty")
}

/// One classified row: its index in the split, the predicted class, its probability, and the
/// label when the data has one.
pub type Prediction = (usize, usize, f32, Option<i32>);

/// Where the rows to classify come from.
pub enum PredictInput<'a> {
    /// A split of the train block's data, prepared as for evaluation.
    Split(&'a str),
    /// A file in the format of the data block's first source, prepared like the training data.
    File(&'a Path),
}

/// Predicted classes of the rows of a split or an input file.
pub fn predict(
    prog: &Program,
    run: &str,
    ckpt: &Path,
    input: PredictInput<'_>,
    threads: Option<usize>,
) -> Result<Vec<Prediction>, TrainError> {
    let (spec, block) = setup(prog, run)?;
    let data: RunData = prepare_data(prog, &spec, false)?;
    let rows = match input {
        PredictInput::Split(s) => data.prepared.split_tensors(s),
        PredictInput::File(p) => data.prepared.input_rows(p),
    }
    .map_err(TrainError::Data)?;
    let x = rows.get("x").ok_or_else(|| runtime("the data has no `x` field"))?;
    let n = x.shape()[0];
    let b = data.batch;
    let (mut exe, _) = inference_model(prog, block, vec![("B".into(), b as i64)], ckpt, threads)?;
    let in_ty = exe
        .graph()
        .inputs
        .first()
        .map(|i| i.ty.clone())
        .ok_or_else(|| runtime("the model takes no input"))?;
    let row_len: usize = x.shape()[1..].iter().product();
    let labels: Option<Vec<i32>> = match rows.get("y") {
        Some(Tensor::I32(a)) => Some(a.iter().copied().collect()),
        _ => None,
    };
    // The model takes what the train block passes it: a feature model gets `x` as is; a
    // model of token ids gets `x` as i32 (as `x.int()` in the loss).
    let as_ids = in_ty.dtype != crate::ir::DType::F32;
    let flat: Vec<f32> = match x {
        Tensor::F32(a) => a.iter().copied().collect(),
        Tensor::I32(a) => a.iter().map(|&v| v as f32).collect(),
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let take = (n - i).min(b);
        // A last partial batch is padded with copies of its first row; their outputs are dropped.
        let mut v = flat[i * row_len..(i + take) * row_len].to_vec();
        for _ in take..b {
            v.extend_from_slice(&flat[i * row_len..(i + 1) * row_len]);
        }
        let shape = IxDyn(&in_ty.shape);
        let xb = if as_ids {
            Tensor::I32(
                ArrayD::from_shape_vec(shape, v.iter().map(|&f| f as i32).collect())
                    .map_err(|e| runtime(format!("input shape: {e}")))?,
            )
        } else {
            Tensor::F32(ArrayD::from_shape_vec(shape, v).map_err(|e| runtime(format!("input shape: {e}")))?)
        };
        let outs = exe.run(&[xb]).map_err(|e| runtime(e.0))?;
        let Some(Tensor::F32(logits)) = outs.first() else {
            return Err(runtime("the model's first output is not f32 logits"));
        };
        let c = *logits.shape().last().unwrap_or(&1);
        let lf: Vec<f32> = logits.iter().copied().collect();
        for r in 0..take {
            let row = &lf[r * c..(r + 1) * c];
            let (best, _) = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |m, (j, &v)| if v > m.1 { (j, v) } else { m });
            let mx = row[best];
            let z: f32 = row.iter().map(|&v| (v - mx).exp()).sum();
            out.push((i + r, best, 1.0 / z, labels.as_ref().map(|l| l[i + r])));
        }
        i += take;
    }
    Ok(out)
}
