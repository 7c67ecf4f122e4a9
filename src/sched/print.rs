//! The printable kernel list (`modelc ir --stage kernels`, `modelc build`): one line per
//! kernel with its kind, iteration shape, FLOPs, buffers and the graph nodes it fused.

use super::kernel::{KernelBody, Split};
use super::{BufferRole, Schedule};
use crate::ir::ShapeDisplay;
use std::fmt::Write;

pub fn print_kernels(s: &Schedule) -> String {
    let g = &s.graph;
    let mut out = String::new();
    let _ = writeln!(out, "kernels {} ({} kernels) {{", g.name, s.kernels.len());
    for (i, k) in s.kernels.iter().enumerate() {
        let kind = match &k.body {
            KernelBody::Loop(l) => {
                let mut kind = String::from("loop");
                if !l.reductions.is_empty() {
                    kind = format!("rows[{} reductions]", l.reductions.len());
                }
                if l.passes > 1 {
                    let _ = write!(kind, " {} passes", l.passes);
                }
                if l.split == Split::Serial {
                    kind.push_str(" serial");
                }
                kind
            }
            KernelBody::MatMul(m) => {
                if m.epilogue.is_some() {
                    "matmul+epilogue".to_string()
                } else {
                    "matmul".to_string()
                }
            }
        };
        let ops: Vec<String> = k.nodes.iter().map(|&n| format!("{n}:{}", g.node(n).op.name())).collect();
        let bufs: Vec<String> = k.args.iter().map(|b| b.to_string()).collect();
        let _ = writeln!(
            out,
            "  k{i}: {kind} {} flops={} bufs=[{}] ops=[{}]",
            ShapeDisplay(&k.shape),
            k.flops,
            bufs.join(" "),
            ops.join(" ")
        );
    }
    let temps = s.buffers.iter().filter(|b| b.role == BufferRole::Temp).count();
    let _ = writeln!(
        out,
        "  buffers: {} temporaries in {} slots, {} bytes ({} bytes without reuse)",
        temps,
        s.plan.slots.len(),
        s.plan.total_bytes(),
        s.plan.unplanned_bytes
    );
    out.push_str("}\n");
    out
}
