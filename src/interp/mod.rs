//! The reference interpreter of the graph IR: the oracle the JIT is tested against, the
//! `--backend reference` of the CLI, and (in f64) the evaluator behind finite-difference
//! gradient checks. It evaluates one node at a time on ndarray, in the graph's topological
//! order, implementing exactly the semantics written on [`crate::ir::Op`].
//!
//! Floats are computed in a chosen element type `E` ([`Float`]: `f32` like the JIT, or `f64`);
//! ints and bools are exact in both.
//!
//! ```text
//! run::<f32>(g, inputs, params)      host tensors in and out, computed in f32 (or f64)
//! run_f64(g, inputs, params)         f64 values in and out
//! run_all_nodes::<f32>(g, ..)        every node's value, for per-node differential tests
//! ```

mod eval;
mod float;
mod indexing;
mod layout;
mod reduce;
mod value;

pub use eval::{eval_const_elementwise, float_rem, fmax, fmin, int_floor_div, int_floor_rem};
pub use float::{Float, erf_f64};
pub use value::Value;

use crate::ir::{Graph, NodeId, TensorType};
use crate::tensor::Tensor;
use std::fmt;

/// Whether a run argument is a graph input or a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    Input,
    Param,
}

impl fmt::Display for LeafKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeafKind::Input => "input",
            LeafKind::Param => "param",
        })
    }
}

/// Why a graph could not be run.
#[derive(Clone, Debug, PartialEq)]
pub enum InterpError {
    /// The graph fails the verifier (a compiler bug upstream).
    InvalidGraph { graph: String, problems: Vec<String> },
    /// Wrong number of inputs or parameters.
    WrongCount { what: LeafKind, expected: usize, found: usize },
    /// An input or parameter has the wrong dtype or shape.
    Mismatch { what: LeafKind, name: String, expected: TensorType, found: String },
    /// A bool input or parameter (passed as i32) holds something other than 0 and 1.
    NotBool { what: LeafKind, name: String },
    /// An `input`/`param` node refers past the values passed (cannot happen after the counts
    /// are checked; kept as an error rather than a panic).
    LeafOutOfRange { what: LeafKind, index: u32 },
    /// A verified graph reached a case the verifier should exclude: an interpreter bug.
    Invariant { node: NodeId, message: String },
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpError::InvalidGraph { graph, problems } => {
                write!(f, "graph `{graph}` is invalid: {}", problems.join("; "))
            }
            InterpError::WrongCount { what, expected, found } => {
                write!(f, "expected {expected} {what}(s), got {found}")
            }
            InterpError::Mismatch { what, name, expected, found } => {
                write!(f, "{what} `{name}`: expected {expected}, found {found}")
            }
            InterpError::NotBool { what, name } => {
                write!(f, "{what} `{name}` is bool but holds values other than 0 and 1")
            }
            InterpError::LeafOutOfRange { what, index } => write!(f, "no {what} with index {index}"),
            InterpError::Invariant { node, message } => {
                write!(f, "internal error: interpreter invariant broken at {node}: {message}")
            }
        }
    }
}

impl std::error::Error for InterpError {}

/// The results of a run: the graph's outputs by name (in `g.outputs` order) and the new values
/// of updated parameters (in `g.updates` order, by parameter index).
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs<V> {
    pub outputs: Vec<(String, V)>,
    pub updates: Vec<(u32, V)>,
}

impl<V> Outputs<V> {
    /// The output called `name` (the first, if several share it).
    pub fn get(&self, name: &str) -> Option<&V> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The new value of parameter `index`, if the graph updates it.
    pub fn update(&self, index: u32) -> Option<&V> {
        self.updates.iter().find(|(p, _)| *p == index).map(|(_, v)| v)
    }

    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> Outputs<W> {
        Outputs {
            outputs: self.outputs.into_iter().map(|(n, v)| (n, f(v))).collect(),
            updates: self.updates.into_iter().map(|(p, v)| (p, f(v))).collect(),
        }
    }
}

/// Runs `g` on host tensors, computing floats in `E`, and returns host tensors (floats
/// rounded to f32, bools as 0/1).
pub fn run<E: Float>(
    g: &Graph,
    inputs: &[Tensor],
    params: &[Tensor],
) -> Result<Outputs<Tensor>, InterpError> {
    let (inputs, params) = values_from_tensors::<E>(g, inputs, params)?;
    Ok(run_values(g, &inputs, &params)?.map(|v| v.to_tensor()))
}

/// Runs `g` entirely in f64: float inputs, parameters and results are `ArrayD<f64>`.
pub fn run_f64(
    g: &Graph,
    inputs: &[Value<f64>],
    params: &[Value<f64>],
) -> Result<Outputs<Value<f64>>, InterpError> {
    run_values(g, inputs, params)
}

/// Runs `g` on interpreter values. Each node's value is dropped after its last use, so memory
/// stays near the live set.
pub fn run_values<E: Float>(
    g: &Graph,
    inputs: &[Value<E>],
    params: &[Value<E>],
) -> Result<Outputs<Value<E>>, InterpError> {
    check_run(g, inputs, params)?;
    // Outputs and updates count as uses that never end, so their values survive the loop.
    let mut uses_left = g.use_counts();
    let mut values: Vec<Option<Value<E>>> = vec![None; g.len()];
    for id in g.node_ids() {
        let value = eval_with(g, id, &values, inputs, params)?;
        for a in &g.node(id).args {
            uses_left[a.index()] -= 1;
            if uses_left[a.index()] == 0 {
                values[a.index()] = None;
            }
        }
        if uses_left[id.index()] > 0 {
            values[id.index()] = Some(value);
        }
    }
    let take = |n: NodeId| {
        values[n.index()]
            .clone()
            .ok_or(InterpError::Invariant { node: n, message: "result value was dropped".into() })
    };
    let outputs = g.outputs.iter().map(|o| Ok((o.name.clone(), take(o.node)?))).collect::<Result<_, _>>()?;
    let updates = g.updates.iter().map(|&(p, n)| Ok((p, take(n)?))).collect::<Result<_, _>>()?;
    Ok(Outputs { outputs, updates })
}

/// Every node's value (indexed by node id) as host tensors, computing floats in `E`.
pub fn run_all_nodes<E: Float>(
    g: &Graph,
    inputs: &[Tensor],
    params: &[Tensor],
) -> Result<Vec<Tensor>, InterpError> {
    let (inputs, params) = values_from_tensors::<E>(g, inputs, params)?;
    Ok(run_all_nodes_values(g, &inputs, &params)?.iter().map(Value::to_tensor).collect())
}

/// Every node's value (indexed by node id).
pub fn run_all_nodes_values<E: Float>(
    g: &Graph,
    inputs: &[Value<E>],
    params: &[Value<E>],
) -> Result<Vec<Value<E>>, InterpError> {
    check_run(g, inputs, params)?;
    let mut values: Vec<Option<Value<E>>> = Vec::with_capacity(g.len());
    for id in g.node_ids() {
        let value = eval_with(g, id, &values, inputs, params)?;
        values.push(Some(value));
    }
    Ok(values.into_iter().flatten().collect())
}

/// Evaluates one node; its arguments' values must be present in `values`.
fn eval_with<E: Float>(
    g: &Graph,
    id: NodeId,
    values: &[Option<Value<E>>],
    inputs: &[Value<E>],
    params: &[Value<E>],
) -> Result<Value<E>, InterpError> {
    let args = g
        .node(id)
        .args
        .iter()
        .map(|a| {
            values.get(a.index()).and_then(Option::as_ref).ok_or_else(|| InterpError::Invariant {
                node: id,
                message: format!("argument {a} has no value"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    eval::eval_node(g, id, &args, inputs, params)
}

/// Verifies the graph and checks the run's inputs and parameters against its tables.
fn check_run<E: Float>(g: &Graph, inputs: &[Value<E>], params: &[Value<E>]) -> Result<(), InterpError> {
    crate::ir::verify(g).map_err(|problems| InterpError::InvalidGraph { graph: g.name.clone(), problems })?;
    check_count(LeafKind::Input, g.inputs.len(), inputs.len())?;
    check_count(LeafKind::Param, g.params.len(), params.len())?;
    let declared_inputs = g.inputs.iter().map(|i| (LeafKind::Input, i.name.as_str(), &i.ty));
    let declared_params = g.params.iter().map(|p| (LeafKind::Param, p.path.as_str(), &p.ty));
    for ((what, name, ty), v) in declared_inputs.chain(declared_params).zip(inputs.iter().chain(params)) {
        if !v.fits(ty) {
            return Err(InterpError::Mismatch {
                what,
                name: name.to_string(),
                expected: ty.clone(),
                found: value::describe(v.dtype(), v.shape()),
            });
        }
    }
    Ok(())
}

fn check_count(what: LeafKind, expected: usize, found: usize) -> Result<(), InterpError> {
    if expected == found { Ok(()) } else { Err(InterpError::WrongCount { what, expected, found }) }
}

type LeafValues<E> = (Vec<Value<E>>, Vec<Value<E>>);

/// Converts host tensors to values of the declared dtypes, checking counts, shapes and bools.
fn values_from_tensors<E: Float>(
    g: &Graph,
    inputs: &[Tensor],
    params: &[Tensor],
) -> Result<LeafValues<E>, InterpError> {
    check_count(LeafKind::Input, g.inputs.len(), inputs.len())?;
    check_count(LeafKind::Param, g.params.len(), params.len())?;
    let convert = |what: LeafKind, name: &str, ty: &TensorType, t: &Tensor| {
        if !t.fits(ty) {
            return Err(InterpError::Mismatch {
                what,
                name: name.to_string(),
                expected: ty.clone(),
                found: value::describe(t.dtype(), t.shape()),
            });
        }
        Value::from_tensor(t, ty.dtype).ok_or_else(|| InterpError::NotBool { what, name: name.to_string() })
    };
    let ins = g.inputs.iter().zip(inputs).map(|(i, t)| convert(LeafKind::Input, &i.name, &i.ty, t));
    let ps = g.params.iter().zip(params).map(|(p, t)| convert(LeafKind::Param, &p.path, &p.ty, t));
    Ok((ins.collect::<Result<_, _>>()?, ps.collect::<Result<_, _>>()?))
}
