//! Training runs: a `train` block read into a [`TrainSpec`], its step graph (objective,
//! autodiff, clipping, optimizer update) and evaluation graph, and the loop that runs them
//! with evaluation, metrics, checkpoints, resume and fault handling.

pub mod checkpoint;
pub mod graph;
pub mod infer;
pub mod run;
pub mod spec;

pub use run::{Progress, TrainError, TrainOptions, TrainSummary, request_stop, train};
pub use spec::{TrainSpec, find_train_block, lower_train_block};
