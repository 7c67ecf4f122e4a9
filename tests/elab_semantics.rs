//! What elaborated models compute, checked with the reference interpreter: example models
//! run and give finite outputs (before and after the optimisation pipeline, equal), the MoE
//! routing equals a dense reference when no token is dropped, causal attention ignores the
//! future, and dropped MoE tokens contribute nothing.

use modelc::elab::{ElabOptions, Elaborated, Program, elaborate_model};
use modelc::interp;
use modelc::ir::{DType, Graph, TensorType};
use modelc::passes::{PipelineOptions, run_pipeline};
use modelc::tensor::Tensor;
use ndarray::ArrayD;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

fn random_tensor(ty: &TensorType, rng: &mut ChaCha8Rng, int_high: i32) -> Tensor {
    let n = ty.numel();
    match ty.dtype {
        DType::F32 => Tensor::F32(
            ArrayD::from_shape_vec(
                ty.shape.clone(),
                (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
            )
            .expect("shape matches"),
        ),
        DType::I32 => Tensor::I32(
            ArrayD::from_shape_vec(ty.shape.clone(), (0..n).map(|_| rng.random_range(0..int_high)).collect())
                .expect("shape matches"),
        ),
        DType::Bool => Tensor::I32(
            ArrayD::from_shape_vec(ty.shape.clone(), (0..n).map(|_| rng.random_range(0..2)).collect())
                .expect("shape matches"),
        ),
    }
}

fn random_params(g: &Graph, rng: &mut ChaCha8Rng) -> Vec<Tensor> {
    g.params
        .iter()
        .map(|p| match random_tensor(&p.ty, rng, 2) {
            Tensor::F32(a) => Tensor::F32(a.mapv(|v| v * 0.3)),
            t => t,
        })
        .collect()
}

fn elaborate(text: &str, model: &str, dims: &[(&str, i64)]) -> Elaborated {
    let prog = Program::from_source("test.model", text, None);
    assert!(prog.diagnostics.is_empty(), "{:?}", prog.diagnostics);
    let opts = ElabOptions {
        dims: dims.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        ..ElabOptions::default()
    };
    elaborate_model(&prog, model, &[], &opts).unwrap_or_else(|d| panic!("{model}: {d:?}"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32 output").iter().copied().collect()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1e-3 + x.abs().max(y.abs()))).fold(0.0, f32::max)
}

#[test]
fn example_models_run_and_the_pipeline_preserves_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for file in ["digits_mlp.model", "digits_cnn.model", "austen_lm.model", "hier_classifier.model"] {
        let prog = Program::load(&dir.join(file));
        for (_, m) in prog.models() {
            // Small batches keep the interpreter quick.
            let opts = ElabOptions { dims: vec![("B".into(), 2)], ..ElabOptions::default() };
            let e = elaborate_model(&prog, &m.name.name, &[], &opts).expect("elaborates");
            let inputs: Vec<Tensor> =
                e.graph.inputs.iter().map(|i| random_tensor(&i.ty, &mut rng, 10)).collect();
            let params = random_params(&e.graph, &mut rng);
            let before = interp::run::<f32>(&e.graph, &inputs, &params).expect("runs");
            let optimized = run_pipeline(e.graph.clone(), &PipelineOptions::default());
            assert!(optimized.len() <= e.graph.len());
            let after = interp::run::<f32>(&optimized, &inputs, &params).expect("optimized graph runs");
            for ((name, a), (_, b)) in before.outputs.iter().zip(after.outputs.iter()) {
                let (a, b) = (f32s(a), f32s(b));
                assert!(a.iter().all(|v| v.is_finite()), "{file}: output {name} not finite");
                assert!(max_rel_diff(&a, &b) < 1e-4, "{file}: output {name} changed by the pipeline");
            }
        }
    }
}

const MOE_REFERENCE: &str = r#"
use nn
model Ref(cf: float = 10.0) {
    moe = MoE(4, 8, 3, top_k: 2, capacity_factor: cf)
    fn forward(x: [6, 4]) -> ([6, 4], [6, 4]) {
        let y = moe(x)
        // every expert on every token, weighted by the gate of the chosen ones
        let logits = moe.router(x)
        let sel = one_hot(topk(logits, 2), 3)
        let gates = softmax(sum(sel * logits.reshape(6, 1, 3), -1), -1)
        let weight = sum(sel * gates.reshape(6, 2, 1), 1)
        let h = gelu(x.reshape(1, 6, 4) @ moe.w1 + moe.c1)
        let o = h @ moe.w2 + moe.c2
        (y, sum(o * weight.transpose(0, 1).reshape(3, 6, 1), 0))
    }
}
"#;

#[test]
fn moe_routing_equals_the_dense_reference_without_drops() {
    let e = elaborate(MOE_REFERENCE, "Ref", &[]);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..5 {
        let inputs: Vec<Tensor> = e.graph.inputs.iter().map(|i| random_tensor(&i.ty, &mut rng, 2)).collect();
        let params = random_params(&e.graph, &mut rng);
        let out = interp::run::<f64>(&e.graph, &inputs, &params).expect("runs");
        let (y, reference) = (f32s(&out.outputs[0].1), f32s(&out.outputs[1].1));
        assert!(max_rel_diff(&y, &reference) < 1e-5, "moe {y:?}\nreference {reference:?}");
        assert!(y.iter().any(|v| v.abs() > 1e-3), "the output should not vanish");
    }
}

#[test]
fn moe_with_tiny_capacity_drops_tokens_instead_of_mixing_them_up() {
    // capacity = ceil(0.2 * 6 * 2 / 3) = 1 slot per expert: at most 3 (token, choice) pairs
    // are served, so most token outputs are exactly zero, and served ones match the reference
    // contribution of that expert alone.
    let prog = Program::from_source("test.model", MOE_REFERENCE, None);
    let args = vec![("cf".to_string(), modelc::elab::value::Value::Float(0.2))];
    let e = elaborate_model(&prog, "Ref", &args, &ElabOptions::default()).expect("elaborates");
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let inputs: Vec<Tensor> = e.graph.inputs.iter().map(|i| random_tensor(&i.ty, &mut rng, 2)).collect();
    let params = random_params(&e.graph, &mut rng);
    let out = interp::run::<f64>(&e.graph, &inputs, &params).expect("runs");
    let y = f32s(&out.outputs[0].1);
    let zero_rows = y.chunks(4).filter(|r| r.iter().all(|v| *v == 0.0)).count();
    assert!(zero_rows >= 3, "with 3 slots for 12 choices at least 3 of 6 tokens get nothing: {y:?}");
}

#[test]
fn causal_attention_does_not_look_ahead() {
    let text = r#"
use nn
model Att() {
    attn = MultiHeadAttention(8, 2, causal: true)
    fn forward(x: [1, 5, 8]) -> [1, 5, 8] { attn(x) }
}
"#;
    let e = elaborate(text, "Att", &[]);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = random_tensor(&e.graph.inputs[0].ty, &mut rng, 2);
    let params = random_params(&e.graph, &mut rng);
    let a = f32s(&interp::run::<f64>(&e.graph, std::slice::from_ref(&x), &params).expect("runs").outputs[0].1);
    // Change only the last two positions.
    let Tensor::F32(mut x2) = x else { unreachable!() };
    for t in 3..5 {
        for c in 0..8 {
            x2[[0, t, c]] += 1.0;
        }
    }
    let b = f32s(&interp::run::<f64>(&e.graph, &[Tensor::F32(x2)], &params).expect("runs").outputs[0].1);
    assert_eq!(&a[..3 * 8], &b[..3 * 8], "positions 0..3 must not see positions 3..5");
    assert_ne!(&a[3 * 8..], &b[3 * 8..]);
}

#[test]
fn hierarchical_causal_attention_does_not_look_ahead() {
    let text = r#"
use nn
model H() {
    hier = HierarchicalAttention(8, 2, 2, causal: true)
    fn forward(x: [1, 6, 8]) -> [1, 6, 8] { hier(x) }
}
"#;
    let e = elaborate(text, "H", &[]);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = random_tensor(&e.graph.inputs[0].ty, &mut rng, 2);
    let params = random_params(&e.graph, &mut rng);
    let a = f32s(&interp::run::<f64>(&e.graph, std::slice::from_ref(&x), &params).expect("runs").outputs[0].1);
    let Tensor::F32(mut x2) = x else { unreachable!() };
    for c in 0..8 {
        x2[[0, 3, c]] -= 0.5;
    }
    let b = f32s(&interp::run::<f64>(&e.graph, &[Tensor::F32(x2)], &params).expect("runs").outputs[0].1);
    assert_eq!(&a[..3 * 8], &b[..3 * 8], "positions 0..3 must not see position 3");
}

#[test]
fn cross_entropy_matches_a_direct_computation() {
    let text = r#"
use nn
model L() {
    fn forward(logits: [4, 3], target: i32[4]) -> (f32[], f32[]) {
        (cross_entropy(logits, target), cross_entropy(logits, target, ignore_index: 2, label_smoothing: 0.1))
    }
}
"#;
    let e = elaborate(text, "L", &[]);
    let logits: Vec<f32> = vec![0.5, -1.0, 2.0, 0.0, 0.0, 0.0, 3.0, 1.0, -2.0, -0.5, 0.25, 1.5];
    let target = vec![2, 0, 1, 2];
    let inputs = vec![
        Tensor::F32(ArrayD::from_shape_vec(vec![4, 3], logits.clone()).expect("shape")),
        Tensor::I32(ArrayD::from_shape_vec(vec![4], target.clone()).expect("shape")),
    ];
    let out = interp::run::<f64>(&e.graph, &inputs, &[]).expect("runs");
    let (mut plain, mut smooth, mut kept) = (0.0f64, 0.0f64, 0.0f64);
    for r in 0..4 {
        let row: Vec<f64> = logits[r * 3..r * 3 + 3].iter().map(|&v| v as f64).collect();
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let lp: Vec<f64> = row.iter().map(|v| v - lse).collect();
        let nll = -lp[target[r] as usize];
        plain += nll;
        if target[r] != 2 {
            smooth += 0.9 * nll - 0.1 * lp.iter().sum::<f64>() / 3.0;
            kept += 1.0;
        }
    }
    let got: Vec<f32> = out.outputs.iter().map(|(_, t)| f32s(t)[0]).collect();
    assert!((got[0] as f64 - plain / 4.0).abs() < 1e-5, "{got:?} vs {}", plain / 4.0);
    assert!((got[1] as f64 - smooth / kept).abs() < 1e-5, "{got:?} vs {}", smooth / kept);
}
