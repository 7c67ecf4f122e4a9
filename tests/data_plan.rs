//! Lowering of `data` blocks: the diagnostics a user sees for unknown keys, stages and
//! arguments, wrong value types and pipeline-order violations, and the static batch signature.

#[path = "fixtures/data/support.rs"]
mod support;

use modelc::data::{check_data_block, lower_data_block};
use std::path::Path;

/// The codes of the diagnostics of a block, in order.
fn codes(text: &str) -> Vec<&'static str> {
    check_data_block(&support::data_block(text)).iter().map(|d| d.code).collect()
}

fn first_diagnostic(text: &str) -> modelc::diag::Diagnostic {
    check_data_block(&support::data_block(text)).into_iter().next().expect("a diagnostic")
}

#[test]
fn a_full_block_lowers_without_touching_files() {
    let block = support::data_block(
        r#"data austen {
            source pp: text("does/not/exist.txt", unit: "paragraphs")
            source emma: text("nor/this/*.txt", unit: "paragraphs")
            clean: [normalize("nfc"), strip_control(), collapse_whitespace(), min_chars(20), max_dup_line_frac(0.3)]
            dedup: near(threshold: 0.8, shingle: 5, bands: 16, rows: 8)
            split: holdout(train: 0.9, valid: 0.1, seed: 0)
            mix: weights(pp: 0.7, emma: 0.3, max_repeat: 3)
            augment: char_noise(p: 0.02)
            tokens: chars()
            windows: 65
            batch: 32, shuffle: true, seed: 0
        }"#,
    );
    let plan = lower_data_block(&block, Path::new("/models")).expect("the block lowers");
    assert_eq!(plan.sources.len(), 2);
    assert_eq!(plan.sources[0].format.paths()[0], Path::new("/models/does/not/exist.txt"));
    let mix = plan.mix.as_ref().expect("a mix");
    assert!((mix.weights[0].1 - 0.7).abs() < 1e-12 && mix.max_repeat == 3.0);
    let sig: Vec<String> = plan.batch_signature().iter().map(ToString::to_string).collect();
    assert_eq!(sig, ["x: i32[B, 65]"]);
}

#[test]
fn dedup_after_split_is_rejected_with_help() {
    let d = first_diagnostic(
        r#"data t {
            source a: csv("a.csv", label: "y")
            split: holdout(train: 0.8, test: 0.2)
            dedup: exact()
        }"#,
    );
    assert_eq!(d.code, "E0607");
    assert!(d.help.as_deref().is_some_and(|h| h.contains("move `dedup` above `split`")), "{d:?}");
    assert_eq!(d.labels.len(), 2, "points at the dedup and at the split");
}

#[test]
fn augmentation_outside_the_training_split_is_rejected() {
    let before_split = first_diagnostic(
        r#"data t {
            source a: idx(images: "i.gz", labels: "l.gz")
            augment: flip()
            split: holdout(train: 0.8, test: 0.2)
        }"#,
    );
    assert_eq!(before_split.code, "E0608");
    assert!(before_split.help.is_some());
    let on_test = first_diagnostic(
        r#"data t {
            source a: idx(images: "i.gz", labels: "l.gz")
            split: holdout(train: 0.8, test: 0.2)
            augment: crop(pad: 2, split: "test")
        }"#,
    );
    assert_eq!(on_test.code, "E0608");
    assert!(on_test.help.as_deref().is_some_and(|h| h.contains("train")));
}

#[test]
fn unknown_names_and_wrong_values_are_reported_with_their_codes() {
    assert_eq!(codes("data t { source a: csv(\"a.csv\") bacth: 3 }"), ["E0600"]);
    let d = first_diagnostic("data t { source a: csv(\"a.csv\") bacth: 3 }");
    assert!(d.help.as_deref().is_some_and(|h| h.contains("`batch`")), "suggests the near key: {d:?}");
    assert_eq!(codes("data t { source a: csvv(\"a.csv\") }"), ["E0601", "E0610"]);
    assert_eq!(codes("data t { source a: text(\"a.txt\") dedup: exact(treshold: 1) windows: 8 }"), ["E0602"]);
    assert_eq!(codes("data t { source a: csv(\"a.csv\") batch: \"32\" }"), ["E0604"]);
    assert_eq!(codes("data t { source a: csv(\"a.csv\") split: holdout(train: 0.5, test: 0.2) }"), ["E0605"]);
    assert_eq!(codes("data t { source a: csv(\"a.csv\") split: holdout(valid: 1.0) }"), ["E0603"]);
    assert_eq!(codes("data t { source a: csv(\"a.csv\") source a: csv(\"b.csv\") }"), ["E0606"]);
    assert_eq!(codes("data t { batch: 3 }"), ["E0610"]);
    assert_eq!(codes("data t { source a: csv(\"a.csv\") source b: text(\"b.txt\") }"), ["E0611"]);
    assert_eq!(codes("data t { source a: csv(\"a.csv\") augment: char_noise(p: 0.1) }"), ["E0612"]);
    assert_eq!(codes("data t { source a: text(\"a.txt\") }"), ["E0611"], "text needs windows");
    assert_eq!(
        codes("data t { source a: csv(\"a.csv\") features: raw() validate: [classes(3)] }"),
        ["E0609"],
        "validate after shaping is out of order"
    );
}

#[test]
fn mix_names_must_match_sources() {
    let codes = codes(
        r#"data t {
            source a: text("a.txt") source b: text("b.txt")
            mix: weights(a: 1, c: 2)
            windows: 8
        }"#,
    );
    assert_eq!(codes, ["E0611", "E0611"], "`c` is unknown and `b` has no weight");
}

#[test]
fn tabular_and_image_signatures() {
    let tab = lower_data_block(
        &support::data_block(
            r#"data t { source a: csv("a.csv", label: "y", features: ["u", "v", "w"]) batch: 8 }"#,
        ),
        Path::new("."),
    )
    .expect("lowers");
    let sig: Vec<String> = tab.batch_signature().iter().map(ToString::to_string).collect();
    assert_eq!(sig, ["x: f32[B, 3]", "y: i32[B]"]);
    let img = lower_data_block(
        &support::data_block(
            r#"data t {
                source a: idx(images: "i.gz", labels: "l.gz")
                validate: [image_shape(1, 28, 28)]
                split: kfold(k: 5, fold: 1)
                augment: [flip(), mixup(alpha: 0.2)]
            }"#,
        ),
        Path::new("."),
    )
    .expect("lowers");
    let sig: Vec<String> = img.batch_signature().iter().map(ToString::to_string).collect();
    assert_eq!(sig, ["x: f32[B, 1, 28, 28]", "y: i32[B]", "y_mix: i32[B]", "mix_lam: f32[B]"]);
}
