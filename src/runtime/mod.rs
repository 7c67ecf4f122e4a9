//! The executor: buffers, parameters, kernel runs, checkpoints.
