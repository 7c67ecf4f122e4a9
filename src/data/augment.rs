//! Augmentations of the training split. Record-level ones (image flips and crops, character
//! noise, token deletion and swaps) rewrite records before shaping; tensor-level ones (Gaussian
//! noise, mixup) act on each shaped batch. All draw from the epoch's `augment.<name>` stream.

use super::plan::Augment;
use super::record::Body;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Applies a record-level augmentation in place; tensor-level ones are left to [`noise_batch`]
/// and [`mixup_batch`]. `alphabet` is the characters character noise may substitute.
pub fn augment_record(a: &Augment, body: &mut Body, alphabet: &[char], rng: &mut ChaCha8Rng) {
    match (a, body) {
        (Augment::Flip { horizontal, vertical, p }, Body::Image { shape, pixels }) => {
            let [c, h, w] = *shape;
            if h == 0 || w == 0 {
                return;
            }
            if *horizontal && rng.random_bool(*p) {
                for row in pixels.chunks_mut(w) {
                    row.reverse();
                }
            }
            if *vertical && rng.random_bool(*p) {
                for plane in pixels.chunks_mut(h * w) {
                    for y in 0..h / 2 {
                        for x in 0..w {
                            plane.swap(y * w + x, (h - 1 - y) * w + x);
                        }
                    }
                }
            }
            debug_assert_eq!(pixels.len(), c * h * w);
        }
        (Augment::Crop { pad }, Body::Image { shape, pixels }) => {
            // Zero-pad by `pad` on every side, then cut a random window of the original size.
            let [c, h, w] = *shape;
            let pad = *pad;
            let dy = rng.random_range(0..=2 * pad) as isize - pad as isize;
            let dx = rng.random_range(0..=2 * pad) as isize - pad as isize;
            let src = pixels.clone();
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let (sy, sx) = (y as isize + dy, x as isize + dx);
                        let inside = sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w;
                        pixels[(ch * h + y) * w + x] =
                            if inside { src[(ch * h + sy as usize) * w + sx as usize] } else { 0 };
                    }
                }
            }
        }
        (Augment::CharNoise { p }, Body::Text(text)) => {
            if alphabet.is_empty() {
                return;
            }
            *text = text
                .chars()
                .map(|c| {
                    if !c.is_whitespace() && rng.random_bool(*p) {
                        alphabet[rng.random_range(0..alphabet.len())]
                    } else {
                        c
                    }
                })
                .collect();
        }
        (Augment::TokenDelete { p }, Body::Text(text)) => {
            let tokens: Vec<&str> = text.split(' ').collect();
            let kept: Vec<&str> = tokens.iter().copied().filter(|_| !rng.random_bool(*p)).collect();
            // Never delete every token: an empty record would vanish from the epoch.
            if !kept.is_empty() {
                *text = kept.join(" ");
            }
        }
        (Augment::TokenSwap { p }, Body::Text(text)) => {
            let mut tokens: Vec<&str> = text.split(' ').collect();
            let mut i = 0;
            while i + 1 < tokens.len() {
                if rng.random_bool(*p) {
                    tokens.swap(i, i + 1);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            *text = tokens.join(" ");
        }
        // Tensor-level augmentations, and pairs the plan rejects (E0612).
        _ => {}
    }
}

/// Whether an augmentation acts on shaped batches rather than records.
pub fn is_tensor_level(a: &Augment) -> bool {
    matches!(a, Augment::GaussianNoise { .. } | Augment::Mixup { .. })
}

/// A standard normal sample (Box–Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Gamma(shape, 1) sample (Marsaglia–Tsang; shapes below 1 by the `U^(1/a)` boost).
fn gamma(shape: f64, rng: &mut ChaCha8Rng) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A Beta(alpha, alpha) sample: mixup's mixing weight.
pub fn beta_symmetric(alpha: f64, rng: &mut ChaCha8Rng) -> f64 {
    if alpha <= 0.0 {
        return 1.0;
    }
    let a = gamma(alpha, rng);
    let b = gamma(alpha, rng);
    if a + b == 0.0 { 1.0 } else { a / (a + b) }
}

/// Adds N(0, std²) noise to every element of `x`.
pub fn noise_batch(x: &mut [f32], std: f64, rng: &mut ChaCha8Rng) {
    for v in x {
        *v += (normal(rng) * std) as f32;
    }
}

/// Mixup: row `i` becomes `lam·x[i] + (1-lam)·x[perm[i]]`; returns `(y_mix, lam)` per row.
pub fn mixup_batch(
    x: &mut [f32],
    row: usize,
    y: &[i32],
    alpha: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<i32>, Vec<f32>) {
    let n = y.len();
    let mut perm: Vec<usize> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(perm.as_mut_slice(), rng);
    let src = x.to_vec();
    let mut lams = Vec::with_capacity(n);
    for (i, &j) in perm.iter().enumerate() {
        let lam = beta_symmetric(alpha, rng) as f32;
        for k in 0..row {
            x[i * row + k] = lam * src[i * row + k] + (1.0 - lam) * src[j * row + k];
        }
        lams.push(lam);
    }
    (perm.iter().map(|&j| y[j]).collect(), lams)
}
