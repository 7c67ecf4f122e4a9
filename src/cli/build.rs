//! `modelc build FILE [--model NAME]`: elaborates, optimises, schedules and JIT-compiles a
//! model's forward pass and reports the kernels, buffer memory and compile time by stage.

use clap::Args;
use modelc::elab::elaborate_model;
use modelc::passes::{PipelineOptions, run_pipeline};
use modelc::runtime::{ExecOptions, Executable};
use modelc::sched::print_kernels;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BuildArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Threads of the executor (default: MODELC_THREADS, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also time the forward pass: 3 warm-up runs, then N timed runs on random inputs; prints
    /// the median and the fastest.
    #[arg(long, value_name = "N")]
    pub time: Option<usize>,
    /// Print only the summary lines, not the kernel list.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(a: &BuildArgs) -> ExitCode {
    let t0 = Instant::now();
    let Some(prog) = super::load(&a.file) else { return ExitCode::from(1) };
    let (args, opts) = match (super::parse_args(&a.args), super::elab_options(&a.dims)) {
        (Ok(x), Ok(o)) => (x, o),
        (Err(e), _) | (_, Err(e)) => return super::usage_error(&e),
    };
    let name = match super::pick_model(&prog, a.model.as_deref()) {
        Ok(n) => n,
        Err(e) => return super::usage_error(&e),
    };
    let t_parse = t0.elapsed();
    let t1 = Instant::now();
    let e = match elaborate_model(&prog, &name, &args, &opts) {
        Ok(e) => e,
        Err(diags) => {
            super::report(&prog, &diags);
            return ExitCode::from(1);
        }
    };
    super::report(&prog, &e.warnings);
    let t_elab = t1.elapsed();
    let nodes_before = e.graph.len();
    let t2 = Instant::now();
    let graph = run_pipeline(e.graph, &PipelineOptions::default());
    let t_passes = t2.elapsed();
    let exe = match Executable::new(&graph, &ExecOptions { threads: a.threads, ..ExecOptions::default() }) {
        Ok(x) => x,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(1);
        }
    };
    let t = exe.timings();
    // Everything up to a runnable executable, less the parameter initialisation and buffer
    // allocation inside `Executable::new`, which is not compilation (reported on its own).
    let t_built = t0.elapsed();
    let t_compile = t_built.saturating_sub(t.init);
    if !a.quiet {
        print!("{}", print_kernels(exe.schedule()));
        println!();
    }
    println!(
        "model {name}: {} graph nodes ({nodes_before} before passes), {} FLOPs per run",
        graph.len(),
        graph.flops()
    );
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "compile time: parse+load {:.2} ms, elaborate {:.2} ms, passes {:.2} ms, schedule {:.2} ms, codegen {:.2} ms, finalize {:.2} ms; total {:.2} ms ({} kernels compiled, the rest cached)",
        ms(t_parse),
        ms(t_elab),
        ms(t_passes),
        ms(t.schedule),
        ms(t.codegen),
        ms(t.finalize),
        ms(t_compile),
        t.kernels_compiled
    );
    println!(
        "not compilation: buffers + parameter initialisation {:.2} ms; compile + initialise {:.2} ms",
        ms(t.init),
        ms(t_built)
    );
    println!("threads: {}", exe.threads());
    if let Some(n) = a.time {
        let mut exe = exe;
        let inputs = modelc::bench::random_inputs(&graph);
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 3 {
            let t = Instant::now();
            if let Err(err) = exe.run(&inputs) {
                eprintln!("error: {err}");
                return ExitCode::from(1);
            }
            if i >= 3 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        if let (Some(min), Some(med)) = (times.first(), times.get(times.len() / 2)) {
            println!("forward: median {med:.3} ms, fastest {min:.3} ms over {n} runs");
        }
    }
    ExitCode::SUCCESS
}
