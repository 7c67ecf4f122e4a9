//! Data pipelines: a `data` block of a `.model` file is lowered to a typed [`DataPlan`]
//! ([`plan`]), then executed by [`run`] through read → validate → clean → dedup → split → mix →
//! augment → shape → batch, producing tensor batches per split and a [`DataReport`].
//!
//! *Invariant:* lowering does no file I/O, so `modelc check` can use it as a name check; every
//! random choice at run time derives from `(seed, stage name, epoch)`.

mod augment;
mod clean;
mod command;
mod dedup;
mod error;
mod glob;
pub mod plan;
mod record;
mod report;
pub mod run;
mod shape;
mod source;
mod split;

pub use command::{DataCommandError, DataCommandOutput, run_data_block, run_data_command};
pub use dedup::{MinHasher, jaccard_estimate};
pub use error::DataError;
pub use glob::glob_match;
pub use plan::{BatchField, DataPlan, DimSig, check_data_block, lower_data_block};
pub use record::{Body, Record};
pub use report::{DataReport, SplitReport, StepReport};
pub use run::{Batch, PreparedData, RunOptions};
pub use shape::Vocab;
