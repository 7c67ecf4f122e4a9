//! Scheduling: fusion of graph nodes into kernels and buffer planning.
