//! Validation (raw record → typed [`Record`], or a reason to drop it) and text cleaning
//! (normalisation, whitespace and control cleanup, length, repetition and language filters).
//! Reasons are stable snake_case words: they key the report and the files of removed records.

use super::DataError;
use super::glob::glob_match;
use super::plan::{Check, CleanStep, DataPlan, NormalForm, SourceFormat};
use super::record::{Body, RawFields, RawRecord, Record};
use super::source::FileTable;
use std::collections::HashMap;
use unicode_normalization::UnicodeNormalization;

/// Why a record was dropped, and a detail for the removed-records file.
#[derive(Clone, Debug, PartialEq)]
pub struct Invalid {
    pub reason: &'static str,
    pub detail: String,
}

fn invalid(reason: &'static str, detail: impl Into<String>) -> Invalid {
    Invalid { reason, detail: detail.into() }
}

/// Column positions of one CSV file, resolved from its header.
struct CsvLayout {
    width: usize,
    label: Option<usize>,
    id: Option<usize>,
    /// Feature column index and name.
    features: Vec<(usize, String)>,
    /// `range` checks resolved to feature positions once per file: (position, min, max).
    ranges: Vec<(usize, f64, f64)>,
}

/// Turns raw records into typed ones for one plan; caches CSV layouts per file.
pub struct Validator<'p> {
    plan: &'p DataPlan,
    layouts: HashMap<u32, CsvLayout>,
}

impl<'p> Validator<'p> {
    pub fn new(plan: &'p DataPlan) -> Validator<'p> {
        Validator { plan, layouts: HashMap::new() }
    }

    /// `Ok(Err(..))` is a dropped record; `Err` a file-level error (a declared column is absent).
    pub fn validate(
        &mut self,
        raw: RawRecord,
        files: &FileTable,
    ) -> Result<Result<Record, Invalid>, DataError> {
        let spec = &self.plan.sources[raw.source];
        let converted = match (&spec.format, raw.fields) {
            (_, RawFields::Unparsed { why, .. }) => Err(invalid("malformed_row", why)),
            (SourceFormat::Csv { label, features, id, .. }, RawFields::Row(cells)) => {
                let layout = match self.layouts.entry(raw.origin.file) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(csv_layout(files, raw.origin.file, label, features, id, &self.plan.checks)?)
                    }
                };
                csv_record(layout, &cells, self.plan).map(|(id, label, body)| Record {
                    source: raw.source,
                    origin: raw.origin,
                    id,
                    label,
                    body,
                })
            }
            (SourceFormat::Jsonl { text, features, label, id, .. }, RawFields::Json(map)) => {
                json_record(&map, text.as_deref(), features, label.as_deref(), id.as_deref(), self.plan).map(
                    |(id, label, body)| Record { source: raw.source, origin: raw.origin, id, label, body },
                )
            }
            (SourceFormat::Text { .. }, RawFields::Text(t)) => Ok(Record {
                source: raw.source,
                origin: raw.origin,
                id: None,
                label: None,
                body: Body::Text(t),
            }),
            (SourceFormat::Idx { .. }, RawFields::Image { shape, pixels, label }) => {
                image_record(shape, pixels, label, self.plan).map(|(label, body)| Record {
                    source: raw.source,
                    origin: raw.origin,
                    id: None,
                    label,
                    body,
                })
            }
            // Readers produce exactly the raw form of their own format.
            (_, other) => unreachable!("reader produced {other:?} for {:?}", spec.format),
        };
        Ok(converted)
    }
}

fn csv_layout(
    files: &FileTable,
    file: u32,
    label: &Option<String>,
    features: &[String],
    id: &Option<String>,
    checks: &[Check],
) -> Result<CsvLayout, DataError> {
    let path = &files.paths[file as usize];
    // Invariant: CSV readers record a header for each file they add.
    let header = files.headers[file as usize].as_ref().expect("csv file has a header");
    let find = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            DataError::format(path, format!("column `{name}` is not in the header ({})", header.join(",")))
        })
    };
    let label = label.as_deref().map(find).transpose()?;
    let id = id.as_deref().map(find).transpose()?;
    let mut cols = Vec::new();
    for (i, h) in header.iter().enumerate() {
        if Some(i) == label || Some(i) == id {
            continue;
        }
        if features.is_empty() || features.iter().any(|p| glob_match(p, h)) {
            cols.push((i, h.clone()));
        }
    }
    for p in features {
        if !header.iter().any(|h| glob_match(p, h)) {
            return Err(DataError::format(path, format!("no column matches feature `{p}`")));
        }
    }
    let mut ranges = Vec::new();
    for check in checks {
        if let Check::Range { pattern, min, max } = check {
            for (k, (_, name)) in cols.iter().enumerate() {
                if glob_match(pattern, name) {
                    ranges.push((k, *min, *max));
                }
            }
        }
    }
    Ok(CsvLayout { width: header.len(), label, id, features: cols, ranges })
}

type Converted = (Option<String>, Option<i32>, Body);

fn csv_record(layout: &CsvLayout, cells: &[String], plan: &DataPlan) -> Result<Converted, Invalid> {
    if cells.len() != layout.width {
        return Err(invalid(
            "malformed_row",
            format!("{} fields, the header has {}", cells.len(), layout.width),
        ));
    }
    let label = match layout.label {
        Some(i) => Some(parse_label(&cells[i])?),
        None => None,
    };
    let id = match layout.id {
        Some(i) if cells[i].is_empty() => return Err(invalid("missing_field", "empty id")),
        Some(i) => Some(cells[i].clone()),
        None => None,
    };
    let mut values = Vec::with_capacity(layout.features.len());
    for (i, name) in &layout.features {
        values.push(parse_feature(name, &cells[*i])?);
    }
    for &(k, min, max) in &layout.ranges {
        let v = f64::from(values[k]);
        if v < min || v > max {
            let name = &layout.features[k].1;
            return Err(invalid("out_of_range", format!("`{name}` = {v} is outside [{min}, {max}]")));
        }
    }
    check_label(label, plan)?;
    Ok((id, label, Body::Features(values)))
}

fn parse_label(cell: &str) -> Result<i32, Invalid> {
    if cell.is_empty() {
        return Err(invalid("missing_field", "empty label"));
    }
    cell.parse::<i32>().map_err(|_| invalid("wrong_type", format!("label `{cell}` is not an integer")))
}

fn parse_feature(name: &str, cell: &str) -> Result<f32, Invalid> {
    if cell.is_empty() {
        return Err(invalid("missing_field", format!("`{name}` is empty")));
    }
    let v = cell
        .parse::<f32>()
        .map_err(|_| invalid("wrong_type", format!("`{name}` = `{cell}` is not a number")))?;
    if !v.is_finite() {
        return Err(invalid("not_finite", format!("`{name}` = `{cell}`")));
    }
    Ok(v)
}

fn check_features(names: &[&str], values: &[f32], plan: &DataPlan) -> Result<(), Invalid> {
    for check in &plan.checks {
        if let Check::Range { pattern, min, max } = check {
            for (name, v) in names.iter().zip(values) {
                let v = f64::from(*v);
                if glob_match(pattern, name) && (v < *min || v > *max) {
                    return Err(invalid("out_of_range", format!("`{name}` = {v} is outside [{min}, {max}]")));
                }
            }
        }
    }
    Ok(())
}

fn check_label(label: Option<i32>, plan: &DataPlan) -> Result<(), Invalid> {
    for check in &plan.checks {
        if let (Check::Classes(n), Some(l)) = (check, label)
            && !(0..*n).contains(&i64::from(l))
        {
            return Err(invalid("bad_label", format!("label {l} is not in 0..{n}")));
        }
    }
    Ok(())
}

fn json_record(
    map: &serde_json::Map<String, serde_json::Value>,
    text: Option<&str>,
    features: &[String],
    label: Option<&str>,
    id: Option<&str>,
    plan: &DataPlan,
) -> Result<Converted, Invalid> {
    use serde_json::Value;
    let field = |name: &str| match map.get(name) {
        None | Some(Value::Null) => Err(invalid("missing_field", format!("no field `{name}`"))),
        Some(v) => Ok(v),
    };
    let label = match label {
        Some(name) => match field(name)? {
            Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
                Some(i) => Some(i),
                None => return Err(invalid("wrong_type", format!("`{name}` = {n} is not an integer"))),
            },
            Value::String(s) => Some(parse_label(s)?),
            v => return Err(invalid("wrong_type", format!("`{name}` = {v} is not an integer"))),
        },
        None => None,
    };
    let id = match id {
        Some(name) => Some(match field(name)? {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }),
        None => None,
    };
    check_label(label, plan)?;
    if let Some(name) = text {
        return match field(name)? {
            Value::String(s) => Ok((id, label, Body::Text(s.clone()))),
            v => Err(invalid("wrong_type", format!("`{name}` = {v} is not a string"))),
        };
    }
    let mut values = Vec::with_capacity(features.len());
    for name in features {
        let v = match field(name)? {
            Value::Number(n) => n.as_f64().map(|f| f as f32),
            Value::String(s) => Some(parse_feature(name, s)?),
            _ => None,
        };
        match v {
            Some(v) if v.is_finite() => values.push(v),
            Some(v) => return Err(invalid("not_finite", format!("`{name}` = {v}"))),
            None => return Err(invalid("wrong_type", format!("`{name}` is not a number"))),
        }
    }
    let names: Vec<&str> = features.iter().map(String::as_str).collect();
    check_features(&names, &values, plan)?;
    Ok((id, label, Body::Features(values)))
}

fn image_record(
    shape: [usize; 3],
    pixels: Vec<u8>,
    label: Option<i32>,
    plan: &DataPlan,
) -> Result<(Option<i32>, Body), Invalid> {
    if let Some(want) = plan.image_shape()
        && want != shape
    {
        return Err(invalid("bad_shape", format!("image shape {shape:?}, expected {want:?}")));
    }
    check_label(label, plan)?;
    Ok((label, Body::Image { shape, pixels }))
}

/// Applies one cleaning step to a text: `Ok(Some(new text))` for a transform, `Ok(None)` for a
/// filter that keeps the record, `Err` for a filter that drops it.
pub fn clean_text(step: &CleanStep, text: &str) -> Result<Option<String>, Invalid> {
    match step {
        CleanStep::Normalize(NormalForm::Nfc) => Ok(Some(text.nfc().collect())),
        CleanStep::Normalize(NormalForm::Nfkc) => Ok(Some(text.nfkc().collect())),
        CleanStep::StripControl => {
            Ok(Some(text.chars().filter(|c| !c.is_control() || *c == '\n' || *c == '\t').collect()))
        }
        CleanStep::CollapseWhitespace => Ok(Some(collapse_whitespace(text))),
        CleanStep::Lowercase => Ok(Some(text.to_lowercase())),
        CleanStep::MinChars(n) => {
            let len = text.chars().count();
            if len < *n { Err(invalid("too_short", format!("{len} chars < {n}"))) } else { Ok(None) }
        }
        CleanStep::MaxChars(n) => {
            let len = text.chars().count();
            if len > *n { Err(invalid("too_long", format!("{len} chars > {n}"))) } else { Ok(None) }
        }
        CleanStep::MinWords(n) => {
            let len = text.split_whitespace().count();
            if len < *n { Err(invalid("too_few_words", format!("{len} words < {n}"))) } else { Ok(None) }
        }
        CleanStep::MaxDupLineFrac(max) => {
            let f = dup_line_fraction(text);
            if f > *max {
                Err(invalid("repeated_lines", format!("{f:.3} of lines repeat > {max}")))
            } else {
                Ok(None)
            }
        }
        CleanStep::MaxTopNgramFrac { n, frac } => {
            let f = top_ngram_fraction(text, *n);
            if f > *frac {
                Err(invalid("repeated_ngram", format!("top {n}-gram covers {f:.3} of chars > {frac}")))
            } else {
                Ok(None)
            }
        }
        CleanStep::English { min_stopword_frac, min_words } => {
            let (stop, total) = stopword_counts(text);
            let f = if total == 0 { 0.0 } else { stop as f64 / total as f64 };
            if total >= *min_words && f < *min_stopword_frac {
                Err(invalid("not_english", format!("{f:.3} stop words < {min_stopword_frac}")))
            } else {
                Ok(None)
            }
        }
    }
}

/// Runs of spaces and tabs become one space, lines are trimmed, runs of blank lines become one,
/// and the text is trimmed; line breaks inside a paragraph are kept.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(&words.join(" "));
    }
    out
}

/// Fraction of non-empty lines that repeat an earlier line of the same text.
pub fn dup_line_fraction(text: &str) -> f64 {
    let mut seen = std::collections::HashSet::new();
    let (mut lines, mut dups) = (0usize, 0usize);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        lines += 1;
        if !seen.insert(line) {
            dups += 1;
        }
    }
    if lines == 0 { 0.0 } else { dups as f64 / lines as f64 }
}

/// Gopher's repetition measure: the characters covered by the most frequent word n-gram
/// (occurrences × its length in characters) over the characters of all words.
pub fn top_ngram_fraction(text: &str, n: usize) -> f64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < n + 1 || n == 0 {
        return 0.0;
    }
    let total: usize = words.iter().map(|w| w.chars().count()).sum();
    let mut counts: HashMap<&[&str], usize> = HashMap::new();
    for g in words.windows(n) {
        *counts.entry(g).or_default() += 1;
    }
    let top = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(g, c)| c * g.iter().map(|w| w.chars().count()).sum::<usize>())
        .max()
        .unwrap_or(0);
    if total == 0 { 0.0 } else { (top as f64 / total as f64).min(1.0) }
}

/// Common English function words (the language filter counts how many words are among them).
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by",
    "can", "could", "did", "do", "for", "from", "had", "has", "have", "he", "her", "him", "his", "i", "if",
    "in", "into", "is", "it", "its", "me", "more", "my", "no", "not", "of", "on", "one", "or", "our", "she",
    "so", "some", "than", "that", "the", "their", "them", "then", "there", "they", "this", "to", "up", "us",
    "was", "we", "were", "what", "when", "which", "who", "will", "with", "would", "you", "your",
];

/// (stop words, words) of a text; words are lowercased and stripped of punctuation.
pub fn stopword_counts(text: &str) -> (usize, usize) {
    let (mut stop, mut total) = (0, 0);
    for w in text.split_whitespace() {
        let w = w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        if w.is_empty() {
            continue;
        }
        total += 1;
        if STOP_WORDS.binary_search(&w.as_str()).is_ok() {
            stop += 1;
        }
    }
    (stop, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn repetition_measures() {
        assert_eq!(dup_line_fraction("a\nb\na\na"), 0.5);
        assert!(top_ngram_fraction("buy now buy now buy now buy now", 2) > 0.9);
        assert!(top_ngram_fraction("it is a truth universally acknowledged that a man", 2) < 0.01);
        assert_eq!(collapse_whitespace("  a \t b\n\n\n c  \n"), "a b\n\nc");
    }

    #[test]
    fn english_filter() {
        let step = CleanStep::English { min_stopword_frac: 0.1, min_words: 5 };
        assert!(clean_text(&step, "It is a truth universally acknowledged, that a single man").is_ok());
        assert!(clean_text(&step, "Lorem ipsum dolor sit amet consectetur adipiscing elit").is_err());
    }
}
