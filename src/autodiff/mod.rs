//! Reverse-mode automatic differentiation as a graph pass (one vector-Jacobian rule per op).
//!
//! [`vjp`] appends to a graph the nodes that compute vector-Jacobian products: given seeds
//! `(output, cotangent)` and a list of `wrt` nodes, it returns one node per `wrt` entry holding
//! `sum over seeds of cotangent · d output / d wrt`, with exactly the `wrt` node's type.
//! [`grad`] is `vjp` seeded with 1.0 for a scalar loss. The backward nodes are ordinary graph
//! nodes: the passes, the scheduler and the JIT treat them like any forward node, so a training
//! step is one graph (forward, backward, optimizer updates).
//!
//! ```text
//! active[n]  n is a wrt node, or an f32 node with an active argument the op differentiates
//!            through (everything but `floor` and ops whose result is not f32)
//! reach[n]   n is a seed output or an argument of a node that reaches a seed
//! for n in (0..len).rev() where active[n] && reach[n] && n has a cotangent gy:
//!     with the span and scope of n: for each active argument a, ct[a] += rule(op, n, gy)
//! ```
//!
//! Only the part of the graph between the `wrt` nodes and the seeds is differentiated, in
//! reverse id order (the arena is topological, so every user of a node has been processed
//! before the node itself). The gradient of a value used several times is the sum of its
//! users' contributions. A `wrt` node that is not a leaf gets the total derivative through its
//! users; the pass still continues through it to earlier `wrt` nodes. A `wrt` node the seeds do
//! not depend on gets a zero constant.
//!
//! Every backward node carries the span and module scope of the forward node it
//! differentiates, so a non-finite gradient can be reported at a `.model` line.
//!
//! Rules (gy = cotangent of the result y, x / a / b the operands):
//!
//! | op | contribution |
//! |---|---|
//! | neg, add, sub | ∓gy |
//! | mul / div | `gy·b`, `gy·a` / `gy/b`, `-(gy/b)·y` |
//! | rem (`a - b·floor(a/b)`) | `gy`, `-gy·floor(a/b)` |
//! | pow | `gy·b·a^(b-1)` (0 where b = 0), `gy·y·log a` (0 where a = 0) |
//! | max / min | to the larger / smaller operand; ties split the gradient 0.5 / 0.5 |
//! | abs | `gy·sign(x)`, 0 at 0 |
//! | exp, sqrt, rsqrt, recip, tanh, sigmoid | from the forward value y: `gy·y`, `gy·0.5/y`, `-0.5·gy·y³`, `-gy·y²`, `gy(1-y²)`, `gy·y(1-y)` |
//! | log, erf, sin, cos | `gy/x`, `gy·2/√π·exp(-x²)`, `gy·cos x`, `-gy·sin x` |
//! | floor, comparisons, logic, argmax, topk, iota, random_uniform, casts to i32/bool | none (piecewise constant or not f32) |
//! | cast f32 → f32 | `gy` |
//! | select(c, a, b) | `select(c, gy, 0)`, `select(c, 0, gy)` |
//! | reduce sum | broadcast of gy |
//! | reduce max / min | gy shared evenly among the elements equal to the result |
//! | matmul | `dA = dC·Bᵀ`, `dB = Aᵀ·dC` through the `trans_a` / `trans_b` flags (no copies) |
//! | broadcast | reduce sum over the broadcast axes (kept with size 1) |
//! | reshape, permute | reshape back, inverse permutation |
//! | slice ↔ pad | pad (a step becomes interior padding) ↔ slice (interior becomes a step) |
//! | concat | a slice per operand |
//! | gather / scatter_add | scatter_add into the table's rows / gather of the source rows (out-of-range indices: zero rows, dropped) |
//! | cumsum | cumsum in the other direction |

use crate::ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, UnaryOp};
use std::fmt;

/// Why gradients could not be built: the seeds or `wrt` nodes do not fit the graph (or,
/// for a message starting with "internal error", a bug in a rule).
#[derive(Clone, Debug, PartialEq)]
pub struct AutodiffError(pub String);

impl fmt::Display for AutodiffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AutodiffError {}

fn fail<T>(msg: impl Into<String>) -> Result<T, AutodiffError> {
    Err(AutodiffError(msg.into()))
}

/// Appends to `g` the nodes computing, for each `(output, cotangent)` seed, the vector-Jacobian
/// product with respect to every node in `wrt`. Returns one node per `wrt` entry with exactly that
/// node's type (f32). A `wrt` node the seeds do not depend on gets a zero constant of its type.
///
/// Seeds on the same output are summed. Every seed output and `wrt` node must be f32, and every
/// cotangent must have its output's type.
pub fn vjp(g: &mut Graph, seeds: &[(NodeId, NodeId)], wrt: &[NodeId]) -> Result<Vec<NodeId>, AutodiffError> {
    let len = g.len();
    for &(out, cot) in seeds {
        for (what, n) in [("seed output", out), ("cotangent", cot)] {
            if n.index() >= len {
                return fail(format!("{what} {n} is not a node of graph `{}`", g.name));
            }
        }
        if g.dtype(out) != DType::F32 {
            return fail(format!(
                "cannot differentiate {out} of type {}: only f32 values have gradients",
                g.ty(out)
            ));
        }
        if g.ty(cot) != g.ty(out) {
            return fail(format!("cotangent {cot} has type {} but output {out} is {}", g.ty(cot), g.ty(out)));
        }
    }
    for &w in wrt {
        if w.index() >= len {
            return fail(format!("wrt node {w} is not a node of graph `{}`", g.name));
        }
        if g.dtype(w) != DType::F32 {
            return fail(format!(
                "cannot differentiate with respect to {w} of type {}: only f32 values have gradients",
                g.ty(w)
            ));
        }
    }

    // Forward: which nodes depend (differentiably) on a wrt node.
    let mut active = vec![false; len];
    for &w in wrt {
        active[w.index()] = true;
    }
    for i in 0..len {
        let node = g.node(NodeId(i as u32));
        if !active[i]
            && g.types.get(node.ty).dtype == DType::F32
            && !matches!(node.op, Op::Unary(UnaryOp::Floor))
            && node.args.iter().any(|a| active[a.index()])
        {
            active[i] = true;
        }
    }
    // Backward: which nodes a seed depends on.
    let mut reach = vec![false; len];
    for &(out, _) in seeds {
        reach[out.index()] = true;
    }
    for i in (0..len).rev() {
        if reach[i] && active[i] {
            for a in g.node(NodeId(i as u32)).args.clone() {
                reach[a.index()] = true;
            }
        }
    }

    let saved = (g.current_span, g.current_scope);
    let result = backward(g, seeds, wrt, &active, &reach);
    (g.current_span, g.current_scope) = saved;
    result
}

/// `vjp` seeded with 1.0 for the f32 scalar (numel 1, any rank) `loss`.
pub fn grad(g: &mut Graph, loss: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>, AutodiffError> {
    if loss.index() >= g.len() {
        return fail(format!("loss {loss} is not a node of graph `{}`", g.name));
    }
    let ty = g.ty(loss).clone();
    if ty.dtype != DType::F32 || ty.numel() != 1 {
        return fail(format!("the loss must be an f32 scalar, but {loss} is {ty}"));
    }
    let saved = (g.current_span, g.current_scope);
    g.current_span = g.spans[loss.index()];
    g.current_scope = g.node_scopes[loss.index()];
    let one = g.constant(1.0, ty);
    (g.current_span, g.current_scope) = saved;
    vjp(g, &[(loss, one)], wrt)
}

fn backward(
    g: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    wrt: &[NodeId],
    active: &[bool],
    reach: &[bool],
) -> Result<Vec<NodeId>, AutodiffError> {
    let len = active.len();
    let mut ct: Vec<Option<NodeId>> = vec![None; len];
    for &(out, cot) in seeds {
        if active[out.index()] {
            enter(g, out);
            accumulate(g, &mut ct, out, cot)?;
        }
    }
    for i in (0..len).rev() {
        if !(active[i] && reach[i]) {
            continue;
        }
        let Some(gy) = ct[i] else { continue };
        let n = NodeId(i as u32);
        enter(g, n);
        for (a, d) in rule(g, n, gy, active)? {
            accumulate(g, &mut ct, a, d)?;
        }
    }
    let mut out = Vec::with_capacity(wrt.len());
    for &w in wrt {
        match ct[w.index()] {
            Some(d) => out.push(d),
            None => {
                enter(g, w);
                let ty = g.ty(w).clone();
                out.push(g.constant(0.0, ty));
            }
        }
    }
    Ok(out)
}

/// Gives the nodes added next the span and scope of forward node `n`.
fn enter(g: &mut Graph, n: NodeId) {
    g.current_span = g.spans[n.index()];
    g.current_scope = g.node_scopes[n.index()];
}

fn accumulate(g: &mut Graph, ct: &mut [Option<NodeId>], a: NodeId, d: NodeId) -> Result<(), AutodiffError> {
    if g.ty(d) != g.ty(a) {
        return fail(format!(
            "internal error: the gradient {d} of {a} has type {} instead of {} (`{}`)",
            g.ty(d),
            g.ty(a),
            g.node(a).op
        ));
    }
    ct[a.index()] = Some(match ct[a.index()] {
        None => d,
        Some(prev) => g.binary(BinaryOp::Add, prev, d),
    });
    Ok(())
}

/// A splat constant with the type of `like`.
fn splat(g: &mut Graph, value: f64, like: NodeId) -> NodeId {
    let ty = g.ty(like).clone();
    g.constant(value, ty)
}

fn mul(g: &mut Graph, a: NodeId, b: NodeId) -> NodeId {
    g.binary(BinaryOp::Mul, a, b)
}

fn mul_c(g: &mut Graph, a: NodeId, c: f64) -> NodeId {
    let c = splat(g, c, a);
    mul(g, a, c)
}

fn neg(g: &mut Graph, a: NodeId) -> NodeId {
    g.unary(UnaryOp::Neg, a)
}

fn select(g: &mut Graph, c: NodeId, a: NodeId, b: NodeId) -> NodeId {
    g.add(Op::Select, &[c, a, b], None)
}

/// `x` broadcast to `shape` (same rank, size-1 axes expanded).
fn broadcast(g: &mut Graph, x: NodeId, shape: &[usize]) -> Result<NodeId, AutodiffError> {
    g.broadcast_to(x, shape).map_err(|e| AutodiffError(format!("internal error: {e}")))
}

/// `gy · w` for operand 0 and `gy · (1 - w)` for operand 1 of a binary max/min, where `w` is 1
/// where operand 0 wins (`first_wins`), 0.5 at ties and 0 otherwise.
fn winner_split(
    g: &mut Graph,
    first_wins: BinaryOp,
    a: NodeId,
    b: NodeId,
    gy: NodeId,
    want: [bool; 2],
) -> Vec<(usize, NodeId)> {
    let wins = g.binary(first_wins, a, b);
    let tie = g.binary(BinaryOp::Eq, a, b);
    let (one, half, zero) = (splat(g, 1.0, gy), splat(g, 0.5, gy), splat(g, 0.0, gy));
    let tie_w = select(g, tie, half, zero);
    let w = select(g, wins, one, tie_w);
    let ga = mul(g, gy, w);
    let mut out = Vec::new();
    if want[0] {
        out.push((0, ga));
    }
    if want[1] {
        out.push((1, g.binary(BinaryOp::Sub, gy, ga)));
    }
    out
}

/// The contributions `(argument position, gradient)` of node `n` with cotangent `gy` to its
/// active arguments. Exhaustive over ops: no catch-all arm.
fn rule(
    g: &mut Graph,
    n: NodeId,
    gy: NodeId,
    active: &[bool],
) -> Result<Vec<(NodeId, NodeId)>, AutodiffError> {
    let node = g.node(n).clone();
    let args = node.args.clone();
    let want: Vec<bool> = args.iter().map(|a| active[a.index()]).collect();
    let x = args.first().copied().unwrap_or(n);
    let mut out: Vec<(usize, NodeId)> = Vec::new();
    match &node.op {
        Op::Input { .. }
        | Op::Param { .. }
        | Op::Const { .. }
        | Op::Iota { .. }
        | Op::RandomUniform { .. } => {}
        Op::Unary(u) => {
            if want[0] {
                let d = match u {
                    UnaryOp::Neg => Some(neg(g, gy)),
                    UnaryOp::Abs => {
                        let zero = splat(g, 0.0, x);
                        let pos = g.binary(BinaryOp::Gt, x, zero);
                        let negative = g.binary(BinaryOp::Lt, x, zero);
                        let ngy = neg(g, gy);
                        let inner = select(g, negative, ngy, zero);
                        Some(select(g, pos, gy, inner))
                    }
                    UnaryOp::Exp => Some(mul(g, gy, n)),
                    UnaryOp::Log => Some(g.binary(BinaryOp::Div, gy, x)),
                    UnaryOp::Sqrt => {
                        let h = mul_c(g, gy, 0.5);
                        Some(g.binary(BinaryOp::Div, h, n))
                    }
                    UnaryOp::Rsqrt => {
                        // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
                        let y2 = mul(g, n, n);
                        let y3 = mul(g, y2, n);
                        let t = mul(g, gy, y3);
                        Some(mul_c(g, t, -0.5))
                    }
                    UnaryOp::Recip => {
                        let y2 = mul(g, n, n);
                        let t = mul(g, gy, y2);
                        Some(neg(g, t))
                    }
                    UnaryOp::Tanh => {
                        let y2 = mul(g, n, n);
                        let one = splat(g, 1.0, n);
                        let d = g.binary(BinaryOp::Sub, one, y2);
                        Some(mul(g, gy, d))
                    }
                    UnaryOp::Sigmoid => {
                        let one = splat(g, 1.0, n);
                        let om = g.binary(BinaryOp::Sub, one, n);
                        let d = mul(g, n, om);
                        Some(mul(g, gy, d))
                    }
                    UnaryOp::Erf => {
                        let x2 = mul(g, x, x);
                        let nx2 = neg(g, x2);
                        let e = g.unary(UnaryOp::Exp, nx2);
                        let d = mul_c(g, e, std::f64::consts::FRAC_2_SQRT_PI);
                        Some(mul(g, gy, d))
                    }
                    UnaryOp::Sin => {
                        let c = g.unary(UnaryOp::Cos, x);
                        Some(mul(g, gy, c))
                    }
                    UnaryOp::Cos => {
                        let s = g.unary(UnaryOp::Sin, x);
                        let t = mul(g, gy, s);
                        Some(neg(g, t))
                    }
                    // Piecewise constant / not a float: no gradient.
                    UnaryOp::Floor | UnaryOp::Not => None,
                };
                out.extend(d.map(|d| (0, d)));
            }
        }
        Op::Binary(b) => {
            let (a, bb) = (args[0], args[1]);
            match b {
                BinaryOp::Add => {
                    if want[0] {
                        out.push((0, gy));
                    }
                    if want[1] {
                        out.push((1, gy));
                    }
                }
                BinaryOp::Sub => {
                    if want[0] {
                        out.push((0, gy));
                    }
                    if want[1] {
                        out.push((1, neg(g, gy)));
                    }
                }
                BinaryOp::Mul => {
                    if want[0] {
                        out.push((0, mul(g, gy, bb)));
                    }
                    if want[1] {
                        out.push((1, mul(g, gy, a)));
                    }
                }
                BinaryOp::Div => {
                    // y = a / b: dy/da = 1/b, dy/db = -a/b^2 = -(1/b) y.
                    let ga = g.binary(BinaryOp::Div, gy, bb);
                    if want[0] {
                        out.push((0, ga));
                    }
                    if want[1] {
                        let t = mul(g, ga, n);
                        out.push((1, neg(g, t)));
                    }
                }
                BinaryOp::Rem => {
                    // a rem b = a - b * floor(a / b) (sign of the divisor).
                    if want[0] {
                        out.push((0, gy));
                    }
                    if want[1] {
                        let q = g.binary(BinaryOp::Div, a, bb);
                        let fq = g.unary(UnaryOp::Floor, q);
                        let t = mul(g, gy, fq);
                        out.push((1, neg(g, t)));
                    }
                }
                BinaryOp::Pow => {
                    let zero = splat(g, 0.0, n);
                    if want[0] {
                        // b * a^(b-1); exactly 0 where b == 0 (a^0 is constant), so 0^0 does
                        // not give 0 * inf.
                        let one = splat(g, 1.0, n);
                        let bm1 = g.binary(BinaryOp::Sub, bb, one);
                        let p = g.binary(BinaryOp::Pow, a, bm1);
                        let d = mul(g, bb, p);
                        let t = mul(g, gy, d);
                        let b0 = g.binary(BinaryOp::Eq, bb, zero);
                        out.push((0, select(g, b0, zero, t)));
                    }
                    if want[1] {
                        // y * log(a); 0 where a == 0 (0^b is constant for b > 0). Negative
                        // bases give NaN: a^b is not real-valued around them.
                        let l = g.unary(UnaryOp::Log, a);
                        let d = mul(g, n, l);
                        let t = mul(g, gy, d);
                        let a0 = g.binary(BinaryOp::Eq, a, zero);
                        out.push((1, select(g, a0, zero, t)));
                    }
                }
                BinaryOp::Max => {
                    out = winner_split(g, BinaryOp::Gt, a, bb, gy, [want[0], want[1]]);
                }
                BinaryOp::Min => {
                    out = winner_split(g, BinaryOp::Lt, a, bb, gy, [want[0], want[1]]);
                }
                // Bool results: never active.
                BinaryOp::Eq
                | BinaryOp::Ne
                | BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge
                | BinaryOp::And
                | BinaryOp::Or => {}
            }
        }
        Op::Select => {
            let c = args[0];
            if want[1] || want[2] {
                let zero = splat(g, 0.0, gy);
                if want[1] {
                    out.push((1, select(g, c, gy, zero)));
                }
                if want[2] {
                    out.push((2, select(g, c, zero, gy)));
                }
            }
        }
        Op::Cast { to } => {
            // Only f32 -> f32 (the identity) has an active operand and an f32 result.
            if want[0] && *to == DType::F32 {
                out.push((0, gy));
            }
        }
        Op::Reduce { op, axes } => {
            if want[0] {
                let xs = g.shape(x).to_vec();
                match op {
                    ReduceOp::Sum => out.push((0, broadcast(g, gy, &xs)?)),
                    ReduceOp::Max | ReduceOp::Min => {
                        // Evenly among the elements equal to the result.
                        let yb = broadcast(g, n, &xs)?;
                        let mask = g.binary(BinaryOp::Eq, x, yb);
                        let m = g.cast(mask, DType::F32);
                        let count = g.reduce(ReduceOp::Sum, m, axes.clone());
                        let share = g.binary(BinaryOp::Div, gy, count);
                        let shareb = broadcast(g, share, &xs)?;
                        let zero = splat(g, 0.0, x);
                        out.push((0, select(g, mask, shareb, zero)));
                    }
                }
            }
        }
        Op::ArgMax { .. } | Op::TopK { .. } => {}
        Op::MatMul { trans_a, trans_b } => {
            let (a, b) = (args[0], args[1]);
            let mm = |g: &mut Graph, p: NodeId, q: NodeId, ta: bool, tb: bool| {
                g.add(Op::MatMul { trans_a: ta, trans_b: tb }, &[p, q], None)
            };
            if want[0] {
                let d = match (trans_a, trans_b) {
                    (false, false) => mm(g, gy, b, false, true), // dC B^T
                    (true, false) => mm(g, b, gy, false, true),  // B dC^T
                    (false, true) => mm(g, gy, b, false, false), // dC B
                    (true, true) => mm(g, b, gy, true, true),    // B^T dC^T
                };
                out.push((0, d));
            }
            if want[1] {
                let d = match (trans_a, trans_b) {
                    (false, false) => mm(g, a, gy, true, false), // A^T dC
                    (true, false) => mm(g, a, gy, false, false), // A dC
                    (false, true) => mm(g, gy, a, true, false),  // dC^T A
                    (true, true) => mm(g, gy, a, true, true),    // dC^T A^T
                };
                out.push((1, d));
            }
        }
        Op::Reshape => {
            if want[0] {
                let xs = g.shape(x).to_vec();
                out.push((0, g.reshape(gy, xs)));
            }
        }
        Op::Permute { perm } => {
            if want[0] {
                let mut inv = vec![0u32; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p as usize] = i as u32;
                }
                let d = if inv.iter().enumerate().all(|(i, &p)| p as usize == i) {
                    gy
                } else {
                    g.add(Op::Permute { perm: inv }, &[gy], None)
                };
                out.push((0, d));
            }
        }
        Op::Broadcast => {
            if want[0] {
                let xs = g.shape(x).to_vec();
                let ys = g.shape(n).to_vec();
                let axes: Vec<u32> = (0..xs.len()).filter(|&i| xs[i] != ys[i]).map(|i| i as u32).collect();
                let d = if axes.is_empty() { gy } else { g.reduce(ReduceOp::Sum, gy, axes) };
                out.push((0, g.reshape(d, xs)));
            }
        }
        Op::Slice { axis, start, end: _, step } => {
            if want[0] {
                let ax = *axis as usize;
                let size = g.shape(x)[ax];
                let m = g.shape(n)[ax];
                let d = if m == 0 {
                    splat(g, 0.0, x)
                } else {
                    let last = start + (m - 1) * step;
                    g.add(
                        Op::Pad { axis: *axis, lo: *start, hi: size - last - 1, interior: step - 1 },
                        &[gy],
                        None,
                    )
                };
                out.push((0, d));
            }
        }
        Op::Pad { axis, lo, hi: _, interior } => {
            if want[0] {
                let ax = *axis as usize;
                let size = g.shape(x)[ax];
                let d = if size == 0 {
                    splat(g, 0.0, x)
                } else {
                    let step = interior + 1;
                    let end = lo + (size - 1) * step + 1;
                    g.add(Op::Slice { axis: *axis, start: *lo, end, step }, &[gy], None)
                };
                out.push((0, d));
            }
        }
        Op::Concat { axis } => {
            let ax = *axis as usize;
            let mut offset = 0;
            for (i, &a) in args.iter().enumerate() {
                let size = g.shape(a)[ax];
                if want[i] {
                    let d = if args.len() == 1 {
                        gy
                    } else {
                        g.add(
                            Op::Slice { axis: *axis, start: offset, end: offset + size, step: 1 },
                            &[gy],
                            None,
                        )
                    };
                    out.push((i, d));
                }
                offset += size;
            }
        }
        Op::Gather => {
            if want[0] {
                let rows = g.shape(args[0])[0];
                out.push((0, g.add(Op::ScatterAdd { rows }, &[args[1], gy], None)));
            }
        }
        Op::ScatterAdd { .. } => {
            if want[1] {
                out.push((1, g.add(Op::Gather, &[gy, args[0]], None)));
            }
        }
        Op::Cumsum { axis, reverse } => {
            if want[0] {
                out.push((0, g.add(Op::Cumsum { axis: *axis, reverse: !reverse }, &[gy], None)));
            }
        }
    }
    Ok(out.into_iter().map(|(i, d)| (args[i], d)).collect())
}
