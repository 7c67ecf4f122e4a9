//! Single-precision matrix products for the executor: `C = alpha A B + beta C` on strided
//! operands (a transposed operand is just swapped strides, never a copy), and the row ranges
//! that split one product over threads.
//!
//! The work is done by the packed AVX-512 kernel of [`avx512`] where the CPU has AVX-512F (chosen
//! at run time; `MODELC_GEMM=matrixmultiply` turns it off), else by `matrixmultiply` (packed 8x8
//! AVX2 + FMA micro-kernel chosen at run time). Figures and commands are in `BENCHMARKS.md`.
//! Bias, activation and residual epilogues stay in JIT kernels, run by the executor on each
//! block of rows as [`strided`] reports it finished.

use std::ops::Range;

mod avx512;

pub use avx512::available as avx512_available;

/// `C = alpha A B + beta C` on raw strided operands (strides in elements): the AVX-512 kernel
/// of [`avx512`] when the CPU has it and C's rows are contiguous, else `matrixmultiply`.
/// `rows_done(i0, i1)` is called for rows of C as soon as they are final (while they are still
/// in cache: the AVX-512 path reports each block of rows, the portable path all rows at the
/// end), in increasing order, every row once.
///
/// # Safety
/// As for [`sgemm`]: every addressed element valid, C not overlapping A or B, distinct
/// elements of C at distinct addresses.
#[allow(clippy::too_many_arguments)]
pub unsafe fn strided(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    rows_done: &mut dyn FnMut(usize, usize),
) {
    // SAFETY (both arms): forwarded from the caller's contract; the AVX-512 kernel is used
    // only once `available` has detected the feature.
    unsafe {
        if csc == 1 && avx512::available() {
            avx512::sgemm(
                avx512::Product { m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc },
                rows_done,
            );
        } else {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
            if m > 0 {
                rows_done(0, m);
            }
        }
    }
}

/// Starts fetching a strided `rows x cols` matrix into L1 (a hint: no effect on results,
/// never faults). For a batch of small products whose operands were just written by another
/// kernel and sit in L3 or memory: the next product's operands arrive while this one runs.
pub fn prefetch(ptr: *const f32, rows: usize, cols: usize, rs: isize, cs: isize) {
    Prefetch::new(ptr, rows, cols, rs, cs).issue(usize::MAX, true);
}

/// The cache lines of a strided matrix (its contiguous runs: rows when `cs == 1`, columns when
/// `rs == 1`; nothing otherwise), prefetched a few at a time.
pub(crate) struct Prefetch {
    base: *const f32,
    stride: isize,
    runs: usize,
    lines_per_run: usize,
    /// the next line: run `run`, line `line` of it
    run: usize,
    line: usize,
}

impl Prefetch {
    pub(crate) fn new(base: *const f32, rows: usize, cols: usize, rs: isize, cs: isize) -> Prefetch {
        let (stride, runs, len) = if cs == 1 {
            (rs, rows, cols)
        } else if rs == 1 {
            (cs, cols, rows)
        } else {
            return Prefetch::none();
        };
        if runs > 1 && stride > 0 && (stride as usize) < len + 16 {
            // runs less than a line apart (A of a small depth): the lines of one span, once
            // each, instead of the lines of every run (mostly the same lines again)
            let len = (runs - 1) * stride as usize + len;
            let lines = (base as usize % 64 + len * 4).div_ceil(64);
            return Prefetch { base, stride: 0, runs: 1, lines_per_run: lines, run: 0, line: 0 };
        }
        // the lines a run spans: exact when every run starts at the same offset in its line (the
        // stride a multiple of 16 floats), else one more than the worst case needs
        let lines_per_run =
            if stride % 16 == 0 { (base as usize % 64 + len * 4).div_ceil(64) } else { len.div_ceil(16) + 1 };
        Prefetch { base, stride, runs, lines_per_run, run: 0, line: 0 }
    }

    pub(crate) fn none() -> Prefetch {
        Prefetch { base: std::ptr::null(), stride: 0, runs: 0, lines_per_run: 0, run: 0, line: 0 }
    }

    /// How many lines there are to fetch.
    pub(crate) fn lines(&self) -> usize {
        self.runs * self.lines_per_run
    }

    /// Fetches the next `count` lines, into L1 (`to_l1`) or L2.
    #[inline(always)]
    pub(crate) fn issue(&mut self, count: usize, to_l1: bool) {
        for _ in 0..count {
            if self.run >= self.runs {
                return;
            }
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};
                // a prefetch never faults: the addresses may run a line past the matrix
                let run = self.base.wrapping_offset(self.run as isize * self.stride);
                let addr = (run as *const i8).wrapping_add(self.line * 64);
                // SAFETY: prefetching has no architectural effect.
                unsafe {
                    if to_l1 { _mm_prefetch::<_MM_HINT_T0>(addr) } else { _mm_prefetch::<_MM_HINT_T1>(addr) }
                };
            }
            self.line += 1;
            if self.line == self.lines_per_run {
                self.line = 0;
                self.run += 1;
            }
        }
    }
}

/// A strided f32 matrix operand: element `(i, j)` is at `ptr + i * row_stride + j * col_stride`
/// (in elements). Row-major `[rows, cols]` is `(cols, 1)`; its transpose is `(1, cols)`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef {
    pub ptr: *const f32,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// The output matrix of a product; same addressing as [`MatRef`].
#[derive(Clone, Copy, Debug)]
pub struct MatMut {
    pub ptr: *mut f32,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl MatRef {
    /// Row-major `[rows, cols]` with contiguous rows; `transposed` reads it as `[cols, rows]`.
    pub fn row_major(ptr: *const f32, cols: usize, transposed: bool) -> MatRef {
        let (row_stride, col_stride) = if transposed { (1, cols as isize) } else { (cols as isize, 1) };
        MatRef { ptr, row_stride, col_stride }
    }
}

impl MatMut {
    /// Row-major `[rows, cols]` with contiguous rows.
    pub fn row_major(ptr: *mut f32, cols: usize) -> MatMut {
        MatMut { ptr, row_stride: cols as isize, col_stride: 1 }
    }
}

/// `C = alpha A B + beta C` with `A: [m, k]`, `B: [k, n]`, `C: [m, n]`.
///
/// With `beta == 0` C is only written (it may hold garbage or NaN before). With `k == 0` the
/// product term is zero, so C becomes `beta C`.
///
/// # Safety
/// Every element addressed by `a` (`m x k`), `b` (`k x n`) and `c` (`m x n`) must be valid; C
/// must not overlap A or B, and distinct `(i, j)` of C must be distinct addresses.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(m: usize, k: usize, n: usize, alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { sgemm_rows(0..m, k, n, alpha, a, b, beta, c) }
}

/// Rows `rows` of `C = alpha A B + beta C`: the same product as [`sgemm`] restricted to those
/// rows of A and C. Calls on disjoint ranges write disjoint parts of C and may run concurrently
/// (the executor hands out the ranges of [`row_partition`] to its threads).
///
/// # Safety
/// As for [`sgemm`] with `m = rows.end`; concurrent calls must use disjoint row ranges.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_rows(
    rows: Range<usize>,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
) {
    let m = rows.end.saturating_sub(rows.start);
    if m == 0 || n == 0 {
        return;
    }
    let first = rows.start as isize;
    // SAFETY: the caller guarantees rows `rows` of A and C are valid, so these offsets stay
    // inside the operands.
    unsafe {
        let a_ptr = a.ptr.offset(first * a.row_stride);
        let c_ptr = c.ptr.offset(first * c.row_stride);
        strided(
            m,
            k,
            n,
            alpha,
            a_ptr,
            a.row_stride,
            a.col_stride,
            b.ptr,
            b.row_stride,
            b.col_stride,
            beta,
            c_ptr,
            c.row_stride,
            c.col_stride,
            &mut |_, _| {},
        );
    }
}

/// Height of the micro-kernel's row tile: range boundaries at multiples of it waste no work.
pub const ROW_TILE: usize = 8;

/// Splits the `m` rows of a product `[m, k] x [k, n]` into at most `parts` contiguous ranges
/// of near-equal size, aligned to [`ROW_TILE`], for [`sgemm_rows`]. Products too small to repay
/// a hand-off between threads (under about 2^18 multiply-adds per range, roughly 10 µs) get
/// fewer ranges; an empty product gets none.
pub fn row_partition(m: usize, k: usize, n: usize, parts: usize) -> Vec<Range<usize>> {
    const MIN_WORK_PER_PART: usize = 1 << 18;
    if m == 0 || n == 0 {
        return Vec::new();
    }
    let work = m.saturating_mul(k.max(1)).saturating_mul(n);
    let by_work = (work / MIN_WORK_PER_PART).max(1);
    let by_tiles = m.div_ceil(ROW_TILE);
    let parts = parts.max(1).min(by_work).min(by_tiles);
    let tiles_per_part = by_tiles.div_ceil(parts);
    let rows_per_part = tiles_per_part * ROW_TILE;
    (0..parts)
        .map(|p| (p * rows_per_part).min(m)..((p + 1) * rows_per_part).min(m))
        .filter(|r| !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `C = alpha A B + beta C` in f64 with plain loops, from row-major (possibly transposed)
    /// storage.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: &[f32],
        ta: bool,
        b: &[f32],
        tb: bool,
        beta: f32,
        c: &[f32],
    ) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    acc += av as f64 * bv as f64;
                }
                let prior = if beta == 0.0 { 0.0 } else { beta as f64 * c[i * n + j] as f64 };
                out[i * n + j] = alpha as f64 * acc + prior;
            }
        }
        out
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn check(m: usize, k: usize, n: usize, ta: bool, tb: bool, alpha: f32, beta: f32, parts: usize) {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        // With beta = 0 the old C must be ignored, NaN included.
        let c0: Vec<f32> = if beta == 0.0 { vec![f32::NAN; m * n] } else { values(m * n, 3) };
        let want = naive(m, k, n, alpha, &a, ta, &b, tb, beta, &c0);
        let mut c = c0.clone();
        let am = MatRef::row_major(a.as_ptr(), if ta { m } else { k }, ta);
        let bm = MatRef::row_major(b.as_ptr(), if tb { k } else { n }, tb);
        let cm = MatMut::row_major(c.as_mut_ptr(), n);
        let ranges = row_partition(m, k, n, parts);
        let covered: usize = ranges.iter().map(|r| r.len()).sum();
        assert_eq!(covered, m, "partition of {m} rows: {ranges:?}");
        for r in ranges {
            // SAFETY: the buffers hold exactly the m x k, k x n and m x n elements addressed.
            unsafe { sgemm_rows(r, k, n, alpha, am, bm, beta, cm) };
        }
        for (idx, (&got, &w)) in c.iter().zip(&want).enumerate() {
            let tol = 1e-5 * (k as f64 + 1.0) * (alpha.abs() as f64 + beta.abs() as f64 + 1.0);
            assert!(
                (got as f64 - w).abs() <= tol,
                "m={m} k={k} n={n} ta={ta} tb={tb} alpha={alpha} beta={beta}: \
                 C[{}, {}] = {got}, expected {w}",
                idx / n,
                idx % n
            );
        }
    }

    #[test]
    fn awkward_sizes_all_transposes_match_naive_f64() {
        let sizes = [1, 3, 5, 17, 63, 65, 129];
        for &m in &sizes {
            for &(k, n) in &[(1, 1), (3, 17), (17, 3), (65, 63), (129, 5), (5, 129)] {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    check(m, k, n, ta, tb, 1.0, 0.0, 1);
                }
            }
        }
    }

    #[test]
    fn alpha_beta_variants_match_naive_f64() {
        for (alpha, beta) in [(1.0, 1.0), (0.5, -2.0), (-1.0, 0.0), (2.0, 0.25)] {
            for (ta, tb) in [(false, false), (true, true)] {
                check(65, 17, 63, ta, tb, alpha, beta, 1);
                check(17, 129, 5, ta, tb, alpha, beta, 1);
            }
        }
    }

    #[test]
    fn row_ranges_computed_separately_give_the_whole_product() {
        check(129, 65, 63, false, true, 1.0, 1.0, 2);
        check(129, 65, 63, true, false, 1.0, 0.0, 3);
        check(1000, 64, 64, false, false, 1.0, 0.0, 2);
    }

    #[test]
    fn row_partition_is_tile_aligned_and_skips_tiny_products() {
        assert_eq!(row_partition(1024, 512, 512, 2), vec![0..512, 512..1024]);
        assert_eq!(row_partition(100, 512, 512, 2), vec![0..56, 56..100]);
        assert_eq!(row_partition(64, 64, 64, 2), vec![0..64]);
        assert_eq!(row_partition(0, 64, 64, 2), Vec::<Range<usize>>::new());
        assert_eq!(row_partition(5, 4096, 4096, 4), vec![0..5]);
    }

    #[test]
    fn zero_depth_scales_c_by_beta() {
        let mut c = vec![2.0f32; 6];
        let a = [0.0f32; 0];
        let cm = MatMut::row_major(c.as_mut_ptr(), 3);
        let am = MatRef::row_major(a.as_ptr(), 0, false);
        let bm = MatRef::row_major(a.as_ptr(), 3, false);
        // SAFETY: with k = 0 no element of A or B is read; C is 2 x 3.
        unsafe { sgemm(2, 0, 3, 1.0, am, bm, 0.5, cm) };
        assert_eq!(c, vec![1.0; 6]);
    }
}
