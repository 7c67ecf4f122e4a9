//! Reverse-mode automatic differentiation as a graph pass (one vector-Jacobian rule per op).
