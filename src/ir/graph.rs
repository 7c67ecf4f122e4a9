//! The graph: an arena of nodes in topological order with side tables for source spans and
//! module scopes.
//!
//! **Invariant:** every node's arguments have smaller ids than the node itself (the arena is a
//! topological order), and every node's type is what [`infer_type`] gives for its op and
//! arguments. [`super::verify`] checks both.

use super::op::{BinaryOp, Op, ReduceOp, TypeError, UnaryOp, infer_type};
use super::types::{DType, TensorType, TypeId, TypeInterner};
use crate::source::Span;
use std::fmt;

/// Handle of a node in a [`Graph`]; prints as `%12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Handle of an interned module-path scope (`blocks.1.attn`); prints as `s3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ScopeId(pub u32);

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub args: Vec<NodeId>,
    pub ty: TypeId,
}

/// How a parameter or buffer gets its first value.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Full(f64),
    Normal {
        mean: f64,
        std: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// Glorot/Xavier: std (or bound) from `gain * sqrt(2 / (fan_in + fan_out))`.
    Glorot {
        fan_in: usize,
        fan_out: usize,
        gain: f64,
        normal: bool,
    },
    /// Kaiming/He: std (or bound) from `gain / sqrt(fan_in)`.
    Kaiming {
        fan_in: usize,
        gain: f64,
        normal: bool,
    },
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::op::fmt_f64 as n;
        match self {
            Init::Zeros => f.write_str("zeros"),
            Init::Ones => f.write_str("ones"),
            Init::Full(v) => write!(f, "full({})", n(*v)),
            Init::Normal { mean, std } => {
                if *mean == 0.0 {
                    write!(f, "normal({})", n(*std))
                } else {
                    write!(f, "normal({}, mean={})", n(*std), n(*mean))
                }
            }
            Init::Uniform { lo, hi } => write!(f, "uniform({}, {})", n(*lo), n(*hi)),
            Init::Glorot { fan_in, fan_out, gain, normal } => write!(
                f,
                "glorot_{}(fan_in={fan_in}, fan_out={fan_out}, gain={})",
                if *normal { "normal" } else { "uniform" },
                n(*gain)
            ),
            Init::Kaiming { fan_in, gain, normal } => write!(
                f,
                "kaiming_{}(fan_in={fan_in}, gain={})",
                if *normal { "normal" } else { "uniform" },
                n(*gain)
            ),
        }
    }
}

/// A trainable parameter or a non-trainable buffer (running statistics).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// Path in the module tree, e.g. `blocks.1.attn.q.weight`.
    pub path: String,
    pub ty: TensorType,
    pub init: Init,
    pub trainable: bool,
    /// The `param` / `buffer` declaration.
    pub span: Option<Span>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InputInfo {
    pub name: String,
    pub ty: TensorType,
    pub span: Option<Span>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutputInfo {
    pub name: String,
    pub node: NodeId,
}

/// A typed dataflow graph: one model method (e.g. `forward`) or one training step.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// What the graph computes, e.g. `CharLM.forward`.
    pub name: String,
    pub nodes: Vec<Node>,
    pub types: TypeInterner,
    pub inputs: Vec<InputInfo>,
    pub params: Vec<ParamInfo>,
    pub outputs: Vec<OutputInfo>,
    /// State updates applied after a run: parameter or buffer `index` takes the node's value
    /// (running statistics in training mode, optimizer updates in a training step).
    pub updates: Vec<(u32, NodeId)>,
    /// Side table: the source span each node came from (parallel to `nodes`).
    pub spans: Vec<Option<Span>>,
    /// Side table: the module scope each node was created in (parallel to `nodes`).
    pub node_scopes: Vec<ScopeId>,
    /// Interned scope paths; scope 0 is the root (`""`).
    pub scopes: Vec<String>,
    /// Scope and span given to nodes added next (set by the elaborator as it walks modules).
    pub current_scope: ScopeId,
    pub current_span: Option<Span>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), scopes: vec![String::new()], ..Graph::default() }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        self.types.get(self.nodes[id.index()].ty)
    }

    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.ty(id).shape
    }

    pub fn dtype(&self, id: NodeId) -> DType {
        self.ty(id).dtype
    }

    pub fn span(&self, id: NodeId) -> Option<Span> {
        self.spans[id.index()]
    }

    pub fn scope_path(&self, id: NodeId) -> &str {
        &self.scopes[self.node_scopes[id.index()].0 as usize]
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + use<> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// Interns a scope path and returns its id.
    pub fn scope(&mut self, path: &str) -> ScopeId {
        if let Some(i) = self.scopes.iter().position(|s| s == path) {
            return ScopeId(i as u32);
        }
        self.scopes.push(path.to_string());
        ScopeId(self.scopes.len() as u32 - 1)
    }

    /// Appends a node after checking its type. `given` is needed for ops whose result shape is
    /// not determined by their arguments (see [`infer_type`]).
    pub fn try_add(
        &mut self,
        op: Op,
        args: &[NodeId],
        given: Option<TensorType>,
    ) -> Result<NodeId, TypeError> {
        let ty = {
            let arg_types: Vec<&TensorType> = args.iter().map(|&a| self.ty(a)).collect();
            infer_type(&op, &arg_types, given.as_ref())?
        };
        let ty = self.types.intern(ty);
        self.nodes.push(Node { op, args: args.to_vec(), ty });
        self.spans.push(self.current_span);
        self.node_scopes.push(self.current_scope);
        Ok(NodeId(self.nodes.len() as u32 - 1))
    }

    /// Like [`Graph::try_add`] for callers that have already checked the types; a failure is a
    /// compiler bug.
    pub fn add(&mut self, op: Op, args: &[NodeId], given: Option<TensorType>) -> NodeId {
        match self.try_add(op.clone(), args, given) {
            Ok(id) => id,
            Err(e) => panic!("internal error: ill-typed `{op}` in graph `{}`: {e}", self.name),
        }
    }

    pub fn add_input(&mut self, name: &str, ty: TensorType, span: Option<Span>) -> NodeId {
        let index = self.inputs.len() as u32;
        self.inputs.push(InputInfo { name: name.to_string(), ty: ty.clone(), span });
        self.add(Op::Input { index }, &[], Some(ty))
    }

    /// Registers a parameter and returns its index (no node is created).
    pub fn add_param(&mut self, info: ParamInfo) -> u32 {
        self.params.push(info);
        self.params.len() as u32 - 1
    }

    pub fn param_node(&mut self, index: u32) -> NodeId {
        let ty = self.params[index as usize].ty.clone();
        self.add(Op::Param { index }, &[], Some(ty))
    }

    pub fn add_output(&mut self, name: &str, node: NodeId) {
        self.outputs.push(OutputInfo { name: name.to_string(), node });
    }

    // Convenience constructors used by the elaborator, autodiff and passes.

    pub fn constant(&mut self, value: f64, ty: TensorType) -> NodeId {
        self.add(Op::Const { value }, &[], Some(ty))
    }

    pub fn scalar(&mut self, value: f64, dtype: DType) -> NodeId {
        self.constant(value, TensorType::new(dtype, vec![]))
    }

    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> NodeId {
        self.add(Op::Unary(op), &[x], None)
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        self.add(Op::Binary(op), &[a, b], None)
    }

    pub fn reshape(&mut self, x: NodeId, shape: Vec<usize>) -> NodeId {
        if self.shape(x) == shape.as_slice() {
            return x;
        }
        // A splat constant is re-created in the new shape rather than viewed.
        if let Op::Const { value } = self.node(x).op {
            let ty = self.ty(x).with_shape(shape);
            return self.constant(value, ty);
        }
        let ty = self.ty(x).with_shape(shape);
        self.add(Op::Reshape, &[x], Some(ty))
    }

    /// Broadcasts to `shape` (numpy rules: leading axes are added first, then size-1 axes
    /// expanded). Returns `x` itself when nothing changes.
    pub fn broadcast_to(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId, TypeError> {
        let xs = self.shape(x).to_vec();
        if xs.as_slice() == shape {
            return Ok(x);
        }
        if xs.len() > shape.len() {
            return Err(TypeError(format!(
                "cannot broadcast {} to {}",
                super::types::ShapeDisplay(&xs),
                super::types::ShapeDisplay(shape)
            )));
        }
        if let Op::Const { value } = self.node(x).op {
            let ty = self.ty(x).with_shape(shape.to_vec());
            return Ok(self.constant(value, ty));
        }
        let mut padded = vec![1; shape.len() - xs.len()];
        padded.extend_from_slice(&xs);
        let x = self.reshape(x, padded.clone());
        if padded.as_slice() == shape {
            return Ok(x);
        }
        let ty = self.ty(x).with_shape(shape.to_vec());
        self.try_add(Op::Broadcast, &[x], Some(ty))
    }

    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axes: Vec<u32>) -> NodeId {
        self.add(Op::Reduce { op, axes }, &[x], None)
    }

    pub fn cast(&mut self, x: NodeId, to: DType) -> NodeId {
        if self.dtype(x) == to {
            return x;
        }
        self.add(Op::Cast { to }, &[x], None)
    }

    /// Which nodes each node's value is used by (arguments, outputs and updates).
    pub fn use_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.nodes.len()];
        for n in &self.nodes {
            for a in &n.args {
                counts[a.index()] += 1;
            }
        }
        for o in &self.outputs {
            counts[o.node.index()] += 1;
        }
        for (_, n) in &self.updates {
            counts[n.index()] += 1;
        }
        counts
    }

    /// Total floating-point operations of one run.
    pub fn flops(&self) -> u64 {
        self.node_ids().map(|id| self.node_flops(id)).sum()
    }

    pub fn node_flops(&self, id: NodeId) -> u64 {
        let n = self.node(id);
        let args: Vec<&TensorType> = n.args.iter().map(|&a| self.ty(a)).collect();
        super::op::flops(&n.op, &args, self.types.get(n.ty))
    }
}
