//! The graphs of a training run, built from a train block:
//!
//! - the **step graph**: the objective in training mode, its gradient with respect to every
//!   trainable parameter (the autodiff pass), global-norm clipping and the optimizer update —
//!   one graph, so the scheduler fuses each parameter's update into one kernel. Parameters and
//!   optimizer state are graph parameters updated in place (`Graph::updates`). Every update is
//!   guarded: when the loss or the gradient norm is not finite, parameters, state and buffers
//!   keep their values, so the last good state survives a fault.
//! - the **evaluation graph**: the loss and each metric in evaluation mode.
//!
//! Step-graph inputs: the batch fields (`x`, `y`, ...), then `rng_key` when the model draws
//! random numbers, then the scalars `@lr` (this step's learning rate) and, for Adam, `@c1` and
//! `@c2` (the bias corrections `1 / (1 - beta^t)`). Outputs: `loss` and `grad_norm` (before
//! clipping).

use super::spec::{MetricKind, Optimizer, TrainSpec};
use crate::data::glob_match;
use crate::diag::Diagnostic;
use crate::elab::Program;
use crate::elab::objective::{ObjectiveExpr, elaborate_objective};
use crate::ir::{BinaryOp, DType, Graph, Init, NodeId, Op, ParamInfo, ReduceOp, TensorType, UnaryOp};
use crate::syntax::ast::ConfigBlock;

/// Path suffixes of optimizer state in checkpoints (`blocks.0.ff.w1.weight@adam.m`).
pub const STATE_SEPARATOR: char = '@';

/// A batch field and its type (the batch dimension first).
pub type Fields = [(String, TensorType)];

/// The training step graph (unoptimised; the runner optimises and compiles it).
pub fn build_step_graph(
    prog: &Program,
    block: &ConfigBlock,
    spec: &TrainSpec,
    fields: &Fields,
    data_label: Option<(crate::source::Span, String)>,
) -> Result<Graph, Vec<Diagnostic>> {
    let exprs = [ObjectiveExpr { what: "loss".into(), expr: &spec.loss, scalar: true }];
    let obj = elaborate_objective(prog, block, fields, &exprs, true, data_label)?;
    let mut g = obj.graph;
    g.name = format!("{}.step", spec.name);
    let mut loss = obj.nodes[0];
    if !g.shape(loss).is_empty() {
        loss = g.reshape(loss, vec![]);
    }
    add_optimizer(&mut g, spec, loss).map_err(|m| {
        vec![
            Diagnostic::error("E0806", format!("cannot build the training step: {m}"))
                .at(spec.span, "this run"),
        ]
    })?;
    Ok(g)
}

/// The evaluation graph: outputs `loss` and then each expression metric, in evaluation mode.
pub fn build_eval_graph(
    prog: &Program,
    block: &ConfigBlock,
    spec: &TrainSpec,
    fields: &Fields,
) -> Result<Graph, Vec<Diagnostic>> {
    let mut exprs = vec![ObjectiveExpr { what: "loss".into(), expr: &spec.loss, scalar: true }];
    for m in &spec.metrics {
        if let MetricKind::Expr(e) = &m.kind {
            exprs.push(ObjectiveExpr { what: format!("metric `{}`", m.name), expr: e, scalar: false });
        }
    }
    let obj = elaborate_objective(prog, block, fields, &exprs, false, None)?;
    let mut g = obj.graph;
    g.name = format!("{}.eval", spec.name);
    g.updates.clear();
    g.add_output("loss", obj.nodes[0]);
    let mut nodes = obj.nodes[1..].iter();
    for m in &spec.metrics {
        if let MetricKind::Expr(_) = &m.kind {
            let n = *nodes.next().expect("one node per expression metric");
            g.add_output(&m.name, n);
        }
    }
    Ok(g)
}

fn scalar_input(g: &mut Graph, name: &str) -> NodeId {
    g.add_input(name, TensorType::new(DType::F32, vec![]), None)
}

/// `x` (a scalar) broadcast to `shape`.
fn splat(g: &mut Graph, x: NodeId, shape: &[usize]) -> NodeId {
    g.broadcast_to(x, shape).expect("a scalar broadcasts to any shape")
}

fn mul(g: &mut Graph, a: NodeId, b: NodeId) -> NodeId {
    g.binary(BinaryOp::Mul, a, b)
}

fn add(g: &mut Graph, a: NodeId, b: NodeId) -> NodeId {
    g.binary(BinaryOp::Add, a, b)
}

fn sub(g: &mut Graph, a: NodeId, b: NodeId) -> NodeId {
    g.binary(BinaryOp::Sub, a, b)
}

/// `c * x` for a compile-time constant `c`.
fn scale(g: &mut Graph, c: f64, x: NodeId) -> NodeId {
    let ty = g.ty(x).clone();
    let k = g.constant(c, ty);
    mul(g, k, x)
}

/// The sum of all elements of `x` as a scalar.
fn total(g: &mut Graph, x: NodeId) -> NodeId {
    let rank = g.shape(x).len() as u32;
    if rank == 0 {
        return x;
    }
    let s = g.reduce(ReduceOp::Sum, x, (0..rank).collect());
    g.reshape(s, vec![])
}

/// Appends gradient, clipping and optimizer update to a graph whose scalar `loss` is built.
pub fn add_optimizer(g: &mut Graph, spec: &TrainSpec, loss: NodeId) -> Result<(), String> {
    // Every node reading each trainable parameter (the elaborator may read one several times).
    let mut reads: Vec<Vec<NodeId>> = vec![Vec::new(); g.params.len()];
    for id in g.node_ids() {
        if let Op::Param { index } = g.node(id).op {
            reads[index as usize].push(id);
        }
    }
    let trained: Vec<u32> = (0..g.params.len() as u32)
        .filter(|&i| g.params[i as usize].trainable && g.params[i as usize].ty.dtype == DType::F32)
        .filter(|&i| !reads[i as usize].is_empty())
        .collect();
    if trained.is_empty() {
        return Err("the loss depends on no trainable parameter".into());
    }
    let wrt: Vec<NodeId> = trained.iter().flat_map(|&i| reads[i as usize].iter().copied()).collect();
    let saved = (g.current_scope, g.current_span);
    let grads = crate::autodiff::grad(g, loss, &wrt).map_err(|e| e.0)?;
    g.current_scope = crate::ir::ScopeId(0);
    g.current_span = Some(spec.span);
    // One gradient per parameter: the sum over its reads.
    let mut per_param = Vec::new();
    let mut k = 0;
    for &i in &trained {
        let n = reads[i as usize].len();
        let mut acc = grads[k];
        for &d in &grads[k + 1..k + n] {
            acc = add(g, acc, d);
        }
        k += n;
        per_param.push(acc);
    }
    // Global gradient norm (before clipping) and the finiteness guard.
    let mut sumsq = None;
    for &d in &per_param {
        let sq = mul(g, d, d);
        let t = total(g, sq);
        sumsq = Some(match sumsq {
            None => t,
            Some(s) => add(g, s, t),
        });
    }
    let sumsq = sumsq.expect("at least one trained parameter");
    let norm = g.unary(UnaryOp::Sqrt, sumsq);
    let inf = g.scalar(f64::INFINITY, DType::F32);
    let loss_abs = g.unary(UnaryOp::Abs, loss);
    let loss_ok = g.binary(BinaryOp::Lt, loss_abs, inf);
    let grads_ok = g.binary(BinaryOp::Lt, sumsq, inf);
    let ok = g.binary(BinaryOp::And, loss_ok, grads_ok);
    let clip_factor = spec.clip.map(|c| {
        // c / max(norm, c): 1 below the limit, scaled down to norm c above it.
        let cn = g.scalar(c, DType::F32);
        let m = g.binary(BinaryOp::Max, norm, cn);
        g.binary(BinaryOp::Div, cn, m)
    });
    let lr = scalar_input(g, "@lr");
    let corrections = match spec.optimizer {
        Optimizer::Adam { .. } => Some((scalar_input(g, "@c1"), scalar_input(g, "@c2"))),
        Optimizer::Sgd { .. } => None,
    };
    let mut updates = Vec::new();
    for (&i, &d) in trained.iter().zip(&per_param) {
        let info = g.params[i as usize].clone();
        let shape = info.ty.shape.clone();
        let p = reads[i as usize][0];
        let group = spec.groups.iter().find(|gr| gr.patterns.iter().any(|pat| glob_match(pat, &info.path)));
        let wd = group.and_then(|gr| gr.weight_decay).unwrap_or(spec.optimizer.weight_decay());
        let lr_scale = group.map_or(1.0, |gr| gr.lr_scale);
        let mut d = d;
        if let Some(f) = clip_factor {
            let f = splat(g, f, &shape);
            d = mul(g, d, f);
        }
        let lr_here = splat(g, lr, &shape);
        let lr_here = if lr_scale != 1.0 { scale(g, lr_scale, lr_here) } else { lr_here };
        let state = |g: &mut Graph, name: &str| -> (u32, NodeId) {
            let idx = g.add_param(ParamInfo {
                path: format!("{}{STATE_SEPARATOR}{name}", info.path),
                ty: info.ty.clone(),
                init: Init::Zeros,
                trainable: false,
                span: info.span,
            });
            (idx, g.param_node(idx))
        };
        let new_p = match spec.optimizer {
            Optimizer::Sgd { momentum, nesterov, .. } => {
                if wd != 0.0 {
                    let l2 = scale(g, wd, p);
                    d = add(g, d, l2);
                }
                let step = if momentum > 0.0 {
                    let (bi, buf) = state(g, "sgd.momentum");
                    let decayed = scale(g, momentum, buf);
                    let new_buf = add(g, decayed, d);
                    updates.push((bi, new_buf));
                    if nesterov {
                        let look = scale(g, momentum, new_buf);
                        add(g, d, look)
                    } else {
                        new_buf
                    }
                } else {
                    d
                };
                let delta = mul(g, lr_here, step);
                sub(g, p, delta)
            }
            Optimizer::Adam { beta1, beta2, eps, decoupled, .. } => {
                if wd != 0.0 && !decoupled {
                    let l2 = scale(g, wd, p);
                    d = add(g, d, l2);
                }
                let (mi, m) = state(g, "adam.m");
                let (vi, v) = state(g, "adam.v");
                let m1 = scale(g, beta1, m);
                let m2 = scale(g, 1.0 - beta1, d);
                let new_m = add(g, m1, m2);
                let v1 = scale(g, beta2, v);
                let dd = mul(g, d, d);
                let v2 = scale(g, 1.0 - beta2, dd);
                let new_v = add(g, v1, v2);
                updates.push((mi, new_m));
                updates.push((vi, new_v));
                let (c1, c2) = corrections.expect("Adam has bias corrections");
                let c1 = splat(g, c1, &shape);
                let c2 = splat(g, c2, &shape);
                let mhat = mul(g, new_m, c1);
                let vhat = mul(g, new_v, c2);
                let root = g.unary(UnaryOp::Sqrt, vhat);
                let e = g.constant(eps, info.ty.clone());
                let denom = add(g, root, e);
                let mut step = g.binary(BinaryOp::Div, mhat, denom);
                if wd != 0.0 && decoupled {
                    let decay = scale(g, wd, p);
                    step = add(g, step, decay);
                }
                let delta = mul(g, lr_here, step);
                sub(g, p, delta)
            }
        };
        updates.push((i, new_p));
    }
    // Guard every update, the model's own (running statistics) included.
    let mut guarded = Vec::new();
    for (i, new) in g.updates.clone().into_iter().chain(updates) {
        let shape = g.shape(new).to_vec();
        let old = g.param_node(i);
        let okb = splat(g, ok, &shape);
        let sel = g.add(Op::Select, &[okb, new, old], None);
        guarded.push((i, sel));
    }
    g.updates = guarded;
    g.add_output("loss", loss);
    g.add_output("grad_norm", norm);
    (g.current_scope, g.current_span) = saved;
    Ok(())
}
