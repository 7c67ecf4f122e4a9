//! Cranelift code generation for scheduled kernels. The only module that knows Cranelift.
//!
//! All kernels live in one process-wide JIT module. Compiled functions are cached by their
//! [`LoopKernel`] description (which names buffers by parameter position only), so
//! structurally identical kernels — the same ops, shapes and strides, e.g. in every block of a
//! stack — are compiled once per process. Generated code lives as long as the process.

mod codegen;
pub mod gemm;
pub mod math;
mod scalar_calls;

pub use codegen::CodegenError;
pub use scalar_calls::{div_i32, rem_f32, rem_i32};

use crate::sched::LoopKernel;
use cranelift_codegen::ir::{AbiParam, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use std::collections::HashMap;
use std::sync::Mutex;
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
    cache: HashMap<LoopKernel, KernelFn>,
    compiled_total: usize,
    verify: bool,
}

// SAFETY: the module is only touched while holding the mutex, and the code it owns is never
// freed, so moving it between threads cannot invalidate anything.
unsafe impl Send for JitState {}

static JIT: Mutex<Option<JitState>> = Mutex::new(None);

fn new_state() -> Result<JitState, CodegenError> {
    let mut flag_builder = settings::builder();
    let verify = cfg!(debug_assertions);
    let set = |fb: &mut settings::Builder, k: &str, v: &str| {
        fb.set(k, v).map_err(|e| CodegenError(format!("cranelift setting {k}={v}: {e}")))
    };
    set(&mut flag_builder, "use_colocated_libcalls", "false")?;
    set(&mut flag_builder, "is_pic", "false")?;
    set(&mut flag_builder, "opt_level", "speed")?;
    set(&mut flag_builder, "enable_verifier", if verify { "true" } else { "false" })?;
    let isa_builder = cranelift_native::builder().map_err(|e| CodegenError(format!("host ISA: {e}")))?;
    let isa = isa_builder
        .finish(settings::Flags::new(flag_builder))
        .map_err(|e| CodegenError(format!("host ISA: {e}")))?;
    let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    Ok(JitState { module, cache: HashMap::new(), compiled_total: 0, verify })
}

/// Compiles every kernel not already in the process-wide cache (one finalize for the batch)
/// and returns their functions in order.
pub fn compile(kernels: &[&LoopKernel]) -> Result<(Vec<KernelFn>, JitTimings), CodegenError> {
    let mut guard = JIT.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(new_state()?);
    }
    let st = guard.as_mut().expect("initialised above");
    let mut timings = JitTimings::default();
    let t0 = Instant::now();
    let mut pending: Vec<(LoopKernel, FuncId)> = Vec::new();
    let mut ctx = st.module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    for &k in kernels {
        if st.cache.contains_key(k) || pending.iter().any(|(p, _)| p == k) {
            continue;
        }
        let mut sig = st.module.make_signature();
        for _ in 0..3 {
            sig.params.push(AbiParam::new(types::I64));
        }
        let name = format!("kernel{}", st.compiled_total + pending.len());
        let id = st
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(|e| CodegenError(format!("declare {name}: {e}")))?;
        ctx.func.signature = sig;
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            codegen::emit_kernel(&mut b, k)?;
            b.finalize(st.module.isa().frontend_config());
        }
        st.module.define_function(id, &mut ctx).map_err(|e| {
            let detail = match &e {
                cranelift_module::ModuleError::Compilation(ce) => format!("{ce:?}"),
                other => other.to_string(),
            };
            CodegenError(format!("compile {name}: {detail}"))
        })?;
        st.module.clear_context(&mut ctx);
        pending.push((k.clone(), id));
    }
    timings.codegen = t0.elapsed();
    let t1 = Instant::now();
    if !pending.is_empty() {
        st.module.finalize_definitions().map_err(|e| CodegenError(format!("finalize: {e}")))?;
    }
    timings.finalize = t1.elapsed();
    timings.compiled = pending.len();
    st.compiled_total += pending.len();
    for (k, id) in pending {
        let ptr = st.module.get_finalized_function(id);
        // SAFETY: the function was built by `emit_kernel` with exactly this signature.
        let f: KernelFn = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
        st.cache.insert(k, f);
    }
    let fns = kernels.iter().map(|k| st.cache[*k]).collect();
    let _ = st.verify;
    Ok((fns, timings))
}

/// How many distinct kernels this process has compiled so far.
pub fn compiled_kernel_count() -> usize {
    JIT.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |s| s.compiled_total)
}
