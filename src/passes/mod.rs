//! Graph-to-graph passes: folding, CSE, DCE, simplification.
