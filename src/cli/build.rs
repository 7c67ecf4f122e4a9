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
    print!("{}", print_kernels(exe.schedule()));
    println!();
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
        ms(t0.elapsed()),
        t.kernels_compiled
    );
    println!("threads: {}", exe.threads());
    ExitCode::SUCCESS
}
