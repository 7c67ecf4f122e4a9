//! Deterministic parameter initialisation from a seed.
//!
//! The scheme (the reference-interpreter tests rely on it, so it is part of the contract):
//! parameter `i` (in `Graph::params` order) draws from its own generator
//! `ChaCha8Rng::seed_from_u64(seed)` with `set_stream(i)`, element by element in row-major
//! order. A uniform draw is `u = (next_u64() >> 11) * 2^-53` in `[0, 1)`. A normal draw uses
//! Box–Muller on two uniforms, `sqrt(-2 ln(1 - u1)) * cos(2 pi u2)` (one normal per pair; the
//! sine half is discarded so element `k` always uses draws `2k` and `2k + 1`).
//! `Uniform { lo, hi }` is `lo + (hi - lo) u`; `Normal { mean, std }` is `mean + std z`.
//! Glorot: `std = gain sqrt(2 / (fan_in + fan_out))`; Kaiming: `std = gain / sqrt(fan_in)`;
//! their uniform variants draw from `[-b, b)` with `b = std sqrt(3)` (same variance).
//! Values are computed in f64 and rounded to f32 (i32 / bool parameters truncate).

use crate::ir::{DType, Graph, Init};
use crate::tensor::Tensor;
use ndarray::ArrayD;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = uniform(rng);
    let u2 = uniform(rng);
    (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One element of an initialiser.
fn draw(init: &Init, rng: &mut ChaCha8Rng) -> f64 {
    let scaled = |std: f64, is_normal: bool, rng: &mut ChaCha8Rng| {
        if is_normal {
            std * normal(rng)
        } else {
            let b = std * 3f64.sqrt();
            -b + 2.0 * b * uniform(rng)
        }
    };
    match init {
        Init::Zeros => 0.0,
        Init::Ones => 1.0,
        Init::Full(v) => *v,
        Init::Normal { mean, std } => mean + std * normal(rng),
        Init::Uniform { lo, hi } => lo + (hi - lo) * uniform(rng),
        Init::Glorot { fan_in, fan_out, gain, normal } => {
            scaled(gain * (2.0 / (fan_in + fan_out).max(1) as f64).sqrt(), *normal, rng)
        }
        Init::Kaiming { fan_in, gain, normal } => {
            scaled(gain / ((*fan_in).max(1) as f64).sqrt(), *normal, rng)
        }
    }
}

/// Initial values of every parameter of `g` (see the module docs for the exact scheme).
pub fn init_params(g: &Graph, seed: u64) -> Vec<Tensor> {
    g.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64);
            let n = p.ty.numel();
            let values: Vec<f64> = (0..n).map(|_| draw(&p.init, &mut rng)).collect();
            let shape = p.ty.shape.clone();
            match p.ty.dtype {
                DType::F32 => Tensor::F32(
                    ArrayD::from_shape_vec(shape, values.iter().map(|&v| v as f32).collect())
                        .expect("numel matches the shape"),
                ),
                DType::I32 | DType::Bool => Tensor::I32(
                    ArrayD::from_shape_vec(shape, values.iter().map(|&v| v as i32).collect())
                        .expect("numel matches the shape"),
                ),
            }
        })
        .collect()
}
