//! Hand-computed checks of the JIT that do not need the reference interpreter: a broadcast
//! elementwise chain, softmax rows, a matmul with a fused epilogue, and parameter files.

use modelc::ir::{BinaryOp, Graph, Init, Op, ParamInfo, ReduceOp, TensorType, UnaryOp};
use modelc::runtime::{ExecOptions, Executable};
use modelc::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

fn f32_tensor(shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(f).collect()).unwrap())
}

fn run(g: &Graph, inputs: &[Tensor], threads: usize) -> Vec<Tensor> {
    let mut exe =
        Executable::new(g, &ExecOptions { threads: Some(threads), seed: 1, parallel_min_work: Some(1) })
            .unwrap();
    exe.poison_buffers();
    exe.run(inputs).unwrap()
}

#[test]
fn broadcast_chain_computes_max_of_ab_plus_c() {
    // y[i, j] = max(a[i, j] * b[j] + c, 0) over 17 x 63
    let mut g = Graph::new("chain");
    let a = g.add_input("a", TensorType::f32(vec![17, 63]), None);
    let b = g.add_input("b", TensorType::f32(vec![63]), None);
    let c = g.add_input("c", TensorType::f32(vec![]), None);
    let bb = g.broadcast_to(b, &[17, 63]).unwrap();
    let cb = g.broadcast_to(c, &[17, 63]).unwrap();
    let ab = g.binary(BinaryOp::Mul, a, bb);
    let abc = g.binary(BinaryOp::Add, ab, cb);
    let zero = g.constant(0.0, TensorType::f32(vec![17, 63]));
    let y = g.binary(BinaryOp::Max, abc, zero);
    g.add_output("y", y);
    let av = f32_tensor(&[17, 63], |i| (i as f32 * 0.37).sin());
    let bv = f32_tensor(&[63], |i| i as f32 * 0.1 - 3.0);
    let cv = f32_tensor(&[], |_| 0.25);
    for threads in [1, 2] {
        let out = run(&g, &[av.clone(), bv.clone(), cv.clone()], threads);
        let y = out[0].as_f32().unwrap();
        for i in 0..17 {
            for j in 0..63 {
                let want = ((i * 63 + j) as f32 * 0.37).sin() * (j as f32 * 0.1 - 3.0) + 0.25;
                let got = y[[i, j]];
                assert!((got - want.max(0.0)).abs() <= 1e-5, "({i}, {j}): {got} vs {}", want.max(0.0));
            }
        }
    }
}

#[test]
fn softmax_rows_match_a_direct_computation() {
    let (rows, cols) = (5, 17);
    let mut g = Graph::new("softmax");
    let x = g.add_input("x", TensorType::f32(vec![rows, cols]), None);
    let m = g.reduce(ReduceOp::Max, x, vec![1]);
    let mb = g.broadcast_to(m, &[rows, cols]).unwrap();
    let d = g.binary(BinaryOp::Sub, x, mb);
    let e = g.unary(UnaryOp::Exp, d);
    let s = g.reduce(ReduceOp::Sum, e, vec![1]);
    let sb = g.broadcast_to(s, &[rows, cols]).unwrap();
    let y = g.binary(BinaryOp::Div, e, sb);
    g.add_output("y", y);
    g.add_output("rowmax", m);
    let xv = f32_tensor(&[rows, cols], |i| ((i * 7919) % 23) as f32 * 0.3 - 2.0);
    let out = run(&g, std::slice::from_ref(&xv), 2);
    let x = xv.as_f32().unwrap();
    let y = out[0].as_f32().unwrap();
    for r in 0..rows {
        let row: Vec<f32> = (0..cols).map(|c| x[[r, c]]).collect();
        let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(out[1].as_f32().unwrap()[[r, 0]], mx);
        let sum: f32 = row.iter().map(|v| (v - mx).exp()).sum();
        for c in 0..cols {
            let want = (row[c] - mx).exp() / sum;
            assert!((y[[r, c]] - want).abs() <= 1e-6, "({r}, {c})");
        }
    }
}

#[test]
fn matmul_with_bias_epilogue_matches_naive_product() {
    let (m, k, n) = (17, 5, 63);
    let mut g = Graph::new("linear");
    let x = g.add_input("x", TensorType::f32(vec![m, k]), None);
    let w = g.add_input("w", TensorType::f32(vec![n, k]), None);
    let b = g.add_input("b", TensorType::f32(vec![n]), None);
    let mm = g.add(Op::MatMul { trans_a: false, trans_b: true }, &[x, w], None);
    let bb = g.broadcast_to(b, &[m, n]).unwrap();
    let y = g.binary(BinaryOp::Add, mm, bb);
    g.add_output("y", y);
    let xv = f32_tensor(&[m, k], |i| (i % 7) as f32 - 3.0);
    let wv = f32_tensor(&[n, k], |i| (i % 5) as f32 * 0.5);
    let bv = f32_tensor(&[n], |i| i as f32);
    let out = run(&g, &[xv.clone(), wv.clone(), bv.clone()], 2);
    let (xa, wa, ba) = (xv.as_f32().unwrap(), wv.as_f32().unwrap(), bv.as_f32().unwrap());
    let y = out[0].as_f32().unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|t| xa[[i, t]] * wa[[j, t]]).sum::<f32>() + ba[[j]];
            assert!((y[[i, j]] - want).abs() <= 1e-4, "({i}, {j}): {} vs {want}", y[[i, j]]);
        }
    }
}

#[test]
fn parameters_round_trip_through_safetensors_and_misshaped_weights_are_named() {
    let mut g = Graph::new("params");
    let w = g.add_param(ParamInfo {
        path: "layer.weight".into(),
        ty: TensorType::f32(vec![3, 5]),
        init: Init::Normal { mean: 0.0, std: 1.0 },
        trainable: true,
        span: None,
    });
    let wn = g.param_node(w);
    g.add_output("w", wn);
    let dir = std::env::temp_dir().join(format!("modelc_jit_smoke_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let a = Executable::new(&g, &ExecOptions { threads: Some(1), seed: 7, ..Default::default() }).unwrap();
    a.save_safetensors(&path).unwrap();
    let mut b =
        Executable::new(&g, &ExecOptions { threads: Some(1), seed: 8, ..Default::default() }).unwrap();
    assert_ne!(a.params(), b.params(), "different seeds give different parameters");
    b.load_safetensors(&path).unwrap();
    assert_eq!(a.params(), b.params());
    assert_eq!(b.run(&[]).unwrap()[0], a.params()[0]);

    let mut g2 = Graph::new("params2");
    g2.add_param(ParamInfo {
        path: "layer.weight".into(),
        ty: TensorType::f32(vec![5, 3]),
        init: Init::Zeros,
        trainable: true,
        span: None,
    });
    g2.add_param(ParamInfo {
        path: "layer.bias".into(),
        ty: TensorType::f32(vec![3]),
        init: Init::Zeros,
        trainable: true,
        span: None,
    });
    let mut c = Executable::new(&g2, &ExecOptions::default()).unwrap();
    let err = c.load_safetensors(&path).unwrap_err().to_string();
    assert!(err.contains("layer.weight") && err.contains("[3, 5]") && err.contains("[5, 3]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
