//! Constant folding. The IR has only splat constants ([`Op::Const`]: one scalar for the whole
//! shape), and folding keeps it that way: it replaces a node by a `Const` only when its value
//! is again one scalar everywhere. Elementwise ops on constants are evaluated with the
//! interpreter's own scalar semantics, so folding never changes what a graph means.
//!
//! Folding computes in f64 from the stored constants, exactly as the f64 interpreter would.
//! An f32 evaluation of the unfolded graph rounds each constant and each intermediate to f32,
//! so there the folded constant can differ in the last bits (a constant that is not an f32,
//! such as 16777217, can even cast to a different int); both back ends run the folded graph.

use super::rebuild::Rebuild;
use crate::interp::eval_const_elementwise;
use crate::ir::{DType, Graph, NodeId, Op, ReduceOp};

/// Folds splat constants through elementwise ops, layout ops, `max`/`min` reductions and
/// `argmax`.
pub fn fold(g: &Graph) -> Graph {
    let mut rb = Rebuild::new(g);
    for id in g.node_ids() {
        let args = rb.mapped_args(id);
        let consts: Option<Vec<(f64, DType)>> = args.iter().map(|&a| const_value(&rb, a)).collect();
        let folded = consts.and_then(|c| folded_value(g, id, &c));
        match folded {
            Some(value) => {
                let ty = g.ty(id).clone();
                let new = rb.add(id, Op::Const { value }, &[], ty);
                rb.set(id, new);
            }
            None => {
                rb.copy(id);
            }
        }
    }
    rb.finish()
}

/// The value and dtype of a `Const` node of the new graph.
fn const_value(rb: &Rebuild<'_>, id: NodeId) -> Option<(f64, DType)> {
    match rb.node(id).op {
        Op::Const { value } => Some((value, rb.new.dtype(id))),
        _ => None,
    }
}

/// The splat value of old node `id` when all its arguments are the constants `args`, or
/// `None` if it does not fold. Nodes without arguments are never folded here (a `Const` is
/// already folded; `Iota` and leaves are not splats).
fn folded_value(g: &Graph, id: NodeId, args: &[(f64, DType)]) -> Option<f64> {
    let op = &g.node(id).op;
    if args.is_empty() {
        return None;
    }
    let first = args[0].0;
    let all_equal = args.iter().all(|&(v, _)| v.to_bits() == first.to_bits());
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast { .. } => eval_const_elementwise(op, args),
        // Moving copies of one scalar around gives the same scalar everywhere.
        Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. } => Some(first),
        Op::Concat { .. } => all_equal.then_some(first),
        // Padding inserts zeros: still a splat only if the scalar is zero (of either sign:
        // the padding of an f32 splat of -0.0 would be +0.0, so only +0.0 folds).
        Op::Pad { .. } => (first.to_bits() == 0.0f64.to_bits()).then_some(first),
        // max/min of copies of c is c, unless a reduced axis is empty (then ±inf or the int
        // extreme, which is another splat, but rarely worth a rule).
        Op::Reduce { op: ReduceOp::Max | ReduceOp::Min, axes } => {
            let shape = g.shape(g.node(id).args[0]);
            axes.iter().all(|&a| shape[a as usize] > 0).then_some(first)
        }
        // Sums round differently in f32 and f64, so they are left to run time.
        Op::Reduce { op: ReduceOp::Sum, .. } => None,
        // Every element is a maximum; the first one is at index 0.
        Op::ArgMax { .. } => Some(0.0),
        Op::Input { .. }
        | Op::Param { .. }
        | Op::Const { .. }
        | Op::Iota { .. }
        | Op::RandomUniform { .. }
        | Op::MatMul { .. }
        | Op::Gather
        | Op::ScatterAdd { .. }
        | Op::Cumsum { .. }
        | Op::TopK { .. } => None,
    }
}
