//! GELU over rows in native code as wide as the CPU has.
//!
//! The feed-forward layer of a transformer applies `gelu(y) = 0.5 y (1 + erf(y / sqrt 2))` to
//! its first product plus the bias, as that product's epilogue. The generated epilogue computes
//! `erf` natively already (`jit::vmath`, through a stack array per chunk of the row), but the
//! rest of it (the bias addition twice, the scalings, the product) runs on 128-bit vectors around
//! that call: about a third of the epilogue's time in the char transformer at batch 1.
//!
//! Where a single-pass row kernel is exactly `(a y) (b + erf(y c))` stored contiguously, with
//! `y` a sum of contiguous loads and `a`, `b`, `c` any row-invariant values ([`recognise`]), the
//! code generator writes, per row, the output's and the loads' row addresses and the three
//! scalars into an argument array and calls [`function`]'s function on the row. It performs the
//! matched operations in the same order, each one IEEE operation (the loads added in the
//! expression's order; `erf` the inline code's bits), so the outputs are bit-for-bit the
//! generated code's. `MODELC_VMATH=inline` turns this path off with the array functions.

use crate::ir::{BinaryOp, DType, UnaryOp};
use crate::sched::{Expr, ExprId, LoopKernel, Split, StoreSource};

use super::pattern::{Args, Patterns};
use super::vmath::{Group, Variant, erf_v};

/// Most loads `y` sums.
pub const MAX_LOADS: usize = 4;

/// One store of a kernel recognised as GELU rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The store (index into the kernel's stores).
    pub store: usize,
    /// The loads whose sum is `y`, in the order they are added.
    pub loads: Vec<ExprId>,
    /// `a`, `b` and `c` of `(a y) (b + erf(y c))` (row-invariant expressions).
    pub a: ExprId,
    pub b: ExprId,
    pub c: ExprId,
}

/// The argument array the generated code fills: the output row, `a`, `b`, `c` (f32 bits in the
/// low 4 bytes), the number of loads, then each load's row.
pub const ARGS: usize = 5 + MAX_LOADS;

struct Matcher<'a> {
    k: &'a LoopKernel,
    invariant: &'a [bool],
}

impl Patterns for Matcher<'_> {
    fn kernel(&self) -> &LoopKernel {
        self.k
    }
    fn invariant(&self) -> &[bool] {
        self.invariant
    }
}

/// The GELUs of `k`, if `k` is exactly GELU rows: one pass, no reductions, every store a
/// contiguous f32 store of `(a y) (b + erf(y c))` (products and sums in either operand order),
/// `y` a sum of at most [`MAX_LOADS`] contiguous loads, none of them of an output unless at
/// that store's own place (merged elementwise kernels store several).
pub fn recognise(k: &LoopKernel, invariant: &[bool]) -> Option<Vec<Plan>> {
    if k.split == Split::Serial || k.passes != 1 || !k.reductions.is_empty() || k.stores.is_empty() {
        return None;
    }
    let m = Matcher { k, invariant };
    let plans: Vec<Plan> = (0..k.stores.len()).map(|i| store(&m, i)).collect::<Option<_>>()?;
    // a load of an output reads it at that output's own place, and only for that output
    let reads_output = |p: &Plan| {
        p.loads.iter().any(|&l| match &k.exprs[l as usize] {
            Expr::Load { buf, access, .. } => k
                .stores
                .iter()
                .enumerate()
                .any(|(i, st)| st.buf == *buf && (i != p.store || st.access != *access)),
            _ => true,
        })
    };
    (!plans.iter().any(reads_output)).then_some(plans)
}

/// Store `i` of the kernel as GELU rows.
fn store(m: &Matcher<'_>, i: usize) -> Option<Plan> {
    let k = m.k;
    let st = &k.stores[i];
    let StoreSource::Elem(out) = st.source else { return None };
    if st.dtype != DType::F32 || st.access.inner != 1 {
        return None;
    }
    let (p, q) = m.binary(out, BinaryOp::Mul)?;
    // one factor is `a y`, the other `b + erf(y c)`
    let parts = |h: ExprId, u: ExprId| -> Option<(ExprId, ExprId, ExprId, ExprId)> {
        let (y, a) = m.scaled(h)?;
        let (s, t) = m.binary(u, BinaryOp::Add)?;
        let (b, erf) = match (m.scalar(s), m.scalar(t)) {
            (Some(b), _) => (b, t),
            (_, Some(b)) => (b, s),
            _ => return None,
        };
        let Expr::Unary { op: UnaryOp::Erf, x } = k.exprs[erf as usize] else { return None };
        let (y2, c) = m.scaled(x)?;
        (y2 == y).then_some((y, a, b, c))
    };
    let (y, a, b, c) = parts(p, q).or_else(|| parts(q, p))?;
    let mut loads = Vec::new();
    m.sum_of_loads(y, &mut loads)?;
    (loads.len() <= MAX_LOADS).then_some(Plan { store: i, loads, a, b, c })
}

/// Elements `*j..` of one row in steps of `G::LANES` while a whole step fits below `n`.
///
/// # Safety
/// The arrays hold `n` elements; the CPU has `G`'s features.
#[inline(always)]
unsafe fn run_group<G: Group>(args: &Args, j: &mut usize, n: usize) {
    let out = args.ptr(0);
    let (a, b, c) = (G::splat(args.f32(1)), G::splat(args.f32(2)), G::splat(args.f32(3)));
    let count = (args.word(4) as usize).clamp(1, MAX_LOADS);
    let mut loads = [std::ptr::null::<f32>(); MAX_LOADS];
    for (i, l) in loads.iter_mut().enumerate().take(count) {
        *l = args.ptr(5 + i);
    }
    let loads = &loads[..count];
    while *j + G::LANES <= n {
        let i = *j;
        // SAFETY: elements i..i + LANES are below n (the caller's contract).
        unsafe {
            let mut y = G::load(loads[0].add(i));
            for l in &loads[1..] {
                y = y.add(G::load(l.add(i)));
            }
            let e = erf_v(y.mul(c));
            y.mul(a).mul(b.add(e)).store(out.add(i));
        }
        *j += G::LANES;
    }
}

/// A row function's ABI: `(argument array, n)`.
pub type RowFn = unsafe extern "C" fn(*const u64, i64);

/// The f32 reference.
///
/// # Safety
/// `vals` holds the arguments of [`ARGS`]; the arrays hold `n` elements.
pub unsafe extern "C" fn row_scalar(vals: *const u64, n: i64) {
    let mut j = 0;
    // SAFETY: the caller's contract.
    unsafe { run_group::<f32>(&Args { vals }, &mut j, n.max(0) as usize) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::vmath::x86::{Ymm, Zmm};
    use super::{Args, run_group};

    /// # Safety
    /// As for [`super::row_scalar`]; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe extern "C" fn row_avx512(vals: *const u64, n: i64) {
        let (args, n, mut j) = (Args { vals }, n.max(0) as usize, 0);
        // SAFETY: the caller's contract.
        unsafe {
            run_group::<Zmm>(&args, &mut j, n);
            run_group::<Ymm>(&args, &mut j, n);
            run_group::<f32>(&args, &mut j, n);
        }
    }

    /// # Safety
    /// As for [`super::row_scalar`]; the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn row_avx2(vals: *const u64, n: i64) {
        let (args, n, mut j) = (Args { vals }, n.max(0) as usize, 0);
        // SAFETY: the caller's contract.
        unsafe {
            run_group::<Ymm>(&args, &mut j, n);
            run_group::<f32>(&args, &mut j, n);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{row_avx2, row_avx512};

/// The row function of `variant`.
pub fn function(variant: Variant) -> RowFn {
    #[cfg(target_arch = "x86_64")]
    {
        match variant {
            Variant::Avx512 => row_avx512,
            Variant::Avx2 => row_avx2,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = variant;
        row_scalar
    }
}
