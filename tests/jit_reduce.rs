//! Differential tests (JIT at 1 and 2 threads vs the reference interpreter) of reductions along
//! a strided inner loop: column sums, maxima and minima over the rows of a matrix (bias and
//! layer-norm parameter gradients), which the code generator runs row-blocked (four rows per
//! vector, blocks of 16 rows, single rows left over). Shapes cover row counts that are not
//! multiples of the block, ranges split over two threads (in whole blocks of 16 rows, so 35 and
//! 64 columns split and fewer do not), outer dimensions that wrap inside a block, fused
//! expressions, multi-pass kernels and integer columns.

mod jit_support;

use jit_support::check_graph;
use modelc::ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, TensorType, UnaryOp};
use modelc::sched::{Expr, KernelBody, LoopKernel, schedule};

fn input(g: &mut Graph, name: &str, dtype: DType, shape: &[usize]) -> NodeId {
    g.add_input(name, TensorType::new(dtype, shape.to_vec()), None)
}

/// The loop kernels of `g` that read a buffer along a strided inner loop with consecutive rows
/// contiguous (the kernels the row-blocked path is for), with their pass counts; each runs
/// row-blocked.
fn column_kernels(g: &Graph) -> Vec<u32> {
    let is_column = |l: &LoopKernel| {
        l.exprs.iter().any(
            |e| matches!(e, Expr::Load { access, .. } if access.inner > 1 && access.outer.last() == Some(&1)),
        )
    };
    schedule(g)
        .kernels
        .iter()
        .filter_map(|k| match &k.body {
            KernelBody::Loop(l) if is_column(l) => {
                assert!(modelc::jit::row_blocked(l), "a column kernel runs row-blocked: {l:?}");
                Some(l.passes)
            }
            _ => None,
        })
        .collect()
}

/// Column counts around the block sizes (4 and 16 rows of the kernel's domain).
const COLUMNS: [usize; 8] = [1, 3, 4, 5, 16, 17, 35, 64];

#[test]
fn column_reductions_match_reference() {
    let mut c = 0;
    for rows in [1usize, 2, 7, 64] {
        for cols in COLUMNS {
            for dtype in [DType::F32, DType::I32] {
                for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
                    let name = format!("col_{}_{dtype}_{rows}x{cols}", op.name());
                    let mut g = Graph::new(&name);
                    let x = input(&mut g, "x", dtype, &[rows, cols]);
                    let y = g.reduce(op, x, vec![0]);
                    g.add_output("y", y);
                    if rows > 1 && cols > 1 {
                        assert_eq!(column_kernels(&g), vec![1], "{name}: one strided column kernel");
                    }
                    check_graph(&g, &name, c);
                    c += 1;
                }
            }
        }
    }
}

/// A reduction over the middle axis: the kernel's outer dimensions are `[a, c]` (not
/// mergeable), so a block of rows must not run across the end of a line of `c`.
#[test]
fn middle_axis_reductions_match_reference() {
    for (c, shape) in [[2usize, 9, 5], [3, 4, 6], [5, 3, 17], [2, 33, 16], [7, 2, 3]].iter().enumerate() {
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            let name = format!("mid_{}_{shape:?}", op.name());
            let mut g = Graph::new(&name);
            let x = input(&mut g, "x", DType::F32, shape);
            let y = g.reduce(op, x, vec![1]);
            g.add_output("y", y);
            assert_eq!(column_kernels(&g), vec![1], "{name}: one strided kernel");
            check_graph(&g, &name, c as u64);
        }
    }
}

/// Bias-gradient-like sums of fused expressions: a row-vector operand (one value per column,
/// the same for every row of the reduction), a column operand (the same for every column, so
/// one scalar shared by the four lanes), a transcendental and a select.
#[test]
fn fused_column_sums_match_reference() {
    for (c, (rows, cols)) in [(1usize, 5usize), (9, 17), (33, 40), (64, 21)].into_iter().enumerate() {
        let name = format!("fused_col_{rows}x{cols}");
        let mut g = Graph::new(&name);
        let x = input(&mut g, "x", DType::F32, &[rows, cols]);
        let w = input(&mut g, "w", DType::F32, &[cols]);
        let s = input(&mut g, "s", DType::F32, &[rows, 1]);
        let wb = g.broadcast_to(w, &[rows, cols]).unwrap();
        let sb = g.broadcast_to(s, &[rows, cols]).unwrap();
        let xw = g.binary(BinaryOp::Mul, x, wb);
        let e = g.unary(UnaryOp::Exp, sb);
        let t = g.binary(BinaryOp::Add, xw, e);
        let pos = g.binary(BinaryOp::Gt, x, sb);
        let r = g.unary(UnaryOp::Tanh, x);
        let v = g.add(Op::Select, &[pos, t, r], None);
        let y = g.reduce(ReduceOp::Sum, v, vec![0]);
        let m = g.reduce(ReduceOp::Max, v, vec![0]);
        g.add_output("y", y);
        g.add_output("m", m);
        if rows > 1 {
            assert!(!column_kernels(&g).is_empty(), "{name}: strided column kernels");
        }
        check_graph(&g, &name, c as u64);
    }
}

/// Two and three passes over the columns: the variance of each column (mean, then squared
/// deviations) and a softmax down each column (max, sum of exponentials, then every element
/// stored through the strided access).
#[test]
fn multi_pass_column_kernels_match_reference() {
    for (c, (rows, cols)) in [(2usize, 3usize), (7, 17), (16, 20), (31, 36)].into_iter().enumerate() {
        let name = format!("col_var_{rows}x{cols}");
        let mut g = Graph::new(&name);
        let x = input(&mut g, "x", DType::F32, &[rows, cols]);
        let s = g.reduce(ReduceOp::Sum, x, vec![0]);
        let inv = g.constant(1.0 / rows as f64, g.ty(s).clone());
        let mean = g.binary(BinaryOp::Mul, s, inv);
        let mb = g.broadcast_to(mean, &[rows, cols]).unwrap();
        let d = g.binary(BinaryOp::Sub, x, mb);
        let d2 = g.binary(BinaryOp::Mul, d, d);
        let v = g.reduce(ReduceOp::Sum, d2, vec![0]);
        g.add_output("v", v);
        assert_eq!(column_kernels(&g), vec![2], "{name}: one two-pass kernel");
        check_graph(&g, &name, c as u64);

        let name = format!("col_softmax_{rows}x{cols}");
        let mut g = Graph::new(&name);
        let x = input(&mut g, "x", DType::F32, &[rows, cols]);
        let m = g.reduce(ReduceOp::Max, x, vec![0]);
        let mb = g.broadcast_to(m, &[rows, cols]).unwrap();
        let d = g.binary(BinaryOp::Sub, x, mb);
        let e = g.unary(UnaryOp::Exp, d);
        let s = g.reduce(ReduceOp::Sum, e, vec![0]);
        let sb = g.broadcast_to(s, &[rows, cols]).unwrap();
        let y = g.binary(BinaryOp::Div, e, sb);
        g.add_output("y", y);
        assert_eq!(column_kernels(&g), vec![3], "{name}: one three-pass kernel");
        check_graph(&g, &name, c as u64);
    }
}

/// Row kernels whose row length is known when compiling emit only the loops that can run
/// (no 16-wide loop under 16 elements, no 4-wide loop for a remainder under 4, no scalar tail
/// after a multiple of 4): elementwise, one-pass and multi-pass row kernels over row lengths
/// around those widths.
#[test]
fn row_lengths_around_vector_widths_match_reference() {
    for n in [1usize, 2, 3, 4, 5, 8, 12, 15, 16, 17, 19, 20, 32, 36, 47] {
        let mut g = Graph::new(format!("rows_{n}"));
        let x = input(&mut g, "x", DType::F32, &[5, n]);
        let e = g.unary(UnaryOp::Exp, x);
        let y = g.binary(BinaryOp::Mul, e, x);
        g.add_output("y", y);
        let sq = g.binary(BinaryOp::Mul, x, x);
        let s = g.reduce(ReduceOp::Sum, sq, vec![1]);
        g.add_output("s", s);
        // softmax: max, then sum of exp, then the normalised values (three passes)
        let m = g.reduce(ReduceOp::Max, x, vec![1]);
        let mb = g.add(Op::Reshape, &[m], Some(TensorType::new(DType::F32, vec![5, 1])));
        let mb = g.add(Op::Broadcast, &[mb], Some(TensorType::new(DType::F32, vec![5, n])));
        let d = g.binary(BinaryOp::Sub, x, mb);
        let ex = g.unary(UnaryOp::Exp, d);
        let z = g.reduce(ReduceOp::Sum, ex, vec![1]);
        let zb = g.add(Op::Reshape, &[z], Some(TensorType::new(DType::F32, vec![5, 1])));
        let zb = g.add(Op::Broadcast, &[zb], Some(TensorType::new(DType::F32, vec![5, n])));
        let p = g.binary(BinaryOp::Div, ex, zb);
        g.add_output("p", p);
        check_graph(&g, &g.name.clone(), n as u64);
    }
}
