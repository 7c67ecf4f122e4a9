//! Fusion: decides which nodes own a buffer ("materialised") and lowers everything else into
//! the loop kernels of the materialised nodes that consume it.
//!
//! A value flowing into a kernel is described by an [`IndexMap`] from the kernel's domain
//! index to the node's own index; views (broadcast, permute, slice, reshape when the strides
//! allow) transform the map and cost nothing, so a loaded buffer becomes a strided
//! [`Access`]. A `reduce` whose result is only broadcast back over its reduced axis becomes a
//! row scalar of the consumer's kernel (an earlier pass over the same row), which is how softmax
//! and layer norm become one kernel. When lowering meets something it cannot express (a reshape
//! of a fused value across incompatible strides, a matmul operand that is not a plain view,
//! a reduction over another axis), it asks for that node to be materialised and the schedule is
//! rebuilt.

use super::kernel::{
    Access, BufferId, Expr, ExprId, Guard, Kernel, KernelBody, LoopKernel, MatMulKernel, MatOperand,
    ReduceKind, Reduction, Split, Store, StoreSource,
};
use super::{Buffer, BufferRole};
use crate::ir::{BinaryOp, DType, Graph, NodeId, Op, UnaryOp};
use std::collections::HashMap;

/// Lowering needs `node` to own a buffer; the scheduler marks it and starts again.
#[derive(Debug)]
pub(super) struct NeedsBuffer(pub NodeId);

/// Maps a kernel domain index `i` (rank `D`) to a node index: `node_idx[k] = base[k] +
/// sum_d coef[k][d] * i[d]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct IndexMap {
    base: Vec<i64>,
    coef: Vec<Vec<i64>>,
}

impl IndexMap {
    fn identity(rank: usize, domain_rank: usize) -> IndexMap {
        let coef = (0..rank)
            .map(|k| {
                let mut row = vec![0; domain_rank];
                if k < domain_rank {
                    row[k] = 1;
                }
                row
            })
            .collect();
        IndexMap { base: vec![0; rank], coef }
    }

    fn zero_row(&mut self, k: usize) {
        self.base[k] = 0;
        self.coef[k].iter_mut().for_each(|c| *c = 0);
    }
}

pub(super) fn contiguous_strides(shape: &[usize]) -> Vec<i64> {
    let mut strides = vec![0i64; shape.len()];
    let mut acc = 1i64;
    for k in (0..shape.len()).rev() {
        strides[k] = acc;
        acc *= shape[k] as i64;
    }
    strides
}

/// The element offset of `map` into a buffer with `strides`, as an affine access over the
/// domain (kept in `outer`, one entry per domain dimension, until the kernel is finished).
fn compose(map: &IndexMap, strides: &[i64], domain_rank: usize) -> Access {
    let mut offset = 0;
    let mut outer = vec![0i64; domain_rank];
    for (k, &st) in strides.iter().enumerate() {
        offset += map.base[k] * st;
        for (d, o) in outer.iter_mut().enumerate() {
            *o += map.coef[k][d] * st;
        }
    }
    Access { offset, outer, inner: 0 }
}

/// Which nodes own a buffer.
pub(super) fn initial_materialized(g: &Graph) -> Vec<bool> {
    let mut mat = vec![false; g.len()];
    for id in g.node_ids() {
        let n = g.node(id);
        mat[id.index()] = match &n.op {
            Op::Input { .. } | Op::Param { .. } => true,
            Op::MatMul { .. }
            | Op::ArgMax { .. }
            | Op::TopK { .. }
            | Op::Cumsum { .. }
            | Op::ScatterAdd { .. }
            | Op::Concat { .. } => true,
            // zero padding without interior padding is a guarded load in its consumer
            Op::Pad { interior, .. } => *interior != 0,
            // a reduction is a row scalar of its consumer's kernel where the consumer iterates
            // over the reduced axis; lowering asks for a buffer where it does not
            Op::Reduce { .. } => false,
            Op::Const { .. }
            | Op::Iota { .. }
            | Op::RandomUniform { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Select
            | Op::Cast { .. }
            | Op::Reshape
            | Op::Permute { .. }
            | Op::Broadcast
            | Op::Slice { .. }
            | Op::Gather => false,
        };
    }
    for o in &g.outputs {
        mat[o.node.index()] = true;
    }
    for (_, n) in &g.updates {
        mat[n.index()] = true;
    }
    mat
}

pub(super) fn users_of(g: &Graph) -> Vec<Vec<NodeId>> {
    let mut users = vec![Vec::new(); g.len()];
    for id in g.node_ids() {
        for a in &g.node(id).args {
            if !users[a.index()].contains(&id) {
                users[a.index()].push(id);
            }
        }
    }
    users
}

/// Free to recompute in every consumer: constants, iota, views of such or of buffers, and one
/// cheap elementwise operation (add, multiply, compare, select...; no transcendental, division
/// or call) whose arguments are all of those. Recomputing `x * c` in each of two consumers
/// reads `x` twice; giving it a buffer would read `x`, write the buffer and read it twice.
fn duplicable(g: &Graph, mat: &[bool], id: NodeId) -> bool {
    let n = g.node(id);
    let operand = |a: NodeId| mat[a.index()] || free_view(g, mat, a);
    match &n.op {
        Op::Unary(op) => {
            matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Not | UnaryOp::Floor) && operand(n.args[0])
        }
        Op::Binary(op) => {
            let cheap = match op {
                BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Max
                | BinaryOp::Min
                | BinaryOp::Eq
                | BinaryOp::Ne
                | BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge
                | BinaryOp::And
                | BinaryOp::Or => true,
                BinaryOp::Div | BinaryOp::Rem | BinaryOp::Pow => false,
            };
            cheap && n.args.iter().all(|&a| operand(a))
        }
        Op::Select | Op::Cast { .. } => n.args.iter().all(|&a| operand(a)),
        Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. } => {
            let a = n.args[0];
            mat[a.index()] || duplicable(g, mat, a)
        }
        _ => free_view(g, mat, id),
    }
}

/// Constants, iota, and views of such or of buffers.
fn free_view(g: &Graph, mat: &[bool], id: NodeId) -> bool {
    let n = g.node(id);
    match &n.op {
        Op::Const { .. } | Op::Iota { .. } => true,
        Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. } => {
            let a = n.args[0];
            mat[a.index()] || free_view(g, mat, a)
        }
        _ => false,
    }
}

/// Materialises every non-duplicable node whose value flows into more than one kernel, so no
/// work is repeated across kernels. Views hand the decision to the node they view. One pass in
/// reverse topological order: a node's users are final when it is visited, so materialising a
/// shared node first lets its producers stay fused into it.
/// `users` is [`users_of`]`(g)`.
pub(super) fn materialize_shared(g: &Graph, users: &[Vec<NodeId>], mat: &mut [bool]) {
    #[derive(Clone, Copy, PartialEq)]
    enum Sink {
        None,
        One(u32),
        Many,
    }
    let mut sink = vec![Sink::None; g.len()];
    for id in (0..g.len() as u32).rev().map(NodeId) {
        if mat[id.index()] {
            continue;
        }
        let mut s = Sink::None;
        for u in &users[id.index()] {
            let us = if mat[u.index()] { Sink::One(u.0) } else { sink[u.index()] };
            s = match (s, us) {
                (x, Sink::None) => x,
                (Sink::None, y) => y,
                (Sink::One(a), Sink::One(b)) if a == b => Sink::One(a),
                _ => Sink::Many,
            };
        }
        sink[id.index()] = s;
        let overlapping = || window_reads(g, users, mat, id, false) > g.ty(id).numel();
        if (s != Sink::Many && !overlapping()) || duplicable(g, mat, id) {
            continue;
        }
        let mut target = id;
        while matches!(g.node(target).op, Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. })
        {
            let a = g.node(target).args[0];
            if mat[a.index()] {
                break;
            }
            target = a;
        }
        // a view whose source is already a buffer is duplicable, so `target` is not one
        mat[target.index()] = true;
    }
}

/// Elements of `id` read through windows: chains of views (reshape, permute, slice; not
/// materialised) with at least one slice, each window counted once however many consumers
/// read it. Above `numel`, windows overlap (im2col, pooling): fused, the value would be
/// computed once per window covering an element, so a non-duplicable value read that way gets
/// a buffer even with a single consuming kernel.
fn window_reads(g: &Graph, users: &[Vec<NodeId>], mat: &[bool], id: NodeId, sliced: bool) -> usize {
    let mut total = 0;
    let mut read_whole = false;
    for &u in &users[id.index()] {
        match g.node(u).op {
            Op::Reshape | Op::Permute { .. } | Op::Slice { .. } if !mat[u.index()] => {
                let slice = matches!(g.node(u).op, Op::Slice { .. });
                total += window_reads(g, users, mat, u, sliced || slice);
            }
            _ => read_whole = true,
        }
    }
    if read_whole && sliced { total + g.ty(id).numel() } else { total }
}

/// Builds one loop kernel (or the operand views of a matmul).
pub(super) struct LoopBuilder<'a> {
    g: &'a Graph,
    mat: &'a [bool],
    node_buffer: &'a [Option<BufferId>],
    /// The node this kernel computes: lowering does not load it from its own buffer.
    root: Option<NodeId>,
    domain: Vec<usize>,
    /// The domain dimension the inner loop runs over when fixed (reductions, scans, top-k).
    pub inner_dim: Option<usize>,
    pub args: Vec<BufferId>,
    exprs: Vec<Expr>,
    types: Vec<DType>,
    dedup: HashMap<Expr, ExprId>,
    /// Lowered (node, index map) pairs; a node is seen under few distinct maps, so they are
    /// searched linearly (no map is cloned for a lookup).
    memo: HashMap<NodeId, Vec<(IndexMap, ExprId)>>,
    reductions: Vec<(ReduceKind, ExprId)>,
    stores: Vec<Store>,
    pub nodes: Vec<NodeId>,
}

impl<'a> LoopBuilder<'a> {
    pub fn new(
        g: &'a Graph,
        mat: &'a [bool],
        node_buffer: &'a [Option<BufferId>],
        root: Option<NodeId>,
        domain: &[usize],
    ) -> LoopBuilder<'a> {
        // a scalar domain gets one dimension of size 1 so every kernel has an inner loop
        let domain = if domain.is_empty() { vec![1] } else { domain.to_vec() };
        LoopBuilder {
            g,
            mat,
            node_buffer,
            root,
            domain,
            inner_dim: None,
            args: Vec::new(),
            exprs: Vec::new(),
            types: Vec::new(),
            dedup: HashMap::new(),
            memo: HashMap::new(),
            reductions: Vec::new(),
            stores: Vec::new(),
            nodes: Vec::new(),
        }
    }

    fn identity(&self, rank: usize) -> IndexMap {
        IndexMap::identity(rank, self.domain.len())
    }

    fn param(&mut self, b: BufferId) -> u32 {
        if let Some(p) = self.args.iter().position(|&x| x == b) {
            return p as u32;
        }
        self.args.push(b);
        self.args.len() as u32 - 1
    }

    fn push(&mut self, e: Expr, dt: DType) -> ExprId {
        if let Some(&id) = self.dedup.get(&e) {
            return id;
        }
        self.exprs.push(e.clone());
        self.types.push(dt);
        let id = self.exprs.len() as u32 - 1;
        self.dedup.insert(e, id);
        id
    }

    fn constant(&mut self, value: f64, dtype: DType) -> ExprId {
        self.push(Expr::Const { bits: value.to_bits(), dtype }, dtype)
    }

    fn buffer_of(&self, id: NodeId) -> BufferId {
        // invariant: materialised nodes get their buffer before any later node is lowered
        self.node_buffer[id.index()].expect("materialised node has a buffer")
    }

    /// The value of the whole node at the identity map (the root's own expression).
    pub fn lower_identity(&mut self, id: NodeId) -> Result<ExprId, NeedsBuffer> {
        let map = self.identity(self.g.shape(id).len());
        self.lower(id, &map)
    }

    fn lower(&mut self, id: NodeId, map: &IndexMap) -> Result<ExprId, NeedsBuffer> {
        if let Some(&(_, e)) = self.memo.get(&id).and_then(|seen| seen.iter().find(|(m, _)| m == map)) {
            return Ok(e);
        }
        let e = self.lower_uncached(id, map)?;
        self.memo.entry(id).or_default().push((map.clone(), e));
        Ok(e)
    }

    fn load(&mut self, id: NodeId, map: &IndexMap) -> ExprId {
        let buf = self.buffer_of(id);
        let p = self.param(buf);
        let access = compose(map, &contiguous_strides(self.g.shape(id)), self.domain.len());
        let dtype = self.g.dtype(id);
        self.push(Expr::Load { buf: p, dtype, access }, dtype)
    }

    fn lower_uncached(&mut self, id: NodeId, map: &IndexMap) -> Result<ExprId, NeedsBuffer> {
        let g = self.g;
        let n = g.node(id);
        let dt = g.dtype(id);
        if self.mat[id.index()] && (Some(id) != self.root || n.op.is_leaf()) {
            return Ok(self.load(id, map));
        }
        if !self.nodes.contains(&id) {
            self.nodes.push(id);
        }
        let e = match &n.op {
            Op::Input { .. } | Op::Param { .. } => unreachable!("leaves are materialised"),
            Op::MatMul { .. }
            | Op::ArgMax { .. }
            | Op::TopK { .. }
            | Op::Cumsum { .. }
            | Op::ScatterAdd { .. }
            | Op::Concat { .. } => {
                // these are always roots of their own kernels, built by `build_root`
                unreachable!("`{}` is not fusable into a consumer", n.op)
            }
            Op::Pad { axis, lo, interior, .. } => {
                debug_assert_eq!(*interior, 0, "interior padding is materialised");
                self.lower_pad(id, *axis as usize, *lo as i64, map)?
            }
            Op::Const { value } => self.constant(*value, dt),
            Op::Iota { axis } => {
                let a = *axis as usize;
                let access = Access { offset: map.base[a], outer: map.coef[a].clone(), inner: 0 };
                self.push(Expr::Index { access }, DType::I32)
            }
            Op::RandomUniform { stream } => {
                let key = self.lower(n.args[0], &IndexMap { base: vec![], coef: vec![] })?;
                let access = compose(map, &contiguous_strides(g.shape(id)), self.domain.len());
                self.push(Expr::Random { key, stream: *stream, access }, DType::F32)
            }
            Op::Unary(op) => {
                let x = self.lower(n.args[0], map)?;
                self.push(Expr::Unary { op: *op, x }, dt)
            }
            Op::Binary(op) => {
                let a = self.lower(n.args[0], map)?;
                let b = self.lower(n.args[1], map)?;
                self.push(Expr::Binary { op: *op, a, b }, dt)
            }
            Op::Select => {
                let cond = self.lower(n.args[0], map)?;
                let a = self.lower(n.args[1], map)?;
                let b = self.lower(n.args[2], map)?;
                self.push(Expr::Select { cond, a, b }, dt)
            }
            Op::Cast { to } => {
                let x = self.lower(n.args[0], map)?;
                if g.dtype(n.args[0]) == *to { x } else { self.push(Expr::Cast { to: *to, x }, *to) }
            }
            Op::Broadcast => {
                let a = n.args[0];
                let mut m = map.clone();
                for (k, &s) in g.shape(a).iter().enumerate() {
                    if s == 1 {
                        m.zero_row(k);
                    }
                }
                self.lower(a, &m)?
            }
            Op::Permute { perm } => {
                let a = n.args[0];
                let mut m = map.clone();
                for (i, &p) in perm.iter().enumerate() {
                    m.base[p as usize] = map.base[i];
                    m.coef[p as usize] = map.coef[i].clone();
                }
                self.lower(a, &m)?
            }
            Op::Slice { axis, start, step, .. } => {
                let a = *axis as usize;
                let mut m = map.clone();
                m.base[a] = *start as i64 + *step as i64 * map.base[a];
                m.coef[a].iter_mut().for_each(|c| *c *= *step as i64);
                self.lower(n.args[0], &m)?
            }
            Op::Reshape => {
                let a = n.args[0];
                if self.mat[a.index()] {
                    // same linear offsets: read the buffer through the reshape's own strides
                    let buf = self.buffer_of(a);
                    let p = self.param(buf);
                    let access = compose(map, &contiguous_strides(g.shape(id)), self.domain.len());
                    self.push(Expr::Load { buf: p, dtype: dt, access }, dt)
                } else {
                    match reshape_map(map, g.shape(id), g.shape(a), &self.domain) {
                        Some(m) => self.lower(a, &m)?,
                        None => return Err(NeedsBuffer(a)),
                    }
                }
            }
            Op::Gather => self.lower_gather(id, map)?,
            Op::Reduce { op, axes } => {
                let x = n.args[0];
                if axes.iter().all(|&a| g.shape(x)[a as usize] == 1) {
                    // a reduction over one element is that element
                    self.lower(x, map)?
                } else {
                    let slot = self.row_reduction(id, ReduceKind::from(*op), axes[0] as usize, map)?;
                    self.push(Expr::RowScalar { slot }, dt)
                }
            }
        };
        Ok(e)
    }

    /// A reduction over axis `a` of node `id`'s argument as a row scalar of this kernel.
    fn row_reduction(
        &mut self,
        id: NodeId,
        kind: ReduceKind,
        a: usize,
        map: &IndexMap,
    ) -> Result<u32, NeedsBuffer> {
        let g = self.g;
        let x = g.node(id).args[0];
        let len = g.shape(x)[a];
        let free = |d: usize| map.coef.iter().all(|row| row[d] == 0);
        let d = match self.inner_dim {
            Some(d) => d,
            None => {
                let cands: Vec<usize> =
                    (0..self.domain.len()).filter(|&d| self.domain[d] == len && free(d)).collect();
                match cands.iter().find(|&&d| d == a).or(cands.last()) {
                    Some(&d) => d,
                    None => return Err(NeedsBuffer(id)),
                }
            }
        };
        if self.domain[d] != len || !free(d) || self.g.shape(id).len() != g.shape(x).len() {
            return Err(NeedsBuffer(id));
        }
        self.inner_dim = Some(d);
        let mut m = map.clone();
        m.base[a] = 0;
        m.coef[a] = vec![0; self.domain.len()];
        m.coef[a][d] = 1;
        let value = self.lower(x, &m)?;
        self.reductions.push((kind, value));
        Ok(self.reductions.len() as u32 - 1)
    }

    fn lower_gather(&mut self, id: NodeId, map: &IndexMap) -> Result<ExprId, NeedsBuffer> {
        let g = self.g;
        let n = g.node(id);
        let (table, idx) = (n.args[0], n.args[1]);
        let ir = g.shape(idx).len();
        let rows = g.shape(table)[0];
        let dt = g.dtype(id);
        if rows == 0 {
            return Ok(self.constant(0.0, dt));
        }
        let domain_rank = self.domain.len();
        let table_map = |row0: i64| {
            let mut base = vec![row0];
            base.extend_from_slice(&map.base[ir..]);
            let mut coef = vec![vec![0; domain_rank]];
            coef.extend_from_slice(&map.coef[ir..]);
            IndexMap { base, coef }
        };
        let (buf, access, stride, mut guards) = self.guarded_view(table, &table_map(0), &table_map(1))?;
        let idx_map = IndexMap { base: map.base[..ir].to_vec(), coef: map.coef[..ir].to_vec() };
        let index = self.lower(idx, &idx_map)?;
        guards.push(Guard { index, rows: rows as u32, stride });
        Ok(self.push(Expr::GatherLoad { buf, dtype: dt, access, guards }, dt))
    }

    /// The operand of a guarded load ([`Expr::GatherLoad`]): `x` read with its guarded axis at
    /// 0 (`m0`) and at 1 (`m1`) must be strided loads of one buffer, plain or themselves guarded
    /// by the same guards (a pad of a pad); returns the buffer, the access of row 0, the stride
    /// between rows and the guards already there. Anything else gets a buffer of its own.
    fn guarded_view(
        &mut self,
        x: NodeId,
        m0: &IndexMap,
        m1: &IndexMap,
    ) -> Result<(u32, Access, i64, Vec<Guard>), NeedsBuffer> {
        let (e0, e1) = (self.lower(x, m0)?, self.lower(x, m1)?);
        match (&self.exprs[e0 as usize], &self.exprs[e1 as usize]) {
            (Expr::Load { buf, access: a0, .. }, Expr::Load { buf: b1, access: a1, .. }) if buf == b1 => {
                Ok((*buf, a0.clone(), a1.offset - a0.offset, Vec::new()))
            }
            (
                Expr::GatherLoad { buf, access: a0, guards: g0, .. },
                Expr::GatherLoad { buf: b1, access: a1, guards: g1, .. },
            ) if buf == b1 && g0 == g1 && a0.outer == a1.outer && a0.inner == a1.inner => {
                Ok((*buf, a0.clone(), a1.offset - a0.offset, g0.clone()))
            }
            _ => Err(NeedsBuffer(x)),
        }
    }

    /// Zero padding along `a` (no interior padding) read at `map`: the input's element at
    /// `o - lo` where that lies inside it, else zero, as a guarded load ([`Expr::GatherLoad`]
    /// with index `o - lo` and the input's stride along `a`). The input must lower to a plain
    /// strided view of a buffer (else it gets a buffer of its own).
    fn lower_pad(&mut self, id: NodeId, a: usize, lo: i64, map: &IndexMap) -> Result<ExprId, NeedsBuffer> {
        let g = self.g;
        let x = g.node(id).args[0];
        let rows = g.shape(x)[a];
        let dt = g.dtype(id);
        if rows == 0 {
            return Ok(self.constant(0.0, dt));
        }
        let pinned = |at: i64| {
            let mut m = map.clone();
            m.base[a] = at;
            m.coef[a] = vec![0; map.coef[a].len()];
            m
        };
        let (buf, access, stride, mut guards) = self.guarded_view(x, &pinned(0), &pinned(1))?;
        let at = Access { offset: map.base[a] - lo, outer: map.coef[a].clone(), inner: 0 };
        let index = self.push(Expr::Index { access: at }, DType::I32);
        guards.push(Guard { index, rows: rows as u32, stride });
        Ok(self.push(Expr::GatherLoad { buf, dtype: dt, access, guards }, dt))
    }

    /// Adds a store of `value` to the root's buffer through `map` (over `shape`'s strides).
    fn store(&mut self, buf: BufferId, shape: &[usize], map: &IndexMap, source: StoreSource, dtype: DType) {
        let p = self.param(buf);
        let access = compose(map, &contiguous_strides(shape), self.domain.len());
        self.stores.push(Store { buf: p, dtype, access, source, pass: 0 });
    }

    /// Checks that `id`'s lowered value is a plain strided view of a buffer and returns it as
    /// per-dimension strides over `id`'s shape.
    fn operand_view(&mut self, id: NodeId) -> Result<(u32, i64, Vec<i64>), NeedsBuffer> {
        self.domain = if self.g.shape(id).is_empty() { vec![1] } else { self.g.shape(id).to_vec() };
        let e = self.lower_identity(id)?;
        match &self.exprs[e as usize] {
            Expr::Load { buf, access, .. } => Ok((*buf, access.offset, access.outer.clone())),
            _ => Err(NeedsBuffer(id)),
        }
    }

    /// Finishes the description: chooses the inner dimension, drops and merges dimensions
    /// that every access walks contiguously, and numbers passes.
    pub fn finish(self, keep_inner: bool) -> (LoopKernel, Vec<BufferId>, Vec<NodeId>) {
        let dims = self.domain.len();
        let inner = match self.inner_dim {
            Some(d) => d,
            None if keep_inner => dims - 1,
            None => (0..dims).rev().find(|&d| self.domain[d] > 1).unwrap_or(dims - 1),
        };
        let mut strides: Vec<Vec<i64>> = Vec::new();
        for e in &self.exprs {
            match e {
                Expr::Load { access, .. }
                | Expr::GatherLoad { access, .. }
                | Expr::Index { access }
                | Expr::Random { access, .. } => strides.push(access.outer.clone()),
                Expr::Const { .. }
                | Expr::RowScalar { .. }
                | Expr::Unary { .. }
                | Expr::Binary { .. }
                | Expr::Select { .. }
                | Expr::Cast { .. } => {}
            }
        }
        for s in &self.stores {
            strides.push(s.access.outer.clone());
        }
        let fits = |outer_d: usize, next_d: usize, next_size: usize| {
            strides.iter().all(|s| s[outer_d] == s[next_d] * next_size as i64)
        };
        // groups of domain dims, outermost first; each group is addressed by its last member
        let mut groups: Vec<(usize, usize)> = Vec::new(); // (size, last dim)
        for d in 0..dims {
            if d == inner || self.domain[d] == 1 {
                continue;
            }
            match groups.last_mut() {
                Some((size, last)) if fits(*last, d, self.domain[d]) => {
                    *size *= self.domain[d];
                    *last = d;
                }
                _ => groups.push((self.domain[d], d)),
            }
        }
        let mut inner_size = self.domain[inner];
        let flat_ok = !keep_inner
            && self.reductions.is_empty()
            && self.stores.iter().all(|s| matches!(s.source, StoreSource::Elem(_)))
            && self.inner_dim.is_none();
        if flat_ok {
            // merging a group into the inner loop keeps the inner stride and multiplies sizes
            while let Some(&(size, last)) = groups.last() {
                if !fits(last, inner, inner_size) {
                    break;
                }
                inner_size *= size;
                groups.pop();
            }
        }
        let serial = self.stores.iter().any(|s| matches!(s.source, StoreSource::AddIndirect { .. }));
        let split = if serial {
            Split::Serial
        } else if flat_ok && groups.is_empty() {
            Split::Elements
        } else {
            Split::Rows
        };
        let convert = |a: &Access| Access {
            offset: a.offset,
            outer: groups.iter().map(|&(_, last)| a.outer[last]).collect(),
            inner: a.outer[inner],
        };
        let mut exprs = self.exprs.clone();
        for e in exprs.iter_mut() {
            match e {
                Expr::Load { access, .. }
                | Expr::GatherLoad { access, .. }
                | Expr::Index { access }
                | Expr::Random { access, .. } => *access = convert(access),
                Expr::Const { .. }
                | Expr::RowScalar { .. }
                | Expr::Unary { .. }
                | Expr::Binary { .. }
                | Expr::Select { .. }
                | Expr::Cast { .. } => {}
            }
        }
        // passes: an expression reading slot s runs in a pass after the one computing s
        let mut level = vec![0u32; exprs.len()];
        for i in 0..exprs.len() {
            level[i] = match &exprs[i] {
                Expr::RowScalar { slot } => level[self.reductions[*slot as usize].1 as usize] + 1,
                Expr::Const { .. } | Expr::Load { .. } | Expr::Index { .. } => 0,
                Expr::GatherLoad { guards, .. } => {
                    guards.iter().map(|g| level[g.index as usize]).max().unwrap_or(0)
                }
                Expr::Random { key, .. } => level[*key as usize],
                Expr::Unary { x, .. } | Expr::Cast { x, .. } => level[*x as usize],
                Expr::Binary { a, b, .. } => level[*a as usize].max(level[*b as usize]),
                Expr::Select { cond, a, b } => {
                    level[*cond as usize].max(level[*a as usize]).max(level[*b as usize])
                }
            };
        }
        let reductions: Vec<Reduction> = self
            .reductions
            .iter()
            .map(|&(kind, value)| Reduction { kind, value, pass: level[value as usize] })
            .collect();
        let slot_pass: Vec<u32> = reductions.iter().map(|r| r.pass).collect();
        let mut stores = self.stores.clone();
        let mut passes = 1;
        for s in stores.iter_mut() {
            s.access = convert(&s.access);
            s.pass = match &s.source {
                StoreSource::Elem(v) | StoreSource::ScanSum(v) => level[*v as usize],
                StoreSource::AddIndirect { value, index, .. } => {
                    level[*value as usize].max(level[*index as usize])
                }
                StoreSource::TopK { value, .. } => level[*value as usize],
                StoreSource::Slot(slot) => slot_pass[*slot as usize],
            };
            passes = passes.max(s.pass + 1);
        }
        let kernel = LoopKernel {
            outer: groups.iter().map(|&(size, _)| size).collect(),
            inner: inner_size,
            split,
            num_buffers: self.args.len() as u32,
            exprs,
            types: self.types.clone(),
            reductions,
            stores,
            passes,
        };
        (kernel, self.args, self.nodes)
    }
}

/// The map of a reshape's argument, if the reshape of the fused value is affine: the linear
/// offset, split into the argument's mixed-radix digits, must not carry between digits.
fn reshape_map(
    map: &IndexMap,
    out_shape: &[usize],
    in_shape: &[usize],
    domain: &[usize],
) -> Option<IndexMap> {
    let cs_out = contiguous_strides(out_shape);
    let cs_in = contiguous_strides(in_shape);
    let lin = compose(map, &cs_out, domain.len());
    let mut base = vec![0i64; in_shape.len()];
    let mut rem = lin.offset;
    for k in 0..in_shape.len() {
        base[k] = rem / cs_in[k];
        rem %= cs_in[k];
    }
    let mut coef = vec![vec![0i64; domain.len()]; in_shape.len()];
    let (mut lo, mut hi) = (base.clone(), base.clone());
    for (d, &c) in lin.outer.iter().enumerate() {
        if c == 0 || domain[d] == 1 {
            continue;
        }
        let k = (0..in_shape.len()).find(|&k| in_shape[k] > 1 && cs_in[k] <= c.abs() && c % cs_in[k] == 0)?;
        let q = c / cs_in[k];
        coef[k][d] = q;
        let span = q * (domain[d] as i64 - 1);
        lo[k] += span.min(0);
        hi[k] += span.max(0);
    }
    for k in 0..in_shape.len() {
        if lo[k] < 0 || hi[k] >= in_shape[k] as i64 {
            return None;
        }
    }
    Some(IndexMap { base, coef })
}

/// Everything the kernel builders share.
pub(super) struct Builder<'a> {
    pub g: &'a Graph,
    /// Which nodes own a buffer (see `initial_materialized`); grows between build rounds.
    pub mat: Vec<bool>,
    pub node_buffer: Vec<Option<BufferId>>,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub use_counts: Vec<u32>,
    /// For each matmul output buffer, the index of the kernel that computes it.
    pub matmul_kernel: HashMap<BufferId, usize>,
    /// For each temporary buffer, the index of the first kernel that writes it.
    pub defined_at: HashMap<BufferId, usize>,
    /// Kernels as they were before an epilogue was attached to them (see `BuildState::rewind`).
    pub undo: Vec<(usize, Kernel)>,
}

impl<'a> Builder<'a> {
    /// An empty build of `g` with the materialisation `mat`.
    pub fn new(g: &'a Graph, mat: Vec<bool>) -> Builder<'a> {
        Builder {
            g,
            mat,
            node_buffer: vec![None; g.len()],
            buffers: Vec::new(),
            kernels: Vec::new(),
            use_counts: g.use_counts(),
            matmul_kernel: HashMap::new(),
            defined_at: HashMap::new(),
            undo: Vec::new(),
        }
    }
}

impl<'a> Builder<'a> {
    pub fn new_temp(&mut self, id: NodeId) -> BufferId {
        let ty = self.g.ty(id);
        self.buffers.push(Buffer { role: BufferRole::Temp, dtype: ty.dtype, elems: ty.numel(), node: id });
        BufferId(self.buffers.len() as u32 - 1)
    }

    fn loop_builder(&self, root: Option<NodeId>, domain: &[usize]) -> LoopBuilder<'_> {
        LoopBuilder::new(self.g, &self.mat, &self.node_buffer, root, domain)
    }

    fn flops_of(&self, nodes: &[NodeId]) -> u64 {
        nodes.iter().map(|&n| self.g.node_flops(n)).sum()
    }

    fn push_loop(&mut self, parts: (LoopKernel, Vec<BufferId>, Vec<NodeId>), shape: &[usize]) {
        let (body, args, nodes) = parts;
        let flops = self.flops_of(&nodes);
        self.kernels.push(Kernel { body: KernelBody::Loop(body), args, nodes, shape: shape.to_vec(), flops });
    }

    /// A kernel that fills `buf` (of `shape`) with zeros.
    fn zero_fill(&mut self, buf: BufferId, shape: &[usize], dtype: DType) {
        let mut lb = LoopBuilder::new(self.g, &self.mat, &self.node_buffer, None, shape);
        let z = lb.constant(0.0, dtype);
        let map = lb.identity(shape.len());
        lb.store(buf, shape, &map, StoreSource::Elem(z), dtype);
        let parts = lb.finish(false);
        self.push_loop(parts, shape);
    }

    /// Builds the kernel(s) computing materialised node `id` into buffer `buf`.
    pub fn build_root(&mut self, id: NodeId, buf: BufferId) -> Result<(), NeedsBuffer> {
        let g = self.g;
        let n = g.node(id);
        let shape = g.shape(id).to_vec();
        let dt = g.dtype(id);
        match &n.op {
            Op::MatMul { trans_a, trans_b } => self.build_matmul(id, buf, *trans_a, *trans_b),
            Op::Reduce { op, axes } if !axes.is_empty() => {
                let x = n.args[0];
                let xs = g.shape(x).to_vec();
                let a = axes[0] as usize;
                self.build_row_reduce(id, buf, x, &xs, a, ReduceKind::from(*op), dt)
            }
            Op::Reduce { .. }
            | Op::Input { .. }
            | Op::Param { .. }
            | Op::Const { .. }
            | Op::Iota { .. }
            | Op::RandomUniform { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Select
            | Op::Cast { .. }
            | Op::Reshape
            | Op::Permute { .. }
            | Op::Broadcast
            | Op::Slice { .. }
            | Op::Gather => self.build_elementwise(id, buf),
            Op::Pad { interior: 0, .. } => self.build_elementwise(id, buf),
            Op::ArgMax { axis } => {
                let x = n.args[0];
                let xs = g.shape(x).to_vec();
                self.build_row_reduce(id, buf, x, &xs, *axis as usize, ReduceKind::ArgMax, DType::I32)
            }
            Op::Cumsum { axis, reverse } => {
                let a = *axis as usize;
                let mut lb = self.loop_builder(Some(id), &shape);
                lb.inner_dim = Some(a);
                let mut map = lb.identity(shape.len());
                if *reverse {
                    map.base[a] = shape[a] as i64 - 1;
                    map.coef[a][a] = -1;
                }
                let v = lb.lower(n.args[0], &map)?;
                lb.nodes.push(id);
                lb.store(buf, &shape, &map, StoreSource::ScanSum(v), dt);
                let parts = lb.finish(false);
                self.push_loop(parts, &shape);
                Ok(())
            }
            Op::TopK { k } => {
                let x = n.args[0];
                let xs = g.shape(x).to_vec();
                let last = xs.len() - 1;
                let mut lb = self.loop_builder(Some(id), &xs);
                lb.inner_dim = Some(last);
                let v = lb.lower_identity(x)?;
                lb.nodes.push(id);
                let mut map = lb.identity(xs.len());
                map.zero_row(last);
                lb.store(buf, &shape, &map, StoreSource::TopK { value: v, k: *k as u32, out_stride: 1 }, dt);
                let parts = lb.finish(false);
                self.push_loop(parts, &xs);
                Ok(())
            }
            Op::Concat { axis } => {
                let a = *axis as usize;
                let first = g.shape(n.args[0]).to_vec();
                if n.args.len() > 1 && first[a] > 0 && n.args.iter().all(|&p| g.shape(p) == first.as_slice())
                {
                    // pieces of one shape (im2col's windows): one loop over a piece, one store
                    // per piece, so the windows are read and written in one pass
                    let mut lb = self.loop_builder(Some(id), &first);
                    let mut values = Vec::with_capacity(n.args.len());
                    for &piece in &n.args {
                        values.push(lb.lower_identity(piece)?);
                    }
                    lb.nodes.push(id);
                    for (k, v) in values.into_iter().enumerate() {
                        let mut map = lb.identity(first.len());
                        map.base[a] = (k * first[a]) as i64;
                        lb.store(buf, &shape, &map, StoreSource::Elem(v), dt);
                    }
                    let parts = lb.finish(false);
                    self.push_loop(parts, &first);
                    return Ok(());
                }
                let mut start = 0i64;
                for &piece in &n.args {
                    let ps = g.shape(piece).to_vec();
                    if ps[a] > 0 {
                        let mut lb = self.loop_builder(Some(id), &ps);
                        let v = lb.lower_identity(piece)?;
                        lb.nodes.push(id);
                        let mut map = lb.identity(ps.len());
                        map.base[a] = start;
                        lb.store(buf, &shape, &map, StoreSource::Elem(v), dt);
                        let parts = lb.finish(false);
                        self.push_loop(parts, &ps);
                    }
                    start += ps[a] as i64;
                }
                Ok(())
            }
            Op::Pad { axis, lo, interior, .. } => {
                let a = *axis as usize;
                let x = n.args[0];
                let xs = g.shape(x).to_vec();
                let numel_in: usize = xs.iter().product();
                if numel_in < shape.iter().product() {
                    self.zero_fill(buf, &shape, dt);
                }
                if numel_in > 0 {
                    let mut lb = self.loop_builder(Some(id), &xs);
                    let v = lb.lower_identity(x)?;
                    lb.nodes.push(id);
                    let mut map = lb.identity(xs.len());
                    map.base[a] = *lo as i64;
                    map.coef[a][a] = *interior as i64 + 1;
                    lb.store(buf, &shape, &map, StoreSource::Elem(v), dt);
                    let parts = lb.finish(false);
                    self.push_loop(parts, &xs);
                }
                Ok(())
            }
            Op::ScatterAdd { .. } => {
                let (idx, src) = (n.args[0], n.args[1]);
                self.zero_fill(buf, &shape, dt);
                let ss = g.shape(src).to_vec();
                let ir = g.shape(idx).len();
                let mut lb = self.loop_builder(Some(id), &ss);
                let full = lb.identity(ss.len());
                let index = lb.lower(
                    idx,
                    &IndexMap { base: full.base[..ir].to_vec(), coef: full.coef[..ir].to_vec() },
                )?;
                let value = lb.lower(src, &full)?;
                lb.nodes.push(id);
                let mut out_map = IndexMap { base: vec![0], coef: vec![vec![0; lb.domain.len()]] };
                out_map.base.extend_from_slice(&full.base[ir..]);
                out_map.coef.extend_from_slice(&full.coef[ir..]);
                let row_stride = contiguous_strides(&shape)[0];
                let source = StoreSource::AddIndirect { value, index, rows: shape[0] as u32, row_stride };
                lb.store(buf, &shape, &out_map, source, dt);
                let parts = lb.finish(false);
                self.push_loop(parts, &ss);
                Ok(())
            }
        }
    }

    /// An elementwise root (also views, gathers, leaves copied to an output, identity
    /// reductions): one store of the fused expression, or a matmul epilogue.
    fn build_elementwise(&mut self, id: NodeId, buf: BufferId) -> Result<(), NeedsBuffer> {
        let shape = self.g.shape(id).to_vec();
        let dt = self.g.dtype(id);
        let mut lb = self.loop_builder(Some(id), &shape);
        let v = lb.lower_identity(id)?;
        let map = lb.identity(shape.len());
        lb.store(buf, &shape, &map, StoreSource::Elem(v), dt);
        if let Some(mm) = self.epilogue_target(&lb, &shape, buf) {
            let parts = lb.finish(true);
            self.defined_at.insert(buf, mm);
            self.attach_epilogue(mm, parts);
            return Ok(());
        }
        let parts = lb.finish(false);
        self.push_loop(parts, &shape);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn build_row_reduce(
        &mut self,
        id: NodeId,
        buf: BufferId,
        x: NodeId,
        xs: &[usize],
        a: usize,
        kind: ReduceKind,
        dt: DType,
    ) -> Result<(), NeedsBuffer> {
        let shape = self.g.shape(id).to_vec();
        let mut lb = self.loop_builder(Some(id), xs);
        lb.inner_dim = Some(a);
        let v = lb.lower_identity(x)?;
        lb.nodes.push(id);
        lb.reductions.push((kind, v));
        let slot = lb.reductions.len() as u32 - 1;
        let mut map = lb.identity(xs.len());
        map.zero_row(a);
        lb.store(buf, &shape, &map, StoreSource::Slot(slot), dt);
        let parts = lb.finish(false);
        self.push_loop(parts, xs);
        Ok(())
    }

    fn build_matmul(
        &mut self,
        id: NodeId,
        buf: BufferId,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<(), NeedsBuffer> {
        let g = self.g;
        let n = g.node(id);
        let shape = g.shape(id).to_vec();
        let r = shape.len();
        let (an, bn) = (n.args[0], n.args[1]);
        let mut lb = self.loop_builder(None, &shape);
        let (pa, oa, sa) = lb.operand_view(an)?;
        let (pb, ob, sb) = lb.operand_view(bn)?;
        let pc = lb.param(buf);
        let args = lb.args.clone();
        let sc = contiguous_strides(&shape);
        let operand = |p: u32, off: i64, s: &[i64], trans: bool| {
            let (rs, cs) = if trans { (s[r - 1], s[r - 2]) } else { (s[r - 2], s[r - 1]) };
            MatOperand { buf: p, offset: off, batch: s[..r - 2].to_vec(), rs, cs }
        };
        let a_shape = g.shape(an);
        let k = if trans_a { a_shape[r - 2] } else { a_shape[r - 1] };
        let mut body = MatMulKernel {
            batch: shape[..r - 2].to_vec(),
            m: shape[r - 2],
            n: shape[r - 1],
            k,
            a: operand(pa, oa, &sa, trans_a),
            b: operand(pb, ob, &sb, trans_b),
            c: MatOperand { buf: pc, offset: 0, batch: sc[..r - 2].to_vec(), rs: sc[r - 2], cs: 1 },
            epilogue: None,
        };
        fold_batch_into_rows(&mut body);
        let flops = g.node_flops(id);
        self.matmul_kernel.insert(buf, self.kernels.len());
        self.kernels.push(Kernel {
            body: KernelBody::MatMul(Box::new(body)),
            args,
            nodes: vec![id],
            shape,
            flops,
        });
        Ok(())
    }

    /// The matmul kernel whose output this elementwise kernel can run as an epilogue: the
    /// kernel reads that output (used nowhere else) at exactly its own index, has no row
    /// reductions, and reads nothing computed after the matmul (outputs of earlier products
    /// included: a ReLU's gradient reads the next product's output and its own layer's).
    fn epilogue_target(&self, lb: &LoopBuilder<'_>, shape: &[usize], out: BufferId) -> Option<usize> {
        if !lb.reductions.is_empty() || shape.is_empty() || shape.iter().product::<usize>() == 0 {
            return None;
        }
        let contiguous = contiguous_strides(shape);
        // the latest product whose output the kernel reads (the outputs of earlier ones are
        // ordinary inputs, finished before it runs)
        let (c, k) = lb
            .exprs
            .iter()
            .filter_map(|e| match e {
                Expr::Load { buf, .. } | Expr::GatherLoad { buf, .. } => {
                    let b = lb.args[*buf as usize];
                    self.matmul_kernel.get(&b).map(|&k| (b, k))
                }
                _ => None,
            })
            .max_by_key(|&(_, k)| k)?;
        for e in &lb.exprs {
            let (Expr::Load { buf, access, .. } | Expr::GatherLoad { buf, access, .. }) = e else { continue };
            if lb.args[*buf as usize] != c {
                continue;
            }
            let node = self.buffers[c.0 as usize].node;
            // same element offsets as the output (size-1 dimensions have no stride to match)
            let at_own_index = matches!(e, Expr::Load { .. })
                && access.offset == 0
                && (0..shape.len()).all(|d| shape[d] == 1 || access.outer[d] == contiguous[d]);
            // the epilogue of rows r0..r1 may only read those rows of the matmul output
            if !at_own_index || self.use_counts[node.index()] != 1 {
                return None;
            }
        }
        let KernelBody::MatMul(mm) = &self.kernels[k].body else { return None };
        // the epilogue's rows must be the matmul's rows: same row length, same element count
        if mm.epilogue.is_some()
            || shape.last() != Some(&mm.n)
            || shape.iter().product::<usize>() != mm.rows() * mm.n
        {
            return None;
        }
        // everything else the epilogue reads must be computed before the matmul runs
        for &b in &lb.args {
            if b != c && b != out && self.defined_at.get(&b).is_some_and(|&d| d >= k) {
                return None;
            }
        }
        Some(k)
    }

    fn attach_epilogue(&mut self, k: usize, parts: (LoopKernel, Vec<BufferId>, Vec<NodeId>)) {
        let (mut epi, epi_args, epi_nodes) = parts;
        self.undo.push((k, self.kernels[k].clone()));
        let kernel = &mut self.kernels[k];
        let mut remap = Vec::new();
        for b in epi_args {
            let p = match kernel.args.iter().position(|&x| x == b) {
                Some(p) => p,
                None => {
                    kernel.args.push(b);
                    kernel.args.len() - 1
                }
            };
            remap.push(p as u32);
        }
        for e in epi.exprs.iter_mut() {
            match e {
                Expr::Load { buf, .. } | Expr::GatherLoad { buf, .. } => *buf = remap[*buf as usize],
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
        for s in epi.stores.iter_mut() {
            s.buf = remap[s.buf as usize];
        }
        epi.num_buffers = kernel.args.len() as u32;
        kernel.flops += epi_nodes.iter().map(|&n| self.g.node_flops(n)).sum::<u64>();
        kernel.nodes.extend(epi_nodes);
        if let KernelBody::MatMul(mm) = &mut kernel.body {
            mm.epilogue = Some(epi);
        }
    }
}

/// Folds trailing batch dimensions into the rows of a product where that addresses the same
/// elements: B shared by every batch entry (stride 0) and the rows of A and C running on from
/// one entry to the next. `[64, 64, 512] x [512, 128]` becomes one `4096 x 512 x 128` product,
/// which packs the shared B once instead of 64 times.
fn fold_batch_into_rows(mm: &mut MatMulKernel) {
    while let (Some(&d), Some(&ab), Some(&bb), Some(&cb)) =
        (mm.batch.last(), mm.a.batch.last(), mm.b.batch.last(), mm.c.batch.last())
    {
        let m = mm.m as i64;
        if bb != 0 || ab != m * mm.a.rs || cb != m * mm.c.rs {
            break;
        }
        mm.m *= d;
        mm.batch.pop();
        mm.a.batch.pop();
        mm.b.batch.pop();
        mm.c.batch.pop();
    }
}
