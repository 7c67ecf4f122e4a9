//! What a pipeline run did: records in, out and dropped by reason per step with its time,
//! records and class counts per split, and each source's share of the training split after
//! mixing. Serialises to JSON (`--report`) and renders as a plain-text table.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DataReport {
    pub name: String,
    pub kind: String,
    pub sources: Vec<SourceReport>,
    pub steps: Vec<StepReport>,
    pub splits: Vec<SplitReport>,
    /// Training split after mixing (epoch 0); one row per source.
    pub mix: Vec<SourceShare>,
    /// Batch fields, as in `x: f32[B, 64]`.
    pub signature: Vec<String>,
    pub vocab_size: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub files: Vec<String>,
    /// Records read, before validation.
    pub records: usize,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StepReport {
    /// `read`, `validate`, `clean`, `dedup.exact`, `dedup.near`, `split`, `shape`, ...
    pub step: String,
    pub records_in: usize,
    pub records_out: usize,
    /// Reason → records dropped; sums to `records_in - records_out`.
    pub dropped: BTreeMap<String, usize>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SplitReport {
    pub name: String,
    pub records: usize,
    /// Label → records (empty for unlabelled data).
    pub class_counts: BTreeMap<i32, usize>,
    /// Source name → records.
    pub sources: BTreeMap<String, usize>,
    /// Rows of `x` in one pass over the split (windows for text, records otherwise).
    pub rows: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SourceShare {
    pub source: String,
    pub weight: f64,
    /// Records drawn in epoch 0 (repeats included).
    pub records: usize,
    pub share: f64,
}

impl DataReport {
    pub fn to_json(&self) -> String {
        // Invariant: the report holds only strings, numbers and maps with string keys.
        serde_json::to_string_pretty(self).expect("a data report serialises")
    }

    /// The table printed by `modelc data`.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "data {} ({} records)", self.name, self.kind);
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>9} {:>9} {:>8}  dropped by reason",
            "step", "in", "out", "dropped", "time"
        );
        for s in &self.steps {
            let reasons: Vec<String> = s.dropped.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            let _ = writeln!(
                out,
                "{:<16} {:>9} {:>9} {:>9} {:>7.3}s  {}",
                s.step,
                s.records_in,
                s.records_out,
                s.records_in.saturating_sub(s.records_out),
                s.seconds,
                reasons.join(", ")
            );
        }
        let _ = writeln!(out, "\n{:<16} {:>9} {:>9}  classes / sources", "split", "records", "rows");
        for s in &self.splits {
            let classes: Vec<String> = s.class_counts.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            let sources: Vec<String> = s.sources.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            let detail = if classes.is_empty() { sources.join(", ") } else { classes.join(", ") };
            let _ = writeln!(out, "{:<16} {:>9} {:>9}  {}", s.name, s.records, s.rows, detail);
        }
        if !self.mix.is_empty() {
            let _ = writeln!(out, "\n{:<16} {:>9} {:>9} {:>9}", "mix (train)", "weight", "records", "share");
            for m in &self.mix {
                let _ = writeln!(out, "{:<16} {:>9.3} {:>9} {:>9.3}", m.source, m.weight, m.records, m.share);
            }
        }
        let _ = writeln!(out, "\nbatch: {}", self.signature.join(", "));
        if let Some(v) = self.vocab_size {
            let _ = writeln!(out, "vocabulary: {v} symbols");
        }
        out
    }
}
