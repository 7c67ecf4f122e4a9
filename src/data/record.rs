//! Records as they flow through a pipeline: raw records straight from a file, and validated
//! [`Record`]s with a typed body. Each keeps its origin (`file:line`) so a dropped record can be
//! reported and written aside.

use std::fmt;

/// Where a record came from: an index into the run's file table and a 1-based line (text, CSV,
/// JSON lines) or record number (IDX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: u32,
    pub line: u64,
}

/// A record as read, before validation gives it a type.
#[derive(Clone, Debug)]
pub struct RawRecord {
    pub source: usize,
    pub origin: Origin,
    pub fields: RawFields,
}

#[derive(Clone, Debug)]
pub enum RawFields {
    /// A CSV row; the header belongs to the source's file.
    Row(Vec<String>),
    /// A line that could not be read as a record at all (bad quoting, not JSON, bad UTF-8).
    Unparsed {
        text: String,
        why: String,
    },
    Json(serde_json::Map<String, serde_json::Value>),
    Text(String),
    Image {
        shape: [usize; 3],
        pixels: Vec<u8>,
        label: Option<i32>,
    },
}

impl RawFields {
    /// A one-line rendering for files of removed records.
    pub fn describe(&self) -> String {
        match self {
            RawFields::Row(cells) => cells.join(","),
            RawFields::Unparsed { text, .. } => text.clone(),
            RawFields::Json(m) => serde_json::Value::Object(m.clone()).to_string(),
            RawFields::Text(t) => t.clone(),
            RawFields::Image { shape, label, .. } => format!("image {shape:?} label {label:?}"),
        }
    }
}

/// A validated record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Index of the source in the plan.
    pub source: usize,
    pub origin: Origin,
    pub id: Option<String>,
    pub label: Option<i32>,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Text(String),
    Features(Vec<f32>),
    /// `[C, H, W]` pixels, row-major, 0..=255.
    Image {
        shape: [usize; 3],
        pixels: Vec<u8>,
    },
}

impl Body {
    /// The bytes that identify the body for exact deduplication.
    pub fn hash_bytes(&self) -> Vec<u8> {
        match self {
            Body::Text(t) => t.as_bytes().to_vec(),
            Body::Features(f) => f.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Body::Image { pixels, .. } => pixels.clone(),
        }
    }

    /// Size in bytes of the body as read, for throughput figures.
    pub fn byte_len(&self) -> usize {
        match self {
            Body::Text(t) => t.len(),
            Body::Features(f) => f.len() * 4,
            Body::Image { pixels, .. } => pixels.len(),
        }
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Text(t) => f.write_str(t),
            Body::Features(v) => {
                let cells: Vec<String> = v.iter().map(ToString::to_string).collect();
                f.write_str(&cells.join(","))
            }
            Body::Image { shape, .. } => write!(f, "image {shape:?}"),
        }
    }
}
