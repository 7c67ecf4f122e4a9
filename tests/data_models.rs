//! The example data blocks in `models/` run through `run_data_command` (what `modelc data`
//! calls) and report what they did; bad command input is a clear error.

use modelc::data::{DataCommandError, run_data_command};
use std::path::{Path, PathBuf};

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name)
}

#[test]
fn digits_example_runs_and_writes_its_report() {
    let report_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("digits_report.json");
    let out = run_data_command(&model("digits_data.model"), None, Some(&report_path), None).expect("runs");
    assert!(out.table.contains("dedup.exact"), "{}", out.table);
    assert!(out.table.contains("batch: x: f32[B, 64], y: i32[B]"), "{}", out.table);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report written")).expect("json");
    let splits = json["splits"].as_array().expect("splits");
    let total: u64 = splits.iter().map(|s| s["records"].as_u64().unwrap_or(0)).sum();
    let dedup =
        json["steps"].as_array().expect("steps").iter().find(|s| s["step"] == "dedup.exact").expect("dedup");
    assert_eq!(Some(total), dedup["records_out"].as_u64());
    assert_eq!(splits[0]["class_counts"].as_object().map(|m| m.len()), Some(10));
}

#[test]
fn fashion_example_runs() {
    let out = run_data_command(&model("fashion_data.model"), Some("fashion"), None, None).expect("runs");
    let r = &out.report;
    let kept: usize = r.splits.iter().map(|s| s.records).sum();
    let dropped: usize = r.steps.iter().map(|s| s.dropped.values().sum::<usize>()).sum();
    assert_eq!(kept + dropped, 10_000, "every image is kept or counted");
    let valid = r.splits.iter().find(|s| s.name == "valid").expect("valid fold").records;
    assert!(valid.abs_diff(kept / 5) <= 1, "fold 0 holds a fifth: {valid} of {kept}");
}

#[test]
fn austen_example_lowers_and_runs() {
    let prog = modelc::elab::Program::load(&model("austen_data.model"));
    assert!(prog.diagnostics.is_empty(), "{:?}", prog.diagnostics);
    let (_, item) = prog.find_root_item("austen").expect("the block");
    let modelc::syntax::ast::Item::Data(block) = item else { panic!("`austen` is a data block") };
    let plan = modelc::data::lower_data_block(block, Path::new("models")).expect("lowers");
    assert_eq!(plan.sources.len(), 6);
    let sig: Vec<String> = plan.batch_signature().iter().map(ToString::to_string).collect();
    assert_eq!(sig, ["x: i32[B, 65]"]);
    let out = run_data_command(&model("austen_data.model"), None, None, None).expect("runs");
    let r = &out.report;
    assert_eq!(r.sources.len(), 6);
    assert!(r.vocab_size.is_some_and(|v| v > 26 && v < 120), "{:?}", r.vocab_size);
    for (m, (_, w)) in r.mix.iter().zip(&plan.mix.as_ref().expect("a mix").weights) {
        assert!((m.share - w).abs() < 0.02, "{} gets {} for weight {w}", m.source, m.share);
    }
    println!("{}", out.table);
    assert!(out.table.contains("dedup.near") && out.table.contains("too_short"), "{}", out.table);
}

#[test]
fn command_errors_are_clear() {
    let err =
        run_data_command(&model("digits_data.model"), Some("nope"), None, None).expect_err("no such block");
    assert!(matches!(err, DataCommandError::Usage(ref m) if m.contains("`digits`")), "{err}");
    let err = run_data_command(&model("digits_mlp.model"), None, None, None).expect_err("no data block");
    assert!(err.to_string().contains("no data block"), "{err}");
}
