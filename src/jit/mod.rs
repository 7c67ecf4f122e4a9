//! Cranelift code generation for scheduled kernels. The only module that knows Cranelift.

pub mod gemm;
pub mod math;
