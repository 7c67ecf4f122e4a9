//! The stable text form of a graph: what `modelc ir` prints and what snapshots record.
//!
//! ```text
//! graph Mlp.forward {
//!   input x: f32[2, 64]
//!   param 0 fc1.weight: f32[64, 256] = glorot_uniform(...)
//!   %0: f32[2, 64] = input 0
//!   %1: f32[64, 256] = param 0                      # fc1
//!   %2: f32[2, 256] = matmul %0, %1                 # fc1
//!   output y = %2
//! }
//! ```

use super::graph::Graph;
use std::fmt::Write;

/// Renders the whole graph. Scope paths are shown as `# path` comments.
pub fn print_graph(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graph {} {{", g.name);
    for inp in &g.inputs {
        let _ = writeln!(out, "  input {}: {}", inp.name, inp.ty);
    }
    for (i, p) in g.params.iter().enumerate() {
        let kind = if p.trainable { "param" } else { "buffer" };
        let _ = writeln!(out, "  {kind} {i} {}: {} = {}", p.path, p.ty, p.init);
    }
    for id in g.node_ids() {
        let n = g.node(id);
        let mut line = format!("  {id}: {} = {}", g.types.get(n.ty), n.op);
        for (i, a) in n.args.iter().enumerate() {
            line.push_str(if i == 0 { " " } else { ", " });
            let _ = write!(line, "{a}");
        }
        let scope = g.scope_path(id);
        if !scope.is_empty() {
            let pad = 56usize.saturating_sub(line.len()).max(1);
            line.push_str(&" ".repeat(pad));
            let _ = write!(line, "# {scope}");
        }
        out.push_str(&line);
        out.push('\n');
    }
    for (p, n) in &g.updates {
        let _ = writeln!(out, "  update {} = {n}", g.params[*p as usize].path);
    }
    for o in &g.outputs {
        let _ = writeln!(out, "  output {} = {}", o.name, o.node);
    }
    out.push_str("}\n");
    out
}
