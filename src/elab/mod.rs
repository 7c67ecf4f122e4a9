//! Elaboration: names, module instances, compile-time evaluation and shapes → graph IR.
