//! Host tensors: how values cross the library boundary (inputs, outputs, parameters, batches).
//! `bool` tensors travel as `I32` holding 0 or 1, matching their run-time layout.

use crate::ir::{DType, TensorType};
use ndarray::ArrayD;

#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I32(ArrayD<i32>),
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::I32(a) => a.shape(),
        }
    }

    /// The storage dtype (`I32` for bools).
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::I32(_) => DType::I32,
        }
    }

    /// Whether the tensor can be passed where `ty` is expected (bools accept `I32`).
    pub fn fits(&self, ty: &TensorType) -> bool {
        let dt_ok = match ty.dtype {
            DType::F32 => matches!(self, Tensor::F32(_)),
            DType::I32 | DType::Bool => matches!(self, Tensor::I32(_)),
        };
        dt_ok && self.shape() == ty.shape.as_slice()
    }

    pub fn zeros(ty: &TensorType) -> Tensor {
        match ty.dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(ty.shape.clone())),
            DType::I32 | DType::Bool => Tensor::I32(ArrayD::zeros(ty.shape.clone())),
        }
    }

    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            Tensor::I32(_) => None,
        }
    }

    pub fn as_i32(&self) -> Option<&ArrayD<i32>> {
        match self {
            Tensor::I32(a) => Some(a),
            Tensor::F32(_) => None,
        }
    }
}
