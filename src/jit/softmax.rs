//! Softmax rows in native code as wide as the CPU has.
//!
//! A softmax is one row kernel of three passes (`sched::fuse`, then `sched::stash`): the row
//! maximum of `x`, the numerators `e = exp(x - max)` stored into the output with their sum, and
//! the output divided by the sum. Cranelift's x86 back end emits 128-bit vectors at most, and on
//! the short rows of attention (64 keys per query in the char transformer) the generated passes
//! spend most of their time on per-row work: the masked, scaled scores are evaluated twice (for
//! the maximum and for the numerators), each maximum is a seven-instruction `fmax` sequence, the
//! exponentials go through a stack array, and the divisions run four lanes at a time.
//!
//! Where a row kernel is exactly that softmax ([`recognise`]), the code generator keeps one pass
//! that stores `x` into the output row and calls [`function`]'s function once per block of up
//! to [`BLOCK`] rows: the maxima, the numerators in place (`jit::vmath`'s `exp`, the inline
//! code's bits), their sums and the divisions, on AVX-512 (or AVX2) registers, each step for
//! every row of the block before the next so that the rows' dependency chains overlap. The sum adds in the order of the generated code
//! (element `j` of each whole 16 into lane `j mod 16`, the rest of the row's whole fours into
//! lanes 0–3, lanes folded four by four and then one by one from zero, then the scalar tail), so
//! the outputs are bit-for-bit those of the generated passes. The maximum of values that are not
//! NaN does not depend on the order (with `-0 < +0`, as Cranelift's `fmax`); a row holding a NaN
//! has maximum NaN and NaN outputs on either path (the NaNs' sign bits may differ).
//! `MODELC_VMATH=inline` turns this path off with the array functions.

use crate::ir::{BinaryOp, DType, UnaryOp};
use crate::sched::{Expr, ExprId, LoopKernel, ReduceKind, Split, StoreSource};

use super::vmath::{Group, Variant, exp_v};

/// A kernel recognised as a softmax over its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The values the softmax normalises (the maximum's operand).
    pub x: ExprId,
    /// The store of the numerators (into the output, contiguous along the row).
    pub store: usize,
}

/// The softmax in `k`, if `k` is exactly one: three passes; a maximum of `x` in the first, a
/// sum of `exp(x - max)` in the second, stored contiguously into an output that the last pass
/// divides by the sum; nothing else reduced or stored, and `x` not reading the output. Whether
/// the generated code would have vectorised the sum (and so added in the order the row
/// function follows) is the caller's to check.
pub fn recognise(k: &LoopKernel) -> Option<Plan> {
    if k.split != Split::Rows || k.passes != 3 || k.reductions.len() != 2 || k.stores.len() != 2 {
        return None;
    }
    let f32 = |e: ExprId| k.types[e as usize] == DType::F32;
    let max = k.reductions.iter().position(|r| r.kind == ReduceKind::Max && r.pass == 0)?;
    let sum = k.reductions.iter().position(|r| r.kind == ReduceKind::Sum && r.pass == 1)?;
    let x = k.reductions[max].value;
    let e = k.reductions[sum].value;
    let slot =
        |e: ExprId, s: usize| matches!(k.exprs[e as usize], Expr::RowScalar { slot } if slot as usize == s);
    let Expr::Unary { op: UnaryOp::Exp, x: d } = k.exprs[e as usize] else { return None };
    let Expr::Binary { op: BinaryOp::Sub, a, b } = k.exprs[d as usize] else { return None };
    if a != x || !slot(b, max) || !f32(x) || !f32(e) {
        return None;
    }
    let store = k.stores.iter().position(|s| s.pass == 1)?;
    let (num, last) = (&k.stores[store], &k.stores[1 - store]);
    if num.source != StoreSource::Elem(e) || num.dtype != DType::F32 || num.access.inner != 1 {
        return None;
    }
    let StoreSource::Elem(q) = last.source else { return None };
    let Expr::Binary { op: BinaryOp::Div, a: l, b: s } = k.exprs[q as usize] else { return None };
    let same_place = |buf: u32, access: &crate::sched::Access| buf == num.buf && *access == num.access;
    let loads_output = matches!(&k.exprs[l as usize], Expr::Load { buf, dtype: DType::F32, access } if same_place(*buf, access));
    if last.pass != 2
        || !same_place(last.buf, &last.access)
        || last.dtype != DType::F32
        || !loads_output
        || !slot(s, sum)
    {
        return None;
    }
    // `x` must not read the output (the row function overwrites it with `x` first) nor a row
    // scalar (it is evaluated before any)
    let reads = |y: ExprId| match &k.exprs[y as usize] {
        Expr::Load { buf, .. } | Expr::GatherLoad { buf, .. } => *buf == num.buf,
        Expr::RowScalar { .. } => true,
        _ => false,
    };
    if k.any_below(x, reads) {
        return None;
    }
    Some(Plan { x, store })
}

/// `max(a, b)` as Cranelift's `fmax` for values that are not NaN (`-0 < +0`); NaN (any) when
/// either is NaN.
fn max_exact(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else if b > a {
        b
    } else if a == b {
        f32::from_bits(a.to_bits() & b.to_bits())
    } else {
        f32::NAN
    }
}

/// What a variant computes with its widest registers: the row maximum and the sum in the
/// generated code's order. [`Reference`] is the definition.
trait Rows {
    /// The maximum of `p[0..n]` ([`max_exact`] over the row, NaN if any element is NaN).
    ///
    /// # Safety
    /// `p` points to `n` values; the CPU has the variant's features.
    unsafe fn max(p: *const f32, n: usize) -> f32;
    /// The sum of `p[0..n]` in the generated code's order (see the module docs).
    ///
    /// # Safety
    /// As for `max`.
    unsafe fn sum(p: *const f32, n: usize) -> f32;
}

/// One `f32` at a time: the definition of the order.
struct Reference;

impl Rows for Reference {
    unsafe fn max(p: *const f32, n: usize) -> f32 {
        // SAFETY: the caller's contract.
        let x = unsafe { std::slice::from_raw_parts(p, n) };
        x.iter().fold(f32::NEG_INFINITY, |m, &v| max_exact(m, v))
    }

    unsafe fn sum(p: *const f32, n: usize) -> f32 {
        // SAFETY: the caller's contract.
        let e = unsafe { std::slice::from_raw_parts(p, n) };
        let (n16, n4) = split(n);
        let mut acc = [0f32; 16];
        for (j, &v) in e[..n16].iter().enumerate() {
            acc[j % 16] += v;
        }
        for (j, &v) in e[n16..n4].iter().enumerate() {
            acc[j % 4] += v;
        }
        let mut s = 0f32;
        for l in 0..4 {
            s += ((acc[l] + acc[4 + l]) + acc[8 + l]) + acc[12 + l];
        }
        e[n4..].iter().fold(s, |s, &v| s + v)
    }
}

/// Where a row of `n` splits: whole 16s end at `n16`, then whole 4s at `n4` (the generated
/// code's 16-wide and 4-wide loops; below 4 elements it has no vector loop and `n4 = 0`).
fn split(n: usize) -> (usize, usize) {
    if n < 4 {
        return (0, 0);
    }
    let n16 = n / 16 * 16;
    (n16, n16 + (n - n16) / 4 * 4)
}

/// Rows the generated code hands over per call (their addresses in a stack array).
pub const BLOCK: usize = 8;

/// Rows `rows[0..count]` of `n` values each, in place: the maxima, the numerators, their sums,
/// the divisions. Each step runs for every row before the next step starts, so that the rows'
/// dependency chains (maximum, then exponentials, then sum, then divisions) overlap.
///
/// # Safety
/// `rows` holds `count` pointers to `n` values each; the CPU has the features of `R` and `G`.
#[inline(always)]
unsafe fn rows<R: Rows, G: Group>(rows: *const *mut f32, count: i64, n: i64) {
    let n = n.max(0) as usize;
    // SAFETY: every access is below `n` in one of the rows (the caller's contract).
    unsafe {
        let rows = std::slice::from_raw_parts(rows, count.max(0) as usize);
        for rows in rows.chunks(BLOCK) {
            let mut m = [0f32; BLOCK];
            for (m, &p) in m.iter_mut().zip(rows) {
                *m = R::max(p, n);
            }
            for (&m, &p) in m.iter().zip(rows) {
                let mv = G::splat(m);
                let mut i = 0;
                while i + G::LANES <= n {
                    exp_v(G::load(p.add(i)).sub(mv)).store(p.add(i));
                    i += G::LANES;
                }
                for i in i..n {
                    *p.add(i) = exp_v(*p.add(i) - m);
                }
            }
            let mut s = [0f32; BLOCK];
            for (s, &p) in s.iter_mut().zip(rows) {
                *s = R::sum(p, n);
            }
            for (&s, &p) in s.iter().zip(rows) {
                let sv = G::splat(s);
                let mut i = 0;
                while i + G::LANES <= n {
                    G::load(p.add(i)).div(sv).store(p.add(i));
                    i += G::LANES;
                }
                for i in i..n {
                    *p.add(i) /= s;
                }
            }
        }
    }
}

/// A row function's ABI: `(row addresses, rows, n)`, in place.
pub type RowsFn = unsafe extern "C" fn(*const *mut f32, i64, i64);

/// The f32 reference.
///
/// # Safety
/// `rows` holds `count` pointers to `n` valid values each.
pub unsafe extern "C" fn rows_scalar(p: *const *mut f32, count: i64, n: i64) {
    // SAFETY: the caller's contract.
    unsafe { rows::<Reference, f32>(p, count, n) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::vmath::x86::{Ymm, Zmm};
    use super::{Reference, Rows, max_exact, rows, split};
    use std::arch::x86_64::*;

    struct Avx512;

    impl Rows for Avx512 {
        #[inline(always)]
        unsafe fn max(p: *const f32, n: usize) -> f32 {
            // SAFETY: the caller's contract (AVX-512F, `n` values).
            unsafe {
                // `max_exact` per lane: equal lanes (+0 and -0 among them) take the and of both
                #[inline(always)]
                unsafe fn max(a: __m512, b: __m512) -> __m512 {
                    unsafe {
                        let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b);
                        let both = _mm512_castsi512_ps(_mm512_and_si512(
                            _mm512_castps_si512(a),
                            _mm512_castps_si512(b),
                        ));
                        _mm512_mask_mov_ps(_mm512_max_ps(a, b), eq, both)
                    }
                }
                let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                let mut nan: __mmask16 = 0;
                let mut i = 0;
                while i + 16 <= n {
                    let x = _mm512_loadu_ps(p.add(i));
                    nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
                    m = max(m, x);
                    i += 16;
                }
                if nan != 0 {
                    return f32::NAN;
                }
                // across the lanes: halves, quarters, pairs, neighbours (the order is free)
                m = max(m, _mm512_shuffle_f32x4::<0b01_00_11_10>(m, m));
                m = max(m, _mm512_shuffle_f32x4::<0b10_11_00_01>(m, m));
                m = max(m, _mm512_permute_ps::<0b01_00_11_10>(m));
                m = max(m, _mm512_permute_ps::<0b10_11_00_01>(m));
                max_exact(_mm512_cvtss_f32(m), Reference::max(p.add(i), n - i))
            }
        }

        #[inline(always)]
        unsafe fn sum(p: *const f32, n: usize) -> f32 {
            let (n16, n4) = split(n);
            // SAFETY: the caller's contract.
            unsafe {
                let mut acc = _mm512_setzero_ps();
                let mut i = 0;
                while i < n16 {
                    acc = _mm512_add_ps(acc, _mm512_loadu_ps(p.add(i)));
                    i += 16;
                }
                while i < n4 {
                    // lanes 0-3 only (the generated code's first accumulator set)
                    acc = _mm512_mask_add_ps(acc, 0xf, acc, _mm512_castps128_ps512(_mm_loadu_ps(p.add(i))));
                    i += 4;
                }
                let v = _mm_add_ps(_mm512_castps512_ps128(acc), _mm512_extractf32x4_ps::<1>(acc));
                let v = _mm_add_ps(v, _mm512_extractf32x4_ps::<2>(acc));
                let v = _mm_add_ps(v, _mm512_extractf32x4_ps::<3>(acc));
                let mut lanes = [0f32; 4];
                _mm_storeu_ps(lanes.as_mut_ptr(), v);
                let s = lanes.iter().fold(0f32, |s, &v| s + v);
                (n4..n).fold(s, |s, j| s + *p.add(j))
            }
        }
    }

    struct Avx2;

    impl Rows for Avx2 {
        #[inline(always)]
        unsafe fn max(p: *const f32, n: usize) -> f32 {
            // SAFETY: the caller's contract (AVX2, `n` values).
            unsafe {
                // `max_exact` per lane: equal lanes (+0 and -0 among them) take the and of both
                #[inline(always)]
                unsafe fn max(a: __m256, b: __m256) -> __m256 {
                    unsafe {
                        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b);
                        _mm256_blendv_ps(_mm256_max_ps(a, b), _mm256_and_ps(a, b), eq)
                    }
                }
                let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
                let mut nan = _mm256_setzero_ps();
                let mut i = 0;
                while i + 8 <= n {
                    let x = _mm256_loadu_ps(p.add(i));
                    nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
                    m = max(m, x);
                    i += 8;
                }
                if _mm256_movemask_ps(nan) != 0 {
                    return f32::NAN;
                }
                // across the lanes: halves, pairs, neighbours (the order is free)
                m = max(m, _mm256_permute2f128_ps::<0x01>(m, m));
                m = max(m, _mm256_permute_ps::<0b01_00_11_10>(m));
                m = max(m, _mm256_permute_ps::<0b10_11_00_01>(m));
                max_exact(_mm256_cvtss_f32(m), Reference::max(p.add(i), n - i))
            }
        }

        #[inline(always)]
        unsafe fn sum(p: *const f32, n: usize) -> f32 {
            let (n16, n4) = split(n);
            // SAFETY: the caller's contract.
            unsafe {
                let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut i = 0;
                while i < n16 {
                    lo = _mm256_add_ps(lo, _mm256_loadu_ps(p.add(i)));
                    hi = _mm256_add_ps(hi, _mm256_loadu_ps(p.add(i + 8)));
                    i += 16;
                }
                let mut set0 = _mm256_castps256_ps128(lo);
                while i < n4 {
                    set0 = _mm_add_ps(set0, _mm_loadu_ps(p.add(i)));
                    i += 4;
                }
                let v = _mm_add_ps(set0, _mm256_extractf128_ps::<1>(lo));
                let v = _mm_add_ps(v, _mm256_castps256_ps128(hi));
                let v = _mm_add_ps(v, _mm256_extractf128_ps::<1>(hi));
                let mut lanes = [0f32; 4];
                _mm_storeu_ps(lanes.as_mut_ptr(), v);
                let s = lanes.iter().fold(0f32, |s, &v| s + v);
                (n4..n).fold(s, |s, j| s + *p.add(j))
            }
        }
    }

    /// # Safety
    /// `p` holds `count` pointers to `n` valid values each; the CPU has AVX-512F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe extern "C" fn rows_avx512(p: *const *mut f32, count: i64, n: i64) {
        // SAFETY: the caller's contract.
        unsafe { rows::<Avx512, Zmm>(p, count, n) }
    }

    /// # Safety
    /// As for [`rows_avx512`], with AVX2 and FMA instead of AVX-512F.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn rows_avx2(p: *const *mut f32, count: i64, n: i64) {
        // SAFETY: the caller's contract.
        unsafe { rows::<Avx2, Ymm>(p, count, n) }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{rows_avx2, rows_avx512};

/// The rows function of `variant`.
pub fn function(variant: Variant) -> RowsFn {
    #[cfg(target_arch = "x86_64")]
    {
        match variant {
            Variant::Avx512 => rows_avx512,
            Variant::Avx2 => rows_avx2,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = variant;
        rows_scalar
    }
}
