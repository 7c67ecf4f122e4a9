//! Benchmarks of the JIT back end (run with `cargo bench --bench jit_kernels`):
//! 1. a fused elementwise chain `max(a * b + c, 0)` over large f32 arrays, in GB/s counting
//!    16 bytes per element (three reads, one write), at 1 and 2 threads;
//! 2. schedule + compile time of a 2-block transformer forward graph built with the builder.
//!
//! `MODELC_BENCH_ELEMS` sets the array length (default 64M elements, 256 MiB per array).

use modelc::ir::{BinaryOp, Graph, Init, NodeId, Op, ParamInfo, ReduceOp, TensorType, UnaryOp};
use modelc::runtime::{ExecOptions, Executable};
use modelc::tensor::Tensor;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn fused_chain(n: usize) {
    let mut g = Graph::new("fused_chain");
    let ty = TensorType::f32(vec![n]);
    let a = g.add_input("a", ty.clone(), None);
    let b = g.add_input("b", ty.clone(), None);
    let c = g.add_input("c", ty.clone(), None);
    let ab = g.binary(BinaryOp::Mul, a, b);
    let abc = g.binary(BinaryOp::Add, ab, c);
    let zero = g.constant(0.0, ty.clone());
    let y = g.binary(BinaryOp::Max, abc, zero);
    g.add_output("y", y);
    let inputs: Vec<Tensor> =
        (0..3).map(|i| Tensor::F32(ndarray::ArrayD::from_elem(vec![n], 0.5 + i as f32))).collect();
    for threads in [1, 2] {
        let mut exe =
            Executable::new(&g, &ExecOptions { threads: Some(threads), seed: 0, ..Default::default() })
                .unwrap();
        // time the kernel alone: inputs copied in once, output not copied out
        exe.run(&inputs).unwrap();
        // The memory-bandwidth yardstick, in the same run: a plain copy of one array of the same
        // length (`copy_from_slice`, i.e. memcpy; 8 bytes per element), split over the same
        // number of threads, timed interleaved with the kernel.
        let src = vec![1.5f32; n];
        let mut dst = vec![0f32; n];
        let (mut times, mut copy_times) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            let t = Instant::now();
            exe.run_kernels();
            times.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            parallel_copy(&mut dst, &src, threads);
            copy_times.push(t.elapsed().as_secs_f64());
        }
        assert!(dst.iter().all(|&v| v == 1.5));
        let secs = median(times);
        let copy_secs = median(copy_times);
        let kernel_gbs = 16.0 * n as f64 / secs / 1e9;
        let copy_gbs = 8.0 * n as f64 / copy_secs / 1e9;
        println!(
            "fused max(a*b+c,0), {n} f32, {threads} thread(s): {:.2} ms, {kernel_gbs:.1} GB/s (16 B/elem); \
             copy_from_slice {:.2} ms, {copy_gbs:.1} GB/s (8 B/elem); ratio {:.2}",
            secs * 1e3,
            copy_secs * 1e3,
            kernel_gbs / copy_gbs
        );
    }
}

/// `dst.copy_from_slice(src)` in `threads` contiguous parts, one per scoped thread.
fn parallel_copy(dst: &mut [f32], src: &[f32], threads: usize) {
    if threads <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    let part = dst.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (d, c) in dst.chunks_mut(part).zip(src.chunks(part)) {
            s.spawn(move || d.copy_from_slice(c));
        }
    });
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

fn layer_norm(g: &mut Graph, x: NodeId, path: &str) -> NodeId {
    let shape = g.shape(x).to_vec();
    let last = shape.len() as u32 - 1;
    let d = shape[last as usize];
    let s = g.reduce(ReduceOp::Sum, x, vec![last]);
    let k = g.constant(1.0 / d as f64, g.ty(s).clone());
    let mean = g.binary(BinaryOp::Mul, s, k);
    let mb = g.broadcast_to(mean, &shape).unwrap();
    let xc = g.binary(BinaryOp::Sub, x, mb);
    let sq = g.binary(BinaryOp::Mul, xc, xc);
    let v = g.reduce(ReduceOp::Sum, sq, vec![last]);
    let var = g.binary(BinaryOp::Mul, v, k);
    let eps = g.constant(1e-5, g.ty(var).clone());
    let ve = g.binary(BinaryOp::Add, var, eps);
    let r = g.unary(UnaryOp::Rsqrt, ve);
    let rb = g.broadcast_to(r, &shape).unwrap();
    let xn = g.binary(BinaryOp::Mul, xc, rb);
    let gamma = param(g, &format!("{path}.weight"), &[d], Init::Ones);
    let beta = param(g, &format!("{path}.bias"), &[d], Init::Zeros);
    let gb = g.broadcast_to(gamma, &shape).unwrap();
    let bb = g.broadcast_to(beta, &shape).unwrap();
    let y = g.binary(BinaryOp::Mul, xn, gb);
    g.binary(BinaryOp::Add, y, bb)
}

fn linear(g: &mut Graph, x: NodeId, path: &str, d_in: usize, d_out: usize) -> NodeId {
    let shape = g.shape(x).to_vec();
    let w = param(g, &format!("{path}.weight"), &[d_in, d_out], Init::Normal { mean: 0.0, std: 0.02 });
    let b = param(g, &format!("{path}.bias"), &[d_out], Init::Zeros);
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let x2 = g.reshape(x, vec![rows, d_in]);
    let mm = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[x2, w], None);
    let bb = g.broadcast_to(b, &[rows, d_out]).unwrap();
    let y = g.binary(BinaryOp::Add, mm, bb);
    let mut out = shape.clone();
    *out.last_mut().unwrap() = d_out;
    g.reshape(y, out)
}

fn softmax_last(g: &mut Graph, x: NodeId) -> NodeId {
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

fn transformer(blocks: usize, b: usize, t: usize, d: usize, heads: usize, vocab: usize) -> Graph {
    let mut g = Graph::new("transformer");
    let ids = g.add_input("ids", TensorType::new(modelc::ir::DType::I32, vec![b, t]), None);
    let emb = param(&mut g, "tok.weight", &[vocab, d], Init::Normal { mean: 0.0, std: 0.02 });
    let mut x = g.add(Op::Gather, &[emb, ids], None);
    let hd = d / heads;
    for i in 0..blocks {
        let h = layer_norm(&mut g, x, &format!("blocks.{i}.norm1"));
        let qkv = linear(&mut g, h, &format!("blocks.{i}.qkv"), d, 3 * d);
        let qkv = g.reshape(qkv, vec![b, t, 3, heads, hd]);
        let part = |g: &mut Graph, j: usize| {
            let s = g.add(Op::Slice { axis: 2, start: j, end: j + 1, step: 1 }, &[qkv], None);
            let s = g.reshape(s, vec![b, t, heads, hd]);
            g.add(Op::Permute { perm: vec![0, 2, 1, 3] }, &[s], None)
        };
        let (q, k, v) = (part(&mut g, 0), part(&mut g, 1), part(&mut g, 2));
        let s = g.add(Op::MatMul { trans_a: false, trans_b: true }, &[q, k], None);
        let sc = g.constant(1.0 / (hd as f64).sqrt(), g.ty(s).clone());
        let s = g.binary(BinaryOp::Mul, s, sc);
        let ity = TensorType::new(modelc::ir::DType::I32, vec![b, heads, t, t]);
        let row = g.add(Op::Iota { axis: 2 }, &[], Some(ity.clone()));
        let col = g.add(Op::Iota { axis: 3 }, &[], Some(ity));
        let ok = g.binary(BinaryOp::Le, col, row);
        let neg = g.constant(-1e9, g.ty(s).clone());
        let s = g.add(Op::Select, &[ok, s, neg], None);
        let p = softmax_last(&mut g, s);
        let o = g.add(Op::MatMul { trans_a: false, trans_b: false }, &[p, v], None);
        let o = g.add(Op::Permute { perm: vec![0, 2, 1, 3] }, &[o], None);
        let o = g.reshape(o, vec![b, t, d]);
        let o = linear(&mut g, o, &format!("blocks.{i}.proj"), d, d);
        x = g.binary(BinaryOp::Add, x, o);
        let h = layer_norm(&mut g, x, &format!("blocks.{i}.norm2"));
        let u = linear(&mut g, h, &format!("blocks.{i}.up"), d, 4 * d);
        let u = g.unary(UnaryOp::Tanh, u);
        let dn = linear(&mut g, u, &format!("blocks.{i}.down"), 4 * d, d);
        x = g.binary(BinaryOp::Add, x, dn);
    }
    let h = layer_norm(&mut g, x, "norm");
    let logits = linear(&mut g, h, "head", d, vocab);
    g.add_output("logits", logits);
    g
}

fn compile_time() {
    let g = transformer(2, 1, 64, 128, 4, 96);
    let t = Instant::now();
    let exe = Executable::new(&g, &ExecOptions { threads: Some(1), seed: 0, ..Default::default() }).unwrap();
    let total = t.elapsed();
    let tm = exe.timings();
    println!(
        "2-block transformer forward ({} nodes, {} kernels, {} compiled): total {:.1} ms (schedule {:.1} ms, codegen {:.1} ms, finalize {:.1} ms; not compilation: buffers + parameter init {:.1} ms)",
        g.len(),
        exe.schedule().kernels.len(),
        tm.kernels_compiled,
        total.as_secs_f64() * 1e3,
        tm.schedule.as_secs_f64() * 1e3,
        tm.codegen.as_secs_f64() * 1e3,
        tm.finalize.as_secs_f64() * 1e3,
        tm.init.as_secs_f64() * 1e3
    );
    print!("{}", modelc::sched::print_kernels(exe.schedule()));
}

fn main() {
    let n = std::env::var("MODELC_BENCH_ELEMS").ok().and_then(|s| s.parse().ok()).unwrap_or(64 << 20);
    compile_time();
    fused_chain(n);
}
