//! What the native kernels (`jit::adam`, `jit::gelu`) share: the expression patterns their
//! recognisers match (contiguous loads, row-invariant scalars, binary operations, sums of loads)
//! and the argument array their functions read.

use crate::ir::{BinaryOp, DType};
use crate::sched::{Expr, ExprId, LoopKernel};

/// The helpers, for any matcher that knows its kernel and which expressions are row-invariant.
pub(super) trait Patterns {
    fn kernel(&self) -> &LoopKernel;
    /// Per expression: it does not vary along the row.
    fn invariant(&self) -> &[bool];

    /// `e` if it is an f32 load along the row (contiguous).
    fn load(&self, e: ExprId) -> Option<ExprId> {
        match &self.kernel().exprs[e as usize] {
            Expr::Load { dtype: DType::F32, access, .. } if access.inner == 1 => Some(e),
            _ => None,
        }
    }

    /// `e` if it is an f32 row-invariant value.
    fn scalar(&self, e: ExprId) -> Option<ExprId> {
        (self.invariant()[e as usize] && self.kernel().types[e as usize] == DType::F32).then_some(e)
    }

    /// The operands of `e` if it is the f32 binary `op`.
    fn binary(&self, e: ExprId, op: BinaryOp) -> Option<(ExprId, ExprId)> {
        let k = self.kernel();
        match k.exprs[e as usize] {
            Expr::Binary { op: o, a, b } if o == op && k.types[e as usize] == DType::F32 => Some((a, b)),
            _ => None,
        }
    }

    /// `x * s` (either order) with `s` row-invariant and `x` not: `(x, s)`.
    fn scaled(&self, e: ExprId) -> Option<(ExprId, ExprId)> {
        let (a, b) = self.binary(e, BinaryOp::Mul)?;
        let inv = self.invariant();
        match (inv[a as usize], inv[b as usize]) {
            (false, true) => Some((a, self.scalar(b)?)),
            (true, false) => Some((b, self.scalar(a)?)),
            _ => None,
        }
    }

    /// The loads of `l0 + l1 + ...` (a chain, operands in either order) in the order they are
    /// added, appended to `out`.
    fn sum_of_loads(&self, e: ExprId, out: &mut Vec<ExprId>) -> Option<()> {
        if let Some(l) = self.load(e) {
            out.push(l);
            return Some(());
        }
        let (a, b) = self.binary(e, BinaryOp::Add)?;
        let (rest, last) = match (self.load(a), self.load(b)) {
            (_, Some(l)) => (a, l),
            (Some(l), None) => (b, l),
            (None, None) => return None,
        };
        self.sum_of_loads(rest, out)?;
        out.push(last);
        Some(())
    }
}

/// The argument array the generated code fills before calling a native function: 8-byte
/// words, each an address or an f32 / bool scalar in the low 4 bytes (little endian).
pub(super) struct Args {
    pub vals: *const u64,
}

impl Args {
    pub fn word(&self, i: usize) -> u64 {
        // SAFETY: the code generator wrote every slot the function reads before the call.
        unsafe { *self.vals.add(i) }
    }
    pub fn ptr(&self, i: usize) -> *mut f32 {
        self.word(i) as *mut f32
    }
    pub fn f32(&self, i: usize) -> f32 {
        f32::from_bits(self.word(i) as u32)
    }
    pub fn flag(&self, i: usize) -> bool {
        self.word(i) as u32 != 0
    }
}
