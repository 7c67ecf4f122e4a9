//! Algebraic simplification: local rewrite rules, each commented with the identity it relies
//! on (`;; x*1 == x`). Rules look at the arguments as already rewritten, so chains collapse in
//! one sweep (`neg(neg(neg x))` becomes `neg x`). Nodes a rule bypasses are left for DCE.
//!
//! Every rule is exact in IEEE arithmetic except `x+0`, which turns a -0.0 into +0.0. The
//! sign of a zero only shows through division by it (`1/x` gives ±inf), which models do not
//! rely on, so the rule is kept, as XLA and TVM keep it.

use super::rebuild::Rebuild;
use crate::ir::{BinaryOp, Graph, NodeId, Op, UnaryOp};

/// Applies every rule once, in one topological sweep.
pub fn simplify(g: &Graph) -> Graph {
    let mut rb = Rebuild::new(g);
    for id in g.node_ids() {
        let args = rb.mapped_args(id);
        match rewrite(&mut rb, id, &args) {
            Some(new) => rb.set(id, new),
            None => {
                rb.copy(id);
            }
        }
    }
    rb.finish()
}

/// The node of the new graph that replaces old node `id` (whose arguments, mapped, are
/// `args`), or `None` if no rule applies.
fn rewrite(rb: &mut Rebuild<'_>, id: NodeId, args: &[NodeId]) -> Option<NodeId> {
    let g = rb.old;
    let ty = g.ty(id).clone();
    match &g.node(id).op {
        Op::Binary(BinaryOp::Mul) => {
            // ;; x*1 == x
            if is_splat(rb, args[1], 1.0) {
                return Some(args[0]);
            }
            // ;; 1*x == x
            is_splat(rb, args[0], 1.0).then_some(args[1])
        }
        Op::Binary(BinaryOp::Add) => {
            // ;; x+0 == x   (up to the sign of a zero x)
            if is_splat(rb, args[1], 0.0) {
                return Some(args[0]);
            }
            // ;; 0+x == x   (up to the sign of a zero x)
            is_splat(rb, args[0], 0.0).then_some(args[1])
        }
        // ;; x-0 == x   (exact: -0 - +0 == -0)
        Op::Binary(BinaryOp::Sub) => is_splat(rb, args[1], 0.0).then_some(args[0]),
        // ;; x/1 == x   (floats, and ints under floor division)
        Op::Binary(BinaryOp::Div) => is_splat(rb, args[1], 1.0).then_some(args[0]),
        // ;; neg(neg(x)) == x
        Op::Unary(UnaryOp::Neg) => match rb.node(args[0]) {
            n if n.op == Op::Unary(UnaryOp::Neg) => Some(n.args[0]),
            _ => None,
        },
        // ;; cast<t>(x: t) == x
        Op::Cast { to } => (rb.new.dtype(args[0]) == *to).then_some(args[0]),
        Op::Permute { perm } => {
            let (source, perm) = match &rb.node(args[0]).op {
                // ;; permute(q)(permute(p)(y)) == permute(i -> p[q[i]])(y)
                Op::Permute { perm: inner } => {
                    let composed: Vec<u32> = perm.iter().map(|&q| inner[q as usize]).collect();
                    (rb.node(args[0]).args[0], composed)
                }
                _ => (args[0], perm.clone()),
            };
            // ;; permute(0, 1, ..., n-1)(y) == y
            if is_identity(&perm) {
                return Some(source);
            }
            (source != args[0]).then(|| rb.add(id, Op::Permute { perm }, &[source], ty))
        }
        Op::Reshape => {
            // ;; reshape(reshape(y)) == reshape(y)   (both keep row-major order)
            let source = match rb.node(args[0]).op {
                Op::Reshape => rb.node(args[0]).args[0],
                _ => args[0],
            };
            // ;; reshape<shape(y)>(y) == y
            if rb.new.ty(source) == &ty {
                return Some(source);
            }
            (source != args[0]).then(|| rb.add(id, Op::Reshape, &[source], ty))
        }
        Op::Broadcast => {
            // ;; broadcast(broadcast(y)) == broadcast(y)   (a size-1 axis of y stays valid;
            //    any other axis of y already equals both later sizes)
            let source = match rb.node(args[0]).op {
                Op::Broadcast => rb.node(args[0]).args[0],
                _ => args[0],
            };
            // ;; broadcast<shape(y)>(y) == y
            if rb.new.ty(source) == &ty {
                return Some(source);
            }
            (source != args[0]).then(|| rb.add(id, Op::Broadcast, &[source], ty))
        }
        // ;; slice(axis, 0..n step 1)(y: [.., n, ..]) == y
        Op::Slice { axis, start, end, step } => {
            let n = rb.new.shape(args[0])[*axis as usize];
            (*start == 0 && *end == n && *step == 1).then_some(args[0])
        }
        // ;; pad(lo=0, hi=0, interior=0)(y) == y
        Op::Pad { lo, hi, interior, .. } => (*lo == 0 && *hi == 0 && *interior == 0).then_some(args[0]),
        // ;; concat(y) == y
        Op::Concat { .. } => (args.len() == 1).then_some(args[0]),
        // ;; reduce over no axes (y) == y
        Op::Reduce { axes, .. } => axes.is_empty().then_some(args[0]),
        Op::MatMul { trans_a, trans_b } => {
            // ;; matmul[ta, tb](swap_last2(a), b) == matmul[!ta, tb](a, b), likewise for b
            let (a, flip_a) = strip_last_two_swap(rb, args[0]);
            let (b, flip_b) = strip_last_two_swap(rb, args[1]);
            if !flip_a && !flip_b {
                return None;
            }
            let op = Op::MatMul { trans_a: *trans_a != flip_a, trans_b: *trans_b != flip_b };
            Some(rb.add(id, op, &[a, b], ty))
        }
        Op::Select => match rb.node(args[0]).op {
            // ;; select(true, a, b) == a
            // ;; select(false, a, b) == b
            Op::Const { value } => Some(if value != 0.0 { args[1] } else { args[2] }),
            // ;; select(c, a, a) == a
            _ => (args[1] == args[2]).then_some(args[1]),
        },
        Op::Input { .. }
        | Op::Param { .. }
        | Op::Const { .. }
        | Op::Iota { .. }
        | Op::RandomUniform { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::ArgMax { .. }
        | Op::Gather
        | Op::ScatterAdd { .. }
        | Op::Cumsum { .. }
        | Op::TopK { .. } => None,
    }
}

/// Whether node `id` of the new graph is a constant splat of exactly `value` (+0.0 for 0).
fn is_splat(rb: &Rebuild<'_>, id: NodeId, value: f64) -> bool {
    matches!(rb.node(id).op, Op::Const { value: v } if v.to_bits() == value.to_bits())
}

fn is_identity(perm: &[u32]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| p as usize == i)
}

/// If `id` is a permute that swaps exactly the last two axes, its operand and `true`;
/// otherwise `id` and `false`.
fn strip_last_two_swap(rb: &Rebuild<'_>, id: NodeId) -> (NodeId, bool) {
    let node = rb.node(id);
    if let Op::Permute { perm } = &node.op {
        let r = perm.len();
        let swaps_last_two = r >= 2
            && perm[..r - 2].iter().enumerate().all(|(i, &p)| p as usize == i)
            && perm[r - 2] as usize == r - 1
            && perm[r - 1] as usize == r - 2;
        if swaps_last_two {
            return (node.args[0], true);
        }
    }
    (id, false)
}
