//! Training checkpoints: one safetensors file per saved step, `checkpoints/step-00000500.safetensors`,
//! holding every parameter and optimizer-state tensor by path (`head.weight`,
//! `head.weight@adam.m`) and, in the safetensors metadata, the run, the step, the position in
//! the data (epoch and batch), the seed, a hash of the sources and the vocabulary of text runs.
//! Files are written atomically (temporary file, fsync, rename), so a killed process never
//! leaves a partial checkpoint under a checkpoint's name; the newest `keep` are kept.

use crate::ir::{Graph, TensorType};
use crate::tensor::Tensor;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "modelc-checkpoint-1";

/// What a checkpoint records besides the tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointMeta {
    pub run: String,
    /// Steps finished.
    pub step: u64,
    /// Where the next step's batch comes from.
    pub epoch: u64,
    pub batch_in_epoch: u64,
    pub seed: u64,
    pub source_hash: String,
    /// The characters of a text vocabulary (ids `1..`), for `generate`.
    pub vocab: Option<String>,
}

impl CheckpointMeta {
    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("run".into(), self.run.clone());
        m.insert("step".into(), self.step.to_string());
        m.insert("epoch".into(), self.epoch.to_string());
        m.insert("batch_in_epoch".into(), self.batch_in_epoch.to_string());
        m.insert("seed".into(), self.seed.to_string());
        m.insert("source_hash".into(), self.source_hash.clone());
        if let Some(v) = &self.vocab {
            m.insert("vocab".into(), serde_json::to_string(v).expect("a string serialises"));
        }
        m
    }

    fn from_map(m: &HashMap<String, String>) -> Result<CheckpointMeta, String> {
        let get = |k: &str| m.get(k).ok_or_else(|| format!("no `{k}` in its metadata"));
        if get("format")? != FORMAT {
            return Err(format!("not a {FORMAT} file"));
        }
        let num = |k: &str| -> Result<u64, String> {
            get(k)?.parse().map_err(|_| format!("bad `{k}` in its metadata"))
        };
        Ok(CheckpointMeta {
            run: get("run")?.clone(),
            step: num("step")?,
            epoch: num("epoch")?,
            batch_in_epoch: num("batch_in_epoch")?,
            seed: num("seed")?,
            source_hash: get("source_hash")?.clone(),
            vocab: match m.get("vocab") {
                Some(v) => {
                    Some(serde_json::from_str(v).map_err(|_| "bad `vocab` in its metadata".to_string())?)
                }
                None => None,
            },
        })
    }
}

/// The file name of the checkpoint after `step` steps.
pub fn file_name(step: u64) -> String {
    format!("step-{step:08}.safetensors")
}

/// Writes a checkpoint into `dir` and deletes all but the newest `keep`; returns its path.
pub fn save(
    dir: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
    keep: usize,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let named: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    let out = crate::runtime::checkpoint::serialize_tensors(&named, Some(meta.to_map())).map_err(|e| e.0)?;
    let path = dir.join(file_name(meta.step));
    crate::runtime::checkpoint::write_atomically(&path, &out).map_err(|e| e.0)?;
    // Keep the newest `keep` checkpoints.
    let mut all = list(dir);
    all.sort();
    let n = all.len();
    for (_, old) in all.into_iter().take(n.saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// The checkpoints in `dir` by step (only complete files carry a checkpoint's name).
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        let step = name.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()?;
        Some((step, e.path()))
    })
    .collect()
}

/// Reads the metadata of a checkpoint file.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let (_, md) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    let m = md.metadata().clone().unwrap_or_default();
    CheckpointMeta::from_map(&m).map_err(|e| format!("`{}` is not a modelc checkpoint: {e}", path.display()))
}

/// The newest checkpoint in `dir` whose metadata reads back, with that metadata.
pub fn latest(dir: &Path) -> Result<Option<(PathBuf, CheckpointMeta)>, String> {
    // Leftover temporary files of a killed writer (`.step-N.safetensors.tmpPID`) are harmless;
    // remove them.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".safetensors.tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut all = list(dir);
    all.sort();
    for (_, p) in all.into_iter().rev() {
        if let Ok(m) = read_meta(&p) {
            return Ok(Some((p, m)));
        }
    }
    Ok(None)
}

/// Loads the tensors `g` needs (its parameters, by path) from checkpoint `path`. Tensors the
/// graph does not need (optimizer state when evaluating) are ignored.
pub fn load(path: &Path, g: &Graph) -> Result<Vec<Tensor>, String> {
    let wanted: Vec<(String, TensorType)> = g.params.iter().map(|p| (p.path.clone(), p.ty.clone())).collect();
    crate::runtime::checkpoint::read_tensors(path, &wanted, "tensor").map_err(|e| e.0)
}
