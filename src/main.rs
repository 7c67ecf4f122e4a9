//! The `modelc` command-line tool. Argument parsing lives here; each subcommand is a function
//! in `cli/`. Only this binary and `diag` know about terminals.

mod cli;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "modelc", version, about = "A declarative model-description compiler", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse, name-check and elaborate every model in the files; print diagnostics.
    Check {
        files: Vec<PathBuf>,
        /// Assign a symbolic dimension at the top level, e.g. `--dim T=64`.
        #[arg(long = "dim", value_name = "NAME=VALUE")]
        dims: Vec<String>,
    },
    /// Print the graph IR of a model's forward pass.
    Ir(cli::ir::IrArgs),
    /// Print a table of the module tree: output shapes, parameters, FLOPs.
    Summary(cli::summary::SummaryArgs),
    /// Compile a model's forward pass and report kernels, memory and compile time.
    Build(cli::build::BuildArgs),
    /// Run a model's forward pass on inputs from a safetensors file.
    Run(cli::run::RunArgs),
    /// Run a data pipeline alone and report what each step did.
    Data(cli::data::DataArgs),
    /// Train a model as a `train` block describes: data, loss, optimizer, schedule, checkpoints.
    Train(cli::train::TrainArgs),
    /// Compute a train block's loss and metrics with a checkpoint's parameters.
    Eval(cli::train::EvalArgs),
    /// Classify the rows of a split with a trained checkpoint.
    Predict(cli::train::PredictArgs),
    /// Continue a text prompt with a trained character-level language model.
    Generate(cli::train::GenerateArgs),
    /// Time compiling and running a training step (train block) or a forward pass (model).
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files, dims } => cli::check::run(&files, &dims),
        Command::Ir(args) => cli::ir::run(&args),
        Command::Summary(args) => cli::summary::run(&args),
        Command::Build(args) => cli::build::run(&args),
        Command::Run(args) => cli::run::run(&args),
        Command::Data(args) => cli::data::run(&args),
        Command::Train(args) => cli::train::run(&args),
        Command::Eval(args) => cli::train::eval(&args),
        Command::Predict(args) => cli::train::predict(&args),
        Command::Generate(args) => cli::train::generate(&args),
        Command::Bench(args) => cli::bench::run(&args),
    }
}
