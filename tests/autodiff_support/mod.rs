//! Shared machinery of the autodiff tests: a loss `sum(output * cotangent)` over a graph's
//! f32 outputs (the cotangents are extra graph inputs held fixed), gradients from
//! `modelc::autodiff::grad`, central finite differences in f64 on the reference interpreter,
//! and the JIT against the interpreter on the gradient graph.
//!
//! Finite differences: `(L(x + eps) - L(x - eps)) / (2 eps)` with `eps = 1e-6`, in f64. The
//! truncation error is `eps² |L'''| / 6 ≈ 1e-13` for the smooth, O(1)-scaled functions used;
//! the rounding error is about `ulp(|L|) / eps ≈ 2e-16 · |L| / 1e-6`, at most ~1e-8 for the
//! losses here (|L| ≲ 100). A gradient element passes when
//! `|analytic - fd| <= 1e-6 · max(1, |analytic|, |fd|)`, well above both errors and far below
//! the O(1) relative error of a wrong rule (a missing factor, sign or term).

#![allow(dead_code)] // each test binary uses a different subset

use modelc::autodiff::grad;
use modelc::interp::{self, Value};
use modelc::ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, TensorType};
use modelc::passes::{PipelineOptions, run_pipeline};
use modelc::runtime::{ExecOptions, Executable};
use modelc::tensor::Tensor;
use ndarray::ArrayD;
use rand::Rng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

pub const EPS: f64 = 1e-6;
pub const TOL: f64 = 1e-6;

/// A leaf the gradient is taken with respect to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Leaf {
    Input(usize),
    Param(usize),
}

/// A forward graph with a scalar loss, and the same graph extended with the gradients.
pub struct GradCase {
    pub name: String,
    /// Forward graph; its only output is the loss.
    pub fwd: Graph,
    /// Forward + backward; outputs are the gradients, in `wrt` order.
    pub full: Graph,
    pub wrt: Vec<Leaf>,
}

/// Adds `loss = sum_i sum(outs[i] * cot_i)` with one new input `cot_i` per f32 output, and
/// returns the loss node (an f32 scalar).
pub fn add_loss(g: &mut Graph, outs: &[NodeId]) -> NodeId {
    let mut loss: Option<NodeId> = None;
    for (i, &o) in outs.iter().enumerate() {
        if g.dtype(o) != DType::F32 {
            continue;
        }
        let ty = g.ty(o).clone();
        let cot = g.add_input(&format!("cotangent{i}"), ty.clone(), None);
        let p = g.binary(BinaryOp::Mul, o, cot);
        let axes: Vec<u32> = (0..ty.rank() as u32).collect();
        let s = if axes.is_empty() { p } else { g.reduce(ReduceOp::Sum, p, axes) };
        let s = g.reshape(s, vec![]);
        loss = Some(match loss {
            None => s,
            Some(l) => g.binary(BinaryOp::Add, l, s),
        });
    }
    loss.expect("the graph has an f32 output")
}

/// The node of a leaf in `g` (an existing `input` / `param` node, else a new one).
pub fn leaf_node(g: &mut Graph, leaf: Leaf) -> NodeId {
    let found = g.node_ids().find(|&n| match (g.node(n).op.clone(), leaf) {
        (Op::Input { index }, Leaf::Input(i)) => index as usize == i,
        (Op::Param { index }, Leaf::Param(i)) => index as usize == i,
        _ => false,
    });
    match (found, leaf) {
        (Some(n), _) => n,
        (None, Leaf::Param(i)) => g.param_node(i as u32),
        (None, Leaf::Input(i)) => panic!("input {i} has no node"),
    }
}

/// Builds the loss over `outs` of `g` (a forward graph) and the gradient graph for `wrt`.
pub fn grad_case(name: &str, mut g: Graph, outs: &[NodeId], wrt: Vec<Leaf>) -> GradCase {
    let loss = add_loss(&mut g, outs);
    g.outputs.clear();
    g.updates.clear();
    g.add_output("loss", loss);
    let mut full = g.clone();
    let nodes: Vec<NodeId> = wrt.iter().map(|&l| leaf_node(&mut full, l)).collect();
    let forward_len = full.len();
    let grads = grad(&mut full, loss, &nodes).unwrap_or_else(|e| panic!("{name}: grad: {e}"));
    assert_eq!(grads.len(), nodes.len());
    for (&gr, &w) in grads.iter().zip(&nodes) {
        assert_eq!(full.ty(gr), full.ty(w), "{name}: gradient type");
    }
    modelc::ir::verify(&full).unwrap_or_else(|e| panic!("{name}: gradient graph invalid: {e:?}"));
    // Every backward node has the span and scope of some forward node.
    for id in (forward_len..full.len()).map(|i| NodeId(i as u32)) {
        let (span, scope) = (full.spans[id.index()], full.node_scopes[id.index()]);
        assert!(
            (0..forward_len).any(|f| full.spans[f] == span && full.node_scopes[f] == scope),
            "{name}: backward node {id} has a span/scope of no forward node"
        );
    }
    full.outputs.clear();
    full.updates.clear();
    for (i, &gr) in grads.iter().enumerate() {
        full.add_output(&format!("grad{i}"), gr);
    }
    GradCase { name: name.to_string(), fwd: g, full, wrt }
}

pub fn to_f64(g: &Graph, ts: &[Tensor], params: bool) -> Vec<Value<f64>> {
    let tys: Vec<DType> = if params {
        g.params.iter().map(|p| p.ty.dtype).collect()
    } else {
        g.inputs.iter().map(|i| i.ty.dtype).collect()
    };
    ts.iter().zip(tys).map(|(t, d)| Value::from_tensor(t, d).expect("valid tensor")).collect()
}

/// Element `c` (row-major) of a leaf's value.
fn slot<'a>(vin: &'a mut [Value<f64>], vpar: &'a mut [Value<f64>], leaf: Leaf, c: usize) -> &'a mut f64 {
    let v = match leaf {
        Leaf::Input(i) => &mut vin[i],
        Leaf::Param(i) => &mut vpar[i],
    };
    match v {
        Value::Float(arr) => &mut arr.as_slice_mut().expect("standard layout")[c],
        Value::Int(_) | Value::Bool(_) => panic!("wrt leaf {leaf:?} is not f32"),
    }
}

fn loss_at(case: &GradCase, inputs: &[Value<f64>], params: &[Value<f64>]) -> f64 {
    let out = interp::run_f64(&case.fwd, inputs, params).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let l = out.outputs[0].1.as_float().expect("f32 loss");
    *l.iter().next().expect("scalar")
}

/// Compares the analytic gradients with central differences in f64. `max_coords`: check at
/// most that many random coordinates per tensor (all when `None`). Returns the largest error
/// `|a - fd| / max(1, |a|, |fd|)` seen and the number of coordinates checked.
pub fn check_fd(
    case: &GradCase,
    inputs: &[Tensor],
    params: &[Tensor],
    max_coords: Option<usize>,
    rng: &mut ChaCha8Rng,
) -> (f64, usize) {
    let mut vin = to_f64(&case.full, inputs, false);
    let mut vpar = to_f64(&case.full, params, true);
    // The forward graph has the same inputs and params as the full one.
    let analytic = interp::run_f64(&case.full, &vin, &vpar).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut worst = 0f64;
    let mut checked = 0;
    for (k, &leaf) in case.wrt.iter().enumerate() {
        let a = analytic.outputs[k].1.as_float().expect("f32 gradient").clone();
        let numel = a.len();
        let coords: Vec<usize> = match max_coords {
            Some(m) if m < numel => sample(rng, numel, m).into_vec(),
            _ => (0..numel).collect(),
        };
        for c in coords {
            let x0 = *slot(&mut vin, &mut vpar, leaf, c);
            *slot(&mut vin, &mut vpar, leaf, c) = x0 + EPS;
            let lp = loss_at(case, &vin, &vpar);
            *slot(&mut vin, &mut vpar, leaf, c) = x0 - EPS;
            let lm = loss_at(case, &vin, &vpar);
            *slot(&mut vin, &mut vpar, leaf, c) = x0;
            let fd = (lp - lm) / (2.0 * EPS);
            let an = a.as_slice().expect("standard layout")[c];
            let err = (an - fd).abs() / 1f64.max(an.abs()).max(fd.abs());
            assert!(
                an.is_finite() && err <= TOL,
                "{}: d loss / d {:?}[{c}]: autodiff {an}, finite differences {fd} (err {err:.3e})",
                case.name,
                leaf
            );
            worst = worst.max(err);
            checked += 1;
        }
    }
    (worst, checked)
}

/// The gradient graph through the pipeline and the JIT (buffers poisoned, 1 and 2 threads,
/// every kernel split) against the interpreter in f64 on the unoptimised graph: max relative
/// error 1e-4 relative to the element or, near zero, to a tenth of the output's largest
/// magnitude (as in `tests/jit_models.rs`); NaN never passes. Returns the largest error.
pub fn check_jit(case: &GradCase, inputs: &[Tensor], params: &[Tensor]) -> f64 {
    let g = &case.full;
    let reference =
        interp::run::<f64>(g, inputs, params).unwrap_or_else(|e| panic!("{}: interpreter: {e}", case.name));
    let optimized = run_pipeline(g.clone(), &PipelineOptions::default());
    let mut worst = 0f32;
    for threads in [1, 2] {
        let opts =
            ExecOptions { threads: Some(threads), parallel_min_work: Some(1), ..ExecOptions::default() };
        let mut exe =
            Executable::new(&optimized, &opts).unwrap_or_else(|e| panic!("{}: build: {e}", case.name));
        exe.set_params(params).expect("params fit");
        exe.poison_buffers();
        let got = exe.run(inputs).unwrap_or_else(|e| panic!("{}: run: {e}", case.name));
        for ((name, want), got) in reference.outputs.iter().zip(&got) {
            let (Tensor::F32(w), Tensor::F32(gt)) = (want, got) else {
                panic!("{}: gradient not f32", case.name)
            };
            assert_eq!(w.shape(), gt.shape(), "{}: {name} shape", case.name);
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (i, (a, b)) in w.iter().zip(gt.iter()).enumerate() {
                let err = (a - b).abs() / a.abs().max(0.1 * scale);
                assert!(
                    b.is_finite() == a.is_finite() && !b.is_nan() && err <= 1e-4,
                    "{} ({threads} threads): gradient {name}[{i}] = {b}, reference {a} (rel err {err})",
                    case.name
                );
                worst = worst.max(err);
            }
        }
    }
    worst as f64
}

/// An f32 tensor of the given values.
pub fn f32_tensor(shape: &[usize], values: Vec<f32>) -> Tensor {
    Tensor::F32(ArrayD::from_shape_vec(shape.to_vec(), values).expect("shape"))
}

pub fn i32_tensor(shape: &[usize], values: Vec<i32>) -> Tensor {
    Tensor::I32(ArrayD::from_shape_vec(shape.to_vec(), values).expect("shape"))
}

/// Uniform f32 values in `[lo, hi)`.
pub fn uniform(ty: &TensorType, lo: f32, hi: f32, rng: &mut ChaCha8Rng) -> Tensor {
    f32_tensor(&ty.shape, (0..ty.numel()).map(|_| rng.random_range(lo..hi)).collect())
}
