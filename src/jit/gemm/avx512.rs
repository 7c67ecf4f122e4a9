//! A packed single-precision GEMM for x86-64 CPUs with AVX-512F, chosen at run time.
//!
//! `matrixmultiply` tops out at its 8x8 AVX2 micro-kernel; on a core with 512-bit FMA units
//! that leaves half the machine idle, and the 64-row products of the training steps spent most
//! of their time there. This is the classic blocked scheme (Goto / BLIS): B is packed into
//! panels of `16 * NV` columns (`KC` deep, zero-padded), and an `MR x 16*NV` register tile of
//! accumulators is updated with one fused multiply-add per element and step, the A element
//! broadcast straight from memory. A is read in place when one of its strides is 1 (packing
//! it measured slower at every size, see `sgemm_blocked`); only A of other strides is packed
//! into panels of `MR` rows. Edges are handled by the zero padding of the packed panels, by
//! re-reading A's last row for rows past the end, and by masked stores, so no element outside
//! C is touched.
//!
//! Every output element is the same sum in the same order (`p` ascending, one fused
//! multiply-add per step, `KC` blocks added in order) whatever the tile, the row range or the
//! column range a call covers: splitting a product over threads does not change its bits.

use super::Prefetch;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Depth of one packed block: a 32-column B panel of this depth is 32 KiB (fits L1).
const KC: usize = 256;
/// Rows of A per block (a multiple of both row tiles; packed at once when A is packed).
const MC: usize = 96;
/// Most columns of B packed at once.
const NC: usize = 512;
/// Products of at most this many rows read a row-major B in place instead of packing it.
const DIRECT_B_MAX_ROWS: usize = 64;
/// Most floats of packed B at once (all of its depth for a block of columns): 512 KiB, half
/// of L2.
const B_BLOCK: usize = 128 * 1024;

/// 64-byte aligned storage for packed panels (aligned vector loads of B).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    /// Per-thread packing buffers (A block, B block), grown to their largest use and reused:
    /// the steady-state step allocates nothing.
    static PACK: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether this CPU runs the kernel (AVX-512F detected, and `MODELC_GEMM` is not set to
/// `matrixmultiply`, which forces the portable path for comparisons).
pub fn available() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let forced_off = std::env::var("MODELC_GEMM").is_ok_and(|v| v == "matrixmultiply");
            #[cfg(target_arch = "x86_64")]
            let ok = !forced_off && std::arch::is_x86_feature_detected!("avx512f");
            #[cfg(not(target_arch = "x86_64"))]
            let ok = {
                let _ = forced_off;
                false
            };
            STATE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

/// Strided operands of `C = alpha A B + beta C` (strides in elements; C's column stride is 1).
#[derive(Clone, Copy)]
pub struct Product {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub rsa: isize,
    pub csa: isize,
    pub b: *const f32,
    pub rsb: isize,
    pub csb: isize,
    pub beta: f32,
    pub c: *mut f32,
    pub rsc: isize,
}

/// Computes the product. With `beta == 0` C is only written. `rows_done(i0, i1)` (rows of
/// this product) is called as soon as those rows of C are final, while they are still in
/// cache, in increasing order, covering every row once.
///
/// # Safety
/// [`available`] must have returned true; every element addressed by A (`m x k`), B (`k x n`)
/// and C (`m x n`, unit column stride) must be valid, C must not overlap A or B, and distinct
/// rows of C must not overlap.
pub unsafe fn sgemm(p: Product, rows_done: &mut dyn FnMut(usize, usize)) {
    if p.m == 0 || p.n == 0 {
        if p.m > 0 {
            rows_done(0, p.m);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    PACK.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (pa, pb) = &mut *bufs;
        // SAFETY: forwarded from the caller's contract; AVX-512F was detected.
        unsafe { sgemm_blocked(p, pa, pb, rows_done) }
    });
}

/// Row tile for `m` rows: 8 when that pads fewer rows than 12 (64-row products, attention
/// heads), else 12 (more multiply-adds per load).
fn row_tile(m: usize) -> usize {
    if m.div_ceil(8) * 8 < m.div_ceil(12) * 12 { 8 } else { 12 }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sgemm_blocked(
    p: Product,
    pa: &mut Vec<Line>,
    pb: &mut Vec<Line>,
    rows_done: &mut dyn FnMut(usize, usize),
) {
    let Product { m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc } = p;
    if k == 0 {
        for i in 0..m {
            // SAFETY: row i of C is valid for n elements (contract).
            let row = unsafe { std::slice::from_raw_parts_mut(c.offset(i as isize * rsc), n) };
            for x in row {
                *x = if beta == 0.0 { 0.0 } else { beta * *x };
            }
        }
        rows_done(0, m);
        return;
    }
    // tiles of 16 or 32 columns; 48 (with 8 rows, the same 24 accumulators) where that
    // covers n exactly and 32 would leave a half-empty last panel (n = 144: a convolution's
    // 3 x 3 x 16 columns)
    let nv = if n <= 16 {
        1
    } else if n % 32 != 0 && n % 48 == 0 && n <= NC {
        3
    } else {
        2
    };
    let nr = 16 * nv;
    let mr = if nv == 3 { 8 } else { row_tile(m) };
    // columns per block: all of B's depth for them packed at once (at most B_BLOCK floats), so
    // that a block of C is finished while it is in cache instead of being revisited per depth
    let ncb = (B_BLOCK / k / nr * nr).clamp(nr, NC);
    let nc_max = n.min(ncb).div_ceil(nr) * nr;
    let mc_max = m.min(MC).div_ceil(mr) * mr;
    // few rows: each B panel would serve only a few tiles, so packing B (a pass over all of it
    // per call) costs more than it saves; whole panels of a row-major B are read in place
    let direct_b = csb == 1 && n % nr == 0 && m <= DIRECT_B_MAX_ROWS;
    // A with a unit stride either way is read in place: the micro-kernel's broadcasts of
    // MR rows (or MR consecutive elements) hit lines that stay in L1/L2 while the tile's
    // columns are swept, and packing it (a transposing pass per call) cost more than it saved
    // at every size measured (BENCHMARKS.md); other strides are packed
    let direct_a = csa == 1 || rsa == 1;
    if !direct_b {
        grow(pb, (k * nc_max).div_ceil(16));
    }
    if !direct_a {
        grow(pa, (k.min(KC) * mc_max).div_ceil(16));
    }
    let bpk = pb.as_mut_ptr() as *mut f32;
    let apk = pa.as_mut_ptr() as *mut f32;
    for jc in (0..n).step_by(ncb) {
        let nc = (n - jc).min(ncb);
        let nc_pad = nc.div_ceil(nr) * nr;
        if !direct_b {
            for pc in (0..k).step_by(KC) {
                let kc = (k - pc).min(KC);
                // SAFETY: the block of B lies inside B; the buffer holds k * nc_max floats,
                // depth block pc at offset pc * nc_pad.
                let from = unsafe { b.offset(pc as isize * rsb + jc as isize * csb) };
                unsafe { pack(from, csb, rsb, nc, kc, nr, bpk.add(pc * nc_pad)) };
            }
        }
        for ic in (0..m).step_by(MC) {
            let mc = (m - ic).min(MC);
            for pc in (0..k).step_by(KC) {
                let kc = (k - pc).min(KC);
                // SAFETY: the block of A lies inside A; the buffer holds KC * mc_max floats.
                let a_block = unsafe { a.offset(ic as isize * rsa + pc as isize * csa) };
                if !direct_a {
                    unsafe { pack(a_block, rsa, csa, mc, kc, mr, apk) };
                }
                // the next block of A is fetched while this one is multiplied: a large A comes
                // from L3 or memory, and the micro-kernel (or packing) would otherwise wait for
                // every line
                let (nic, npc) = if pc + KC < k { (ic, pc + KC) } else { (ic + MC, 0) };
                let mut ahead = if nic < m {
                    // SAFETY: the next block's origin lies inside A.
                    let origin = unsafe { a.offset(nic as isize * rsa + npc as isize * csa) };
                    Prefetch::new(origin, (m - nic).min(MC), (k - npc).min(KC), rsa, csa)
                } else {
                    Prefetch::none()
                };
                let calls = nc.div_ceil(nr) * mc.div_ceil(mr);
                let per_call = ahead.lines().div_ceil(calls);
                for jr in (0..nc).step_by(nr) {
                    let cols = (nc - jr).min(nr);
                    // SAFETY: panel jr / nr of depth block pc of the packed B, or the same
                    // panel of B itself (rows `rsb` apart).
                    let (bp, b_step) = if direct_b {
                        (unsafe { b.offset(pc as isize * rsb + (jc + jr) as isize) }, rsb)
                    } else {
                        (unsafe { bpk.add(pc * nc_pad + jr * kc) as *const f32 }, nr as isize)
                    };
                    for ir in (0..mc).step_by(mr) {
                        let rows = (mc - ir).min(mr);
                        let tile = Tile {
                            kc,
                            // SAFETY: panel ir / mr of the packed block, or row ir of the block
                            a: unsafe {
                                if direct_a { a_block.offset(ir as isize * rsa) } else { apk.add(ir * kc) }
                            },
                            rsa,
                            csa,
                            b: bp,
                            b_step,
                            // SAFETY: inside C (contract).
                            c: unsafe { c.offset((ic + ir) as isize * rsc + (jc + jr) as isize) },
                            rsc,
                            rows,
                            cols,
                            alpha,
                            beta: if pc == 0 { beta } else { 1.0 },
                        };
                        ahead.issue(per_call, false);
                        // SAFETY: the tile addresses rows < rows and columns < cols of C only.
                        unsafe {
                            match (mr, nv, direct_a) {
                                (8, 3, false) => kernel::<8, 3, false>(tile),
                                (8, 3, true) => kernel::<8, 3, true>(tile),
                                (12, 2, false) => kernel::<12, 2, false>(tile),
                                (8, 2, false) => kernel::<8, 2, false>(tile),
                                (12, 1, false) => kernel::<12, 1, false>(tile),
                                (8, 1, false) => kernel::<8, 1, false>(tile),
                                (12, 2, true) => kernel::<12, 2, true>(tile),
                                (8, 2, true) => kernel::<8, 2, true>(tile),
                                (12, 1, true) => kernel::<12, 1, true>(tile),
                                _ => kernel::<8, 1, true>(tile),
                            }
                        }
                    }
                }
            }
            if jc + ncb >= n {
                rows_done(ic, ic + mc);
            }
        }
    }
}

fn grow(buf: &mut Vec<Line>, lines: usize) {
    if buf.len() < lines {
        buf.resize(lines, Line([0.0; 16]));
    }
}

/// Packs `count x kc` of a matrix `M` (element `(i, p)` at `src + i * rs_i + p * rs_p`) as
/// panels of `width` (at most 32) indices `i`: panel `q` holds, for each `p < kc`, the `width`
/// elements `M[q*width + i, p]` consecutively; indices past `count` are zero. A's panels are
/// `pack(A, rsa, csa, rows, ..)`; B's are the same layout of `B^T`, `pack(B, csb, rsb, cols, ..)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack(
    src: *const f32,
    rs_i: isize,
    rs_p: isize,
    count: usize,
    kc: usize,
    width: usize,
    out: *mut f32,
) {
    // SAFETY (whole body): reads stay in the count x kc block, writes in
    // count.div_ceil(width) * width * kc floats.
    unsafe {
        for q in 0..count.div_ceil(width) {
            let i0 = q * width;
            let live = (count - i0).min(width);
            let panel = out.add(i0 * kc);
            if rs_i == 1 {
                // the i of one step are contiguous: masked vector moves (missing ones read as 0)
                for p in 0..kc {
                    let from = src.offset(p as isize * rs_p + i0 as isize);
                    for v in (0..width).step_by(16) {
                        let x = _mm512_maskz_loadu_ps(lanes(live.saturating_sub(v)), from.add(v));
                        store(panel.add(p * width + v), width - v, x);
                    }
                }
            } else if rs_p == 1 {
                // the steps of one i are contiguous: 16 x 16 blocks transposed in registers
                for p0 in (0..kc).step_by(16) {
                    let depth = (kc - p0).min(16);
                    for v in (0..width).step_by(16) {
                        let mut r = [_mm512_setzero_ps(); 16];
                        for (i, x) in r.iter_mut().enumerate().take(live.saturating_sub(v)) {
                            let from = src.offset((i0 + v + i) as isize * rs_i + p0 as isize);
                            *x = _mm512_maskz_loadu_ps(lanes(depth), from);
                        }
                        transpose16(&mut r);
                        for (t, x) in r.iter().enumerate().take(depth) {
                            store(panel.add((p0 + t) * width + v), width - v, *x);
                        }
                    }
                }
            } else {
                for p in 0..kc {
                    for i in 0..width {
                        *panel.add(p * width + i) = if i < live {
                            *src.offset((i0 + i) as isize * rs_i + p as isize * rs_p)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// Stores the low `lanes.min(16)` floats of `x` at `to`: a plain store when all 16 go (masked
/// stores are slower on some cores), else a masked one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(to: *mut f32, lanes_: usize, x: __m512) {
    // SAFETY: the caller's `to` is valid for `lanes_.min(16)` floats.
    unsafe {
        if lanes_ >= 16 { _mm512_storeu_ps(to, x) } else { _mm512_mask_storeu_ps(to, lanes(lanes_), x) }
    }
}

/// Transposes a 16 x 16 block held as 16 row vectors (row `i` becomes column `i`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in (0..16).step_by(2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // t[4g + ..]: pairs of rows (4g, 4g+1) and (4g+2, 4g+3) interleaved element-wise
    for g in (0..16).step_by(4) {
        r[g] = _mm512_shuffle_ps::<0b01_00_01_00>(t[g], t[g + 2]);
        r[g + 1] = _mm512_shuffle_ps::<0b11_10_11_10>(t[g], t[g + 2]);
        r[g + 2] = _mm512_shuffle_ps::<0b01_00_01_00>(t[g + 1], t[g + 3]);
        r[g + 3] = _mm512_shuffle_ps::<0b11_10_11_10>(t[g + 1], t[g + 3]);
    }
    // now r[4g + c] holds, in each 128-bit lane L, column 4L + c of rows 4g..4g+4
    for h in [0, 8] {
        for c in 0..4 {
            t[h + c] = _mm512_shuffle_f32x4::<0x88>(r[h + c], r[h + 4 + c]);
            t[h + 4 + c] = _mm512_shuffle_f32x4::<0xdd>(r[h + c], r[h + 4 + c]);
        }
    }
    for c in 0..8 {
        r[c] = _mm512_shuffle_f32x4::<0x88>(t[c], t[8 + c]);
        r[8 + c] = _mm512_shuffle_f32x4::<0xdd>(t[c], t[8 + c]);
    }
}

/// The low `live` lanes of a 16-lane mask.
#[inline(always)]
fn lanes(live: usize) -> u16 {
    if live >= 16 { u16::MAX } else { ((1u32 << live) - 1) as u16 }
}

/// One register tile: `C[0..rows, 0..cols] = alpha * Apanel * Bpanel + beta * C` (C not read
/// when `beta == 0`).
#[derive(Clone, Copy)]
struct Tile {
    kc: usize,
    /// the packed panel, or (read in place) element (0, 0) of the tile's rows of A
    a: *const f32,
    /// A's row and step strides, for A read in place
    rsa: isize,
    csa: isize,
    b: *const f32,
    /// floats from one step's B row to the next (the panel width when packed)
    b_step: isize,
    c: *mut f32,
    rsc: isize,
    rows: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
}

/// The micro-kernel: `MR x 16*NV` accumulators in registers (at most 24 of the 32 vector
/// registers), fed by `NV` aligned loads of B and `MR` broadcasts of A per step. With
/// `DIRECT_A`, A is read in place (`t.rsa`, `t.csa`); rows past `t.rows` re-read the last row
/// (their results are not stored), so nothing outside A is read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const MR: usize, const NV: usize, const DIRECT_A: bool>(t: Tile) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let (mut a, mut b) = (t.a, t.b);
    let (a_row, a_step) = if DIRECT_A { (t.rsa, t.csa) } else { (1, MR as isize) };
    let last = if DIRECT_A { t.rows - 1 } else { MR - 1 };
    let a_off: [isize; MR] = std::array::from_fn(|i| i.min(last) as isize * a_row);
    // SAFETY (whole body): the packed panels hold kc steps of MR and 16*NV floats; C accesses
    // are masked to rows < t.rows and columns < t.cols.
    unsafe {
        // C's tile is read (or written) after the loop: start fetching its lines now
        for i in 0..MR.min(t.rows) {
            let row = t.c.offset(i as isize * t.rsc);
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_ET0>(row.add(16 * v) as *const i8);
            }
        }
        for _ in 0..t.kc {
            let mut bv = [_mm512_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(b.add(16 * v));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.offset(a_off[i]));
                for v in 0..NV {
                    row[v] = _mm512_fmadd_ps(av, bv[v], row[v]);
                }
            }
            a = a.offset(a_step);
            b = b.offset(t.b_step);
        }
        let alpha = _mm512_set1_ps(t.alpha);
        let beta = _mm512_set1_ps(t.beta);
        let mut masks = [0u16; NV];
        for (v, mk) in masks.iter_mut().enumerate() {
            *mk = lanes(t.cols.saturating_sub(16 * v));
        }
        // constant row indices keep the accumulators in registers; rows past t.rows are skipped
        for (i, row) in acc.iter().enumerate() {
            if i >= t.rows {
                break;
            }
            let crow = t.c.offset(i as isize * t.rsc);
            for v in 0..NV {
                let mut x = if t.alpha == 1.0 { row[v] } else { _mm512_mul_ps(alpha, row[v]) };
                let cp = crow.add(16 * v);
                if t.beta != 0.0 {
                    x = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(masks[v], cp), x);
                }
                _mm512_mask_storeu_ps(cp, masks[v], x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// The kernel against f64 loops, all operand layouts, edges of every tile and block.
    #[test]
    fn matches_f64_loops_across_tiles_blocks_and_layouts() {
        if !available() {
            // The dispatcher never calls the kernel here; say so rather than pass silently.
            eprintln!("AVX-512F not available: the portable GEMM path is the one in use");
            assert!(!std::arch::is_x86_feature_detected!("avx512f") || std::env::var("MODELC_GEMM").is_ok());
            return;
        }
        let shapes = [
            (1, 1, 1),
            (7, 3, 17),
            (8, 16, 16),
            (12, 5, 33),
            (13, 300, 31),
            (64, 64, 10),
            (97, 257, 520),
            (25, 1, 600),
            (13, 300, 64),
            (64, 257, 96),
            (5, 40, 512),
            // 48-column tiles: n a multiple of 48 but not of 32, rows not a multiple of 8,
            // depth over one block
            (1027, 32, 144),
            (13, 300, 48),
            (50, 9, 480),
        ];
        for &(m, k, n) in &shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 2.0)] {
                    let a = values(m * k, 1);
                    let b = values(k * n, 2);
                    let c0: Vec<f32> = if beta == 0.0 { vec![f32::NAN; m * n] } else { values(m * n, 3) };
                    let mut c = c0.clone();
                    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
                    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
                    let p = Product {
                        m,
                        k,
                        n,
                        alpha,
                        a: a.as_ptr(),
                        rsa,
                        csa,
                        b: b.as_ptr(),
                        rsb,
                        csb,
                        beta,
                        c: c.as_mut_ptr(),
                        rsc: n as isize,
                    };
                    // SAFETY: the buffers hold exactly the elements addressed.
                    unsafe { sgemm(p, &mut |_, _| {}) };
                    for i in 0..m {
                        for j in 0..n {
                            let mut s = 0.0f64;
                            for q in 0..k {
                                let av = a[(i as isize * rsa + q as isize * csa) as usize] as f64;
                                let bv = b[(q as isize * rsb + j as isize * csb) as usize] as f64;
                                s += av * bv;
                            }
                            let prior = if beta == 0.0 { 0.0 } else { beta as f64 * c0[i * n + j] as f64 };
                            let want = alpha as f64 * s + prior;
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (k as f64 + 2.0),
                                "m={m} k={k} n={n} ta={ta} tb={tb} beta={beta}: C[{i},{j}] = {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A with no unit stride (every other element of a wider matrix) goes through the packed
    /// path; checked against f64 loops at tile and block edges.
    #[test]
    fn packs_a_of_general_strides() {
        if !available() {
            eprintln!("AVX-512F not available: the portable GEMM path is the one in use");
            return;
        }
        for &(m, k, n) in &[(1, 1, 1), (13, 300, 31), (97, 257, 520), (64, 64, 64)] {
            let a = values(2 * m * k, 6);
            let b = values(k * n, 7);
            let mut c = vec![f32::NAN; m * n];
            let (rsa, csa) = (2 * k as isize, 2);
            let p = Product {
                m,
                k,
                n,
                alpha: 1.0,
                a: a.as_ptr(),
                rsa,
                csa,
                b: b.as_ptr(),
                rsb: n as isize,
                csb: 1,
                beta: 0.0,
                c: c.as_mut_ptr(),
                rsc: n as isize,
            };
            // SAFETY: A holds 2 m k floats (element (i, q) at 2 k i + 2 q), B k n, C m n.
            unsafe { sgemm(p, &mut |_, _| {}) };
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|q| a[2 * k * i + 2 * q] as f64 * b[q * n + j] as f64).sum();
                    let got = c[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (k as f64 + 2.0),
                        "m={m} k={k} n={n}: C[{i},{j}] = {got}, want {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn transpose16_transposes() {
        if !available() {
            eprintln!("AVX-512F not available: the portable GEMM path is the one in use");
            return;
        }
        let src: Vec<f32> = (0..256).map(|x| x as f32).collect();
        let mut out = [0.0f32; 256];
        // SAFETY: AVX-512F is available; the arrays hold 16 x 16 floats.
        unsafe {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, x) in r.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(src[16 * i..].as_ptr());
            }
            transpose16(&mut r);
            for (i, x) in r.iter().enumerate() {
                _mm512_storeu_ps(out[16 * i..].as_mut_ptr(), *x);
            }
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * i + j], src[16 * j + i], "({i}, {j})");
            }
        }
    }

    /// Row and column sub-ranges computed separately are bit-identical to the whole product.
    #[test]
    fn sub_ranges_give_identical_bits() {
        if !available() {
            eprintln!("AVX-512F not available: the portable GEMM path is the one in use");
            return;
        }
        let (m, k, n) = (70, 300, 90);
        let a = values(m * k, 4);
        let b = values(k * n, 5);
        let run = |r0: usize, r1: usize, c0: usize, c1: usize, c: &mut [f32]| {
            let p = Product {
                m: r1 - r0,
                k,
                n: c1 - c0,
                alpha: 1.0,
                a: a[r0 * k..].as_ptr(),
                rsa: k as isize,
                csa: 1,
                b: b[c0..].as_ptr(),
                rsb: n as isize,
                csb: 1,
                beta: 0.0,
                c: c[r0 * n + c0..].as_mut_ptr(),
                rsc: n as isize,
            };
            // SAFETY: the sub-ranges lie inside the m x k, k x n and m x n buffers.
            unsafe { sgemm(p, &mut |_, _| {}) };
        };
        let mut whole = vec![0.0f32; m * n];
        run(0, m, 0, n, &mut whole);
        let mut parts = vec![0.0f32; m * n];
        run(0, 33, 0, n, &mut parts);
        run(33, m, 0, 32, &mut parts);
        run(33, m, 32, n, &mut parts);
        assert_eq!(
            whole.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            parts.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}
