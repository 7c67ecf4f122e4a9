//! The kernel description: what the scheduler hands to the JIT. A [`LoopKernel`] is a loop
//! nest `for row in outer { for pass in passes { for j in 0..inner { ... } } }` over planned
//! buffers, with an SSA list of scalar expressions evaluated per element; a [`MatMulKernel`] is a
//! strided batched GEMM with an optional [`LoopKernel`] epilogue over its output rows.
//!
//! **Invariant:** a kernel description refers to buffers only by parameter position
//! (`0..num_buffers`), never by global buffer id, so two structurally identical kernels have
//! equal descriptions and the JIT compiles them once (the description is the cache key).

use crate::ir::{BinaryOp, DType, NodeId, ReduceOp, UnaryOp};
use std::fmt;

/// Handle of a planned buffer in a [`super::Schedule`]; prints as `b3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// Index of an expression in [`LoopKernel::exprs`].
pub type ExprId = u32;

/// An affine map from the loop index to an element offset (in elements, not bytes):
/// `offset + sum(row_coord[d] * outer[d]) + j * inner`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub offset: i64,
    pub outer: Vec<i64>,
    pub inner: i64,
}

/// One bounds-checked index of an [`Expr::GatherLoad`]: `index` (an i32 expression) selects
/// one of `rows` rows `stride` elements apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Guard {
    pub index: ExprId,
    pub rows: u32,
    pub stride: i64,
}

/// The reduction a row-scalar slot computes over the inner loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
    /// Index (i32) of the first maximum.
    ArgMax,
}

impl From<ReduceOp> for ReduceKind {
    fn from(op: ReduceOp) -> ReduceKind {
        match op {
            ReduceOp::Sum => ReduceKind::Sum,
            ReduceOp::Max => ReduceKind::Max,
            ReduceOp::Min => ReduceKind::Min,
        }
    }
}

/// One scalar expression, evaluated at every `(row, j)` of a pass. Operands are earlier
/// expressions. `Bool` values are i32 0 / 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// A constant; `bits` is the `f64` bit pattern (so the description can be hashed).
    Const {
        bits: u64,
        dtype: DType,
    },
    /// `buf[access]`.
    Load {
        buf: u32,
        dtype: DType,
        access: Access,
    },
    /// `buf[access + sum(g.index * g.stride)]` when every guard's `0 <= g.index < g.rows`,
    /// else 0 (embedding lookups: one guard on the looked-up row; zero padding: one guard per
    /// padded axis).
    GatherLoad {
        buf: u32,
        dtype: DType,
        access: Access,
        guards: Vec<Guard>,
    },
    /// The affine index itself as i32 (iota).
    Index {
        access: Access,
    },
    /// `random_uniform_value(key, stream, linear)` with `linear` given by `access`.
    Random {
        key: ExprId,
        stream: u32,
        access: Access,
    },
    /// The value of reduction slot `slot` for the current row (computed in an earlier pass).
    RowScalar {
        slot: u32,
    },
    Unary {
        op: UnaryOp,
        x: ExprId,
    },
    Binary {
        op: BinaryOp,
        a: ExprId,
        b: ExprId,
    },
    Select {
        cond: ExprId,
        a: ExprId,
        b: ExprId,
    },
    Cast {
        to: DType,
        x: ExprId,
    },
}

/// A row reduction: slot `i` of the kernel is `reductions[i]` applied to `value` over the inner
/// loop of pass `pass`; later passes read it as [`Expr::RowScalar`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reduction {
    pub kind: ReduceKind,
    pub value: ExprId,
    pub pass: u32,
}

/// What a store writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StoreSource {
    /// One element per `(row, j)`.
    Elem(ExprId),
    /// The row-scalar slot, once per row after its pass (the access ignores `j`).
    Slot(u32),
    /// The running (inclusive) sum of the value along `j` (cumsum).
    ScanSum(ExprId),
    /// `buf[access + index * row_stride] += value` when `0 <= index < rows` (scatter_add).
    AddIndirect { value: ExprId, index: ExprId, rows: u32, row_stride: i64 },
    /// Indices of the `k` largest values along `j`, largest first, ties to the lower index;
    /// element `t` goes to `access + t * out_stride` with the access's `j` term ignored.
    TopK { value: ExprId, k: u32, out_stride: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Store {
    pub buf: u32,
    pub dtype: DType,
    pub access: Access,
    pub source: StoreSource,
    pub pass: u32,
}

/// How the executor may split the outer range over threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The range is over rows (`0..product(outer)`).
    Rows,
    /// There is one row; the range is over `j` (flat elementwise kernels).
    Elements,
    /// Rows, but the whole range must run on one thread (scatter-add accumulates across rows).
    Serial,
}

/// A fused loop nest. See the module docs for the loop structure.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoopKernel {
    /// Outer dimensions (row-major); rows are numbered over their product.
    pub outer: Vec<usize>,
    pub inner: usize,
    pub split: Split,
    pub num_buffers: u32,
    pub exprs: Vec<Expr>,
    /// Result dtype of each expression (parallel to `exprs`).
    pub types: Vec<DType>,
    pub reductions: Vec<Reduction>,
    pub stores: Vec<Store>,
    pub passes: u32,
}

impl Expr {
    /// The expressions this one reads.
    pub fn operands(&self) -> Vec<ExprId> {
        match self {
            Expr::Const { .. } | Expr::Load { .. } | Expr::Index { .. } | Expr::RowScalar { .. } => vec![],
            Expr::GatherLoad { guards, .. } => guards.iter().map(|g| g.index).collect(),
            Expr::Random { key, .. } => vec![*key],
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => vec![*x],
            Expr::Binary { a, b, .. } => vec![*a, *b],
            Expr::Select { cond, a, b } => vec![*cond, *a, *b],
        }
    }
}

impl LoopKernel {
    /// Whether `pred` holds for `e` or for any expression `e` reads, directly or not.
    pub fn any_below(&self, e: ExprId, pred: impl Fn(ExprId) -> bool) -> bool {
        let mut stack = vec![e];
        let mut seen = std::collections::HashSet::new();
        while let Some(y) = stack.pop() {
            if seen.insert(y) {
                if pred(y) {
                    return true;
                }
                stack.extend(self.exprs[y as usize].operands());
            }
        }
        false
    }

    pub fn rows(&self) -> usize {
        self.outer.iter().product()
    }

    /// The size of the range the kernel function takes (rows, or elements for flat kernels).
    pub fn range(&self) -> usize {
        match self.split {
            Split::Rows | Split::Serial => self.rows(),
            Split::Elements => self.inner,
        }
    }
}

/// One GEMM operand (or the output): element `(batch b, row i, col k)` is at
/// `offset + sum(b_coord[d] * batch[d]) + i * rs + k * cs`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MatOperand {
    pub buf: u32,
    pub offset: i64,
    pub batch: Vec<i64>,
    pub rs: i64,
    pub cs: i64,
}

/// `c[b] = a[b] x b[b]` for every batch index, then the epilogue over the same rows (its
/// outer range is `product(batch) * m` rows of `n` elements).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MatMulKernel {
    pub batch: Vec<usize>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: MatOperand,
    pub b: MatOperand,
    pub c: MatOperand,
    pub epilogue: Option<LoopKernel>,
}

impl MatMulKernel {
    pub fn rows(&self) -> usize {
        self.batch.iter().product::<usize>() * self.m
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum KernelBody {
    Loop(LoopKernel),
    MatMul(Box<MatMulKernel>),
}

/// One scheduled kernel: its body, the buffers bound to its parameters, and what it fused.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub body: KernelBody,
    /// Buffer bound to each parameter position.
    pub args: Vec<BufferId>,
    /// Graph nodes whose computation happens in this kernel (views included).
    pub nodes: Vec<NodeId>,
    /// Iteration shape for display (the output or reduction domain).
    pub shape: Vec<usize>,
    pub flops: u64,
}

impl Kernel {
    /// The kernel's loop: its body, or a matmul's epilogue (`None` for a bare matmul).
    pub fn loop_mut(&mut self) -> Option<&mut LoopKernel> {
        match &mut self.body {
            KernelBody::Loop(l) => Some(l),
            KernelBody::MatMul(mm) => mm.epilogue.as_mut(),
        }
    }
}
