//! The IR verifier. It runs after every pass in tests; a failure is a compiler bug, never a
//! user error, so it reports plain strings rather than diagnostics.

use super::graph::Graph;
use super::op::{Op, infer_type};
use super::types::TensorType;

/// Checks the graph invariants: topological order, argument types, leaf indices, side tables,
/// outputs and updates. Returns every violation found.
pub fn verify(g: &Graph) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if g.spans.len() != g.nodes.len() || g.node_scopes.len() != g.nodes.len() {
        errors.push(format!(
            "side tables out of step: {} nodes, {} spans, {} scopes",
            g.nodes.len(),
            g.spans.len(),
            g.node_scopes.len()
        ));
    }
    for id in g.node_ids() {
        let n = g.node(id);
        if n.ty.0 as usize >= g.types.len() {
            errors.push(format!("{id}: type handle {} out of range", n.ty));
            continue;
        }
        if let Some(s) = g.node_scopes.get(id.index())
            && s.0 as usize >= g.scopes.len()
        {
            errors.push(format!("{id}: scope {} out of range", s.0));
        }
        if let Some(bad) = n.args.iter().find(|a| a.0 >= id.0) {
            errors.push(format!("{id}: argument {bad} does not come before the node"));
            continue;
        }
        let declared = g.types.get(n.ty);
        match &n.op {
            Op::Input { index } => match g.inputs.get(*index as usize) {
                Some(i) if &i.ty == declared => {}
                Some(i) => {
                    errors.push(format!("{id}: input {index} has type {} but node says {declared}", i.ty))
                }
                None => errors.push(format!("{id}: input index {index} out of range")),
            },
            Op::Param { index } => match g.params.get(*index as usize) {
                Some(p) if &p.ty == declared => {}
                Some(p) => {
                    errors.push(format!("{id}: param {index} has type {} but node says {declared}", p.ty))
                }
                None => errors.push(format!("{id}: param index {index} out of range")),
            },
            _ => {}
        }
        let args: Vec<&TensorType> = n.args.iter().map(|&a| g.ty(a)).collect();
        match infer_type(&n.op, &args, Some(declared)) {
            Ok(t) if &t == declared => {}
            Ok(t) => errors.push(format!("{id}: `{}` gives {t} but the node says {declared}", n.op)),
            Err(e) => errors.push(format!("{id}: `{}`: {e}", n.op)),
        }
    }
    let in_range = |n: crate::ir::NodeId| n.index() < g.nodes.len();
    for o in &g.outputs {
        if !in_range(o.node) {
            errors.push(format!("output {} refers to missing node {}", o.name, o.node));
        }
    }
    for (p, n) in &g.updates {
        match g.params.get(*p as usize) {
            None => errors.push(format!("update of missing param {p}")),
            Some(info) => {
                if !in_range(*n) {
                    errors.push(format!("update of {} refers to missing node {n}", info.path));
                } else if g.ty(*n) != &info.ty {
                    errors.push(format!(
                        "update of {} has type {} but the param is {}",
                        info.path,
                        g.ty(*n),
                        info.ty
                    ));
                }
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}
