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

/// A ReLU's gradient reads two products' outputs: the next layer's backward product (`dy w^T`)
/// and its own layer's forward product. It runs as the epilogue of the later one; the earlier
/// output is an ordinary finished input.
#[test]
fn an_epilogue_may_read_earlier_products() {
    for (c, &(m, k, n)) in [(4usize, 3usize, 5usize), (17, 5, 63)].iter().enumerate() {
        let mut g = Graph::new("relu_grad");
        let x = input(&mut g, "x", &[m, k]);
        let dy = input(&mut g, "dy", &[m, k]);
        let w1 = param(&mut g, "w1", &[k, n], Init::Normal { mean: 0.0, std: 0.5 });
        let w2 = param(&mut g, "w2", &[k, n], Init::Normal { mean: 0.0, std: 0.5 });
        let pre = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[x, w1], None);
        let back = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[dy, w2], None);
        let zero = scalar_like(&mut g, 0.0, pre);
        let on = g.binary(BinaryOp::Gt, pre, zero);
        let zeros = scalar_like(&mut g, 0.0, back);
        let grad = g.add(Op::Select, &[on, back, zeros], None);
        g.add_output("pre", pre);
        g.add_output("grad", grad);
        let s = schedule(&g);
        assert_eq!(s.kernels.len(), 2, "{}", modelc::sched::print_kernels(&s));
        assert!(matches!(&s.kernels[1].body, KernelBody::MatMul(mm) if mm.epilogue.is_some()));
        check_graph(&g, "relu_grad", c as u64);
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

/// Runs `g` twice with input `x` and returns the parameters after each run, plus how many
/// updates the schedule still copies after the run (the rest are written in place).
fn two_steps(g: &Graph, x: &ndarray::ArrayD<f32>, threads: usize) -> (Vec<Vec<Vec<f32>>>, usize) {
    let opts = modelc::runtime::ExecOptions { threads: Some(threads), parallel_min_work: Some(1), seed: 3 };
    let mut exe = modelc::runtime::Executable::new(g, &opts).unwrap();
    let mut states =
        vec![exe.params().iter().map(|t| t.as_f32().unwrap().iter().copied().collect()).collect()];
    for _ in 0..2 {
        exe.run(&[modelc::tensor::Tensor::F32(x.clone())]).unwrap();
        states.push(exe.params().iter().map(|t| t.as_f32().unwrap().iter().copied().collect()).collect());
    }
    (states, exe.schedule().updates.len())
}

/// A momentum step (`m <- 0.9 m + x w`, `w <- w - 0.1 m_new`): the new values are written
/// straight into the parameter buffers (no copy after the run) and equal the sequential
/// update, on one and two threads.
#[test]
fn optimizer_updates_are_written_in_place() {
    let mut g = Graph::new("momentum_step");
    let x = input(&mut g, "x", &[6, 20]);
    let w = param(&mut g, "w", &[6, 20], Init::Normal { mean: 0.0, std: 1.0 });
    let m = param(&mut g, "m", &[6, 20], Init::Normal { mean: 0.0, std: 1.0 });
    let grad = g.binary(BinaryOp::Mul, x, w);
    let k = scalar_like(&mut g, 0.9, m);
    let decayed = g.binary(BinaryOp::Mul, k, m);
    let new_m = g.binary(BinaryOp::Add, decayed, grad);
    let lr = scalar_like(&mut g, 0.1, w);
    let delta = g.binary(BinaryOp::Mul, lr, new_m);
    let new_w = g.binary(BinaryOp::Sub, w, delta);
    let loss = g.reduce(ReduceOp::Sum, grad, vec![0, 1]);
    g.add_output("loss", loss);
    g.updates.push((1, new_m));
    g.updates.push((0, new_w));
    let xs = ndarray::ArrayD::from_shape_fn(vec![6, 20], |i| (i[0] * 20 + i[1]) as f32 * 0.01 - 0.5);
    for threads in [1, 2] {
        let (states, copied) = two_steps(&g, &xs, threads);
        assert!(copied < g.updates.len(), "no update was written in place");
        for s in 0..2 {
            let (w0, m0) = (&states[s][0], &states[s][1]);
            for i in 0..w0.len() {
                let nm = 0.9f32 * m0[i] + xs.as_slice().unwrap()[i] * w0[i];
                let nw = w0[i] - 0.1f32 * nm;
                assert!((states[s + 1][1][i] - nm).abs() <= 1e-5 * (1.0 + nm.abs()), "m, step {s}, {i}");
                assert!((states[s + 1][0][i] - nw).abs() <= 1e-5 * (1.0 + nw.abs()), "w, step {s}, {i}");
            }
        }
    }
}

/// Where a kernel after the update still reads the old value, or the update reads the
/// parameter at other elements than it writes (a transpose), the update stays a copy after
/// the run and every kernel sees the old values.
#[test]
fn updates_that_others_read_are_not_written_in_place() {
    let n = 5;
    let xs = ndarray::ArrayD::from_shape_fn(vec![n, n], |i| (i[0] * n + i[1]) as f32 * 0.1);
    // w <- w - 0.1 * w^T * x: reads w transposed
    let mut g = Graph::new("transposed_update");
    let x = input(&mut g, "x", &[n, n]);
    let w = param(&mut g, "w", &[n, n], Init::Normal { mean: 0.0, std: 1.0 });
    let wt = g.add(Op::Permute { perm: vec![1, 0] }, &[w], None);
    let p = g.binary(BinaryOp::Mul, wt, x);
    let lr = scalar_like(&mut g, 0.1, w);
    let d = g.binary(BinaryOp::Mul, lr, p);
    let nw = g.binary(BinaryOp::Sub, w, d);
    g.updates.push((0, nw));
    let s = g.reduce(ReduceOp::Sum, x, vec![0, 1]);
    g.add_output("s", s);
    let (states, copied) = two_steps(&g, &xs, 1);
    assert_eq!(copied, 1);
    for st in 0..2 {
        let w0 = &states[st][0];
        for i in 0..n {
            for j in 0..n {
                let want = w0[i * n + j] - 0.1 * w0[j * n + i] * xs[[i, j]];
                assert!((states[st + 1][0][i * n + j] - want).abs() < 1e-5, "step {st} ({i}, {j})");
            }
        }
    }
    // a later kernel (the output `sum(w, 1)`, a reduction built after the update) reads the
    // old w: the update goes to a temporary
    let row_sums = |w: &ndarray::ArrayD<f32>| (0..n).map(|i| (0..n).map(|j| w[[i, j]]).sum()).collect();
    let (sums, copied) = read_after_update(&xs, |g, w| g.reduce(ReduceOp::Sum, w, vec![1]), row_sums);
    assert_eq!(copied, 1);
    for (i, s) in sums.iter().enumerate() {
        assert!((s.0 - s.1).abs() < 1e-5, "row {i}: {} vs {}", s.0, s.1);
    }
    // an elementwise reader (`2 w`) is merged into the update's kernel, which reads each old
    // element before it writes the new one: in place, and the output still sees the old w
    let two_w = |g: &mut Graph, w| {
        let two = scalar_like(g, 2.0, w);
        g.binary(BinaryOp::Mul, two, w)
    };
    let doubled_host = |w: &ndarray::ArrayD<f32>| w.iter().map(|b| 2.0 * b).collect();
    let (doubled, copied) = read_after_update(&xs, two_w, doubled_host);
    assert_eq!(copied, 0);
    for (o, b) in doubled {
        assert_eq!(o, b);
    }
}

/// One step of `w <- w - 0.1 x` with the output `read(w)` built after the update; returns
/// (output element, `host(old w)` element) pairs and the number of updates copied after the run.
fn read_after_update(
    xs: &ndarray::ArrayD<f32>,
    read: impl Fn(&mut Graph, NodeId) -> NodeId,
    host: impl Fn(&ndarray::ArrayD<f32>) -> Vec<f32>,
) -> (Vec<(f32, f32)>, usize) {
    let n = xs.shape()[0];
    let mut g = Graph::new("read_after_update");
    let x = input(&mut g, "x", &[n, n]);
    let w = param(&mut g, "w", &[n, n], Init::Normal { mean: 0.0, std: 1.0 });
    let lr = scalar_like(&mut g, 0.1, w);
    let d = g.binary(BinaryOp::Mul, lr, x);
    let nw = g.binary(BinaryOp::Sub, w, d);
    g.updates.push((0, nw));
    let r = read(&mut g, w);
    g.add_output("r", r);
    let opts = modelc::runtime::ExecOptions { threads: Some(1), parallel_min_work: None, seed: 1 };
    let mut exe = modelc::runtime::Executable::new(&g, &opts).unwrap();
    let copied = exe.schedule().updates.len();
    let before = exe.params()[0].as_f32().unwrap().clone();
    let out = exe.run(&[modelc::tensor::Tensor::F32(xs.clone())]).unwrap();
    let got = out[0].as_f32().unwrap().iter().copied().collect::<Vec<f32>>();
    let after = exe.params()[0].as_f32().unwrap().clone();
    for ((a, b), x) in after.iter().zip(before.iter()).zip(xs.iter()) {
        assert!((a - (b - 0.1 * x)).abs() < 1e-6, "the update itself");
    }
    assert_eq!(got.len(), host(&before).len());
    (got.into_iter().zip(host(&before)).collect(), copied)
}

/// A layout change fused with elementwise work (the NHWC -> NCHW step before a CNN's flatten
/// and its gradient): loads strided along the inner loop are vectorised lane by lane. Checked
/// against the interpreter with row lengths that leave vector tails, a strided bool mask
/// (`select`) and a contiguous operand in the same pass, at 1 and 2 threads.
#[test]
fn strided_loads_in_elementwise_kernels_match_reference() {
    for (c, &(n, h, w, ch)) in
        [(1usize, 4usize, 4usize, 32usize), (2, 3, 5, 3), (1, 2, 7, 5), (3, 1, 9, 17)].iter().enumerate()
    {
        let mut g = Graph::new(format!("nhwc_to_nchw_{n}x{h}x{w}x{ch}"));
        let x = input(&mut g, "x", &[n, h, w, ch]);
        let d = input(&mut g, "d", &[n, ch, h, w]);
        let b = input(&mut g, "b", &[ch]);
        let xt = g.add(Op::Permute { perm: vec![0, 3, 1, 2] }, &[x], None);
        let bc = g.reshape(b, vec![1, ch, 1, 1]);
        let bb = g.broadcast_to(bc, &[n, ch, h, w]).unwrap();
        let z = g.binary(BinaryOp::Add, xt, bb);
        let zero = scalar_like(&mut g, 0.0, z);
        let relu = g.binary(BinaryOp::Max, z, zero);
        // a strided bool (the relu mask of the permuted input) selecting a contiguous operand
        let pos = g.binary(BinaryOp::Gt, xt, zero);
        let gated = g.add(Op::Select, &[pos, d, zero], None);
        let y = g.binary(BinaryOp::Mul, relu, gated);
        g.add_output("y", y);
        check_strided(&g, c as u64, "reads x", |l| {
            l.exprs.iter().any(|e| matches!(e, modelc::sched::Expr::Load { access, .. } if access.inner > 1))
        });
    }
}

/// Stores strided along the inner loop (each slice of an im2col-style concatenation of
/// one-channel windows writes every third element) are vectorised lane by lane: checked
/// against the interpreter with tails, at 1 and 2 threads.
#[test]
fn strided_stores_in_elementwise_kernels_match_reference() {
    for (c, &(n, h, w)) in [(2usize, 6usize, 8usize), (1, 3, 7), (3, 5, 13)].iter().enumerate() {
        let mut g = Graph::new(format!("windows_{n}x{h}x{w}"));
        let x = input(&mut g, "x", &[n, h, w, 1]);
        let windows: Vec<NodeId> = (0..3)
            .map(|dx| {
                let s = g.add(Op::Slice { axis: 2, start: dx, end: w - 2 + dx, step: 1 }, &[x], None);
                let t = g.unary(UnaryOp::Tanh, s);
                let two = scalar_like(&mut g, 2.0, t);
                g.binary(BinaryOp::Mul, t, two)
            })
            .collect();
        let y = g.add(Op::Concat { axis: 3 }, &windows, None);
        g.add_output("y", y);
        check_strided(&g, c as u64, "stores", |l| l.stores.iter().any(|st| st.access.inner > 1));
    }
}

/// Asserts that a loop kernel of `g`'s schedule accesses memory strided along its inner loop
/// (`strided` says which way; `what` names it), then checks `g` against the interpreter.
fn check_strided(g: &Graph, counter: u64, what: &str, strided: impl Fn(&modelc::sched::LoopKernel) -> bool) {
    let s = schedule(g);
    let found = s.kernels.iter().any(|k| matches!(&k.body, KernelBody::Loop(l) if strided(l)));
    assert!(found, "a kernel {what} strided along its inner loop: {}", modelc::sched::print_kernels(&s));
    check_graph(g, &g.name.clone(), counter);
}
