//! Parameters as safetensors files, one tensor per parameter keyed by its path
//! (`blocks.1.attn.q.weight`). Loading checks every parameter is present with its exact shape
//! and dtype and names the path and both shapes otherwise.

use super::{Result, RuntimeError};
use crate::ir::{DType, Graph, ShapeDisplay};
use crate::tensor::Tensor;
use ndarray::ArrayD;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

pub(super) fn save(g: &Graph, values: &[Tensor], path: &Path) -> Result<()> {
    let bytes: Vec<Vec<u8>> = values
        .iter()
        .map(|t| match t {
            Tensor::F32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Tensor::I32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
        .collect();
    let mut views = Vec::new();
    for ((p, t), data) in g.params.iter().zip(values).zip(&bytes) {
        let dtype = match t {
            Tensor::F32(_) => Dtype::F32,
            Tensor::I32(_) => Dtype::I32,
        };
        let view = TensorView::new(dtype, t.shape().to_vec(), data)
            .map_err(|e| RuntimeError(format!("parameter `{}`: {e}", p.path)))?;
        views.push((p.path.clone(), view));
    }
    let out = safetensors::tensor::serialize(views, &None)
        .map_err(|e| RuntimeError(format!("cannot serialise parameters: {e}")))?;
    std::fs::write(path, out).map_err(|e| RuntimeError(format!("cannot write `{}`: {e}", path.display())))
}

pub(super) fn load(g: &Graph, path: &Path) -> Result<Vec<Tensor>> {
    let bytes =
        std::fs::read(path).map_err(|e| RuntimeError(format!("cannot read `{}`: {e}", path.display())))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| RuntimeError(format!("`{}` is not a safetensors file: {e}", path.display())))?;
    let mut out = Vec::new();
    for p in &g.params {
        let view = st.tensor(&p.path).map_err(|_| {
            RuntimeError(format!(
                "weight `{}` is missing from `{}` (expected {})",
                p.path,
                path.display(),
                p.ty
            ))
        })?;
        let want_dtype = match p.ty.dtype {
            DType::F32 => Dtype::F32,
            DType::I32 | DType::Bool => Dtype::I32,
        };
        if view.shape() != p.ty.shape.as_slice() || view.dtype() != want_dtype {
            return Err(RuntimeError(format!(
                "weight `{}` has shape {} ({:?}) in `{}`, but the model expects {}",
                p.path,
                ShapeDisplay(view.shape()),
                view.dtype(),
                path.display(),
                p.ty
            )));
        }
        let words = view.data().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        let shape = p.ty.shape.clone();
        out.push(match p.ty.dtype {
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
