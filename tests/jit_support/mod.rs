//! Shared helpers of the JIT differential tests: seeded random inputs, poisoned runs of the
//! JIT at 1 and 2 threads, and comparison against the reference interpreter.

#![allow(dead_code)] // each test binary uses a different subset

use modelc::ir::{DType, Graph, TensorType};
use modelc::runtime::{ExecOptions, Executable, init_params};
use modelc::tensor::Tensor;
use ndarray::ArrayD;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hash::{Hash, Hasher};

/// A generator seeded from the test name and a counter, so a failure reproduces.
pub fn rng_for(name: &str, counter: u64) -> ChaCha8Rng {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    counter.hash(&mut h);
    ChaCha8Rng::seed_from_u64(h.finish())
}

/// Random values: f32 in [-2, 2), i32 in [-5, 5), bool 0 / 1.
pub fn random_tensor(ty: &TensorType, rng: &mut ChaCha8Rng) -> Tensor {
    let n = ty.numel();
    let shape = ty.shape.clone();
    match ty.dtype {
        DType::F32 => Tensor::F32(
            ArrayD::from_shape_vec(shape, (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()).unwrap(),
        ),
        DType::I32 => Tensor::I32(
            ArrayD::from_shape_vec(shape, (0..n).map(|_| rng.random_range(-5..5)).collect()).unwrap(),
        ),
        DType::Bool => Tensor::I32(
            ArrayD::from_shape_vec(shape, (0..n).map(|_| rng.random_range(0..2)).collect()).unwrap(),
        ),
    }
}

pub fn random_inputs(g: &Graph, rng: &mut ChaCha8Rng) -> Vec<Tensor> {
    g.inputs.iter().map(|i| random_tensor(&i.ty, rng)).collect()
}

/// Runs `g` with the JIT (buffers poisoned with NaN first) at `threads` threads.
pub fn run_jit(g: &Graph, inputs: &[Tensor], params: &[Tensor], threads: usize) -> Vec<Tensor> {
    // split every kernel, however small, so 2 threads really run row ranges in parallel
    let options = ExecOptions { threads: Some(threads), seed: 0, parallel_min_work: Some(1) };
    let mut exe = Executable::new(g, &options).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    exe.set_params(params).unwrap();
    exe.poison_buffers();
    exe.run(inputs).unwrap()
}

/// Max relative error with an absolute floor: `|a - b| <= tol * max(|b|, floor)`; any NaN,
/// or a mismatch in shape or dtype, fails.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32, floor: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    match (got, want) {
        (Tensor::F32(a), Tensor::F32(b)) => {
            for (i, (&x, &y)) in a.iter().zip(b.iter()).enumerate() {
                let ok = !x.is_nan() && !y.is_nan() && {
                    if x.is_infinite() || y.is_infinite() {
                        x == y
                    } else {
                        (x - y).abs() <= tol * y.abs().max(floor)
                    }
                };
                assert!(ok, "{what}: element {i}: jit {x} vs reference {y}");
            }
        }
        (Tensor::I32(a), Tensor::I32(b)) => {
            for (i, (&x, &y)) in a.iter().zip(b.iter()).enumerate() {
                assert_eq!(x, y, "{what}: element {i}");
            }
        }
        _ => panic!("{what}: dtype differs: {:?} vs {:?}", got.dtype(), want.dtype()),
    }
}

/// The reference interpreter's outputs.
pub fn reference(g: &Graph, inputs: &[Tensor], params: &[Tensor]) -> Vec<Tensor> {
    let out = modelc::interp::run::<f32>(g, inputs, params)
        .unwrap_or_else(|e| panic!("{}: reference failed: {e}", g.name));
    out.outputs.into_iter().map(|(_, t)| t).collect()
}

/// Differential check of `g` on fresh random inputs: JIT at 1 and 2 threads vs reference.
pub fn check_graph(g: &Graph, name: &str, counter: u64) {
    check_graph_tol(g, name, counter, 1e-4, 1e-3)
}

pub fn check_graph_tol(g: &Graph, name: &str, counter: u64, tol: f32, floor: f32) {
    modelc::ir::verify(g).unwrap_or_else(|e| panic!("{name}: invalid test graph: {e:?}"));
    let mut rng = rng_for(name, counter);
    let inputs = random_inputs(g, &mut rng);
    let params = init_params(g, counter);
    let want = reference(g, &inputs, &params);
    for threads in [1, 2] {
        let got = run_jit(g, &inputs, &params, threads);
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_close(&format!("{name} (seed {counter}, {threads} threads) output {i}"), a, b, tol, floor);
        }
    }
}

/// Runs `modelc run FILE --model MODEL --threads 2` on `inputs` twice, with the native kernels
/// of `jit::vmath`, `jit::softmax`, `jit::gelu` and `jit::adam` on (`MODELC_VMATH` unset) and
/// off (`inline`), and returns both runs' outputs (named and typed by `outputs`).
pub fn run_native_and_inline(
    file: &str,
    model: &str,
    inputs: &[(String, Tensor)],
    outputs: &[(String, TensorType)],
) -> [Vec<Tensor>; 2] {
    use modelc::runtime::checkpoint::{read_tensors, write_tensors};
    let dir = std::env::temp_dir().join(format!("modelc-native-{model}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("in.safetensors");
    let refs: Vec<(String, &Tensor)> = inputs.iter().map(|(n, t)| (n.clone(), t)).collect();
    write_tensors(&input, &refs).expect("input written");
    let run = |mode: &str| {
        let out = dir.join(format!("{mode}.safetensors"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_modelc"));
        cmd.args(["run", file, "--model", model, "--threads", "2", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("MODELC_VMATH");
        if mode == "inline" {
            cmd.env("MODELC_VMATH", "inline");
        }
        let res = cmd.output().expect("modelc runs");
        assert!(res.status.success(), "{mode}: {}", String::from_utf8_lossy(&res.stderr));
        read_tensors(&out, outputs, "output").expect("outputs readable")
    };
    let both = [run("native"), run("inline")];
    let _ = std::fs::remove_dir_all(&dir);
    both
}

/// The schedule of model `model` of `file` (relative to the crate) with dimension `B = b`,
/// after the optimisation pipeline.
pub fn model_schedule(file: &str, model: &str, b: i64) -> modelc::sched::Schedule {
    use modelc::elab::{ElabOptions, Program, elaborate_model};
    use modelc::passes::{PipelineOptions, run_pipeline};
    let prog = Program::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file));
    let opts = ElabOptions { dims: vec![("B".to_string(), b)], ..ElabOptions::default() };
    let e = elaborate_model(&prog, model, &[], &opts).unwrap_or_else(|d| panic!("{file}: {d:?}"));
    modelc::sched::schedule(&run_pipeline(e.graph, &PipelineOptions::default()))
}
