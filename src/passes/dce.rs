//! Dead-code elimination: keeps the nodes that outputs and updates depend on and drops the
//! rest. The input and parameter tables stay as they are (they are the graph's calling
//! convention); only unused `input`/`param` nodes go.

use super::rebuild::Rebuild;
use crate::ir::Graph;

/// Removes every node no output or update depends on.
pub fn dce(g: &Graph) -> Graph {
    let mut live = vec![false; g.len()];
    for o in &g.outputs {
        live[o.node.index()] = true;
    }
    for (_, n) in &g.updates {
        live[n.index()] = true;
    }
    // Arguments come before their users, so one backward sweep marks everything needed.
    for i in (0..g.len()).rev() {
        if live[i] {
            for a in &g.nodes[i].args {
                live[a.index()] = true;
            }
        }
    }
    let mut rb = Rebuild::new(g);
    for id in g.node_ids().filter(|id| live[id.index()]) {
        rb.copy(id);
    }
    rb.finish()
}
