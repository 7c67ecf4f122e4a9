//! Operations the generated code does by calling a Rust function per element: float remainder
//! and integer floor division / remainder (rare in models; x86 has no vector integer division).
//! Vectors are handled lane by lane.
//!
//! Calls go through `call_indirect` on the function's address, so no symbol has to be
//! registered with the JIT module.

use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Remainder with the sign of the divisor (`Op::Binary(Rem)` on floats).
/// `fmod`, plus `b` when the signs differ; a zero result takes the sign of `b`.
pub extern "C" fn rem_f32(a: f32, b: f32) -> f32 {
    let r = a % b;
    if r == 0.0 {
        0f32.copysign(b)
    } else if (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

/// Integer division rounding toward negative infinity; division by zero gives 0 (the
/// generated code must not trap on user data).
pub extern "C" fn div_i32(a: i32, b: i32) -> i32 {
    if b == 0 {
        return 0;
    }
    let q = a.wrapping_div(b);
    if (a % b != 0) && ((a < 0) != (b < 0)) { q - 1 } else { q }
}

/// Remainder with the sign of the divisor; `a rem 0 == a` (so `a == b * (a div b) + a rem b`).
pub extern "C" fn rem_i32(a: i32, b: i32) -> i32 {
    if b == 0 {
        return a;
    }
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r }
}

pub fn rem_f32_fn() -> usize {
    rem_f32 as extern "C" fn(f32, f32) -> f32 as usize
}
pub fn div_i32_fn() -> usize {
    div_i32 as extern "C" fn(i32, i32) -> i32 as usize
}
pub fn rem_i32_fn() -> usize {
    rem_i32 as extern "C" fn(i32, i32) -> i32 as usize
}

/// Emits `f(args...)` for a scalar function at address `f` taking and returning `lane` values;
/// vectors (`args` of vector type) are computed lane by lane.
pub fn emit_call(b: &mut FunctionBuilder<'_>, f: usize, args: &[Value]) -> Value {
    let ty = b.func.dfg.value_type(args[0]);
    let lane = ty.lane_type();
    let mut sig = Signature::new(b.func.signature.call_conv);
    for _ in args {
        sig.params.push(AbiParam::new(lane));
    }
    sig.returns.push(AbiParam::new(lane));
    let sig = b.import_signature(sig);
    let callee = b.ins().iconst(types::I64, f as i64);
    let call_scalar = |b: &mut FunctionBuilder<'_>, xs: &[Value]| {
        let inst = b.ins().call_indirect(sig, callee, xs);
        b.inst_results(inst)[0]
    };
    if !ty.is_vector() {
        return call_scalar(b, args);
    }
    let mut out: Option<Value> = None;
    for l in 0..ty.lane_count() as u8 {
        let xs: Vec<Value> = args.iter().map(|&a| b.ins().extractlane(a, l)).collect();
        let r = call_scalar(b, &xs);
        out = Some(match out {
            None => b.ins().splat(ty, r),
            Some(v) => b.ins().insertlane(v, r, l),
        });
    }
    out.expect("vectors have lanes")
}

/// The CLIF type of a 4-byte element, scalar or as four lanes.
pub fn clif_type(float: bool, vector: bool) -> Type {
    match (float, vector) {
        (true, false) => types::F32,
        (true, true) => types::F32X4,
        (false, false) => types::I32,
        (false, true) => types::I32X4,
    }
}
