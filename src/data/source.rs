//! Readers for the source formats: CSV (with header), JSON lines, plain text (whole file, lines
//! or paragraphs) and IDX images, each gzipped or not (detected by the gzip magic bytes), over
//! one file or a wildcard. Readers never judge records: unreadable lines become
//! [`RawFields::Unparsed`] for validation to count; only unreadable files are errors.

use super::DataError;
use super::glob;
use super::plan::{SourceFormat, SourceSpec, TextUnit};
use super::record::{Origin, RawFields, RawRecord};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The files a run has read; a record's [`Origin`] indexes into it.
#[derive(Clone, Debug, Default)]
pub struct FileTable {
    pub paths: Vec<PathBuf>,
    /// The header of each CSV file (`None` for other formats).
    pub headers: Vec<Option<Vec<String>>>,
}

impl FileTable {
    fn add(&mut self, path: &Path, header: Option<Vec<String>>) -> u32 {
        self.paths.push(path.to_path_buf());
        self.headers.push(header);
        self.paths.len() as u32 - 1
    }

    /// `file:line` of a record.
    pub fn locate(&self, origin: Origin) -> String {
        let path = self.paths.get(origin.file as usize).map_or_else(String::new, |p| p.display().to_string());
        format!("{path}:{}", origin.line)
    }
}

/// Reads every record of one source; returns the bytes read (after decompression).
pub fn read_source(
    spec: &SourceSpec,
    source: usize,
    files: &mut FileTable,
    out: &mut Vec<RawRecord>,
) -> Result<u64, DataError> {
    let mut bytes_read = 0u64;
    match &spec.format {
        SourceFormat::Csv { path, .. } => {
            for p in glob::expand(path)? {
                let bytes = read_file(&p)?;
                bytes_read += bytes.len() as u64;
                read_csv(&p, &bytes, source, files, out)?;
            }
        }
        SourceFormat::Jsonl { path, .. } => {
            for p in glob::expand(path)? {
                let bytes = read_file(&p)?;
                bytes_read += bytes.len() as u64;
                let file = files.add(&p, None);
                read_jsonl(&bytes, source, file, out);
            }
        }
        SourceFormat::Text { path, unit } => {
            for p in glob::expand(path)? {
                let bytes = read_file(&p)?;
                bytes_read += bytes.len() as u64;
                let file = files.add(&p, None);
                read_text(&bytes, *unit, source, file, out);
            }
        }
        SourceFormat::Idx { images, labels } => {
            let image_paths = glob::expand(images)?;
            let label_paths = match labels {
                Some(l) => glob::expand(l)?.into_iter().map(Some).collect(),
                None => vec![None; image_paths.len()],
            };
            if label_paths.len() != image_paths.len() {
                return Err(DataError::format(
                    images,
                    format!("{} image files but {} label files", image_paths.len(), label_paths.len()),
                ));
            }
            for (ip, lp) in image_paths.iter().zip(&label_paths) {
                bytes_read += read_idx(ip, lp.as_deref(), source, files, out)?;
            }
        }
    }
    Ok(bytes_read)
}

/// The whole file, gunzipped when it starts with the gzip magic bytes.
pub fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, &e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("truncated or corrupt gzip data ({e})")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn read_csv(
    path: &Path,
    bytes: &[u8],
    source: usize,
    files: &mut FileTable,
    out: &mut Vec<RawRecord>,
) -> Result<(), DataError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| DataError::format(path, format!("cannot read the CSV header ({e})")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect::<Vec<_>>();
    if header.iter().all(String::is_empty) {
        return Err(DataError::format(path, "the CSV file has no header row"));
    }
    let file = files.add(path, Some(header));
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line());
                let cells: Result<Vec<String>, _> =
                    record.iter().map(|c| std::str::from_utf8(c).map(|s| s.trim().to_string())).collect();
                let fields = match cells {
                    Ok(cells) => RawFields::Row(cells),
                    Err(_) => RawFields::Unparsed {
                        text: String::from_utf8_lossy(record.as_slice()).into_owned(),
                        why: "not UTF-8".into(),
                    },
                };
                out.push(RawRecord { source, origin: Origin { file, line }, fields });
            }
            Err(e) => return Err(DataError::format(path, format!("line {line}: {e}"))),
        }
    }
    Ok(())
}

fn read_jsonl(bytes: &[u8], source: usize, file: u32, out: &mut Vec<RawRecord>) {
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let origin = Origin { file, line: i as u64 + 1 };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let fields = match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(map)) => RawFields::Json(map),
            Ok(_) => RawFields::Unparsed {
                text: String::from_utf8_lossy(line).into_owned(),
                why: "not a JSON object".into(),
            },
            Err(e) => {
                RawFields::Unparsed { text: String::from_utf8_lossy(line).into_owned(), why: e.to_string() }
            }
        };
        out.push(RawRecord { source, origin, fields });
    }
}

fn read_text(bytes: &[u8], unit: TextUnit, source: usize, file: u32, out: &mut Vec<RawRecord>) {
    let decode = |chunk: &[u8], line: u64, out: &mut Vec<RawRecord>| {
        let fields = match std::str::from_utf8(chunk) {
            Ok(s) => RawFields::Text(s.replace("\r\n", "\n")),
            Err(e) => RawFields::Unparsed {
                text: String::from_utf8_lossy(chunk).into_owned(),
                why: format!("not UTF-8 ({e})"),
            },
        };
        out.push(RawRecord { source, origin: Origin { file, line }, fields });
    };
    match unit {
        TextUnit::Whole => decode(bytes, 1, out),
        TextUnit::Lines => {
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    decode(line, i as u64 + 1, out);
                }
            }
        }
        TextUnit::Paragraphs => {
            // A paragraph is a run of non-blank lines; blank lines separate paragraphs.
            let mut start: Option<(usize, u64)> = None;
            let mut offset = 0usize;
            let mut end = 0usize;
            for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                let blank = line.iter().all(u8::is_ascii_whitespace);
                if blank {
                    if let Some((s, l)) = start.take() {
                        decode(&bytes[s..end], l, out);
                    }
                } else {
                    if start.is_none() {
                        start = Some((offset, i as u64 + 1));
                    }
                    end = offset + line.len();
                }
                offset += line.len() + 1;
            }
            if let Some((s, l)) = start {
                decode(&bytes[s..end], l, out);
            }
        }
    }
}

/// Parses an IDX header: `0 0 type ndims` then `ndims` big-endian u32 sizes.
fn idx_header(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, usize), DataError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::format(path, format!("IDX element type 0x{:02x} is not u8 (0x08)", bytes[2])));
    }
    let ndims = bytes[3] as usize;
    let data_start = 4 + 4 * ndims;
    if bytes.len() < data_start {
        return Err(DataError::format(path, "truncated IDX header"));
    }
    let dims = (0..ndims)
        .map(|d| {
            let b = &bytes[4 + 4 * d..8 + 4 * d];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect::<Vec<_>>();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(expected) = expected else {
        return Err(DataError::format(
            path,
            format!("IDX header {dims:?} describes more data than fits in memory"),
        ));
    };
    let found = bytes.len() - data_start;
    if found < expected {
        return Err(DataError::format(
            path,
            format!("truncated IDX data: the header {dims:?} needs {expected} bytes, the file has {found}"),
        ));
    }
    Ok((dims, data_start))
}

fn read_idx(
    images: &Path,
    labels: Option<&Path>,
    source: usize,
    files: &mut FileTable,
    out: &mut Vec<RawRecord>,
) -> Result<u64, DataError> {
    let image_bytes = read_file(images)?;
    let (dims, start) = idx_header(images, &image_bytes)?;
    let shape = match dims.as_slice() {
        [_, h, w] => [1, *h, *w],
        [_, c, h, w] => [*c, *h, *w],
        _ => {
            return Err(DataError::format(
                images,
                format!("IDX images need 3 or 4 dimensions, found {dims:?}"),
            ));
        }
    };
    let count = dims[0];
    let mut total = image_bytes.len() as u64;
    let label_values = match labels {
        Some(lp) => {
            let label_bytes = read_file(lp)?;
            total += label_bytes.len() as u64;
            let (ldims, lstart) = idx_header(lp, &label_bytes)?;
            if ldims.len() != 1 || ldims[0] != count {
                return Err(DataError::format(
                    lp,
                    format!(
                        "{} labels for {count} images in `{}`",
                        ldims.first().unwrap_or(&0),
                        images.display()
                    ),
                ));
            }
            Some(label_bytes[lstart..lstart + count].to_vec())
        }
        None => None,
    };
    let file = files.add(images, None);
    let size = shape.iter().product::<usize>();
    for i in 0..count {
        let pixels = image_bytes[start + i * size..start + (i + 1) * size].to_vec();
        let label = label_values.as_ref().map(|l| i32::from(l[i]));
        out.push(RawRecord {
            source,
            origin: Origin { file, line: i as u64 + 1 },
            fields: RawFields::Image { shape, pixels, label },
        });
    }
    Ok(total)
}
