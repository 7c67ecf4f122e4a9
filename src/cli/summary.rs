//! `modelc summary FILE [--model NAME]`: module tree, output shapes, parameters, FLOPs.

use clap::Args;
use modelc::elab::{elaborate_model, summarize};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SummaryArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
}

pub fn run(a: &SummaryArgs) -> ExitCode {
    let Some(prog) = super::load(&a.file) else { return ExitCode::from(1) };
    let (args, opts) = match (super::parse_args(&a.args), super::elab_options(&a.dims)) {
        (Ok(x), Ok(o)) => (x, o),
        (Err(e), _) | (_, Err(e)) => return super::usage_error(&e),
    };
    let name = match super::pick_model(&prog, a.model.as_deref()) {
        Ok(n) => n,
        Err(e) => return super::usage_error(&e),
    };
    match elaborate_model(&prog, &name, &args, &opts) {
        Ok(e) => {
            super::report(&prog, &e.warnings);
            println!("model {name}");
            print!("{}", summarize(&e).1);
            ExitCode::SUCCESS
        }
        Err(diags) => {
            super::report(&prog, &diags);
            ExitCode::from(1)
        }
    }
}
