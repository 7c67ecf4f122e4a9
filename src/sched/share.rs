//! Evaluates each distinct value of a loop kernel once: expressions that are structurally
//! equal (the same operation on the same operands) become one.
//!
//! The loop builder lowers a graph node once per pass that needs it, so a value that two passes
//! need — a softmax's masked, scaled scores feed both the row maximum and the numerators — is
//! built twice, and the reduction of one pass and the store of another refer to different
//! copies. Codegen would compute both copies correctly, but a rewrite that matches on identity
//! (the numerator stash of [`super::stash`]) misses them. Sharing them changes no result: equal
//! expressions are evaluated by the same code from the same inputs.
//!
//! A load of a buffer the kernel also stores to is kept as it is: its value depends on the pass
//! that reads it.

use super::{Expr, ExprId, Guard, Kernel, LoopKernel, StoreSource};
use std::collections::HashMap;

/// Applies the sharing to every loop kernel and matmul epilogue.
pub(super) fn share_common_exprs(kernels: &mut [Kernel]) {
    kernels.iter_mut().filter_map(Kernel::loop_mut).for_each(share);
}

fn share(l: &mut LoopKernel) {
    let stored: Vec<u32> = l.stores.iter().map(|s| s.buf).collect();
    // operands precede their users, so one walk in order sees every operand's final id
    let mut id: Vec<ExprId> = Vec::with_capacity(l.exprs.len());
    let mut first: HashMap<(Expr, crate::ir::DType), ExprId> = HashMap::new();
    let mut changed = false;
    for i in 0..l.exprs.len() {
        let m = |x: &ExprId| id[*x as usize];
        let e = match &l.exprs[i] {
            Expr::Unary { op, x } => Expr::Unary { op: *op, x: m(x) },
            Expr::Binary { op, a, b } => Expr::Binary { op: *op, a: m(a), b: m(b) },
            Expr::Select { cond, a, b } => Expr::Select { cond: m(cond), a: m(a), b: m(b) },
            Expr::Cast { to, x } => Expr::Cast { to: *to, x: m(x) },
            Expr::GatherLoad { buf, dtype, access, guards } => Expr::GatherLoad {
                buf: *buf,
                dtype: *dtype,
                access: access.clone(),
                guards: guards.iter().map(|g| Guard { index: m(&g.index), ..g.clone() }).collect(),
            },
            Expr::Random { key, stream, access } => {
                Expr::Random { key: m(key), stream: *stream, access: access.clone() }
            }
            e @ (Expr::Const { .. } | Expr::Index { .. } | Expr::RowScalar { .. } | Expr::Load { .. }) => {
                e.clone()
            }
        };
        let shareable = match &e {
            Expr::Load { buf, .. } | Expr::GatherLoad { buf, .. } => !stored.contains(buf),
            _ => true,
        };
        let key = (e, l.types[i]);
        let to = match first.get(&key) {
            Some(&j) if shareable => j,
            _ => {
                if shareable {
                    first.insert(key.clone(), i as ExprId);
                }
                i as ExprId
            }
        };
        changed |= to != i as ExprId || key.0 != l.exprs[i];
        l.exprs[i] = key.0;
        id.push(to);
    }
    if !changed {
        return;
    }
    for r in &mut l.reductions {
        r.value = id[r.value as usize];
    }
    for s in &mut l.stores {
        match &mut s.source {
            StoreSource::Elem(v) | StoreSource::ScanSum(v) => *v = id[*v as usize],
            StoreSource::AddIndirect { value, index, .. } => {
                *value = id[*value as usize];
                *index = id[*index as usize];
            }
            StoreSource::TopK { value, .. } => *value = id[*value as usize],
            StoreSource::Slot(_) => {}
        }
    }
}
