//! The `permute` pass: elementwise regions recomputed in the layout of their permuted operands
//! or users. Each case checks that the rewrite happens (node pattern, kernel count) or does
//! not (no gain, no ping-pong), and that the reference interpreter's results are bit for bit
//! those of the graph before the passes; the JIT is checked against both.

mod jit_support;

use jit_support::{check_graph, random_inputs, rng_for, run_jit};
use modelc::interp;
use modelc::ir::{
    BinaryOp, DType, Graph, Init, NodeId, Op, ParamInfo, TensorType, UnaryOp, print_graph, verify,
};
use modelc::passes::{PipelineOptions, pass_by_name, permute, run_pipeline};
use modelc::runtime::init_params;
use modelc::sched::schedule;
use modelc::tensor::Tensor;
use rand::Rng;

const NCHW: [u32; 4] = [0, 3, 1, 2];
const NHWC: [u32; 4] = [0, 2, 3, 1];

fn opts() -> PipelineOptions {
    PipelineOptions { max_rounds: 8, verify: true }
}

fn input(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    g.add_input(name, TensorType::f32(shape.to_vec()), None)
}

fn param(g: &mut Graph, path: &str, shape: &[usize]) -> NodeId {
    let i = g.add_param(ParamInfo {
        path: path.into(),
        ty: TensorType::f32(shape.to_vec()),
        init: Init::Uniform { lo: -1.0, hi: 1.0 },
        trainable: true,
        span: None,
    });
    g.param_node(i)
}

fn perm(g: &mut Graph, x: NodeId, p: &[u32]) -> NodeId {
    g.add(Op::Permute { perm: p.to_vec() }, &[x], None)
}

fn splat(g: &mut Graph, v: f64, like: NodeId) -> NodeId {
    let ty = g.ty(like).clone();
    g.constant(v, ty)
}

/// The relu gradient mask of autodiff: `select(x > 0, 1, select(x == 0, 0.5, 0))`.
fn relu_mask(g: &mut Graph, x: NodeId) -> NodeId {
    let zero = splat(g, 0.0, x);
    let one = splat(g, 1.0, x);
    let half = splat(g, 0.5, x);
    let gt = g.binary(BinaryOp::Gt, x, zero);
    let eq = g.binary(BinaryOp::Eq, x, zero);
    let inner = g.add(Op::Select, &[eq, half, zero], None);
    g.add(Op::Select, &[gt, one, inner], None)
}

fn count_op(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.nodes.iter().filter(|n| pred(&n.op)).count()
}

fn permutes(g: &Graph) -> usize {
    count_op(g, |op| matches!(op, Op::Permute { .. }))
}

/// The pipeline without the `permute` pass (every other pass, same order, to a fixed point).
fn pipeline_without_permute(g: &Graph) -> Graph {
    let mut g = g.clone();
    for _ in 0..8 {
        let before = print_graph(&g);
        for name in ["fold", "simplify", "cse", "dce"] {
            g = pass_by_name(name).expect("a pass")(&g);
            verify(&g).unwrap();
        }
        if print_graph(&g) == before {
            break;
        }
    }
    g
}

/// Random inputs with every third float an exact zero (+0.0 or -0.0), so relu masks and
/// comparisons see ties.
fn inputs_with_zeros(g: &Graph, name: &str) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut rng = rng_for(name, 0);
    let mut inputs = random_inputs(g, &mut rng);
    for t in &mut inputs {
        if let Tensor::F32(a) = t {
            for (i, v) in a.iter_mut().enumerate() {
                if i % 3 == 0 {
                    *v = if rng.random_bool(0.5) { 0.0 } else { -0.0 };
                }
            }
        }
    }
    (inputs, init_params(g, 7))
}

fn bits(t: &Tensor) -> Vec<u32> {
    match t {
        Tensor::F32(a) => a.iter().map(|v| v.to_bits()).collect(),
        Tensor::I32(a) => a.iter().map(|&v| v as u32).collect(),
    }
}

fn reference(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> Vec<Tensor> {
    let out = interp::run::<f32>(g, inputs, params).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    out.outputs.into_iter().map(|(_, t)| t).collect()
}

/// The interpreter gives bit-identical outputs on `before` and `after`; when `jit_bitwise`,
/// so does the JIT (graphs without reductions or matmuls); and the JIT on `after` is close to
/// the interpreter.
fn assert_same(before: &Graph, after: &Graph, name: &str, jit_bitwise: bool) {
    let (inputs, params) = inputs_with_zeros(before, name);
    let want = reference(before, &inputs, &params);
    let got = reference(after, &inputs, &params);
    assert_eq!(want.len(), got.len());
    for (i, (w, a)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.shape(), a.shape(), "{name}: output {i} shape");
        assert_eq!(bits(w), bits(a), "{name}: output {i} differs after the passes");
    }
    if jit_bitwise {
        for threads in [1, 2] {
            let jb = run_jit(before, &inputs, &params, threads);
            let ja = run_jit(after, &inputs, &params, threads);
            for (i, (w, a)) in jb.iter().zip(&ja).enumerate() {
                assert_eq!(
                    bits(w),
                    bits(a),
                    "{name}: JIT output {i} differs after the passes ({threads} threads)"
                );
            }
        }
    }
    check_graph(after, name, 1);
}

#[test]
fn relu_between_permutes_is_computed_in_the_inner_layout() {
    // conv -> permute(0,3,1,2) -> relu -> permute(0,2,3,1) -> conv
    let mut g = Graph::new("relu_between");
    let x = input(&mut g, "x", &[2, 3, 4, 5]);
    let p = perm(&mut g, x, &NCHW);
    let zero = splat(&mut g, 0.0, p);
    let r = g.binary(BinaryOp::Max, p, zero);
    let y = perm(&mut g, r, &NHWC);
    g.add_output("y", y);
    let out = run_pipeline(g.clone(), &opts());
    assert_eq!(permutes(&out), 0, "{}", print_graph(&out));
    assert_eq!(out.shape(out.outputs[0].node), [2, 3, 4, 5]);
    assert!(matches!(out.node(out.outputs[0].node).op, Op::Binary(BinaryOp::Max)));
    assert_same(&g, &out, "relu_between", true);
}

/// The relu backward between two channels-last convolutions, as autodiff writes it:
/// `permute_nhwc(grad_nchw * relu_mask(pre_nchw))` where both operands are NCHW views of
/// NHWC buffers, feeding a weight-gradient matmul and a bias-gradient sum.
fn relu_backward_graph() -> Graph {
    let (b, h, w, c) = (4, 3, 3, 8);
    let mut g = Graph::new("relu_backward");
    let grad = input(&mut g, "grad", &[b, h, w, c]);
    let pre = input(&mut g, "pre", &[b, h, w, c]);
    let cols = input(&mut g, "cols", &[b * h * w, 5]);
    let gp = perm(&mut g, grad, &NCHW);
    relu_backward_into_gradients(&mut g, gp, pre, cols, b * h * w, c);
    g
}

/// `incoming * relu_mask(NCHW view of pre)`, viewed back as NHWC rows of `c`, into a weight
/// gradient (`cols^T @ rows`) and a bias gradient (column sums): outputs `dw` and `db`.
fn relu_backward_into_gradients(
    g: &mut Graph,
    incoming: NodeId,
    pre: NodeId,
    cols: NodeId,
    rows: usize,
    c: usize,
) {
    let pp = perm(g, pre, &NCHW);
    let mask = relu_mask(g, pp);
    let m = g.binary(BinaryOp::Mul, incoming, mask);
    let back = perm(g, m, &NHWC);
    let flat = g.reshape(back, vec![rows, c]);
    let dw = g.add(Op::MatMul { trans_a: true, trans_b: false }, &[cols, flat], None);
    let db = g.reduce(modelc::ir::ReduceOp::Sum, flat, vec![0]);
    g.add_output("dw", dw);
    g.add_output("db", db);
}

#[test]
fn relu_backward_between_permutes_loses_its_permutes_and_a_copy() {
    let g = relu_backward_graph();
    let without = pipeline_without_permute(&g);
    let out = run_pipeline(g.clone(), &opts());
    assert_eq!(permutes(&without), 3);
    assert_eq!(permutes(&out), 0, "{}", print_graph(&out));
    let (k0, k1) = (schedule(&without).kernels.len(), schedule(&out).kernels.len());
    assert!(k1 < k0, "kernels {k0} -> {k1}");
    assert_same(&g, &out, "relu_backward", false);
}

/// conv2's relu backward: the incoming gradient is a reshape of a [B, C*H*W] matmul result
/// (NCHW order), the pre-activation an NCHW view of an NHWC buffer, the user NHWC.
fn mixed_graph() -> Graph {
    let (b, h, w, c) = (4, 2, 2, 8);
    let mut g = Graph::new("mixed");
    let dflat = input(&mut g, "dflat", &[b, c * h * w]);
    let pre = input(&mut g, "pre", &[b, h, w, c]);
    let cols = input(&mut g, "cols", &[b * h * w, 5]);
    let d = g.reshape(dflat, vec![b, c, h, w]);
    relu_backward_into_gradients(&mut g, d, pre, cols, b * h * w, c);
    g
}

#[test]
fn one_plain_operand_is_read_through_a_permute_when_that_still_saves_a_copy() {
    let g = mixed_graph();
    let without = pipeline_without_permute(&g);
    let out = run_pipeline(g.clone(), &opts());
    assert_eq!(permutes(&without), 2);
    // one permute left: the NHWC view of the reshaped gradient
    assert_eq!(permutes(&out), 1, "{}", print_graph(&out));
    let p = out.nodes.iter().find(|n| matches!(n.op, Op::Permute { .. })).unwrap();
    assert_eq!(p.op, Op::Permute { perm: NHWC.to_vec() });
    assert!(matches!(out.node(p.args[0]).op, Op::Reshape));
    let (k0, k1) = (schedule(&without).kernels.len(), schedule(&out).kernels.len());
    assert!(k1 < k0, "kernels {k0} -> {k1}");
    assert_same(&g, &out, "mixed", false);
}

#[test]
fn broadcast_bias_casts_iota_and_comparisons_follow_the_layout() {
    // permute_nhwc(select(iota_c < 3, cast<f32>(cast<i32>(x_nchw)) + bias_c, -x_nchw))
    let (b, h, w, c) = (2, 3, 4, 6);
    let mut g = Graph::new("bias_cast_iota");
    let x = input(&mut g, "x", &[b, h, w, c]);
    let bias = param(&mut g, "bias", &[c]);
    let xp = perm(&mut g, x, &NCHW);
    let shape = g.shape(xp).to_vec();
    let b4 = g.reshape(bias, vec![1, c, 1, 1]);
    let bb = g.broadcast_to(b4, &shape).unwrap();
    let xi = g.cast(xp, DType::I32);
    let xf = g.cast(xi, DType::F32);
    let sum = g.binary(BinaryOp::Add, xf, bb);
    let neg = g.unary(UnaryOp::Neg, xp);
    let iota = g.add(Op::Iota { axis: 1 }, &[], Some(TensorType::new(DType::I32, shape.clone())));
    let three = g.constant(3.0, TensorType::new(DType::I32, shape.clone()));
    let lt = g.binary(BinaryOp::Lt, iota, three);
    let sel = g.add(Op::Select, &[lt, sum, neg], None);
    let y = perm(&mut g, sel, &NHWC);
    g.add_output("y", y);
    let out = run_pipeline(g.clone(), &opts());
    assert_eq!(permutes(&out), 0, "{}", print_graph(&out));
    // the iota now counts along the last (channel) axis, the bias is a [1, 1, 1, C] view
    let iota = out.nodes.iter().find(|n| matches!(n.op, Op::Iota { .. })).unwrap();
    assert_eq!(iota.op, Op::Iota { axis: 3 });
    let bc = out.nodes.iter().find(|n| n.op == Op::Broadcast).unwrap();
    assert_eq!(out.shape(bc.args[0]), [1, 1, 1, c]);
    assert_same(&g, &out, "bias_cast_iota", true);
}

#[test]
fn no_rewrite_without_a_gain() {
    // relu of an NCHW view feeding a flatten (conv2 -> fc): computing it channels-last would
    // only move the strided read from the operand to the user
    let mut g = Graph::new("no_gain");
    let x = input(&mut g, "x", &[2, 3, 3, 4]);
    let p = perm(&mut g, x, &NCHW);
    let zero = splat(&mut g, 0.0, p);
    let r = g.binary(BinaryOp::Max, p, zero);
    let flat = g.reshape(r, vec![2, 36]);
    g.add_output("y", flat);
    let same = permute(&g);
    assert_eq!(print_graph(&same), print_graph(&g));
    // two plain operands, one permuted: still computed where the plain ones are
    let mut g = Graph::new("no_gain_2");
    let a = input(&mut g, "a", &[2, 3, 4]);
    let bb = input(&mut g, "b", &[2, 3, 4]);
    let c = input(&mut g, "c", &[2, 4, 3]);
    let cp = perm(&mut g, c, &[0, 2, 1]);
    let s = g.binary(BinaryOp::Add, a, bb);
    let m = g.binary(BinaryOp::Mul, s, cp);
    g.add_output("m", m);
    assert_eq!(print_graph(&permute(&g)), print_graph(&g));
}

#[test]
fn the_pipeline_reaches_a_fixed_point_without_ping_pong() {
    for g in [relu_backward_graph(), mixed_graph()] {
        let once = run_pipeline(g.clone(), &opts());
        let again = permute(&once);
        assert_eq!(print_graph(&again), print_graph(&once), "the pass undid or redid its own rewrite");
        let twice = run_pipeline(once.clone(), &opts());
        assert_eq!(print_graph(&twice), print_graph(&once));
    }
}

#[test]
fn a_root_with_other_users_serves_them_through_the_inverse_permute() {
    // y = permute_nhwc(exp(x_nchw)) and also z = exp(x_nchw) * 2 read in NCHW by a sum
    let mut g = Graph::new("shared_root");
    let x = input(&mut g, "x", &[2, 3, 4, 5]);
    let p = perm(&mut g, x, &NCHW);
    let e = g.unary(UnaryOp::Exp, p);
    let y = perm(&mut g, e, &NHWC);
    let y2 = perm(&mut g, e, &NHWC);
    let neg = g.unary(UnaryOp::Neg, y2);
    let two = splat(&mut g, 2.0, e);
    let z = g.binary(BinaryOp::Mul, e, two);
    g.add_output("y", y);
    g.add_output("neg", neg);
    g.add_output("z", z);
    let out = run_pipeline(g.clone(), &opts());
    // before: x read strided, two permute users; after: one user reads exp through a permute
    assert!(permutes(&out) <= 1, "{}", print_graph(&out));
    assert_same(&g, &out, "shared_root", true);
}

/// Random elementwise graphs over a few layouts of one rank-3 shape: every op the pass moves
/// (unary, binary, comparisons, select, casts, constants, iota, broadcasts), the interpreter
/// bit for bit before and after the whole pipeline.
#[test]
fn random_elementwise_graphs_keep_their_values_bit_for_bit() {
    let perms: [[u32; 3]; 4] = [[0, 1, 2], [0, 2, 1], [2, 0, 1], [1, 2, 0]];
    let base = [3usize, 4, 5];
    let mut rewritten = 0;
    for seed in 0..40u64 {
        let mut rng = rng_for("random_permute", seed);
        let mut g = Graph::new(format!("random_{seed}"));
        // values kept in the "canonical" shape `base`, possibly as permuted views
        let mut pool: Vec<NodeId> = Vec::new();
        for i in 0..3 {
            let p = perms[rng.random_range(0..4)];
            let inv = {
                let mut v = [0u32; 3];
                for (k, &q) in p.iter().enumerate() {
                    v[q as usize] = k as u32;
                }
                v
            };
            let shape: Vec<usize> = inv.iter().map(|&a| base[a as usize]).collect();
            let x = input(&mut g, &format!("x{i}"), &shape);
            // permute(p)(x) has shape base
            let v = perm(&mut g, x, &p);
            assert_eq!(g.shape(v), base);
            pool.push(v);
        }
        for _ in 0..rng.random_range(3..10) {
            let a = pool[rng.random_range(0..pool.len())];
            let b = pool[rng.random_range(0..pool.len())];
            let n = match rng.random_range(0..9) {
                0 => g.binary(BinaryOp::Add, a, b),
                1 => g.binary(BinaryOp::Mul, a, b),
                2 => g.binary(BinaryOp::Max, a, b),
                3 => g.unary(UnaryOp::Tanh, a),
                4 => {
                    let c = g.binary(BinaryOp::Lt, a, b);
                    let z = splat(&mut g, 0.25, a);
                    g.add(Op::Select, &[c, z, b], None)
                }
                5 => {
                    let i = g.cast(a, DType::I32);
                    g.cast(i, DType::F32)
                }
                6 => {
                    let axis = rng.random_range(0..3u32);
                    let it = g.add(Op::Iota { axis }, &[], Some(TensorType::new(DType::I32, base.to_vec())));
                    let f = g.cast(it, DType::F32);
                    g.binary(BinaryOp::Sub, a, f)
                }
                7 => {
                    let row = input(&mut g, "row", &[1, base[1], 1]);
                    let bb = g.broadcast_to(row, &base).unwrap();
                    g.binary(BinaryOp::Div, a, bb)
                }
                _ => {
                    // a permuted round trip of a value in the pool
                    let p = perms[rng.random_range(1..4)];
                    let q = perm(&mut g, a, &p);
                    let e = g.unary(UnaryOp::Neg, q);
                    let inv = {
                        let mut v = [0u32; 3];
                        for (k, &x) in p.iter().enumerate() {
                            v[x as usize] = k as u32;
                        }
                        v
                    };
                    perm(&mut g, e, &inv)
                }
            };
            pool.push(n);
        }
        // outputs: the last value in one or two layouts
        let last = *pool.last().unwrap();
        let p = perms[rng.random_range(0..4)];
        let o = perm(&mut g, last, &p);
        g.add_output("o", o);
        if rng.random_bool(0.5) {
            g.add_output("last", last);
        }
        let without = pipeline_without_permute(&g);
        let out = run_pipeline(g.clone(), &opts());
        if print_graph(&out) != print_graph(&without) {
            rewritten += 1;
        }
        assert_same(&g, &out, &format!("random_{seed}"), true);
    }
    assert!(rewritten >= 10, "only {rewritten} of 40 random graphs were rewritten");
}
