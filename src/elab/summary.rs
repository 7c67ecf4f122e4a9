//! The module tree of an elaborated model with output shapes, parameter counts and FLOPs per
//! forward pass (the `modelc summary` table).

use super::eval::{Elaborated, Elaborator, InstanceInfo};
use super::value::InstId;
use std::fmt::Write;

/// Collects the instance tree (pre-order) after the method has been elaborated.
pub(super) fn instance_infos(el: &mut Elaborator<'_>, root: InstId) -> Vec<InstanceInfo> {
    let mut order = Vec::new();
    el.inst_paths.clear();
    el.walk_tree(root, String::new(), 0, &mut order);
    order
        .into_iter()
        .map(|(id, path, depth)| {
            let inst = &el.insts[id.0 as usize];
            let own_params = inst.params.iter().filter(|p| p.trainable).map(|p| p.ty.numel() as u64).sum();
            InstanceInfo {
                path,
                module: inst.module.to_string(),
                args: inst.args_text.clone(),
                depth,
                own_params,
                outputs: el.call_outputs.get(&id).cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// One row of the summary table.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    pub path: String,
    pub module: String,
    pub depth: usize,
    /// Output shapes of the first call, e.g. `f32[1, 64, 96]`.
    pub output: String,
    /// Trainable parameters of the instance and everything below it.
    pub params: u64,
    /// Floating-point operations of the nodes created in this instance's methods and below.
    pub flops: u64,
}

/// Builds the rows (pre-order) and renders the table.
pub fn summarize(e: &Elaborated) -> (Vec<SummaryRow>, String) {
    let g = &e.graph;
    let mut rows = Vec::new();
    for (i, inst) in e.instances.iter().enumerate() {
        let prefix = &inst.path;
        let under = |p: &str| prefix.is_empty() || p == prefix || p.starts_with(&format!("{prefix}."));
        let params: u64 = e.instances[i..]
            .iter()
            .take_while(|x| x.depth > inst.depth || std::ptr::eq(*x, inst))
            .map(|x| x.own_params)
            .sum();
        let flops: u64 = g.node_ids().filter(|&n| under(g.scope_path(n))).map(|n| g.node_flops(n)).sum();
        let output = inst.outputs.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
        rows.push(SummaryRow {
            path: if inst.path.is_empty() { "(model)".into() } else { inst.path.clone() },
            module: if inst.args.is_empty() {
                inst.module.clone()
            } else {
                format!("{}({})", inst.module, inst.args)
            },
            depth: inst.depth,
            output: if output.is_empty() { "-".into() } else { output },
            params,
            flops,
        });
    }
    let mut out = String::new();
    let w0 = rows.iter().map(|r| r.path.len() + 2 * r.depth).max().unwrap_or(4).max(5);
    let w1 = rows.iter().map(|r| r.module.len()).max().unwrap_or(6).clamp(6, 48);
    let w2 = rows.iter().map(|r| r.output.len()).max().unwrap_or(6).max(6);
    let _ = writeln!(
        out,
        "{:<w0$}  {:<w1$}  {:<w2$}  {:>12}  {:>14}",
        "path", "module", "output", "params", "flops/forward"
    );
    let _ = writeln!(out, "{}", "-".repeat(w0 + w1 + w2 + 12 + 14 + 8));
    for r in &rows {
        let mut module = r.module.clone();
        if module.len() > w1 {
            module.truncate(w1 - 3);
            module.push_str("...");
        }
        let path = format!("{}{}", "  ".repeat(r.depth), r.path);
        let _ = writeln!(
            out,
            "{path:<w0$}  {module:<w1$}  {:<w2$}  {:>12}  {:>14}",
            r.output,
            group(r.params),
            group(r.flops)
        );
    }
    let total_params: u64 = e.instances.iter().map(|x| x.own_params).sum();
    let buffers: u64 = g.params.iter().filter(|p| !p.trainable).map(|p| p.ty.numel() as u64).sum();
    let _ = writeln!(out, "{}", "-".repeat(w0 + w1 + w2 + 12 + 14 + 8));
    let _ = writeln!(out, "trainable parameters: {}", group(total_params));
    if buffers > 0 {
        let _ = writeln!(out, "buffers (not trained): {}", group(buffers));
    }
    let _ = writeln!(out, "flops per forward: {}", group(g.flops()));
    if !e.dims.is_empty() {
        let d: Vec<String> = e.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let _ = writeln!(out, "dimensions: {}", d.join(", "));
    }
    (rows, out)
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
