//! Run-time errors of a data pipeline: files that cannot be read, truncated archives, and
//! invalid records under `on_invalid: fail`. Each names the file (and line or record) at fault
//! and carries a stable code explained in `docs/errors.md`.

use std::fmt;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct DataError {
    /// `E0620`..`E0629`.
    pub code: &'static str,
    pub message: String,
}

impl DataError {
    pub fn new(code: &'static str, message: impl Into<String>) -> DataError {
        DataError { code, message: message.into() }
    }

    /// E0620: a file cannot be opened or read.
    pub fn io(path: &Path, err: &std::io::Error) -> DataError {
        DataError::new("E0620", format!("cannot read `{}`: {err}", path.display()))
    }

    /// E0621: a file is truncated or not in the format its source declares.
    pub fn format(path: &Path, what: impl fmt::Display) -> DataError {
        DataError::new("E0621", format!("`{}`: {what}", path.display()))
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: {}", self.code, self.message)
    }
}

impl std::error::Error for DataError {}
