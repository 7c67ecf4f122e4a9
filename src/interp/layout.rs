//! Layout ops on arrays of any element type: reshape, permute, broadcast, slice, pad,
//! concat. They move elements and never do arithmetic, so they are generic over `T`.
//!
//! **Invariant:** callers pass shapes and attributes the verifier accepted for the node, so
//! the ndarray calls below cannot fail; each `expect` names the check that guarantees it.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

/// Copies a view into a new array in standard (row-major) layout.
pub(crate) fn standard<T: Clone>(v: ArrayViewD<'_, T>) -> ArrayD<T> {
    let shape = v.raw_dim();
    let data: Vec<T> = v.iter().cloned().collect();
    ArrayD::from_shape_vec(shape, data).expect("a view's elements fill its own shape")
}

/// Same elements in row-major order, new shape.
pub(crate) fn reshape<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    let data: Vec<T> = a.iter().cloned().collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("verify: reshape keeps the element count")
}

/// `out.shape[i] = in.shape[perm[i]]`.
pub(crate) fn permute<T: Clone>(a: &ArrayD<T>, perm: &[u32]) -> ArrayD<T> {
    let perm: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
    standard(a.view().permuted_axes(IxDyn(&perm)))
}

/// Expands size-1 axes to `shape` (same rank).
pub(crate) fn broadcast<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    let view = a.broadcast(IxDyn(shape)).expect("verify: broadcast operand dims are 1 or equal");
    standard(view)
}

/// Elements `start, start+step, ...` below `end` along `axis`.
pub(crate) fn slice<T: Clone>(a: &ArrayD<T>, axis: u32, start: usize, end: usize, step: usize) -> ArrayD<T> {
    // verify: start <= end <= dim and step >= 1, all far below isize::MAX for real arrays.
    let s = Slice::new(start as isize, Some(end as isize), step as isize);
    standard(a.slice_axis(Axis(axis as usize), s))
}

/// Zero padding (`T::default()`): `lo` before, `hi` after, `interior` between elements.
pub(crate) fn pad<T: Clone + Default>(
    a: &ArrayD<T>,
    axis: u32,
    lo: usize,
    hi: usize,
    interior: usize,
) -> ArrayD<T> {
    let ax = axis as usize;
    let n = a.shape()[ax];
    let mut shape = a.shape().to_vec();
    shape[ax] = lo + hi + n + interior * n.saturating_sub(1);
    let mut out = ArrayD::from_elem(IxDyn(&shape), T::default());
    if n > 0 {
        // Element i lands at lo + i * (interior + 1).
        let stride = interior + 1;
        let end = lo + (n - 1) * stride + 1;
        let s = Slice::new(lo as isize, Some(end as isize), stride as isize);
        out.slice_axis_mut(Axis(ax), s).assign(a);
    }
    out
}

/// Concatenation along `axis`.
pub(crate) fn concat<T: Clone>(parts: &[&ArrayD<T>], axis: u32) -> ArrayD<T> {
    let views: Vec<ArrayViewD<'_, T>> = parts.iter().map(|p| p.view()).collect();
    let joined = ndarray::concatenate(Axis(axis as usize), &views)
        .expect("verify: concat operands agree off the axis and there is at least one");
    standard(joined.view())
}
