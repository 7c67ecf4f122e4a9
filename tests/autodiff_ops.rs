//! Autodiff rule by rule: every op (each unary, binary and reduce op, each flag and axis
//! variant of the others) in a small graph with awkward shapes (sizes 1, 3, 5, 17), loss =
//! `sum(output * cotangent)` with a fixed random cotangent input, gradient with respect to every
//! f32 input against central finite differences in f64 on the reference interpreter (every
//! coordinate; tolerance in `autodiff_support`), then the gradient graph through the JIT
//! against the interpreter. Data are random with a fixed seed per case (from the case name), so
//! a failure reproduces; inputs are drawn away from kinks (abs at 0, max ties, floor steps,
//! rem jumps) and outside domains (log, sqrt of positive values, no division by near-zero).

mod autodiff_support;
mod jit_support;

use autodiff_support::{GradCase, Leaf, check_fd, check_jit, f32_tensor, grad_case, i32_tensor, uniform};
use modelc::autodiff::{AutodiffError, grad, vjp};
use modelc::interp;
use modelc::ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, ScopeId, TensorType, UnaryOp};
use modelc::source::{FileId, Span};
use modelc::tensor::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How an input's values are drawn.
#[derive(Clone, Debug)]
enum D {
    /// Uniform in `[lo, hi)`.
    U(f32, f32),
    /// Magnitude uniform in `[lo, hi)`, random sign (away from 0).
    Away(f32, f32),
    /// An integer in -3..3 plus a fraction in [0.1, 0.9) (away from floor steps).
    Frac,
    /// Exactly these i32 values.
    Ints(Vec<i32>),
    /// Random bools.
    Bool,
}

fn f(shape: &[usize]) -> TensorType {
    TensorType::f32(shape.to_vec())
}

fn int(shape: &[usize]) -> TensorType {
    TensorType::new(DType::I32, shape.to_vec())
}

fn boolean(shape: &[usize]) -> TensorType {
    TensorType::new(DType::Bool, shape.to_vec())
}

type Build = Box<dyn Fn(&mut Graph, &[NodeId]) -> NodeId>;

struct Case {
    name: String,
    inputs: Vec<(TensorType, D)>,
    build: Build,
}

fn case(name: impl Into<String>, inputs: Vec<(TensorType, D)>, build: Build) -> Case {
    Case { name: name.into(), inputs, build }
}

fn draw(ty: &TensorType, d: &D, rng: &mut ChaCha8Rng) -> Tensor {
    let n = ty.numel();
    match d {
        D::U(lo, hi) => uniform(ty, *lo, *hi, rng),
        D::Away(lo, hi) => f32_tensor(
            &ty.shape,
            (0..n)
                .map(|_| {
                    let m = rng.random_range(*lo..*hi);
                    if rng.random_bool(0.5) { m } else { -m }
                })
                .collect(),
        ),
        D::Frac => f32_tensor(
            &ty.shape,
            (0..n).map(|_| rng.random_range(-3..3) as f32 + rng.random_range(0.1f32..0.9)).collect(),
        ),
        D::Ints(v) => {
            assert_eq!(v.len(), n);
            i32_tensor(&ty.shape, v.clone())
        }
        D::Bool => i32_tensor(&ty.shape, (0..n).map(|_| rng.random_range(0..2)).collect()),
    }
}

fn seeded(name: &str) -> ChaCha8Rng {
    jit_support::rng_for(name, 0)
}

/// Builds the case's graph (each node with its own span and scope), its gradient graph, and
/// checks both against finite differences and the JIT.
fn run_case(c: &Case) -> (f64, f64) {
    let mut g = Graph::new(c.name.clone());
    let xs: Vec<NodeId> = c
        .inputs
        .iter()
        .enumerate()
        .map(|(i, (ty, _))| g.add_input(&format!("x{i}"), ty.clone(), None))
        .collect();
    let y = (c.build)(&mut g, &xs);
    label_nodes(&mut g);
    let wrt: Vec<Leaf> = c
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, (ty, _))| ty.dtype == DType::F32)
        .map(|(i, _)| Leaf::Input(i))
        .collect();
    let gc: GradCase = grad_case(&c.name, g, &[y], wrt);
    let mut rng = seeded(&c.name);
    let mut inputs: Vec<Tensor> = c.inputs.iter().map(|(ty, d)| draw(ty, d, &mut rng)).collect();
    for extra in &gc.full.inputs[c.inputs.len()..] {
        inputs.push(uniform(&extra.ty, -1.0, 1.0, &mut rng));
    }
    let (fd_err, _) = check_fd(&gc, &inputs, &[], None, &mut rng);
    let jit_err = check_jit(&gc, &inputs, &[]);
    (fd_err, jit_err)
}

/// Gives every node so far a distinct span and scope.
fn label_nodes(g: &mut Graph) {
    for i in 0..g.len() {
        g.spans[i] = Some(Span::new(FileId(0), 10 * i, 10 * i + 5));
        g.node_scopes[i] = g.scope(&format!("node{i}"));
    }
    g.current_span = None;
    g.current_scope = ScopeId(0);
}

fn un(g: &mut Graph, op: UnaryOp, x: NodeId) -> NodeId {
    g.unary(op, x)
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    // Unary ops, with their domains.
    let unary: [(UnaryOp, D); 13] = [
        (UnaryOp::Neg, D::U(-2.0, 2.0)),
        (UnaryOp::Abs, D::Away(0.1, 2.0)),
        (UnaryOp::Exp, D::U(-2.0, 2.0)),
        (UnaryOp::Log, D::U(0.2, 3.0)),
        (UnaryOp::Sqrt, D::U(0.2, 3.0)),
        (UnaryOp::Rsqrt, D::U(0.2, 3.0)),
        (UnaryOp::Recip, D::Away(0.3, 2.0)),
        (UnaryOp::Tanh, D::U(-2.0, 2.0)),
        (UnaryOp::Sigmoid, D::U(-3.0, 3.0)),
        (UnaryOp::Erf, D::U(-2.0, 2.0)),
        (UnaryOp::Sin, D::U(-4.0, 4.0)),
        (UnaryOp::Cos, D::U(-4.0, 4.0)),
        (UnaryOp::Floor, D::Frac),
    ];
    for (op, d) in unary {
        for shape in [&[3, 5][..], &[17], &[1]] {
            v.push(case(
                format!("{}{shape:?}", op.name()),
                vec![(f(shape), d.clone())],
                Box::new(move |g, x| un(g, op, x[0])),
            ));
        }
    }
    // Floor inside a product: the floor factor is a constant for the gradient.
    v.push(case(
        "x*floor(x)",
        vec![(f(&[3, 5]), D::Frac)],
        Box::new(|g, x| {
            let fl = g.unary(UnaryOp::Floor, x[0]);
            g.binary(BinaryOp::Mul, x[0], fl)
        }),
    ));
    // Not: only through a select.
    v.push(case(
        "select(not(a>b))",
        vec![(f(&[5, 3]), D::U(-2.0, 2.0)), (f(&[5, 3]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let c = g.binary(BinaryOp::Gt, x[0], x[1]);
            let nc = g.unary(UnaryOp::Not, c);
            let e = g.unary(UnaryOp::Exp, x[1]);
            g.add(Op::Select, &[nc, x[0], e], None)
        }),
    ));

    // Binary ops.
    for shape in [&[5, 3][..], &[1], &[17]] {
        let s = shape.to_vec();
        for (op, da, db) in [
            (BinaryOp::Add, D::U(-2.0, 2.0), D::U(-2.0, 2.0)),
            (BinaryOp::Sub, D::U(-2.0, 2.0), D::U(-2.0, 2.0)),
            (BinaryOp::Mul, D::U(-2.0, 2.0), D::U(-2.0, 2.0)),
            (BinaryOp::Div, D::U(-2.0, 2.0), D::Away(0.4, 2.0)),
            (BinaryOp::Pow, D::U(0.3, 2.0), D::U(-2.0, 2.0)),
        ] {
            v.push(case(
                format!("{}{shape:?}", op.name()),
                vec![(f(&s), da), (f(&s), db)],
                Box::new(move |g, x| g.binary(op, x[0], x[1])),
            ));
        }
        // Rem away from its jumps: a = b * (q + frac) with frac in [0.1, 0.9).
        v.push(case(
            format!("rem{shape:?}"),
            vec![(f(&s), D::Frac), (f(&s), D::Away(0.5, 2.0))],
            Box::new(|g, x| {
                let a = g.binary(BinaryOp::Mul, x[1], x[0]);
                g.binary(BinaryOp::Rem, a, x[1])
            }),
        ));
        // Max / min away from ties: b = a + offset with |offset| in [0.1, 1).
        for op in [BinaryOp::Max, BinaryOp::Min] {
            v.push(case(
                format!("{}{shape:?}", op.name()),
                vec![(f(&s), D::U(-2.0, 2.0)), (f(&s), D::Away(0.1, 1.0))],
                Box::new(move |g, x| {
                    let b = g.binary(BinaryOp::Add, x[0], x[1]);
                    g.binary(op, x[0], b)
                }),
            ));
        }
    }
    // Comparisons and logic feed selects (no gradient through the bool).
    for op in [BinaryOp::Eq, BinaryOp::Ne, BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge] {
        v.push(case(
            format!("select({})", op.name()),
            vec![(f(&[3, 5]), D::U(-2.0, 2.0)), (f(&[3, 5]), D::U(-2.0, 2.0))],
            Box::new(move |g, x| {
                let c = g.binary(op, x[0], x[1]);
                let t = g.binary(BinaryOp::Mul, x[0], x[1]);
                let e = g.unary(UnaryOp::Sin, x[1]);
                g.add(Op::Select, &[c, t, e], None)
            }),
        ));
    }
    for op in [BinaryOp::And, BinaryOp::Or] {
        v.push(case(
            format!("select({})", op.name()),
            vec![(f(&[3, 5]), D::U(-2.0, 2.0)), (f(&[3, 5]), D::U(-2.0, 2.0)), (boolean(&[3, 5]), D::Bool)],
            Box::new(move |g, x| {
                let zero = g.constant(0.0, f(&[3, 5]));
                let c = g.binary(BinaryOp::Gt, x[0], zero);
                let c = g.binary(op, c, x[2]);
                g.add(Op::Select, &[c, x[0], x[1]], None)
            }),
        ));
    }
    v.push(case(
        "select",
        vec![(boolean(&[17]), D::Bool), (f(&[17]), D::U(-2.0, 2.0)), (f(&[17]), D::U(-2.0, 2.0))],
        Box::new(|g, x| g.add(Op::Select, &[x[0], x[1], x[2]], None)),
    ));
    // Casts.
    v.push(case(
        "cast f32->f32",
        vec![(f(&[3, 5]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let c = g.add(Op::Cast { to: DType::F32 }, &[x[0]], None);
            g.binary(BinaryOp::Mul, c, x[0])
        }),
    ));
    v.push(case(
        "x*cast(cast(x,i32),f32)",
        vec![(f(&[3, 5]), D::Frac)],
        Box::new(|g, x| {
            let i = g.cast(x[0], DType::I32);
            let c = g.cast(i, DType::F32);
            g.binary(BinaryOp::Mul, c, x[0])
        }),
    ));
    v.push(case(
        "x*cast(cast(x,bool),f32)",
        vec![(f(&[3, 5]), D::Away(0.1, 2.0))],
        Box::new(|g, x| {
            let b = g.cast(x[0], DType::Bool);
            let c = g.cast(b, DType::F32);
            let e = g.unary(UnaryOp::Exp, x[0]);
            g.binary(BinaryOp::Mul, c, e)
        }),
    ));
    // Reductions over each axis set, on a shape with a size-1 axis.
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        for axes in [vec![0u32], vec![1], vec![2], vec![0, 2], vec![0, 1, 2], vec![]] {
            v.push(case(
                format!("reduce_{}{axes:?}", op.name()),
                vec![(f(&[3, 1, 5]), D::U(-2.0, 2.0))],
                Box::new(move |g, x| g.reduce(op, x[0], axes.clone())),
            ));
        }
        v.push(case(
            format!("reduce_{}[17]", op.name()),
            vec![(f(&[17]), D::U(-2.0, 2.0))],
            Box::new(move |g, x| g.reduce(op, x[0], vec![0])),
        ));
    }
    // Index-valued ops: argmax, topk, iota and random_uniform carry no gradient.
    v.push(case(
        "x*argmax",
        vec![(f(&[3, 5]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let a = g.add(Op::ArgMax { axis: 1 }, &[x[0]], None);
            let a = g.cast(a, DType::F32);
            let a = g.broadcast_to(a, &[3, 5]).unwrap();
            g.binary(BinaryOp::Mul, a, x[0])
        }),
    ));
    v.push(case(
        "x*topk",
        vec![(f(&[3, 5]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let t = g.add(Op::TopK { k: 2 }, &[x[0]], None);
            let t = g.cast(t, DType::F32);
            let s = g.add(Op::Slice { axis: 1, start: 1, end: 3, step: 1 }, &[x[0]], None);
            g.binary(BinaryOp::Mul, t, s)
        }),
    ));
    v.push(case(
        "x*iota",
        vec![(f(&[3, 5]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let i = g.add(Op::Iota { axis: 1 }, &[], Some(int(&[3, 5])));
            let i = g.cast(i, DType::F32);
            g.binary(BinaryOp::Mul, i, x[0])
        }),
    ));
    v.push(case(
        "x*random_uniform",
        vec![(f(&[3, 5]), D::U(-2.0, 2.0)), (int(&[]), D::Ints(vec![1234]))],
        Box::new(|g, x| {
            let r = g.add(Op::RandomUniform { stream: 7 }, &[x[1]], Some(f(&[3, 5])));
            g.binary(BinaryOp::Mul, r, x[0])
        }),
    ));
    // Matmul: every transpose combination, unbatched and batched.
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for (batch, m, k, n) in
            [(vec![], 3usize, 5usize, 17usize), (vec![], 1, 3, 1), (vec![3], 5, 1, 3), (vec![1, 3], 3, 5, 1)]
        {
            let mut sa = batch.clone();
            sa.extend(if ta { [k, m] } else { [m, k] });
            let mut sb = batch.clone();
            sb.extend(if tb { [n, k] } else { [k, n] });
            v.push(case(
                format!("matmul(ta={ta}, tb={tb}) {sa:?} x {sb:?}"),
                vec![(f(&sa), D::U(-2.0, 2.0)), (f(&sb), D::U(-2.0, 2.0))],
                Box::new(move |g, x| g.add(Op::MatMul { trans_a: ta, trans_b: tb }, &[x[0], x[1]], None)),
            ));
        }
    }
    // x @ x (both operands the same node).
    v.push(case(
        "matmul(x, x)",
        vec![(f(&[5, 5]), D::U(-1.0, 1.0))],
        Box::new(|g, x| g.add(Op::MatMul { trans_a: false, trans_b: true }, &[x[0], x[0]], None)),
    ));
    // Layout ops.
    for shape in [vec![5usize, 3], vec![15], vec![1, 15, 1], vec![3, 1, 5]] {
        v.push(case(
            format!("reshape {shape:?}"),
            vec![(f(&[3, 5]), D::U(-2.0, 2.0))],
            Box::new(move |g, x| {
                let r = g.reshape(x[0], shape.clone());
                g.unary(UnaryOp::Sin, r)
            }),
        ));
    }
    for (shape, perm) in [
        (vec![3usize, 5], vec![1u32, 0]),
        (vec![3, 1, 5], vec![2, 0, 1]),
        (vec![3, 1, 5], vec![1, 2, 0]),
        (vec![3, 5, 1], vec![0, 1, 2]),
    ] {
        v.push(case(
            format!("permute{shape:?} by {perm:?}"),
            vec![(f(&shape), D::U(-2.0, 2.0))],
            Box::new(move |g, x| g.add(Op::Permute { perm: perm.clone() }, &[x[0]], None)),
        ));
    }
    for (from, to) in [
        (vec![1usize, 5], vec![3usize, 5]),
        (vec![3, 1], vec![3, 5]),
        (vec![1, 1], vec![3, 5]),
        (vec![3, 1, 1], vec![3, 5, 17]),
        (vec![1, 5, 1], vec![3, 5, 1]),
        (vec![5], vec![3, 5]),
    ] {
        v.push(case(
            format!("broadcast {from:?} -> {to:?}"),
            vec![(f(&from), D::U(-2.0, 2.0))],
            Box::new(move |g, x| g.broadcast_to(x[0], &to).unwrap()),
        ));
    }
    for (shape, axis, start, end, step) in [
        (vec![17usize, 3], 0u32, 2usize, 17usize, 3usize),
        (vec![17, 3], 0, 0, 16, 5),
        (vec![3, 5], 1, 1, 4, 1),
        (vec![3, 5], 1, 0, 5, 2),
        (vec![3, 5], 0, 2, 3, 1),
        (vec![1, 5, 3], 2, 1, 2, 7),
    ] {
        v.push(case(
            format!("slice{shape:?} axis {axis} {start}..{end} step {step}"),
            vec![(f(&shape), D::U(-2.0, 2.0))],
            Box::new(move |g, x| g.add(Op::Slice { axis, start, end, step }, &[x[0]], None)),
        ));
    }
    for (shape, axis, lo, hi, interior) in [
        (vec![3usize, 5], 0u32, 1usize, 2usize, 0usize),
        (vec![3, 5], 1, 0, 3, 2),
        (vec![3, 5], 0, 2, 0, 1),
        (vec![1, 5], 0, 1, 1, 3),
        (vec![17], 0, 0, 0, 1),
    ] {
        v.push(case(
            format!("pad{shape:?} axis {axis} lo {lo} hi {hi} interior {interior}"),
            vec![(f(&shape), D::U(-2.0, 2.0))],
            Box::new(move |g, x| {
                let p = g.add(Op::Pad { axis, lo, hi, interior }, &[x[0]], None);
                g.unary(UnaryOp::Exp, p)
            }),
        ));
    }
    // Pad with interior feeding a matmul (a combination forward graphs never produce).
    v.push(case(
        "matmul(pad interior)",
        vec![(f(&[3, 2]), D::U(-2.0, 2.0)), (f(&[6, 3]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let p = g.add(Op::Pad { axis: 1, lo: 1, hi: 1, interior: 2 }, &[x[0]], None);
            g.add(Op::MatMul { trans_a: false, trans_b: false }, &[p, x[1]], None)
        }),
    ));
    for axis in [0u32, 1, 2] {
        let mut shapes = vec![vec![3usize, 5, 1], vec![3, 5, 1], vec![3, 5, 1]];
        for (i, s) in shapes.iter_mut().enumerate() {
            s[axis as usize] = [1, 3, 5][i];
        }
        v.push(case(
            format!("concat axis {axis} of {shapes:?} (second twice)"),
            shapes.iter().map(|s| (f(s), D::U(-2.0, 2.0))).collect(),
            Box::new(move |g, x| g.add(Op::Concat { axis }, &[x[0], x[1], x[2], x[1]], None)),
        ));
    }
    v.push(case(
        "concat of one",
        vec![(f(&[3, 5]), D::U(-2.0, 2.0))],
        Box::new(|g, x| g.add(Op::Concat { axis: 1 }, &[x[0]], None)),
    ));
    // Gather with duplicate and out-of-range (negative, V, past V) indices.
    v.push(case(
        "gather [5, 3] by [3, 2]",
        vec![(f(&[5, 3]), D::U(-2.0, 2.0)), (int(&[3, 2]), D::Ints(vec![0, 4, -1, 5, 4, 7]))],
        Box::new(|g, x| g.add(Op::Gather, &[x[0], x[1]], None)),
    ));
    v.push(case(
        "gather [17] by [5]",
        vec![(f(&[17]), D::U(-2.0, 2.0)), (int(&[5]), D::Ints(vec![16, 0, 3, 3, 17]))],
        Box::new(|g, x| g.add(Op::Gather, &[x[0], x[1]], None)),
    ));
    v.push(case(
        "gather [3, 1, 5] by []",
        vec![(f(&[3, 1, 5]), D::U(-2.0, 2.0)), (int(&[]), D::Ints(vec![2]))],
        Box::new(|g, x| g.add(Op::Gather, &[x[0], x[1]], None)),
    ));
    // Scatter-add with duplicate and out-of-range indices.
    v.push(case(
        "scatter_add [5] x [5, 3] -> 3 rows",
        vec![(int(&[5]), D::Ints(vec![0, 2, 2, -1, 3])), (f(&[5, 3]), D::U(-2.0, 2.0))],
        Box::new(|g, x| g.add(Op::ScatterAdd { rows: 3 }, &[x[0], x[1]], None)),
    ));
    v.push(case(
        "scatter_add [3, 1] x [3, 1, 5] -> 17 rows",
        vec![(int(&[3, 1]), D::Ints(vec![16, 0, 16])), (f(&[3, 1, 5]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let s = g.add(Op::ScatterAdd { rows: 17 }, &[x[0], x[1]], None);
            g.unary(UnaryOp::Sin, s)
        }),
    ));
    // Scatter-add of a broadcast value.
    v.push(case(
        "scatter_add of a broadcast",
        vec![(int(&[5]), D::Ints(vec![1, 0, 1, 9, 2])), (f(&[1, 3]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let b = g.broadcast_to(x[1], &[5, 3]).unwrap();
            g.add(Op::ScatterAdd { rows: 3 }, &[x[0], b], None)
        }),
    ));
    for axis in [0u32, 1] {
        for reverse in [false, true] {
            v.push(case(
                format!("cumsum axis {axis} reverse {reverse}"),
                vec![(f(&[3, 17]), D::U(-2.0, 2.0))],
                Box::new(move |g, x| {
                    let c = g.add(Op::Cumsum { axis, reverse }, &[x[0]], None);
                    g.unary(UnaryOp::Tanh, c)
                }),
            ));
        }
    }
    // Fan-out and an input the loss does not depend on.
    v.push(case(
        "fan-out x*x + exp(x), unused y",
        vec![(f(&[3, 5]), D::U(-2.0, 2.0)), (f(&[5]), D::U(-2.0, 2.0))],
        Box::new(|g, x| {
            let a = g.binary(BinaryOp::Mul, x[0], x[0]);
            let e = g.unary(UnaryOp::Exp, x[0]);
            let s = g.binary(BinaryOp::Add, a, e);
            g.binary(BinaryOp::Div, s, x[0])
        }),
    ));
    v
}

#[test]
fn every_op_matches_finite_differences_and_the_jit() {
    let cases = cases();
    let (mut worst_fd, mut worst_jit) = (0f64, 0f64);
    for c in &cases {
        let (fd, jit) = run_case(c);
        worst_fd = worst_fd.max(fd);
        worst_jit = worst_jit.max(jit);
    }
    eprintln!("{} cases; worst fd error {worst_fd:.3e}, worst jit error {worst_jit:.3e}", cases.len());
    assert!(cases.len() > 100);
}

/// Every op variant with a float operand appears in some case.
#[test]
fn the_cases_cover_every_op() {
    let mut seen = std::collections::BTreeSet::new();
    for c in cases() {
        let mut g = Graph::new("cover");
        let xs: Vec<NodeId> = c
            .inputs
            .iter()
            .enumerate()
            .map(|(i, (ty, _))| g.add_input(&format!("x{i}"), ty.clone(), None))
            .collect();
        (c.build)(&mut g, &xs);
        for n in g.node_ids() {
            seen.insert(g.node(n).op.name());
        }
    }
    let mut want: Vec<&str> = UnaryOp::ALL.iter().map(|u| u.name()).collect();
    want.extend(BinaryOp::ALL.iter().map(|b| b.name()));
    want.extend([
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "select",
        "cast",
        "argmax",
        "matmul",
        "reshape",
        "permute",
        "broadcast",
        "slice",
        "pad",
        "concat",
        "gather",
        "scatter_add",
        "cumsum",
        "topk",
        "iota",
        "random_uniform",
    ]);
    let missing: Vec<&str> = want.into_iter().filter(|w| !seen.contains(w)).collect();
    assert!(missing.is_empty(), "ops without a gradient case: {missing:?}");
}

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    g.add_input(name, f(shape), None)
}

fn run_grads(g: &Graph, inputs: &[Tensor]) -> Vec<ndarray::ArrayD<f32>> {
    interp::run::<f64>(g, inputs, &[])
        .expect("runs")
        .outputs
        .into_iter()
        .map(|(_, t)| t.as_f32().expect("f32").clone())
        .collect()
}

/// Ties of binary max / min split the gradient 0.5 / 0.5; reduce max / min share it evenly
/// among the tied elements; abs has gradient 0 at 0.
#[test]
fn ties_and_kinks() {
    let mut g = Graph::new("ties");
    let a = input(&mut g, "a", &[4]);
    let b = input(&mut g, "b", &[4]);
    let mx = g.binary(BinaryOp::Max, a, b);
    let mn = g.binary(BinaryOp::Min, a, b);
    let r = g.reduce(ReduceOp::Max, a, vec![0]);
    let r = g.reshape(r, vec![]);
    let rn = g.reduce(ReduceOp::Min, b, vec![0]);
    let rn = g.reshape(rn, vec![]);
    let ab = g.unary(UnaryOp::Abs, a);
    let outs = [mx, mn, ab];
    let mut loss = r;
    loss = g.binary(BinaryOp::Add, loss, rn);
    for o in outs {
        let s = g.reduce(ReduceOp::Sum, o, vec![0]);
        let s = g.reshape(s, vec![]);
        loss = g.binary(BinaryOp::Add, loss, s);
    }
    let grads = grad(&mut g, loss, &[a, b]).unwrap();
    g.add_output("da", grads[0]);
    g.add_output("db", grads[1]);
    // a = [2, 0, 2, -1], b = [2, 1, -3, -3]: max/min tie at 0; reduce max of a ties at 0, 2;
    // reduce min of b ties at 2, 3; abs(a) kink at 1.
    let inputs = [f32_tensor(&[4], vec![2.0, 0.0, 2.0, -1.0]), f32_tensor(&[4], vec![2.0, 1.0, -3.0, -3.0])];
    let got = run_grads(&g, &inputs);
    // da = max share + min share + reduce max share + abs sign
    let da = [0.5 + 0.5 + 0.5 + 1.0, 0.0 + 1.0 + 0.0 + 0.0, 1.0 + 0.0 + 0.5 + 1.0, 1.0 + 0.0 + 0.0 - 1.0];
    // db = max share + min share + reduce min share
    let db = [0.5 + 0.5 + 0.0, 1.0 + 0.0 + 0.0, 0.0 + 1.0 + 0.5, 0.0 + 1.0 + 0.5];
    assert_eq!(got[0].as_slice().unwrap(), &da.map(|x: f64| x as f32));
    assert_eq!(got[1].as_slice().unwrap(), &db.map(|x: f64| x as f32));
}

/// `x ** b` at x = 0: d/dx is 0 for b > 1, 1 for b = 1, 0 for b = 0 (not NaN); d/db is 0.
#[test]
fn pow_at_zero() {
    let mut g = Graph::new("pow0");
    let x = input(&mut g, "x", &[3]);
    let b = input(&mut g, "b", &[3]);
    let p = g.binary(BinaryOp::Pow, x, b);
    let s = g.reduce(ReduceOp::Sum, p, vec![0]);
    let loss = g.reshape(s, vec![]);
    let grads = grad(&mut g, loss, &[x, b]).unwrap();
    g.add_output("dx", grads[0]);
    g.add_output("db", grads[1]);
    let inputs = [f32_tensor(&[3], vec![0.0, 0.0, 0.0]), f32_tensor(&[3], vec![2.0, 1.0, 0.0])];
    let got = run_grads(&g, &inputs);
    assert_eq!(got[0].as_slice().unwrap(), &[0.0, 1.0, 0.0]);
    assert_eq!(got[1].as_slice().unwrap(), &[0.0, 0.0, 0.0]);
}

/// Seeds on several outputs sum; the result equals `grad` of the combined loss.
#[test]
fn vjp_sums_seeds() {
    let mut g = Graph::new("vjp");
    let x = input(&mut g, "x", &[3, 5]);
    let c1 = input(&mut g, "c1", &[3, 5]);
    let c2 = input(&mut g, "c2", &[5]);
    let y1 = g.unary(UnaryOp::Sin, x);
    let y2 = g.reduce(ReduceOp::Sum, y1, vec![0]);
    let y2 = g.reshape(y2, vec![5]);
    let d = vjp(&mut g, &[(y1, c1), (y2, c2), (y1, c1)], &[x]).unwrap();
    g.add_output("dx", d[0]);
    let mut rng = seeded("vjp");
    let inputs: Vec<Tensor> = g.inputs.iter().map(|i| uniform(&i.ty, -2.0, 2.0, &mut rng)).collect();
    let got = &run_grads(&g, &inputs)[0];
    let (xv, c1v, c2v) =
        (inputs[0].as_f32().unwrap(), inputs[1].as_f32().unwrap(), inputs[2].as_f32().unwrap());
    for i in 0..3 {
        for j in 0..5 {
            let want = (2.0 * c1v[[i, j]] as f64 + c2v[[j]] as f64) * (xv[[i, j]] as f64).cos();
            assert!((got[[i, j]] as f64 - want).abs() < 1e-5, "[{i}, {j}]: {} vs {want}", got[[i, j]]);
        }
    }
}

#[test]
fn bad_requests_are_errors() {
    let mut g = Graph::new("bad");
    let x = input(&mut g, "x", &[3]);
    let i = g.add_input("i", int(&[3]), None);
    let s = g.reduce(ReduceOp::Sum, x, vec![0]);
    let err = |r: Result<Vec<NodeId>, AutodiffError>| r.unwrap_err().to_string();
    assert!(err(grad(&mut g, x, &[x])).contains("f32 scalar"));
    assert!(err(grad(&mut g, s, &[i])).contains("only f32"));
    assert!(err(grad(&mut g, s, &[NodeId(999)])).contains("not a node"));
    assert!(err(vjp(&mut g, &[(x, s)], &[x])).contains("cotangent"));
    // [1]-shaped loss is fine; an unrelated wrt gets zeros of its type.
    let y = input(&mut g, "y", &[2, 1]);
    let d = grad(&mut g, s, &[x, y]).unwrap();
    assert_eq!(g.ty(d[1]), &f(&[2, 1]));
    assert!(matches!(g.node(d[1]).op, Op::Const { value } if value == 0.0));
}

/// Backward nodes carry the span and scope of the forward node they differentiate, and reuse
/// forward values (exp's own result, not a recomputation).
#[test]
fn backward_nodes_have_forward_spans() {
    let mut g = Graph::new("spans");
    let x = input(&mut g, "x", &[3]);
    let sp = |i: usize| Some(Span::new(FileId(0), i, i + 1));
    g.current_span = sp(1);
    g.current_scope = g.scope("a");
    let e = g.unary(UnaryOp::Exp, x);
    g.current_span = sp(2);
    g.current_scope = g.scope("b");
    let s = g.unary(UnaryOp::Sin, e);
    g.current_span = sp(3);
    let r = g.reduce(ReduceOp::Sum, s, vec![0]);
    let loss = g.reshape(r, vec![]);
    g.current_span = sp(99);
    let forward = g.len();
    let d = grad(&mut g, loss, &[x]).unwrap();
    assert_eq!(g.current_span, sp(99), "current span restored");
    // exp's rule multiplies by exp's own node; sin's rule takes cos(e).
    let new: Vec<NodeId> = (forward..g.len()).map(|i| NodeId(i as u32)).collect();
    let uses_e =
        new.iter().filter(|&&n| g.node(n).op == Op::Binary(BinaryOp::Mul) && g.node(n).args.contains(&e));
    let uses_e: Vec<_> = uses_e.collect();
    assert_eq!(uses_e.len(), 1, "the exp rule reuses the forward value");
    assert_eq!(g.span(*uses_e[0]), sp(1));
    assert_eq!(g.scope_path(*uses_e[0]), "a");
    let cos = new.iter().find(|&&n| g.node(n).op == Op::Unary(UnaryOp::Cos)).expect("cos");
    assert_eq!(g.span(*cos), sp(2));
    assert_eq!(g.scope_path(*cos), "b");
    assert_eq!(g.span(d[0]), sp(1));
    assert!(!new.iter().any(|&n| g.node(n).op == Op::Unary(UnaryOp::Exp)), "exp is not recomputed");
}

/// Matmul gradients use the transpose flags (no permute copies); broadcast gradients are one
/// reduce sum.
#[test]
fn efficient_rules() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut g = Graph::new("mm");
        let a = input(&mut g, "a", &[2, 4, 4]);
        let b = input(&mut g, "b", &[2, 4, 4]);
        let c = g.add(Op::MatMul { trans_a: ta, trans_b: tb }, &[a, b], None);
        let r = g.reduce(ReduceOp::Sum, c, vec![0, 1, 2]);
        let loss = g.reshape(r, vec![]);
        let forward = g.len();
        grad(&mut g, loss, &[a, b]).unwrap();
        let ops: Vec<&Op> = (forward..g.len()).map(|i| &g.nodes[i].op).collect();
        assert_eq!(ops.iter().filter(|o| matches!(o, Op::MatMul { .. })).count(), 2);
        assert!(!ops.iter().any(|o| matches!(o, Op::Permute { .. })), "{ops:?}");
    }
    let mut g = Graph::new("bc");
    let a = input(&mut g, "a", &[3, 1, 5]);
    let b = g.broadcast_to(a, &[3, 4, 5]).unwrap();
    let r = g.reduce(ReduceOp::Max, b, vec![0, 1, 2]);
    let loss = g.reshape(r, vec![]);
    let forward = g.len();
    let d = grad(&mut g, loss, &[a]).unwrap();
    let sums = (forward..g.len())
        .filter(|&i| matches!(&g.nodes[i].op, Op::Reduce { op: ReduceOp::Sum, axes } if axes == &[1]))
        .count();
    assert_eq!(sums, 1);
    assert_eq!(g.ty(d[0]), &f(&[3, 1, 5]));
}
