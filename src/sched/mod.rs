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
mod merge;
mod plan;
mod print;
mod runs;
mod share;
mod stash;

pub use kernel::{
    Access, BufferId, Expr, ExprId, Guard, Kernel, KernelBody, LoopKernel, MatMulKernel, MatOperand,
    ReduceKind, Reduction, Split, Store, StoreSource,
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
///
/// Lowering a kernel can find that a node it would fuse needs a buffer of its own
/// ([`fuse::NeedsBuffer`]). The node is then materialised and the build resumes from the
/// first root at or after it: the kernels of earlier roots only fuse nodes before them, so they
/// are what a build from scratch would make, and only the rest is rebuilt (a training step
/// asks about 80 times; restarting from scratch each time cost most of its schedule time).
pub fn schedule(g: &Graph) -> Schedule {
    let graph = split_reductions(g);
    let g = &graph;
    let mut mat = fuse::initial_materialized(g);
    let users = fuse::users_of(g);
    fuse::materialize_shared(g, &users, &mut mat);
    let mut state = BuildState::new(fuse::Builder::new(g, mat));
    let (outputs, mut updates) = loop {
        match state.build() {
            Ok(results) => break results,
            Err(fuse::NeedsBuffer(id)) => {
                let mat = &mut state.b.mat;
                // each round materialises a new node, so the loop ends; asking twice would loop
                assert!(!mat[id.index()], "internal error: lowering asked again for a buffer for {id}");
                let before = mat.clone();
                mat[id.index()] = true;
                fuse::materialize_shared(g, &users, mat);
                let first = (0..g.len()).find(|&i| mat[i] != before[i]).unwrap_or(id.index());
                state.rewind(NodeId(first as u32));
            }
        }
    };
    let fuse::Builder { mat, mut kernels, buffers, .. } = state.b;
    debug_assert!(
        BuildState::new(fuse::Builder::new(g, mat))
            .build_all()
            .is_ok_and(|fresh| fresh == (kernels.clone(), buffers.clone(), outputs.clone(), updates.clone())),
        "internal error: the resumed schedule differs from a build from scratch"
    );
    let results: Vec<BufferId> = outputs.iter().copied().chain(updates.iter().map(|&(_, b)| b)).collect();
    merge::merge_elementwise(&mut kernels, &buffers, &results);
    share::share_common_exprs(&mut kernels);
    stash::stash_numerators(&mut kernels);
    runs::join_contiguous_pieces(&mut kernels);
    write_updates_in_place(&mut kernels, &buffers, &outputs, &mut updates);
    let plan = plan::plan_buffers(&kernels, &buffers, &outputs, &updates);
    Schedule { graph: graph.clone(), kernels, buffers, outputs, updates, plan }
}

/// The buffers of the graph's outputs and its `(parameter, new value)` updates.
type Results = (Vec<BufferId>, Vec<(u32, BufferId)>);

/// Kernels, buffers, outputs and updates of a whole build.
type Built = (Vec<Kernel>, Vec<Buffer>, Vec<BufferId>, Vec<(u32, BufferId)>);

/// Where the build of one root started: enough to undo it and everything after it.
#[derive(Clone, Copy)]
struct Mark {
    root: NodeId,
    kernels: usize,
    buffers: usize,
    undo: usize,
}

/// A build that survives [`fuse::NeedsBuffer`] rounds: the builder's kernels and buffers plus
/// where each root's part of them starts.
struct BuildState<'a> {
    b: fuse::Builder<'a>,
    /// One mark per root built, in order, then one for the end of the roots.
    marks: Vec<Mark>,
    /// The first node the next build visits.
    resume: NodeId,
}

impl<'a> BuildState<'a> {
    fn new(b: fuse::Builder<'a>) -> BuildState<'a> {
        BuildState { b, marks: Vec::new(), resume: NodeId(0) }
    }

    fn mark(&self, root: NodeId) -> Mark {
        let b = &self.b;
        Mark { root, kernels: b.kernels.len(), buffers: b.buffers.len(), undo: b.undo.len() }
    }

    /// Undoes every root at or after `node` (and the output copies), so the next build starts
    /// there.
    fn rewind(&mut self, node: NodeId) {
        let keep = self.marks.partition_point(|m| m.root < node);
        self.marks.truncate(keep + 1);
        let m = self.marks.pop().expect(
            "a failed build leaves the mark of the failing root or the end mark, both at or after `node`",
        );
        let b = &mut self.b;
        while b.undo.len() > m.undo {
            let (k, old) = b.undo.pop().expect("checked above");
            if k < m.kernels {
                b.kernels[k] = old;
            }
        }
        b.kernels.truncate(m.kernels);
        b.buffers.truncate(m.buffers);
        for x in b.node_buffer.iter_mut() {
            if x.is_some_and(|x| x.0 as usize >= m.buffers) {
                *x = None;
            }
        }
        b.matmul_kernel.retain(|_, k| *k < m.kernels);
        b.defined_at.retain(|x, _| (x.0 as usize) < m.buffers);
        self.resume = node;
    }

    /// A whole build in one go (the kernels, buffers and results), or the first node that
    /// needs a buffer.
    fn build_all(mut self) -> Result<Built, fuse::NeedsBuffer> {
        let (outputs, updates) = self.build()?;
        Ok((self.b.kernels, self.b.buffers, outputs, updates))
    }

    /// Builds the roots from `self.resume` on, then the output and update copies. After a
    /// failure, call [`BuildState::rewind`] before building again.
    fn build(&mut self) -> Result<Results, fuse::NeedsBuffer> {
        let g = self.b.g;
        for i in self.resume.index()..g.len() {
            if !self.b.mat[i] {
                continue;
            }
            let id = NodeId(i as u32);
            self.marks.push(self.mark(id));
            let b = &mut self.b;
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
        self.resume = NodeId(g.len() as u32);
        // the end of the roots: rewinding to a node no root is at or after lands here
        self.marks.push(self.mark(NodeId(g.len() as u32)));
        let b = &mut self.b;
        // outputs and updates that are leaves themselves are copied into a temporary
        let mut copies: HashMap<NodeId, BufferId> = HashMap::new();
        let mut result_buffer =
            |b: &mut fuse::Builder<'_>, id: NodeId| -> Result<BufferId, fuse::NeedsBuffer> {
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
            outputs.push(result_buffer(b, o.node)?);
        }
        let mut updates = Vec::new();
        for &(p, n) in &g.updates {
            if g.node(n).op == (Op::Param { index: p }) {
                continue; // the parameter keeps its value
            }
            updates.push((p, result_buffer(b, n)?));
        }
        Ok((outputs, updates))
    }
}

/// Lets the kernel that computes a parameter's new value store it straight into the
/// parameter's buffer instead of a temporary that the executor copies over the parameter after
/// the run. Updates must look simultaneous (every kernel reads the old values), so this is done
/// only where nothing can tell: the value is computed by one loop kernel with one elementwise
/// store; that kernel reads the parameter, if at all, only at exactly the element it writes
/// (each element is loaded before it is stored, on any thread); no later kernel reads the
/// parameter; and the value is not also a graph output. Later readers of the new value read
/// the parameter's buffer, which then holds it. The rewritten update leaves `updates`.
fn write_updates_in_place(
    kernels: &mut [Kernel],
    buffers: &[Buffer],
    outputs: &[BufferId],
    updates: &mut Vec<(u32, BufferId)>,
) {
    let mut kept = Vec::new();
    for &(p, b) in updates.iter() {
        let shared = updates.iter().filter(|(_, c)| *c == b).count() > 1;
        let param_bufs: Vec<BufferId> = (0..buffers.len() as u32)
            .map(BufferId)
            .filter(|&x| buffers[x.0 as usize].role == BufferRole::Param(p))
            .collect();
        let target = param_bufs.first().copied();
        let ok = !shared
            && buffers[b.0 as usize].role == BufferRole::Temp
            && !outputs.contains(&b)
            && target.is_some_and(|t| buffers[t.0 as usize].dtype == buffers[b.0 as usize].dtype)
            && in_place_safe(kernels, b, &param_bufs);
        match (ok, target) {
            (true, Some(t)) => {
                for k in kernels.iter_mut() {
                    for a in k.args.iter_mut() {
                        if *a == b {
                            *a = t;
                        }
                    }
                }
            }
            _ => kept.push((p, b)),
        }
    }
    *updates = kept;
}

/// See [`write_updates_in_place`]: whether the one kernel writing `b` may write it over the
/// parameter whose buffers are `param`.
fn in_place_safe(kernels: &[Kernel], b: BufferId, param: &[BufferId]) -> bool {
    let writes = |k: &Kernel| match &k.body {
        KernelBody::Loop(l) => l.stores.iter().any(|s| k.args[s.buf as usize] == b),
        KernelBody::MatMul(m) => {
            k.args[m.c.buf as usize] == b
                || m.epilogue.as_ref().is_some_and(|e| e.stores.iter().any(|s| k.args[s.buf as usize] == b))
        }
    };
    let writers: Vec<usize> = (0..kernels.len()).filter(|&i| writes(&kernels[i])).collect();
    let [w] = writers[..] else { return false };
    let k = &kernels[w];
    let KernelBody::Loop(l) = &k.body else { return false };
    let is_param = |pos: u32| param.contains(&k.args[pos as usize]);
    let is_b = |pos: u32| k.args[pos as usize] == b;
    let [store] = &l.stores.iter().filter(|s| is_b(s.buf)).collect::<Vec<_>>()[..] else { return false };
    // stored in the last pass, so no pass after it can load an element it overwrote
    if !matches!(store.source, StoreSource::Elem(_))
        || store.pass + 1 != l.passes
        || l.stores.iter().any(|s| is_param(s.buf))
    {
        return false;
    }
    // the kernel must not read `b` itself, and reads the parameter only where it writes
    for e in &l.exprs {
        match e {
            Expr::Load { buf, access, dtype } => {
                if is_b(*buf) || (is_param(*buf) && (*access != store.access || *dtype != store.dtype)) {
                    return false;
                }
            }
            Expr::GatherLoad { buf, .. } => {
                if is_b(*buf) || is_param(*buf) {
                    return false;
                }
            }
            Expr::Const { .. }
            | Expr::Index { .. }
            | Expr::Random { .. }
            | Expr::RowScalar { .. }
            | Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Cast { .. } => {}
        }
    }
    kernels[w + 1..].iter().all(|k| !k.args.iter().any(|a| param.contains(a)))
}

/// A reduction over every axis of `f(v, v)` or `f(v)` (a sum of squares: the gradient norm)
/// or of `v` itself, where `v` is a chain of permutes and reshapes of `base`: the order of the
/// elements does not change the set reduced, so it becomes one reduction over `base` read
/// flat, in memory order (gradients arrive permuted from autodiff; reduced axis by axis through
/// the permute, every stage walked a strided, short inner axis). The sum is the same set of
/// terms, added in another order.
fn flat_full_reduction(g: &Graph, id: NodeId, map: &[NodeId], out: &mut Graph) -> Option<NodeId> {
    let Op::Reduce { op, axes } = &g.node(id).op else { return None };
    let x = g.node(id).args[0];
    let rank = g.shape(x).len();
    let numel = g.ty(x).numel();
    if rank < 2 || axes.len() != rank || numel == 0 {
        return None;
    }
    let peel = |mut v: NodeId| {
        while matches!(g.node(v).op, Op::Permute { .. } | Op::Reshape) {
            v = g.node(v).args[0];
        }
        v
    };
    let xn = g.node(x);
    let (f, inner) = match &xn.op {
        Op::Unary(_) | Op::Binary(_) if xn.args.iter().all(|&a| a == xn.args[0]) => {
            (Some(xn.op.clone()), xn.args[0])
        }
        _ => (None, x),
    };
    let base = peel(inner);
    if base == inner {
        return None;
    }
    let mut v = out.reshape(map[base.index()], vec![numel]);
    if let Some(op) = f {
        let args = vec![v; xn.args.len()];
        v = out.add(op, &args, None);
    }
    let r = out.reduce(*op, v, vec![0]);
    Some(out.reshape(r, g.shape(id).to_vec()))
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
        let new = if let Some(flat) = flat_full_reduction(g, id, &map, &mut out) {
            flat
        } else if let Op::Reduce { op, axes } = &n.op
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
