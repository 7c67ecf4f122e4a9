//! Shaping records for models: character or byte vocabularies (built on the training split,
//! id 0 is the unknown symbol for characters) and fixed-length token windows for text; feature
//! matrices with scaling and standardisation statistics from the training split only for tabular
//! data and images.

use super::plan::{FeatureScaling, TokenKind};
use super::record::Body;
use serde::Serialize;

/// A token vocabulary. Bytes map to themselves (256 ids); characters map to `1 + rank` in the
/// sorted training alphabet and anything else to 0 (`<unk>`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Vocab {
    pub kind: &'static str,
    /// The characters with ids `1..=chars.len()` (empty for bytes).
    pub chars: Vec<char>,
}

impl Vocab {
    pub const UNKNOWN: i32 = 0;

    pub fn build<'a>(kind: TokenKind, texts: impl Iterator<Item = &'a str>) -> Vocab {
        match kind {
            TokenKind::Bytes => Vocab { kind: "bytes", chars: Vec::new() },
            TokenKind::Chars => {
                let mut set = std::collections::BTreeSet::new();
                for t in texts {
                    set.extend(t.chars());
                }
                Vocab { kind: "chars", chars: set.into_iter().collect() }
            }
        }
    }

    /// Number of ids (including `<unk>` for characters).
    pub fn size(&self) -> usize {
        if self.kind == "bytes" { 256 } else { self.chars.len() + 1 }
    }

    pub fn encode(&self, text: &str, out: &mut Vec<i32>) {
        if self.kind == "bytes" {
            out.extend(text.bytes().map(i32::from));
        } else {
            out.extend(text.chars().map(|c| match self.chars.binary_search(&c) {
                Ok(i) => i as i32 + 1,
                Err(_) => Self::UNKNOWN,
            }));
        }
    }

    /// The text of a sequence of ids (`<unk>` prints as U+FFFD).
    pub fn decode(&self, ids: &[i32]) -> String {
        if self.kind == "bytes" {
            let bytes: Vec<u8> = ids.iter().map(|&i| i.clamp(0, 255) as u8).collect();
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        ids.iter()
            .map(|&i| {
                let i = i as usize;
                if i == 0 { '\u{fffd}' } else { self.chars.get(i - 1).copied().unwrap_or('\u{fffd}') }
            })
            .collect()
    }
}

/// Non-overlapping (or `stride`-spaced) windows of `length` tokens; a short tail is dropped.
pub fn windows(tokens: &[i32], length: usize, stride: usize) -> Vec<i32> {
    let mut out = Vec::new();
    let mut start = 0;
    while start + length <= tokens.len() {
        out.extend_from_slice(&tokens[start..start + length]);
        start += stride;
    }
    out
}

/// The flat feature values of a tabular or image record (pixels as their 0..=255 values).
pub fn raw_features(body: &Body, out: &mut Vec<f32>) {
    match body {
        Body::Features(v) => out.extend_from_slice(v),
        Body::Image { pixels, .. } => out.extend(pixels.iter().map(|&p| f32::from(p))),
        // Invariant: the plan gives text records a window shape, never a feature shape.
        Body::Text(_) => unreachable!("text records are shaped into windows"),
    }
}

/// Per-group affine maps `x ↦ (x - shift) * scale`; a group is one feature (tabular) or one
/// channel (images).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureMap {
    /// Consecutive elements that share a group: 1 for tabular, `H·W` for images.
    pub group_len: usize,
    pub shift: Vec<f32>,
    pub scale: Vec<f32>,
}

impl FeatureMap {
    /// Fits the map on the rows of the training split (`rows` is `n × row_len`).
    pub fn fit(scaling: FeatureScaling, rows: &[f32], row_len: usize, group_len: usize) -> FeatureMap {
        let groups = row_len / group_len.max(1);
        match scaling {
            FeatureScaling::Raw => {
                FeatureMap { group_len, shift: vec![0.0; groups], scale: vec![1.0; groups] }
            }
            FeatureScaling::Scale(f) => {
                FeatureMap { group_len, shift: vec![0.0; groups], scale: vec![f as f32; groups] }
            }
            FeatureScaling::Standardize => {
                let mut sum = vec![0f64; groups];
                let mut sum_sq = vec![0f64; groups];
                let mut count = 0f64;
                for row in rows.chunks(row_len.max(1)) {
                    for (k, v) in row.iter().enumerate() {
                        let g = k / group_len;
                        sum[g] += f64::from(*v);
                        sum_sq[g] += f64::from(*v) * f64::from(*v);
                    }
                    count += 1.0;
                }
                let per_group = count * group_len as f64;
                let mut shift = Vec::with_capacity(groups);
                let mut scale = Vec::with_capacity(groups);
                for g in 0..groups {
                    let mean = if per_group > 0.0 { sum[g] / per_group } else { 0.0 };
                    let var =
                        if per_group > 0.0 { (sum_sq[g] / per_group - mean * mean).max(0.0) } else { 0.0 };
                    // A constant feature keeps scale 1 instead of dividing by zero.
                    let std = var.sqrt();
                    shift.push(mean as f32);
                    scale.push(if std > 1e-12 { (1.0 / std) as f32 } else { 1.0 });
                }
                FeatureMap { group_len, shift, scale }
            }
        }
    }

    pub fn apply(&self, row: &mut [f32]) {
        for (k, v) in row.iter_mut().enumerate() {
            let g = k / self.group_len;
            *v = (*v - self.shift[g]) * self.scale[g];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_vocab_round_trips_and_maps_unknowns_to_zero() {
        let v = Vocab::build(TokenKind::Chars, ["abca"].into_iter());
        assert_eq!(v.size(), 4);
        let mut ids = Vec::new();
        v.encode("cab!", &mut ids);
        assert_eq!(ids, vec![3, 1, 2, 0]);
        assert_eq!(v.decode(&ids[..3]), "cab");
    }

    #[test]
    fn standardisation_uses_the_given_rows() {
        let rows = [1.0, 10.0, 3.0, 10.0];
        let m = FeatureMap::fit(FeatureScaling::Standardize, &rows, 2, 1);
        let mut r = [3.0, 10.0];
        m.apply(&mut r);
        assert_eq!(r, [1.0, 0.0]);
    }

    #[test]
    fn windows_drop_the_tail() {
        assert_eq!(windows(&[1, 2, 3, 4, 5], 2, 2), vec![1, 2, 3, 4]);
        assert_eq!(windows(&[1, 2, 3, 4], 3, 1), vec![1, 2, 3, 2, 3, 4]);
    }
}
