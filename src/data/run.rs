//! Executes a [`DataPlan`]: read, validate, clean, dedup and split once ([`run`]), then hand out
//! batches per split and epoch ([`PreparedData::batches`]) with mixing, augmentation and
//! shuffling redone each epoch from `(seed, stage, epoch)`.

use super::augment::{augment_record, is_tensor_level, mixup_batch, noise_batch};
use super::clean::{Invalid, Validator, clean_text};
use super::dedup::{Clusters, MinHasher, similar_pairs};
use super::plan::{
    Augment, DataPlan, DedupSpec, DimSig, OnInvalid, RecordKind, ShapeSpec, SourceFormat, TextUnit,
};
use super::record::{Body, Record};
use super::report::{DataReport, SourceReport, SourceShare, SplitReport, StepReport};
use super::shape::{FeatureMap, Vocab, raw_features, windows};
use super::source::{FileTable, read_source};
use super::split::assign_splits;
use super::{DataError, glob};
use crate::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

/// The random stream of one stage in one epoch: every random choice of a run comes from here.
pub fn stage_rng(seed: u64, stage: &str, epoch: u64) -> ChaCha8Rng {
    let mut key = Vec::with_capacity(stage.len() + 16);
    key.extend_from_slice(&seed.to_le_bytes());
    key.extend_from_slice(stage.as_bytes());
    key.extend_from_slice(&epoch.to_le_bytes());
    ChaCha8Rng::seed_from_u64(xxh3_64(&key))
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Write every dropped record to `DIR/<step>.jsonl` with its reason and origin.
    pub write_removed: Option<PathBuf>,
    /// Print one line per finished step to stderr.
    pub progress: bool,
}

/// A batch: tensors by field name, in [`DataPlan::batch_signature`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub fields: Vec<(String, Tensor)>,
}

impl Batch {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Number of rows (the batch dimension).
    pub fn len(&self) -> usize {
        self.fields.first().map_or(0, |(_, t)| t.shape().first().copied().unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state after the one-off steps: surviving records with their split, the vocabulary or
/// feature statistics fitted on `train`, and the report.
#[derive(Debug)]
pub struct PreparedData {
    plan: DataPlan,
    files: FileTable,
    records: Vec<Record>,
    split_of: Vec<usize>,
    split_names: Vec<String>,
    train: usize,
    vocab: Option<Vocab>,
    feature_map: Option<FeatureMap>,
    /// Shape of one row of `x`: `[W]`, `[F]` or `[C, H, W]`.
    row_shape: Vec<usize>,
    report: DataReport,
}

/// A dropped record kept for `--write-removed`.
struct Removed {
    reason: &'static str,
    detail: String,
    origin: String,
    record: String,
}

struct Runner<'a> {
    plan: &'a DataPlan,
    opts: &'a RunOptions,
    files: FileTable,
    report: DataReport,
}

impl Runner<'_> {
    fn finish_step(
        &mut self,
        step: &str,
        records_in: usize,
        records_out: usize,
        dropped: Vec<Removed>,
        started: Instant,
    ) -> Result<(), DataError> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &dropped {
            *counts.entry(r.reason.to_string()).or_default() += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        if self.opts.progress {
            // One line redrawn per step: a bar over the pipeline's steps (read, validate,
            // clean, each dedup, split, shape), ended with a newline after the last one.
            let plan = self.plan;
            let total = 4 + usize::from(!plan.clean.is_empty()) + plan.dedup.len();
            let done = (self.report.steps.len() + 1).min(total);
            let width = 20;
            let filled = done * width / total;
            eprint!(
                "\r\x1b[2Kdata {} [{}{}] {done}/{total} {step}: {records_in} -> {records_out} records ({seconds:.2}s)",
                plan.name,
                "#".repeat(filled),
                ".".repeat(width - filled),
            );
            if done == total {
                eprintln!();
            }
        }
        self.report.steps.push(StepReport {
            step: step.into(),
            records_in,
            records_out,
            dropped: counts,
            seconds,
        });
        if let Some(dir) = &self.opts.write_removed
            && !dropped.is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, &e))?;
            let path = dir.join(format!("{step}.jsonl"));
            let mut text = String::new();
            for r in &dropped {
                let line = serde_json::json!({
                    "reason": r.reason, "detail": r.detail, "origin": r.origin, "record": r.record,
                });
                text.push_str(&line.to_string());
                text.push('\n');
            }
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| DataError::io(&path, &e))?;
        }
        Ok(())
    }

    fn removed(&self, r: &Record, why: Invalid) -> Removed {
        let keep_text = self.opts.write_removed.is_some();
        Removed {
            reason: why.reason,
            detail: if keep_text { why.detail } else { String::new() },
            origin: if keep_text { self.files.locate(r.origin) } else { String::new() },
            record: if keep_text { r.body.to_string() } else { String::new() },
        }
    }
}

/// Runs the one-off steps of a plan (read → validate → clean → dedup → split) and fits the
/// shaping statistics on the training split.
pub fn run(plan: &DataPlan, opts: &RunOptions) -> Result<PreparedData, DataError> {
    let mut rn = Runner { plan, opts, files: FileTable::default(), report: DataReport::default() };
    rn.report.name = plan.name.clone();
    rn.report.kind = plan.kind.to_string();

    // read
    let started = Instant::now();
    let mut raws = Vec::new();
    for (i, s) in plan.sources.iter().enumerate() {
        let before = raws.len();
        let first_file = rn.files.paths.len();
        let bytes = read_source(s, i, &mut rn.files, &mut raws)?;
        let mut files: Vec<String> =
            rn.files.paths[first_file..].iter().map(|p| p.display().to_string()).collect();
        if let SourceFormat::Idx { labels: Some(l), .. } = &s.format {
            files.extend(glob::expand(l)?.iter().map(|p| p.display().to_string()));
        }
        rn.report.sources.push(SourceReport {
            name: s.name.clone(),
            files,
            records: raws.len() - before,
            bytes,
        });
    }
    let n_raw = raws.len();
    rn.finish_step("read", 0, n_raw, Vec::new(), started)?;

    // validate
    let started = Instant::now();
    let mut validator = Validator::new(plan);
    let mut records = Vec::with_capacity(n_raw);
    let mut dropped = Vec::new();
    for raw in raws {
        let origin = raw.origin;
        let (source, text) = (raw.source, opts.write_removed.as_ref().map(|_| raw.fields.describe()));
        match validator.validate(raw, &rn.files)? {
            Ok(r) => records.push(r),
            Err(why) => {
                if plan.on_invalid == OnInvalid::Fail {
                    return Err(DataError::new(
                        "E0622",
                        format!(
                            "{}: invalid record in source `{}` ({}: {}); `on_invalid: fail` stops the run, \
                             `on_invalid: drop` drops and counts such records",
                            rn.files.locate(origin),
                            plan.sources[source].name,
                            why.reason,
                            why.detail
                        ),
                    ));
                }
                dropped.push(Removed {
                    reason: why.reason,
                    detail: why.detail,
                    origin: rn.files.locate(origin),
                    record: text.unwrap_or_default(),
                });
            }
        }
    }
    rn.finish_step("validate", n_raw, records.len(), dropped, started)?;

    // clean
    if !plan.clean.is_empty() {
        let started = Instant::now();
        let n_in = records.len();
        let mut kept = Vec::with_capacity(n_in);
        let mut dropped = Vec::new();
        'records: for mut r in records {
            if let Body::Text(text) = &mut r.body {
                for step in &plan.clean {
                    match clean_text(step, text) {
                        Ok(Some(new)) => *text = new,
                        Ok(None) => {}
                        Err(why) => {
                            dropped.push(rn.removed(&r, why));
                            continue 'records;
                        }
                    }
                }
            }
            kept.push(r);
        }
        records = kept;
        rn.finish_step("clean", n_in, records.len(), dropped, started)?;
    }

    // dedup
    for spec in &plan.dedup {
        let started = Instant::now();
        let n_in = records.len();
        let (step, drop) = match spec {
            DedupSpec::Exact { against } => {
                ("dedup.exact", exact_duplicates(&records, against, plan, &rn.files))
            }
            DedupSpec::Near(n) => {
                let hasher = MinHasher::new(n.bands, n.rows, n.shingle, n.unit);
                let sigs: Vec<Vec<u64>> = records
                    .iter()
                    .map(|r| match &r.body {
                        Body::Text(t) => hasher.signature(t),
                        other => hasher.signature(&other.to_string()),
                    })
                    .collect();
                let pairs = similar_pairs(&sigs, n.bands, n.rows, n.threshold);
                ("dedup.near", near_duplicates(&records, &pairs, &n.against, plan, &rn.files))
            }
        };
        let mut kept = Vec::with_capacity(n_in);
        let mut dropped = Vec::new();
        for (r, d) in records.into_iter().zip(drop) {
            match d {
                Some(why) => dropped.push(rn.removed(&r, why)),
                None => kept.push(r),
            }
        }
        records = kept;
        rn.finish_step(step, n_in, records.len(), dropped, started)?;
    }

    // split
    let started = Instant::now();
    let split_of = assign_splits(&plan.split, &records, plan.seed);
    let split_names = plan.split.names();
    // Invariant: every split kind has a `train` split (the plan rejects fractions without one).
    let train = split_names.iter().position(|n| n == "train").expect("plan has a train split");
    rn.finish_step("split", records.len(), records.len(), Vec::new(), started)?;
    if !split_of.contains(&train) {
        return Err(DataError::new(
            "E0623",
            format!(
                "data `{}`: no record is left in the `train` split; see the report of the steps above",
                plan.name
            ),
        ));
    }

    // shape: fit on the training split only
    let started = Instant::now();
    let train_records = || records.iter().zip(&split_of).filter(|(_, s)| **s == train).map(|(r, _)| r);
    let (vocab, feature_map, row_shape) = match &plan.shape {
        ShapeSpec::Windows { tokens, length, .. } => {
            let texts = train_records().filter_map(|r| match &r.body {
                Body::Text(t) => Some(t.as_str()),
                _ => None,
            });
            (Some(Vocab::build(*tokens, texts)), None, vec![*length])
        }
        ShapeSpec::Features { scaling } => {
            let first = train_records().next().map(|r| &r.body);
            let (row_shape, group_len) = match first {
                Some(Body::Image { shape, .. }) => (shape.to_vec(), shape[1] * shape[2]),
                Some(Body::Features(f)) => (vec![f.len()], 1),
                _ => (vec![0], 1),
            };
            let row_len: usize = row_shape.iter().product();
            // Every record of every split must fit one row shape: batches are dense tensors.
            for r in &records {
                let fits = match &r.body {
                    Body::Image { shape, .. } => shape[..] == row_shape[..],
                    Body::Features(f) => row_shape == [f.len()],
                    Body::Text(_) => false,
                };
                if !fits {
                    return Err(DataError::new(
                        "E0623",
                        format!(
                            "{}: this record's features do not have the shape {row_shape:?} of the first \
                             training record; give every source the same columns or image size",
                            rn.files.locate(r.origin)
                        ),
                    ));
                }
            }
            let mut rows = Vec::new();
            for r in train_records() {
                raw_features(&r.body, &mut rows);
            }
            (None, Some(FeatureMap::fit(*scaling, &rows, row_len, group_len)), row_shape)
        }
    };
    let n = records.len();
    rn.finish_step("shape", n, n, Vec::new(), started)?;

    let mut prepared = PreparedData {
        plan: plan.clone(),
        files: rn.files,
        records,
        split_of,
        split_names,
        train,
        vocab,
        feature_map,
        row_shape,
        report: rn.report,
    };
    prepared.finish_report()?;
    Ok(prepared)
}

/// For each record, `Some(reason)` when exact dedup drops it.
fn exact_duplicates(
    records: &[Record],
    against: &Option<String>,
    plan: &DataPlan,
    files: &FileTable,
) -> Vec<Option<Invalid>> {
    let hashes: Vec<u64> = records.iter().map(|r| xxh3_64(&r.body.hash_bytes())).collect();
    match against.as_deref().and_then(|a| plan.source_index(a)) {
        Some(reference) => {
            let mut seen: HashMap<u64, usize> = HashMap::new();
            for (i, r) in records.iter().enumerate() {
                if r.source == reference {
                    seen.entry(hashes[i]).or_insert(i);
                }
            }
            records
                .iter()
                .zip(&hashes)
                .map(|(r, h)| match seen.get(h) {
                    Some(&j) if r.source != reference => Some(Invalid {
                        reason: "contaminated",
                        detail: format!("same as {}", files.locate(records[j].origin)),
                    }),
                    _ => None,
                })
                .collect()
        }
        None => {
            let mut first: HashMap<u64, usize> = HashMap::new();
            hashes
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let j = *first.entry(*h).or_insert(i);
                    (j != i).then(|| Invalid {
                        reason: "exact_duplicate",
                        detail: format!("same as {}", files.locate(records[j].origin)),
                    })
                })
                .collect()
        }
    }
}

/// For each record, `Some(reason)` when near dedup drops it: all but the first of each cluster,
/// or, with `against`, every record of another source similar to one of the reference source.
fn near_duplicates(
    records: &[Record],
    pairs: &[(usize, usize)],
    against: &Option<String>,
    plan: &DataPlan,
    files: &FileTable,
) -> Vec<Option<Invalid>> {
    let mut out: Vec<Option<Invalid>> = vec![None; records.len()];
    match against.as_deref().and_then(|a| plan.source_index(a)) {
        Some(reference) => {
            for &(a, b) in pairs {
                let (ra, rb) = (records[a].source == reference, records[b].source == reference);
                let (kept, gone) = match (ra, rb) {
                    (true, false) => (a, b),
                    (false, true) => (b, a),
                    _ => continue,
                };
                out[gone].get_or_insert_with(|| Invalid {
                    reason: "contaminated",
                    detail: format!("near duplicate of {}", files.locate(records[kept].origin)),
                });
            }
        }
        None => {
            let mut clusters = Clusters::new(records.len());
            for &(a, b) in pairs {
                clusters.union(a, b);
            }
            for (i, slot) in out.iter_mut().enumerate() {
                let root = clusters.find(i);
                if root != i {
                    *slot = Some(Invalid {
                        reason: "near_duplicate",
                        detail: format!("near duplicate of {}", files.locate(records[root].origin)),
                    });
                }
            }
        }
    }
    out
}

/// The rows of one pass over a split, before batching.
struct Rows {
    x: RowData,
    y: Option<Vec<i32>>,
    n: usize,
}

enum RowData {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

impl PreparedData {
    pub fn plan(&self) -> &DataPlan {
        &self.plan
    }

    pub fn report(&self) -> &DataReport {
        &self.report
    }

    /// The character or byte vocabulary (text only).
    pub fn vocab(&self) -> Option<&Vocab> {
        self.vocab.as_ref()
    }

    /// The feature scaling fitted on the training split (tabular and images only).
    pub fn feature_map(&self) -> Option<&FeatureMap> {
        self.feature_map.as_ref()
    }

    pub fn split_names(&self) -> &[String] {
        &self.split_names
    }

    /// The records of a split, in read order (after cleaning and dedup).
    pub fn split_records(&self, split: &str) -> Result<Vec<&Record>, DataError> {
        let s = self.split_index(split)?;
        Ok(self.records.iter().zip(&self.split_of).filter(|(_, k)| **k == s).map(|(r, _)| r).collect())
    }

    /// `file:line` of a record.
    pub fn locate(&self, r: &Record) -> String {
        self.files.locate(r.origin)
    }

    fn split_index(&self, split: &str) -> Result<usize, DataError> {
        self.split_names.iter().position(|n| n == split).ok_or_else(|| {
            DataError::new(
                "E0624",
                format!(
                    "data `{}` has no split `{split}`; its splits are {}",
                    self.plan.name,
                    self.split_names.join(", ")
                ),
            )
        })
    }

    /// The training records of one epoch after mixing: indices into `records`, with repeats.
    fn mixed_train(&self, epoch: u64) -> Vec<usize> {
        let train: Vec<usize> = (0..self.records.len()).filter(|&i| self.split_of[i] == self.train).collect();
        let Some(mix) = &self.plan.mix else { return train };
        let mut by_source: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &i in &train {
            by_source.entry(self.records[i].source).or_default().push(i);
        }
        let weighted: Vec<(usize, f64, usize)> = mix
            .weights
            .iter()
            .filter_map(|(name, w)| {
                let s = self.plan.source_index(name)?;
                let n = by_source.get(&s).map_or(0, Vec::len);
                (*w > 0.0 && n > 0).then_some((s, *w, n))
            })
            .collect();
        // Epoch size: all weighted records once, shrunk so no source repeats more than allowed.
        let mut total: f64 = weighted.iter().map(|(_, _, n)| *n as f64).sum();
        let weight_sum: f64 = weighted.iter().map(|(_, w, _)| w).sum();
        for (_, w, n) in &weighted {
            total = total.min(mix.max_repeat * *n as f64 * weight_sum / w);
        }
        let mut rng = stage_rng(self.plan.seed, "mix", epoch);
        let mut out = Vec::new();
        for (s, w, _) in &weighted {
            let want = (w / weight_sum * total).round() as usize;
            let pool = &by_source[s];
            let mut taken = 0;
            while taken < want {
                let mut cycle = pool.clone();
                cycle.shuffle(&mut rng);
                let k = (want - taken).min(cycle.len());
                out.extend_from_slice(&cycle[..k]);
                taken += k;
            }
        }
        out.shuffle(&mut rng);
        out
    }

    /// Builds the rows of a split; `training` applies mixing and record-level augmentation.
    fn rows(&self, split: usize, epoch: u64, training: bool) -> Rows {
        let list: Vec<usize> = if training {
            self.mixed_train(epoch)
        } else {
            (0..self.records.len()).filter(|&i| self.split_of[i] == split).collect()
        };
        let record_augments: Vec<&Augment> = if training {
            self.plan.augment.iter().filter(|a| !is_tensor_level(a)).collect()
        } else {
            Vec::new()
        };
        let alphabet: Vec<char> = self.vocab.as_ref().map(|v| v.chars.clone()).unwrap_or_default();
        let mut rngs: Vec<ChaCha8Rng> = record_augments
            .iter()
            .map(|a| stage_rng(self.plan.seed, &format!("augment.{}", a.stage_name()), epoch))
            .collect();
        let body = |i: usize, rngs: &mut Vec<ChaCha8Rng>| -> std::borrow::Cow<'_, Body> {
            if record_augments.is_empty() {
                return std::borrow::Cow::Borrowed(&self.records[i].body);
            }
            let mut b = self.records[i].body.clone();
            for (a, rng) in record_augments.iter().zip(rngs.iter_mut()) {
                augment_record(a, &mut b, &alphabet, rng);
            }
            std::borrow::Cow::Owned(b)
        };
        match &self.plan.shape {
            ShapeSpec::Windows { length, stride, .. } => {
                let sep = match self.plan.sources.first().map(|s| &s.format) {
                    Some(SourceFormat::Text { unit: TextUnit::Lines, .. }) => "\n",
                    _ => "\n\n",
                };
                // Invariant: `run` builds a vocabulary for every window-shaped plan.
                let vocab = self.vocab.as_ref().expect("text plans have a vocabulary");
                let mut tokens = Vec::new();
                let mut sep_ids = Vec::new();
                vocab.encode(sep, &mut sep_ids);
                for (k, &i) in list.iter().enumerate() {
                    if k > 0 {
                        tokens.extend_from_slice(&sep_ids);
                    }
                    if let Body::Text(t) = body(i, &mut rngs).as_ref() {
                        vocab.encode(t, &mut tokens);
                    }
                }
                let x = windows(&tokens, *length, *stride);
                let n = x.len() / length;
                Rows { x: RowData::I32(x), y: None, n }
            }
            ShapeSpec::Features { .. } => {
                let row_len: usize = self.row_shape.iter().product();
                let mut x = Vec::with_capacity(list.len() * row_len);
                let mut y = Vec::with_capacity(list.len());
                // Invariant: `run` fits a feature map for every feature-shaped plan.
                let map = self.feature_map.as_ref().expect("feature plans have a feature map");
                for &i in &list {
                    let start = x.len();
                    raw_features(body(i, &mut rngs).as_ref(), &mut x);
                    map.apply(&mut x[start..]);
                    y.push(self.records[i].label.unwrap_or(0));
                }
                let y = self.plan.has_labels().then_some(y);
                Rows { x: RowData::F32(x), y, n: list.len() }
            }
        }
    }

    /// The batches of one pass over `split` in `epoch`. The training split is mixed, augmented
    /// and shuffled per epoch; other splits come in read order, unaugmented, whatever the epoch.
    pub fn batches(&self, split: &str, epoch: u64) -> Result<BatchIter, DataError> {
        let s = self.split_index(split)?;
        let training = s == self.train;
        let rows = self.rows(s, epoch, training);
        let mut order: Vec<usize> = (0..rows.n).collect();
        if training && self.plan.batch.shuffle {
            order.shuffle(&mut stage_rng(self.plan.seed, "shuffle", epoch));
        }
        let tensor_augments: Vec<(Augment, ChaCha8Rng)> = if training {
            self.plan
                .augment
                .iter()
                .filter(|a| is_tensor_level(a))
                .map(|a| {
                    (a.clone(), stage_rng(self.plan.seed, &format!("augment.{}", a.stage_name()), epoch))
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(BatchIter {
            rows,
            order,
            next: 0,
            size: self.plan.batch.size,
            drop_last: self.plan.batch.drop_last,
            row_shape: self.row_shape.clone(),
            with_mix_fields: self.plan.augment.iter().any(|a| matches!(a, Augment::Mixup { .. })),
            tensor_augments,
        })
    }

    /// The rows of another file in the format of the plan's first source (a CSV with the
    /// same columns, a JSONL file, IDX images), validated and shaped exactly as the training
    /// data (the feature scaling fitted on `train`), in file order: `x`, and `y` when every
    /// row has a label. A row that fails validation is an error naming its line.
    pub fn input_rows(&self, path: &std::path::Path) -> Result<Batch, DataError> {
        use super::plan::SourceFormat;
        let mut plan = self.plan.clone();
        let Some(mut spec) = plan.sources.first().cloned() else {
            return Err(DataError::new("E0624", "the data block has no source"));
        };
        match &mut spec.format {
            SourceFormat::Csv { path: p, label, .. } => {
                *p = path.to_path_buf();
                // A file without the label column is predicted without labels.
                let bytes = super::source::read_file(path)?;
                let header =
                    String::from_utf8_lossy(bytes.split(|&b| b == b'\n').next().unwrap_or(&[])).to_string();
                if let Some(l) = label.as_ref()
                    && !header.trim_end().split(',').any(|c| c.trim().trim_matches('"') == l)
                {
                    *label = None;
                }
            }
            SourceFormat::Jsonl { path: p, .. } | SourceFormat::Text { path: p, .. } => {
                *p = path.to_path_buf()
            }
            SourceFormat::Idx { images, labels } => {
                *images = path.to_path_buf();
                *labels = None;
            }
        }
        plan.sources = vec![spec];
        let mut files = FileTable::default();
        let mut raws = Vec::new();
        read_source(&plan.sources[0], 0, &mut files, &mut raws)?;
        if raws.is_empty() {
            return Err(DataError::new("E0625", format!("`{}` has no rows", path.display())));
        }
        let mut validator = Validator::new(&plan);
        let row_len: usize = self.row_shape.iter().product();
        let mut x: Vec<f32> = Vec::new();
        let mut y: Vec<i32> = Vec::new();
        let mut all_labelled = true;
        for raw in raws {
            let origin = raw.origin;
            let r = match validator.validate(raw, &files)? {
                Ok(r) => r,
                Err(why) => {
                    return Err(DataError::new(
                        "E0625",
                        format!("{}: {} ({})", files.locate(origin), why.reason, why.detail),
                    ));
                }
            };
            let start = x.len();
            match &r.body {
                Body::Features(_) | Body::Image { .. } => raw_features(&r.body, &mut x),
                Body::Text(_) => {
                    return Err(DataError::new(
                        "E0625",
                        "prediction from text files is not supported; use `generate`",
                    ));
                }
            }
            if x.len() - start != row_len {
                return Err(DataError::new(
                    "E0625",
                    format!(
                        "{}: {} features, the model was trained on {row_len}",
                        files.locate(r.origin),
                        x.len() - start
                    ),
                ));
            }
            if let Some(map) = &self.feature_map {
                map.apply(&mut x[start..]);
            }
            match r.label {
                Some(l) => y.push(l),
                None => all_labelled = false,
            }
        }
        let n = x.len() / row_len.max(1);
        let mut shape = vec![n];
        shape.extend_from_slice(&self.row_shape);
        let mut fields = vec![("x".to_string(), Tensor::F32(array(shape, x)))];
        if all_labelled && n > 0 {
            fields.push(("y".to_string(), Tensor::I32(array(vec![n], y))));
        }
        Ok(Batch { fields })
    }

    /// A whole split as one batch, in read order without augmentation (for evaluation).
    pub fn split_tensors(&self, split: &str) -> Result<Batch, DataError> {
        let s = self.split_index(split)?;
        let rows = self.rows(s, 0, false);
        let n = rows.n;
        let mut it = BatchIter {
            rows,
            order: (0..n).collect(),
            next: 0,
            size: n.max(1),
            drop_last: false,
            row_shape: self.row_shape.clone(),
            with_mix_fields: self.plan.augment.iter().any(|a| matches!(a, Augment::Mixup { .. })),
            tensor_augments: Vec::new(),
        };
        Ok(match it.next() {
            Some(b) => b,
            None => it.empty_batch(),
        })
    }

    fn finish_report(&mut self) -> Result<(), DataError> {
        // The report shows the shapes found in the data where the plan could not know them.
        let mut signature = self.plan.batch_signature();
        if let Some(x) = signature.iter_mut().find(|f| f.name == "x") {
            x.dims.truncate(1);
            x.dims.extend(self.row_shape.iter().map(|&d| DimSig::Fixed(d)));
        }
        self.report.signature = signature.iter().map(ToString::to_string).collect();
        self.report.vocab_size = self.vocab.as_ref().map(Vocab::size);
        let mut splits = Vec::new();
        for (s, name) in self.split_names.iter().enumerate() {
            let mut class_counts = BTreeMap::new();
            let mut sources = BTreeMap::new();
            let mut records = 0;
            for (r, k) in self.records.iter().zip(&self.split_of) {
                if *k != s {
                    continue;
                }
                records += 1;
                if let Some(l) = r.label {
                    *class_counts.entry(l).or_insert(0) += 1;
                }
                *sources.entry(self.plan.sources[r.source].name.clone()).or_insert(0) += 1;
            }
            let rows = self.rows(s, 0, false).n;
            splits.push(SplitReport { name: name.clone(), records, class_counts, sources, rows });
        }
        self.report.splits = splits;
        if let Some(mix) = &self.plan.mix {
            let drawn = self.mixed_train(0);
            let total = drawn.len().max(1);
            for (name, weight) in &mix.weights {
                let Some(s) = self.plan.source_index(name) else { continue };
                let records = drawn.iter().filter(|&&i| self.records[i].source == s).count();
                self.report.mix.push(SourceShare {
                    source: name.clone(),
                    weight: *weight,
                    records,
                    share: records as f64 / total as f64,
                });
            }
        }
        if self.plan.kind == RecordKind::Text && self.report.splits.iter().all(|s| s.rows == 0) {
            return Err(DataError::new(
                "E0623",
                format!("data `{}`: the text is shorter than one window in every split", self.plan.name),
            ));
        }
        Ok(())
    }
}

/// Batches of one pass over a split; see [`PreparedData::batches`].
pub struct BatchIter {
    rows: Rows,
    order: Vec<usize>,
    next: usize,
    size: usize,
    drop_last: bool,
    row_shape: Vec<usize>,
    with_mix_fields: bool,
    tensor_augments: Vec<(Augment, ChaCha8Rng)>,
}

impl BatchIter {
    fn empty_batch(&mut self) -> Batch {
        self.make(&[])
    }

    fn make(&mut self, idx: &[usize]) -> Batch {
        let b = idx.len();
        let row_len: usize = self.row_shape.iter().product();
        let mut shape = vec![b];
        shape.extend_from_slice(&self.row_shape);
        let mut fields = Vec::new();
        match &self.rows.x {
            RowData::I32(data) => {
                let mut x = Vec::with_capacity(b * row_len);
                for &i in idx {
                    x.extend_from_slice(&data[i * row_len..(i + 1) * row_len]);
                }
                fields.push(("x".to_string(), Tensor::I32(array(shape, x))));
            }
            RowData::F32(data) => {
                let mut x = Vec::with_capacity(b * row_len);
                for &i in idx {
                    x.extend_from_slice(&data[i * row_len..(i + 1) * row_len]);
                }
                let y: Option<Vec<i32>> = self.rows.y.as_ref().map(|y| idx.iter().map(|&i| y[i]).collect());
                let mut mix_fields = None;
                for (a, rng) in &mut self.tensor_augments {
                    match a {
                        Augment::GaussianNoise { std } => noise_batch(&mut x, *std, rng),
                        Augment::Mixup { alpha } => {
                            if let Some(y) = &y {
                                mix_fields = Some(mixup_batch(&mut x, row_len, y, *alpha, rng));
                            }
                        }
                        _ => {}
                    }
                }
                fields.push(("x".to_string(), Tensor::F32(array(shape, x))));
                if let Some(y) = y {
                    if self.with_mix_fields {
                        let (y_mix, lam) = mix_fields.unwrap_or_else(|| (y.clone(), vec![1.0; b]));
                        fields.push(("y".to_string(), Tensor::I32(array(vec![b], y))));
                        fields.push(("y_mix".to_string(), Tensor::I32(array(vec![b], y_mix))));
                        fields.push(("mix_lam".to_string(), Tensor::F32(array(vec![b], lam))));
                    } else {
                        fields.push(("y".to_string(), Tensor::I32(array(vec![b], y))));
                    }
                }
            }
        }
        Batch { fields }
    }
}

fn array<T>(shape: Vec<usize>, data: Vec<T>) -> ArrayD<T> {
    // Invariant: callers gather exactly `product(shape)` elements.
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("batch data matches its shape")
}

impl Iterator for BatchIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let remaining = self.order.len() - self.next;
        if remaining == 0 || (self.drop_last && remaining < self.size) {
            return None;
        }
        let take = remaining.min(self.size);
        let idx: Vec<usize> = self.order[self.next..self.next + take].to_vec();
        self.next += take;
        Some(self.make(&idx))
    }
}
