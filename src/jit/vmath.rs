//! Exponentials and error functions over whole arrays, in native code as wide as the CPU has.
//!
//! Cranelift's x86 back end emits 128-bit vectors at most, so the inline polynomials of
//! [`super::math`] evaluate four lanes per instruction; AVX-512 evaluates sixteen. Where a
//! kernel pass applies `exp` or `erf` along a contiguous row, the code generator computes the
//! arguments of a chunk of the row (up to [`CHUNK`] elements, whole multiples of 16) into a stack
//! array, calls one of the functions here on it, and runs the rest of the pass on the results
//! (`codegen::emit_native_chunks`). Softmax rows (the exponentials of attention and cross
//! entropy) and GELU epilogues take this path.
//!
//! The functions evaluate, lane by lane, exactly the operations of the inline code (the same
//! constants, the same fused multiply-adds in the same order, the same clamps and selections), so
//! every result is bit-for-bit the one the inline code gives (`tests/jit_math.rs` sweeps both
//! over the f32 bit space, special values and subnormals; `tests/cli.rs` compares a model's
//! outputs with the path on and off): which path a row takes changes no number.
//! The inline code's early exits (a vector whose lanes all underflow skips the polynomial of
//! `exp`; `erf` evaluates its large-argument branch only when some lane needs it) change no
//! value either, and are not mirrored: here both branches are computed and selected per lane.
//!
//! The functions are written once, generically over the lane operations of the `Lanes` trait, and
//! instantiated for one `f32` (the reference), for four AVX-512 registers and for two AVX2
//! registers (`#[target_feature]` functions over arrays); the variant is chosen once per process
//! from the CPU. `MODELC_VMATH=inline` turns the path off (for comparisons).

use super::math::{
    ERF_LARGE_R, ERF_LARGE_TAIL, ERF_LARGE_U, ERF_SMALL, ERF_SPLIT, EXP_HI, EXP_LO, EXP_NONPOSITIVE_LO,
    EXP_POLY, LN2_LO, NEG_LN2_HI, ROUND_MAGIC,
};
use crate::ir::UnaryOp;

/// Elements per call: 1 KiB per stack array, so a chunk's arguments stay in L1.
pub const CHUNK: usize = 256;

/// The operations the functions are written in, implemented for one `f32` (the reference,
/// [`exp_lane`] / [`erf_lane`]) and for groups of AVX-512 and AVX2 registers. Each is one IEEE
/// operation per lane (or exact bit manipulation), so every implementation gives the same bits.
/// A group holds several registers so that independent lanes interleave (the polynomials are
/// long dependency chains).
pub(super) trait Lanes: Copy {
    /// Integer lanes (the bit patterns).
    type I: Copy;
    /// Lane masks.
    type M: Copy;
    fn splat(c: f32) -> Self;
    fn mul_add(self, b: Self, c: Self) -> Self;
    fn add(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    fn div(self, b: Self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn neg(self) -> Self;
    /// `self > b` (false where either is NaN).
    fn gt(self, b: Self) -> Self::M;
    /// `self < b` (false where either is NaN).
    fn lt(self, b: Self) -> Self::M;
    /// `m ? a : b` per lane.
    fn select(m: Self::M, a: Self, b: Self) -> Self;
    /// `bits(self) - bits(b)` as integers.
    fn bits_sub(self, b: Self) -> Self::I;
    /// `n >> 1` (arithmetic) and `n - (n >> 1)`.
    fn halves(n: Self::I) -> (Self::I, Self::I);
    /// `2^n`: the bits `(n + 127) << 23`.
    fn pow2(n: Self::I) -> Self;
    /// `self` with its sign bit xor-ed with the sign bit of `x`.
    fn xor_sign_of(self, x: Self) -> Self;
}

impl Lanes for f32 {
    type I = i32;
    type M = bool;
    #[inline(always)]
    fn splat(c: f32) -> f32 {
        c
    }
    #[inline(always)]
    fn mul_add(self, b: f32, c: f32) -> f32 {
        f32::mul_add(self, b, c)
    }
    #[inline(always)]
    fn add(self, b: f32) -> f32 {
        self + b
    }
    #[inline(always)]
    fn sub(self, b: f32) -> f32 {
        self - b
    }
    #[inline(always)]
    fn mul(self, b: f32) -> f32 {
        self * b
    }
    #[inline(always)]
    fn div(self, b: f32) -> f32 {
        self / b
    }
    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    #[inline(always)]
    fn neg(self) -> f32 {
        -self
    }
    #[inline(always)]
    fn gt(self, b: f32) -> bool {
        self > b
    }
    #[inline(always)]
    fn lt(self, b: f32) -> bool {
        self < b
    }
    #[inline(always)]
    fn select(m: bool, a: f32, b: f32) -> f32 {
        if m { a } else { b }
    }
    #[inline(always)]
    fn bits_sub(self, b: f32) -> i32 {
        (self.to_bits() as i32).wrapping_sub(b.to_bits() as i32)
    }
    #[inline(always)]
    fn halves(n: i32) -> (i32, i32) {
        let n1 = n >> 1;
        (n1, n.wrapping_sub(n1))
    }
    #[inline(always)]
    fn pow2(n: i32) -> f32 {
        f32::from_bits((n.wrapping_add(127) << 23) as u32)
    }
    #[inline(always)]
    fn xor_sign_of(self, x: f32) -> f32 {
        f32::from_bits(self.to_bits() ^ (x.to_bits() & 0x8000_0000))
    }
}

/// Horner with fused multiply-adds, `math::Vectors::poly`.
#[inline(always)]
fn poly<V: Lanes>(x: V, coeffs: &[f32]) -> V {
    let mut acc = V::splat(coeffs[0]);
    for &c in &coeffs[1..] {
        acc = acc.mul_add(x, V::splat(c));
    }
    acc
}

/// `math::Vectors::exp_parts`: `e^r` and `n` where `x = n ln2 + r`.
#[inline(always)]
fn exp_parts<V: Lanes>(x: V) -> (V, V::I) {
    let magic = V::splat(ROUND_MAGIC);
    let k = x.mul_add(V::splat(std::f32::consts::LOG2_E), magic);
    let n = k.sub(magic);
    let r = n.mul_add(V::splat(NEG_LN2_HI), x);
    let r = n.mul_add(V::splat(LN2_LO), r);
    let p = poly(r, &EXP_POLY);
    let r2 = r.mul(r);
    let y = p.mul_add(r2, r);
    let y = y.add(V::splat(1.0));
    (y, k.bits_sub(magic))
}

/// `math::Vectors::exp`.
#[inline(always)]
pub(super) fn exp_v<V: Lanes>(x: V) -> V {
    let x = V::select(x.gt(V::splat(EXP_HI)), V::splat(EXP_HI), x);
    let below = x.lt(V::splat(EXP_LO));
    let zero = V::splat(0.0);
    let x = V::select(below, zero, x);
    let (y, ni) = exp_parts(x);
    let (n1, n2) = V::halves(ni);
    let y = y.mul(V::pow2(n1));
    let y = y.mul(V::pow2(n2));
    V::select(below, zero, y)
}

/// `math::Vectors::exp_nonpositive`.
#[inline(always)]
fn exp_nonpositive<V: Lanes>(x: V) -> V {
    let lo = V::splat(EXP_NONPOSITIVE_LO);
    let x = V::select(x.lt(lo), lo, x);
    let (y, ni) = exp_parts(x);
    y.mul(V::pow2(ni))
}

/// `math::Vectors::erf`.
#[inline(always)]
pub(super) fn erf_v<V: Lanes>(x: V) -> V {
    let t = x.abs();
    let s = x.mul(x);
    let p = poly(s, &ERF_SMALL);
    let small = p.mul_add(x, x);
    let is_large = t.gt(V::splat(ERF_SPLIT));
    let r = poly(t, &ERF_LARGE_R);
    let u = poly(t, &ERF_LARGE_U);
    let mut r = r.mul_add(s, u);
    for c in ERF_LARGE_TAIL {
        r = r.mul_add(t, V::splat(c));
    }
    let r = r.mul_add(t, t.neg());
    let e = exp_nonpositive(r);
    let large = V::splat(1.0).sub(e).xor_sign_of(x);
    V::select(is_large, large, small)
}

/// `exp(x)`: bit for bit the inline code's `math::Vectors::exp` on one lane.
pub fn exp_lane(x: f32) -> f32 {
    exp_v(x)
}

/// `erf(x)`: bit for bit the inline code's `math::Vectors::erf` on one lane.
pub fn erf_lane(x: f32) -> f32 {
    erf_v(x)
}

/// A group of registers loaded and stored whole (one `f32` for the tails).
pub(super) trait Group: Lanes {
    /// Lanes in the group.
    const LANES: usize;
    /// # Safety
    /// `p` points to `LANES` valid values; the CPU has the group's features.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// As for `load`.
    unsafe fn store(self, p: *mut f32);
}

impl Group for f32 {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller's contract.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { *p = self }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{Group, Lanes};
    use std::arch::x86_64::*;

    /// Registers per group: four AVX-512 registers (64 lanes), two AVX2 registers (16 lanes).
    const Z: usize = 4;
    const Y: usize = 2;

    #[derive(Clone, Copy)]
    pub struct Zmm(pub [__m512; Z]);
    #[derive(Clone, Copy)]
    pub struct Ymm(pub [__m256; Y]);

    // SAFETY (all intrinsics below): these functions are only inlined into functions compiled
    // with the features they need (`#[target_feature]` on the array functions, which run only
    // where the CPU has them).
    // (a loop, not `array::from_fn`: a closure would not inherit the target features, and
    // its intrinsics would be calls)
    macro_rules! each {
        ($n:expr, |$i:ident| $e:expr) => {{
            // SAFETY: all-zero bits are a valid vector, mask or integer.
            #[allow(unused_unsafe)]
            let mut out: [_; $n] = unsafe { std::mem::zeroed() };
            #[allow(clippy::needless_range_loop)]
            for $i in 0..$n {
                out[$i] = $e;
            }
            out
        }};
    }

    impl Lanes for Zmm {
        type I = [__m512i; Z];
        type M = [__mmask16; Z];
        #[inline(always)]
        fn splat(c: f32) -> Self {
            Zmm(each!(Z, |_i| unsafe { _mm512_set1_ps(c) }))
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            Zmm(each!(Z, |i| unsafe { _mm512_fmadd_ps(self.0[i], b.0[i], c.0[i]) }))
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            Zmm(each!(Z, |i| unsafe { _mm512_add_ps(self.0[i], b.0[i]) }))
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            Zmm(each!(Z, |i| unsafe { _mm512_sub_ps(self.0[i], b.0[i]) }))
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            Zmm(each!(Z, |i| unsafe { _mm512_mul_ps(self.0[i], b.0[i]) }))
        }
        #[inline(always)]
        fn div(self, b: Self) -> Self {
            Zmm(each!(Z, |i| unsafe { _mm512_div_ps(self.0[i], b.0[i]) }))
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            Zmm(each!(Z, |i| unsafe { _mm512_sqrt_ps(self.0[i]) }))
        }
        #[inline(always)]
        fn abs(self) -> Self {
            Zmm(each!(Z, |i| unsafe {
                _mm512_castsi512_ps(_mm512_and_si512(
                    _mm512_castps_si512(self.0[i]),
                    _mm512_set1_epi32(0x7fff_ffff),
                ))
            }))
        }
        #[inline(always)]
        fn neg(self) -> Self {
            Zmm(each!(Z, |i| unsafe {
                _mm512_castsi512_ps(_mm512_xor_si512(
                    _mm512_castps_si512(self.0[i]),
                    _mm512_set1_epi32(i32::MIN),
                ))
            }))
        }
        #[inline(always)]
        fn gt(self, b: Self) -> Self::M {
            each!(Z, |i| unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0[i], b.0[i]) })
        }
        #[inline(always)]
        fn lt(self, b: Self) -> Self::M {
            each!(Z, |i| unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0[i], b.0[i]) })
        }
        #[inline(always)]
        fn select(m: Self::M, a: Self, b: Self) -> Self {
            Zmm(each!(Z, |i| unsafe { _mm512_mask_blend_ps(m[i], b.0[i], a.0[i]) }))
        }
        #[inline(always)]
        fn bits_sub(self, b: Self) -> Self::I {
            each!(Z, |i| unsafe {
                _mm512_sub_epi32(_mm512_castps_si512(self.0[i]), _mm512_castps_si512(b.0[i]))
            })
        }
        #[inline(always)]
        fn halves(n: Self::I) -> (Self::I, Self::I) {
            let n1 = each!(Z, |i| unsafe { _mm512_srai_epi32::<1>(n[i]) });
            let n2 = each!(Z, |i| unsafe { _mm512_sub_epi32(n[i], n1[i]) });
            (n1, n2)
        }
        #[inline(always)]
        fn pow2(n: Self::I) -> Self {
            Zmm(each!(Z, |i| unsafe {
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n[i], _mm512_set1_epi32(127))))
            }))
        }
        #[inline(always)]
        fn xor_sign_of(self, x: Self) -> Self {
            Zmm(each!(Z, |i| unsafe {
                let sign = _mm512_and_si512(_mm512_castps_si512(x.0[i]), _mm512_set1_epi32(i32::MIN));
                _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(self.0[i]), sign))
            }))
        }
    }

    impl Lanes for Ymm {
        type I = [__m256i; Y];
        type M = [__m256; Y];
        #[inline(always)]
        fn splat(c: f32) -> Self {
            Ymm(each!(Y, |_i| unsafe { _mm256_set1_ps(c) }))
        }
        #[inline(always)]
        fn mul_add(self, b: Self, c: Self) -> Self {
            Ymm(each!(Y, |i| unsafe { _mm256_fmadd_ps(self.0[i], b.0[i], c.0[i]) }))
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            Ymm(each!(Y, |i| unsafe { _mm256_add_ps(self.0[i], b.0[i]) }))
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            Ymm(each!(Y, |i| unsafe { _mm256_sub_ps(self.0[i], b.0[i]) }))
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            Ymm(each!(Y, |i| unsafe { _mm256_mul_ps(self.0[i], b.0[i]) }))
        }
        #[inline(always)]
        fn div(self, b: Self) -> Self {
            Ymm(each!(Y, |i| unsafe { _mm256_div_ps(self.0[i], b.0[i]) }))
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            Ymm(each!(Y, |i| unsafe { _mm256_sqrt_ps(self.0[i]) }))
        }
        #[inline(always)]
        fn abs(self) -> Self {
            Ymm(each!(Y, |i| unsafe {
                _mm256_castsi256_ps(_mm256_and_si256(
                    _mm256_castps_si256(self.0[i]),
                    _mm256_set1_epi32(0x7fff_ffff),
                ))
            }))
        }
        #[inline(always)]
        fn neg(self) -> Self {
            Ymm(each!(Y, |i| unsafe {
                _mm256_castsi256_ps(_mm256_xor_si256(
                    _mm256_castps_si256(self.0[i]),
                    _mm256_set1_epi32(i32::MIN),
                ))
            }))
        }
        #[inline(always)]
        fn gt(self, b: Self) -> Self::M {
            each!(Y, |i| unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(self.0[i], b.0[i]) })
        }
        #[inline(always)]
        fn lt(self, b: Self) -> Self::M {
            each!(Y, |i| unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(self.0[i], b.0[i]) })
        }
        #[inline(always)]
        fn select(m: Self::M, a: Self, b: Self) -> Self {
            Ymm(each!(Y, |i| unsafe { _mm256_blendv_ps(b.0[i], a.0[i], m[i]) }))
        }
        #[inline(always)]
        fn bits_sub(self, b: Self) -> Self::I {
            each!(Y, |i| unsafe {
                _mm256_sub_epi32(_mm256_castps_si256(self.0[i]), _mm256_castps_si256(b.0[i]))
            })
        }
        #[inline(always)]
        fn halves(n: Self::I) -> (Self::I, Self::I) {
            let n1 = each!(Y, |i| unsafe { _mm256_srai_epi32::<1>(n[i]) });
            let n2 = each!(Y, |i| unsafe { _mm256_sub_epi32(n[i], n1[i]) });
            (n1, n2)
        }
        #[inline(always)]
        fn pow2(n: Self::I) -> Self {
            Ymm(each!(Y, |i| unsafe {
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n[i], _mm256_set1_epi32(127))))
            }))
        }
        #[inline(always)]
        fn xor_sign_of(self, x: Self) -> Self {
            Ymm(each!(Y, |i| unsafe {
                let sign = _mm256_and_si256(_mm256_castps_si256(x.0[i]), _mm256_set1_epi32(i32::MIN));
                _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(self.0[i]), sign))
            }))
        }
    }

    impl Group for Zmm {
        const LANES: usize = 16 * Z;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Zmm(each!(Z, |r| unsafe { _mm512_loadu_ps(p.add(16 * r)) }))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            for r in 0..Z {
                unsafe { _mm512_storeu_ps(p.add(16 * r), self.0[r]) };
            }
        }
    }

    impl Group for Ymm {
        const LANES: usize = 8 * Y;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Ymm(each!(Y, |r| unsafe { _mm256_loadu_ps(p.add(8 * r)) }))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            for r in 0..Y {
                unsafe { _mm256_storeu_ps(p.add(8 * r), self.0[r]) };
            }
        }
    }

    /// Applies `wide` to the `n` values at `p` in place a group at a time, then `one` (the
    /// same function on one `f32`, the same bits) to the rest. Inlined into the
    /// `#[target_feature]` functions below, which supply the features.
    ///
    /// # Safety
    /// `p` points to `n` valid values; the CPU has `G`'s features.
    #[inline(always)]
    unsafe fn in_place<G: Group>(p: *mut f32, n: i64, wide: fn(G) -> G, one: fn(f32) -> f32) {
        let n = n.max(0) as usize;
        let mut i = 0;
        // SAFETY: every access is below `n` (the caller's contract).
        unsafe {
            while i + G::LANES <= n {
                wide(G::load(p.add(i))).store(p.add(i));
                i += G::LANES;
            }
            while i < n {
                *p.add(i) = one(*p.add(i));
                i += 1;
            }
        }
    }

    /// # Safety
    /// `p` points to `n` valid values; the CPU has AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe extern "C" fn exp_avx512(p: *mut f32, n: i64) {
        unsafe { in_place::<Zmm>(p, n, super::exp_v, super::exp_v) }
    }

    /// # Safety
    /// As for [`exp_avx512`].
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe extern "C" fn erf_avx512(p: *mut f32, n: i64) {
        unsafe { in_place::<Zmm>(p, n, super::erf_v, super::erf_v) }
    }

    /// # Safety
    /// `p` points to `n` valid values; the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn exp_avx2(p: *mut f32, n: i64) {
        unsafe { in_place::<Ymm>(p, n, super::exp_v, super::exp_v) }
    }

    /// # Safety
    /// As for [`exp_avx2`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn erf_avx2(p: *mut f32, n: i64) {
        unsafe { in_place::<Ymm>(p, n, super::erf_v, super::erf_v) }
    }
}

/// An array function's ABI: `(values, n)`, applied in place.
type ArrayFn = unsafe extern "C" fn(*mut f32, i64);

/// One compiled variant of the array functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Avx512,
    Avx2,
}

/// The variants this CPU can run, widest first (for tests and benchmarks).
pub fn supported() -> Vec<Variant> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2");
        if fma && std::arch::is_x86_feature_detected!("avx512f") {
            v.push(Variant::Avx512);
        }
        if fma {
            v.push(Variant::Avx2);
        }
    }
    v
}

/// The variant kernels use: the widest supported one, unless `MODELC_VMATH=inline`.
pub fn active() -> Option<Variant> {
    static ACTIVE: std::sync::OnceLock<Option<Variant>> = std::sync::OnceLock::new();
    *ACTIVE.get_or_init(|| {
        if std::env::var("MODELC_VMATH").is_ok_and(|v| v == "inline") {
            return None;
        }
        supported().first().copied()
    })
}

/// Applies `op` (`Exp` or `Erf`) to `xs` in place with `variant`.
///
/// # Panics
/// If the CPU does not support `variant` or `op` has no array function.
pub fn apply(variant: Variant, op: UnaryOp, xs: &mut [f32]) {
    assert!(supported().contains(&variant), "vmath: {variant:?} is not supported here");
    let f = function(variant, op).unwrap_or_else(|| panic!("vmath: no array function for `{}`", op.name()));
    // SAFETY: the slice is valid; the variant is supported (checked above).
    unsafe { f(xs.as_mut_ptr(), xs.len() as i64) }
}

fn function(variant: Variant, op: UnaryOp) -> Option<ArrayFn> {
    #[cfg(target_arch = "x86_64")]
    {
        let f: ArrayFn = match (variant, op) {
            (Variant::Avx512, UnaryOp::Exp) => x86::exp_avx512,
            (Variant::Avx512, UnaryOp::Erf) => x86::erf_avx512,
            (Variant::Avx2, UnaryOp::Exp) => x86::exp_avx2,
            (Variant::Avx2, UnaryOp::Erf) => x86::erf_avx2,
            _ => return None,
        };
        Some(f)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (variant, op);
        None
    }
}

/// The address of the array function kernels call for `op`, if `op` has one and the path is
/// active on this CPU.
pub fn array_fn(op: UnaryOp) -> Option<usize> {
    function(active()?, op).map(|f| f as usize)
}
