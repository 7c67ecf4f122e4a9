//! Native GELU rows (`modelc::jit::gelu`): which kernels take the path, that every vector
//! variant gives the f32 reference's bits, and that the path changes no output bit against the
//! generated code (`tests/fixtures/jit/gelu_rows.model` run with `MODELC_VMATH=inline` and
//! without).

use modelc::ir::TensorType;
use modelc::jit::gelu::{self, ARGS, MAX_LOADS};
use modelc::jit::{gelu_rows, vmath};
use modelc::sched::{KernelBody, LoopKernel};
use modelc::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod jit_support;
use jit_support::{model_schedule, run_native_and_inline};

const FIXTURE: &str = "tests/fixtures/jit/gelu_rows.model";

/// The loop kernels (matmul epilogues included, flagged) of model `model` of `file` at batch
/// `b`, after the pipeline.
fn loop_kernels(file: &str, model: &str, b: i64) -> Vec<(LoopKernel, bool)> {
    model_schedule(file, model, b)
        .kernels
        .into_iter()
        .filter_map(|k| match k.body {
            KernelBody::Loop(l) => Some((l, false)),
            KernelBody::MatMul(mm) => mm.epilogue.map(|l| (l, true)),
        })
        .collect()
}

#[test]
fn gelu_kernels_are_recognised() {
    // the fixture: two GELUs merged into one flat kernel (one and three arrays), a pair's sum
    // over rows of 7, a product's epilogue with its bias, a product's GELU in a flat kernel of
    // its own; not the GELU of a scaled input
    let ks = loop_kernels(FIXTURE, "Gelus", 5);
    let found: Vec<(Vec<usize>, bool)> = ks
        .iter()
        .filter_map(|(l, epi)| gelu_rows(l).map(|p| (p.iter().map(|p| p.loads.len()).collect(), *epi)))
        .collect();
    assert_eq!(found, [(vec![1, 3], false), (vec![2], false), (vec![2], true), (vec![1], false)]);
    assert_eq!(ks.len(), found.len() + 1, "the scaled input's GELU is not recognised");
    // the char transformer's feed-forward layers at batch 1: GELU of the product plus the bias
    let lm = loop_kernels("models/austen_lm.model", "AustenLM", 1);
    let epilogues: Vec<&LoopKernel> =
        lm.iter().filter(|(l, e)| *e && gelu_rows(l).is_some()).map(|(l, _)| l).collect();
    assert_eq!(epilogues.len(), 2);
    assert!(epilogues.iter().all(|l| l.inner == 512), "{epilogues:?}");
    assert_eq!(lm.iter().filter(|(l, _)| gelu_rows(l).is_some()).count(), 2);
}

/// Runs a row function on `n` elements of `loads` (summed) into a fresh output.
fn run(f: gelu::RowFn, loads: &[Vec<f32>], n: usize, abc: [f32; 3]) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    let mut vals = [0u64; ARGS];
    vals[0] = out.as_mut_ptr() as u64;
    for (i, v) in abc.iter().enumerate() {
        vals[1 + i] = v.to_bits() as u64;
    }
    vals[4] = loads.len() as u64;
    for (i, l) in loads.iter().enumerate() {
        vals[5 + i] = l.as_ptr() as u64;
    }
    // SAFETY: every array holds `n` elements; the arguments are filled as `ARGS` says.
    unsafe { f(vals.as_ptr(), n as i64) };
    out
}

#[test]
fn every_variant_gives_the_reference_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6e1);
    let specials =
        [0.0, -0.0, 1e-40, -1e-40, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.5, -3.9];
    let variants = vmath::supported();
    let mut cases = 0;
    for n in (0..=70).chain([127, 128, 255, 300, 1000]) {
        for count in 1..=MAX_LOADS {
            let loads: Vec<Vec<f32>> = (0..count)
                .map(|_| {
                    (0..n)
                        .map(|j| {
                            if j % 13 == 5 {
                                specials[j % specials.len()]
                            } else {
                                rng.random_range(-6.0f32..6.0)
                            }
                        })
                        .collect()
                })
                .collect();
            for abc in [[0.5, 1.0, std::f32::consts::FRAC_1_SQRT_2], [-1.5, 0.25, 3.0]] {
                let want = run(gelu::row_scalar, &loads, n, abc);
                // the reference is the formula, one IEEE operation at a time
                for (j, w) in want.iter().enumerate() {
                    let y = loads[1..].iter().fold(loads[0][j], |y, l| y + l[j]);
                    let e = vmath::erf_lane(y * abc[2]);
                    let f = (y * abc[0]) * (abc[1] + e);
                    assert_eq!(w.to_bits(), f.to_bits(), "n = {n}, j = {j}: {w} vs {f}");
                }
                for &v in &variants {
                    let got = run(gelu::function(v), &loads, n, abc);
                    let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                    assert!(same, "{v:?}, n = {n}, {count} arrays: {got:?} vs {want:?}");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 76 * MAX_LOADS * 2 * variants.len());
}

/// The fixture's outputs with the native path on and off (`MODELC_VMATH=inline`), on two
/// threads (flat kernels' element ranges split).
#[test]
fn native_rows_change_no_output_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6e2);
    let mut tensor = |shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        Tensor::F32(ndarray::ArrayD::from_shape_vec(shape, v).expect("shape"))
    };
    let named = [
        ("x".to_string(), tensor(vec![5, 300], 4.0)),
        ("y".to_string(), tensor(vec![5, 300], 4.0)),
        ("w".to_string(), tensor(vec![300, 37], 0.2)),
        ("b".to_string(), tensor(vec![37], 1.0)),
    ];
    let shapes = [vec![5, 300], vec![5, 7], vec![5, 300], vec![5, 37], vec![5, 16], vec![5, 33]];
    let types: Vec<(String, TensorType)> =
        shapes.iter().enumerate().map(|(i, s)| (format!("out{i}"), TensorType::f32(s.clone()))).collect();
    let outs = run_native_and_inline(FIXTURE, "Gelus", &named, &types);
    for (i, (a, b)) in outs[0].iter().zip(&outs[1]).enumerate() {
        let (a, b) = (a.as_f32().expect("f32"), b.as_f32().expect("f32"));
        assert!(a.iter().zip(b.iter()).all(|(p, q)| p.to_bits() == q.to_bits()), "output {i} differs");
    }
}
