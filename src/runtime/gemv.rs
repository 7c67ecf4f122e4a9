//! One output row of a matrix product, `c[0..n] = a[0..k] · B[k, n]`, without packing.
//!
//! `matrixmultiply` packs B into panels before every product, which is what makes large
//! products fast but dominates a single row (batch-1 inference: a 256x256 layer spent ~16 us
//! packing a 256 KiB weight it then read once). One row reads B once either way, so the row is
//! computed straight from B: as a sum of scaled rows of B when B's rows are contiguous, or as
//! dot products with B's columns when those are (a transposed operand). Loops are written so
//! the compiler vectorises them without reassociating sums (independent lanes), and are
//! compiled twice: for the baseline target and, chosen at run time, for AVX2 + FMA (with fused
//! multiply-adds, like the packed kernels).

/// Whether the row can take this path: B's rows or columns contiguous and C's row contiguous.
pub fn applies(b_rs: isize, b_cs: isize, c_cs: isize) -> bool {
    c_cs == 1 && (b_cs == 1 || b_rs == 1)
}

/// One output row: `c[j] = sum_p a[p * a_cs] * b[p * b_rs + j * b_cs]` for `j < n`
/// (strides in elements).
#[derive(Clone, Copy)]
pub struct Row {
    pub k: usize,
    pub n: usize,
    pub a: *const f32,
    pub a_cs: isize,
    pub b: *const f32,
    pub b_rs: isize,
    pub b_cs: isize,
    pub c: *mut f32,
}

/// Computes the row.
///
/// # Safety
/// Every addressed element of a (`k`), b (`k x n`) and c (`n`) must be valid, c must not
/// overlap a or b, and [`applies`] must hold.
pub unsafe fn gemv_row(row: Row) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected; the rest is the caller's contract.
            return unsafe { gemv_row_avx2(row) };
        }
    }
    // SAFETY: the caller's contract.
    unsafe { gemv_row_generic::<false>(row) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_row_avx2(row: Row) {
    // SAFETY: forwarded.
    unsafe { gemv_row_generic::<true>(row) }
}

/// `acc + x * y`, fused (one rounding, as the packed kernels do) when `FMA`: only
/// instantiated with `FMA` inside a function compiled with the `fma` target feature, where it
/// is one instruction.
#[inline(always)]
fn madd<const FMA: bool>(acc: f32, x: f32, y: f32) -> f32 {
    if FMA { x.mul_add(y, acc) } else { acc + x * y }
}

#[inline(always)]
unsafe fn gemv_row_generic<const FMA: bool>(row: Row) {
    let Row { k, n, a, a_cs, b, b_rs, b_cs, c } = row;
    // SAFETY (whole body): element ranges follow from the function contract.
    let out = unsafe { std::slice::from_raw_parts_mut(c, n) };
    if b_cs == 1 {
        // c = sum over p of a[p] * (row p of B)
        out.fill(0.0);
        for p in 0..k {
            let s = unsafe { *a.offset(p as isize * a_cs) };
            let row = unsafe { std::slice::from_raw_parts(b.offset(p as isize * b_rs), n) };
            for (o, &x) in out.iter_mut().zip(row) {
                *o = madd::<FMA>(*o, s, x);
            }
        }
        return;
    }
    // columns of B contiguous: c[j] = dot(a, column j), 16 independent partial sums
    const L: usize = 16;
    let mut a_buf = [0f32; 1024];
    let a_row: &[f32] = if a_cs == 1 {
        unsafe { std::slice::from_raw_parts(a, k) }
    } else if k <= a_buf.len() {
        for (p, x) in a_buf[..k].iter_mut().enumerate() {
            *x = unsafe { *a.offset(p as isize * a_cs) };
        }
        &a_buf[..k]
    } else {
        // a long strided row: gather it once per output element instead
        for (j, o) in out.iter_mut().enumerate() {
            let col = unsafe { b.offset(j as isize * b_cs) };
            let mut s = 0f32;
            for p in 0..k {
                s = madd::<FMA>(s, unsafe { *a.offset(p as isize * a_cs) }, unsafe { *col.add(p) });
            }
            *o = s;
        }
        return;
    };
    for (j, o) in out.iter_mut().enumerate() {
        let col = unsafe { std::slice::from_raw_parts(b.offset(j as isize * b_cs), k) };
        let mut acc = [0f32; L];
        let chunks = k / L;
        for t in 0..chunks {
            let (x, y) = (&a_row[t * L..t * L + L], &col[t * L..t * L + L]);
            for l in 0..L {
                acc[l] = madd::<FMA>(acc[l], x[l], y[l]);
            }
        }
        let mut s = 0f32;
        for v in acc {
            s += v;
        }
        for p in chunks * L..k {
            s = madd::<FMA>(s, a_row[p], col[p]);
        }
        *o = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both layouts of B, contiguous and strided A, odd sizes, against a plain f64 product.
    #[test]
    fn rows_match_a_plain_product() {
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for &(k, n) in &[(1, 1), (3, 5), (17, 33), (64, 256), (256, 10), (1500, 7)] {
            let a: Vec<f32> = (0..2 * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            for b_transposed in [false, true] {
                for a_strided in [false, true] {
                    let (b_rs, b_cs) = if b_transposed { (1, k as isize) } else { (n as isize, 1) };
                    let a_cs = if a_strided { 2 } else { 1 };
                    let mut c = vec![f32::NAN; n];
                    let row = Row { k, n, a: a.as_ptr(), a_cs, b: b.as_ptr(), b_rs, b_cs, c: c.as_mut_ptr() };
                    unsafe { gemv_row(row) };
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|p| {
                                a[p * a_cs as usize] as f64
                                    * b[(p as isize * b_rs + j as isize * b_cs) as usize] as f64
                            })
                            .sum();
                        assert!((c[j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "k {k} n {n} j {j}");
                    }
                }
            }
        }
    }
}
