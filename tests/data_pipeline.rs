//! Running data pipelines on fixtures with planted defects and on the shipped data: every defect
//! is counted under its reason and no valid record is lost, bad files give errors naming them,
//! the same seed gives the same batches, and no record or near-duplicate straddles two splits.

#[path = "fixtures/data/support.rs"]
mod support;

use modelc::data::run::run;
use modelc::data::{
    Body, DataError, MinHasher, PreparedData, RunOptions, jaccard_estimate, lower_data_block,
};
use modelc::tensor::Tensor;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_block(text: &str, base: &Path, opts: &RunOptions) -> Result<PreparedData, DataError> {
    let plan = lower_data_block(&support::data_block(text), base).expect("the block lowers");
    run(&plan, opts)
}

fn dropped(data: &PreparedData, step: &str) -> BTreeMap<String, usize> {
    data.report().steps.iter().find(|s| s.step == step).map(|s| s.dropped.clone()).unwrap_or_default()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A fresh empty folder under the target directory for files a test writes.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

const DEFECTS: &str = r#"data defects {
    source rows: csv("defects.csv", label: "label", id: "id")
    validate: [range("*", min: 0, max: 100), classes(3)]
    dedup: exact()
    split: holdout(train: 0.75, test: 0.25, stratify: true, seed: 3)
    features: standardize()
    batch: 4
}"#;

#[test]
fn planted_csv_defects_are_counted_and_valid_rows_kept() {
    let out = scratch("removed_csv");
    let opts = RunOptions { write_removed: Some(out.clone()), progress: false };
    let data = run_block(DEFECTS, &fixtures(), &opts).expect("the run succeeds");
    assert_eq!(
        dropped(&data, "validate"),
        counts(&[("malformed_row", 2), ("missing_field", 2), ("wrong_type", 2), ("out_of_range", 1)])
    );
    assert_eq!(dropped(&data, "dedup.exact"), counts(&[("exact_duplicate", 2)]));
    let mut ids = BTreeSet::new();
    for split in data.split_names() {
        for r in data.split_records(split).expect("split exists") {
            ids.insert(r.id.clone().expect("ids are declared"));
        }
    }
    let expected: BTreeSet<String> = (1..=12).map(|i| format!("r{i:02}")).collect();
    assert_eq!(ids, expected, "every valid row survives exactly once");
    let removed = std::fs::read_to_string(out.join("validate.jsonl")).expect("removed records written");
    assert_eq!(removed.lines().count(), 7);
    assert!(removed.contains("defects.csv:8") && removed.contains("malformed_row"));
    let dups = std::fs::read_to_string(out.join("dedup.exact.jsonl")).expect("duplicates written");
    assert_eq!(dups.lines().count(), 2);
    // Standardisation statistics come from the training split only.
    let train = data.split_tensors("train").expect("train tensors");
    let x = train.get("x").and_then(Tensor::as_f32).expect("x is f32");
    let rows = x.shape()[0];
    let mean_a = (0..rows).map(|i| x[[i, 0]]).sum::<f32>() / rows as f32;
    assert!(mean_a.abs() < 1e-5, "train features are centred, mean {mean_a}");
}

#[test]
fn on_invalid_fail_stops_at_the_first_bad_row_with_its_line() {
    let text = DEFECTS.replace("dedup: exact()", "on_invalid: fail\n    dedup: exact()");
    let err = run_block(&text, &fixtures(), &RunOptions::default()).expect_err("fails");
    assert_eq!(err.code, "E0622");
    assert!(err.message.contains("defects.csv:8"), "{err}");
    assert!(err.message.contains("malformed_row"), "{err}");
}

const NEAR: &str = r#"data near {
    source book: text("near_dups.txt", unit: "paragraphs")
    clean: [normalize("nfc"), strip_control(), collapse_whitespace(), min_chars(20), english()]
    dedup: [exact(), near(threshold: 0.7, shingle: 3, bands: 20, rows: 5)]
    split: holdout(train: 0.6, valid: 0.4)
    windows: 32
    batch: 8
}"#;

#[test]
fn planted_near_duplicates_are_removed_and_originals_kept() {
    let data = run_block(NEAR, &fixtures(), &RunOptions::default()).expect("the run succeeds");
    assert_eq!(dropped(&data, "clean"), counts(&[("too_short", 1)]));
    assert_eq!(dropped(&data, "dedup.exact"), counts(&[("exact_duplicate", 1)]));
    assert_eq!(dropped(&data, "dedup.near"), counts(&[("near_duplicate", 3)]));
    let mut kept = Vec::new();
    for split in data.split_names() {
        for r in data.split_records(split).expect("split exists") {
            if let Body::Text(t) = &r.body {
                kept.push(t.clone());
            }
        }
    }
    assert_eq!(kept.len(), 20);
    assert!(kept.iter().all(|t| !t.contains("PLANTED")), "the first of each cluster (the original) is kept");
}

#[test]
fn no_record_or_near_duplicate_cluster_straddles_two_splits() {
    let data = run_block(NEAR, &fixtures(), &RunOptions::default()).expect("the run succeeds");
    let hasher = MinHasher::new(20, 5, 3, modelc::data::plan::ShingleUnit::Words);
    let mut by_split = Vec::new();
    for split in data.split_names() {
        let texts: Vec<String> =
            data.split_records(split).expect("split exists").iter().map(|r| r.body.to_string()).collect();
        by_split.push(texts);
    }
    for (i, a) in by_split.iter().enumerate() {
        for b in &by_split[i + 1..] {
            for ta in a {
                for tb in b {
                    assert_ne!(ta, tb);
                    let sim = jaccard_estimate(&hasher.signature(ta), &hasher.signature(tb));
                    assert!(sim < 0.7, "near duplicates in two splits ({sim})");
                }
            }
        }
    }
    // Digits: exact dedup before a stratified split leaves no feature vector in two splits.
    let digits = run_block(
        r#"data digits {
            source d: csv("data/digits.csv", label: "label")
            dedup: exact()
            split: holdout(train: 0.7, valid: 0.15, test: 0.15, stratify: true)
        }"#,
        &project(),
        &RunOptions::default(),
    )
    .expect("digits run");
    let mut seen = BTreeMap::new();
    for split in digits.split_names() {
        for r in digits.split_records(split).expect("split exists") {
            let prev = seen.insert(r.body.hash_bytes(), split.clone());
            assert!(prev.is_none(), "a record appears twice");
        }
    }
}

/// All batch tensors of one epoch of a split, flattened to bytes.
fn epoch_bytes(data: &PreparedData, split: &str, epoch: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for batch in data.batches(split, epoch).expect("split exists") {
        for (_, t) in &batch.fields {
            match t {
                Tensor::F32(a) => out.extend(a.iter().flat_map(|v| v.to_le_bytes())),
                Tensor::I32(a) => out.extend(a.iter().flat_map(|v| v.to_le_bytes())),
            }
        }
    }
    out
}

const AUSTEN: &str = r#"data austen {
    source pp: text("data/austen/prideprejudice.txt", unit: "paragraphs")
    source persuasion: text("data/austen/persuasion.txt", unit: "paragraphs")
    clean: [normalize("nfc"), strip_control(), collapse_whitespace(), min_chars(20), max_dup_line_frac(0.3)]
    dedup: exact()
    split: contiguous(train: 0.9, valid: 0.1)
    mix: weights(pp: 0.7, persuasion: 0.3, max_repeat: 3)
    augment: [char_noise(p: 0.02), token_swap(p: 0.05)]
    tokens: chars()
    windows: 65
    batch: 32, shuffle: true, seed: SEED
}"#;

#[test]
fn same_seed_same_batches_and_another_seed_other_batches() {
    let austen = |seed: u32| {
        run_block(&AUSTEN.replace("SEED", &seed.to_string()), &project(), &RunOptions::default())
            .expect("austen runs")
    };
    let (a, b, c) = (austen(0), austen(0), austen(1));
    let e0 = epoch_bytes(&a, "train", 0);
    assert!(!e0.is_empty());
    assert_eq!(e0, epoch_bytes(&b, "train", 0), "same seed, same batches");
    assert_ne!(e0, epoch_bytes(&c, "train", 0), "another seed, other batches");
    assert_ne!(e0, epoch_bytes(&a, "train", 1), "each epoch is reshuffled");
    assert_eq!(epoch_bytes(&a, "valid", 0), epoch_bytes(&c, "valid", 3), "evaluation is not augmented");
    let first = a.batches("train", 0).expect("train").next().expect("a batch");
    assert_eq!(first.get("x").map(Tensor::shape), Some(&[32usize, 65][..]));
    // Mixing follows the weights.
    let shares: Vec<f64> = a.report().mix.iter().map(|m| m.share).collect();
    assert!((shares[0] - 0.7).abs() < 0.01 && (shares[1] - 0.3).abs() < 0.01, "{shares:?}");

    let digits = |seed: u32| {
        run_block(
            &format!(
                r#"data digits {{
                    source d: csv("data/digits.csv", label: "label")
                    split: kfold(k: 5, fold: 2, stratify: true)
                    augment: [gaussian_noise(std: 0.1), mixup(alpha: 0.4)]
                    features: standardize()
                    batch: 64, seed: {seed}
                }}"#
            ),
            &project(),
            &RunOptions::default(),
        )
        .expect("digits runs")
    };
    let (d0, d0b, d1) = (digits(0), digits(0), digits(1));
    assert_eq!(epoch_bytes(&d0, "train", 0), epoch_bytes(&d0b, "train", 0));
    assert_ne!(epoch_bytes(&d0, "train", 0), epoch_bytes(&d1, "train", 0));
}

#[test]
fn kfold_folds_partition_the_records_and_keep_class_balance() {
    let mut valid_ids = BTreeSet::new();
    let mut total = 0;
    for fold in 0..4 {
        let data = run_block(
            &format!(
                r#"data d {{ source d: csv("data/digits.csv", label: "label") split: kfold(k: 4, fold: {fold}, stratify: true) }}"#
            ),
            &project(),
            &RunOptions::default(),
        )
        .expect("runs");
        let valid = data.split_records("valid").expect("valid");
        total = valid.len() + data.split_records("train").expect("train").len();
        for r in &valid {
            assert!(valid_ids.insert(r.origin.line), "a record is in two validation folds");
        }
        let classes = &data.report().splits[1].class_counts;
        let (lo, hi) = (classes.values().min().copied(), classes.values().max().copied());
        assert!(hi.unwrap_or(0) - lo.unwrap_or(0) <= 4, "stratified folds: {classes:?}");
    }
    assert_eq!(valid_ids.len(), total, "every record is validated exactly once");
}

#[test]
fn fashion_mnist_images_are_shaped_and_augmented() {
    let data = run_block(
        r#"data fashion {
            source t10k: idx(images: "data/fashion-mnist/t10k-images-idx3-ubyte.gz", labels: "data/fashion-mnist/t10k-labels-idx1-ubyte.gz")
            validate: [image_shape(1, 28, 28), classes(10)]
            split: kfold(k: 5, fold: 0, stratify: true)
            augment: [flip(horizontal: true), crop(pad: 2), mixup(alpha: 0.2)]
            features: scale(0.00392156862745098)
            batch: 128, seed: 7
        }"#,
        &project(),
        &RunOptions::default(),
    )
    .expect("fashion runs");
    assert_eq!(data.report().sources[0].records, 10_000);
    let sig: Vec<String> = data.plan().batch_signature().iter().map(ToString::to_string).collect();
    let batch = data.batches("train", 0).expect("train").next().expect("a batch");
    let shapes: Vec<String> = batch
        .fields
        .iter()
        .map(|(n, t)| {
            format!(
                "{n}: {}[{}]",
                t.dtype(),
                t.shape().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert_eq!(sig, ["x: f32[B, 1, 28, 28]", "y: i32[B]", "y_mix: i32[B]", "mix_lam: f32[B]"]);
    assert_eq!(shapes, ["x: f32[128, 1, 28, 28]", "y: i32[128]", "y_mix: i32[128]", "mix_lam: f32[128]"]);
    let valid = data.split_tensors("valid").expect("valid");
    assert_eq!(valid.get("x").map(Tensor::shape), Some(&[2000usize, 1, 28, 28][..]));
    let lam = valid.get("mix_lam").and_then(Tensor::as_f32).expect("lam");
    assert!(lam.iter().all(|&l| l == 1.0), "evaluation batches are not mixed");
}

#[test]
fn missing_and_truncated_files_are_errors_naming_the_file() {
    let dir = scratch("truncated");
    let missing =
        run_block(r#"data m { source a: csv("nowhere.csv", label: "label") }"#, &dir, &RunOptions::default())
            .expect_err("missing file");
    assert_eq!(missing.code, "E0620");
    assert!(missing.message.contains("nowhere.csv"), "{missing}");

    // A gzip stream cut in half.
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
        let text = std::fs::read(fixtures().join("near_dups.txt")).expect("fixture");
        enc.write_all(&text).expect("compress");
        enc.finish().expect("finish");
    }
    std::fs::write(dir.join("half.txt.gz"), &gz[..gz.len() / 2]).expect("write");
    let err = run_block(
        r#"data g { source a: text("half.txt.gz", unit: "paragraphs") windows: 8 }"#,
        &dir,
        &RunOptions::default(),
    )
    .expect_err("truncated gzip");
    assert_eq!(err.code, "E0621");
    assert!(err.message.contains("half.txt.gz") && err.message.contains("gzip"), "{err}");

    // An IDX file whose header promises 10 images of 4×4 but holds 50 bytes.
    let mut idx = vec![0u8, 0, 8, 3];
    for d in [10u32, 4, 4] {
        idx.extend_from_slice(&d.to_be_bytes());
    }
    idx.extend(std::iter::repeat_n(7u8, 50));
    std::fs::write(dir.join("short-idx3-ubyte"), &idx).expect("write");
    let err =
        run_block(r#"data i { source a: idx(images: "short-idx3-ubyte") }"#, &dir, &RunOptions::default())
            .expect_err("truncated idx");
    assert_eq!(err.code, "E0621");
    assert!(err.message.contains("short-idx3-ubyte") && err.message.contains("truncated"), "{err}");
    // The same, gzipped and cut inside the stream.
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
        enc.write_all(&idx).expect("compress");
        enc.finish().expect("finish");
    }
    std::fs::write(dir.join("short-idx3-ubyte.gz"), &gz[..gz.len() - 10]).expect("write");
    let err =
        run_block(r#"data i { source a: idx(images: "short-idx3-ubyte.gz") }"#, &dir, &RunOptions::default())
            .expect_err("truncated gzipped idx");
    assert!(err.message.contains("short-idx3-ubyte.gz"), "{err}");
}

#[test]
fn globs_jsonl_and_by_id_splits() {
    let dir = scratch("jsonl");
    std::fs::write(
        dir.join("part-1.jsonl"),
        "{\"id\": \"a\", \"u\": 1.0, \"v\": 2, \"y\": 0}\n{\"id\": \"b\", \"u\": 3.0, \"v\": 4, \"y\": 1}\nnot json\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("part-2.jsonl"),
        "{\"id\": \"c\", \"u\": \"5\", \"v\": 6, \"y\": 1}\n{\"id\": \"d\", \"v\": 6, \"y\": 1}\n",
    )
    .expect("write");
    std::fs::write(dir.join("other.txt"), "ignored by the glob").expect("write");
    let text = r#"data j {
        source parts: jsonl("part-?.jsonl", features: ["u", "v"], label: "y", id: "id")
        split: by_id(train: 0.5, test: 0.5)
        batch: 2
    }"#;
    let data = run_block(text, &dir, &RunOptions::default()).expect("runs");
    assert_eq!(data.report().sources[0].files.len(), 2);
    assert_eq!(dropped(&data, "validate"), counts(&[("malformed_row", 1), ("missing_field", 1)]));
    let again = run_block(text, &dir, &RunOptions::default()).expect("runs");
    let ids = |d: &PreparedData| -> Vec<Option<String>> {
        d.split_records("train").expect("train").iter().map(|r| r.id.clone()).collect()
    };
    assert_eq!(ids(&data), ids(&again), "by_id splits are stable");
    assert!(data.report().render_table().contains("malformed_row: 1"));
}

#[test]
fn files_with_different_columns_are_an_error_not_a_panic() {
    let dir = scratch("columns");
    std::fs::write(dir.join("a.csv"), "u,v,y\n1,2,0\n3,4,1\n").expect("write");
    std::fs::write(dir.join("b.csv"), "u,v,w,y\n1,2,3,0\n").expect("write");
    let err = run_block(r#"data c { source all: csv("*.csv", label: "y") }"#, &dir, &RunOptions::default())
        .expect_err("shapes differ");
    assert_eq!(err.code, "E0623");
    assert!(err.message.contains("b.csv:2"), "{err}");
}
