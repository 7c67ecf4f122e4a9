//! The library side of `modelc data`: lower a data block, run it, write the JSON report and
//! render the table. The CLI only parses arguments and prints what this returns.

use super::plan::lower_data_block;
use super::run::{PreparedData, RunOptions, run};
use super::DataError;
use crate::diag::Diagnostics;
use crate::syntax::ast::ConfigBlock;
use std::path::Path;

/// Lowers and runs one block; `base_dir` is the folder of its `.model` file.
pub fn run_data_block(block: &ConfigBlock, base_dir: &Path, opts: &RunOptions) -> Result<PreparedData, DataCommandError> {
    let plan = lower_data_block(block, base_dir).map_err(DataCommandError::Compile)?;
    run(&plan, opts).map_err(DataCommandError::Data)
}

/// Why `modelc data` failed: diagnostics of the block (render them with the source map), or
/// a run-time error that names its file.
#[derive(Debug)]
pub enum DataCommandError {
    Compile(Diagnostics),
    Data(DataError),
}

impl std::fmt::Display for DataCommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataCommandError::Compile(d) => write!(f, "{d}"),
            DataCommandError::Data(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DataCommandError {}
