//! Data-dependent indexing ops: gather, scatter-add, cumulative sum and top-k, generic over
//! the element type with the arithmetic passed in.
//!
//! **Invariant:** shapes are the ones the verifier accepted for the node.

use ndarray::{ArrayD, Axis, IxDyn};
use std::cmp::Ordering;

/// `gather(table [V, r...], idx [i...]) -> [i..., r...]`; indices outside `0..V` give rows of
/// `T::default()` (zero).
pub(crate) fn gather<T: Clone + Default>(table: &ArrayD<T>, idx: &ArrayD<i32>) -> ArrayD<T> {
    let rows = table.shape()[0];
    let row_len: usize = table.shape()[1..].iter().product();
    let flat: Vec<T> = table.iter().cloned().collect();
    let mut out = Vec::with_capacity(idx.len() * row_len);
    for &i in idx.iter() {
        match usize::try_from(i) {
            Ok(r) if r < rows => out.extend_from_slice(&flat[r * row_len..(r + 1) * row_len]),
            _ => out.extend(std::iter::repeat_n(T::default(), row_len)),
        }
    }
    let mut shape = idx.shape().to_vec();
    shape.extend_from_slice(&table.shape()[1..]);
    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("one row per index")
}

/// `scatter_add(idx [i...], src [i..., r...]) -> [rows, r...]`: zeros plus every source row
/// added at its index, in row-major order of the index; indices outside `0..rows` are dropped.
pub(crate) fn scatter_add<T: Copy + Default>(
    idx: &ArrayD<i32>,
    src: &ArrayD<T>,
    rows: usize,
    add: fn(T, T) -> T,
) -> ArrayD<T> {
    let row_shape = &src.shape()[idx.ndim()..];
    let row_len: usize = row_shape.iter().product();
    let flat: Vec<T> = src.iter().copied().collect();
    let mut out = vec![T::default(); rows * row_len];
    for (n, &i) in idx.iter().enumerate() {
        if let Ok(r) = usize::try_from(i)
            && r < rows
        {
            let dst = &mut out[r * row_len..(r + 1) * row_len];
            for (d, &s) in dst.iter_mut().zip(&flat[n * row_len..(n + 1) * row_len]) {
                *d = add(*d, s);
            }
        }
    }
    let mut shape = vec![rows];
    shape.extend_from_slice(row_shape);
    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("rows * row_len elements")
}

/// Inclusive running sum along `axis`, from the end when `reverse`.
pub(crate) fn cumsum<T: Copy>(a: &ArrayD<T>, axis: u32, reverse: bool, add: fn(T, T) -> T) -> ArrayD<T> {
    let mut out = a.clone();
    for mut lane in out.lanes_mut(Axis(axis as usize)) {
        let mut run: Option<T> = None;
        let mut step = |x: &mut T| {
            let s = match run {
                None => *x,
                Some(r) => add(r, *x),
            };
            *x = s;
            run = Some(s);
        };
        if reverse {
            lane.iter_mut().rev().for_each(&mut step);
        } else {
            lane.iter_mut().for_each(&mut step);
        }
    }
    out
}

/// Indices of the `k` largest elements of each last-axis lane, largest first, ties to the
/// lower index. `desc` orders two elements: `Less` when the first should come first.
pub(crate) fn topk<T: Copy>(a: &ArrayD<T>, k: usize, desc: fn(T, T) -> Ordering) -> ArrayD<i32> {
    let last = a.ndim() - 1;
    let mut out = Vec::with_capacity(a.len() / a.shape()[last].max(1) * k);
    // `lanes` visits the lanes in row-major order of the other axes, which is the output order.
    for lane in a.lanes(Axis(last)) {
        let vals: Vec<T> = lane.iter().copied().collect();
        let mut order: Vec<usize> = (0..vals.len()).collect();
        // A stable sort keeps equal elements in index order: ties go to the lower index.
        order.sort_by(|&i, &j| desc(vals[i], vals[j]));
        // Indices fit in i32: tensors are addressed with 32-bit lanes at run time.
        out.extend(order[..k].iter().map(|&i| i as i32));
    }
    let mut shape = a.shape().to_vec();
    shape[last] = k;
    ArrayD::from_shape_vec(IxDyn(&shape), out).expect("k indices per lane")
}
