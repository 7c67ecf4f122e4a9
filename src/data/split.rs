//! Splits: hold-out by fractions (optionally stratified by label), k-fold and stratified k-fold,
//! stable splits by hash of a record id, and contiguous splits (the first part of each source,
//! then the next). Each record gets the index of its split in [`SplitSpec::names`] order.

use super::plan::SplitSpec;
use super::record::Record;
use super::run::stage_rng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use xxhash_rust::xxh3::xxh3_64;

/// The split index of every record. Randomness comes from `(seed, "split", 0)`.
pub fn assign_splits(spec: &SplitSpec, records: &[Record], block_seed: u64) -> Vec<usize> {
    let n = records.len();
    let mut out = vec![0usize; n];
    match spec {
        SplitSpec::AllTrain => {}
        SplitSpec::Holdout { fractions, stratify, seed } => {
            let mut rng = stage_rng(seed.unwrap_or(block_seed), "split", 0);
            for mut group in groups(records, *stratify) {
                group.shuffle(&mut rng);
                cut(&group, fractions, &mut out);
            }
        }
        SplitSpec::KFold { k, fold, stratify, seed } => {
            let mut rng = stage_rng(seed.unwrap_or(block_seed), "split", 0);
            // Positions run on across label groups so every fold gets its share of each class.
            let mut position = 0usize;
            for mut group in groups(records, *stratify) {
                group.shuffle(&mut rng);
                for i in group {
                    out[i] = usize::from(position % k == *fold);
                    position += 1;
                }
            }
        }
        SplitSpec::ById { fractions } => {
            for (i, r) in records.iter().enumerate() {
                // Invariant: the plan rejects `by_id` unless every source declares an id field,
                // and validation drops records with an empty id.
                let id = r.id.as_deref().unwrap_or_default();
                let u = xxh3_64(id.as_bytes()) as f64 / 18_446_744_073_709_551_616.0;
                out[i] = bucket(u, fractions);
            }
        }
        SplitSpec::Contiguous { fractions } => {
            let mut by_source: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, r) in records.iter().enumerate() {
                by_source.entry(r.source).or_default().push(i);
            }
            for group in by_source.values() {
                cut(group, fractions, &mut out);
            }
        }
    }
    out
}

/// Record indices grouped by label (one group when not stratified), in a fixed order.
fn groups(records: &[Record], stratify: bool) -> Vec<Vec<usize>> {
    if !stratify {
        return vec![(0..records.len()).collect()];
    }
    let mut by_label: BTreeMap<Option<i32>, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_label.entry(r.label).or_default().push(i);
    }
    by_label.into_values().collect()
}

/// Cuts an ordered group at the cumulative fractions (rounded), assigning split indices.
fn cut(group: &[usize], fractions: &[(String, f64)], out: &mut [usize]) {
    let n = group.len();
    let mut start = 0usize;
    let mut cumulative = 0.0;
    for (split, (_, f)) in fractions.iter().enumerate() {
        cumulative += f;
        let end =
            if split + 1 == fractions.len() { n } else { ((cumulative * n as f64).round() as usize).min(n) };
        for &i in &group[start..end.max(start)] {
            out[i] = split;
        }
        start = end.max(start);
    }
}

/// The split whose cumulative fraction interval holds `u` in `[0, 1)`.
fn bucket(u: f64, fractions: &[(String, f64)]) -> usize {
    let mut cumulative = 0.0;
    for (split, (_, f)) in fractions.iter().enumerate() {
        cumulative += f;
        if u < cumulative {
            return split;
        }
    }
    fractions.len() - 1
}
