//! Cranelift code generation for scheduled kernels. The only module that knows Cranelift.
//!
//! All kernels live in one process-wide JIT module. Compiled functions are cached by their
//! [`LoopKernel`] description (which names buffers by parameter position only), so
//! structurally identical kernels — the same ops, shapes and strides, e.g. in every block of a
//! stack — are compiled once per process. Generated code lives as long as the process.

pub mod adam;
mod codegen;
pub mod gelu;
pub mod gemm;
pub mod math;
mod pattern;
mod scalar_calls;
pub mod softmax;
pub mod stream;
pub mod vmath;

pub use codegen::{CodegenError, ROW_BLOCK, gelu_rows, native_softmax_rows, row_blocked};
pub use scalar_calls::{div_i32, rem_f32, rem_i32};

use crate::sched::{LoopKernel, Split};
use cranelift_codegen::Context;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{AbiParam, Signature, types};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc, default_libcall_names};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A compiled loop kernel: `f(buffer_pointers, start, end)` runs rows (or, for flat kernels,
/// elements) `start..end`.
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, i64, i64);

/// Time spent in the two JIT stages of one [`compile`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JitTimings {
    /// Building CLIF and running Cranelift (verify, optimise, emit).
    pub codegen: Duration,
    /// Linking and making the code executable.
    pub finalize: Duration,
    /// How many of the requested kernels were compiled now (the rest came from the cache).
    pub compiled: usize,
}

struct JitState {
    module: JITModule,
    /// The module's target, shared with the compiling threads.
    isa: OwnedTargetIsa,
    /// The same target without Cranelift's optimiser (see [`plain_codegen`]).
    plain: OwnedTargetIsa,
    cache: HashMap<LoopKernel, KernelFn>,
    compiled_total: usize,
}

// SAFETY: the module is only touched while holding the mutex, and the code it owns is never
// freed, so moving it between threads cannot invalidate anything.
unsafe impl Send for JitState {}

static JIT: Mutex<Option<JitState>> = Mutex::new(None);

fn build_isa(opt_level: &str) -> Result<OwnedTargetIsa, CodegenError> {
    let mut flag_builder = settings::builder();
    let verify = cfg!(debug_assertions);
    let set = |fb: &mut settings::Builder, k: &str, v: &str| {
        fb.set(k, v).map_err(|e| CodegenError(format!("cranelift setting {k}={v}: {e}")))
    };
    set(&mut flag_builder, "use_colocated_libcalls", "false")?;
    set(&mut flag_builder, "is_pic", "false")?;
    set(&mut flag_builder, "opt_level", opt_level)?;
    set(&mut flag_builder, "enable_verifier", if verify { "true" } else { "false" })?;
    let isa_builder = cranelift_native::builder().map_err(|e| CodegenError(format!("host ISA: {e}")))?;
    isa_builder.finish(settings::Flags::new(flag_builder)).map_err(|e| CodegenError(format!("host ISA: {e}")))
}

fn new_state() -> Result<JitState, CodegenError> {
    // `MODELC_CLIF_OPT` (a developer switch): one Cranelift opt level for every kernel, else
    // the per-kernel choice of `isa_for`
    let forced = std::env::var("MODELC_CLIF_OPT").ok();
    let isa = build_isa(forced.as_deref().unwrap_or("speed"))?;
    let plain = build_isa(forced.as_deref().unwrap_or("none"))?;
    let module = JITModule::new(JITBuilder::with_isa(isa.clone(), default_libcall_names()));
    Ok(JitState { module, isa, plain, cache: HashMap::new(), compiled_total: 0 })
}

/// Whether a kernel is compiled without Cranelift's optimiser: row kernels of several passes
/// and kernels with inline transcendental math. Their many constants are what `speed` hoists out
/// of the loops and then spills for want of registers (16 xmm), reloading them from the stack on
/// every use; unoptimised, each constant is a load from the constant pool where it is used. The
/// code generator already computes each value once and hoists row invariants itself.
fn plain_codegen(k: &LoopKernel) -> bool {
    use crate::ir::BinaryOp;
    use crate::sched::Expr;
    k.passes > 1
        || k.exprs.iter().any(|e| match e {
            Expr::Unary { op, .. } => math::is_inline(*op),
            Expr::Binary { op, .. } => *op == BinaryOp::Pow,
            _ => false,
        })
}

/// Machine code of one kernel, compiled on any thread, to be defined in the module.
struct CompiledKernel {
    code: Vec<u8>,
    alignment: u64,
    relocs: Vec<ModuleReloc>,
}

/// The signature of every kernel function: `(bufs, start, end)`, see [`KernelFn`].
fn kernel_signature(isa: &dyn TargetIsa) -> Signature {
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.extend([AbiParam::new(types::I64); 3]);
    sig
}

/// Builds and compiles one kernel's function (no module access: runs on worker threads).
/// Developer aid: with `MODELC_DUMP_KERNELS=DIR`, each compiled kernel's machine code is
/// written to `DIR/NAME.bin` (read it with `objdump -D -b binary -m i386:x86-64 FILE`).
fn dump(name: &str, code: &[u8]) {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    if let Some(dir) = DIR.get_or_init(|| std::env::var_os("MODELC_DUMP_KERNELS").map(Into::into)) {
        // best effort: a developer aid must not fail a compilation
        let _ =
            std::fs::create_dir_all(dir).and_then(|_| std::fs::write(dir.join(format!("{name}.bin")), code));
    }
}

fn compile_one(
    isa: &dyn TargetIsa,
    k: &LoopKernel,
    id: FuncId,
    name: &str,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<CompiledKernel, CodegenError> {
    ctx.clear();
    ctx.func.signature = kernel_signature(isa);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        codegen::emit_kernel(&mut b, k)?;
        b.finalize(isa.frontend_config());
    }
    ctx.compile(isa, &mut ControlPlane::default())
        .map_err(|e| CodegenError(format!("compile {name}: {:?}", e.inner)))?;
    let compiled = ctx.compiled_code().expect("compiled just above");
    let alignment = compiled.buffer.alignment as u64;
    let code = compiled.code_buffer().to_vec();
    dump(name, &code);
    let relocs =
        compiled.buffer.relocs().iter().map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id)).collect();
    Ok(CompiledKernel { code, alignment, relocs })
}

/// The kernel whose machine code runs `k`: a flat (`Split::Elements`) kernel gets its element
/// range from its caller and its code depends on the length only through whether it reaches
/// [`stream::MIN_ELEMS`] (then its outputs are streamed), so flat kernels that differ only in
/// length (say the optimizer updates of parameters of different sizes) share one compiled
/// function.
fn code_key(k: &LoopKernel) -> Cow<'_, LoopKernel> {
    if k.split == Split::Elements && k.inner != 0 && k.inner != stream::MIN_ELEMS {
        debug_assert!(k.outer.is_empty(), "flat kernels have no outer dimensions");
        // the code depends on the length only through whether it streams its outputs
        let inner = if k.inner >= stream::MIN_ELEMS { stream::MIN_ELEMS } else { 0 };
        Cow::Owned(LoopKernel { inner, ..k.clone() })
    } else {
        Cow::Borrowed(k)
    }
}

/// Fewest new kernels worth a second compiling thread (a thread costs ~50 µs; a kernel ~0.5 ms).
const PARALLEL_MIN_KERNELS: usize = 4;

/// Compiles every kernel not already in the process-wide cache (one finalize for the batch)
/// and returns their functions in order. New kernels are compiled on up to as many threads as
/// the machine has cores (Cranelift compiles one function per context, independently); they
/// are named and defined in the module in order, so the result does not depend on the split.
pub fn compile(kernels: &[&LoopKernel]) -> Result<(Vec<KernelFn>, JitTimings), CodegenError> {
    let mut guard = JIT.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(new_state()?);
    }
    let st = guard.as_mut().expect("initialised above");
    let mut timings = JitTimings::default();
    let t0 = Instant::now();
    let keys: Vec<Cow<'_, LoopKernel>> = kernels.iter().map(|k| code_key(k)).collect();
    let mut pending: Vec<(&LoopKernel, FuncId, String)> = Vec::new();
    let mut seen: HashSet<&LoopKernel> = HashSet::new();
    for k in &keys {
        let k: &LoopKernel = k;
        if st.cache.contains_key(k) || !seen.insert(k) {
            continue;
        }
        let sig = kernel_signature(&*st.isa);
        let name = format!("kernel{}", st.compiled_total + pending.len());
        let id = st
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(|e| CodegenError(format!("declare {name}: {e}")))?;
        pending.push((k, id, name));
    }
    let workers = if pending.len() < PARALLEL_MIN_KERNELS {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(pending.len())
    };
    let (isa, plain) = (&*st.isa, &*st.plain);
    let next = AtomicUsize::new(0);
    let work = || -> Vec<(usize, Result<CompiledKernel, CodegenError>)> {
        let mut ctx = Context::new();
        let mut fctx = FunctionBuilderContext::new();
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((k, id, name)) = pending.get(i) else { break };
            let target = if plain_codegen(k) { plain } else { isa };
            out.push((i, compile_one(target, k, *id, name, &mut ctx, &mut fctx)));
        }
        out
    };
    let mut results: Vec<Option<Result<CompiledKernel, CodegenError>>> =
        (0..pending.len()).map(|_| None).collect();
    let done: Vec<(usize, Result<CompiledKernel, CodegenError>)> = if workers <= 1 {
        work()
    } else {
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..workers).map(|_| s.spawn(work)).collect();
            let mut all = work();
            for h in helpers {
                match h.join() {
                    Ok(part) => all.extend(part),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
            all
        })
    };
    for (i, r) in done {
        results[i] = Some(r);
    }
    for ((_, id, name), r) in pending.iter().zip(results) {
        let c = r.expect("every pending kernel was taken by a worker")?;
        st.module
            .define_function_bytes(*id, c.alignment, &c.code, &c.relocs)
            .map_err(|e| CodegenError(format!("define {name}: {e}")))?;
    }
    timings.codegen = t0.elapsed();
    let t1 = Instant::now();
    if !pending.is_empty() {
        st.module.finalize_definitions().map_err(|e| CodegenError(format!("finalize: {e}")))?;
    }
    timings.finalize = t1.elapsed();
    timings.compiled = pending.len();
    st.compiled_total += pending.len();
    for (k, id, _) in pending {
        let ptr = st.module.get_finalized_function(id);
        // SAFETY: the function was built by `emit_kernel` with exactly this signature.
        let f: KernelFn = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        st.cache.insert(k.clone(), f);
    }
    let fns = keys.iter().map(|k| st.cache[&**k]).collect();
    Ok((fns, timings))
}

/// How many distinct kernels this process has compiled so far.
pub fn compiled_kernel_count() -> usize {
    JIT.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |s| s.compiled_total)
}
