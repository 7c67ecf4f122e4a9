//! `modelc data FILE [--data NAME] [--report report.json] [--write-removed DIR]`: runs a data
//! pipeline alone and prints what each step did.

use clap::Args;
use modelc::data::run_data_command;
use modelc::diag::RenderOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DataArgs {
    pub file: PathBuf,
    /// The data block to run (default: the file's only one).
    #[arg(long)]
    pub data: Option<String>,
    /// Write the full report (steps, splits, class counts, source shares) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write every dropped record under DIR, one JSON-lines file per step.
    #[arg(long, value_name = "DIR")]
    pub write_removed: Option<PathBuf>,
}

pub fn run(a: &DataArgs) -> ExitCode {
    match run_data_command(&a.file, a.data.as_deref(), a.report.as_deref(), a.write_removed.as_deref()) {
        Ok(out) => {
            print!("{}", out.table);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            eprint!("{}", e.render(RenderOptions { color, width: 100 }));
            ExitCode::from(1)
        }
    }
}
