//! `modelc run FILE --model NAME --input IN.safetensors [--weights W.safetensors] [--seed S]
//! --output OUT.safetensors [--backend jit|reference]`: inference. Input tensors are named
//! after the parameters of `forward`, outputs `out` (or `out0`, `out1`, ... for tuples).

use clap::{Args, ValueEnum};
use modelc::elab::elaborate_model;
use modelc::interp;
use modelc::ir::TensorType;
use modelc::passes::{PipelineOptions, run_pipeline};
use modelc::runtime::checkpoint::{read_tensors, write_tensors};
use modelc::runtime::{ExecOptions, Executable, init_params};
use modelc::tensor::Tensor;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Backend {
    /// Cranelift-compiled kernels (the product path).
    Jit,
    /// The reference interpreter (slow; for checking).
    Reference,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// Input tensors, named after the parameters of `forward`.
    #[arg(long)]
    pub input: PathBuf,
    /// Parameters keyed by path; without it parameters are initialised from `--seed`.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: &RunArgs) -> ExitCode {
    let Some(prog) = super::load(&a.file) else { return ExitCode::from(1) };
    let (args, mut opts) = match (super::parse_args(&a.args), super::elab_options(&a.dims)) {
        (Ok(x), Ok(o)) => (x, o),
        (Err(e), _) | (_, Err(e)) => return super::usage_error(&e),
    };
    let name = match super::pick_model(&prog, a.model.as_deref()) {
        Ok(n) => n,
        Err(e) => return super::usage_error(&e),
    };
    // Symbolic dimensions not given on the command line come from the input file's shapes.
    if let Err(e) = super::dims_from_inputs(&prog, &name, &a.input, &mut opts) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let e = match elaborate_model(&prog, &name, &args, &opts) {
        Ok(e) => e,
        Err(diags) => {
            super::report(&prog, &diags);
            return ExitCode::from(1);
        }
    };
    super::report(&prog, &e.warnings);
    let graph = run_pipeline(e.graph, &PipelineOptions::default());
    let wanted: Vec<(String, TensorType)> =
        graph.inputs.iter().map(|i| (i.name.clone(), i.ty.clone())).collect();
    let result = (|| -> Result<Vec<Tensor>, String> {
        let inputs = read_tensors(&a.input, &wanted, "input").map_err(|e| e.to_string())?;
        let params = match &a.weights {
            Some(w) => {
                let want: Vec<(String, TensorType)> =
                    graph.params.iter().map(|p| (p.path.clone(), p.ty.clone())).collect();
                read_tensors(w, &want, "weight").map_err(|e| e.to_string())?
            }
            None => init_params(&graph, a.seed),
        };
        match a.backend {
            Backend::Jit => {
                let mut exe = Executable::new(
                    &graph,
                    &ExecOptions { threads: a.threads, seed: a.seed, ..ExecOptions::default() },
                )
                .map_err(|e| e.to_string())?;
                exe.set_params(&params).map_err(|e| e.to_string())?;
                exe.run(&inputs).map_err(|e| e.to_string())
            }
            Backend::Reference => interp::run::<f32>(&graph, &inputs, &params)
                .map(|o| o.outputs.into_iter().map(|(_, t)| t).collect())
                .map_err(|e| e.to_string()),
        }
    })();
    match result {
        Ok(outs) => {
            let named: Vec<(String, &Tensor)> =
                graph.outputs.iter().map(|o| o.name.clone()).zip(outs.iter()).collect();
            if let Err(e) = write_tensors(&a.output, &named) {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            for (n, t) in &named {
                eprintln!("{n}: {:?} written to {}", t.shape(), a.output.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
