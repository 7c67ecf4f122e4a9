//! Native softmax rows (`modelc::jit::softmax`): which kernels take the path, that every vector
//! variant gives the f32 reference's bits for any number of rows of any length and any values,
//! and that the path changes no output bit against the generated passes
//! (`tests/fixtures/jit/softmax_rows.model` run with `MODELC_VMATH=inline` and without).

use modelc::ir::TensorType;
use modelc::jit::softmax::{self, BLOCK};
use modelc::jit::{native_softmax_rows, vmath};
use modelc::sched::{KernelBody, LoopKernel};
use modelc::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod jit_support;
use jit_support::{model_schedule, run_native_and_inline};

const FIXTURE: &str = "tests/fixtures/jit/softmax_rows.model";

/// The loop kernels of model `model` of `file` at batch `b`, after the pipeline.
fn loop_kernels(file: &str, model: &str, b: i64) -> Vec<LoopKernel> {
    model_schedule(file, model, b)
        .kernels
        .into_iter()
        .filter_map(|k| match k.body {
            KernelBody::Loop(l) => Some(l),
            KernelBody::MatMul(_) => None,
        })
        .collect()
}

/// Row lengths of the recognised softmaxes of `kernels`.
fn recognised(kernels: &[LoopKernel]) -> Vec<usize> {
    let found: Vec<usize> =
        kernels.iter().filter(|l| softmax::recognise(l).is_some()).map(|l| l.inner).collect();
    // on this machine they run natively exactly when the array functions do
    for l in kernels {
        let native = native_softmax_rows(l);
        assert_eq!(native, softmax::recognise(l).is_some() && vmath::active().is_some(), "{l:?}");
    }
    found
}

#[test]
fn row_softmaxes_are_recognised() {
    // every row softmax of the fixture, plain and causal-masked (the softmax of one element is
    // simplified to a constant before scheduling); the column softmax is not one
    let mut lengths = recognised(&loop_kernels(FIXTURE, "Rows", 11));
    lengths.sort();
    assert_eq!(lengths, [3, 4, 5, 15, 16, 17, 20, 33, 37, 64, 64, 100, 257, 300]);
    // the char transformer's attention at batch 1: one softmax per block (4 heads x 64 queries)
    let lm = loop_kernels("models/austen_lm.model", "AustenLM", 1);
    let found: Vec<&LoopKernel> = lm.iter().filter(|l| softmax::recognise(l).is_some()).collect();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|l| l.inner == 64 && l.rows() == 256), "{found:?}");
    // layer norms (two sums) and the other row kernels are not softmaxes
    assert!(lm.iter().filter(|l| l.passes == 3).count() > 2);
}

/// Rows of `n` values of many kinds: ordinary scores, causal masks (-inf tails), signed zeros,
/// huge and subnormal values, a NaN, infinities, all masked.
fn test_rows(n: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    for kind in 0..9 {
        let row: Vec<f32> = (0..n)
            .map(|j| match kind {
                0 => rng.random_range(-8.0f32..8.0),
                1 if j > n / 2 => f32::NEG_INFINITY,
                1 => rng.random_range(-3.0f32..3.0),
                2 => {
                    if rng.random_bool(0.5) {
                        -0.0
                    } else {
                        0.0
                    }
                }
                3 => rng.random_range(-1e30f32..1e30),
                4 => {
                    f32::from_bits(rng.random_range(1u32..0x0080_0000)) * if j % 2 == 0 { 1.0 } else { -1.0 }
                }
                5 if j == n / 3 => f32::NAN,
                6 if j == n / 4 => f32::INFINITY,
                7 => f32::NEG_INFINITY,
                _ => rng.random_range(-100.0f32..100.0),
            })
            .collect();
        rows.push(row);
    }
    rows
}

/// Applies `f` to `rows` (all of length `n`) in one call.
fn run(f: softmax::RowsFn, rows: &[Vec<f32>], n: usize) -> Vec<Vec<f32>> {
    let mut out = rows.to_vec();
    let ptrs: Vec<*mut f32> = out.iter_mut().map(|r| r.as_mut_ptr()).collect();
    // SAFETY: every pointer addresses `n` values.
    unsafe { f(ptrs.as_ptr(), ptrs.len() as i64, n as i64) };
    out
}

#[test]
fn every_variant_gives_the_reference_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x50f7);
    let variants = vmath::supported();
    let mut cases = 0;
    for n in (0..=80).chain([100, 127, 255, 256, 257, 300, 1000]) {
        let rows = test_rows(n, &mut rng);
        let want = run(softmax::rows_scalar, &rows, n);
        for &v in &variants {
            let got = run(softmax::function(v), &rows, n);
            for (r, (w, g)) in want.iter().zip(&got).enumerate() {
                let same = w.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{v:?}, n = {n}, row kind {r}: {g:?} vs {w:?}");
                cases += 1;
            }
        }
        // the reference on one row at a time, and the definition of a few values
        for (row, w) in rows.iter().zip(&want) {
            assert_eq!(run(softmax::rows_scalar, std::slice::from_ref(row), n)[0].len(), w.len());
        }
        if n > 0 {
            assert!(want[7].iter().all(|x| x.is_nan()), "an all-masked row is NaN");
            assert!(want[5].iter().all(|x| x.is_nan()), "a row with a NaN is NaN");
            assert!(want[2].iter().all(|&x| x == 1.0 / n as f32), "zeros: uniform");
            let s: f32 = want[0].iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "n = {n}: sums to {s}");
        }
    }
    assert_eq!(cases, 88 * 9 * variants.len());
    // any number of rows per call (the generated code hands over up to BLOCK)
    let n = 37;
    let rows: Vec<Vec<f32>> = (0..2 * BLOCK + 3).map(|i| test_rows(n, &mut rng).swap_remove(i % 9)).collect();
    for count in 0..=rows.len() {
        let want: Vec<Vec<f32>> = rows[..count]
            .iter()
            .map(|r| run(softmax::rows_scalar, std::slice::from_ref(r), n).remove(0))
            .collect();
        for f in [softmax::rows_scalar as softmax::RowsFn]
            .into_iter()
            .chain(variants.iter().map(|&v| softmax::function(v)))
        {
            let got = run(f, &rows[..count], n);
            let bits = |x: &Vec<Vec<f32>>| x.iter().flatten().map(|v| v.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&got), bits(&want), "{count} rows");
        }
    }
}

/// The fixture's outputs with the native path on and off (`MODELC_VMATH=inline`).
#[test]
fn native_rows_change_no_output_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x50f8);
    let rows = test_rows(300, &mut rng);
    let mut x: Vec<f32> = rows.into_iter().flatten().collect();
    x.extend((0..2 * 300).map(|_| rng.random_range(-20.0f32..20.0)));
    let x = Tensor::F32(ndarray::ArrayD::from_shape_vec(vec![11, 300], x).expect("11 x 300"));
    let lengths = [1, 3, 4, 5, 15, 16, 17, 20, 33, 64, 100, 257, 300, 64, 37, 300];
    let types: Vec<(String, TensorType)> =
        lengths.iter().enumerate().map(|(i, &n)| (format!("out{i}"), TensorType::f32(vec![11, n]))).collect();
    let outs = run_native_and_inline(FIXTURE, "Rows", &[("x".to_string(), x)], &types);
    for (i, (a, b)) in outs[0].iter().zip(&outs[1]).enumerate() {
        let (a, b) = (a.as_f32().expect("f32"), b.as_f32().expect("f32"));
        for (r, (ra, rb)) in a.outer_iter().zip(b.outer_iter()).enumerate() {
            // a row holding a NaN is NaN on both paths; the NaNs' sign bits may differ
            let same =
                ra.iter().zip(rb.iter()).all(|(p, q)| p.to_bits() == q.to_bits() || p.is_nan() && q.is_nan());
            assert!(same, "output {i} (n = {}), row {r}: {ra:?} vs {rb:?}", lengths[i]);
        }
    }
}
