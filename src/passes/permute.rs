//! Layout of elementwise regions: computes an elementwise subgraph in the permuted layout
//! its operands or its users already have, so permutes cancel instead of costing a strided
//! read or a copy.
//!
//! A **region** is an elementwise node (the root: `Unary`, `Binary`, `Select`, `Cast`) with
//! the elementwise nodes feeding it that nothing outside the region uses; everything else
//! that feeds the region is a **leaf**. Elementwise ops commute with a permutation exactly
//! (`f(permute(a), permute(b)) == permute(f(a, b))` element for element), so the region can
//! be recomputed in any layout `d`:
//!
//! ```text
//! root'  = f'(permute_d(leaf) ...)          every node of the region on shape permuted by d
//! root   = permute_{d^-1}(root')            for the users, who then compose it with theirs
//! ```
//!
//! `permute_d` of a leaf composes with a permute the leaf already is (and vanishes when the
//! two cancel), re-creates a constant or `iota` in the new shape, and goes under a broadcast;
//! a permute that keeps the order of the non-unit axes is written as the reshape it is.
//! `permute_inv(f(permute(a), permute(b)))` thus becomes `f(a, b)` once `simplify` composes
//! the users' permutes with `permute_{d^-1}`.
//!
//! **Cost.** A read is *strided* when it goes through a permutation that reorders non-unit
//! axes of the value it reads. The cost of a layout is the number of distinct leaves read
//! strided plus the number of uses of the root that read it strided (a permute of the root,
//! an output, an update, or any other user when `d` is not the identity). The region is
//! rewritten only into a layout of strictly lower cost than its current one, so a rewritten
//! region is never rewritten back (no ping-pong); the candidate layouts are the perms of the
//! root's permute users and the inverses of the leaves' permutes.
//!
//! `RandomUniform` depends on the linear index and is a leaf (read through a view), never
//! recomputed; reductions, matmuls and the other non-elementwise ops are leaves too.

use super::rebuild::Rebuild;
use crate::ir::{Graph, NodeId, Op, TensorType};
use std::collections::{BTreeSet, HashMap};

/// Recomputes elementwise regions in the layout that removes the most strided reads.
pub fn permute(g: &Graph) -> Graph {
    let (plans, live) = plan(g);
    if plans.is_empty() {
        return g.clone();
    }
    // region node (not a root) -> its root; root -> its plan
    let mut member: HashMap<NodeId, NodeId> = HashMap::new();
    let mut by_root: HashMap<NodeId, &Plan> = HashMap::new();
    for p in &plans {
        for &n in &p.region {
            member.insert(n, p.root);
        }
        by_root.insert(p.root, p);
    }
    // Dead nodes are dropped (as DCE would): one may use a region's inner node, which has no
    // value of its own any more.
    let mut rb = Rebuild::new(g);
    for id in g.node_ids().filter(|id| live[id.index()]) {
        if let Some(p) = by_root.get(&id) {
            build_region(&mut rb, p);
        } else if !member.contains_key(&id) {
            rb.copy(id);
        }
    }
    rb.finish()
}

/// One region to recompute in layout `d`.
struct Plan {
    root: NodeId,
    /// The region's nodes in increasing id order (the root last).
    region: Vec<NodeId>,
    d: Vec<u32>,
}

fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast { .. })
}

/// The live users of every node (dead nodes use nothing), how many outputs and updates it is,
/// and which nodes are live.
fn users(g: &Graph) -> (Vec<Vec<NodeId>>, Vec<u32>, Vec<bool>) {
    let mut live = vec![false; g.len()];
    let mut external = vec![0u32; g.len()];
    for o in &g.outputs {
        live[o.node.index()] = true;
        external[o.node.index()] += 1;
    }
    for (_, n) in &g.updates {
        live[n.index()] = true;
        external[n.index()] += 1;
    }
    for i in (0..g.len()).rev() {
        if live[i] {
            for a in &g.nodes[i].args {
                live[a.index()] = true;
            }
        }
    }
    let mut users = vec![Vec::new(); g.len()];
    for id in g.node_ids().filter(|id| live[id.index()]) {
        for &a in &g.node(id).args {
            if users[a.index()].last() != Some(&id) {
                users[a.index()].push(id);
            }
        }
    }
    (users, external, live)
}

/// Chooses the regions to rewrite: roots in decreasing id order, each region as large as the
/// nodes not yet claimed allow.
fn plan(g: &Graph) -> (Vec<Plan>, Vec<bool>) {
    let (users, external, live) = users(g);
    let mut claimed = vec![false; g.len()];
    // the layout of every node of a region chosen so far
    let mut layout: HashMap<NodeId, Vec<u32>> = HashMap::new();
    let mut plans = Vec::new();
    for root in g.node_ids().collect::<Vec<_>>().into_iter().rev() {
        let unused = users[root.index()].is_empty() && external[root.index()] == 0;
        if claimed[root.index()] || unused || !is_elementwise(&g.node(root).op) {
            continue;
        }
        let region = grow(g, root, &users, &external, &claimed);
        let leaves: BTreeSet<NodeId> = region
            .iter()
            .flat_map(|&n| g.node(n).args.iter().copied())
            .filter(|a| region.binary_search(a).is_err())
            .collect();
        let rank = g.shape(root).len();
        let identity: Vec<u32> = (0..rank as u32).collect();
        let cost = |d: &[u32]| -> usize {
            let inv = inverse(d);
            let leaf_cost = leaves.iter().filter(|&&l| leaf_strided(g, l, d)).count();
            let shape = permuted(g.shape(root), d);
            let mut use_cost = external[root.index()] as usize * usize::from(!keeps_order(&shape, &inv));
            for &u in &users[root.index()] {
                // a user in a region already rewritten reads the root through that region's
                // layout; a permute user composes its perm with the root's
                let through = match (layout.get(&u), &g.node(u).op) {
                    (Some(du), _) => compose(&inv, du),
                    (None, Op::Permute { perm }) => compose(&inv, perm),
                    (None, _) => inv.clone(),
                };
                // a user that reads the root more than once still reads it once per argument
                let reads = g.node(u).args.iter().filter(|&&a| a == root).count();
                use_cost += reads * usize::from(!keeps_order(&shape, &through));
            }
            leaf_cost + use_cost
        };
        let mut candidates: Vec<Vec<u32>> = Vec::new();
        for &u in &users[root.index()] {
            if let Op::Permute { perm } = &g.node(u).op {
                candidates.push(perm.clone());
            }
        }
        for &l in &leaves {
            if let Op::Permute { perm } = &g.node(l).op {
                candidates.push(inverse(perm));
            }
        }
        let mut best = (cost(&identity), identity.clone());
        for d in candidates {
            if d == identity || d.len() != rank {
                continue;
            }
            let c = cost(&d);
            if c < best.0 {
                best = (c, d);
            }
        }
        if best.1 != identity {
            for &n in &region {
                claimed[n.index()] = true;
                layout.insert(n, best.1.clone());
            }
            plans.push(Plan { root, region, d: best.1 });
        }
    }
    (plans, live)
}

/// The region of `root`: elementwise nodes reachable through arguments whose every use is
/// inside the region (and that are neither outputs nor updates), in increasing id order.
fn grow(g: &Graph, root: NodeId, users: &[Vec<NodeId>], external: &[u32], claimed: &[bool]) -> Vec<NodeId> {
    let mut region: BTreeSet<NodeId> = BTreeSet::from([root]);
    let mut pending: BTreeSet<NodeId> = g.node(root).args.iter().copied().collect();
    // Users have larger ids than what they use, so taking the largest pending node first
    // decides every user's membership before the node itself.
    while let Some(n) = pending.pop_last() {
        let ok = !claimed[n.index()]
            && is_elementwise(&g.node(n).op)
            && external[n.index()] == 0
            && users[n.index()].iter().all(|u| region.contains(u));
        if ok {
            region.insert(n);
            pending.extend(g.node(n).args.iter().copied());
        }
    }
    region.into_iter().collect()
}

/// Whether reading old node `leaf` through `permute_d` is a strided read.
fn leaf_strided(g: &Graph, leaf: NodeId, d: &[u32]) -> bool {
    let node = g.node(leaf);
    let (src, p) = match &node.op {
        Op::Permute { perm } => (node.args[0], compose(perm, d)),
        _ => (leaf, d.to_vec()),
    };
    let src_node = g.node(src);
    match &src_node.op {
        Op::Const { .. } | Op::Iota { .. } => false,
        Op::Broadcast => !keeps_order(g.shape(src_node.args[0]), &p),
        _ => !keeps_order(g.shape(src), &p),
    }
}

/// `permute(outer)(permute(inner)(y)) == permute(compose(inner, outer))(y)`.
fn compose(inner: &[u32], outer: &[u32]) -> Vec<u32> {
    outer.iter().map(|&q| inner[q as usize]).collect()
}

fn inverse(p: &[u32]) -> Vec<u32> {
    let mut inv = vec![0u32; p.len()];
    for (i, &x) in p.iter().enumerate() {
        inv[x as usize] = i as u32;
    }
    inv
}

/// The shape of `permute(perm)` of a value of shape `shape`.
fn permuted(shape: &[usize], perm: &[u32]) -> Vec<usize> {
    perm.iter().map(|&p| shape[p as usize]).collect()
}

/// Whether `permute(perm)` of a value of shape `shape` keeps the order of its non-unit axes,
/// i.e. is a reshape (same elements in the same row-major order).
fn keeps_order(shape: &[usize], perm: &[u32]) -> bool {
    let mut last = None;
    for &p in perm {
        if shape[p as usize] != 1 {
            if last.is_some_and(|l| l > p) {
                return false;
            }
            last = Some(p);
        }
    }
    true
}

fn is_identity(perm: &[u32]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| p as usize == i)
}

/// Recomputes `p`'s region in layout `p.d` and maps its root to the inverse permute.
fn build_region(rb: &mut Rebuild<'_>, p: &Plan) {
    let g = rb.old;
    let mut local: HashMap<NodeId, NodeId> = HashMap::new();
    let mut leaves: HashMap<NodeId, NodeId> = HashMap::new();
    for &n in &p.region {
        let mut args = Vec::new();
        for &a in &g.node(n).args {
            let new = if let Some(&v) = local.get(&a) {
                v
            } else if let Some(&v) = leaves.get(&a) {
                v
            } else {
                let mapped = rb.mapped(a);
                let v = permute_new(rb, a, mapped, &p.d);
                leaves.insert(a, v);
                v
            };
            args.push(new);
        }
        let ty = g.ty(n);
        let ty = ty.with_shape(permuted(&ty.shape, &p.d));
        let v = rb.add(n, g.node(n).op.clone(), &args, ty);
        local.insert(n, v);
    }
    let root = local[&p.root];
    let back = view(rb, p.root, root, &inverse(&p.d));
    rb.set(p.root, back);
}

/// `permute_d(x)` for node `x` of the new graph (old node `origin` for span and scope):
/// composed with a permute `x` is, re-created for a constant or `iota`, pushed under a
/// broadcast.
fn permute_new(rb: &mut Rebuild<'_>, origin: NodeId, x: NodeId, d: &[u32]) -> NodeId {
    let node = rb.node(x).clone();
    let ty = rb.new.ty(x).clone();
    let new_ty = ty.with_shape(permuted(&ty.shape, d));
    match &node.op {
        Op::Const { value } => rb.add(origin, Op::Const { value: *value }, &[], new_ty),
        Op::Iota { axis } => {
            let axis = d.iter().position(|&a| a == *axis).expect("a permutation") as u32;
            rb.add(origin, Op::Iota { axis }, &[], new_ty)
        }
        Op::Permute { perm } => view(rb, origin, node.args[0], &compose(perm, d)),
        Op::Broadcast => {
            let src = permute_new(rb, origin, node.args[0], d);
            rb.add(origin, Op::Broadcast, &[src], new_ty)
        }
        _ => view(rb, origin, x, d),
    }
}

/// `permute(perm)(x)` as the cheapest node: `x` itself, a reshape, or a permute.
fn view(rb: &mut Rebuild<'_>, origin: NodeId, x: NodeId, perm: &[u32]) -> NodeId {
    if is_identity(perm) {
        return x;
    }
    let ty: TensorType = rb.new.ty(x).clone();
    let new_ty = ty.with_shape(permuted(&ty.shape, perm));
    if keeps_order(&ty.shape, perm) {
        rb.add(origin, Op::Reshape, &[x], new_ty)
    } else {
        rb.add(origin, Op::Permute { perm: perm.to_vec() }, &[x], new_ty)
    }
}
