//! Merges elementwise loop kernels that run over the same domain into one kernel, so a chain
//! such as an optimizer update (new moments, their finiteness guards, the new parameter) makes
//! one pass over memory instead of one per value.
//!
//! The builder makes one kernel per materialised node; a node is materialised when several
//! kernels read it, so e.g. Adam's new first moment (read by the moment's guarded update and
//! by the parameter update) gets a kernel and a buffer of its own. Here a later kernel `B` joins
//! an earlier kernel `G` when:
//! - both are plain elementwise loops (one pass, no reductions, element stores with unit inner
//!   stride, loads with unit or zero inner stride, no gathers) over the same rows, inner length
//!   and thread split, so any thread's range covers the same elements in both;
//! - every buffer `B` reads that `G` writes is written by exactly one store of `G`, at exactly
//!   the access and dtype `B` reads it with: `B` then uses `G`'s value instead of loading it;
//! - they share memory traffic: `B` takes a value from `G` (above) or both stream the same
//!   buffer. Unrelated loops of one length (the optimizer updates of every bias) stay apart:
//!   merged they save no pass but make one long kernel per combination, which compiles slowly
//!   (Cranelift's register allocation grows faster than the code); apart they are the same
//!   kernel and compile once;
//! - `B` writes nothing `G` reads or writes;
//! - `B` can move up to `G`: no kernel between them writes a buffer `B` reads, or reads or
//!   writes a buffer `B` writes.
//!
//! Afterwards, a store to a temporary that no other kernel reads and that is not a result is
//! dropped (its value lives in a register only), and unused buffer parameters are removed.

use super::{Buffer, BufferId, BufferRole};
use super::{Expr, ExprId, Kernel, KernelBody, LoopKernel, StoreSource};
use std::collections::HashSet;

/// Whether a loop kernel is plain elementwise work that may be merged.
fn mergeable(l: &LoopKernel) -> bool {
    l.passes == 1
        && l.reductions.is_empty()
        && l.split != super::Split::Serial
        && l.stores.iter().all(|s| matches!(s.source, StoreSource::Elem(_)) && s.access.inner == 1)
        && l.exprs.iter().all(|e| match e {
            Expr::Load { access, .. } => access.inner == 0 || access.inner == 1,
            Expr::GatherLoad { .. } | Expr::RowScalar { .. } => false,
            Expr::Const { .. }
            | Expr::Index { .. }
            | Expr::Random { .. }
            | Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Cast { .. } => true,
        })
}

type ReadsWrites = (HashSet<BufferId>, HashSet<BufferId>);

/// Buffers a kernel reads and writes (including a matmul's operands and epilogue).
fn reads_writes(k: &Kernel) -> ReadsWrites {
    let mut r = HashSet::new();
    let mut w = HashSet::new();
    let loop_rw = |l: &LoopKernel, r: &mut HashSet<BufferId>, w: &mut HashSet<BufferId>| {
        for e in &l.exprs {
            if let Expr::Load { buf, .. } | Expr::GatherLoad { buf, .. } = e {
                r.insert(k.args[*buf as usize]);
            }
        }
        for s in &l.stores {
            w.insert(k.args[s.buf as usize]);
            if matches!(s.source, StoreSource::AddIndirect { .. }) {
                r.insert(k.args[s.buf as usize]);
            }
        }
    };
    match &k.body {
        KernelBody::Loop(l) => loop_rw(l, &mut r, &mut w),
        KernelBody::MatMul(m) => {
            r.insert(k.args[m.a.buf as usize]);
            r.insert(k.args[m.b.buf as usize]);
            w.insert(k.args[m.c.buf as usize]);
            if let Some(e) = &m.epilogue {
                loop_rw(e, &mut r, &mut w);
            }
        }
    }
    (r, w)
}

/// Appends kernel `b` to group kernel `g` if the rules in the module docs allow it (the
/// "can move up" rule is checked by the caller). Returns whether it did.
/// `g_rw` is what `g` reads and writes, `b_writes` what `b` writes.
fn try_merge(g: &mut Kernel, g_rw: &ReadsWrites, b: &Kernel, b_writes: &HashSet<BufferId>) -> bool {
    let (KernelBody::Loop(gl), KernelBody::Loop(bl)) = (&g.body, &b.body) else { return false };
    if gl.outer != bl.outer
        || gl.inner != bl.inner
        || gl.split != bl.split
        || !mergeable(gl)
        || !mergeable(bl)
    {
        return false;
    }
    let (g_reads, g_writes) = g_rw;
    if b_writes.iter().any(|x| g_reads.contains(x) || g_writes.contains(x)) {
        return false;
    }
    // how each of b's loads of a buffer g writes is forwarded
    let mut forward: Vec<Option<ExprId>> = vec![None; bl.exprs.len()];
    for (i, e) in bl.exprs.iter().enumerate() {
        let Expr::Load { buf, dtype, access } = e else { continue };
        let x = b.args[*buf as usize];
        if !g_writes.contains(&x) {
            continue;
        }
        let stores: Vec<_> = gl.stores.iter().filter(|s| g.args[s.buf as usize] == x).collect();
        let [s] = stores[..] else { return false };
        let StoreSource::Elem(v) = s.source else { return false };
        if s.access != *access || s.dtype != *dtype || gl.types[v as usize] != *dtype {
            return false;
        }
        forward[i] = Some(v);
    }
    // shared memory traffic (module docs): a value forwarded from g, or a buffer both stream
    let streamed = |l: &LoopKernel, args: &[BufferId]| -> HashSet<BufferId> {
        l.exprs
            .iter()
            .filter_map(|e| match e {
                Expr::Load { buf, access, .. } if access.inner == 1 => Some(args[*buf as usize]),
                _ => None,
            })
            .collect()
    };
    if forward.iter().all(Option::is_none) && streamed(bl, &b.args).is_disjoint(&streamed(gl, &g.args)) {
        return false;
    }
    // merge: buffers, expressions (remapped), stores
    let mut g_new = g.clone();
    let KernelBody::Loop(gl) = &mut g_new.body else { unreachable!("checked above") };
    let mut pos = Vec::with_capacity(b.args.len());
    for &x in &b.args {
        let p = match g_new.args.iter().position(|&y| y == x) {
            Some(p) => p,
            None => {
                g_new.args.push(x);
                g_new.args.len() - 1
            }
        };
        pos.push(p as u32);
    }
    gl.num_buffers = g_new.args.len() as u32;
    let mut id = vec![0 as ExprId; bl.exprs.len()];
    for (i, e) in bl.exprs.iter().enumerate() {
        if let Some(v) = forward[i] {
            id[i] = v;
            continue;
        }
        let m = |x: &ExprId| id[*x as usize];
        let e2 = match e {
            Expr::Load { buf, dtype, access } => {
                Expr::Load { buf: pos[*buf as usize], dtype: *dtype, access: access.clone() }
            }
            Expr::Random { key, stream, access } => {
                Expr::Random { key: m(key), stream: *stream, access: access.clone() }
            }
            Expr::Unary { op, x } => Expr::Unary { op: *op, x: m(x) },
            Expr::Binary { op, a, b } => Expr::Binary { op: *op, a: m(a), b: m(b) },
            Expr::Select { cond, a, b } => Expr::Select { cond: m(cond), a: m(a), b: m(b) },
            Expr::Cast { to, x } => Expr::Cast { to: *to, x: m(x) },
            Expr::Const { .. } | Expr::Index { .. } => e.clone(),
            Expr::GatherLoad { .. } | Expr::RowScalar { .. } => unreachable!("not mergeable"),
        };
        // reuse an identical expression of the group (same constants, same loads)
        id[i] = match gl.exprs.iter().position(|x| *x == e2) {
            Some(p) if gl.types[p] == bl.types[i] => p as ExprId,
            _ => {
                gl.exprs.push(e2);
                gl.types.push(bl.types[i]);
                gl.exprs.len() as ExprId - 1
            }
        };
    }
    for s in &bl.stores {
        let mut s2 = s.clone();
        s2.buf = pos[s.buf as usize];
        let StoreSource::Elem(v) = s.source else { unreachable!("not mergeable") };
        s2.source = StoreSource::Elem(id[v as usize]);
        gl.stores.push(s2);
    }
    g_new.nodes.extend(b.nodes.iter().copied());
    g_new.flops += b.flops;
    *g = g_new;
    true
}

/// Merges kernels in place (see the module docs). `results` are the buffers whose contents
/// matter after the run (outputs and parameter updates).
pub(super) fn merge_elementwise(kernels: &mut Vec<Kernel>, buffers: &[Buffer], results: &[BufferId]) {
    // A kernel joins the nearest group it shares traffic with; groups formed that way may now
    // share traffic with each other (Adam's guarded first moment and the parameter update that
    // took in the guarded second moment both read the new first moment), so repeat until
    // nothing merges.
    loop {
        let before = kernels.len();
        merge_pass(kernels);
        if kernels.len() == before {
            break;
        }
    }
    drop_dead_stores(kernels, buffers, results);
}

/// One walk over the kernels, each joining the nearest earlier group it may join.
fn merge_pass(kernels: &mut Vec<Kernel>) {
    let rw: Vec<ReadsWrites> = kernels.iter().map(reads_writes).collect();
    let mut out: Vec<Kernel> = Vec::with_capacity(kernels.len());
    let mut out_rw: Vec<ReadsWrites> = Vec::with_capacity(kernels.len());
    'next: for (k, (br, bw)) in kernels.drain(..).zip(rw) {
        // walk back over the kernels `k` can move above, looking for a group to join
        for p in (0..out.len()).rev() {
            if try_merge(&mut out[p], &out_rw[p], &k, &bw) {
                out_rw[p].0.extend(br);
                out_rw[p].1.extend(bw);
                continue 'next;
            }
            let (pr, pw) = &out_rw[p];
            if br.iter().any(|x| pw.contains(x)) || bw.iter().any(|x| pr.contains(x) || pw.contains(x)) {
                break;
            }
        }
        out.push(k);
        out_rw.push((br, bw));
    }
    *kernels = out;
}

/// Drops stores to temporaries that only their own kernel touches and that are not results,
/// then unused buffer parameters.
fn drop_dead_stores(kernels: &mut [Kernel], buffers: &[Buffer], results: &[BufferId]) {
    let mut users = vec![0u32; buffers.len()];
    for k in kernels.iter() {
        let mut seen = HashSet::new();
        for &a in &k.args {
            if seen.insert(a) {
                users[a.0 as usize] += 1;
            }
        }
    }
    for k in kernels.iter_mut() {
        let KernelBody::Loop(l) = &mut k.body else { continue };
        if !mergeable(l) {
            continue;
        }
        let args = &k.args;
        let dead = |buf: u32| {
            let x = args[buf as usize];
            buffers[x.0 as usize].role == BufferRole::Temp
                && users[x.0 as usize] == 1
                && !results.contains(&x)
        };
        // a load of the stored buffer in the same kernel would read the stored value
        let loaded: HashSet<u32> = l
            .exprs
            .iter()
            .filter_map(|e| if let Expr::Load { buf, .. } = e { Some(*buf) } else { None })
            .collect();
        let before = l.stores.len();
        l.stores.retain(|s| loaded.contains(&s.buf) || !dead(s.buf));
        if l.stores.len() == before {
            continue;
        }
        // keep only the buffer parameters still referenced, in order
        let mut used = vec![false; k.args.len()];
        for e in &l.exprs {
            if let Expr::Load { buf, .. } = e {
                used[*buf as usize] = true;
            }
        }
        for s in &l.stores {
            used[s.buf as usize] = true;
        }
        let mut new_pos = vec![u32::MAX; k.args.len()];
        let mut args = Vec::new();
        for (i, &a) in k.args.iter().enumerate() {
            if used[i] {
                new_pos[i] = args.len() as u32;
                args.push(a);
            }
        }
        // expressions that only fed dropped stores stay: codegen evaluates only what the
        // remaining stores need, but their loads must still name a valid parameter
        for e in l.exprs.iter_mut() {
            if let Expr::Load { buf, .. } = e {
                *buf = new_pos[*buf as usize];
            }
        }
        for s in l.stores.iter_mut() {
            s.buf = new_pos[s.buf as usize];
        }
        l.num_buffers = args.len() as u32;
        k.args = args;
    }
}
