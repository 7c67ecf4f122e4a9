//! Tensors in safetensors files: parameters keyed by their path (`blocks.1.attn.qkv.weight`),
//! and named inputs and outputs for `modelc run`. Reading checks every wanted tensor is present
//! with its exact shape and dtype and names the tensor and both shapes otherwise. Writing is
//! atomic: a temporary file in the same directory, renamed over the target.

use super::{Result, RuntimeError};
use crate::ir::{DType, Graph, ShapeDisplay, TensorType};
use crate::tensor::Tensor;
use ndarray::ArrayD;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::io::Write;
use std::path::Path;

/// Writes named tensors to `path` atomically (bools are stored as i32).
pub fn write_tensors(path: &Path, named: &[(String, &Tensor)]) -> Result<()> {
    let out = serialize_tensors(named, None)?;
    write_atomically(path, &out)
}

/// The safetensors bytes of named tensors, with optional string metadata.
pub fn serialize_tensors(
    named: &[(String, &Tensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = named
        .iter()
        .map(|(_, t)| match t {
            Tensor::F32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Tensor::I32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
        .collect();
    let mut views = Vec::new();
    for ((name, t), data) in named.iter().zip(&bytes) {
        let dtype = match t {
            Tensor::F32(_) => Dtype::F32,
            Tensor::I32(_) => Dtype::I32,
        };
        let view = TensorView::new(dtype, t.shape().to_vec(), data)
            .map_err(|e| RuntimeError(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::tensor::serialize(views, &metadata)
        .map_err(|e| RuntimeError(format!("cannot serialise tensors: {e}")))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`, so
/// a reader (or a crash) never sees a partial file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |e: std::io::Error| RuntimeError(format!("cannot write `{}`: {e}", path.display()));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Reads the tensors `wanted` (name and expected type) from a safetensors file. `what` names
/// the kind of tensor in messages ("weight", "input").
pub fn read_tensors(path: &Path, wanted: &[(String, TensorType)], what: &str) -> Result<Vec<Tensor>> {
    let bytes =
        std::fs::read(path).map_err(|e| RuntimeError(format!("cannot read `{}`: {e}", path.display())))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| RuntimeError(format!("`{}` is not a safetensors file: {e}", path.display())))?;
    let mut out = Vec::new();
    for (name, ty) in wanted {
        let view = st.tensor(name).map_err(|_| {
            let have: Vec<String> = st.names().into_iter().map(|s| format!("`{s}`")).collect();
            RuntimeError(format!(
                "{what} `{name}` is missing from `{}` (expected {ty}; the file has {})",
                path.display(),
                if have.is_empty() { "no tensors".to_string() } else { have.join(", ") }
            ))
        })?;
        let want_dtype = match ty.dtype {
            DType::F32 => Dtype::F32,
            DType::I32 | DType::Bool => Dtype::I32,
        };
        if view.shape() != ty.shape.as_slice() || view.dtype() != want_dtype {
            return Err(RuntimeError(format!(
                "{what} `{name}` has shape {} ({:?}) in `{}`, but the model expects {ty}",
                ShapeDisplay(view.shape()),
                view.dtype(),
                path.display(),
            )));
        }
        let words = view.data().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        let shape = ty.shape.clone();
        out.push(match ty.dtype {
            DType::F32 => Tensor::F32(
                ArrayD::from_shape_vec(shape, words.map(f32::from_le_bytes).collect())
                    .expect("shape checked above"),
            ),
            DType::I32 | DType::Bool => Tensor::I32(
                ArrayD::from_shape_vec(shape, words.map(i32::from_le_bytes).collect())
                    .expect("shape checked above"),
            ),
        });
    }
    Ok(out)
}

pub(super) fn save(g: &Graph, values: &[Tensor], path: &Path) -> Result<()> {
    let named: Vec<(String, &Tensor)> = g.params.iter().map(|p| p.path.clone()).zip(values).collect();
    write_tensors(path, &named)
}

pub(super) fn load(g: &Graph, path: &Path) -> Result<Vec<Tensor>> {
    let wanted: Vec<(String, TensorType)> = g.params.iter().map(|p| (p.path.clone(), p.ty.clone())).collect();
    read_tensors(path, &wanted, "weight")
}
