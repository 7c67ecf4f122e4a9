//! Interpreter values: one ndarray per node, typed by the node's dtype. Floats are held in
//! the evaluation element type `E` (f32 or f64), ints as i32 and bools as `bool`, so an op
//! cannot confuse a bool with an int the way the 32-bit run-time layout could.

use super::float::Float;
use crate::ir::{DType, TensorType};
use crate::tensor::Tensor;
use ndarray::ArrayD;

/// The value of one node. `Float` holds the IR's `f32` tensors, computed in `E`.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<E> {
    Float(ArrayD<E>),
    Int(ArrayD<i32>),
    Bool(ArrayD<bool>),
}

impl<E: Float> Value<E> {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Float(a) => a.shape(),
            Value::Int(a) => a.shape(),
            Value::Bool(a) => a.shape(),
        }
    }

    /// The IR dtype this value has.
    pub fn dtype(&self) -> DType {
        match self {
            Value::Float(_) => DType::F32,
            Value::Int(_) => DType::I32,
            Value::Bool(_) => DType::Bool,
        }
    }

    /// Whether the value has exactly the type `ty`.
    pub fn fits(&self, ty: &TensorType) -> bool {
        self.dtype() == ty.dtype && self.shape() == ty.shape.as_slice()
    }

    pub fn as_float(&self) -> Option<&ArrayD<E>> {
        match self {
            Value::Float(a) => Some(a),
            Value::Int(_) | Value::Bool(_) => None,
        }
    }

    pub fn as_int(&self) -> Option<&ArrayD<i32>> {
        match self {
            Value::Int(a) => Some(a),
            Value::Float(_) | Value::Bool(_) => None,
        }
    }

    pub fn as_bool(&self) -> Option<&ArrayD<bool>> {
        match self {
            Value::Bool(a) => Some(a),
            Value::Float(_) | Value::Int(_) => None,
        }
    }

    /// The host tensor: floats rounded to f32, bools as 0/1 in `I32`.
    pub fn to_tensor(&self) -> Tensor {
        match self {
            Value::Float(a) => Tensor::F32(a.mapv(E::to_f32)),
            Value::Int(a) => Tensor::I32(a.clone()),
            Value::Bool(a) => Tensor::I32(a.mapv(i32::from)),
        }
    }

    /// Converts a host tensor that is to have dtype `dtype`. `Bool` expects an `I32` tensor
    /// of 0s and 1s. `None` if the storage does not match the dtype or a bool is not 0/1.
    pub fn from_tensor(t: &Tensor, dtype: DType) -> Option<Value<E>> {
        match (dtype, t) {
            (DType::F32, Tensor::F32(a)) => Some(Value::Float(a.mapv(E::from_f32))),
            (DType::I32, Tensor::I32(a)) => Some(Value::Int(a.clone())),
            (DType::Bool, Tensor::I32(a)) => {
                if a.iter().all(|&v| v == 0 || v == 1) {
                    Some(Value::Bool(a.mapv(|v| v != 0)))
                } else {
                    None
                }
            }
            (DType::F32, Tensor::I32(_)) | (DType::I32 | DType::Bool, Tensor::F32(_)) => None,
        }
    }
}

/// Writes a dtype and shape as the IR does (`f32[2, 3]`).
pub(crate) fn describe(dtype: DType, shape: &[usize]) -> String {
    TensorType::new(dtype, shape.to_vec()).to_string()
}
