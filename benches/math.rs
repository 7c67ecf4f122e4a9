//! Throughput of the inline math of `modelc::jit::math`: each op JIT-compiled into an f32x4 loop
//! over an L1-resident buffer, against a plain Rust loop calling the f32 libm function (what a
//! call per element would cost at best). Prints a markdown table of medians of CPU time (the
//! machine is shared; CPU time excludes time the process was descheduled).
//!
//! Run: `cargo bench --bench math -- [blocks]` (default 9 blocks of about 20 ms per cell).

use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder, MemFlagsData, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use modelc::ir::UnaryOp;
use modelc::jit::math::emit_unary;

/// Compiles `fn(src, dst, len)` applying `op` to `len` (a multiple of 4) floats.
fn compile(module: &mut JITModule, op: UnaryOp) -> extern "C" fn(*const f32, *mut f32, usize) {
    let target = module.target_config();
    let ptr = target.pointer_type();
    let mut ctx = module.make_context();
    for _ in 0..3 {
        ctx.func.signature.params.push(AbiParam::new(ptr));
    }
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
    let (entry, head, body, exit) = (b.create_block(), b.create_block(), b.create_block(), b.create_block());
    b.append_block_params_for_function_params(entry);
    b.append_block_param(head, ptr);
    b.switch_to_block(entry);
    let [src, dst, len] = b.block_params(entry) else { unreachable!("three parameters") };
    let (src, dst, len) = (*src, *dst, *len);
    let zero = b.ins().iconst(ptr, 0);
    b.ins().jump(head, &[BlockArg::Value(zero)]);
    b.switch_to_block(head);
    let i = b.block_params(head)[0];
    let more = b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::UnsignedLessThan, i, len);
    b.ins().brif(more, body, &[], exit, &[]);
    b.switch_to_block(body);
    let offset = b.ins().ishl_imm_u(i, 2);
    let flags = MemFlagsData::new().with_notrap();
    let addr = b.ins().iadd(src, offset);
    let x = b.ins().load(types::F32X4, flags, addr, 0);
    let y = emit_unary(&mut b, op, x);
    let addr = b.ins().iadd(dst, offset);
    b.ins().store(flags, y, addr, 0);
    let next = b.ins().iadd_imm_s(i, 4);
    b.ins().jump(head, &[BlockArg::Value(next)]);
    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(target);
    let id = module.declare_function(op.name(), Linkage::Local, &ctx.func.signature).expect("declare");
    module.define_function(id, &mut ctx).expect("define");
    module.clear_context(&mut ctx);
    module.finalize_definitions().expect("finalize");
    // SAFETY: the function was built with exactly this signature (SystemV, three pointers).
    unsafe { std::mem::transmute(module.get_finalized_function(id)) }
}

/// A scalar f32 function the JIT's op is compared with.
type ScalarFn = fn(f32) -> f32;

fn erf_libm(x: f32) -> f32 {
    libm::erff(x)
}

/// Process CPU time in seconds, from `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`.
fn process_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, out: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid out-pointer of the C layout clock_gettime expects on Linux x86-64.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime failed");
    t.sec as f64 + t.nsec as f64 * 1e-9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let blocks: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(9);
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").expect("known flag");
    flags.set("is_pic", "false").expect("known flag");
    let isa =
        cranelift_native::builder().expect("host ISA").finish(settings::Flags::new(flags)).expect("ISA");
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));

    const N: usize = 4096;
    let xs: Vec<f32> = (0..N).map(|i| (i as f32 / N as f32) * 16.0 - 8.0).collect();
    let pos: Vec<f32> = xs.iter().map(|x| x.abs() + 1e-3).collect();
    let mut out = vec![0.0f32; N];
    let cases: [(UnaryOp, ScalarFn); 8] = [
        (UnaryOp::Exp, f32::exp),
        (UnaryOp::Log, f32::ln),
        (UnaryOp::Tanh, f32::tanh),
        (UnaryOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Erf, erf_libm),
        (UnaryOp::Sin, f32::sin),
        (UnaryOp::Cos, f32::cos),
        (UnaryOp::Rsqrt, |x| 1.0 / x.sqrt()),
    ];
    println!("blocks per cell: {blocks}; {N} floats in L1; CPU ns per element, median");
    println!("(single thread; the libm column is a Rust loop calling the f32 function)");
    println!();
    println!("| op | JIT f32x4 ns/elem [cpu] | JIT Gelem/s [cpu] | Rust libm ns/elem [cpu] | speed-up |");
    println!("|---|---|---|---|---|");
    for (op, libm_fn) in cases {
        let f = compile(&mut module, op);
        let input = if matches!(op, UnaryOp::Log | UnaryOp::Rsqrt) { &pos } else { &xs };
        let iters = 2000;
        let (mut jit, mut lib) = (Vec::new(), Vec::new());
        for _ in 0..blocks {
            let c0 = process_cpu_seconds();
            for _ in 0..iters {
                f(input.as_ptr(), out.as_mut_ptr(), N);
            }
            jit.push((process_cpu_seconds() - c0) * 1e9 / (iters * N) as f64);
            let c0 = process_cpu_seconds();
            for _ in 0..iters / 10 {
                for (o, &x) in out.iter_mut().zip(input.iter()) {
                    *o = libm_fn(std::hint::black_box(x));
                }
            }
            lib.push((process_cpu_seconds() - c0) * 1e9 / (iters / 10 * N) as f64);
        }
        let (j, l) = (median(&mut jit), median(&mut lib));
        println!("| {} | {j:.3} | {:.2} | {l:.2} | {:.1}× |", op.name(), 1.0 / j, l / j);
    }
    // SAFETY: no function pointer into the module is used after this point.
    unsafe { module.free_memory() };
}
