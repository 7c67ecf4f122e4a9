//! The reference interpreter of the graph IR: the oracle the JIT is tested against.
