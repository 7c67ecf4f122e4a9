//! The JIT against the reference interpreter on whole models: every stdlib module case in
//! `tests/ui/ir/` and every model in `models/`, elaborated, optimised, compiled and run at 1
//! and 2 threads with fresh random inputs and parameters and poisoned buffers; compared with
//! the interpreter on the unoptimised graph in f64 (max relative error 1e-4, relative to
//! the element or, for elements near zero, to a tenth of the output's largest magnitude, since
//! the reference is f64 and the JIT f32; NaN never passes).

use modelc::elab::{ElabOptions, Program, elaborate_model};
use modelc::interp;
use modelc::ir::{DType, Graph, TensorType};
use modelc::passes::{PipelineOptions, run_pipeline};
use modelc::runtime::{ExecOptions, Executable, init_params};
use modelc::tensor::Tensor;
use ndarray::ArrayD;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn random_input(ty: &TensorType, rng: &mut ChaCha8Rng) -> Tensor {
    let n = ty.numel();
    match ty.dtype {
        DType::F32 => Tensor::F32(
            ArrayD::from_shape_vec(
                ty.shape.clone(),
                (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect(),
            )
            .expect("shape"),
        ),
        // Token ids below every vocabulary used in the cases; bools as 0/1.
        DType::I32 => Tensor::I32(
            ArrayD::from_shape_vec(ty.shape.clone(), (0..n).map(|_| rng.random_range(0..4)).collect())
                .expect("shape"),
        ),
        DType::Bool => Tensor::I32(
            ArrayD::from_shape_vec(ty.shape.clone(), (0..n).map(|_| rng.random_range(0..2)).collect())
                .expect("shape"),
        ),
    }
}

fn compare(case: &str, g: &Graph, inputs: &[Tensor], params: &[Tensor], threads: usize) {
    let reference =
        interp::run::<f64>(g, inputs, params).unwrap_or_else(|e| panic!("{case}: interpreter: {e}"));
    let optimized = run_pipeline(g.clone(), &PipelineOptions::default());
    let opts = ExecOptions { threads: Some(threads), parallel_min_work: Some(1), ..ExecOptions::default() };
    let mut exe = Executable::new(&optimized, &opts).unwrap_or_else(|e| panic!("{case}: build: {e}"));
    exe.set_params(params).expect("params fit");
    exe.poison_buffers();
    let got = exe.run(inputs).unwrap_or_else(|e| panic!("{case}: run: {e}"));
    for ((name, want), got) in reference.outputs.iter().zip(&got) {
        match (want, got) {
            (Tensor::F32(w), Tensor::F32(g)) => {
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                for (i, (a, b)) in w.iter().zip(g.iter()).enumerate() {
                    let err = (a - b).abs() / a.abs().max(0.1 * scale);
                    assert!(
                        b.is_finite() == a.is_finite() && !b.is_nan() && err <= 1e-4,
                        "{case} ({threads} threads): output {name}[{i}] = {b}, reference {a} (rel err {err})"
                    );
                }
            }
            (Tensor::I32(w), Tensor::I32(g)) => assert_eq!(w, g, "{case}: output {name}"),
            _ => panic!("{case}: output {name} has a different dtype"),
        }
    }
}

fn cases() -> Vec<(String, PathBuf, ElabOptions)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["tests/ui/ir", "models"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "model"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("readable");
            let training = text.lines().any(|l| l.trim() == "// training: true");
            // Small batches keep the interpreter quick on the example models.
            let dims = if dir == "models" { vec![("B".to_string(), 2)] } else { vec![] };
            out.push((f.display().to_string(), f, ElabOptions { training, dims, ..ElabOptions::default() }));
        }
    }
    out
}

#[test]
fn jit_matches_the_interpreter_on_every_stdlib_module_and_model() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x3117);
    let mut count = 0;
    for (case, path, opts) in cases() {
        let prog = Program::load(&path);
        for (_, m) in prog.models() {
            let e =
                elaborate_model(&prog, &m.name.name, &[], &opts).unwrap_or_else(|d| panic!("{case}: {d:?}"));
            let inputs: Vec<Tensor> = e.graph.inputs.iter().map(|i| random_input(&i.ty, &mut rng)).collect();
            let params = init_params(&e.graph, rng.random());
            for threads in [1, 2] {
                compare(&format!("{case}:{}", m.name.name), &e.graph, &inputs, &params, threads);
            }
            count += 1;
        }
    }
    assert!(count >= 25, "only {count} models were compared");
}
