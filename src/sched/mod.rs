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
    let mut state = BuildState::new(g);
    let (mut kernels, buffers, outputs, mut updates) = loop {
        match state.build(g, &mat) {
            Ok(built) => break built,
            Err(fuse::NeedsBuffer(id)) => {
                // each round materialises a new node, so the loop ends; asking twice would loop
                assert!(!mat[id.index()], "internal error: lowering asked again for a buffer for {id}");
                let before = mat.clone();
                mat[id.index()] = true;
                fuse::materialize_shared(g, &users, &mut mat);
                let first = (0..g.len()).find(|&i| mat[i] != before[i]).unwrap_or(id.index());
                state.rewind(NodeId(first as u32));
            }
        }
    };
    debug_assert!(
        BuildState::new(g)
            .build(g, &mat)
            .is_ok_and(|fresh| fresh == (kernels.clone(), buffers.clone(), outputs.clone(), updates.clone())),
        "internal error: the resumed schedule differs from a build from scratch"
    );
    let results: Vec<BufferId> = outputs.iter().copied().chain(updates.iter().map(|&(_, b)| b)).collect();
    merge::merge_elementwise(&mut kernels, &buffers, &results);
    write_updates_in_place(&mut kernels, &buffers, &outputs, &mut updates);
    let plan = plan::plan_buffers(&kernels, &buffers, &outputs, &updates);
    Schedule { graph: graph.clone(), kernels, buffers, outputs, updates, plan }
}

type Built = (Vec<Kernel>, Vec<Buffer>, Vec<BufferId>, Vec<(u32, BufferId)>);

/// Where the build of one root started: enough to undo it and everything after it.
#[derive(Clone, Copy)]
struct Mark {
    root: NodeId,
    kernels: usize,
    buffers: usize,
    undo: usize,
}

/// The kernels and buffers built so far, kept across [`fuse::NeedsBuffer`] rounds.
struct BuildState {
    node_buffer: Vec<Option<BufferId>>,
    buffers: Vec<Buffer>,
    kernels: Vec<Kernel>,
    use_counts: Vec<u32>,
    matmul_kernel: HashMap<BufferId, usize>,
    defined_at: HashMap<BufferId, usize>,
    /// Kernels as they were before an epilogue was attached to them, in attach order.
    undo: Vec<(usize, Kernel)>,
    /// One mark per root built, in order.
    marks: Vec<Mark>,
    /// The first node the next build visits.
    resume: NodeId,
}

impl BuildState {
    fn new(g: &Graph) -> BuildState {
        BuildState {
            node_buffer: vec![None; g.len()],
            buffers: Vec::new(),
            kernels: Vec::new(),
            use_counts: g.use_counts(),
            matmul_kernel: HashMap::new(),
            defined_at: HashMap::new(),
            undo: Vec::new(),
            marks: Vec::new(),
            resume: NodeId(0),
        }
    }

    /// Undoes every root at or after `node` (and the output copies), so the next build starts
    /// there.
    fn rewind(&mut self, node: NodeId) {
        let keep = self.marks.partition_point(|m| m.root < node);
        self.marks.truncate(keep + 1);
        let m = self.marks.pop().expect(
            "a failed build leaves the mark of the failing root or the end mark, both at or after `node`",
        );
        while self.undo.len() > m.undo {
            let (k, old) = self.undo.pop().expect("checked above");
            if k < m.kernels {
                self.kernels[k] = old;
            }
        }
        self.kernels.truncate(m.kernels);
        self.buffers.truncate(m.buffers);
        for b in self.node_buffer.iter_mut() {
            if b.is_some_and(|b| b.0 as usize >= m.buffers) {
                *b = None;
            }
        }
        self.matmul_kernel.retain(|_, k| *k < m.kernels);
        self.defined_at.retain(|b, _| (b.0 as usize) < m.buffers);
        self.resume = node;
    }

    /// Builds the roots from `self.resume` on and then the output and update copies. On
    /// success the state is spent; on failure, call [`BuildState::rewind`] before the next
    /// build.
    fn build(&mut self, g: &Graph, mat: &[bool]) -> Result<Built, fuse::NeedsBuffer> {
        let mut b = fuse::Builder {
            g,
            mat,
            node_buffer: std::mem::take(&mut self.node_buffer),
            buffers: std::mem::take(&mut self.buffers),
            kernels: std::mem::take(&mut self.kernels),
            use_counts: std::mem::take(&mut self.use_counts),
            matmul_kernel: std::mem::take(&mut self.matmul_kernel),
            defined_at: std::mem::take(&mut self.defined_at),
            undo: std::mem::take(&mut self.undo),
        };
        let result = self.build_from(&mut b);
        self.node_buffer = b.node_buffer;
        self.buffers = b.buffers;
        self.kernels = b.kernels;
        self.use_counts = b.use_counts;
        self.matmul_kernel = b.matmul_kernel;
        self.defined_at = b.defined_at;
        self.undo = b.undo;
        let (outputs, updates) = result?;
        Ok((std::mem::take(&mut self.kernels), std::mem::take(&mut self.buffers), outputs, updates))
    }

    #[allow(clippy::type_complexity)]
    fn build_from(
        &mut self,
        b: &mut fuse::Builder<'_>,
    ) -> Result<(Vec<BufferId>, Vec<(u32, BufferId)>), fuse::NeedsBuffer> {
        let (g, mat) = (b.g, b.mat);
        for (i, _) in mat.iter().enumerate().skip(self.resume.index()).filter(|(_, m)| **m) {
            let id = NodeId(i as u32);
            self.marks.push(Mark {
                root: id,
                kernels: b.kernels.len(),
                buffers: b.buffers.len(),
                undo: b.undo.len(),
            });
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
        self.marks.push(Mark {
            root: NodeId(g.len() as u32),
            kernels: b.kernels.len(),
            buffers: b.buffers.len(),
            undo: b.undo.len(),
        });
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
