//! Differential tests of fused chains (softmax, layer norm, GELU-tanh, matmul epilogues,
//! attention) and checks that they fuse into the promised number of kernels.

mod jit_support;

use jit_support::check_graph;
use modelc::ir::{BinaryOp, DType, Graph, Init, NodeId, Op, ParamInfo, ReduceOp, TensorType, UnaryOp};
use modelc::sched::{KernelBody, schedule};

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    g.add_input(name, TensorType::f32(shape.to_vec()), None)
}

fn param(g: &mut Graph, path: &str, shape: &[usize], init: Init) -> NodeId {
    let i = g.add_param(ParamInfo {
        path: path.into(),
        ty: TensorType::f32(shape.to_vec()),
        init,
        trainable: true,
        span: None,
    });
    g.param_node(i)
}

fn scalar_like(g: &mut Graph, v: f64, like: NodeId) -> NodeId {
    let ty = g.ty(like).clone();
    g.constant(v, ty)
}

/// Softmax over the last axis, built from primitives the way the stdlib does.
fn softmax(g: &mut Graph, x: NodeId) -> NodeId {
    let shape = g.shape(x).to_vec();
    let last = shape.len() as u32 - 1;
    let m = g.reduce(ReduceOp::Max, x, vec![last]);
    let mb = g.broadcast_to(m, &shape).unwrap();
    let d = g.binary(BinaryOp::Sub, x, mb);
    let e = g.unary(UnaryOp::Exp, d);
    let s = g.reduce(ReduceOp::Sum, e, vec![last]);
    let sb = g.broadcast_to(s, &shape).unwrap();
    g.binary(BinaryOp::Div, e, sb)
}

fn layer_norm(g: &mut Graph, x: NodeId, gamma: NodeId, beta: NodeId) -> NodeId {
    let shape = g.shape(x).to_vec();
    let last = shape.len() as u32 - 1;
    let n = shape[last as usize] as f64;
    let s = g.reduce(ReduceOp::Sum, x, vec![last]);
    let inv_n = scalar_like(g, 1.0 / n, s);
    let mean = g.binary(BinaryOp::Mul, s, inv_n);
    let mb = g.broadcast_to(mean, &shape).unwrap();
    let xc = g.binary(BinaryOp::Sub, x, mb);
    let sq = g.binary(BinaryOp::Mul, xc, xc);
    let v = g.reduce(ReduceOp::Sum, sq, vec![last]);
    let inv_n = scalar_like(g, 1.0 / n, v);
    let var = g.binary(BinaryOp::Mul, v, inv_n);
    let eps = scalar_like(g, 1e-5, var);
    let ve = g.binary(BinaryOp::Add, var, eps);
    let r = g.unary(UnaryOp::Rsqrt, ve);
    let rb = g.broadcast_to(r, &shape).unwrap();
    let xn = g.binary(BinaryOp::Mul, xc, rb);
    let gb = g.broadcast_to(gamma, &shape).unwrap();
    let bb = g.broadcast_to(beta, &shape).unwrap();
    let y = g.binary(BinaryOp::Mul, xn, gb);
    g.binary(BinaryOp::Add, y, bb)
}

fn gelu_tanh(g: &mut Graph, x: NodeId) -> NodeId {
    let c = |g: &mut Graph, v: f64| scalar_like(g, v, x);
    let x2 = g.binary(BinaryOp::Mul, x, x);
    let x3 = g.binary(BinaryOp::Mul, x2, x);
    let k = c(g, 0.044715);
    let t = g.binary(BinaryOp::Mul, x3, k);
    let inner = g.binary(BinaryOp::Add, x, t);
    let s = c(g, (2.0 / std::f64::consts::PI).sqrt());
    let u = g.binary(BinaryOp::Mul, inner, s);
    let th = g.unary(UnaryOp::Tanh, u);
    let one = c(g, 1.0);
    let p = g.binary(BinaryOp::Add, th, one);
    let half = c(g, 0.5);
    let hx = g.binary(BinaryOp::Mul, x, half);
    g.binary(BinaryOp::Mul, hx, p)
}

fn loop_kernels(g: &Graph) -> usize {
    schedule(g).kernels.len()
}

#[test]
fn softmax_is_one_kernel_and_matches() {
    for (c, shape) in [&[1usize, 1][..], &[3, 17], &[5, 63], &[2, 3, 5]].iter().enumerate() {
        let mut g = Graph::new("softmax");
        let x = input(&mut g, "x", shape);
        let y = softmax(&mut g, x);
        g.add_output("y", y);
        assert_eq!(loop_kernels(&g), 1, "softmax kernels");
        check_graph(&g, "softmax", c as u64);
    }
}

#[test]
fn layer_norm_is_one_kernel_and_matches() {
    for (c, shape) in [&[1usize, 3][..], &[3, 17], &[5, 63], &[2, 3, 5]].iter().enumerate() {
        let mut g = Graph::new("layer_norm");
        let d = *shape.last().unwrap();
        let x = input(&mut g, "x", shape);
        let gamma = param(&mut g, "ln.weight", &[d], Init::Normal { mean: 1.0, std: 0.1 });
        let beta = param(&mut g, "ln.bias", &[d], Init::Normal { mean: 0.0, std: 0.1 });
        let y = layer_norm(&mut g, x, gamma, beta);
        g.add_output("y", y);
        assert_eq!(loop_kernels(&g), 1, "layer norm kernels");
        check_graph(&g, "layer_norm", c as u64);
    }
}

#[test]
fn gelu_tanh_is_one_kernel_and_matches() {
    for (c, shape) in [&[1usize][..], &[3, 17], &[5, 63]].iter().enumerate() {
        let mut g = Graph::new("gelu_tanh");
        let x = input(&mut g, "x", shape);
        let y = gelu_tanh(&mut g, x);
        g.add_output("y", y);
        assert_eq!(loop_kernels(&g), 1);
        check_graph(&g, "gelu_tanh", c as u64);
    }
}

#[test]
fn matmul_bias_relu_residual_fuses_into_the_epilogue() {
    for (c, &(m, k, n)) in [(1usize, 3usize, 5usize), (17, 5, 63), (63, 17, 3)].iter().enumerate() {
        let mut g = Graph::new("linear_relu_residual");
        let x = input(&mut g, "x", &[m, k]);
        let r = input(&mut g, "r", &[m, n]);
        let w = param(&mut g, "w", &[k, n], Init::Normal { mean: 0.0, std: 0.5 });
        let b = param(&mut g, "b", &[n], Init::Normal { mean: 0.0, std: 0.5 });
        let mm = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[x, w], None);
        let bb = g.broadcast_to(b, &[m, n]).unwrap();
        let z = g.binary(BinaryOp::Add, mm, bb);
        let zero = scalar_like(&mut g, 0.0, z);
        let relu = g.binary(BinaryOp::Max, z, zero);
        let y = g.binary(BinaryOp::Add, relu, r);
        g.add_output("y", y);
        let s = schedule(&g);
        assert_eq!(s.kernels.len(), 1, "{}", modelc::sched::print_kernels(&s));
        assert!(matches!(&s.kernels[0].body, KernelBody::MatMul(mm) if mm.epilogue.is_some()));
        check_graph(&g, "linear_relu_residual", c as u64);
    }
}

/// matmul -> scale -> causal mask (iota compare + select) -> softmax -> matmul, batched.
#[test]
fn attention_like_chain_matches() {
    for (c, &(b, t, d)) in [(1usize, 1usize, 3usize), (2, 5, 17), (3, 17, 5)].iter().enumerate() {
        let mut g = Graph::new("attention");
        let q = input(&mut g, "q", &[b, t, d]);
        let k = input(&mut g, "k", &[b, t, d]);
        let v = input(&mut g, "v", &[b, t, d]);
        let s = g.add(Op::MatMul { trans_a: false, trans_b: true }, &[q, k], None);
        let scale = scalar_like(&mut g, 1.0 / (d as f64).sqrt(), s);
        let s = g.binary(BinaryOp::Mul, s, scale);
        let ity = TensorType::new(DType::I32, vec![b, t, t]);
        let row = g.add(Op::Iota { axis: 1 }, &[], Some(ity.clone()));
        let col = g.add(Op::Iota { axis: 2 }, &[], Some(ity));
        let allowed = g.binary(BinaryOp::Le, col, row);
        let neg = scalar_like(&mut g, -1e9, s);
        let masked = g.add(Op::Select, &[allowed, s, neg], None);
        let p = softmax(&mut g, masked);
        let y = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[p, v], None);
        g.add_output("y", y);
        let sched = schedule(&g);
        // two matmuls and one fused scale-mask-softmax kernel (with one key, the softmax is
        // trivial and the whole chain is the first matmul's epilogue)
        assert!(sched.kernels.len() <= 3, "{}", modelc::sched::print_kernels(&sched));
        check_graph(&g, "attention", c as u64);
    }
}

#[test]
fn parameter_updates_apply_in_place() {
    // w <- w - 0.1 * x, applied after each run; the output reads the old value
    let mut g = Graph::new("sgd_step");
    let x = input(&mut g, "x", &[3, 5]);
    let w = param(&mut g, "w", &[3, 5], Init::Normal { mean: 0.0, std: 1.0 });
    let lr = scalar_like(&mut g, 0.1, x);
    let step = g.binary(BinaryOp::Mul, x, lr);
    let nw = g.binary(BinaryOp::Sub, w, step);
    g.add_output("w_old", w);
    g.updates.push((0, nw));
    let mut exe = modelc::runtime::Executable::new(&g, &Default::default()).unwrap();
    let before = exe.params()[0].as_f32().unwrap().clone();
    let xs = ndarray::ArrayD::from_elem(vec![3, 5], 1.0f32);
    let out = exe.run(&[modelc::tensor::Tensor::F32(xs.clone())]).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), &before);
    let after = exe.params()[0].as_f32().unwrap().clone();
    for (a, b) in after.iter().zip(before.iter()) {
        assert!((a - (b - 0.1)).abs() < 1e-6);
    }
}

/// A residual add after a reshape of the matmul output still runs as its epilogue, and a
/// reshape that changes the row length does not (its rows are not the matmul's rows).
#[test]
fn epilogues_follow_rows_through_reshapes() {
    for (reshape_to, fused) in [(vec![1usize, 6, 10], true), (vec![10, 6], false), (vec![60], false)] {
        let mut g = Graph::new("epilogue_reshape");
        let x = input(&mut g, "x", &[6, 5]);
        let r = input(&mut g, "r", &reshape_to);
        let w = param(&mut g, "w", &[5, 10], Init::Normal { mean: 0.0, std: 0.5 });
        let mm = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[x, w], None);
        let m2 = g.reshape(mm, reshape_to.clone());
        let y = g.binary(BinaryOp::Add, m2, r);
        g.add_output("y", y);
        let s = schedule(&g);
        assert_eq!(s.kernels.len() == 1, fused, "{}", modelc::sched::print_kernels(&s));
        check_graph(&g, "epilogue_reshape", reshape_to.len() as u64);
    }
}
