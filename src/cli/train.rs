//! `modelc train FILE [--run NAME] [--steps N] [--epochs N] [--out DIR] [--seed S]
//! [--threads N] [--resume] [--json]`: runs a train block; Ctrl-C saves a checkpoint and stops.

use super::{load, usage_error};
use modelc::diag::{RenderOptions, render};
use modelc::train::{Progress, TrainError, TrainOptions, request_stop, train};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The `.model` file.
    pub file: PathBuf,
    /// The train block to run (default: the only one in the file).
    #[arg(long)]
    pub run: Option<String>,
    /// Train for this many steps instead of the block's length.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Train for this many epochs instead of the block's length.
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Run directory (metrics.jsonl, checkpoints/); default `runs/<run>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of parameters and dropout (the data block has its own seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Threads per kernel (default: MODELC_THREADS, else every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Continue from the newest checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
    /// Print the final summary as one JSON object (the last line of stdout).
    #[arg(long)]
    pub json: bool,
    /// No progress output on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

extern "C" fn on_sigint(_: libc::c_int) {
    static SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SEEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        // A second Ctrl-C: stop now (checkpoints are written atomically, none is damaged).
        unsafe { libc::_exit(130) };
    }
    request_stop();
}

fn install_sigint() {
    // SAFETY: the handler only touches atomics and calls `_exit`, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn run(args: &TrainArgs) -> ExitCode {
    let Some(prog) = load(&args.file) else { return ExitCode::from(1) };
    if args.threads == Some(0) {
        return usage_error("--threads must be at least 1");
    }
    install_sigint();
    let progress = if args.quiet {
        Progress::Quiet
    } else if std::io::stderr().is_terminal() {
        Progress::Bar
    } else {
        Progress::Lines
    };
    let opts = TrainOptions {
        run: args.run.clone().unwrap_or_default(),
        steps: args.steps,
        epochs: args.epochs,
        out: args.out.clone(),
        seed: args.seed,
        threads: args.threads,
        resume: args.resume,
        progress,
    };
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let ropts = RenderOptions { color, width: 100 };
    match train(&prog, &opts) {
        Ok(s) => {
            let mut final_text = Vec::new();
            for (split, name, v) in &s.final_metrics {
                final_text.push(format!("{split}_{name} {v:.4}"));
            }
            eprintln!(
                "trained `{}`: {} steps in {:.1}s (step graph compiled in {:.0} ms){}",
                s.run,
                s.steps,
                s.wall_seconds,
                s.compile_seconds * 1e3,
                s.resumed_from.map_or(String::new(), |r| format!(", resumed from step {r}"))
            );
            if let Some(c) = &s.checkpoint {
                eprintln!("checkpoint: {}", c.display());
            }
            println!("{}", final_text.join("  "));
            if args.json {
                let mut obj = serde_json::Map::new();
                obj.insert("run".into(), s.run.clone().into());
                obj.insert("steps".into(), s.steps.into());
                obj.insert("wall_seconds".into(), serde_json::json!(s.wall_seconds));
                obj.insert("compile_seconds".into(), serde_json::json!(s.compile_seconds));
                obj.insert("out_dir".into(), s.out_dir.display().to_string().into());
                if let Some(c) = &s.checkpoint {
                    obj.insert("checkpoint".into(), c.display().to_string().into());
                }
                if let Some(l) = s.last_train_loss {
                    obj.insert("train_loss".into(), serde_json::json!(l));
                }
                for (split, name, v) in &s.final_metrics {
                    obj.insert(format!("{split}_{name}"), serde_json::json!(v));
                }
                println!("{}", serde_json::Value::Object(obj));
            }
            ExitCode::SUCCESS
        }
        Err(e) => report_error(&e, ropts),
    }
}

/// Prints a training error; returns the exit code (130 after Ctrl-C, 1 otherwise).
pub fn report_error(e: &TrainError, ropts: RenderOptions) -> ExitCode {
    match e {
        TrainError::Compile { sources, diagnostics } => {
            for d in diagnostics {
                eprint!("{}", render(sources, d, ropts));
                eprintln!();
            }
            ExitCode::from(1)
        }
        TrainError::NonFinite { sources, diagnostic, .. } => {
            eprint!("{}", render(sources, diagnostic, ropts));
            ExitCode::from(1)
        }
        TrainError::Interrupted { step, checkpoint } => {
            eprintln!("interrupted after step {step}; saved {}", checkpoint.display());
            eprintln!("continue with --resume");
            ExitCode::from(130)
        }
        other => {
            eprintln!("{other}");
            ExitCode::from(1)
        }
    }
}

fn render_opts() -> RenderOptions {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    RenderOptions { color, width: 100 }
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    pub file: PathBuf,
    /// The train block whose loss and metrics to compute (default: the only one).
    #[arg(long)]
    pub run: Option<String>,
    /// A checkpoint written by `modelc train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Splits to evaluate (repeatable; default: every split but `train`).
    #[arg(long = "split")]
    pub splits: Vec<String>,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn eval(args: &EvalArgs) -> ExitCode {
    let Some(prog) = load(&args.file) else { return ExitCode::from(1) };
    let run = args.run.clone().unwrap_or_default();
    match modelc::train::infer::evaluate_checkpoint(&prog, &run, &args.checkpoint, &args.splits, args.threads)
    {
        Ok(r) => {
            if !r.same_sources {
                eprintln!(
                    "warning: `{}` was written for other sources than these",
                    args.checkpoint.display()
                );
            }
            let mut obj = serde_json::Map::new();
            for (split, name, v) in &r.metrics {
                println!("{split}_{name} {v:.6}");
                obj.insert(format!("{split}_{name}"), serde_json::json!(v));
            }
            if args.json {
                println!("{}", serde_json::Value::Object(obj));
            }
            ExitCode::SUCCESS
        }
        Err(e) => report_error(&e, render_opts()),
    }
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    pub file: PathBuf,
    /// The train block of the language model (default: the only one).
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Softmax temperature (0: always the most likely character).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the K most likely characters only.
    #[arg(long = "top-k")]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn generate(args: &GenerateArgs) -> ExitCode {
    let Some(prog) = load(&args.file) else { return ExitCode::from(1) };
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return usage_error("--temperature must be a non-negative number");
    }
    let opts = modelc::train::infer::GenerateOptions {
        run: args.run.clone().unwrap_or_default(),
        checkpoint: args.checkpoint.clone(),
        prompt: args.prompt.clone(),
        tokens: args.tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
        threads: args.threads,
    };
    match modelc::train::infer::generate(&prog, &opts) {
        Ok(text) => {
            println!("{}{}", args.prompt, text);
            ExitCode::SUCCESS
        }
        Err(e) => report_error(&e, render_opts()),
    }
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    pub file: PathBuf,
    /// The train block of the classifier (default: the only one).
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The split whose rows to classify (prepared exactly as for evaluation).
    #[arg(long, default_value = "test", conflicts_with = "input")]
    pub split: String,
    /// A file to classify instead, in the format of the data block's first source (a CSV with
    /// the same feature columns, the label column optional), scaled like the training data.
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn predict(args: &PredictArgs) -> ExitCode {
    let Some(prog) = load(&args.file) else { return ExitCode::from(1) };
    let run = args.run.clone().unwrap_or_default();
    let input = match &args.input {
        Some(p) => modelc::train::infer::PredictInput::File(p),
        None => modelc::train::infer::PredictInput::Split(&args.split),
    };
    match modelc::train::infer::predict(&prog, &run, &args.checkpoint, input, args.threads) {
        Ok(rows) => {
            println!("row,predicted,probability,label");
            let mut right = 0;
            let mut labelled = 0;
            for (i, c, p, l) in &rows {
                let lt = l.map_or(String::new(), |l| l.to_string());
                println!("{i},{c},{p:.4},{lt}");
                if let Some(l) = l {
                    labelled += 1;
                    right += usize::from(*l as usize == *c);
                }
            }
            if labelled > 0 {
                eprintln!("{right} of {labelled} correct ({:.2}%)", 100.0 * right as f64 / labelled as f64);
            }
            ExitCode::SUCCESS
        }
        Err(e) => report_error(&e, render_opts()),
    }
}
