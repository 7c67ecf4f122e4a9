//! Autodiff on whole models: every stdlib module case in `tests/ui/ir/` and every model in
//! `models/` (batch 2), elaborated as in `tests/jit_models.rs` (training mode where the case
//! says so, so dropout draws from the `rng_key` input, which is held fixed), loss =
//! `sum(output * cotangent)` over every f32 output with fixed random cotangents. Gradients with
//! respect to every trainable parameter and every f32 input are checked against central
//! finite differences in f64 on the reference interpreter at a few random coordinates per
//! tensor (tolerance in `autodiff_support`), and the gradient graph runs through the pipeline
//! and the JIT at 1 and 2 threads against the interpreter. Data, parameters and coordinates
//! come from a fixed seed per case (from the file and model name), so a failure reproduces.

mod autodiff_support;
mod jit_support;

use autodiff_support::{Leaf, check_fd, check_jit, grad_case, uniform};
use modelc::elab::{ElabOptions, Program, elaborate_model};
use modelc::ir::{DType, TensorType};
use modelc::runtime::init_params;
use modelc::tensor::Tensor;
use ndarray::ArrayD;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// As in `tests/jit_models.rs`: f32 in [-2, 2), token ids in 0..4, bools 0 / 1.
fn random_input(ty: &TensorType, rng: &mut ChaCha8Rng) -> Tensor {
    let n = ty.numel();
    match ty.dtype {
        DType::F32 => uniform(ty, -2.0, 2.0, rng),
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

fn cases(dir: &str) -> Vec<(String, PathBuf, ElabOptions)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "model"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("readable");
            let training = text.lines().any(|l| l.trim() == "// training: true");
            let dims = if dir == "models" { vec![("B".to_string(), 2)] } else { vec![] };
            (f.display().to_string(), f, ElabOptions { training, dims, ..ElabOptions::default() })
        })
        .collect()
}

/// Checks every model of every file under `dir`; returns how many models were checked.
fn check_dir(dir: &str, coords: usize) -> usize {
    let mut count = 0;
    let (mut worst_fd, mut worst_jit, mut checked) = (0f64, 0f64, 0);
    for (case, path, opts) in cases(dir) {
        let prog = Program::load(&path);
        for (_, m) in prog.models() {
            let name = format!("{case}:{}", m.name.name);
            let t0 = std::time::Instant::now();
            let e =
                elaborate_model(&prog, &m.name.name, &[], &opts).unwrap_or_else(|d| panic!("{name}: {d:?}"));
            let g = e.graph;
            let outs: Vec<_> = g.outputs.iter().map(|o| o.node).collect();
            let mut wrt: Vec<Leaf> =
                (0..g.params.len()).filter(|&i| g.params[i].trainable).map(Leaf::Param).collect();
            wrt.extend((0..g.inputs.len()).filter(|&i| g.inputs[i].ty.dtype == DType::F32).map(Leaf::Input));
            let gc = grad_case(&name, g, &outs, wrt);
            let mut rng = jit_support::rng_for(&name, 0);
            let inputs: Vec<Tensor> = gc.full.inputs.iter().map(|i| random_input(&i.ty, &mut rng)).collect();
            let params = init_params(&gc.full, rng.random());
            let (fd, n) = check_fd(&gc, &inputs, &params, Some(coords), &mut rng);
            let jit = check_jit(&gc, &inputs, &params);
            worst_fd = worst_fd.max(fd);
            worst_jit = worst_jit.max(jit);
            checked += n;
            eprintln!("{name}: fd {fd:.2e} jit {jit:.2e} ({n} coords) {:?}", t0.elapsed());
            count += 1;
        }
    }
    eprintln!(
        "{dir}: {count} models, {checked} coordinates; worst fd error {worst_fd:.3e}, worst jit error {worst_jit:.3e}"
    );
    count
}

#[test]
fn stdlib_module_gradients() {
    let n = check_dir("tests/ui/ir", 8);
    assert!(n >= 20, "only {n} stdlib cases");
}

#[test]
fn example_model_gradients() {
    let n = check_dir("models", 3);
    assert!(n >= 4, "only {n} example models");
}
