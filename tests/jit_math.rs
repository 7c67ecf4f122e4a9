//! Accuracy of the inline math in `modelc::jit::math` against f64 libm: each op is JIT-compiled
//! into a loop over a buffer (f32x4 body, scalar tail) and swept over wide ranges, special values
//! and subnormals. Run with `--nocapture` to see the measured errors quoted in docs/kernels.md.

use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder, MemFlagsData, Value, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use modelc::ir::UnaryOp;
use modelc::jit::math::{emit_pow, emit_unary};

/// A JIT-compiled `fn(inputs..., out, len)` applying one elementwise op; frees its code on drop.
struct Kernel {
    module: Option<JITModule>,
    code: *const u8,
    arity: usize,
}

impl Kernel {
    fn compile(arity: usize, emit: impl Fn(&mut FunctionBuilder, &[Value]) -> Value) -> Kernel {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").expect("known flag");
        flags.set("is_pic", "false").expect("known flag");
        flags.set("enable_verifier", "true").expect("known flag");
        let isa =
            cranelift_native::builder().expect("host ISA").finish(settings::Flags::new(flags)).expect("ISA");
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let target = module.target_config();
        let ptr = target.pointer_type();
        let mut ctx = module.make_context();
        for _ in 0..=arity {
            ctx.func.signature.params.push(AbiParam::new(ptr));
        }
        ctx.func.signature.params.push(AbiParam::new(ptr));

        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        let vec_head = b.create_block();
        let vec_body = b.create_block();
        let tail_head = b.create_block();
        let tail_body = b.create_block();
        let exit = b.create_block();
        b.append_block_params_for_function_params(entry);
        for block in [vec_head, tail_head] {
            b.append_block_param(block, ptr);
        }
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let len = params[arity + 1];
        let zero = b.ins().iconst(ptr, 0);
        b.ins().jump(vec_head, &[BlockArg::Value(zero)]);

        let flags = MemFlagsData::new().with_notrap();
        let body = |b: &mut FunctionBuilder, ty, head, next_i: i64, next: _, done| {
            b.switch_to_block(head);
            let i = b.block_params(head)[0];
            let end = b.ins().iadd_imm_s(i, next_i);
            let fits =
                b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::UnsignedLessThanOrEqual, end, len);
            b.ins().brif(fits, next, &[], done, &[BlockArg::Value(i)]);
            b.switch_to_block(next);
            let offset = b.ins().ishl_imm_u(i, 2);
            let inputs: Vec<Value> = (0..arity)
                .map(|k| {
                    let addr = b.ins().iadd(params[k], offset);
                    b.ins().load(ty, flags, addr, 0)
                })
                .collect();
            let out = emit(b, &inputs);
            let addr = b.ins().iadd(params[arity], offset);
            b.ins().store(flags, out, addr, 0);
            b.ins().jump(head, &[BlockArg::Value(end)]);
        };
        body(&mut b, types::F32X4, vec_head, 4, vec_body, tail_head);
        body(&mut b, types::F32, tail_head, 1, tail_body, exit);
        // `tail_head` passes its index to `exit`, which ignores it.
        b.append_block_param(exit, ptr);
        b.switch_to_block(exit);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(target);

        let id = module.declare_function("kernel", Linkage::Local, &ctx.func.signature).expect("declare");
        module.define_function(id, &mut ctx).expect("define");
        module.clear_context(&mut ctx);
        module.finalize_definitions().expect("finalize");
        let code = module.get_finalized_function(id);
        Kernel { module: Some(module), code, arity }
    }

    fn unary(op: UnaryOp) -> Kernel {
        Kernel::compile(1, |b, v| emit_unary(b, op, v[0]))
    }

    fn run(&self, inputs: &[&[f32]]) -> Vec<f32> {
        assert_eq!(inputs.len(), self.arity);
        let n = inputs[0].len();
        assert!(inputs.iter().all(|x| x.len() == n));
        let mut out = vec![0.0f32; n];
        // SAFETY: the code was generated for exactly this signature (arity input pointers, one
        // output pointer, a length) and touches `len` elements of each buffer.
        unsafe {
            match self.arity {
                1 => {
                    let f: extern "C" fn(*const f32, *mut f32, usize) = std::mem::transmute(self.code);
                    f(inputs[0].as_ptr(), out.as_mut_ptr(), n);
                }
                2 => {
                    let f: extern "C" fn(*const f32, *const f32, *mut f32, usize) =
                        std::mem::transmute(self.code);
                    f(inputs[0].as_ptr(), inputs[1].as_ptr(), out.as_mut_ptr(), n);
                }
                _ => unreachable!("kernels here have one or two inputs"),
            }
        }
        out
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: no pointer into the module's code outlives the kernel.
            unsafe { module.free_memory() };
        }
    }
}

/// Worst errors of a sweep: relative where the reference is a normal f32, ulps everywhere.
#[derive(Default, Debug)]
struct Errors {
    max_rel: f64,
    at_rel: f32,
    max_abs: f64,
    at_abs: f32,
    max_ulp: f64,
    at_ulp: f32,
    count: usize,
}

fn ulp_of(r: f64) -> f64 {
    let a = (r.abs() as f32).max(f32::MIN_POSITIVE);
    // Spacing of f32 values around `a` (2^-149 for subnormals, handled by the max above as 2^-149
    // = MIN_POSITIVE * 2^-23).
    let e = a.to_bits() >> 23;
    2f64.powi(e as i32 - 127 - 23)
}

/// Compares `got` with `reference` for every input; non-finite or zero references must be met
/// exactly (NaN by NaN, infinities and signed zeros bit for bit in value and sign).
fn measure(name: &str, xs: &[f32], got: &[f32], reference: impl Fn(f64) -> f64, what: &str) -> Errors {
    let mut e = Errors::default();
    for (&x, &g) in xs.iter().zip(got) {
        let r = reference(x as f64);
        let r32 = r as f32;
        if r.is_nan() {
            assert!(g.is_nan(), "{name}({x:e}) = {g:e}, expected NaN");
            continue;
        }
        if r32.is_infinite() || r32 == 0.0 && r.abs() < f32::from_bits(1) as f64 / 2.0 {
            // Exact: overflow, underflow to zero (allow the last subnormal either way).
            let ok = g == r32 || (r32 == 0.0 && g.abs() <= f32::from_bits(1));
            assert!(ok, "{name}({x:e}) = {g:e}, expected {r32:e}");
            continue;
        }
        if r == 0.0 {
            assert_eq!(g, 0.0, "{name}({x:e}) = {g:e}, expected 0");
            assert_eq!(g.is_sign_negative(), r.is_sign_negative(), "{name}({x:e}) sign of zero");
            continue;
        }
        e.count += 1;
        let diff = (g as f64 - r).abs();
        if diff.is_nan() || diff > e.max_abs {
            e.max_abs = diff;
            e.at_abs = x;
        }
        let ulp = diff / ulp_of(r);
        if ulp.is_nan() || ulp > e.max_ulp {
            e.max_ulp = ulp;
            e.at_ulp = x;
        }
        if r.abs() >= f32::MIN_POSITIVE as f64 {
            let rel = diff / r.abs();
            if rel.is_nan() || rel > e.max_rel {
                e.max_rel = rel;
                e.at_rel = x;
            }
        }
    }
    eprintln!(
        "{name:>8} {what:<34} n={:<8} max rel {:.2e} (x={:e})  max abs {:.2e} (x={:e})  max ulp {:.2} (x={:e})",
        e.count, e.max_rel, e.at_rel, e.max_abs, e.at_abs, e.max_ulp, e.at_ulp
    );
    e
}

fn linspace(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| lo + (hi - lo) * (i as f64 / (n - 1) as f64) as f32).collect()
}

fn logspace(lo: f64, hi: f64, n: usize) -> Vec<f32> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n).map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp() as f32).collect()
}

/// Values every sweep includes: zeros, infinities, NaN, subnormals, tiny and huge magnitudes.
fn specials() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(1),
        -f32::from_bits(1),
        1e-40,
        -1e-40,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-30,
        -1e-30,
        1e-7,
        -1e-7,
        f32::MAX,
        f32::MIN,
        1e30,
        -1e30,
    ];
    // Also every small power of two and its neighbours.
    for e in -20..20 {
        let p = 2f32.powi(e);
        for x in [p, f32::from_bits(p.to_bits() + 1), f32::from_bits(p.to_bits() - 1)] {
            v.push(x);
            v.push(-x);
        }
    }
    v
}

fn with_specials(mut xs: Vec<f32>) -> Vec<f32> {
    xs.extend(specials());
    xs
}

/// An f64 reference implementation of an op.
type Reference = fn(f64) -> f64;

fn sigmoid64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[test]
fn exp_matches_libm_over_the_whole_range() {
    let k = Kernel::unary(UnaryOp::Exp);
    let mut xs = with_specials(linspace(-100.0, 100.0, 1_000_001));
    xs.extend(linspace(-1.0, 1.0, 100_001));
    // Overflow and underflow edges: last finite result, first infinite, gradual underflow.
    xs.extend([
        88.722_83,
        88.722_84,
        88.722_85,
        89.0,
        -87.336_55,
        -87.336_54,
        -103.278_93,
        -103.972_08,
        -103.972_09,
        -104.0,
        -150.0,
    ]);
    xs.extend(linspace(-104.0, -87.0, 100_001));
    let got = k.run(&[&xs]);
    let normal: Vec<(f32, f32)> =
        xs.iter().zip(&got).filter(|(x, _)| **x >= -87.3).map(|(x, g)| (*x, *g)).collect();
    let (nx, ng): (Vec<f32>, Vec<f32>) = normal.into_iter().unzip();
    let e = measure("exp", &nx, &ng, f64::exp, "normal results, x in [-87.3, 100]");
    assert!(e.max_rel <= 1.5e-7, "{e:?}");
    let all = measure("exp", &xs, &got, f64::exp, "all incl. subnormal results");
    assert!(all.max_ulp <= 1.5, "{all:?}");
    assert_eq!(k.run(&[&[f32::NEG_INFINITY, f32::INFINITY, 0.0, -0.0]]), [0.0, f32::INFINITY, 1.0, 1.0]);
}

#[test]
fn log_matches_libm_over_the_whole_range() {
    let k = Kernel::unary(UnaryOp::Log);
    let mut xs = with_specials(logspace(1e-38, 1e38, 1_000_001));
    xs.extend(logspace(1e-45, 1e-37, 10_001));
    xs.extend(linspace(0.5, 2.0, 200_001));
    xs.extend(linspace(0.999, 1.001, 100_001));
    xs.extend([-1.0, -1e-30, f32::MAX]);
    let got = k.run(&[&xs]);
    let e = measure("log", &xs, &got, f64::ln, "(0, inf) incl. subnormal inputs");
    assert!(e.max_rel <= 1.5e-7, "{e:?}");
    assert!(e.max_ulp <= 1.0, "{e:?}");
    let special = k.run(&[&[0.0, -0.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, 1.0]]);
    assert_eq!(special[0], f32::NEG_INFINITY);
    assert_eq!(special[1], f32::NEG_INFINITY);
    assert!(special[2].is_nan());
    assert_eq!(special[3], f32::INFINITY);
    assert!(special[4].is_nan());
    assert_eq!(special[5], 0.0);
}

#[test]
fn tanh_sigmoid_erf_match_libm() {
    let mut xs = with_specials(linspace(-100.0, 100.0, 1_000_001));
    xs.extend(linspace(-5.0, 5.0, 200_001));
    let cases: [(UnaryOp, Reference, f64); 3] = [
        (UnaryOp::Tanh, f64::tanh, 2e-7),
        (UnaryOp::Sigmoid, sigmoid64, 2e-7),
        (UnaryOp::Erf, libm::erf, 1.5e-7),
    ];
    for (op, reference, bound) in cases {
        let got = Kernel::unary(op).run(&[&xs]);
        let e = measure(op.name(), &xs, &got, reference, "[-100, 100] + specials");
        assert!(e.max_rel <= bound, "{op:?} {e:?}");
    }
    let k = Kernel::unary(UnaryOp::Tanh);
    let got = k.run(&[&[f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0]]);
    assert_eq!(got, [1.0, -1.0, 0.0, -0.0]);
    assert!(got[3].is_sign_negative());
    let k = Kernel::unary(UnaryOp::Erf);
    let got = k.run(&[&[f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0]]);
    assert_eq!(got, [1.0, -1.0, 0.0, -0.0]);
    assert!(got[3].is_sign_negative());
    let k = Kernel::unary(UnaryOp::Sigmoid);
    let got = k.run(&[&[f32::INFINITY, f32::NEG_INFINITY, 100.0, -80.0, -0.0, -100.0]]);
    assert_eq!(&got[..3], [1.0, 0.0, 1.0]);
    // Tiny results keep their relative accuracy (sigmoid(-80) = 1.8e-35), down to subnormals
    // (sigmoid(-100) = 3.7e-44, within one subnormal step).
    assert!((got[3] as f64 - sigmoid64(-80.0)).abs() <= 3e-7 * sigmoid64(-80.0));
    assert_eq!(got[4], 0.5);
    assert!((got[5] as f64 - sigmoid64(-100.0)).abs() <= f32::from_bits(1) as f64);
}

#[test]
fn sin_cos_match_libm() {
    for op in [UnaryOp::Sin, UnaryOp::Cos] {
        let k = Kernel::unary(op);
        let reference = if op == UnaryOp::Sin { f64::sin } else { f64::cos };
        let mut xs = with_specials(linspace(-100.0, 100.0, 1_000_001));
        xs.retain(|x| x.abs() <= 1e4 || !x.is_finite());
        let got = k.run(&[&xs]);
        let e = measure(op.name(), &xs, &got, reference, "[-100, 100] + specials");
        assert!(e.max_abs <= 1e-7, "{op:?} {e:?}");
        let wide = linspace(-10_000.0, 10_000.0, 1_000_001);
        let got = k.run(&[&wide]);
        let e = measure(op.name(), &wide, &got, reference, "[-1e4, 1e4]");
        assert!(e.max_abs <= 1e-7, "{op:?} {e:?}");
        let wider = linspace(-1e6, 1e6, 1_000_001);
        let got = k.run(&[&wider]);
        measure(op.name(), &wider, &got, reference, "[-1e6, 1e6] (documented only)");
    }
    let sin = Kernel::unary(UnaryOp::Sin).run(&[&[0.0, -0.0, f32::INFINITY, f32::NAN]]);
    assert_eq!(sin[0].to_bits(), 0.0f32.to_bits());
    assert_eq!(sin[1].to_bits(), (-0.0f32).to_bits());
    assert!(sin[2].is_nan() && sin[3].is_nan());
}

#[test]
fn cheap_ops_are_exact_or_within_one_ulp() {
    let xs = with_specials(logspace(1e-38, 1e38, 100_001));
    let cases: [(UnaryOp, Reference, f64); 4] = [
        (UnaryOp::Sqrt, f64::sqrt, 0.5),
        // Two correctly rounded steps (sqrt, divide): up to 1.5 ulp.
        (UnaryOp::Rsqrt, |x| 1.0 / x.sqrt(), 1.5),
        (UnaryOp::Recip, |x| 1.0 / x, 0.5),
        (UnaryOp::Floor, f64::floor, 0.0),
    ];
    for (op, reference, ulps) in cases {
        let got = Kernel::unary(op).run(&[&xs]);
        let e = measure(op.name(), &xs, &got, reference, "log-spaced [1e-38, 1e38]");
        assert!(e.max_ulp <= ulps, "{op:?} {e:?}");
    }
    let xs = [-2.5f32, -0.0, 0.0, 3.0, f32::NEG_INFINITY];
    assert_eq!(Kernel::unary(UnaryOp::Neg).run(&[&xs]), [2.5, 0.0, -0.0, -3.0, f32::INFINITY]);
    assert_eq!(Kernel::unary(UnaryOp::Abs).run(&[&xs]), [2.5, 0.0, 0.0, 3.0, f32::INFINITY]);
    assert_eq!(Kernel::unary(UnaryOp::Floor).run(&[&[-2.5, 2.5, -0.5, 7.0]]), [-3.0, 2.0, -1.0, 7.0]);
}

#[test]
fn scalar_tail_matches_vector_body_bit_for_bit() {
    // 7 elements: lanes 0..4 go through the f32x4 body, 4..7 through the scalar tail; the tail
    // repeats inputs 0..3.
    let xs = [0.3f32, -1.7, 42.0, 0.3, -1.7, 42.0, 0.0];
    for op in [
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Erf,
        UnaryOp::Sin,
        UnaryOp::Cos,
    ] {
        let got = Kernel::unary(op).run(&[&xs]);
        for i in 0..3 {
            assert_eq!(got[i].to_bits(), got[i + 3].to_bits(), "{op:?} lane {i}");
        }
    }
}

#[test]
fn pow_matches_libm_and_c99_special_cases() {
    let k = Kernel::compile(2, |b, v| emit_pow(b, v[0], v[1]));
    let bases = logspace(1e-3, 1e3, 1001);
    let exps = linspace(-10.0, 10.0, 401);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for &x in &bases {
        for &y in &exps {
            xs.push(x);
            ys.push(y);
        }
    }
    let got = k.run(&[&xs, &ys]);
    // exp magnifies log's relative error by |y ln x|, so the bound grows with it.
    let (mut max_rel, mut max_scaled) = (0.0f64, 0.0f64);
    for ((&x, &y), &g) in xs.iter().zip(&ys).zip(&got) {
        let r = (x as f64).powf(y as f64);
        if r.abs() >= f32::MIN_POSITIVE as f64 && r.abs() <= f32::MAX as f64 {
            let rel = (g as f64 - r).abs() / r.abs();
            let magnification = 1.0 + (y as f64 * (x as f64).ln()).abs();
            max_rel = max_rel.max(rel);
            max_scaled = max_scaled.max(rel / magnification);
            assert!(rel <= 2e-7 * magnification, "pow({x:e}, {y:e}) = {g:e}, expected {r:e}");
        }
    }
    eprintln!(
        "     pow x in [1e-3, 1e3], y in [-10, 10]: max rel {max_rel:.2e}, \
         max rel / (1 + |y ln x|) {max_scaled:.2e}"
    );

    let inf = f32::INFINITY;
    let nan = f32::NAN;
    // (x, y, powf(x, y)) from C99 Annex F.
    let table: [(f32, f32, f32); 24] = [
        (nan, 0.0, 1.0),
        (nan, -0.0, 1.0),
        (1.0, nan, 1.0),
        (-1.0, inf, 1.0),
        (-1.0, -inf, 1.0),
        (0.0, 3.0, 0.0),
        (-0.0, 3.0, -0.0),
        (-0.0, 2.0, 0.0),
        (0.0, -3.0, inf),
        (-0.0, -3.0, -inf),
        (-0.0, -2.0, inf),
        (0.5, -inf, inf),
        (2.0, -inf, 0.0),
        (0.5, inf, 0.0),
        (2.0, inf, inf),
        (-inf, 3.0, -inf),
        (-inf, 2.0, inf),
        (-inf, -3.0, -0.0),
        (inf, -1.0, 0.0),
        (inf, 0.5, inf),
        (-2.0, 3.0, -8.0),
        (-2.0, 2.0, 4.0),
        (-2.0, 0.5, nan),
        (2.0, nan, nan),
    ];
    let xs: Vec<f32> = table.iter().map(|t| t.0).collect();
    let ys: Vec<f32> = table.iter().map(|t| t.1).collect();
    let got = k.run(&[&xs, &ys]);
    for ((&(x, y, want), &g), check) in table.iter().zip(&got).zip(0..) {
        let ok = if want.is_nan() {
            g.is_nan()
        } else {
            g.to_bits() == want.to_bits() || (g - want).abs() <= 4e-7 * want.abs()
        };
        assert!(ok, "case {check}: pow({x}, {y}) = {g}, expected {want}");
    }
}

/// The native array functions of `jit::vmath` (every variant this CPU runs, and the scalar
/// reference) give the inline code's bits for every input: a sweep over the whole f32 bit
/// space (every 1021st pattern, both signs), the specials, and flush-to-zero mode (the mode
/// kernels run in). NaN inputs give NaN.
#[test]
fn array_math_matches_inline_code_bit_for_bit() {
    use modelc::jit::vmath;
    let mut xs: Vec<f32> = (0..u32::MAX / 1021).map(|i| f32::from_bits(i * 1021)).collect();
    xs.extend(specials());
    xs.extend(linspace(-120.0, 100.0, 20_001));
    let variants = vmath::supported();
    #[cfg(target_arch = "x86_64")]
    assert!(
        !variants.is_empty() || !std::arch::is_x86_feature_detected!("avx2"),
        "an AVX2 CPU runs the AVX2 variant"
    );
    for ftz in [false, true] {
        let _mode = ftz.then(modelc::runtime::FlushSubnormals::new);
        for (op, lane) in [(UnaryOp::Exp, vmath::exp_lane as fn(f32) -> f32), (UnaryOp::Erf, vmath::erf_lane)]
        {
            let inline = Kernel::unary(op).run(&[&xs]);
            let same = |what: &str, got: &[f32]| {
                for ((&x, &g), &w) in xs.iter().zip(got).zip(&inline) {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "{op:?} {what} (ftz {ftz}) of {x:e} ({:#x}): {g:e}, inline code {w:e}",
                        x.to_bits()
                    );
                }
            };
            same("reference", &xs.iter().map(|&x| lane(x)).collect::<Vec<_>>());
            for &v in &variants {
                // odd lengths: the groups, then the rest one by one
                for len in [xs.len(), 7, 77] {
                    let mut got = xs[..len].to_vec();
                    vmath::apply(v, op, &mut got);
                    same(&format!("{v:?} (n = {len})"), &got);
                }
            }
        }
    }
}
