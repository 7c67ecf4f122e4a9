//! Reverse-mode automatic differentiation as a graph pass (one vector-Jacobian rule per op).
//! (Temporary stub on main until the autodiff branch lands.)

use crate::ir::{Graph, NodeId};

#[derive(Clone, Debug, PartialEq)]
pub struct AutodiffError(pub String);

impl std::fmt::Display for AutodiffError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AutodiffError {}

pub fn grad(_g: &mut Graph, _loss: NodeId, _wrt: &[NodeId]) -> Result<Vec<NodeId>, AutodiffError> {
    Err(AutodiffError("autodiff is not merged yet".into()))
}
