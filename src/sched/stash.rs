//! Keeps a normalised row's numerators instead of computing them twice.
//!
//! A softmax lowers to one row kernel of three passes: the row maximum, the sum of
//! `e = exp(x - max)`, and the store of `e / sum`. As built, the last pass evaluates `e` again
//! (the mask, the scale, the subtraction and the exponential), so every element pays for two
//! exponentials. When the last pass stores `e / s` where `s` is the sum of the same `e` over an
//! earlier pass, this rewrite stores `e` into the output in that earlier pass and makes the last
//! pass `out / s`, a load and a division. The stored value is bit-for-bit the one the last pass
//! computed before (the same expression evaluated by the same code), so results do not change.
//!
//! The output buffer is written by the kernel alone (the buffer plan never lets a kernel's
//! output share memory with its inputs), and the rewrite is skipped when the kernel also reads
//! it or the store is not contiguous along the row.

use super::{Expr, ExprId, Kernel, LoopKernel, ReduceKind, Store, StoreSource};
use crate::ir::{BinaryOp, DType};

/// Applies the rewrite to every loop kernel and matmul epilogue.
pub(super) fn stash_numerators(kernels: &mut [Kernel]) {
    kernels.iter_mut().filter_map(Kernel::loop_mut).for_each(stash);
}

/// Whether evaluating `e` costs more than a load: it contains a transcendental function.
fn expensive(l: &LoopKernel, e: ExprId) -> bool {
    let mut stack = vec![e];
    let mut seen = std::collections::HashSet::new();
    while let Some(x) = stack.pop() {
        if !seen.insert(x) {
            continue;
        }
        match &l.exprs[x as usize] {
            Expr::Unary { .. } => return true,
            Expr::Binary { a, b, .. } => stack.extend([*a, *b]),
            Expr::Select { cond, a, b } => stack.extend([*cond, *a, *b]),
            Expr::Cast { x, .. } => stack.push(*x),
            _ => {}
        }
    }
    false
}

fn stash(l: &mut LoopKernel) {
    if l.passes < 2 {
        return;
    }
    let last = l.passes - 1;
    for si in 0..l.stores.len() {
        let s = &l.stores[si];
        let StoreSource::Elem(v) = s.source else { continue };
        if s.pass != last || s.dtype != DType::F32 || s.access.inner != 1 {
            continue;
        }
        let Expr::Binary { op: BinaryOp::Div, a: num, b: den } = l.exprs[v as usize] else { continue };
        let Expr::RowScalar { slot } = l.exprs[den as usize] else { continue };
        let red = &l.reductions[slot as usize];
        if red.kind != ReduceKind::Sum || red.value != num || red.pass >= last || !expensive(l, num) {
            continue;
        }
        let buf = s.buf;
        let reads_output = l.exprs.iter().any(|e| match e {
            Expr::Load { buf: b, .. } | Expr::GatherLoad { buf: b, .. } => *b == buf,
            _ => false,
        });
        if reads_output {
            continue;
        }
        let (pass, access) = (red.pass, s.access.clone());
        l.stores.push(Store {
            buf,
            dtype: DType::F32,
            access: access.clone(),
            source: StoreSource::Elem(num),
            pass,
        });
        let load = l.exprs.len() as ExprId;
        l.exprs.push(Expr::Load { buf, dtype: DType::F32, access });
        l.types.push(DType::F32);
        let div = l.exprs.len() as ExprId;
        l.exprs.push(Expr::Binary { op: BinaryOp::Div, a: load, b: den });
        l.types.push(DType::F32);
        l.stores[si].source = StoreSource::Elem(div);
    }
}
