//! Elaboration of the example models: they check cleanly, their graphs verify, their IR is
//! snapshotted, and the parameter count of the transformer LM matches a hand count.

use modelc::diag::{RenderOptions, render_all};
use modelc::elab::{ElabOptions, Program, check_program, elaborate_model, summarize};
use modelc::ir::{print_graph, verify};
use std::path::{Path, PathBuf};

fn models() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("models/ exists").map(|e| e.expect("dir entry").path()).collect();
    v.retain(|p| p.extension().is_some_and(|e| e == "model"));
    v.sort();
    v
}

#[test]
fn every_example_model_checks_cleanly() {
    let opts = ElabOptions::default();
    for path in models() {
        let prog = Program::load(&path);
        let diags = check_program(&prog, &opts);
        let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).cloned().collect();
        assert!(
            errors.is_empty(),
            "{} has errors:\n{}",
            path.display(),
            render_all(&prog.sources, &errors, RenderOptions::default())
        );
    }
}

#[test]
fn example_model_graphs_verify_and_match_snapshots() {
    let opts = ElabOptions::default();
    for path in models() {
        let prog = Program::load(&path);
        for (_, m) in prog.models() {
            let e = elaborate_model(&prog, &m.name.name, &[], &opts).unwrap_or_else(|d| {
                panic!("{}: {}", path.display(), render_all(&prog.sources, &d, RenderOptions::default()))
            });
            if let Err(errs) = verify(&e.graph) {
                panic!("{} {}: verifier: {}", path.display(), m.name.name, errs.join("\n"));
            }
            let stem = path.file_stem().expect("file name").to_string_lossy().to_string();
            insta::assert_snapshot!(format!("{stem}.{}", m.name.name), print_graph(&e.graph));
        }
    }
}

/// AustenLM at its defaults (vocab 96, d 128, 2 blocks, 4 heads, ctx 64), counted by hand:
/// the same architecture as the PyTorch reference transformer (429,664 parameters).
#[test]
fn austen_lm_parameter_count_matches_hand_count() {
    let (vocab, d, ctx, hidden, layers) = (96u64, 128u64, 64u64, 512u64, 2u64);
    let linear = |i: u64, o: u64| i * o + o;
    let layer_norm = 2 * d;
    let block =
        layer_norm + linear(d, 3 * d) + linear(d, d) + layer_norm + linear(d, hidden) + linear(hidden, d);
    let hand = vocab * d + ctx * d + layers * block + layer_norm + linear(d, vocab);
    assert_eq!(hand, 429_664);

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/austen_lm.model");
    let prog = Program::load(&path);
    let e = elaborate_model(&prog, "AustenLM", &[], &ElabOptions::default()).expect("AustenLM elaborates");
    let (rows, table) = summarize(&e);
    assert_eq!(rows[0].params, hand, "summary table:\n{table}");
    let from_graph: u64 = e.graph.params.iter().filter(|p| p.trainable).map(|p| p.ty.numel() as u64).sum();
    assert_eq!(from_graph, hand);
    // Each block's share, as the summary reports it.
    let b0 = rows.iter().find(|r| r.path == "blocks.0").expect("blocks.0 row");
    assert_eq!(b0.params, block);
}

/// The MoE variant elaborates, has a routed expert layer per block and exposes the
/// load-balancing loss as the second output.
#[test]
fn austen_lm_moe_variant_elaborates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/austen_lm.model");
    let prog = Program::load(&path);
    let args = vec![("experts".to_string(), modelc::elab::value::Value::Int(4))];
    let e =
        elaborate_model(&prog, "AustenLM", &args, &ElabOptions::default()).expect("MoE variant elaborates");
    assert_eq!(e.graph.outputs.len(), 2);
    assert_eq!(e.graph.ty(e.graph.outputs[1].node).shape, Vec::<usize>::new());
    assert!(e.graph.params.iter().any(|p| p.path == "blocks.1.ffn.w1" && p.ty.shape == vec![4, 128, 512]));
    assert!(e.graph.nodes.iter().any(|n| matches!(n.op, modelc::ir::Op::TopK { k: 2 })));
    verify(&e.graph).expect("graph verifies");
}

/// Symbolic dimensions take `--dim` values over `dim` defaults.
#[test]
fn dims_override_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/austen_lm.model");
    let prog = Program::load(&path);
    let opts = ElabOptions { dims: vec![("B".into(), 3), ("T".into(), 16)], ..ElabOptions::default() };
    let e = elaborate_model(&prog, "AustenLM", &[], &opts).expect("elaborates");
    assert_eq!(e.graph.inputs[0].ty.shape, vec![3, 16]);
    assert_eq!(e.graph.ty(e.graph.outputs[0].node).shape, vec![3, 16, 96]);
}
