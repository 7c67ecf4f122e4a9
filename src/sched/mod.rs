//! Scheduling: groups graph nodes into kernels and plans their buffers.
//!
//! Every node either owns a buffer ("materialised": inputs, parameters, outputs, matmuls,
//! indexing ops, values used by several kernels) or is fused into the kernels that consume it.
//! A kernel is a [`LoopKernel`] — `for row { for pass { for j { exprs; reduce; store } } }` over
//! strided buffer accesses — or a [`MatMulKernel`] (strided GEMM) with a loop-kernel epilogue.
//! Views (reshape, permute, broadcast, slice) become strides of the accesses and cost no copy;
//! a reduction broadcast back over its axis becomes a row scalar of an earlier pass, so softmax
//! and layer norm are one kernel each. See `docs/kernels.md` for the full description.

mod fuse;
mod kernel;
mod plan;
mod print;

pub use kernel::{
    Access, BufferId, Expr, ExprId, Kernel, KernelBody, LoopKernel, MatMulKernel, MatOperand, ReduceKind,
    Reduction, Split, Store, StoreSource,
};
pub use plan::BufferPlan;
pub use print::print_kernels;

use crate::ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// Who owns a buffer's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferRole {
    /// The graph's `index`-th input, written by the executor before each run.
    Input(u32),
    /// The `index`-th parameter, persistent across runs.
    Param(u32),
    /// A kernel result, placed in a slot of the buffer plan.
    Temp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub role: BufferRole,
    pub dtype: crate::ir::DType,
    /// Number of 4-byte elements.
    pub elems: usize,
    /// The node whose value the buffer holds.
    pub node: NodeId,
}

/// The scheduled graph: kernels in execution order over planned buffers.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The graph the kernels were built from (multi-axis reductions split into single-axis
    /// steps, otherwise the input graph).
    pub graph: Graph,
    pub kernels: Vec<Kernel>,
    pub buffers: Vec<Buffer>,
    /// The buffer of each graph output, in `graph.outputs` order.
    pub outputs: Vec<BufferId>,
    /// `(parameter index, buffer holding its new value)`, applied after each run.
    pub updates: Vec<(u32, BufferId)>,
    pub plan: BufferPlan,
}

impl Schedule {
    pub fn buffer(&self, id: BufferId) -> &Buffer {
        &self.buffers[id.0 as usize]
    }
}

/// Schedules a verified graph. Never fails on a well-typed graph: whatever cannot be fused is
/// materialised.
pub fn schedule(g: &Graph) -> Schedule {
    let graph = split_reductions(g);
    let g = &graph;
    let mut mat = fuse::initial_materialized(g);
    loop {
        fuse::materialize_shared(g, &mut mat);
        match build(g, &mat) {
            Ok((kernels, buffers, outputs, updates)) => {
                let plan = plan::plan_buffers(&kernels, &buffers, &outputs, &updates);
                return Schedule { graph: graph.clone(), kernels, buffers, outputs, updates, plan };
            }
            Err(fuse::NeedsBuffer(id)) => {
                // each round materialises a new node, so the loop ends; asking twice would loop
                assert!(!mat[id.index()], "internal error: lowering asked again for a buffer for {id}");
                mat[id.index()] = true;
            }
        }
    }
}

type Built = (Vec<Kernel>, Vec<Buffer>, Vec<BufferId>, Vec<(u32, BufferId)>);

fn build(g: &Graph, mat: &[bool]) -> Result<Built, fuse::NeedsBuffer> {
    let mut b = fuse::Builder {
        g,
        mat,
        node_buffer: vec![None; g.len()],
        buffers: Vec::new(),
        kernels: Vec::new(),
        use_counts: g.use_counts(),
        matmul_kernel: HashMap::new(),
        defined_at: HashMap::new(),
    };
    for id in g.node_ids() {
        if !mat[id.index()] {
            continue;
        }
        let role = if let Op::Input { index } = g.node(id).op {
            Some(BufferRole::Input(index))
        } else if let Op::Param { index } = g.node(id).op {
            Some(BufferRole::Param(index))
        } else {
            None
        };
        match role {
            Some(role) => {
                let ty = g.ty(id);
                b.buffers.push(Buffer { role, dtype: ty.dtype, elems: ty.numel(), node: id });
                b.node_buffer[id.index()] = Some(BufferId(b.buffers.len() as u32 - 1));
            }
            None => {
                let buf = b.new_temp(id);
                b.node_buffer[id.index()] = Some(buf);
                b.defined_at.insert(buf, b.kernels.len());
                b.build_root(id, buf)?;
            }
        }
    }
    // outputs and updates that are leaves themselves are copied into a temporary
    let mut copies: HashMap<NodeId, BufferId> = HashMap::new();
    let mut result_buffer = |b: &mut fuse::Builder<'_>, id: NodeId| -> Result<BufferId, fuse::NeedsBuffer> {
        if !g.node(id).op.is_leaf() {
            return Ok(b.node_buffer[id.index()].expect("outputs are materialised"));
        }
        if let Some(&buf) = copies.get(&id) {
            return Ok(buf);
        }
        let buf = b.new_temp(id);
        b.defined_at.insert(buf, b.kernels.len());
        b.build_root(id, buf)?;
        copies.insert(id, buf);
        Ok(buf)
    };
    let mut outputs = Vec::new();
    for o in &g.outputs {
        outputs.push(result_buffer(&mut b, o.node)?);
    }
    let mut updates = Vec::new();
    for &(p, n) in &g.updates {
        if g.node(n).op == (Op::Param { index: p }) {
            continue; // the parameter keeps its value
        }
        updates.push((p, result_buffer(&mut b, n)?));
    }
    Ok((b.kernels, b.buffers, outputs, updates))
}

/// Rewrites reductions over several axes as chains of single-axis reductions (sum, max and min
/// are associative), so every reduction runs along one inner loop.
fn split_reductions(g: &Graph) -> Graph {
    let multi = |op: &Op| matches!(op, Op::Reduce { axes, .. } if axes.len() > 1);
    if !g.nodes.iter().any(|n| multi(&n.op)) {
        return g.clone();
    }
    let mut out = Graph::new(g.name.clone());
    out.inputs = g.inputs.clone();
    out.params = g.params.clone();
    out.scopes = g.scopes.clone();
    let mut map: Vec<NodeId> = Vec::with_capacity(g.len());
    for id in g.node_ids() {
        let n = g.node(id);
        out.current_scope = g.node_scopes[id.index()];
        out.current_span = g.spans[id.index()];
        let args: Vec<NodeId> = n.args.iter().map(|a| map[a.index()]).collect();
        let new = if let Op::Reduce { op, axes } = &n.op
            && axes.len() > 1
        {
            let mut x = args[0];
            for &a in axes.iter().rev() {
                x = out.reduce(*op, x, vec![a]);
            }
            x
        } else {
            out.add(n.op.clone(), &args, Some(g.ty(id).clone()))
        };
        map.push(new);
    }
    out.outputs = g
        .outputs
        .iter()
        .map(|o| crate::ir::OutputInfo { name: o.name.clone(), node: map[o.node.index()] })
        .collect();
    out.updates = g.updates.iter().map(|&(p, n)| (p, map[n.index()])).collect();
    out
}
