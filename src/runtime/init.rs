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

/// The affine map from a draw to a value: `offset + scale * x`, where `x` is a uniform in
/// `[0, 1)` or a standard normal. `offset` is `None` where the scheme has no addend (Glorot and
/// Kaiming normal are `std * z`, not `0 + std * z`, which differ for `z = -0`).
#[derive(Clone, Copy)]
enum Sampler {
    Constant(f64),
    Uniform { offset: f64, scale: f64 },
    Normal { offset: Option<f64>, scale: f64 },
}

impl Sampler {
    /// Constants hoisted out of the element loop, each computed by the same expression as the
    /// per-element definition in the module docs, so the values are bit-identical.
    fn new(init: &Init) -> Sampler {
        let scaled = |std: f64, is_normal: bool| {
            if is_normal {
                Sampler::Normal { offset: None, scale: std }
            } else {
                let b = std * 3f64.sqrt();
                Sampler::Uniform { offset: -b, scale: 2.0 * b }
            }
        };
        match *init {
            Init::Zeros => Sampler::Constant(0.0),
            Init::Ones => Sampler::Constant(1.0),
            Init::Full(v) => Sampler::Constant(v),
            Init::Normal { mean, std } => Sampler::Normal { offset: Some(mean), scale: std },
            Init::Uniform { lo, hi } => Sampler::Uniform { offset: lo, scale: hi - lo },
            Init::Glorot { fan_in, fan_out, gain, normal } => {
                scaled(gain * (2.0 / (fan_in + fan_out).max(1) as f64).sqrt(), normal)
            }
            Init::Kaiming { fan_in, gain, normal } => scaled(gain / (fan_in.max(1) as f64).sqrt(), normal),
        }
    }
}

/// A uniform in `[0, 1)` from one 64-bit draw.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Box–Muller, cosine half, from two uniforms.
fn box_muller(u1: f64, u2: f64) -> f64 {
    (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Draws this many 64-bit words at a time. `fill_bytes` yields the generator's 32-bit words in
/// order, little-endian, which is exactly the sequence `next_u64` returns in pairs.
const CHUNK_WORDS: usize = 1024;

/// Calls `put` with the `n` values of parameter number `index` drawn from `seed`, in
/// row-major order.
fn generate(init: &Init, n: usize, seed: u64, index: usize, mut put: impl FnMut(f64)) {
    let sampler = Sampler::new(init);
    if let Sampler::Constant(v) = sampler {
        (0..n).for_each(|_| put(v));
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    let words_per_value = if matches!(sampler, Sampler::Normal { .. }) { 2 } else { 1 };
    let mut bytes = vec![0u8; CHUNK_WORDS * 8];
    let mut left = n;
    while left > 0 {
        let values = left.min(CHUNK_WORDS / words_per_value);
        let chunk = &mut bytes[..values * words_per_value * 8];
        rng.fill_bytes(chunk);
        let mut words = chunk.chunks_exact(8).map(|w| {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            u64::from_le_bytes(b)
        });
        match sampler {
            Sampler::Uniform { offset, scale } => words.for_each(|w| put(offset + scale * unit(w))),
            Sampler::Normal { offset, scale } => {
                while let (Some(a), Some(b)) = (words.next(), words.next()) {
                    let z = scale * box_muller(unit(a), unit(b));
                    put(offset.map_or(z, |m| m + z));
                }
            }
            Sampler::Constant(_) => {}
        }
        left -= values;
    }
}

/// Initial values of every parameter of `g` (see the module docs for the exact scheme).
pub fn init_params(g: &Graph, seed: u64) -> Vec<Tensor> {
    g.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = p.ty.numel();
            let shape = p.ty.shape.clone();
            match p.ty.dtype {
                DType::F32 => {
                    let mut values = Vec::with_capacity(n);
                    generate(&p.init, n, seed, i, |v| values.push(v as f32));
                    Tensor::F32(ArrayD::from_shape_vec(shape, values).expect("numel matches the shape"))
                }
                DType::I32 | DType::Bool => {
                    let mut values = Vec::with_capacity(n);
                    generate(&p.init, n, seed, i, |v| values.push(v as i32));
                    Tensor::I32(ArrayD::from_shape_vec(shape, values).expect("numel matches the shape"))
                }
            }
        })
        .collect()
}

/// The same values as [`init_params`], written straight into the executor's 4-byte element
/// storage (`dst[i]` holds parameter `i`, already of the right length).
pub(crate) fn init_param_storage(g: &Graph, seed: u64, dst: &mut [Vec<u32>]) {
    for (i, (p, out)) in g.params.iter().zip(dst.iter_mut()).enumerate() {
        let mut k = 0;
        match p.ty.dtype {
            DType::F32 => generate(&p.init, out.len(), seed, i, |v| {
                out[k] = (v as f32).to_bits();
                k += 1;
            }),
            DType::I32 | DType::Bool => generate(&p.init, out.len(), seed, i, |v| {
                out[k] = v as i32 as u32;
                k += 1;
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme of the module docs, one element at a time: the oracle for the bulk version.
    fn reference(init: &Init, n: usize, seed: u64, index: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        let mut uniform = || (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let normal = |uniform: &mut dyn FnMut() -> f64| {
            let u1 = uniform();
            let u2 = uniform();
            (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        (0..n)
            .map(|_| {
                let mut scaled = |std: f64, is_normal: bool| {
                    if is_normal {
                        std * normal(&mut uniform)
                    } else {
                        let b = std * 3f64.sqrt();
                        -b + 2.0 * b * uniform()
                    }
                };
                match init {
                    Init::Zeros => 0.0,
                    Init::Ones => 1.0,
                    Init::Full(v) => *v,
                    Init::Normal { mean, std } => mean + std * normal(&mut uniform),
                    Init::Uniform { lo, hi } => lo + (hi - lo) * uniform(),
                    Init::Glorot { fan_in, fan_out, gain, normal } => {
                        scaled(gain * (2.0 / (fan_in + fan_out).max(1) as f64).sqrt(), *normal)
                    }
                    Init::Kaiming { fan_in, gain, normal } => {
                        scaled(gain / ((*fan_in).max(1) as f64).sqrt(), *normal)
                    }
                }
            })
            .collect()
    }

    #[test]
    fn bulk_generation_matches_the_element_by_element_scheme() {
        let inits = [
            Init::Zeros,
            Init::Full(-2.5),
            Init::Normal { mean: 0.5, std: 0.02 },
            Init::Normal { mean: 0.0, std: 1.0 },
            Init::Uniform { lo: -1.0, hi: 3.0 },
            Init::Glorot { fan_in: 7, fan_out: 5, gain: 1.0, normal: false },
            Init::Glorot { fan_in: 7, fan_out: 5, gain: 2.0, normal: true },
            Init::Kaiming { fan_in: 0, gain: 1.5, normal: false },
            Init::Kaiming { fan_in: 33, gain: 1.0, normal: true },
        ];
        // Lengths around the chunk size and the generator's 64-word blocks, odd and even.
        for n in [0, 1, 3, 63, 64, 65, 511, 512, 513, 1023, 1024, 1025, 2049] {
            for (index, init) in inits.iter().enumerate() {
                for seed in [0, 12345] {
                    let mut got = Vec::new();
                    generate(init, n, seed, index, |v| got.push(v));
                    let want = reference(init, n, seed, index);
                    assert_eq!(got.len(), n);
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{init:?} n={n} seed={seed}: bulk values differ from the scheme");
                }
            }
        }
    }
}
