//! The library side of `modelc data FILE [--data NAME] [--report FILE] [--write-removed DIR]`:
//! load the file, pick the data block, lower and run it, write the JSON report and render the
//! table. The CLI only parses arguments and prints what this returns.

use super::DataError;
use super::plan::lower_data_block;
use super::report::DataReport;
use super::run::{PreparedData, RunOptions, run};
use crate::diag::{Diagnostic, Diagnostics, RenderOptions, render_all};
use crate::elab::Program;
use crate::source::SourceMap;
use crate::syntax::ast::{ConfigBlock, Item};
use std::io::IsTerminal;
use std::path::Path;

/// Lowers and runs one block; `base_dir` is the folder of its `.model` file.
pub fn run_data_block(
    block: &ConfigBlock,
    base_dir: &Path,
    opts: &RunOptions,
) -> Result<PreparedData, DataCommandError> {
    let plan = lower_data_block(block, base_dir)
        .map_err(|d| DataCommandError::Compile { sources: SourceMap::new(), diagnostics: d.0 })?;
    run(&plan, opts).map_err(DataCommandError::Data)
}

/// What `modelc data` prints: the table, and the report it was rendered from.
#[derive(Debug)]
pub struct DataCommandOutput {
    pub table: String,
    pub report: DataReport,
}

/// Runs the data block `data` (or the only one) of the file at `path`; writes the JSON report
/// to `report` and dropped records under `write_removed` when given. Progress lines go to
/// stderr when it is a terminal.
pub fn run_data_command(
    path: &Path,
    data: Option<&str>,
    report: Option<&Path>,
    write_removed: Option<&Path>,
) -> Result<DataCommandOutput, DataCommandError> {
    let prog = Program::load(path);
    if prog.diagnostics.iter().any(Diagnostic::is_error) {
        return Err(DataCommandError::Compile {
            sources: prog.sources.clone(),
            diagnostics: prog.diagnostics,
        });
    }
    let blocks: Vec<&ConfigBlock> = prog
        .root_items()
        .filter_map(|(_, item)| match item {
            Item::Data(b) => Some(b),
            _ => None,
        })
        .collect();
    let names = || blocks.iter().map(|b| format!("`{}`", b.name.name)).collect::<Vec<_>>().join(", ");
    let block = match data {
        Some(name) => blocks.iter().find(|b| b.name.name == name).ok_or_else(|| {
            DataCommandError::Usage(if blocks.is_empty() {
                format!("`{}` has no data block", path.display())
            } else {
                format!("`{}` has no data block `{name}`; it has {}", path.display(), names())
            })
        })?,
        None => match blocks.as_slice() {
            [one] => one,
            [] => return Err(DataCommandError::Usage(format!("`{}` has no data block", path.display()))),
            _ => {
                return Err(DataCommandError::Usage(format!(
                    "`{}` has several data blocks ({}); choose one with --data NAME",
                    path.display(),
                    names()
                )));
            }
        },
    };
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let plan = lower_data_block(block, base_dir)
        .map_err(|d| DataCommandError::Compile { sources: prog.sources.clone(), diagnostics: d.0 })?;
    let opts = RunOptions {
        write_removed: write_removed.map(Path::to_path_buf),
        progress: std::io::stderr().is_terminal(),
    };
    let prepared = run(&plan, &opts).map_err(DataCommandError::Data)?;
    let report_data = prepared.report().clone();
    if let Some(report_path) = report {
        std::fs::write(report_path, report_data.to_json())
            .map_err(|e| DataCommandError::Data(DataError::io(report_path, &e)))?;
    }
    Ok(DataCommandOutput { table: report_data.render_table(), report: report_data })
}

/// Why `modelc data` failed.
#[derive(Debug)]
pub enum DataCommandError {
    /// Parse or lowering diagnostics, with the sources to render them against.
    Compile { sources: SourceMap, diagnostics: Vec<Diagnostic> },
    /// A run-time error naming its file.
    Data(DataError),
    /// The file holds no (or no such) data block.
    Usage(String),
}

impl DataCommandError {
    /// The text to print on stderr (diagnostics rendered without colour).
    pub fn render(&self, opts: RenderOptions) -> String {
        match self {
            DataCommandError::Compile { sources, diagnostics } => render_all(sources, diagnostics, opts),
            DataCommandError::Data(e) => format!("{e}\n"),
            DataCommandError::Usage(m) => format!("error: {m}\n"),
        }
    }
}

impl std::fmt::Display for DataCommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataCommandError::Compile { diagnostics, .. } => {
                write!(f, "{}", Diagnostics(diagnostics.clone()))
            }
            DataCommandError::Data(e) => write!(f, "{e}"),
            DataCommandError::Usage(m) => write!(f, "error: {m}"),
        }
    }
}

impl std::error::Error for DataCommandError {}
