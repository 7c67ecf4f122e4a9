//! Data pipelines: `data` blocks lowered to an ordered plan and run reproducibly.
