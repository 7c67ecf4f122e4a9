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
