//! Throughput of `modelc::jit::gemm` on the square sizes and the model shapes listed in
//! BENCHMARKS.md, one and two threads, with transposed operands, `C +=` and an unfused
//! bias + ReLU epilogue. Prints a markdown table of medians (GFLOP/s).
//!
//! Run: `cargo bench --bench gemm -- [blocks]` (default 9 blocks of about 20 ms per cell).

use modelc::jit::gemm::{MatMut, MatRef, row_partition, sgemm_rows};
use std::sync::Barrier;
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
    epilogue: bool,
}

fn case(what: &'static str, batch: usize, m: usize, k: usize, n: usize) -> Case {
    Case { what, batch, m, k, n, trans_a: false, trans_b: false, beta: 0.0, epilogue: false }
}

/// Process CPU time in seconds (all threads), from `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`.
fn process_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, out: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid out-pointer of the C layout clock_gettime expects on Linux x86-64.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime failed");
    t.sec as f64 + t.nsec as f64 * 1e-9
}

/// Buffers of one case; pointers are passed between threads as addresses.
struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    bias: Vec<f32>,
}

/// Thread `t` of `threads`' share of one product: whole batch entries when there are enough,
/// else the `t`-th row range of each product.
fn run_share(cs: Case, ops: &Operands, c_addr: usize, t: usize, threads: usize) {
    let Case { batch, m, k, n, trans_a, trans_b, beta, epilogue, .. } = cs;
    let one = |bi: usize, rows: std::ops::Range<usize>| {
        let a = MatRef::row_major(ops.a[bi * m * k..].as_ptr(), if trans_a { m } else { k }, trans_a);
        let b = MatRef::row_major(ops.b[bi * k * n..].as_ptr(), if trans_b { k } else { n }, trans_b);
        // SAFETY: `c_addr` points at `batch * m * n` floats; threads write disjoint rows/batches.
        let c_ptr = unsafe { (c_addr as *mut f32).add(bi * m * n) };
        let c = MatMut::row_major(c_ptr, n);
        // SAFETY: the operands hold the elements addressed; see above for C.
        unsafe { sgemm_rows(rows.clone(), k, n, 1.0, a, b, beta, c) };
        if epilogue {
            // What an unfused bias + ReLU kernel costs: one more pass over C.
            for i in rows {
                // SAFETY: row `i` of this product belongs to this thread.
                let row = unsafe { std::slice::from_raw_parts_mut(c_ptr.add(i * n), n) };
                for (x, b) in row.iter_mut().zip(&ops.bias) {
                    *x = (*x + b).max(0.0);
                }
            }
        }
    };
    if batch >= threads {
        let per = batch.div_ceil(threads);
        for bi in (t * per).min(batch)..((t + 1) * per).min(batch) {
            one(bi, 0..m);
        }
    } else {
        let ranges = row_partition(m, k, n, threads);
        if let Some(r) = ranges.get(t) {
            for bi in 0..batch {
                one(bi, r.clone());
            }
        }
    }
}

/// Runs `iters` products on `threads` threads (helpers spawned once per block and kept in step
/// by a barrier, like the executor's persistent pool); returns (wall, process CPU) seconds.
fn block(cs: Case, ops: &mut Operands, threads: usize, iters: usize) -> (f64, f64) {
    let c_addr = ops.c.as_mut_ptr() as usize;
    let ops = &*ops;
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    if threads == 1 {
        for _ in 0..iters {
            run_share(cs, ops, c_addr, 0, 1);
        }
    } else {
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for t in 1..threads {
                let barrier = &barrier;
                s.spawn(move || {
                    for _ in 0..iters {
                        run_share(cs, ops, c_addr, t, threads);
                        barrier.wait();
                    }
                });
            }
            for _ in 0..iters {
                run_share(cs, ops, c_addr, 0, threads);
                barrier.wait();
            }
        });
    }
    (t0.elapsed().as_secs_f64(), process_cpu_seconds() - cpu0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let blocks: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(9);
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
    ]);
    for (m, k, n) in [(512, 512, 512), (2048, 128, 512)] {
        cases.push(Case { trans_a: true, ..case("A^T", 1, m, k, n) });
        cases.push(Case { trans_b: true, ..case("B^T", 1, m, k, n) });
        cases.push(Case { beta: 1.0, ..case("C +=", 1, m, k, n) });
        cases.push(Case { epilogue: true, ..case("+bias, ReLU pass", 1, m, k, n) });
    }

    println!("blocks per cell: {blocks}; GFLOP/s, median; [cpu] = FLOPs / process CPU seconds");
    println!();
    println!("| case | batch×m×k×n | 1T | 1T [cpu] | 2T | 2T / 1T |");
    println!("|---|---|---|---|---|---|");
    for cs in cases {
        let Case { batch, m, k, n, .. } = cs;
        let fill = |len: usize, seed: usize| -> Vec<f32> {
            (0..len).map(|i| ((i * 7919 + seed) % 1000) as f32 * 1e-3 - 0.5).collect()
        };
        let mut ops = Operands {
            a: fill(batch * m * k, 1),
            b: fill(batch * k * n, 2),
            c: fill(batch * m * n, 3),
            bias: fill(n, 4),
        };
        let flops = 2.0 * (batch * m * k * n) as f64;
        let (once, _) = block(cs, &mut ops, 1, 1);
        let iters = ((0.02 / once.max(1e-7)) as usize).clamp(1, 100_000);
        let (mut wall1, mut cpu1, mut wall2) = (Vec::new(), Vec::new(), Vec::new());
        // Interleave 1T and 2T blocks so that both see the same background load.
        for _ in 0..blocks {
            let (w, c) = block(cs, &mut ops, 1, iters);
            wall1.push(flops * iters as f64 / w / 1e9);
            cpu1.push(flops * iters as f64 / c / 1e9);
            let (w, _) = block(cs, &mut ops, 2, iters);
            wall2.push(flops * iters as f64 / w / 1e9);
        }
        let (w1, c1, w2) = (median(&mut wall1), median(&mut cpu1), median(&mut wall2));
        println!("| {} | {batch}×{m}×{k}×{n} | {w1:.1} | {c1:.1} | {w2:.1} | {:.2} |", cs.what, w2 / w1);
    }
}
