//! Elementwise float math emitted inline as CLIF: exp, log, tanh, sigmoid, erf, sin, cos and pow
//! as range reduction plus FMA polynomials (Cranelift has no transcendental instructions and a
//! libm call per element is far too slow), and the cheap ops as native instructions.
//!
//! Every function works on `f32x4` and on scalar `f32`. A scalar operand of a transcendental is
//! splatted, run through the vector code and lane 0 is extracted, so a loop's scalar tail gives
//! bit-identical results to its vector body (and there is one code path to test). Measured
//! accuracy and the special values are documented in `docs/kernels.md` and checked against f64
//! libm by `tests/jit_math.rs`.

// The polynomial coefficients are quoted as published (Cephes, Juffa), digits beyond f32 included,
// so they can be checked against their sources.
#![allow(clippy::excessive_precision)]

use crate::ir::UnaryOp;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The ops computed by inline polynomial code here (the transcendental functions), as opposed to
/// a single instruction.
pub fn is_inline(op: UnaryOp) -> bool {
    matches!(
        op,
        UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Erf
            | UnaryOp::Sin
            | UnaryOp::Cos
    )
}

/// Emits `op(x)` where `x` is `f32x4` or `f32`; the result has the type of `x`.
///
/// `Neg` and `Abs` also accept `i32` / `i32x4` (the IR allows them on ints).
///
/// # Panics
/// On `Not` (a logical op on the code generator's own bool representation, not arithmetic) and
/// on operand types the IR's typing rules exclude; either is a bug in the caller, not user error.
pub fn emit_unary(b: &mut FunctionBuilder, op: UnaryOp, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    if ty == types::I32 || ty == types::I32X4 {
        return match op {
            UnaryOp::Neg => b.ins().ineg(x),
            UnaryOp::Abs => b.ins().iabs(x),
            UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Recip
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Erf
            | UnaryOp::Sin
            | UnaryOp::Cos
            | UnaryOp::Floor
            | UnaryOp::Not => panic!("emit_unary: `{}` does not apply to {ty}", op.name()),
        };
    }
    assert!(ty == types::F32 || ty == types::F32X4, "emit_unary: `{}` on unsupported type {ty}", op.name());
    match op {
        UnaryOp::Neg => b.ins().fneg(x),
        UnaryOp::Abs => b.ins().fabs(x),
        UnaryOp::Sqrt => b.ins().sqrt(x),
        // Two correctly rounded operations (sqrt, then divide): at most about 1 ulp, unlike the
        // 12-bit `rsqrtps` estimate.
        UnaryOp::Rsqrt => {
            let root = b.ins().sqrt(x);
            let one = float_const(b, ty, 1.0);
            b.ins().fdiv(one, root)
        }
        UnaryOp::Recip => {
            let one = float_const(b, ty, 1.0);
            b.ins().fdiv(one, x)
        }
        UnaryOp::Floor => b.ins().floor(x),
        UnaryOp::Exp => on_lanes(b, x, |v, x| v.exp(x)),
        UnaryOp::Log => on_lanes(b, x, |v, x| v.log(x)),
        UnaryOp::Tanh => on_lanes(b, x, |v, x| v.tanh(x)),
        UnaryOp::Sigmoid => on_lanes(b, x, |v, x| v.sigmoid(x)),
        UnaryOp::Erf => on_lanes(b, x, |v, x| v.erf(x)),
        UnaryOp::Sin => on_lanes(b, x, |v, x| v.sin_cos(x, false)),
        UnaryOp::Cos => on_lanes(b, x, |v, x| v.sin_cos(x, true)),
        UnaryOp::Not => panic!("emit_unary: `not` is logical; the code generator lowers it"),
    }
}

/// Emits `pow(x, y)` (C99 `powf` semantics for the special cases) for two `f32x4` or two `f32`
/// operands, computed as `±exp(y * log|x|)`.
///
/// Special cases: `pow(x, ±0) = 1` and `pow(1, y) = 1` even for NaN; a negative finite base
/// with a non-integer exponent is NaN; a negative base with an odd integer exponent gives a
/// negative result (`pow(-0, -3) = -inf`); `pow(±1, ±inf) = 1`; zero and infinite bases and
/// infinite exponents follow from `log(0) = -inf`, `log(inf) = inf`, `exp(±inf)`.
pub fn emit_pow(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    assert_eq!(ty, b.func.dfg.value_type(y), "emit_pow: operand types differ");
    if ty == types::F32X4 {
        return Vectors { b }.pow(x, y);
    }
    assert_eq!(ty, types::F32, "emit_pow: unsupported type {ty}");
    let xv = b.ins().splat(types::F32X4, x);
    let yv = b.ins().splat(types::F32X4, y);
    let r = Vectors { b }.pow(xv, yv);
    b.ins().extractlane(r, 0)
}

/// Runs `f` on `x` if it is a vector, else on a splat of it, returning lane 0.
fn on_lanes(b: &mut FunctionBuilder, x: Value, f: impl FnOnce(&mut Vectors, Value) -> Value) -> Value {
    if b.func.dfg.value_type(x) == types::F32X4 {
        return f(&mut Vectors { b }, x);
    }
    let xv = b.ins().splat(types::F32X4, x);
    let r = f(&mut Vectors { b }, xv);
    b.ins().extractlane(r, 0)
}

fn float_const(b: &mut FunctionBuilder, ty: Type, c: f32) -> Value {
    if ty == types::F32 { b.ins().f32const(c) } else { Vectors { b }.f(c) }
}

/// Emission helpers over `f32x4` values and their `i32x4` bit patterns.
struct Vectors<'a, 'f> {
    b: &'a mut FunctionBuilder<'f>,
}

/// `1.5 * 2^23`: adding it to a float of magnitude below `2^22` rounds to an integer held in the
/// low mantissa bits (round to nearest even), without a float → int conversion that could trap.
pub(super) const ROUND_MAGIC: f32 = 12_582_912.0;

// The constants of `exp` and `erf`, shared with the native array functions of `jit::vmath`,
// which perform the same operations lane for lane.

/// `exp`: arguments above this are clamped to it (`exp(89)` already overflows).
pub(super) const EXP_HI: f32 = 89.0;
/// `exp`: arguments below this give 0.
pub(super) const EXP_LO: f32 = -104.0;
/// `exp_nonpositive`: arguments are clamped here (results below `exp(-87)` are not needed).
pub(super) const EXP_NONPOSITIVE_LO: f32 = -87.0;
/// `ln 2 = LN2_HI + LN2_LO` (Cephes split; `LN2_HI` has 9 bits, so `n * LN2_HI` is exact),
/// stored negated as the reduction uses them.
pub(super) const NEG_LN2_HI: f32 = -0.693359375;
pub(super) const LN2_LO: f32 = 2.12194440e-4;
/// Cephes polynomial for `(e^r - 1 - r) / r^2` on `|r| <= ln2 / 2`, highest power first.
pub(super) const EXP_POLY: [f32; 6] =
    [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];
/// `erf`: `|x|` above this takes the second formula.
pub(super) const ERF_SPLIT: f32 = 0.927734375;
/// `erf(x) = x + x p(x^2)` below the split.
pub(super) const ERF_SMALL: [f32; 6] =
    [-5.96761703e-4, 4.99119423e-3, -2.67681349e-2, 1.12819925e-1, -3.76125336e-1, 1.28379166e-1];
/// `erf(x) = sign(x) (1 - exp(q(|x|)))` above it: `q` from two short polynomials, three more
/// Horner steps and a last `- |x|`.
pub(super) const ERF_LARGE_R: [f32; 2] = [-1.72853470e-5, 3.83197126e-4];
pub(super) const ERF_LARGE_U: [f32; 2] = [-3.88396438e-3, 2.42546219e-2];
pub(super) const ERF_LARGE_TAIL: [f32; 3] = [-1.06777877e-1, -6.34846687e-1, -1.28717512e-1];
const SIGN_BIT: i32 = i32::MIN;

impl Vectors<'_, '_> {
    /// `c` in all four lanes (a constant-pool load, hoisted out of loops by the optimiser).
    fn f(&mut self, c: f32) -> Value {
        self.vconst(types::F32X4, c.to_bits())
    }

    fn i(&mut self, c: i32) -> Value {
        self.vconst(types::I32X4, c as u32)
    }

    fn vconst(&mut self, ty: Type, lane_bits: u32) -> Value {
        let bytes: Vec<u8> = std::iter::repeat_n(lane_bits.to_le_bytes(), 4).flatten().collect();
        let handle = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(ty, handle)
    }

    fn bits(&mut self, x: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(types::I32X4, flags, x)
    }

    fn float(&mut self, x: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        self.b.ins().bitcast(types::F32X4, flags, x)
    }

    /// Lane mask (`i32x4`, all ones where true) of `a cc b`.
    fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(cc, a, b)
    }

    fn cmp_c(&mut self, cc: FloatCC, a: Value, c: f32) -> Value {
        let c = self.f(c);
        self.cmp(cc, a, c)
    }

    /// `mask ? a : b` per lane; `mask` is an `i32x4` lane mask.
    fn sel(&mut self, mask: Value, a: Value, b: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        let mask = self.b.ins().bitcast(types::F32X4, flags, mask);
        self.b.ins().bitselect(mask, a, b)
    }

    fn sel_c(&mut self, mask: Value, a: f32, b: Value) -> Value {
        let a = self.f(a);
        self.sel(mask, a, b)
    }

    fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        self.b.ins().fma(a, b, c)
    }

    /// Horner evaluation of `coeffs[0] x^(n-1) + ... + coeffs[n-1]` with FMA.
    fn poly(&mut self, x: Value, coeffs: &[f32]) -> Value {
        let mut acc = self.f(coeffs[0]);
        for &c in &coeffs[1..] {
            let c = self.f(c);
            acc = self.fma(acc, x, c);
        }
        acc
    }

    /// `x` with its sign bit xor-ed with the sign bits in `sign` (an `i32x4`).
    fn xor_sign(&mut self, x: Value, sign: Value) -> Value {
        let xb = self.bits(x);
        let r = self.b.ins().bxor(xb, sign);
        self.float(r)
    }

    fn sign_bits(&mut self, x: Value) -> Value {
        let xb = self.bits(x);
        let m = self.i(SIGN_BIT);
        self.b.ins().band(xb, m)
    }

    /// `exp(x)`: `x = n ln2 + r`, `|r| <= ln2/2`, Cephes degree-7 polynomial for `e^r`, then
    /// `* 2^n` in two steps so that results in the subnormal range round gradually.
    fn exp(&mut self, x: Value) -> Value {
        // Clamp so that n stays in [-150, 129]: 89 already overflows. Below -104 the result
        // rounds to 0: those lanes compute on 0 instead and are set to 0 at the end, so a
        // masked score (-1e9, -inf) costs no subnormal arithmetic (a microcode assist per
        // operation on x86: half of every causal attention row). Compare-and-select keeps NaN
        // (the comparisons are false for it).
        let above = self.cmp_c(FloatCC::GreaterThan, x, EXP_HI);
        let x = self.sel_c(above, EXP_HI, x);
        let below = self.cmp_c(FloatCC::LessThan, x, EXP_LO);
        // a vector of four such lanes (the masked end of a causal attention row) is 0 without
        // the polynomial: a branch per vector, same results
        let all_below = self.b.ins().vall_true(below);
        let compute = self.b.create_block();
        let join = self.b.create_block();
        let out = self.b.append_block_param(join, types::F32X4);
        let zero = self.f(0.0);
        self.b.ins().brif(all_below, join, &[zero.into()], compute, &[]);
        self.b.switch_to_block(compute);
        self.b.seal_block(compute);
        let x = self.sel_c(below, 0.0, x);
        let (y, ni) = self.exp_parts(x);
        let n1 = self.b.ins().sshr_imm_u(ni, 1);
        let n2 = self.b.ins().isub(ni, n1);
        let s1 = self.pow2(n1);
        let s2 = self.pow2(n2);
        let y = self.b.ins().fmul(y, s1);
        let y = self.b.ins().fmul(y, s2);
        let y = self.sel_c(below, 0.0, y);
        self.b.ins().jump(join, &[y.into()]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        out
    }

    /// `exp(x)` for `x <= 0` where results below `exp(-87)` (about `1.6e-38`, the bottom of the
    /// normal range) may be replaced by `exp(-87)`: `x` is clamped there, so `2^n` is one normal
    /// power of two and a single exact scaling. Equal to [`Self::exp`] wherever that result is
    /// at least `exp(-87)`; positive `x` is not handled.
    fn exp_nonpositive(&mut self, x: Value) -> Value {
        let below = self.cmp_c(FloatCC::LessThan, x, EXP_NONPOSITIVE_LO);
        let x = self.sel_c(below, EXP_NONPOSITIVE_LO, x);
        let (y, ni) = self.exp_parts(x);
        let s = self.pow2(ni);
        self.b.ins().fmul(y, s)
    }

    /// `x = n ln2 + r`: returns `e^r` and `n` as integer lanes (`exp(x) = e^r 2^n`). `x` must be
    /// clamped so that `|n| < 2^22`.
    fn exp_parts(&mut self, x: Value) -> (Value, Value) {
        let log2e = self.f(std::f32::consts::LOG2_E);
        let magic = self.f(ROUND_MAGIC);
        let k = self.fma(x, log2e, magic);
        let n = self.b.ins().fsub(k, magic);
        // ln2 = 0.693359375 - 2.12194440e-4 (Cephes split; the first part has 9 bits, so n * it
        // is exact even without FMA).
        let c1 = self.f(NEG_LN2_HI);
        let c2 = self.f(LN2_LO);
        let r = self.fma(n, c1, x);
        let r = self.fma(n, c2, r);

        let p = self.poly(r, &EXP_POLY);
        let r2 = self.b.ins().fmul(r, r);
        let y = self.fma(p, r2, r);
        let one = self.f(1.0);
        let y = self.b.ins().fadd(y, one);

        // n as an integer: k and the magic constant share their exponent, so the bit patterns
        // differ by exactly n.
        let kb = self.bits(k);
        let mb = self.i(ROUND_MAGIC.to_bits() as i32);
        let ni = self.b.ins().isub(kb, mb);
        (y, ni)
    }

    /// `2^n` for integer lanes `n` in [-126, 127].
    fn pow2(&mut self, n: Value) -> Value {
        let bias = self.i(127);
        let e = self.b.ins().iadd(n, bias);
        let e = self.b.ins().ishl_imm_u(e, 23);
        self.float(e)
    }

    /// `log(x)`: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, Cephes degree-9 polynomial
    /// for `log(m)`, then `+ e ln2` in two parts. Subnormal inputs are scaled by `2^23` first.
    fn log(&mut self, x0: Value) -> Value {
        let below_normal = self.cmp_c(FloatCC::LessThan, x0, f32::MIN_POSITIVE);
        let scale = self.f(8_388_608.0);
        let scaled = self.b.ins().fmul(x0, scale);
        let x = self.sel(below_normal, scaled, x0);
        let zero = self.f(0.0);
        let e_adjust = self.sel_c(below_normal, 23.0, zero);

        // frexp: m in [0.5, 1), x = m * 2^e.
        let xb = self.bits(x);
        let exp_field = self.b.ins().ushr_imm_u(xb, 23);
        let bias = self.i(126);
        let e_int = self.b.ins().isub(exp_field, bias);
        let e = self.b.ins().fcvt_from_sint(types::F32X4, e_int);
        let e = self.b.ins().fsub(e, e_adjust);
        let mant_mask = self.i(0x007f_ffff);
        let half_bits = self.i(0x3f00_0000);
        let mb = self.b.ins().band(xb, mant_mask);
        let mb = self.b.ins().bor(mb, half_bits);
        let m = self.float(mb);

        // m < sqrt(1/2): use 2m - 1 and e - 1, so the polynomial argument is in [-0.29, 0.41].
        let small = self.cmp_c(FloatCC::LessThan, m, std::f32::consts::FRAC_1_SQRT_2);
        let one = self.f(1.0);
        let e_dec = self.sel(small, one, zero);
        let e = self.b.ins().fsub(e, e_dec);
        let m_extra = self.sel(small, m, zero);
        let m2 = self.b.ins().fadd(m, m_extra);
        let t = self.b.ins().fsub(m2, one);

        let z = self.b.ins().fmul(t, t);
        let p = self.poly(
            t,
            &[
                7.0376836292e-2,
                -1.1514610310e-1,
                1.1676998740e-1,
                -1.2420140846e-1,
                1.4249322787e-1,
                -1.6668057665e-1,
                2.0000714765e-1,
                -2.4999993993e-1,
                3.3333331174e-1,
            ],
        );
        let tz = self.b.ins().fmul(t, z);
        let y = self.b.ins().fmul(p, tz);
        let c2 = self.f(-2.12194440e-4);
        let y = self.fma(e, c2, y);
        let minus_half = self.f(-0.5);
        let y = self.fma(z, minus_half, y);
        let r = self.b.ins().fadd(t, y);
        let c1 = self.f(0.693359375);
        let r = self.fma(e, c1, r);

        // log(±0) = -inf, log(inf) = inf, log(x < 0) = NaN, log(NaN) = NaN.
        let is_zero = self.cmp_c(FloatCC::Equal, x0, 0.0);
        let r = self.sel_c(is_zero, f32::NEG_INFINITY, r);
        let is_inf = self.cmp_c(FloatCC::Equal, x0, f32::INFINITY);
        let r = self.sel_c(is_inf, f32::INFINITY, r);
        let in_domain = self.cmp_c(FloatCC::GreaterThanOrEqual, x0, 0.0);
        let nan = self.f(f32::NAN);
        self.sel(in_domain, r, nan)
    }

    /// `tanh(x)`: Cephes odd polynomial below 0.625, else `1 - 2 / (exp(2|x|) + 1)` with the
    /// sign of `x` (which saturates to ±1 once `exp` overflows).
    fn tanh(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let z = self.b.ins().fmul(x, x);
        let p = self.poly(
            z,
            &[-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1],
        );
        let pz = self.b.ins().fmul(p, z);
        // Evaluated on |x| and signed afterwards so that tanh(-0) = -0.
        let small = self.fma(pz, ax, ax);
        let sign = self.sign_bits(x);
        let small = self.xor_sign(small, sign);

        let two_ax = self.b.ins().fadd(ax, ax);
        let e = self.exp(two_ax);
        let one = self.f(1.0);
        let two = self.f(2.0);
        let e1 = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, e1);
        let large = self.b.ins().fsub(one, q);
        let large = self.xor_sign(large, sign);

        let is_small = self.cmp_c(FloatCC::LessThan, ax, 0.625);
        self.sel(is_small, small, large)
    }

    /// `sigmoid(x) = 1 / (1 + e)` for `x >= 0` and `e / (1 + e)` for `x < 0`, `e = exp(-|x|)`,
    /// so tiny results for very negative `x` keep their relative accuracy (down to subnormals).
    fn sigmoid(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let neg_ax = self.b.ins().fneg(ax);
        let e = self.exp(neg_ax);
        let one = self.f(1.0);
        let d = self.b.ins().fadd(one, e);
        let s = self.b.ins().fdiv(one, d);
        let es = self.b.ins().fmul(e, s);
        let negative = self.cmp_c(FloatCC::LessThan, x, 0.0);
        self.sel(negative, es, s)
    }

    /// `erf(x)`: odd polynomial `x + x p(x^2)` for `|x| <= 0.927734375`, else
    /// `sign(x) (1 - exp(q(|x|)))` (both minimax fits of the kind N. Juffa published for
    /// `erff`, about 1 ulp each). The second formula, with its exponential, is evaluated only
    /// when one of the four lanes needs it (a branch per vector; the results are the same
    /// either way): GELU of small activations, as in a freshly initialised network, skips it.
    fn erf(&mut self, x: Value) -> Value {
        let t = self.b.ins().fabs(x);
        let s = self.b.ins().fmul(x, x);

        let p = self.poly(s, &ERF_SMALL);
        let small = self.fma(p, x, x);
        // the large-|x| formula (with its exp) only when some lane needs it
        let is_large = self.cmp_c(FloatCC::GreaterThan, t, ERF_SPLIT);
        let any = self.b.ins().vany_true(is_large);
        let large_block = self.b.create_block();
        let join = self.b.create_block();
        let out = self.b.append_block_param(join, types::F32X4);
        self.b.ins().brif(any, large_block, &[], join, &[small.into()]);
        self.b.switch_to_block(large_block);
        self.b.seal_block(large_block);

        let r = self.poly(t, &ERF_LARGE_R);
        let u = self.poly(t, &ERF_LARGE_U);
        let mut r = self.fma(r, s, u);
        for c in ERF_LARGE_TAIL {
            let c = self.f(c);
            r = self.fma(r, t, c);
        }
        let neg_t = self.b.ins().fneg(t);
        let r = self.fma(r, t, neg_t);
        // r <= 0 on the lanes this branch is taken for; below -87, 1 - e rounds to 1 anyway
        let e = self.exp_nonpositive(r);
        let one = self.f(1.0);
        let large = self.b.ins().fsub(one, e);
        let sign = self.sign_bits(x);
        let large = self.xor_sign(large, sign);
        let mixed = self.sel(is_large, large, small);
        self.b.ins().jump(join, &[mixed.into()]);
        self.b.switch_to_block(join);
        self.b.seal_block(join);
        out
    }

    /// `sin(x)` or `cos(x)`: `|x| = q pi/2 + r` (three-part Cody–Waite with FMA), Cephes
    /// polynomials for `sin r` and `cos r` on `[-pi/4, pi/4]`, quadrant from the low bits of `q`.
    /// Accurate while `q` is small (see docs/kernels.md); `q` must stay below `2^22`.
    fn sin_cos(&mut self, x: Value, cosine: bool) -> Value {
        let ax = self.b.ins().fabs(x);
        let two_over_pi = self.f(std::f32::consts::FRAC_2_PI);
        let magic = self.f(ROUND_MAGIC);
        let k = self.fma(ax, two_over_pi, magic);
        let q = self.b.ins().fsub(k, magic);
        let c1 = self.f(-1.57079637050628662109375);
        let c2 = self.f(4.371138828673792886547744274139404296875e-8);
        let c3 = self.f(1.7151245100058818728e-15);
        let r = self.fma(q, c1, ax);
        let r = self.fma(q, c2, r);
        let r = self.fma(q, c3, r);

        let z = self.b.ins().fmul(r, r);
        let ps = self.poly(z, &[-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1]);
        let psz = self.b.ins().fmul(ps, z);
        let sin_r = self.fma(psz, r, r);
        let pc = self.poly(z, &[2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2]);
        let minus_half = self.f(-0.5);
        let pc = self.fma(pc, z, minus_half);
        let one = self.f(1.0);
        let cos_r = self.fma(pc, z, one);

        // q's integer value sits in the low mantissa bits of k.
        let qi = self.bits(k);
        let odd = self.b.ins().ishl_imm_u(qi, 31);
        let odd = self.b.ins().sshr_imm_u(odd, 31);
        let (odd_val, even_val) = if cosine { (sin_r, cos_r) } else { (cos_r, sin_r) };
        let r = self.sel(odd, odd_val, even_val);
        // sin(r + q pi/2) is negated for q mod 4 in {2, 3}; cos for q mod 4 in {1, 2}; sin is odd.
        let quadrant = if cosine {
            let one_i = self.i(1);
            self.b.ins().iadd(qi, one_i)
        } else {
            qi
        };
        let two_i = self.i(2);
        let flip = self.b.ins().band(quadrant, two_i);
        let flip = self.b.ins().ishl_imm_u(flip, 30);
        let sign = if cosine {
            flip
        } else {
            let xs = self.sign_bits(x);
            self.b.ins().bxor(flip, xs)
        };
        self.xor_sign(r, sign)
    }

    fn pow(&mut self, x: Value, y: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let l = self.log(ax);
        let yl = self.b.ins().fmul(y, l);
        let r = self.exp(yl);

        // y is an integer iff floor(y) == y (true for ±inf too); odd iff y/2 is not an integer.
        let fy = self.b.ins().floor(y);
        let is_int = self.cmp(FloatCC::Equal, fy, y);
        let half = self.f(0.5);
        let hy = self.b.ins().fmul(y, half);
        let fhy = self.b.ins().floor(hy);
        let half_not_int = self.cmp(FloatCC::NotEqual, fhy, hy);
        let is_odd = self.b.ins().band(is_int, half_not_int);
        let x_sign = self.sign_bits(x);
        let sign = self.b.ins().band(is_odd, x_sign);
        let r = self.xor_sign(r, sign);

        // A negative finite base with a non-integer exponent has no real power.
        let neg = self.cmp_c(FloatCC::LessThan, x, 0.0);
        let finite = self.cmp_c(FloatCC::GreaterThan, x, f32::NEG_INFINITY);
        let neg_finite = self.b.ins().band(neg, finite);
        let all = self.i(-1);
        let not_int = self.b.ins().bxor(is_int, all);
        let no_real = self.b.ins().band(neg_finite, not_int);
        let r = self.sel_c(no_real, f32::NAN, r);

        // pow(x, ±0) = 1, pow(1, y) = 1, pow(-1, ±inf) = 1 (|x| = 1 with y = ±inf: log gives 0
        // and inf * 0 would be NaN).
        let y_zero = self.cmp_c(FloatCC::Equal, y, 0.0);
        let x_one = self.cmp_c(FloatCC::Equal, x, 1.0);
        let ax_one = self.cmp_c(FloatCC::Equal, ax, 1.0);
        let ay = self.b.ins().fabs(y);
        let y_inf = self.cmp_c(FloatCC::Equal, ay, f32::INFINITY);
        let unit_inf = self.b.ins().band(ax_one, y_inf);
        let one_cases = self.b.ins().bor(y_zero, x_one);
        let one_cases = self.b.ins().bor(one_cases, unit_inf);
        self.sel_c(one_cases, 1.0, r)
    }
}
