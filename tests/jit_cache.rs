//! Structurally identical kernels compile once per process: a stack of equal blocks compiles
//! the kernels of one block and reuses them for the others.

use modelc::ir::{BinaryOp, Graph, Init, NodeId, Op, ParamInfo, ReduceOp, TensorType, UnaryOp};
use modelc::runtime::{ExecOptions, Executable};
use modelc::tensor::Tensor;

fn param(g: &mut Graph, path: &str, shape: &[usize]) -> NodeId {
    let i = g.add_param(ParamInfo {
        path: path.into(),
        ty: TensorType::f32(shape.to_vec()),
        init: Init::Normal { mean: 0.0, std: 0.2 },
        trainable: true,
        span: None,
    });
    g.param_node(i)
}

/// `x + tanh(norm(x) @ w + b)` with its own parameters.
fn block(g: &mut Graph, x: NodeId, i: usize) -> NodeId {
    let shape = g.shape(x).to_vec();
    let d = shape[1];
    let s = g.reduce(ReduceOp::Sum, x, vec![1]);
    let sb = g.broadcast_to(s, &shape).unwrap();
    let inv = g.constant(1.0 / d as f64, TensorType::f32(shape.clone()));
    let mean = g.binary(BinaryOp::Mul, sb, inv);
    let xc = g.binary(BinaryOp::Sub, x, mean);
    let w = param(g, &format!("blocks.{i}.w"), &[d, d]);
    let b = param(g, &format!("blocks.{i}.b"), &[d]);
    let mm = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[xc, w], None);
    let bb = g.broadcast_to(b, &shape).unwrap();
    let z = g.binary(BinaryOp::Add, mm, bb);
    let t = g.unary(UnaryOp::Tanh, z);
    g.binary(BinaryOp::Add, x, t)
}

fn stack(n: usize) -> Graph {
    let mut g = Graph::new(format!("stack{n}"));
    let mut x = g.add_input("x", TensorType::f32(vec![7, 13]), None);
    for i in 0..n {
        x = block(&mut g, x, i);
    }
    g.add_output("y", x);
    g
}

#[test]
fn a_stack_of_equal_blocks_compiles_each_distinct_kernel_once() {
    let one = Executable::new(&stack(1), &ExecOptions::default()).unwrap();
    let per_block = one.schedule().kernels.len();
    assert!(one.timings().kernels_compiled >= 1);
    let mut four = Executable::new(&stack(4), &ExecOptions::default()).unwrap();
    assert_eq!(
        four.schedule().kernels.len(),
        4 * per_block,
        "{}\n{}",
        modelc::sched::print_kernels(one.schedule()),
        modelc::sched::print_kernels(four.schedule())
    );
    assert_eq!(four.timings().kernels_compiled, 0, "every kernel of the 4-block stack was already compiled");
    // and the shared code computes each block with its own parameters
    let x = Tensor::F32(ndarray::ArrayD::from_elem(vec![7, 13], 0.5f32));
    let y = four.run(&[x]).unwrap();
    assert!(y[0].as_f32().unwrap().iter().all(|v| v.is_finite()));
}

/// `tanh(x) * c + x` over an input of `shape` (one flat kernel).
fn flat_chain(shape: &[usize]) -> Graph {
    let mut g = Graph::new("flat");
    let x = g.add_input("x", TensorType::f32(shape.to_vec()), None);
    let t = g.unary(UnaryOp::Tanh, x);
    // a constant no other test uses, so the first compile below is this test's own
    let c = g.constant(1.918_273_6, TensorType::f32(shape.to_vec()));
    let m = g.binary(BinaryOp::Mul, t, c);
    let y = g.binary(BinaryOp::Add, m, x);
    g.add_output("y", y);
    g
}

#[test]
fn flat_kernels_of_different_lengths_share_code() {
    let mut small = Executable::new(&flat_chain(&[7, 13]), &ExecOptions::default()).unwrap();
    assert_eq!(small.schedule().kernels.len(), 1, "{}", modelc::sched::print_kernels(small.schedule()));
    assert_eq!(small.timings().kernels_compiled, 1);
    let mut large = Executable::new(&flat_chain(&[1000, 3]), &ExecOptions::default()).unwrap();
    assert_eq!(large.timings().kernels_compiled, 0, "the flat kernel's code does not depend on its length");
    // each computes its own length, tails included
    for (exe, n) in [(&mut small, 91usize), (&mut large, 3000)] {
        let shape = exe.schedule().graph.inputs[0].ty.shape.clone();
        let xs: Vec<f32> = (0..n).map(|i| (i as f32 - 40.0) * 0.05).collect();
        let x = Tensor::F32(ndarray::ArrayD::from_shape_vec(shape, xs.clone()).unwrap());
        let y = exe.run(&[x]).unwrap();
        let y = y[0].as_f32().unwrap();
        assert_eq!(y.len(), n);
        for (v, x) in y.iter().zip(&xs) {
            let want = x.tanh() * 1.918_273_6 + x;
            assert!((v - want).abs() <= 1e-5 * want.abs().max(1.0), "{v} vs {want} at x = {x}");
        }
    }
}
