//! Throughput of the data pipeline (a benchmark, ignored by default): CSV parsing and
//! validation on the digits CSV repeated to 5 MB, exact and MinHash dedup on the six Austen
//! novels. Run with
//! `cargo test --release --test data_bench -- --ignored --nocapture`
//! and copy the figures into BENCHMARKS.md (`## Data pipelines`).

#[path = "fixtures/data/support.rs"]
mod support;

use modelc::data::run::run;
use modelc::data::{PreparedData, RunOptions, lower_data_block};
use std::path::Path;

fn run_text(text: &str, base: &Path) -> PreparedData {
    let plan = lower_data_block(&support::data_block(text), base).expect("the block lowers");
    run(&plan, &RunOptions::default()).expect("the run succeeds")
}

fn print_step(data: &PreparedData, step: &str, bytes: u64) {
    let s = data.report().steps.iter().find(|s| s.step == step).expect("step ran");
    let secs = s.seconds.max(1e-9);
    println!(
        "{:<28} {:>9} records {:>8.3} s {:>12.0} records/s {:>8.1} MB/s",
        format!("{} ({step})", data.report().name),
        s.records_in,
        secs,
        s.records_in as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn data_pipeline_throughput() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // CSV: the digits file repeated until it is about 5 MB (1797 rows × 20).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench");
    std::fs::create_dir_all(&dir).expect("bench folder");
    let digits = std::fs::read_to_string(root.join("data/digits.csv")).expect("digits");
    let (header, rows) = digits.split_once('\n').expect("a header");
    let mut big = format!("{header}\n");
    for _ in 0..20 {
        big.push_str(rows);
    }
    std::fs::write(dir.join("digits20.csv"), &big).expect("write");
    let csv = run_text(
        r#"data csv { source d: csv("digits20.csv", label: "label") validate: [range("px*", min: 0, max: 16)] }"#,
        &dir,
    );
    let csv_bytes = csv.report().sources[0].bytes;
    let read = &csv.report().steps[0];
    let validate = &csv.report().steps[1];
    let secs = read.seconds + validate.seconds;
    println!(
        "{:<28} {:>9} records {:>8.3} s {:>12.0} records/s {:>8.1} MB/s",
        "csv (read + validate)",
        validate.records_in,
        secs,
        validate.records_in as f64 / secs,
        csv_bytes as f64 / 1e6 / secs
    );

    let austen = run_text(
        r#"data austen {
            source books: text("data/austen/*.txt", unit: "paragraphs")
            dedup: [exact(), near(threshold: 0.8, shingle: 5, bands: 16, rows: 8)]
            windows: 65
        }"#,
        root,
    );
    let bytes = austen.report().sources[0].bytes;
    print_step(&austen, "dedup.exact", bytes);
    print_step(&austen, "dedup.near", bytes);
}
