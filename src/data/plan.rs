//! Lowering of a `data` block ([`ConfigBlock`]) to a typed [`DataPlan`]. Every key, stage call
//! and argument is checked here with diagnostics pointing at the entry; the canonical stage order
//! (sources → validate → clean → dedup → split → mix → augment → shape) is enforced, so dedup after
//! the split and augmentation outside the training split are compile errors.
//!
//! *Invariant:* this module reads no files; paths are only resolved against the directory of the
//! `.model` file. The vocabulary is documented in `docs/data.md`.

use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::DType;
use crate::source::Span;
use crate::syntax::ast::{Arg, ConfigBlock, Entry, Expr, ExprKind, UnOp};
use std::fmt;
use std::path::{Path, PathBuf};

/// A lowered `data` block: what to read and every step applied to it, in pipeline order.
#[derive(Clone, Debug, PartialEq)]
pub struct DataPlan {
    pub name: String,
    pub sources: Vec<SourceSpec>,
    /// What every record becomes (all sources of a block agree).
    pub kind: RecordKind,
    pub checks: Vec<Check>,
    pub on_invalid: OnInvalid,
    pub clean: Vec<CleanStep>,
    pub dedup: Vec<DedupSpec>,
    pub split: SplitSpec,
    pub mix: Option<MixSpec>,
    pub augment: Vec<Augment>,
    pub shape: ShapeSpec,
    pub batch: BatchSpec,
    /// Root of every random choice: `(seed, stage, epoch)` seeds a ChaCha stream.
    pub seed: u64,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SourceSpec {
    pub name: String,
    pub format: SourceFormat,
    pub span: Span,
}

/// Paths are resolved against the directory of the `.model` file; the file-name part of a
/// path may hold `*` and `?` wildcards.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceFormat {
    /// `csv(path, label: "y", features: ["px*"], id: "id")`: a header row, then one record per
    /// row; features are float columns (all non-label, non-id columns when not given).
    Csv { path: PathBuf, label: Option<String>, features: Vec<String>, id: Option<String> },
    /// `jsonl(path, text: "body", label: "y", id: "id")` or with `features: [...]`: one JSON
    /// object per line.
    Jsonl {
        path: PathBuf,
        text: Option<String>,
        features: Vec<String>,
        label: Option<String>,
        id: Option<String>,
    },
    /// `text(path, unit: "paragraphs")`: one record per file, line or blank-line separated
    /// paragraph.
    Text { path: PathBuf, unit: TextUnit },
    /// `idx(images: path, labels: path)`: IDX (MNIST) files, gzipped (`.gz`) or not.
    Idx { images: PathBuf, labels: Option<PathBuf> },
}

impl SourceFormat {
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            SourceFormat::Csv { path, .. }
            | SourceFormat::Jsonl { path, .. }
            | SourceFormat::Text { path, .. } => vec![path],
            SourceFormat::Idx { images, labels } => {
                let mut v = vec![images.as_path()];
                if let Some(l) = labels {
                    v.push(l);
                }
                v
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextUnit {
    Whole,
    Lines,
    Paragraphs,
}

/// The body every record of a block has after validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Tabular,
    Text,
    Image,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Tabular => "tabular",
            RecordKind::Text => "text",
            RecordKind::Image => "image",
        })
    }
}

/// `validate: [...]` checks (declared fields are always required and typed).
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// `range("px*", min: 0, max: 16)`: features whose name matches lie in `[min, max]`.
    Range { pattern: String, min: f64, max: f64 },
    /// `classes(10)`: the label lies in `0..n`.
    Classes(i64),
    /// `image_shape(1, 28, 28)`.
    ImageShape([usize; 3]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInvalid {
    Drop,
    Fail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormalForm {
    Nfc,
    Nfkc,
}

/// `clean: [...]` items, applied in order; transforms rewrite the text, filters drop records.
#[derive(Clone, Debug, PartialEq)]
pub enum CleanStep {
    Normalize(NormalForm),
    StripControl,
    CollapseWhitespace,
    Lowercase,
    MinChars(usize),
    MaxChars(usize),
    MinWords(usize),
    /// Drop when more than this fraction of the non-empty lines are repeats of earlier lines.
    MaxDupLineFrac(f64),
    /// Drop when the most frequent word n-gram covers more than `frac` of the characters of all
    /// word n-grams (Gopher's top n-gram filter).
    MaxTopNgramFrac {
        n: usize,
        frac: f64,
    },
    /// Keep English: at least `min_stopword_frac` of the words are common English stop words.
    English {
        min_stopword_frac: f64,
        min_words: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShingleUnit {
    Words,
    Chars,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DedupSpec {
    /// `exact()`: xxh3 of the record body after cleaning.
    Exact { against: Option<String> },
    /// `near(threshold: 0.8, shingle: 5, unit: "words", bands: 16, rows: 8)`.
    Near(NearDedup),
}

#[derive(Clone, Debug, PartialEq)]
pub struct NearDedup {
    pub threshold: f64,
    pub shingle: usize,
    pub unit: ShingleUnit,
    pub bands: usize,
    pub rows: usize,
    /// Decontamination: drop records of other sources that duplicate one of this source.
    pub against: Option<String>,
}

/// Split names are the user's (`train`, `valid`, `test`, ...); `train` always exists.
#[derive(Clone, Debug, PartialEq)]
pub enum SplitSpec {
    /// No `split` entry: every record is in `train`.
    AllTrain,
    /// `holdout(train: 0.8, valid: 0.1, test: 0.1, stratify: true, seed: 1)`.
    Holdout { fractions: Vec<(String, f64)>, stratify: bool, seed: Option<u64> },
    /// `kfold(k: 5, fold: 0, stratify: true)`: fold `fold` is `valid`, the rest `train`.
    KFold { k: usize, fold: usize, stratify: bool, seed: Option<u64> },
    /// `by_id(train: 0.9, test: 0.1)`: by xxh3 of the record id; stable across runs and seeds.
    ById { fractions: Vec<(String, f64)> },
    /// `contiguous(train: 0.9, valid: 0.1)`: the first 90% of each source, then the last 10%.
    Contiguous { fractions: Vec<(String, f64)> },
}

impl SplitSpec {
    /// The split names in declaration order.
    pub fn names(&self) -> Vec<String> {
        match self {
            SplitSpec::AllTrain => vec!["train".into()],
            SplitSpec::KFold { .. } => vec!["train".into(), "valid".into()],
            SplitSpec::Holdout { fractions, .. }
            | SplitSpec::ById { fractions }
            | SplitSpec::Contiguous { fractions } => fractions.iter().map(|(n, _)| n.clone()).collect(),
        }
    }
}

/// `mix: weights(a: 0.7, b: 0.3, max_repeat: 3)` on the training split.
#[derive(Clone, Debug, PartialEq)]
pub struct MixSpec {
    /// Source name and weight, normalised to sum to 1.
    pub weights: Vec<(String, f64)>,
    pub max_repeat: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Augment {
    GaussianNoise { std: f64 },
    Flip { horizontal: bool, vertical: bool, p: f64 },
    Crop { pad: usize },
    Mixup { alpha: f64 },
    CharNoise { p: f64 },
    TokenDelete { p: f64 },
    TokenSwap { p: f64 },
}

impl Augment {
    pub fn stage_name(&self) -> &'static str {
        match self {
            Augment::GaussianNoise { .. } => "gaussian_noise",
            Augment::Flip { .. } => "flip",
            Augment::Crop { .. } => "crop",
            Augment::Mixup { .. } => "mixup",
            Augment::CharNoise { .. } => "char_noise",
            Augment::TokenDelete { .. } => "token_delete",
            Augment::TokenSwap { .. } => "token_swap",
        }
    }

    fn applies_to(&self, kind: RecordKind) -> bool {
        match self {
            Augment::GaussianNoise { .. } | Augment::Mixup { .. } => kind != RecordKind::Text,
            Augment::Flip { .. } | Augment::Crop { .. } => kind == RecordKind::Image,
            Augment::CharNoise { .. } | Augment::TokenDelete { .. } | Augment::TokenSwap { .. } => {
                kind == RecordKind::Text
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Chars,
    Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FeatureScaling {
    Raw,
    /// Zero mean, unit variance per feature (per channel for images), from `train` only.
    Standardize,
    /// Multiply by a constant (images default to `1/255`).
    Scale(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ShapeSpec {
    /// Tabular and images: `x: f32[B, F]` or `f32[B, C, H, W]`, `y: i32[B]`.
    Features { scaling: FeatureScaling },
    /// Text: `x: i32[B, W]` windows over the concatenated split.
    Windows { tokens: TokenKind, length: usize, stride: usize },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchSpec {
    pub size: usize,
    /// Shuffle the training split each epoch (evaluation splits keep their order).
    pub shuffle: bool,
    pub drop_last: bool,
}

/// One dimension of a batch field as known before any file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DimSig {
    /// The batch dimension (the declared batch size; the last batch may be smaller unless
    /// `drop_last: true`).
    Batch(usize),
    Fixed(usize),
    /// Known only after reading (`F` features, image `C`/`H`/`W` without `image_shape`).
    Symbol(&'static str),
}

impl fmt::Display for DimSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DimSig::Batch(_) => f.write_str("B"),
            DimSig::Fixed(n) => write!(f, "{n}"),
            DimSig::Symbol(s) => f.write_str(s),
        }
    }
}

/// A named batch field: `x: f32[B, F]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchField {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<DimSig>,
}

impl fmt::Display for BatchField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(ToString::to_string).collect();
        write!(f, "{}: {}[{}]", self.name, self.dtype, dims.join(", "))
    }
}

impl DataPlan {
    /// The fields of every batch, statically: the same for all splits (with `mixup`, evaluation
    /// splits carry `y_mix = y` and `mix_lam = 1`).
    pub fn batch_signature(&self) -> Vec<BatchField> {
        let b = DimSig::Batch(self.batch.size);
        match &self.shape {
            ShapeSpec::Windows { length, .. } => {
                vec![BatchField {
                    name: "x".into(),
                    dtype: DType::I32,
                    dims: vec![b, DimSig::Fixed(*length)],
                }]
            }
            ShapeSpec::Features { .. } => {
                let x_dims = match self.kind {
                    RecordKind::Image => match self.image_shape() {
                        Some([c, h, w]) => vec![b, DimSig::Fixed(c), DimSig::Fixed(h), DimSig::Fixed(w)],
                        None => vec![b, DimSig::Symbol("C"), DimSig::Symbol("H"), DimSig::Symbol("W")],
                    },
                    _ => vec![b, self.feature_count().map_or(DimSig::Symbol("F"), DimSig::Fixed)],
                };
                let mut fields = vec![BatchField { name: "x".into(), dtype: DType::F32, dims: x_dims }];
                if self.has_labels() {
                    fields.push(BatchField { name: "y".into(), dtype: DType::I32, dims: vec![b] });
                    if self.augment.iter().any(|a| matches!(a, Augment::Mixup { .. })) {
                        fields.push(BatchField { name: "y_mix".into(), dtype: DType::I32, dims: vec![b] });
                        fields.push(BatchField { name: "mix_lam".into(), dtype: DType::F32, dims: vec![b] });
                    }
                }
                fields
            }
        }
    }

    /// The image shape declared by `validate: [image_shape(c, h, w)]`.
    pub fn image_shape(&self) -> Option<[usize; 3]> {
        self.checks.iter().find_map(|c| match c {
            Check::ImageShape(s) => Some(*s),
            _ => None,
        })
    }

    /// The feature count when every source lists its feature columns without wildcards.
    fn feature_count(&self) -> Option<usize> {
        let mut count = None;
        for s in &self.sources {
            let features = match &s.format {
                SourceFormat::Csv { features, .. } | SourceFormat::Jsonl { features, .. } => features,
                _ => return None,
            };
            if features.is_empty() || features.iter().any(|f| f.contains(['*', '?'])) {
                return None;
            }
            match count {
                None => count = Some(features.len()),
                Some(n) if n != features.len() => return None,
                Some(_) => {}
            }
        }
        count
    }

    /// The feature count of CSV sources whose feature columns are patterns (`px*`), found by
    /// reading only the header line of each file; `None` when a file cannot be read (or is
    /// compressed or a glob), or the sources disagree. `check` uses it to type-check train
    /// blocks against the model; lowering itself reads no files.
    pub fn feature_count_from_headers(&self) -> Option<usize> {
        use std::io::BufRead;
        let mut count = None;
        for s in &self.sources {
            let SourceFormat::Csv { path, label, features, id } = &s.format else { return None };
            let name = path.to_string_lossy();
            if features.is_empty() || name.contains(['*', '?']) || name.ends_with(".gz") {
                return None;
            }
            let file = std::fs::File::open(path).ok()?;
            let mut header = String::new();
            std::io::BufReader::new(file).read_line(&mut header).ok()?;
            let n = header
                .trim_end()
                .split(',')
                .map(|c| c.trim().trim_matches('"'))
                .filter(|c| Some(*c) != label.as_deref() && Some(*c) != id.as_deref())
                .filter(|c| features.iter().any(|p| crate::data::glob_match(p, c)))
                .count();
            match count {
                None => count = Some(n),
                Some(m) if m != n => return None,
                Some(_) => {}
            }
        }
        count
    }

    /// Whether records carry a class label (`y` in batches).
    pub fn has_labels(&self) -> bool {
        self.sources.iter().all(|s| match &s.format {
            SourceFormat::Csv { label, .. } | SourceFormat::Jsonl { label, .. } => label.is_some(),
            SourceFormat::Idx { labels, .. } => labels.is_some(),
            SourceFormat::Text { .. } => false,
        })
    }

    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.name == name)
    }
}

/// The name check used by `modelc check`: every diagnostic of lowering, without reading files.
pub fn check_data_block(block: &ConfigBlock) -> Vec<Diagnostic> {
    match lower_data_block(block, Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(d) => d.0,
    }
}

/// Lowers a `data` block; relative paths are joined to `base_dir` (the `.model` file's folder).
pub fn lower_data_block(block: &ConfigBlock, base_dir: &Path) -> Result<DataPlan, Diagnostics> {
    let mut lw = Lowering { base_dir, diags: Vec::new() };
    let plan = lw.block(block);
    if lw.diags.iter().any(Diagnostic::is_error) { Err(Diagnostics(lw.diags)) } else { Ok(plan) }
}

/// Position of a stage in the canonical pipeline; settings (`seed`, `batch`, ...) have none.
fn stage_rank(key: &str) -> Option<u8> {
    Some(match key {
        "source" => 0,
        "validate" => 1,
        "clean" | "filter" => 2,
        "dedup" => 3,
        "split" => 4,
        "mix" => 5,
        "augment" => 6,
        "tokens" | "windows" | "features" => 7,
        _ => return None,
    })
}

const KEYS: &[&str] = &[
    "source",
    "validate",
    "on_invalid",
    "clean",
    "filter",
    "dedup",
    "split",
    "mix",
    "augment",
    "tokens",
    "windows",
    "features",
    "batch",
    "shuffle",
    "drop_last",
    "seed",
];

/// Entries remembered while walking a block, for checks that need the whole block.
#[derive(Default)]
struct Seen<'a> {
    clean: Option<&'a Entry>,
    split: Option<&'a Entry>,
    mix: Option<&'a Entry>,
    /// The entry of each lowered augmentation, parallel to `DataPlan::augment`.
    augment: Vec<&'a Entry>,
    tokens: Option<(TokenKind, Span)>,
    windows: Option<(usize, usize, Span)>,
    features: Option<(FeatureScaling, Span)>,
}

struct Lowering<'a> {
    base_dir: &'a Path,
    diags: Vec<Diagnostic>,
}

/// A call-like value: `name(args)` or a bare `name`.
struct Call<'e> {
    name: String,
    name_span: Span,
    span: Span,
    positional: Vec<&'e Expr>,
    named: Vec<(&'e str, Span, &'e Expr, bool)>,
}

impl<'e> Call<'e> {
    fn positional(&self, i: usize) -> Option<&'e Expr> {
        self.positional.get(i).copied()
    }

    /// Takes a named argument (marks it used).
    fn named(&mut self, name: &str) -> Option<&'e Expr> {
        let entry = self.named.iter_mut().find(|(n, ..)| *n == name)?;
        entry.3 = true;
        Some(entry.2)
    }

    /// Positional argument `i` or the named argument `name`.
    fn arg(&mut self, i: usize, name: &str) -> Option<&'e Expr> {
        self.named(name).or_else(|| self.positional(i))
    }
}

impl Lowering<'_> {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn block(&mut self, block: &ConfigBlock) -> DataPlan {
        let mut plan = DataPlan {
            name: block.name.name.clone(),
            sources: Vec::new(),
            kind: RecordKind::Tabular,
            checks: Vec::new(),
            on_invalid: OnInvalid::Drop,
            clean: Vec::new(),
            dedup: Vec::new(),
            split: SplitSpec::AllTrain,
            mix: None,
            augment: Vec::new(),
            shape: ShapeSpec::Features { scaling: FeatureScaling::Raw },
            batch: BatchSpec { size: 32, shuffle: true, drop_last: false },
            seed: 0,
            span: block.span,
        };
        // The latest stage entry so far, for order checks.
        let mut latest: Option<(u8, &Entry)> = None;
        let mut seen = Seen::default();
        let mut seen_settings: Vec<(String, Span)> = Vec::new();

        for entry in &block.entries {
            let key = entry.key_path();
            let key_span = entry.key.first().map_or(entry.span, |k| k.span);
            if !KEYS.contains(&key.as_str()) {
                let mut d = Diagnostic::error("E0600", format!("unknown key `{key}` in data block"))
                    .at(key_span, "not a data pipeline key");
                d = match closest(&key, KEYS) {
                    Some(s) => d.with_help(format!("did you mean `{s}`? keys are listed in docs/data.md")),
                    None => d.with_help(format!("expected one of: {}", KEYS.join(", "))),
                };
                self.error(d);
                continue;
            }
            if entry.label.is_some() && key != "source" {
                let label = entry.label.as_ref().map_or(entry.span, |l| l.span);
                self.error(
                    Diagnostic::error("E0600", format!("`{key}` takes no name"))
                        .at(label, "unexpected name")
                        .with_help(format!("write `{key}: value`; only `source NAME: ...` is named")),
                );
            }
            if let Some(rank) = stage_rank(&key) {
                if let Some((prev_rank, prev)) = latest
                    && rank < prev_rank
                {
                    self.order_error(entry, &key, prev);
                }
                if latest.is_none_or(|(r, _)| rank >= r) {
                    latest = Some((rank, entry));
                }
            } else if let Some((_, first)) = seen_settings.iter().find(|(k, _)| *k == key) {
                self.error(
                    Diagnostic::error("E0606", format!("`{key}` is given twice"))
                        .at(entry.span, "second value")
                        .with_label(*first, "first value")
                        .with_help("keep one of them"),
                );
                continue;
            } else {
                seen_settings.push((key.clone(), entry.span));
            }
            let v = &entry.value;
            match key.as_str() {
                "source" => {
                    if let Some(s) = self.source(entry, plan.sources.len()) {
                        if let Some(prev) = plan.sources.iter().find(|p| p.name == s.name) {
                            self.error(
                                Diagnostic::error("E0606", format!("source `{}` is declared twice", s.name))
                                    .at(s.span, "second declaration")
                                    .with_label(prev.span, "first declaration")
                                    .with_help("give each source its own name: `source NAME: ...`"),
                            );
                        } else {
                            plan.sources.push(s);
                        }
                    }
                }
                "validate" => {
                    for item in list_items(v) {
                        if let Some(c) = self.check(item) {
                            plan.checks.push(c);
                        }
                    }
                }
                "on_invalid" => {
                    if let Some(w) = self.word(v, &["drop", "fail"]) {
                        plan.on_invalid = if w == "fail" { OnInvalid::Fail } else { OnInvalid::Drop };
                    }
                }
                "clean" | "filter" => {
                    seen.clean.get_or_insert(entry);
                    for item in list_items(v) {
                        if let Some(c) = self.clean_step(item) {
                            plan.clean.push(c);
                        }
                    }
                }
                "dedup" => {
                    for item in list_items(v) {
                        if let Some(d) = self.dedup(item) {
                            plan.dedup.push(d);
                        }
                    }
                }
                "split" => {
                    if let Some(prev) = seen.split {
                        self.twice(entry, prev, "split");
                    } else if let Some(s) = self.split(v) {
                        plan.split = s;
                        seen.split = Some(entry);
                    }
                }
                "mix" => {
                    if let Some(prev) = seen.mix {
                        self.twice(entry, prev, "mix");
                    } else {
                        plan.mix = self.mix(v);
                        seen.mix = Some(entry);
                    }
                }
                "augment" => {
                    for item in list_items(v) {
                        if let Some(a) = self.augment(item) {
                            plan.augment.push(a);
                            seen.augment.push(entry);
                        }
                    }
                }
                "tokens" => {
                    if let Some(call) = self.call(v, &["chars", "bytes"]) {
                        let kind = if call.name == "bytes" { TokenKind::Bytes } else { TokenKind::Chars };
                        self.finish(call);
                        seen.tokens = Some((kind, entry.span));
                    }
                }
                "windows" => {
                    if let Some(w) = self.windows(v) {
                        seen.windows = Some((w.0, w.1, entry.span));
                    }
                }
                "features" => {
                    if let Some(s) = self.scaling(v) {
                        seen.features = Some((s, entry.span));
                    }
                }
                "batch" => {
                    if let Some(n) = self.positive_int(v, "batch size") {
                        plan.batch.size = n;
                    }
                }
                "shuffle" => {
                    if let Some(b) = self.boolean(v) {
                        plan.batch.shuffle = b;
                    }
                }
                "drop_last" => {
                    if let Some(b) = self.boolean(v) {
                        plan.batch.drop_last = b;
                    }
                }
                "seed" => {
                    if let Some(n) = self.int(v) {
                        plan.seed = n as u64;
                    }
                }
                _ => unreachable!("every key in KEYS is handled above"),
            }
        }

        if plan.sources.is_empty() {
            self.error(
                Diagnostic::error("E0610", format!("data block `{}` has no source", plan.name))
                    .at(block.name.span, "reads nothing")
                    .with_help("add `source NAME: csv(\"file.csv\", label: \"label\")` (see docs/data.md)"),
            );
            return plan;
        }
        self.kinds(&mut plan);
        self.cross_checks(&mut plan, &seen);
        plan
    }

    fn twice(&mut self, entry: &Entry, prev: &Entry, key: &str) {
        self.error(
            Diagnostic::error("E0606", format!("`{key}` is given twice"))
                .at(entry.span, "second value")
                .with_label(prev.span, "first value")
                .with_help("keep one of them"),
        );
    }

    fn order_error(&mut self, entry: &Entry, key: &str, prev: &Entry) {
        let prev_key = prev.key_path();
        let d = if key == "dedup" && matches!(prev_key.as_str(), "split" | "mix" | "augment") {
            Diagnostic::error("E0607", "dedup runs after the split")
                .at(entry.span, "deduplicates each split on its own")
                .with_label(prev.span, "records are split here")
                .with_help(
                    "move `dedup` above `split`: a duplicate on both sides of a split leaks test data \
                     into training",
                )
        } else if key == "split" && prev_key == "augment" {
            Diagnostic::error("E0608", "augmentation is applied before the split")
                .at(prev.span, "would augment validation and test records too")
                .with_label(entry.span, "records are split here")
                .with_help("move `augment` below `split`; it then applies to the `train` split only")
        } else {
            Diagnostic::error("E0609", format!("`{key}` comes after `{prev_key}`"))
                .at(entry.span, "out of pipeline order")
                .with_label(prev.span, format!("`{prev_key}` is here"))
                .with_help(
                    "order the entries source → validate → clean → dedup → split → mix → augment → \
                     tokens/windows/features",
                )
        };
        self.error(d);
    }

    /// Which record kind the sources produce; they must agree.
    fn kinds(&mut self, plan: &mut DataPlan) {
        let kind_of = |s: &SourceSpec| match &s.format {
            SourceFormat::Csv { .. } => RecordKind::Tabular,
            SourceFormat::Jsonl { text, .. } => {
                if text.is_some() {
                    RecordKind::Text
                } else {
                    RecordKind::Tabular
                }
            }
            SourceFormat::Text { .. } => RecordKind::Text,
            SourceFormat::Idx { .. } => RecordKind::Image,
        };
        let first = &plan.sources[0];
        plan.kind = kind_of(first);
        for s in &plan.sources[1..] {
            let k = kind_of(s);
            if k != plan.kind {
                self.error(
                    Diagnostic::error(
                        "E0611",
                        format!(
                            "source `{}` gives {k} records but `{}` gives {}",
                            s.name, first.name, plan.kind
                        ),
                    )
                    .at(s.span, format!("{k} records"))
                    .with_label(first.span, format!("{} records", plan.kind))
                    .with_help("put sources of different kinds in separate data blocks"),
                );
            }
        }
    }

    /// Checks that need the whole block: kinds against stages, names against sources.
    fn cross_checks(&mut self, plan: &mut DataPlan, seen: &Seen<'_>) {
        let kind = plan.kind;
        let block_span = plan.span;
        let split_entry = seen.split;
        let (tokens, windows, features) = (seen.tokens, seen.windows, seen.features);
        if kind != RecordKind::Text
            && let Some(clean) = seen.clean
        {
            self.error(
                Diagnostic::error(
                    "E0612",
                    format!("`clean` applies to text records, but this block gives {kind}"),
                )
                .at(clean.span, "text cleaning")
                .with_help("remove `clean`; use `validate: [range(...)]` for tabular and image data"),
            );
        }
        for (a, entry) in plan.augment.iter().zip(&seen.augment) {
            if !a.applies_to(kind) {
                self.error(
                    Diagnostic::error(
                        "E0612",
                        format!("`{}` does not apply to {kind} records", a.stage_name()),
                    )
                    .at(entry.span, "in this augmentation")
                    .with_help(match kind {
                        RecordKind::Text => "text takes char_noise, token_delete and token_swap",
                        RecordKind::Image => "images take gaussian_noise, flip, crop and mixup",
                        RecordKind::Tabular => "tabular records take gaussian_noise and mixup",
                    }),
                );
            }
            if matches!(a, Augment::Mixup { .. }) && !plan.has_labels() {
                self.error(
                    Diagnostic::error("E0611", "`mixup` needs labelled records")
                        .at(entry.span, "mixes labels")
                        .with_help("declare a label column (`label: \"...\"`) on every source"),
                );
            }
        }
        for d in &plan.dedup {
            let against = match d {
                DedupSpec::Exact { against } => against,
                DedupSpec::Near(n) => &n.against,
            };
            if let Some(a) = against
                && plan.source_index(a).is_none()
            {
                self.error(
                    Diagnostic::error("E0611", format!("`against: \"{a}\"` names no source"))
                        .at(block_span, "in `dedup`")
                        .with_help(format!("sources here: {}", source_names(plan))),
                );
            }
        }
        if let Some(m) = &plan.mix {
            let entry_span = seen.mix.map_or(block_span, |e| e.span);
            for (name, _) in &m.weights {
                if plan.source_index(name).is_none() {
                    self.error(
                        Diagnostic::error("E0611", format!("`mix` weighs `{name}`, which is not a source"))
                            .at(entry_span, "in this mix")
                            .with_help(format!("sources here: {}", source_names(plan))),
                    );
                }
            }
            for s in &plan.sources {
                if !m.weights.iter().any(|(n, _)| *n == s.name) {
                    self.error(
                        Diagnostic::error("E0611", format!("`mix` gives no weight to source `{}`", s.name))
                            .at(entry_span, "in this mix")
                            .with_label(s.span, "declared here")
                            .with_help(format!("add `{}: <weight>` (0 leaves it out of training)", s.name)),
                    );
                }
            }
        }
        if let SplitSpec::ById { .. } = plan.split {
            for s in &plan.sources {
                let has_id = match &s.format {
                    SourceFormat::Csv { id, .. } | SourceFormat::Jsonl { id, .. } => id.is_some(),
                    _ => false,
                };
                if !has_id {
                    self.error(
                        Diagnostic::error(
                            "E0611",
                            format!("`by_id` needs an id field, but `{}` has none", s.name),
                        )
                        .at(s.span, "no `id:` argument")
                        .with_help("add `id: \"column\"` to the source, or use `holdout(...)`"),
                    );
                }
            }
        }
        if matches!(
            plan.split,
            SplitSpec::Holdout { stratify: true, .. } | SplitSpec::KFold { stratify: true, .. }
        ) && !plan.has_labels()
        {
            let span = split_entry.map_or(block_span, |e| e.span);
            self.error(
                Diagnostic::error("E0611", "a stratified split needs labelled records")
                    .at(span, "stratifies by label")
                    .with_help("declare a label on every source, or drop `stratify: true`"),
            );
        }
        match kind {
            RecordKind::Text => {
                if let Some((_, span)) = features {
                    self.error(
                        Diagnostic::error("E0612", "`features` applies to tabular and image records")
                            .at(span, "text records have no features")
                            .with_help("text is shaped by `tokens: chars()` and `windows: N`"),
                    );
                }
                match windows {
                    Some((length, stride, _)) => {
                        let tokens = tokens.map_or(TokenKind::Chars, |t| t.0);
                        plan.shape = ShapeSpec::Windows { tokens, length, stride };
                    }
                    None => self.error(
                        Diagnostic::error("E0611", "text records need `windows: N` to become batches")
                            .at(tokens.map_or(block_span, |t| t.1), "text data")
                            .with_help("add `windows: 65` (tokens per row of `x: i32[B, W]`)"),
                    ),
                }
            }
            RecordKind::Tabular | RecordKind::Image => {
                for (what, span) in
                    [tokens.map(|t| ("tokens", t.1)), windows.map(|w| ("windows", w.2))].into_iter().flatten()
                {
                    self.error(
                        Diagnostic::error(
                            "E0612",
                            format!("`{what}` applies to text records, but this block gives {kind}"),
                        )
                        .at(span, "not text")
                        .with_help("use `features: standardize()` to shape tabular or image data"),
                    );
                }
                let default = if kind == RecordKind::Image {
                    FeatureScaling::Scale(1.0 / 255.0)
                } else {
                    FeatureScaling::Raw
                };
                plan.shape = ShapeSpec::Features { scaling: features.map_or(default, |f| f.0) };
            }
        }
    }

    // ---- sources -------------------------------------------------------------------------

    fn source(&mut self, entry: &Entry, index: usize) -> Option<SourceSpec> {
        let mut call = self.call(&entry.value, &["csv", "jsonl", "text", "idx"])?;
        let name = entry.label.as_ref().map_or_else(
            || if index == 0 { "main".to_string() } else { format!("source{index}") },
            |l| l.name.clone(),
        );
        let format = match call.name.clone().as_str() {
            "csv" => {
                let path = self.path_arg(&mut call, 0, "path")?;
                let label = call.named("label").and_then(|e| self.string(e));
                let id = call.named("id").and_then(|e| self.string(e));
                let features = call.named("features").map(|e| self.strings(e)).unwrap_or_default();
                SourceFormat::Csv { path, label, features, id }
            }
            "jsonl" => {
                let path = self.path_arg(&mut call, 0, "path")?;
                let text = call.named("text").and_then(|e| self.string(e));
                let label = call.named("label").and_then(|e| self.string(e));
                let id = call.named("id").and_then(|e| self.string(e));
                let features = call.named("features").map(|e| self.strings(e)).unwrap_or_default();
                if text.is_some() != features.is_empty() {
                    self.error(
                        Diagnostic::error("E0603", "`jsonl` needs either `text:` or `features:`")
                            .at(call.span, "in this source")
                            .with_help(
                                "write `jsonl(\"f.jsonl\", text: \"body\")` or `features: [\"a\", \"b\"]`",
                            ),
                    );
                    return None;
                }
                SourceFormat::Jsonl { path, text, features, label, id }
            }
            "text" => {
                let path = self.path_arg(&mut call, 0, "path")?;
                let unit = match call.arg(1, "unit") {
                    None => TextUnit::Whole,
                    Some(e) => match self.word(e, &["whole", "lines", "paragraphs"])?.as_str() {
                        "lines" => TextUnit::Lines,
                        "paragraphs" => TextUnit::Paragraphs,
                        _ => TextUnit::Whole,
                    },
                };
                SourceFormat::Text { path, unit }
            }
            _ => {
                let images = self.path_arg(&mut call, 0, "images")?;
                let labels = match call.arg(1, "labels") {
                    Some(e) => Some(self.base_dir.join(self.string(e)?)),
                    None => None,
                };
                SourceFormat::Idx { images, labels }
            }
        };
        self.finish(call);
        Some(SourceSpec { name, format, span: entry.span })
    }

    fn path_arg(&mut self, call: &mut Call<'_>, i: usize, name: &str) -> Option<PathBuf> {
        match call.arg(i, name) {
            Some(e) => Some(self.base_dir.join(self.string(e)?)),
            None => {
                self.missing::<()>(call, name, "a path relative to the .model file");
                None
            }
        }
    }

    // ---- stages --------------------------------------------------------------------------

    fn check(&mut self, e: &Expr) -> Option<Check> {
        let mut call = self.call(e, &["range", "classes", "image_shape"])?;
        let c = match call.name.clone().as_str() {
            "range" => {
                let pattern = match call.positional(0) {
                    Some(p) => self.string(p)?,
                    None => "*".to_string(),
                };
                let min = call.named("min").and_then(|e| self.number(e)).unwrap_or(f64::NEG_INFINITY);
                let max = call.named("max").and_then(|e| self.number(e)).unwrap_or(f64::INFINITY);
                Check::Range { pattern, min, max }
            }
            "classes" => match call.arg(0, "n") {
                Some(e) => Check::Classes(self.positive_int(e, "class count")? as i64),
                None => return self.missing(&call, "n", "the number of classes"),
            },
            _ => {
                let mut dims = [0usize; 3];
                for (i, (d, n)) in dims.iter_mut().zip(["c", "h", "w"]).enumerate() {
                    match call.arg(i, n) {
                        Some(e) => *d = self.positive_int(e, "image dimension")?,
                        None => return self.missing(&call, n, "channels, height and width"),
                    }
                }
                Check::ImageShape(dims)
            }
        };
        self.finish(call);
        Some(c)
    }

    fn clean_step(&mut self, e: &Expr) -> Option<CleanStep> {
        const NAMES: &[&str] = &[
            "normalize",
            "strip_control",
            "collapse_whitespace",
            "lowercase",
            "min_chars",
            "max_chars",
            "min_words",
            "max_dup_line_frac",
            "max_top_ngram_frac",
            "english",
        ];
        let mut call = self.call(e, NAMES)?;
        let step = match call.name.clone().as_str() {
            "normalize" => {
                let form = match call.arg(0, "form") {
                    Some(e) => self.word(e, &["nfc", "nfkc"])?,
                    None => "nfc".into(),
                };
                CleanStep::Normalize(if form == "nfkc" { NormalForm::Nfkc } else { NormalForm::Nfc })
            }
            "strip_control" => CleanStep::StripControl,
            "collapse_whitespace" => CleanStep::CollapseWhitespace,
            "lowercase" => CleanStep::Lowercase,
            "min_chars" | "max_chars" | "min_words" => {
                let Some(e) = call.arg(0, "n") else { return self.missing(&call, "n", "a count") };
                let n = self.count(e)?;
                match call.name.clone().as_str() {
                    "min_chars" => CleanStep::MinChars(n),
                    "max_chars" => CleanStep::MaxChars(n),
                    _ => CleanStep::MinWords(n),
                }
            }
            "max_dup_line_frac" => {
                let Some(e) = call.arg(0, "frac") else { return self.missing(&call, "frac", "a fraction") };
                CleanStep::MaxDupLineFrac(self.fraction(e)?)
            }
            "max_top_ngram_frac" => {
                let n = match call.named("n") {
                    Some(e) => self.positive_int(e, "n-gram length")?,
                    None => 2,
                };
                let Some(e) = call.arg(0, "frac") else { return self.missing(&call, "frac", "a fraction") };
                CleanStep::MaxTopNgramFrac { n, frac: self.fraction(e)? }
            }
            _ => {
                let min_stopword_frac = match call.arg(0, "min_stopword_frac") {
                    Some(e) => self.fraction(e)?,
                    None => 0.05,
                };
                let min_words = match call.named("min_words") {
                    Some(e) => self.count(e)?,
                    None => 5,
                };
                CleanStep::English { min_stopword_frac, min_words }
            }
        };
        self.finish(call);
        Some(step)
    }

    fn dedup(&mut self, e: &Expr) -> Option<DedupSpec> {
        let mut call = self.call(e, &["exact", "near"])?;
        let against = match call.named("against") {
            Some(e) => Some(self.string(e)?),
            None => None,
        };
        let d = if call.name == "exact" {
            DedupSpec::Exact { against }
        } else {
            let threshold = match call.named("threshold") {
                Some(e) => self.fraction(e)?,
                None => 0.8,
            };
            let shingle = match call.named("shingle") {
                Some(e) => self.positive_int(e, "shingle length")?,
                None => 5,
            };
            let unit = match call.named("unit") {
                Some(e) => {
                    if self.word(e, &["words", "chars"])? == "chars" {
                        ShingleUnit::Chars
                    } else {
                        ShingleUnit::Words
                    }
                }
                None => ShingleUnit::Words,
            };
            let bands = match call.named("bands") {
                Some(e) => self.positive_int(e, "band count")?,
                None => 16,
            };
            let rows = match call.named("rows") {
                Some(e) => self.positive_int(e, "rows per band")?,
                None => 8,
            };
            DedupSpec::Near(NearDedup { threshold, shingle, unit, bands, rows, against })
        };
        self.finish(call);
        Some(d)
    }

    fn split(&mut self, e: &Expr) -> Option<SplitSpec> {
        let mut call = self.call(e, &["holdout", "kfold", "by_id", "contiguous"])?;
        // A split's own seed overrides the block's, so the split can stay fixed while shuffles vary.
        let seed = match call.named("seed") {
            Some(e) => Some(self.int(e)? as u64),
            None => None,
        };
        let stratify = match call.named("stratify") {
            Some(e) if call.name == "holdout" || call.name == "kfold" => self.boolean(e)?,
            _ => false,
        };
        let spec = match call.name.clone().as_str() {
            "kfold" => {
                let Some(k_expr) = call.arg(0, "k") else {
                    return self.missing(&call, "k", "the fold count");
                };
                let k = self.positive_int(k_expr, "fold count")?;
                let fold = match call.named("fold") {
                    Some(e) => {
                        let f = self.count(e)?;
                        if f >= k {
                            self.error(
                                Diagnostic::error("E0605", format!("fold {f} does not exist with k = {k}"))
                                    .at(e.span, "out of range")
                                    .with_help(format!("folds are numbered 0 to {}", k - 1)),
                            );
                            return None;
                        }
                        f
                    }
                    None => 0,
                };
                if k < 2 {
                    self.error(
                        Diagnostic::error("E0605", "k-fold needs k of at least 2")
                            .at(k_expr.span, "too small")
                            .with_help("use `holdout(...)` for a single split"),
                    );
                    return None;
                }
                SplitSpec::KFold { k, fold, stratify, seed }
            }
            name => {
                let mut fractions = Vec::new();
                let mut total = 0.0;
                for (arg_name, _, value, used) in call.named.iter_mut() {
                    if *used {
                        continue;
                    }
                    *used = true;
                    let f = self.fraction(value)?;
                    total += f;
                    fractions.push((arg_name.to_string(), f));
                }
                if !fractions.iter().any(|(n, _)| n == "train") {
                    self.error(
                        Diagnostic::error("E0603", format!("`{name}` has no `train` fraction"))
                            .at(call.span, "in this split")
                            .with_help("name the training split `train`: `holdout(train: 0.9, valid: 0.1)`"),
                    );
                    return None;
                }
                if (total - 1.0).abs() > 1e-6 {
                    self.error(
                        Diagnostic::error("E0605", format!("split fractions sum to {total}, not 1"))
                            .at(call.span, "in this split")
                            .with_help("make the fractions add up to 1"),
                    );
                    return None;
                }
                match name {
                    "holdout" => SplitSpec::Holdout { fractions, stratify, seed },
                    "by_id" => SplitSpec::ById { fractions },
                    _ => SplitSpec::Contiguous { fractions },
                }
            }
        };
        self.finish(call);
        Some(spec)
    }

    fn mix(&mut self, e: &Expr) -> Option<MixSpec> {
        let mut call = self.call(e, &["weights"])?;
        let max_repeat = match call.named("max_repeat") {
            Some(e) => {
                let r = self.number(e)?;
                if r < 1.0 {
                    self.error(
                        Diagnostic::error("E0605", format!("max_repeat is {r}; it must be at least 1"))
                            .at(e.span, "too small")
                            .with_help("1 means no record is repeated within an epoch"),
                    );
                    return None;
                }
                r
            }
            None => 1.0,
        };
        let mut weights = Vec::new();
        for (name, _, value, used) in call.named.iter_mut() {
            if *used {
                continue;
            }
            *used = true;
            let w = self.number(value)?;
            if w < 0.0 {
                self.error(
                    Diagnostic::error("E0605", format!("weight of `{name}` is negative"))
                        .at(value.span, "negative")
                        .with_help("weights are non-negative; they are normalised to sum to 1"),
                );
                return None;
            }
            weights.push((name.to_string(), w));
        }
        let total: f64 = weights.iter().map(|w| w.1).sum();
        if total <= 0.0 {
            self.error(
                Diagnostic::error("E0605", "mix weights sum to 0")
                    .at(call.span, "in this mix")
                    .with_help("give at least one source a positive weight"),
            );
            return None;
        }
        for w in &mut weights {
            w.1 /= total;
        }
        self.finish(call);
        Some(MixSpec { weights, max_repeat })
    }

    fn augment(&mut self, e: &Expr) -> Option<Augment> {
        const NAMES: &[&str] =
            &["gaussian_noise", "flip", "crop", "mixup", "char_noise", "token_delete", "token_swap"];
        let mut call = self.call(e, NAMES)?;
        if let Some(on) = call.named("split") {
            let split = self.string(on)?;
            if split != "train" {
                self.error(
                    Diagnostic::error("E0608", format!("augmentation applied to the `{split}` split"))
                        .at(on.span, "not the training split")
                        .with_help("augmentation only applies to `train`; remove `split:`"),
                );
                return None;
            }
        }
        let a = match call.name.clone().as_str() {
            "gaussian_noise" => {
                let Some(e) = call.arg(0, "std") else {
                    return self.missing(&call, "std", "a standard deviation");
                };
                Augment::GaussianNoise { std: self.non_negative(e)? }
            }
            "flip" => {
                let horizontal = match call.named("horizontal") {
                    Some(e) => self.boolean(e)?,
                    None => true,
                };
                let vertical = match call.named("vertical") {
                    Some(e) => self.boolean(e)?,
                    None => false,
                };
                let p = match call.named("p") {
                    Some(e) => self.fraction(e)?,
                    None => 0.5,
                };
                Augment::Flip { horizontal, vertical, p }
            }
            "crop" => {
                let Some(e) = call.arg(0, "pad") else {
                    return self.missing(&call, "pad", "a padding in pixels");
                };
                Augment::Crop { pad: self.count(e)? }
            }
            "mixup" => {
                let alpha = match call.arg(0, "alpha") {
                    Some(e) => self.non_negative(e)?,
                    None => 0.2,
                };
                Augment::Mixup { alpha }
            }
            name => {
                let Some(e) = call.arg(0, "p") else { return self.missing(&call, "p", "a probability") };
                let p = self.fraction(e)?;
                match name {
                    "char_noise" => Augment::CharNoise { p },
                    "token_delete" => Augment::TokenDelete { p },
                    _ => Augment::TokenSwap { p },
                }
            }
        };
        self.finish(call);
        Some(a)
    }

    fn windows(&mut self, e: &Expr) -> Option<(usize, usize)> {
        if let ExprKind::Int(_) = e.kind {
            let n = self.positive_int(e, "window length")?;
            return Some((n, n));
        }
        let mut call = self.call(e, &["windows"])?;
        let Some(len) = call.arg(0, "length") else {
            return self.missing(&call, "length", "tokens per window");
        };
        let length = self.positive_int(len, "window length")?;
        let stride = match call.named("stride") {
            Some(e) => self.positive_int(e, "stride")?,
            None => length,
        };
        self.finish(call);
        Some((length, stride))
    }

    fn scaling(&mut self, e: &Expr) -> Option<FeatureScaling> {
        let mut call = self.call(e, &["raw", "standardize", "scale"])?;
        let s = match call.name.clone().as_str() {
            "raw" => FeatureScaling::Raw,
            "standardize" => FeatureScaling::Standardize,
            _ => {
                let Some(e) = call.arg(0, "factor") else { return self.missing(&call, "factor", "a number") };
                FeatureScaling::Scale(self.number(e)?)
            }
        };
        self.finish(call);
        Some(s)
    }

    // ---- values --------------------------------------------------------------------------

    /// Reads `name(args)` or a bare `name`, where `name` is one of `known`.
    fn call<'e>(&mut self, e: &'e Expr, known: &[&str]) -> Option<Call<'e>> {
        let (name, name_span, args): (&str, Span, &[Arg]) = match &e.kind {
            ExprKind::Call { callee, args } => match &callee.kind {
                ExprKind::Name(n) => (n, callee.span, args),
                _ => return self.wrong_type(e, "a stage call such as `exact()`"),
            },
            ExprKind::Name(n) => (n, e.span, &[]),
            _ => return self.wrong_type(e, &format!("one of {}", backticked(known))),
        };
        if !known.contains(&name) {
            let mut d =
                Diagnostic::error("E0601", format!("unknown stage `{name}`")).at(name_span, "not known here");
            d = match closest(name, known) {
                Some(s) => d.with_help(format!("did you mean `{s}`? expected one of {}", backticked(known))),
                None => d.with_help(format!("expected one of {}", backticked(known))),
            };
            self.error(d);
            return None;
        }
        let mut call = Call {
            name: name.to_string(),
            name_span,
            span: e.span,
            positional: Vec::new(),
            named: Vec::new(),
        };
        for a in args {
            match &a.name {
                Some(n) => call.named.push((n.name.as_str(), n.span, &a.value, false)),
                None => call.positional.push(&a.value),
            }
        }
        Some(call)
    }

    /// Reports named arguments nobody asked for and positional arguments beyond those used.
    fn finish(&mut self, call: Call<'_>) {
        for (name, span, _, used) in &call.named {
            if !used {
                self.error(
                    Diagnostic::error("E0602", format!("`{}` has no argument `{name}`", call.name))
                        .at(*span, "unknown argument")
                        .with_label(call.name_span, "in this call")
                        .with_help("the arguments of each stage are listed in docs/data.md"),
                );
            }
        }
        let max_positional = match call.name.clone().as_str() {
            "image_shape" => 3,
            "csv" | "jsonl" | "range" | "classes" | "normalize" | "min_chars" | "max_chars" | "min_words"
            | "max_dup_line_frac" | "max_top_ngram_frac" | "english" | "kfold" | "gaussian_noise"
            | "crop" | "mixup" | "char_noise" | "token_delete" | "token_swap" | "windows" | "scale" => 1,
            "text" | "idx" => 2,
            _ => 0,
        };
        if let Some(extra) = call.positional.get(max_positional) {
            self.error(
                Diagnostic::error(
                    "E0602",
                    format!("`{}` takes at most {max_positional} positional argument(s)", call.name),
                )
                .at(extra.span, "extra argument")
                .with_help("name the argument, e.g. `threshold: 0.8`; see docs/data.md"),
            );
        }
    }

    fn missing<T>(&mut self, call: &Call<'_>, name: &str, what: &str) -> Option<T> {
        self.error(
            Diagnostic::error("E0603", format!("`{}` needs `{name}`", call.name))
                .at(call.span, format!("missing `{name}`"))
                .with_help(format!("pass {what} as `{name}: ...`")),
        );
        None
    }

    fn wrong_type<T>(&mut self, e: &Expr, expected: &str) -> Option<T> {
        self.error(
            Diagnostic::error("E0604", format!("expected {expected}, found {}", describe(e)))
                .at(e.span, format!("expected {expected}"))
                .with_help("the values each key takes are listed in docs/data.md"),
        );
        None
    }

    fn out_of_range<T>(&mut self, e: &Expr, what: &str, help: &str) -> Option<T> {
        self.error(
            Diagnostic::error("E0605", format!("{what} is out of range")).at(e.span, "here").with_help(help),
        );
        None
    }

    fn string(&mut self, e: &Expr) -> Option<String> {
        match &e.kind {
            ExprKind::Str(s) => Some(s.clone()),
            _ => self.wrong_type(e, "a string"),
        }
    }

    fn strings(&mut self, e: &Expr) -> Vec<String> {
        list_items(e).into_iter().filter_map(|i| self.string(i)).collect()
    }

    /// A keyword given as a bare name or a string: `drop`, `"paragraphs"`.
    fn word(&mut self, e: &Expr, allowed: &[&str]) -> Option<String> {
        let w = match &e.kind {
            ExprKind::Str(s) | ExprKind::Name(s) => s.clone(),
            _ => return self.wrong_type(e, &format!("one of {}", backticked(allowed))),
        };
        if allowed.contains(&w.as_str()) {
            Some(w)
        } else {
            self.error(
                Diagnostic::error("E0604", format!("expected one of {}, found `{w}`", backticked(allowed)))
                    .at(e.span, "not allowed here")
                    .with_help(match closest(&w, allowed) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "see docs/data.md".to_string(),
                    }),
            );
            None
        }
    }

    fn number(&mut self, e: &Expr) -> Option<f64> {
        match &e.kind {
            ExprKind::Int(i) => Some(*i as f64),
            ExprKind::Float(f) => Some(*f),
            ExprKind::Unary { op: UnOp::Neg, expr } => match expr.kind {
                ExprKind::Int(i) => Some(-(i as f64)),
                ExprKind::Float(f) => Some(-f),
                _ => self.wrong_type(e, "a number"),
            },
            _ => self.wrong_type(e, "a number"),
        }
    }

    fn int(&mut self, e: &Expr) -> Option<i64> {
        match &e.kind {
            ExprKind::Int(i) => Some(*i),
            _ => self.wrong_type(e, "an integer"),
        }
    }

    fn count(&mut self, e: &Expr) -> Option<usize> {
        let i = self.int(e)?;
        if i < 0 {
            return self.out_of_range(e, "a negative count", "counts are 0 or more");
        }
        Some(i as usize)
    }

    fn positive_int(&mut self, e: &Expr, what: &str) -> Option<usize> {
        let i = self.int(e)?;
        if i <= 0 {
            return self.out_of_range(e, &format!("{what} {i}"), &format!("the {what} must be at least 1"));
        }
        Some(i as usize)
    }

    fn fraction(&mut self, e: &Expr) -> Option<f64> {
        let f = self.number(e)?;
        if !(0.0..=1.0).contains(&f) {
            return self.out_of_range(
                e,
                &format!("fraction {f}"),
                "fractions and probabilities lie in [0, 1]",
            );
        }
        Some(f)
    }

    fn non_negative(&mut self, e: &Expr) -> Option<f64> {
        let f = self.number(e)?;
        if f < 0.0 {
            return self.out_of_range(e, &format!("value {f}"), "this value must be 0 or more");
        }
        Some(f)
    }

    fn boolean(&mut self, e: &Expr) -> Option<bool> {
        match &e.kind {
            ExprKind::Bool(b) => Some(*b),
            ExprKind::Name(n) if n == "true" => Some(true),
            ExprKind::Name(n) if n == "false" => Some(false),
            _ => self.wrong_type(e, "`true` or `false`"),
        }
    }
}

/// The items of a list value, or the value itself (`dedup: exact()` = `dedup: [exact()]`).
fn list_items(e: &Expr) -> Vec<&Expr> {
    match &e.kind {
        ExprKind::List(items) => items.iter().collect(),
        _ => vec![e],
    }
}

fn describe(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(i) => format!("integer `{i}`"),
        ExprKind::Float(f) => format!("number `{f}`"),
        ExprKind::Bool(b) => format!("`{b}`"),
        ExprKind::Str(s) => format!("string \"{s}\""),
        ExprKind::Name(n) => format!("name `{n}`"),
        ExprKind::List(_) => "a list".into(),
        ExprKind::Call { .. } => "a call".into(),
        _ => "an expression".into(),
    }
}

fn backticked(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

fn source_names(plan: &DataPlan) -> String {
    plan.sources.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
}

/// The known name nearest to `name` by edit distance, if close enough to be a typo.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
