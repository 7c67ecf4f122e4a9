//! Common-subexpression elimination: two nodes with the same op (attributes included), the
//! same arguments and the same type compute the same value, so the later one is replaced by
//! the earlier. Every op is a pure function of its arguments and attributes — including
//! `RandomUniform`, whose stream is an attribute and whose key is an argument — so no op is
//! exempt; arguments of commutative ops are compared as an unordered pair.

use super::rebuild::Rebuild;
use crate::ir::{BinaryOp, Graph, NodeId, Op, TypeId};
use std::collections::HashMap;

/// Merges structurally equal nodes.
pub fn cse(g: &Graph) -> Graph {
    let mut rb = Rebuild::new(g);
    let mut seen: HashMap<(String, Vec<NodeId>, TypeId), NodeId> = HashMap::new();
    for id in g.node_ids() {
        let mut args = rb.mapped_args(id);
        let op = &g.node(id).op;
        if let Op::Binary(b) = op
            && is_commutative(*b)
        {
            args.sort();
        }
        // `Debug` prints every attribute, and floats exactly (it tells -0.0 from 0.0, unlike
        // the IR text form); all NaNs print alike, which merges NaN constants of different
        // payloads — harmless, no op reads a payload.
        let key = (format!("{op:?}"), args, g.node(id).ty);
        match seen.get(&key) {
            Some(&earlier) => rb.set(id, earlier),
            None => {
                let new = rb.copy(id);
                seen.insert(key, new);
            }
        }
    }
    rb.finish()
}

/// Whether `op(a, b) == op(b, a)` for every pair of operands. Float `max`/`min` qualify: they
/// propagate NaN and order -0.0 below +0.0, so they are symmetric.
fn is_commutative(b: BinaryOp) -> bool {
    match b {
        BinaryOp::Add
        | BinaryOp::Mul
        | BinaryOp::Max
        | BinaryOp::Min
        | BinaryOp::Eq
        | BinaryOp::Ne
        | BinaryOp::And
        | BinaryOp::Or => true,
        BinaryOp::Sub
        | BinaryOp::Div
        | BinaryOp::Rem
        | BinaryOp::Pow
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge => false,
    }
}
