//! The float element types the interpreter computes in: `f32` (what the JIT computes) and
//! `f64` (for finite-difference gradient checks and as a more precise oracle). Every scalar
//! function an op needs is a method here, so the evaluator is written once for both.

use std::fmt::Debug;

/// A float element type: `f32` or `f64`.
pub trait Float: ndarray::LinalgScalar + PartialOrd + Default + Debug + Send + Sync {
    /// Short name for messages (`"f32"`, `"f64"`).
    const NAME: &'static str;
    const INFINITY: Self;
    const NEG_INFINITY: Self;

    /// Rounds to nearest.
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_f32(v: f32) -> Self;
    /// Rounds to nearest (`f64` keeps the value exactly).
    fn to_f32(self) -> f32;
    /// Rounds to nearest.
    fn from_i32(v: i32) -> Self;
    /// Truncates toward zero, saturating at the i32 range; NaN gives 0 (Rust's `as`).
    fn to_i32_saturating(self) -> i32;
    fn is_nan(self) -> bool;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn floor(self) -> Self;
    fn erf(self) -> Self;
    fn powf(self, e: Self) -> Self;
    /// C `fmod`: the result has the sign of `self`.
    fn fmod(self, d: Self) -> Self;
    fn copysign(self, sign: Self) -> Self;
    /// Whether the sign bit is set (tells -0.0 from +0.0 for `max` and `min`).
    fn is_sign_negative(self) -> bool;
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $erf:expr) => {
        impl Float for $t {
            const NAME: &'static str = $name;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;

            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn from_i32(v: i32) -> Self {
                v as $t
            }
            fn to_i32_saturating(self) -> i32 {
                self as i32
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn neg(self) -> Self {
                -self
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            fn erf(self) -> Self {
                let f: fn($t) -> $t = $erf;
                f(self)
            }
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            fn fmod(self, d: Self) -> Self {
                self % d
            }
            fn copysign(self, sign: Self) -> Self {
                <$t>::copysign(self, sign)
            }
            fn is_sign_negative(self) -> bool {
                <$t>::is_sign_negative(self)
            }
        }
    };
}

// f32 erf goes through f64 and rounds once, so it is (nearly always) correctly rounded.
impl_float!(f32, "f32", |x| erf_f64(x as f64) as f32);
impl_float!(f64, "f64", erf_f64);

/// The error function in f64, accurate to a few ulps (std has no stable `erf`).
///
/// For `|x| < 3` the series `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1))`
/// (all terms positive, so no cancellation); for `3 <= |x| < 6` the continued fraction of
/// `erfc`; beyond 6, `erfc(x) < 2e-17` and `erf` is `±1` in f64.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 3.0 {
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0u32;
        // Terms grow while 2x^2 > 2n+1 and then shrink geometrically; 200 bounds the loop.
        while n < 200 {
            n += 1;
            term *= 2.0 * x2 / f64::from(2 * n + 1);
            sum += term;
            if term <= sum * 1e-17 {
                break;
            }
        }
        std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum
    } else if ax < 6.0 {
        // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))),
        // evaluated from the tail; 80 levels are far more than x >= 3 needs for f64.
        let mut t = ax;
        for n in (1..=80u32).rev() {
            t = ax + f64::from(n) * 0.5 / t;
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / t;
        1.0 - erfc
    } else {
        1.0
    };
    r.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_reference_values() {
        // Reference values from Python's `math.erf`.
        let cases = [
            (0.0, 0.0),
            (1e-10, 1.1283791670955126e-10),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (2.9, 0.9999589021219005),
            (3.0, 0.9999779095030014),
            (3.5, 0.9999992569016276),
            (4.0, 0.9999999845827421),
            (5.5, 0.9999999999999927),
            (7.0, 1.0),
        ];
        for (x, want) in cases {
            for (x, want) in [(x, want), (-x, -want)] {
                let got = erf_f64(x);
                let err = (got - want).abs();
                assert!(err <= 4.0 * f64::EPSILON * want.abs().max(1e-300), "erf({x}) = {got}, want {want}");
            }
        }
        assert!(erf_f64(f64::NAN).is_nan());
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert_eq!(erf_f64(f64::NEG_INFINITY), -1.0);
    }
}
