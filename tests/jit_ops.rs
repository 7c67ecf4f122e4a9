//! Differential tests of every op: the JIT against the reference interpreter on random inputs
//! with awkward shapes (1, 3, 5, 17, 63; broadcasting on each axis), at 1 and 2 threads, with
//! output buffers poisoned first.

mod jit_support;

use jit_support::check_graph;
use modelc::ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, TensorType, UnaryOp};

const SHAPES: [&[usize]; 5] = [&[1], &[3], &[5, 17], &[3, 63], &[2, 3, 5]];

fn input(g: &mut Graph, name: &str, dtype: DType, shape: &[usize]) -> NodeId {
    g.add_input(name, TensorType::new(dtype, shape.to_vec()), None)
}

/// `abs(x) + 0.5`: a positive operand for log, sqrt, pow.
fn positive(g: &mut Graph, x: NodeId) -> NodeId {
    let a = g.unary(UnaryOp::Abs, x);
    let half = g.constant(0.5, g.ty(x).clone());
    g.binary(BinaryOp::Add, a, half)
}

#[test]
fn unary_ops_match_reference() {
    for (c, shape) in SHAPES.iter().enumerate() {
        for op in UnaryOp::ALL {
            for dtype in [DType::F32, DType::I32, DType::Bool] {
                if !op.accepts(dtype) {
                    continue;
                }
                let mut g = Graph::new(format!("unary_{}_{dtype}", op.name()));
                let x = input(&mut g, "x", dtype, shape);
                let needs_positive = matches!(op, UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt);
                let arg = if needs_positive { positive(&mut g, x) } else { x };
                let y = g.unary(op, arg);
                g.add_output("y", y);
                check_graph(&g, &g.name.clone(), c as u64);
            }
        }
    }
}

#[test]
fn binary_ops_match_reference() {
    for (c, shape) in SHAPES.iter().enumerate() {
        for op in BinaryOp::ALL {
            for dtype in [DType::F32, DType::I32, DType::Bool] {
                if op.result_dtype(dtype).is_none() {
                    continue;
                }
                let mut g = Graph::new(format!("binary_{}_{dtype}", op.name()));
                let a = input(&mut g, "a", dtype, shape);
                let b = input(&mut g, "b", dtype, shape);
                let (a, b) = match (op, dtype) {
                    (BinaryOp::Pow, _) => (positive(&mut g, a), b),
                    // odd divisors: never zero, both signs
                    (BinaryOp::Div | BinaryOp::Rem, DType::I32) => {
                        let two = g.constant(2.0, g.ty(b).clone());
                        let one = g.constant(1.0, g.ty(b).clone());
                        let b2 = g.binary(BinaryOp::Mul, b, two);
                        (a, g.binary(BinaryOp::Add, b2, one))
                    }
                    _ => (a, b),
                };
                let y = g.binary(op, a, b);
                g.add_output("y", y);
                check_graph(&g, &g.name.clone(), c as u64);
            }
        }
    }
}

#[test]
fn broadcasting_on_each_axis_matches_reference() {
    let full = [3usize, 17, 5];
    for axis in 0..3 {
        let mut small = full.to_vec();
        small[axis] = 1;
        let mut g = Graph::new(format!("broadcast_axis{axis}"));
        let a = input(&mut g, "a", DType::F32, &small);
        let b = input(&mut g, "b", DType::F32, &full);
        let ab = g.broadcast_to(a, &full).unwrap();
        let m = g.binary(BinaryOp::Mul, ab, b);
        let y = g.binary(BinaryOp::Sub, m, ab);
        g.add_output("y", y);
        check_graph(&g, &g.name.clone(), axis as u64);
    }
    // a scalar and a vector along the last axis
    let mut g = Graph::new("broadcast_scalar_and_row");
    let s = input(&mut g, "s", DType::F32, &[]);
    let r = input(&mut g, "r", DType::F32, &[5]);
    let x = input(&mut g, "x", DType::F32, &full);
    let sb = g.broadcast_to(s, &full).unwrap();
    let rb = g.broadcast_to(r, &full).unwrap();
    let t = g.binary(BinaryOp::Mul, x, sb);
    let y = g.binary(BinaryOp::Add, t, rb);
    g.add_output("y", y);
    check_graph(&g, "broadcast_scalar_and_row", 0);
}

#[test]
fn select_cast_iota_match_reference() {
    for (c, shape) in SHAPES.iter().enumerate() {
        let mut g = Graph::new("select");
        let cnd = input(&mut g, "c", DType::Bool, shape);
        let a = input(&mut g, "a", DType::F32, shape);
        let b = input(&mut g, "b", DType::F32, shape);
        let y = g.add(Op::Select, &[cnd, a, b], None);
        g.add_output("y", y);
        check_graph(&g, "select", c as u64);

        for from in [DType::F32, DType::I32, DType::Bool] {
            for to in [DType::F32, DType::I32, DType::Bool] {
                let mut g = Graph::new(format!("cast_{from}_{to}"));
                let x = input(&mut g, "x", from, shape);
                // scale floats so the truncation to int is exercised over several values
                let x = if from == DType::F32 {
                    let k = g.constant(3.0, g.ty(x).clone());
                    g.binary(BinaryOp::Mul, x, k)
                } else {
                    x
                };
                let y = g.add(Op::Cast { to }, &[x], None);
                g.add_output("y", y);
                check_graph(&g, &g.name.clone(), c as u64);
            }
        }

        for axis in 0..shape.len() as u32 {
            let mut g = Graph::new(format!("iota_axis{axis}"));
            let ty = TensorType::new(DType::I32, shape.to_vec());
            let i = g.add(Op::Iota { axis }, &[], Some(ty));
            let x = input(&mut g, "x", DType::I32, shape);
            let y = g.binary(BinaryOp::Add, i, x);
            g.add_output("y", y);
            check_graph(&g, &g.name.clone(), c as u64);
        }
    }
}

#[test]
fn reductions_and_argmax_match_reference() {
    for (c, shape) in [&[1usize][..], &[63], &[5, 17], &[3, 63], &[2, 3, 5]].iter().enumerate() {
        for axis in 0..shape.len() as u32 {
            for dtype in [DType::F32, DType::I32] {
                for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
                    let mut g = Graph::new(format!("reduce_{}_{dtype}_axis{axis}", op.name()));
                    let x = input(&mut g, "x", dtype, shape);
                    let y = g.reduce(op, x, vec![axis]);
                    g.add_output("y", y);
                    check_graph(&g, &g.name.clone(), c as u64);
                }
                let mut g = Graph::new(format!("argmax_{dtype}_axis{axis}"));
                let x = input(&mut g, "x", dtype, shape);
                let y = g.add(Op::ArgMax { axis }, &[x], None);
                g.add_output("y", y);
                check_graph(&g, &g.name.clone(), c as u64);
            }
        }
        if shape.len() >= 2 {
            let mut g = Graph::new("reduce_sum_all_axes");
            let x = input(&mut g, "x", DType::F32, shape);
            let y = g.reduce(ReduceOp::Sum, x, (0..shape.len() as u32).collect());
            g.add_output("y", y);
            check_graph(&g, "reduce_sum_all_axes", c as u64);
        }
    }
}

#[test]
fn matmul_matches_reference() {
    // m = 1 takes the unpacked one-row path (both layouts of B, a strided A, k over its
    // 1024-element gather buffer)
    // m < n >= 32 splits by columns at 2 threads
    let shapes = [
        (1usize, 1usize, 1usize),
        (3, 5, 17),
        (17, 63, 5),
        (63, 17, 3),
        (1, 70, 37),
        (1, 1100, 9),
        (5, 20, 70),
    ];
    for (c, &(m, k, n)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for batch in [&[][..], &[3][..], &[2, 3][..]] {
                let mut g = Graph::new(format!("matmul_{m}x{k}x{n}_ta{ta}_tb{tb}_b{}", batch.len()));
                let mut sa = batch.to_vec();
                sa.extend(if ta { [k, m] } else { [m, k] });
                let mut sb = batch.to_vec();
                sb.extend(if tb { [n, k] } else { [k, n] });
                let a = input(&mut g, "a", DType::F32, &sa);
                let b = input(&mut g, "b", DType::F32, &sb);
                let y = g.add(Op::MatMul { trans_a: ta, trans_b: tb }, &[a, b], None);
                g.add_output("y", y);
                check_graph(&g, &g.name.clone(), c as u64);
            }
        }
    }
}

/// A batch of products sharing one B (a weight broadcast over the batch, as `x W` with a 3-d
/// `x`): folded into one product with `batch * m` rows when A's rows run on (not when A is
/// transposed); with a bias + ReLU epilogue over more rows than one GEMM row block (96), so the
/// epilogue runs block by block.
#[test]
fn shared_weight_products_match_reference() {
    for (c, &(m, k, n)) in [(5usize, 7usize, 9usize), (64, 33, 40), (1, 17, 3)].iter().enumerate() {
        for ta in [false, true] {
            let mut g = Graph::new(format!("shared_b_{m}x{k}x{n}_ta{ta}"));
            let batch = [2usize, 3];
            let mut sa = batch.to_vec();
            sa.extend(if ta { [k, m] } else { [m, k] });
            let a = input(&mut g, "a", DType::F32, &sa);
            let w = input(&mut g, "w", DType::F32, &[k, n]);
            let mut sb = batch.to_vec();
            sb.extend([k, n]);
            let wb = g.broadcast_to(w, &sb).expect("broadcast");
            let y = g.add(Op::MatMul { trans_a: ta, trans_b: false }, &[a, wb], None);
            let bias = input(&mut g, "bias", DType::F32, &[n]);
            let ys = g.ty(y).shape.clone();
            let bb = g.broadcast_to(bias, &ys).expect("broadcast");
            let z = g.binary(BinaryOp::Add, y, bb);
            let zero = g.constant(0.0, g.ty(z).clone());
            let r = g.binary(BinaryOp::Max, z, zero);
            g.add_output("y", r);
            check_graph(&g, &g.name.clone(), c as u64);
            // the schedule: one product of batch * m rows unless A is transposed (its rows then
            // do not run on from one batch entry to the next)
            let sg = modelc::passes::run_pipeline(g.clone(), &modelc::passes::PipelineOptions::default());
            let s = modelc::sched::schedule(&sg);
            let mm: Vec<_> = s
                .kernels
                .iter()
                .filter_map(|k| match &k.body {
                    modelc::sched::KernelBody::MatMul(mm) => Some(mm),
                    _ => None,
                })
                .collect();
            assert_eq!(mm.len(), 1, "{}: one product kernel", g.name);
            if ta {
                assert_eq!(mm[0].batch, vec![2, 3], "{}: batch kept", g.name);
            } else {
                assert!(
                    mm[0].batch.is_empty() && mm[0].m == 6 * m,
                    "{}: folded, got {:?} x {}",
                    g.name,
                    mm[0].batch,
                    mm[0].m
                );
                assert!(mm[0].epilogue.is_some(), "{}: bias + ReLU run as the epilogue", g.name);
            }
        }
    }
}

#[test]
fn layout_ops_match_reference() {
    let shape = [3usize, 17, 5];
    // permute (a strided read) of a fused value and of an input
    for perm in [vec![0u32, 2, 1], vec![2, 0, 1], vec![1, 2, 0]] {
        let mut g = Graph::new("permute");
        let x = input(&mut g, "x", DType::F32, &shape);
        let e = g.unary(UnaryOp::Neg, x);
        let p = g.add(Op::Permute { perm: perm.clone() }, &[e], None);
        let p2 = g.add(Op::Permute { perm }, &[x], None);
        let y = g.binary(BinaryOp::Add, p, p2);
        g.add_output("y", y);
        check_graph(&g, "permute", 0);
    }
    // reshape of a fused value, including across a permute (needs a copy)
    let mut g = Graph::new("reshape");
    let x = input(&mut g, "x", DType::F32, &shape);
    let e = g.unary(UnaryOp::Abs, x);
    let r = g.reshape(e, vec![51, 5]);
    let p = g.add(Op::Permute { perm: vec![1, 0, 2] }, &[x], None);
    let pr = g.reshape(p, vec![51, 5]);
    let y = g.binary(BinaryOp::Sub, r, pr);
    g.add_output("y", y);
    check_graph(&g, "reshape", 0);
    // slices with steps on each axis
    for axis in 0..3u32 {
        let mut g = Graph::new(format!("slice_axis{axis}"));
        let x = input(&mut g, "x", DType::F32, &shape);
        let end = shape[axis as usize];
        let s = g.add(Op::Slice { axis, start: 1.min(end - 1), end, step: 2 }, &[x], None);
        let y = g.unary(UnaryOp::Neg, s);
        g.add_output("y", y);
        check_graph(&g, &g.name.clone(), axis as u64);
    }
    // pad and concat on each axis
    for axis in 0..3u32 {
        let mut g = Graph::new(format!("pad_axis{axis}"));
        let x = input(&mut g, "x", DType::F32, &shape);
        let e = g.unary(UnaryOp::Neg, x);
        let y = g.add(Op::Pad { axis, lo: 2, hi: 1, interior: 1 }, &[e], None);
        g.add_output("y", y);
        check_graph(&g, &g.name.clone(), axis as u64);

        let mut g = Graph::new(format!("concat_axis{axis}"));
        let a = input(&mut g, "a", DType::F32, &shape);
        let mut other = shape.to_vec();
        other[axis as usize] = 1;
        let b = input(&mut g, "b", DType::F32, &other);
        let ea = g.unary(UnaryOp::Abs, a);
        let y = g.add(Op::Concat { axis }, &[ea, b, a], None);
        g.add_output("y", y);
        check_graph(&g, &g.name.clone(), axis as u64);
    }
}

/// A concatenation of pieces of one shape (im2col's windows) is one loop over a piece with a
/// store per piece, and pieces adjacent in both source and destination are one longer piece
/// (`sched/runs.rs`); pieces of different lengths keep a kernel each. A value read through
/// overlapping windows gets a buffer (computed once, not once per window).
#[test]
fn equal_concat_pieces_are_one_kernel() {
    let mut g = Graph::new("concat_windows");
    let x = input(&mut g, "x", DType::F32, &[2, 6, 5]);
    let r = g.unary(UnaryOp::Tanh, x);
    let mut windows = Vec::new();
    for k in 0..3usize {
        let w = g.add(Op::Slice { axis: 1, start: k, end: k + 4, step: 1 }, &[r], None);
        windows.push(w);
    }
    let c = g.add(Op::Concat { axis: 2 }, &windows, None);
    g.add_output("im2col", c);
    let short = g.add(Op::Slice { axis: 1, start: 0, end: 4, step: 1 }, &[x], None);
    let u = g.add(Op::Concat { axis: 1 }, &[short, x], None);
    g.add_output("uneven", u);
    let s = modelc::sched::schedule(&g);
    let loops = |s: &modelc::sched::Schedule| -> Vec<(usize, usize)> {
        s.kernels
            .iter()
            .filter_map(|k| match &k.body {
                modelc::sched::KernelBody::Loop(l) => Some((l.stores.len(), l.inner)),
                _ => None,
            })
            .collect()
    };
    // the three row windows of 5 follow each other in the source as in the output: one copy
    // of 15 elements per output row
    assert!(
        loops(&s).contains(&(1, 15)),
        "one kernel copies the three windows as one piece: {}",
        modelc::sched::print_kernels(&s)
    );
    // the windows overlap: tanh gets a buffer and is computed once per element, not per window
    let tanhs: usize = s
        .kernels
        .iter()
        .map(|k| match &k.body {
            modelc::sched::KernelBody::Loop(l) => l
                .exprs
                .iter()
                .filter(|e| matches!(e, modelc::sched::Expr::Unary { op: UnaryOp::Tanh, .. }))
                .count(),
            _ => 0,
        })
        .sum();
    assert_eq!(tanhs, 1, "tanh computed in one kernel: {}", modelc::sched::print_kernels(&s));
    check_graph(&g, &g.name.clone(), 11);

    // 3 x 3 windows of 4 channels: the three windows of a kernel row are adjacent (one piece
    // of 12), the kernel rows are not (three pieces)
    let mut g = Graph::new("concat_windows_2d");
    let x = input(&mut g, "x", DType::F32, &[2, 5, 5, 4]);
    let mut windows = Vec::new();
    for ky in 0..3usize {
        for kx in 0..3usize {
            let w = g.add(Op::Slice { axis: 1, start: ky, end: ky + 3, step: 1 }, &[x], None);
            windows.push(g.add(Op::Slice { axis: 2, start: kx, end: kx + 3, step: 1 }, &[w], None));
        }
    }
    let c = g.add(Op::Concat { axis: 3 }, &windows, None);
    g.add_output("im2col", c);
    let s = modelc::sched::schedule(&g);
    assert_eq!(loops(&s), [(3, 12)], "{}", modelc::sched::print_kernels(&s));
    check_graph(&g, &g.name.clone(), 12);
}

/// A pad of a pad on another axis is one load guarded on both axes (the 2-D col2im of a
/// convolution's input gradient: every window padded back along height and width, summed).
#[test]
fn zero_padding_on_two_axes_is_one_guarded_load() {
    let shape = [2usize, 6, 5, 3];
    let mut g = Graph::new("fused_pads_2d");
    let x = input(&mut g, "x", DType::F32, &shape);
    let m = input(&mut g, "m", DType::Bool, &shape);
    let pad = |g: &mut Graph, x: NodeId, axis: u32, lo: usize, hi: usize| {
        g.add(Op::Pad { axis, lo, hi, interior: 0 }, &[x], None)
    };
    let e = g.unary(UnaryOp::Exp, x);
    let mut acc: Option<NodeId> = None;
    for ky in 0..3usize {
        for kx in 0..2usize {
            let w = g.add(Op::Slice { axis: 1, start: ky, end: ky + 4, step: 1 }, &[x], None);
            let w = g.add(Op::Slice { axis: 2, start: kx, end: kx + 4, step: 1 }, &[w], None);
            let back = pad(&mut g, w, 1, ky, 2 - ky);
            let back = pad(&mut g, back, 2, kx, 1 - kx);
            acc = Some(match acc {
                None => back,
                Some(a) => g.binary(BinaryOp::Add, a, back),
            });
        }
    }
    let acc = acc.expect("six windows");
    // the sum gated by a mask, as the ReLU gradient that follows a col2im
    let z = g.add(Op::Select, &[m, acc, e], None);
    g.add_output("col2im_2d", z);
    // pads on three axes of a boolean, and of an elementwise value (its own buffer)
    let pad3 = |g: &mut Graph, v: NodeId| {
        let v = pad(g, v, 0, 1, 0);
        let v = pad(g, v, 2, 0, 2);
        pad(g, v, 3, 1, 1)
    };
    let pm = pad3(&mut g, m);
    let pe = pad3(&mut g, e);
    let px = pad3(&mut g, x);
    let y = g.add(Op::Select, &[pm, pe, px], None);
    g.add_output("select_of_3d_pads", y);
    let s = modelc::sched::schedule(&g);
    let max_guards = s
        .kernels
        .iter()
        .filter_map(|k| match &k.body {
            modelc::sched::KernelBody::Loop(l) => l
                .exprs
                .iter()
                .filter_map(|e| match e {
                    modelc::sched::Expr::GatherLoad { guards, .. } => Some(guards.len()),
                    _ => None,
                })
                .max(),
            _ => None,
        })
        .max();
    assert_eq!(max_guards, Some(3), "pads on three axes, one load: {}", modelc::sched::print_kernels(&s));
    check_graph(&g, &g.name.clone(), 7);
}

#[test]
fn indexing_ops_match_reference() {
    // gather rows of a table, indices partly out of range
    for (c, (vocab, idx_shape, row)) in [
        (5usize, vec![3usize], vec![17usize]),
        (17, vec![2, 5], vec![3]),
        (1, vec![5], vec![]),
        (63, vec![4, 3], vec![5, 3]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = Graph::new("gather");
        let mut ts = vec![vocab];
        ts.extend(&row);
        let t = input(&mut g, "table", DType::F32, &ts);
        let i = input(&mut g, "idx", DType::I32, &idx_shape);
        let y = g.add(Op::Gather, &[t, i], None);
        g.add_output("y", y);
        check_graph(&g, "gather", c as u64);

        let mut g = Graph::new("scatter_add");
        let i = input(&mut g, "idx", DType::I32, &idx_shape);
        let mut ss = idx_shape.clone();
        ss.extend(&row);
        let s = input(&mut g, "src", DType::F32, &ss);
        let y = g.add(Op::ScatterAdd { rows: vocab }, &[i, s], None);
        g.add_output("y", y);
        check_graph(&g, "scatter_add", c as u64);
    }
    for (c, shape) in [&[1usize][..], &[17], &[3, 5], &[2, 3, 63]].iter().enumerate() {
        let last = *shape.last().unwrap();
        for k in [1, 2.min(last), last] {
            let mut g = Graph::new(format!("topk_{k}"));
            let x = input(&mut g, "x", DType::F32, shape);
            let y = g.add(Op::TopK { k }, &[x], None);
            g.add_output("y", y);
            check_graph(&g, &g.name.clone(), c as u64);
        }
        for axis in 0..shape.len() as u32 {
            for reverse in [false, true] {
                let mut g = Graph::new(format!("cumsum_axis{axis}_rev{reverse}"));
                let x = input(&mut g, "x", DType::F32, shape);
                let y = g.add(Op::Cumsum { axis, reverse }, &[x], None);
                g.add_output("y", y);
                check_graph(&g, &g.name.clone(), c as u64);
            }
        }
    }
}

#[test]
fn random_uniform_is_bit_exact_with_the_reference() {
    for (c, shape) in SHAPES.iter().enumerate() {
        for stream in [0u32, 7] {
            let mut g = Graph::new(format!("random_uniform_stream{stream}"));
            let key = input(&mut g, "key", DType::I32, &[]);
            let ty = TensorType::f32(shape.to_vec());
            let r = g.add(Op::RandomUniform { stream }, &[key], Some(ty));
            let y = g.unary(UnaryOp::Neg, r);
            g.add_output("r", r);
            g.add_output("y", y);
            // exact: tolerance 0
            jit_support::check_graph_tol(&g, &g.name.clone(), c as u64, 0.0, 0.0);
        }
    }
}

/// Zero padding without interior padding is a guarded load in its consumer (no kernel of its
/// own): a pad of an input, of a slice, of a pad (the inner one gets a buffer), of an
/// elementwise value, a boolean pad feeding a select, a pad that is itself the output, and a
/// sum of shifted windows (a col2im), on each axis, against the interpreter.
#[test]
fn zero_padding_fused_into_consumers_matches_reference() {
    let shape = [3usize, 5, 7];
    for axis in 0..3u32 {
        let (lo, hi) = [(2usize, 1usize), (0, 3), (1, 0)][axis as usize];
        let pad = |g: &mut Graph, x: NodeId, lo: usize, hi: usize| {
            g.add(Op::Pad { axis, lo, hi, interior: 0 }, &[x], None)
        };
        let mut g = Graph::new(format!("fused_pads_axis{axis}"));
        let x = input(&mut g, "x", DType::F32, &shape);
        let m = input(&mut g, "m", DType::Bool, &shape);
        // a pad of an input, used by an elementwise consumer
        let p = pad(&mut g, x, lo, hi);
        let y0 = g.unary(UnaryOp::Neg, p);
        g.add_output("pad_of_input", y0);
        // a pad of a slice of the input, and a pad of that pad
        let n = shape[axis as usize];
        let s = g.add(Op::Slice { axis, start: 1, end: n, step: 1 }, &[x], None);
        let ps = pad(&mut g, s, 1, 0);
        let pps = pad(&mut g, ps, lo, hi);
        let y1 = g.unary(UnaryOp::Abs, pps);
        g.add_output("pad_of_pad_of_slice", y1);
        // a pad of an elementwise value; a boolean pad selecting between two pads
        let e = g.unary(UnaryOp::Tanh, x);
        let pe = pad(&mut g, e, lo, hi);
        let pm = pad(&mut g, m, lo, hi);
        let y2 = g.add(Op::Select, &[pm, pe, p], None);
        g.add_output("select_of_pads", y2);
        // the pad itself is an output
        g.add_output("pad_output", p);
        // a sum of shifted windows padded back to the full length (col2im along the axis)
        let win = n - 2;
        let mut acc: Option<NodeId> = None;
        for k in 0..3usize {
            let w = g.add(Op::Slice { axis, start: k, end: k + win, step: 1 }, &[e], None);
            let back = pad(&mut g, w, k, 2 - k);
            acc = Some(match acc {
                None => back,
                Some(a) => g.binary(BinaryOp::Add, a, back),
            });
        }
        g.add_output("col2im", acc.expect("three windows"));
        let s = modelc::sched::schedule(&g);
        let guarded = s.kernels.iter().any(|k| match &k.body {
            modelc::sched::KernelBody::Loop(l) => {
                l.exprs.iter().any(|e| matches!(e, modelc::sched::Expr::GatherLoad { .. }))
            }
            _ => false,
        });
        assert!(guarded, "pads are read as guarded loads: {}", modelc::sched::print_kernels(&s));
        check_graph(&g, &g.name.clone(), axis as u64);
    }
}

/// A guarded load whose out-of-range rows read a shared block of zeros (rows of up to 16 368
/// elements) and one that masks its loads instead (longer rows), padded on the row axis and,
/// for the short rows, on the inner axis too, against the interpreter.
#[test]
fn guarded_loads_of_short_and_long_rows_match_reference() {
    for (c, (rows, cols)) in [(5usize, 37usize), (4, 16_300), (3, 17_000)].into_iter().enumerate() {
        let mut g = Graph::new(format!("guarded_rows_{rows}x{cols}"));
        let x = input(&mut g, "x", DType::F32, &[rows, cols]);
        let e = g.unary(UnaryOp::Tanh, x);
        let p = g.add(Op::Pad { axis: 0, lo: 2, hi: 1, interior: 0 }, &[e], None);
        let y = g.unary(UnaryOp::Neg, p);
        g.add_output("rows_padded", y);
        if cols < 100 {
            let q = g.add(Op::Pad { axis: 1, lo: 3, hi: 2, interior: 0 }, &[p], None);
            let z = g.unary(UnaryOp::Abs, q);
            g.add_output("both_padded", z);
        }
        // the row pad is a guarded load in a kernel whose rows are the input's rows
        let s = modelc::sched::schedule(&g);
        let long_rows = s.kernels.iter().any(|k| match &k.body {
            modelc::sched::KernelBody::Loop(l) => {
                l.inner == cols && l.exprs.iter().any(|e| matches!(e, modelc::sched::Expr::GatherLoad { .. }))
            }
            _ => false,
        });
        assert!(long_rows, "{}", modelc::sched::print_kernels(&s));
        check_graph(&g, &g.name.clone(), 40 + c as u64);
    }
}

/// A reduction over every axis of a permuted view (a gradient's sum of squares, as the
/// gradient norm needs) reads the underlying buffer flat: one reduction kernel each, where
/// axis by axis through the permute took one kernel per axis.
#[test]
fn full_reductions_of_permuted_views_read_flat() {
    let mut g = Graph::new("flat_full_reductions");
    let x = input(&mut g, "x", DType::F32, &[6, 5, 7]);
    let e = g.unary(UnaryOp::Exp, x);
    let p = g.add(Op::Permute { perm: vec![2, 0, 1] }, &[e], None);
    let r = g.reshape(p, vec![7, 30]);
    let sq = g.binary(BinaryOp::Mul, r, r);
    let s = g.reduce(ReduceOp::Sum, sq, vec![0, 1]);
    g.add_output("sum_of_squares", s);
    let q = g.add(Op::Permute { perm: vec![1, 2, 0] }, &[x], None);
    let m = g.reduce(ReduceOp::Max, q, vec![0, 1, 2]);
    g.add_output("max", m);
    let sched = modelc::sched::schedule(&g);
    let reducing = sched
        .kernels
        .iter()
        .filter(|k| matches!(&k.body, modelc::sched::KernelBody::Loop(l) if !l.reductions.is_empty()))
        .count();
    assert_eq!(reducing, 2, "one flat reduction each: {}", modelc::sched::print_kernels(&sched));
    check_graph(&g, &g.name.clone(), 13);
}

/// `exp` and `erf` along rows of every length around the native chunks (`jit::vmath`: whole
/// multiples of 16, at most 256 per call, the rest inline): an elementwise use, a row sum of
/// exponentials and a flat kernel (split at any element by the second thread).
#[test]
fn native_math_rows_of_every_length_match_reference() {
    for (c, &n) in [15usize, 16, 17, 31, 255, 256, 257, 300, 600, 1000].iter().enumerate() {
        let mut g = Graph::new(format!("native_math_{n}"));
        let x = input(&mut g, "x", DType::F32, &[3, n]);
        let c7 = g.constant(0.7, g.ty(x).clone());
        let xs = g.binary(BinaryOp::Mul, x, c7);
        let e = g.unary(UnaryOp::Erf, xs);
        let ex = g.binary(BinaryOp::Mul, x, e);
        let sq = g.binary(BinaryOp::Mul, x, x);
        let nsq = g.unary(UnaryOp::Neg, sq);
        let bump = g.unary(UnaryOp::Exp, nsq);
        let y = g.binary(BinaryOp::Add, ex, bump);
        g.add_output("y", y);
        let ez = g.unary(UnaryOp::Exp, x);
        let s = g.reduce(ReduceOp::Sum, ez, vec![1]);
        g.add_output("rowsum", s);
        let f = input(&mut g, "f", DType::F32, &[n]);
        let ef = g.unary(UnaryOp::Erf, f);
        g.add_output("flat", ef);
        check_graph(&g, &g.name.clone(), c as u64);
    }
}
