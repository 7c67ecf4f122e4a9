//! Compares the f32 GEMM back ends considered for modelc's `src/jit/gemm.rs` (`matrixmultiply`
//! and the `gemm` crate), interleaved block by block so that both see the same background load.
//! Prints a markdown table of medians in GFLOP/s; `[cpu]` divides by process CPU time.

use std::time::Instant;

#[derive(Clone, Copy)]
struct Case {
    what: &'static str,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    beta: f32,
}

/// `C = alpha A B + beta C` on strided operands, the signature both back ends are wrapped to.
type Sgemm =
    unsafe fn(usize, usize, usize, f32, *const f32, isize, isize, *const f32, isize, isize, f32, *mut f32, isize, isize);

#[allow(clippy::too_many_arguments)]
unsafe fn with_matrixmultiply(
    m: usize, k: usize, n: usize, alpha: f32, a: *const f32, rsa: isize, csa: isize,
    b: *const f32, rsb: isize, csb: isize, beta: f32, c: *mut f32, rsc: isize, csc: isize,
) {
    unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
}

#[allow(clippy::too_many_arguments)]
unsafe fn with_gemm_crate(
    m: usize, k: usize, n: usize, alpha: f32, a: *const f32, rsa: isize, csa: isize,
    b: *const f32, rsb: isize, csb: isize, beta: f32, c: *mut f32, rsc: isize, csc: isize,
) {
    // gemm computes dst = alpha_dst * dst + beta_prod * lhs * rhs and takes column strides first.
    unsafe {
        gemm::gemm(
            m, n, k, c, csc, rsc, beta != 0.0, a, csa, rsa, b, csb, rsb, beta, alpha,
            false, false, false, gemm::Parallelism::None,
        )
    }
}

fn process_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, out: *mut Timespec) -> i32;
    }
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: valid out-pointer; clock 2 is CLOCK_PROCESS_CPUTIME_ID on Linux.
    assert_eq!(unsafe { clock_gettime(2, &mut t) }, 0);
    t.sec as f64 + t.nsec as f64 * 1e-9
}

fn run(cs: Case, f: Sgemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let Case { batch, m, k, n, trans_a, trans_b, beta, .. } = cs;
    let (rsa, csa) = if trans_a { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if trans_b { (1, k as isize) } else { (n as isize, 1) };
    for bi in 0..batch {
        // SAFETY: each batch entry of a, b, c holds m*k, k*n, m*n floats.
        unsafe {
            f(m, k, n, 1.0, a[bi * m * k..].as_ptr(), rsa, csa, b[bi * k * n..].as_ptr(), rsb, csb, beta,
              c[bi * m * n..].as_mut_ptr(), n as isize, 1)
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let blocks: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(9);
    let case = |what, batch, m, k, n| Case { what, batch, m, k, n, trans_a: false, trans_b: false, beta: 0.0 };
    let mut cases: Vec<Case> = [64, 128, 256, 512, 1024].map(|n| case("square", 1, n, n, n)).into();
    cases.extend([
        case("mlp", 1, 64, 64, 256),
        case("mlp", 1, 64, 256, 256),
        case("head", 1, 64, 256, 10),
        case("ffn up", 1, 2048, 128, 512),
        case("ffn down", 1, 2048, 512, 128),
        case("qkv", 1, 2048, 128, 384),
        case("attention", 128, 64, 32, 64),
        case("moe experts", 8, 640, 128, 512),
        Case { trans_a: true, ..case("A^T", 1, 512, 512, 512) },
        Case { trans_b: true, ..case("B^T", 1, 512, 512, 512) },
        Case { beta: 1.0, ..case("C +=", 1, 512, 512, 512) },
    ]);
    let candidates: [(&str, Sgemm); 2] = [("matrixmultiply", with_matrixmultiply), ("gemm", with_gemm_crate)];
    println!("blocks per cell: {blocks}; one thread; GFLOP/s, median");
    println!();
    println!("| case | batch×m×k×n | matrixmultiply | matrixmultiply [cpu] | gemm | gemm [cpu] |");
    println!("|---|---|---|---|---|---|");
    for cs in cases {
        let Case { batch, m, k, n, .. } = cs;
        let fill = |len: usize, seed: usize| -> Vec<f32> {
            (0..len).map(|i| ((i * 7919 + seed) % 1000) as f32 * 1e-3 - 0.5).collect()
        };
        let (a, b, mut c) = (fill(batch * m * k, 1), fill(batch * k * n, 2), fill(batch * m * n, 3));
        let flops = 2.0 * (batch * m * k * n) as f64;
        let t0 = Instant::now();
        run(cs, candidates[0].1, &a, &b, &mut c);
        let iters = ((0.02 / t0.elapsed().as_secs_f64().max(1e-7)) as usize).clamp(1, 100_000);
        let mut wall = vec![Vec::new(); candidates.len()];
        let mut cpu = vec![Vec::new(); candidates.len()];
        for _ in 0..blocks {
            for (i, (_, f)) in candidates.iter().enumerate() {
                let (c0, t0) = (process_cpu_seconds(), Instant::now());
                for _ in 0..iters {
                    run(cs, *f, &a, &b, &mut c);
                }
                wall[i].push(flops * iters as f64 / t0.elapsed().as_secs_f64() / 1e9);
                cpu[i].push(flops * iters as f64 / (process_cpu_seconds() - c0) / 1e9);
            }
        }
        let cells: Vec<String> = (0..candidates.len())
            .map(|i| format!("{:.1} | {:.1}", median(&mut wall[i]), median(&mut cpu[i])))
            .collect();
        println!("| {} | {batch}×{m}×{k}×{n} | {} |", cs.what, cells.join(" | "));
    }
}
