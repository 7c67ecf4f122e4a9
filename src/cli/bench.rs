//! `modelc bench FILE [--run NAME | --model NAME] [--batch N]... [--threads N] [--json]
//! [--warmup N] [--iters N] [--profile]`: compile time by stage and the median time of a training
//! step (train blocks) or of the forward pass at each batch size (models). See `modelc::bench`.

use clap::Args;
use modelc::bench::{BenchOptions, BenchResult, ModelBenchError, bench_model, bench_train};
use modelc::elab::Program;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    pub file: PathBuf,
    /// Time this train block's training step (default when the file has train blocks and no
    /// --model is given: the only train block).
    #[arg(long, conflicts_with = "model")]
    pub run: Option<String>,
    /// Time this model's forward pass (inference).
    #[arg(long)]
    pub model: Option<String>,
    /// Batch sizes of the forward pass (the dimension `B`; repeatable). Models only.
    #[arg(long = "batch", value_name = "N")]
    pub batches: Vec<usize>,
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Threads of the executor (default: MODELC_THREADS, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed runs (default: enough for about 2 seconds, at least 10).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Also time each kernel separately and print where the time goes.
    #[arg(long)]
    pub profile: bool,
    /// Print one JSON object per workload (one line each) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Parameters from this checkpoint instead of the initial ones (models only): work that
    /// depends on the values, such as erf's branch for large inputs, is timed on trained weights.
    #[arg(long, conflicts_with = "run")]
    pub checkpoint: Option<PathBuf>,
}

pub fn run(a: &BenchArgs) -> ExitCode {
    if a.threads == Some(0) {
        return super::usage_error("--threads must be at least 1");
    }
    if a.iters == Some(0) {
        return super::usage_error("--iters must be at least 1");
    }
    if a.batches.contains(&0) {
        return super::usage_error("--batch must be at least 1");
    }
    let t0 = Instant::now();
    let Some(prog) = super::load(&a.file) else { return ExitCode::from(1) };
    let t_load = t0.elapsed().as_secs_f64();
    let opts = BenchOptions {
        threads: a.threads,
        warmup: a.warmup,
        iters: a.iters,
        profile: a.profile,
        checkpoint: a.checkpoint.clone(),
        ..BenchOptions::default()
    };
    let has_train = prog.root_items().any(|(_, i)| matches!(i, modelc::syntax::ast::Item::Train(_)));
    if a.run.is_some() || (a.model.is_none() && has_train) {
        if a.checkpoint.is_some() {
            return super::usage_error(
                "--checkpoint applies to models (--model NAME); a train block's step starts from its own initialisation",
            );
        }
        if !a.batches.is_empty() {
            return super::usage_error(
                "--batch applies to models; a train block's batch size comes from its data block",
            );
        }
        let run = a.run.clone().unwrap_or_default();
        match bench_train(&prog, &run, &opts) {
            Ok(mut r) => {
                r.compile.insert(0, ("load", t_load));
                print_result(&r, a);
                ExitCode::SUCCESS
            }
            Err(e) => super::train::report_error(&e, render_opts()),
        }
    } else {
        let (args, eo) = match (super::parse_args(&a.args), super::elab_options(&a.dims)) {
            (Ok(x), Ok(o)) => (x, o),
            (Err(e), _) | (_, Err(e)) => return super::usage_error(&e),
        };
        let name = match super::pick_model(&prog, a.model.as_deref()) {
            Ok(n) => n,
            Err(e) => return super::usage_error(&e),
        };
        let batches: Vec<Option<usize>> =
            if a.batches.is_empty() { vec![None] } else { a.batches.iter().map(|&b| Some(b)).collect() };
        for b in batches {
            match bench_model(&prog, &name, &args, &eo.dims, b, &opts) {
                Ok(mut r) => {
                    r.compile.insert(0, ("load", t_load));
                    print_result(&r, a);
                }
                Err(e) => return report_model_error(&prog, e),
            }
        }
        ExitCode::SUCCESS
    }
}

fn render_opts() -> modelc::diag::RenderOptions {
    use std::io::IsTerminal;
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    modelc::diag::RenderOptions { color, width: 100 }
}

fn report_model_error(prog: &Program, e: ModelBenchError) -> ExitCode {
    match e {
        ModelBenchError::Compile(d) => {
            super::report(prog, &d);
        }
        ModelBenchError::Runtime(m) => eprintln!("error: {m}"),
    }
    ExitCode::from(1)
}

fn print_result(r: &BenchResult, a: &BenchArgs) {
    if a.json {
        println!("{}", r.to_json());
        return;
    }
    let ms = |s: f64| s * 1e3;
    let what = if r.kind == "train_step" { "training step" } else { "forward" };
    println!(
        "{} ({}): batch {}, {} thread{}, inputs: {}",
        r.workload,
        a.file.display(),
        r.batch,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        if r.inputs == "data" { "the first training batch" } else { "pseudo-random" }
    );
    let stages: Vec<String> = r.compile.iter().map(|(n, s)| format!("{n} {:.2}", ms(*s))).collect();
    println!(
        "  compile (ms): {}; total {:.2} ({} nodes, {} kernels, {} compiled, the rest cached)",
        stages.join(", "),
        ms(r.compile_total()),
        r.nodes,
        r.kernels,
        r.kernels_compiled
    );
    println!(
        "  memory: {:.1} MiB of temporaries ({:.1} MiB without buffer reuse), {} parameters",
        r.temp_bytes.0 as f64 / 1048576.0,
        r.temp_bytes.1 as f64 / 1048576.0,
        r.params
    );
    if let Some(d) = r.data_seconds {
        println!("  data block prepared in {:.1} ms (not counted above)", ms(d));
    }
    let t = &r.time;
    let unit = if t.median < 1e-3 { ("µs", 1e6) } else { ("ms", 1e3) };
    let f = |s: f64| s * unit.1;
    println!(
        "  {what}: median {:.3} {u} (quartiles {:.3} – {:.3}, min {:.3}, max {:.3}) over {} runs after {} warm-up; \
         process CPU {:.3} {u}/run; {:.2} GFLOP/s",
        f(t.median),
        f(t.q1),
        f(t.q3),
        f(t.min),
        f(t.max),
        t.iters,
        t.warmup,
        f(t.cpu_mean),
        r.flops as f64 / t.median / 1e9,
        u = unit.0,
    );
    if let Some(p) = &r.profile {
        let total: f64 = p.iter().map(|k| k.seconds).sum();
        println!("  profile: kernels run one at a time, {:.3} ms per run in total", ms(total));
        for (c, s, n) in r.profile_by_category() {
            println!("    {c:<22} {:>9.3} ms {:>5.1}%  ({n} kernels)", ms(s), 100.0 * s / total.max(1e-12));
        }
        println!("  slowest kernels:");
        for k in p.iter().take(25) {
            let gflops = if k.seconds > 0.0 { k.flops as f64 / k.seconds / 1e9 } else { 0.0 };
            println!(
                "    {:>8.3} ms {:>5.1}% {:>6.1} GFLOP/s  {}",
                ms(k.seconds),
                100.0 * k.seconds / total.max(1e-12),
                gflops,
                k.description
            );
        }
    }
}
