//! The typed graph IR: an arena of nodes in topological order with a closed set of primitive
//! ops ([`Op`]), interned tensor types, and side tables for source spans and module scopes.
//! Everything after elaboration (passes, autodiff, scheduling, the interpreter) works on it.

mod graph;
mod op;
mod print;
mod types;
mod verify;

pub use graph::{Graph, Init, InputInfo, Node, NodeId, OutputInfo, ParamInfo, ScopeId};
pub use op::{
    BinaryOp, Op, OpClass, ReduceOp, TypeError, UnaryOp, flops, fmt_f64, infer_type, random_mix32,
    random_uniform_value,
};
pub use print::print_graph;
pub use types::{DType, ShapeDisplay, TensorType, TypeId, TypeInterner};
pub use verify::verify;
