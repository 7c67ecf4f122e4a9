//! `modelc ir FILE [--model NAME] [--arg k=v]... [--dim N=v]...`: the graph IR text.

use clap::Args;
use modelc::elab::elaborate_model;
use modelc::ir::print_graph;
use modelc::passes::{PipelineOptions, run_pipeline, run_until};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct IrArgs {
    pub file: PathBuf,
    /// The model to elaborate (default: the file's only model).
    #[arg(long)]
    pub model: Option<String>,
    /// A model argument, e.g. `--arg layers=4`.
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    /// A symbolic dimension of the signature, e.g. `--dim B=1`.
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Elaborate in training mode (dropout active, batch statistics).
    #[arg(long)]
    pub training: bool,
    /// Print the graph after this pass of the first pipeline round (fold, simplify, cse, dce)
    /// instead of the elaborated graph.
    #[arg(long, value_name = "PASS")]
    pub after: Option<String>,
    /// Print the graph after the whole optimisation pipeline.
    #[arg(long, conflicts_with = "after")]
    pub optimized: bool,
    /// What to print: the graph (`graph`) or the fused kernel list after the pipeline
    /// (`kernels`).
    #[arg(long, default_value = "graph", value_parser = ["graph", "kernels"])]
    pub stage: String,
}

pub fn run(a: &IrArgs) -> ExitCode {
    let Some(prog) = super::load(&a.file) else { return ExitCode::from(1) };
    let (args, mut opts) = match (super::parse_args(&a.args), super::elab_options(&a.dims)) {
        (Ok(x), Ok(o)) => (x, o),
        (Err(e), _) | (_, Err(e)) => return super::usage_error(&e),
    };
    opts.training = a.training;
    let name = match super::pick_model(&prog, a.model.as_deref()) {
        Ok(n) => n,
        Err(e) => return super::usage_error(&e),
    };
    match elaborate_model(&prog, &name, &args, &opts) {
        Ok(e) => {
            super::report(&prog, &e.warnings);
            let popts = PipelineOptions::default();
            let graph = if let Some(pass) = &a.after {
                match run_until(e.graph, pass, &popts) {
                    Ok(g) => g,
                    Err(err) => return super::usage_error(&err.to_string()),
                }
            } else if a.optimized {
                run_pipeline(e.graph, &popts)
            } else {
                e.graph
            };
            if a.stage == "kernels" {
                let graph =
                    if a.optimized || a.after.is_some() { graph } else { run_pipeline(graph, &popts) };
                print!("{}", modelc::sched::print_kernels(&modelc::sched::schedule(&graph)));
            } else {
                print!("{}", print_graph(&graph));
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            super::report(&prog, &diags);
            ExitCode::from(1)
        }
    }
}
