//! Reductions, argmax and batched matrix products.
//!
//! **Invariant:** axes and shapes are the ones the verifier accepted for the node.

use super::float::Float;
use super::layout::reshape;
use ndarray::{ArrayD, Axis, Ix3, IxDyn};

/// Folds each axis of `axes` in turn (in index order along the axis), keeping it with size 1.
/// An empty axis gives `init`.
pub(crate) fn reduce<T: Clone>(a: &ArrayD<T>, axes: &[u32], init: T, f: fn(T, T) -> T) -> ArrayD<T> {
    let mut cur = a.clone();
    for &ax in axes {
        let ax = Axis(ax as usize);
        cur = cur.fold_axis(ax, init.clone(), |acc, x| f(acc.clone(), x.clone())).insert_axis(ax);
    }
    cur
}

/// Index of the first element along `axis` that no later element is `greater` than; the
/// axis is kept with size 1. An empty axis gives 0.
pub(crate) fn argmax<T: Copy>(a: &ArrayD<T>, axis: u32, greater: fn(T, T) -> bool) -> ArrayD<i32> {
    let ax = Axis(axis as usize);
    a.map_axis(ax, |lane| {
        let mut best = 0usize;
        for (i, &x) in lane.iter().enumerate().skip(1) {
            if greater(x, lane[best]) {
                best = i;
            }
        }
        // Indices fit in i32: tensors are addressed with 32-bit lanes at run time.
        best as i32
    })
    .insert_axis(ax)
}

/// Batched `[..., M, K] x [..., K, N] -> [..., M, N]`, reading A (B) transposed when
/// `trans_a` (`trans_b`). `out_shape` is the node's shape.
pub(crate) fn matmul<E: Float>(
    a: &ArrayD<E>,
    b: &ArrayD<E>,
    trans_a: bool,
    trans_b: bool,
    out_shape: &[usize],
) -> ArrayD<E> {
    let r = a.ndim();
    let batch: usize = a.shape()[..r - 2].iter().product();
    let as3 = reshape(a, &[batch, a.shape()[r - 2], a.shape()[r - 1]]);
    let bs3 = reshape(b, &[batch, b.shape()[r - 2], b.shape()[r - 1]]);
    let as3 = as3.into_dimensionality::<Ix3>().expect("reshaped to rank 3");
    let bs3 = bs3.into_dimensionality::<Ix3>().expect("reshaped to rank 3");
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for i in 0..batch {
        let am = as3.index_axis(Axis(0), i);
        let bm = bs3.index_axis(Axis(0), i);
        let am = if trans_a { am.reversed_axes() } else { am };
        let bm = if trans_b { bm.reversed_axes() } else { bm };
        // `dot` returns a fresh array; iterate logically in case its layout is not row-major.
        out.extend(am.dot(&bm).iter().copied());
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), out).expect("verify: matmul output shape")
}
