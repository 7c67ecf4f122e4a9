//! Training runs: the `train` block, optimizers, schedules, checkpoints.
