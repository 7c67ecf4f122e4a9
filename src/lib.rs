//! modelc: a declarative model-description compiler.
//!
//! A `.model` file describes modules, models, data pipelines, training runs and sweeps.
//! The pipeline is `syntax` (pest → AST) → `elab` (names, modules, shapes → graph IR) →
//! `passes` → `sched` (fusion) → `jit` (Cranelift) → `runtime`. `interp` is the reference
//! interpreter that checks the JIT. Diagnostics are data ([`diag::Diagnostic`]).

pub mod autodiff;
pub mod data;
pub mod diag;
pub mod elab;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod passes;
pub mod runtime;
pub mod sched;
pub mod source;
pub mod syntax;
pub mod tensor;
pub mod train;
