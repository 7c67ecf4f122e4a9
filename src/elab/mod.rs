//! Elaboration: names, module instances, compile-time evaluation and shapes → graph IR.
//!
//! Elaboration is an interpreter over compile-time [`value::Value`]s. Module declarations are
//! instantiated with their arguments (creating parameters), then a method such as `forward` is
//! evaluated with tensor arguments; every tensor operation appends typed nodes to the graph.
//! Shapes in the graph are concrete: symbolic dimensions (`B`, `T`) are bound at each call and
//! must agree. Errors are reported as diagnostics and evaluation continues with a poison value,
//! so independent mistakes are all reported.

mod builtins;
mod check;
mod eval;
pub mod objective;
mod program;
mod summary;
mod tensor_ops;
pub mod value;

pub use check::check_program;
pub use check::train_model_call;
pub use eval::{ElabOptions, Elaborated, InstanceInfo, elaborate_model, elaborate_model_at};
pub use objective::{ConstEvaluator, closest_name};
pub use program::{Program, STDLIB};
pub use summary::{SummaryRow, summarize};
