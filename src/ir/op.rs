//! The closed set of primitive operations. Every composite layer (softmax, layer norm,
//! attention, MoE routing) is built from these, so autodiff has one rule per variant and the
//! scheduler sees elementwise / reduction / matmul structure directly.
//!
//! **Invariant:** code that must handle every op (type inference, the interpreter, autodiff,
//! lowering) matches on [`Op`] without a `_ =>` arm, so adding an op lists what still needs it.

use super::types::{DType, TensorType};
use std::fmt;

/// Elementwise functions of one operand. Operand and result have the same type unless noted.
/// On i32, `Neg` and `Abs` wrap (`neg(i32::MIN) == abs(i32::MIN) == i32::MIN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    /// Natural logarithm.
    Log,
    Sqrt,
    /// `1 / sqrt(x)`.
    Rsqrt,
    /// `1 / x`.
    Recip,
    Tanh,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    Erf,
    Sin,
    Cos,
    Floor,
    /// Logical not; bool → bool.
    Not,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 14] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Erf,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Floor,
        UnaryOp::Not,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Erf => "erf",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Floor => "floor",
            UnaryOp::Not => "not",
        }
    }

    /// Which operand dtypes the op accepts.
    pub fn accepts(self, dt: DType) -> bool {
        match self {
            UnaryOp::Neg | UnaryOp::Abs => dt != DType::Bool,
            UnaryOp::Not => dt == DType::Bool,
            UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Recip
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Erf
            | UnaryOp::Sin
            | UnaryOp::Cos
            | UnaryOp::Floor => dt == DType::F32,
        }
    }
}

/// Elementwise functions of two operands of identical shape (broadcasts are explicit nodes).
///
/// Floats follow IEEE 754 (comparisons with NaN are false except `Ne`). On i32, `Add`, `Sub`
/// and `Mul` wrap (two's complement).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Float division, or integer division rounding toward negative infinity. Integer
    /// division by zero gives 0 (no trap); `i32::MIN / -1` wraps to `i32::MIN`.
    Div,
    /// Remainder with the sign of the divisor (Python-style), for ints and floats. Ints:
    /// `a == b * (a div b) + a rem b` always holds, so `a rem 0 == a`. Floats: C `fmod`, plus
    /// `b` when the signs differ; a zero result has the sign of `b`; `a rem 0.0` is NaN.
    Rem,
    /// `a ** b` (C `pow`), floats only.
    Pow,
    /// Float: NaN if either operand is NaN, and -0.0 < +0.0 (IEEE 754-2019 `maximum`, as
    /// Cranelift's `fmax`).
    Max,
    /// Float: NaN if either operand is NaN, and -0.0 < +0.0 (IEEE 754-2019 `minimum`).
    Min,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 16] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Rem,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::And,
        BinaryOp::Or,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Rem => "rem",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }

    /// Result dtype for operands of dtype `dt`, or `None` if the op does not accept it.
    pub fn result_dtype(self, dt: DType) -> Option<DType> {
        match self {
            BinaryOp::Add
            | BinaryOp::Sub
            | BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Rem
            | BinaryOp::Max
            | BinaryOp::Min => (dt != DType::Bool).then_some(dt),
            BinaryOp::Pow => (dt == DType::F32).then_some(dt),
            BinaryOp::Eq | BinaryOp::Ne => Some(DType::Bool),
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
                (dt != DType::Bool).then_some(DType::Bool)
            }
            BinaryOp::And | BinaryOp::Or => (dt == DType::Bool).then_some(DType::Bool),
        }
    }
}

/// Reductions. A reduction keeps the reduced axes with size 1.
///
/// `Max`/`Min` propagate NaN like the binary ops. Over an empty axis, `Sum` gives 0, `Max`
/// gives -inf (i32: `i32::MIN`) and `Min` +inf (i32: `i32::MAX`). The i32 sum wraps. Float
/// sums are not bit-reproducible across back ends (the order of additions is unspecified).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }
}

/// A primitive operation. Argument counts and typing rules are in [`infer_type`].
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The `index`-th graph input (see `Graph::inputs`). No arguments.
    Input {
        index: u32,
    },
    /// The `index`-th parameter or buffer (see `Graph::params`). No arguments.
    Param {
        index: u32,
    },
    /// A scalar constant splatted to the node's shape. No arguments. Ints and bools are
    /// stored exactly (bools as 0.0 / 1.0). An f32 constant is `value` rounded to nearest f32
    /// (an f64 evaluation uses `value` as is).
    Const {
        value: f64,
    },
    /// `out[i0, i1, ...] = i_axis` as i32, in the node's shape. No arguments.
    Iota {
        axis: u32,
    },
    /// Uniform random numbers in `[0, 1)`, f32, in the node's shape: a pure function of the
    /// i32 scalar key argument, the stream number and the element's linear index, defined
    /// exactly by [`random_uniform_value`].
    RandomUniform {
        stream: u32,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `select(cond, a, b)`: elementwise `cond ? a : b`; `cond` is bool, all three same shape.
    Select,
    /// Elementwise conversion. Float → int truncates toward zero and saturates at the i32
    /// range; NaN → 0. Int → float rounds to nearest. Float or int → bool is `x != 0` (so
    /// NaN → true). Bool → number is 0 or 1. Casting to the operand's dtype is the identity.
    Cast {
        to: DType,
    },
    /// Reduces `axes` (sorted, distinct), keeping them with size 1.
    Reduce {
        op: ReduceOp,
        axes: Vec<u32>,
    },
    /// Index (i32) of the first maximum along `axis`; the axis is kept with size 1. A NaN
    /// counts as larger than every number (the first NaN wins); -0.0 equals +0.0; bools order
    /// false < true. An empty axis gives 0.
    ArgMax {
        axis: u32,
    },
    /// Batched matrix product `[..., M, K] x [..., K, N] -> [..., M, N]`; batch dimensions must
    /// be equal. `trans_a` reads A as `[..., K, M]` (transposed), likewise `trans_b`.
    MatMul {
        trans_a: bool,
        trans_b: bool,
    },
    /// Same elements in row-major order, new shape (the node's type).
    Reshape,
    /// `out.shape[i] = in.shape[perm[i]]`.
    Permute {
        perm: Vec<u32>,
    },
    /// Same rank; every operand dimension is 1 or equal to the node's dimension.
    Broadcast,
    /// Elements `start, start+step, ...` below `end` along `axis` (`step >= 1`).
    Slice {
        axis: u32,
        start: usize,
        end: usize,
        step: usize,
    },
    /// Zero padding along `axis`: `lo` before, `hi` after and `interior` between elements
    /// (element `i` lands at `lo + i * (interior + 1)`; padding is +0.0, 0 or false).
    Pad {
        axis: u32,
        lo: usize,
        hi: usize,
        interior: usize,
    },
    /// Concatenation of all arguments along `axis` (at least one argument).
    Concat {
        axis: u32,
    },
    /// `gather(table [V, r...], idx i32[i...]) -> [i..., r...]`: rows of `table`. Indices
    /// outside `0..V` (negative ones included) give zero rows (false for bool tables).
    Gather,
    /// `scatter_add(idx i32[i...], src [i..., r...]) -> [rows, r...]`: zeros plus every source
    /// row added at its index. Indices outside `0..rows` are dropped. i32 sums wrap.
    ScatterAdd {
        rows: usize,
    },
    /// Inclusive running sum along `axis` (from the end when `reverse`). i32 sums wrap.
    Cumsum {
        axis: u32,
        reverse: bool,
    },
    /// Indices (i32) of the `k` largest elements of the last axis, largest first, ties to the
    /// lower index. NaN counts as larger than every number, as in `ArgMax`; -0.0 equals
    /// +0.0. The last axis becomes `k`.
    TopK {
        k: usize,
    },
}

/// The reference definition of [`Op::RandomUniform`]: element `index` (the row-major linear
/// index modulo 2^32) of stream `stream` under the i32 scalar `key`, in `[0, 1)`.
///
/// Only 32-bit wrapping multiply, xor, shift and add are used, so a vectorised kernel can
/// reproduce it bit for bit with i32x4 operations:
///
/// ```text
/// mix(x)  = x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
///           (Wellons' "lowbias32" finaliser, a bijection of u32; `>>` is logical)
/// seed    = mix(mix(key as u32 ^ 0x9e3779b9) ^ stream)   (once per op)
/// h       = mix(mix(index ^ seed) + seed)                (per element, `+` wrapping)
/// value   = (h >> 8) as f32 * 2^-24                      (the top 24 bits; exact in f32)
/// ```
///
/// The seed enters twice so that two streams are unrelated sequences rather than shifted
/// copies of each other; the golden-ratio constant keeps key 0, stream 0, index 0 away from
/// the fixed point `mix(0) == 0`. Values are multiples of 2^-24 from 0 to 1 - 2^-24.
pub fn random_uniform_value(key: i32, stream: u32, index: u32) -> f32 {
    let seed = random_mix32(random_mix32(key as u32 ^ 0x9e37_79b9) ^ stream);
    let h = random_mix32(random_mix32(index ^ seed).wrapping_add(seed));
    // h >> 8 < 2^24 is exactly representable, and so is the product with 2^-24.
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The 32-bit finaliser of [`random_uniform_value`] ("lowbias32" by Chris Wellons).
pub fn random_mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// How the scheduler and cost model see an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Inputs, parameters and constants: no work.
    Leaf,
    /// One output element from the same-index elements of the inputs.
    Elementwise,
    /// Changes layout or selects elements, no arithmetic.
    Layout,
    Reduction,
    MatMul,
    /// Data-dependent indexing (gather, scatter, top-k, cumsum).
    Indexing,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Const { .. } => "const",
            Op::Iota { .. } => "iota",
            Op::RandomUniform { .. } => "random_uniform",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Select => "select",
            Op::Cast { .. } => "cast",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Sum => "reduce_sum",
                ReduceOp::Max => "reduce_max",
                ReduceOp::Min => "reduce_min",
            },
            Op::ArgMax { .. } => "argmax",
            Op::MatMul { .. } => "matmul",
            Op::Reshape => "reshape",
            Op::Permute { .. } => "permute",
            Op::Broadcast => "broadcast",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::Concat { .. } => "concat",
            Op::Gather => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::Cumsum { .. } => "cumsum",
            Op::TopK { .. } => "topk",
        }
    }

    pub fn class(&self) -> OpClass {
        match self {
            Op::Input { .. } | Op::Param { .. } | Op::Const { .. } => OpClass::Leaf,
            Op::Iota { .. }
            | Op::RandomUniform { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Select
            | Op::Cast { .. } => OpClass::Elementwise,
            Op::Reduce { .. } | Op::ArgMax { .. } => OpClass::Reduction,
            Op::MatMul { .. } => OpClass::MatMul,
            Op::Reshape
            | Op::Permute { .. }
            | Op::Broadcast
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Concat { .. } => OpClass::Layout,
            Op::Gather | Op::ScatterAdd { .. } | Op::Cumsum { .. } | Op::TopK { .. } => OpClass::Indexing,
        }
    }

    /// Ops with no arguments whose result comes from outside the graph.
    pub fn is_leaf(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Param { .. })
    }
}

/// Writes the op with its attributes, e.g. `slice[axis=1, 0..63]`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            Op::Input { index } => write!(f, "{name} {index}"),
            Op::Param { index } => write!(f, "{name} {index}"),
            Op::Const { value } => write!(f, "{name} {}", fmt_f64(*value)),
            Op::Iota { axis } => write!(f, "{name}[axis={axis}]"),
            Op::RandomUniform { stream } => write!(f, "{name}[stream={stream}]"),
            Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Reshape | Op::Broadcast | Op::Gather => {
                f.write_str(name)
            }
            Op::Cast { to } => write!(f, "{name}[{to}]"),
            Op::Reduce { axes, .. } => write!(f, "{name}[axes={}]", AxesDisplay(axes)),
            Op::ArgMax { axis } => write!(f, "{name}[axis={axis}]"),
            Op::MatMul { trans_a, trans_b } => {
                f.write_str(name)?;
                match (trans_a, trans_b) {
                    (false, false) => Ok(()),
                    (true, false) => f.write_str("[ta]"),
                    (false, true) => f.write_str("[tb]"),
                    (true, true) => f.write_str("[ta, tb]"),
                }
            }
            Op::Permute { perm } => write!(f, "{name}[{}]", AxesDisplay(perm)),
            Op::Slice { axis, start, end, step } => {
                if *step == 1 {
                    write!(f, "{name}[axis={axis}, {start}..{end}]")
                } else {
                    write!(f, "{name}[axis={axis}, {start}..{end} step {step}]")
                }
            }
            Op::Pad { axis, lo, hi, interior } => {
                if *interior == 0 {
                    write!(f, "{name}[axis={axis}, lo={lo}, hi={hi}]")
                } else {
                    write!(f, "{name}[axis={axis}, lo={lo}, hi={hi}, interior={interior}]")
                }
            }
            Op::Concat { axis } => write!(f, "{name}[axis={axis}]"),
            Op::ScatterAdd { rows } => write!(f, "{name}[rows={rows}]"),
            Op::Cumsum { axis, reverse } => {
                if *reverse {
                    write!(f, "{name}[axis={axis}, reverse]")
                } else {
                    write!(f, "{name}[axis={axis}]")
                }
            }
            Op::TopK { k } => write!(f, "{name}[k={k}]"),
        }
    }
}

/// Formats a float so that integers print without a fraction and the text round-trips.
pub fn fmt_f64(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

struct AxesDisplay<'a>(&'a [u32]);

impl fmt::Display for AxesDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Why an op cannot be applied to its arguments. The elaborator turns these into user
/// diagnostics with spans; anywhere else they are compiler bugs caught by the verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeError(pub String);

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, TypeError> {
    Err(TypeError(msg.into()))
}

fn check_axis(axis: u32, rank: usize) -> Result<usize, TypeError> {
    if (axis as usize) < rank {
        Ok(axis as usize)
    } else {
        err(format!("axis {axis} out of range for rank {rank}"))
    }
}

/// The result type of `op` applied to arguments of types `args`. `given` is the node's
/// declared type, required for ops whose result shape is not a function of the arguments
/// (leaves, `Reshape`, `Broadcast`, `Const`, `Iota`, `RandomUniform`); for those the declared
/// type is checked for consistency and returned.
pub fn infer_type(
    op: &Op,
    args: &[&TensorType],
    given: Option<&TensorType>,
) -> Result<TensorType, TypeError> {
    let want_args = |n: usize| -> Result<(), TypeError> {
        if args.len() == n {
            Ok(())
        } else {
            err(format!("`{}` takes {n} argument(s), got {}", op.name(), args.len()))
        }
    };
    let need_given = || -> Result<TensorType, TypeError> {
        given.cloned().ok_or_else(|| TypeError(format!("`{}` needs a declared result type", op.name())))
    };
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Const { .. } => {
            want_args(0)?;
            need_given()
        }
        Op::Iota { axis } => {
            want_args(0)?;
            let t = need_given()?;
            check_axis(*axis, t.rank())?;
            if t.dtype != DType::I32 {
                return err("iota produces i32");
            }
            Ok(t)
        }
        Op::RandomUniform { .. } => {
            want_args(1)?;
            if args[0].dtype != DType::I32 || args[0].rank() != 0 {
                return err("random_uniform takes an i32 scalar key");
            }
            let t = need_given()?;
            if t.dtype != DType::F32 {
                return err("random_uniform produces f32");
            }
            Ok(t)
        }
        Op::Unary(u) => {
            want_args(1)?;
            if !u.accepts(args[0].dtype) {
                return err(format!("`{}` does not accept {}", u.name(), args[0].dtype));
            }
            Ok(args[0].clone())
        }
        Op::Binary(b) => {
            want_args(2)?;
            let (x, y) = (args[0], args[1]);
            if x.shape != y.shape {
                return err(format!(
                    "`{}` needs equal shapes, got {} and {}",
                    b.name(),
                    super::types::ShapeDisplay(&x.shape),
                    super::types::ShapeDisplay(&y.shape)
                ));
            }
            if x.dtype != y.dtype {
                return err(format!("`{}` needs equal dtypes, got {} and {}", b.name(), x.dtype, y.dtype));
            }
            match b.result_dtype(x.dtype) {
                Some(dt) => Ok(x.with_dtype(dt)),
                None => err(format!("`{}` does not accept {}", b.name(), x.dtype)),
            }
        }
        Op::Select => {
            want_args(3)?;
            if args[0].dtype != DType::Bool {
                return err(format!("select condition must be bool, got {}", args[0].dtype));
            }
            if args[0].shape != args[1].shape || args[1] != args[2] {
                return err(format!(
                    "select needs equal types, got {}, {} and {}",
                    args[0], args[1], args[2]
                ));
            }
            Ok(args[1].clone())
        }
        Op::Cast { to } => {
            want_args(1)?;
            Ok(args[0].with_dtype(*to))
        }
        Op::Reduce { op: r, axes } => {
            want_args(1)?;
            let x = args[0];
            if x.dtype == DType::Bool {
                return err(format!("`{}` does not accept bool", r.name()));
            }
            let mut shape = x.shape.clone();
            let mut prev: Option<u32> = None;
            for &a in axes {
                let ai = check_axis(a, x.rank())?;
                if prev.is_some_and(|p| p >= a) {
                    return err("reduction axes must be sorted and distinct");
                }
                prev = Some(a);
                shape[ai] = 1;
            }
            Ok(x.with_shape(shape))
        }
        Op::ArgMax { axis } => {
            want_args(1)?;
            let x = args[0];
            let ai = check_axis(*axis, x.rank())?;
            let mut shape = x.shape.clone();
            shape[ai] = 1;
            Ok(TensorType::new(DType::I32, shape))
        }
        Op::MatMul { trans_a, trans_b } => {
            want_args(2)?;
            let (a, b) = (args[0], args[1]);
            if a.rank() < 2 || a.rank() != b.rank() {
                return err(format!("matmul needs operands of equal rank >= 2, got {a} and {b}"));
            }
            if a.dtype != DType::F32 || b.dtype != DType::F32 {
                return err(format!("matmul needs f32 operands, got {} and {}", a.dtype, b.dtype));
            }
            let r = a.rank();
            if a.shape[..r - 2] != b.shape[..r - 2] {
                return err(format!("matmul batch dimensions differ: {a} and {b}"));
            }
            let (m, ka) =
                if *trans_a { (a.shape[r - 1], a.shape[r - 2]) } else { (a.shape[r - 2], a.shape[r - 1]) };
            let (kb, n) =
                if *trans_b { (b.shape[r - 1], b.shape[r - 2]) } else { (b.shape[r - 2], b.shape[r - 1]) };
            if ka != kb {
                return err(format!("matmul inner dimensions differ: {ka} and {kb}"));
            }
            let mut shape = a.shape[..r - 2].to_vec();
            shape.push(m);
            shape.push(n);
            Ok(TensorType::new(DType::F32, shape))
        }
        Op::Reshape => {
            want_args(1)?;
            let t = need_given()?;
            if t.dtype != args[0].dtype || t.numel() != args[0].numel() {
                return err(format!("cannot reshape {} to {}", args[0], t));
            }
            Ok(t)
        }
        Op::Permute { perm } => {
            want_args(1)?;
            let x = args[0];
            if perm.len() != x.rank() {
                return err(format!("permutation of length {} for rank {}", perm.len(), x.rank()));
            }
            let mut seen = vec![false; perm.len()];
            let mut shape = Vec::with_capacity(perm.len());
            for &p in perm {
                let pi = check_axis(p, x.rank())?;
                if seen[pi] {
                    return err("permutation repeats an axis");
                }
                seen[pi] = true;
                shape.push(x.shape[pi]);
            }
            Ok(x.with_shape(shape))
        }
        Op::Broadcast => {
            want_args(1)?;
            let t = need_given()?;
            let x = args[0];
            if t.dtype != x.dtype || t.rank() != x.rank() {
                return err(format!("cannot broadcast {x} to {t}"));
            }
            for (&s, &d) in x.shape.iter().zip(&t.shape) {
                if s != d && s != 1 {
                    return err(format!("cannot broadcast {x} to {t}"));
                }
            }
            Ok(t)
        }
        Op::Slice { axis, start, end, step } => {
            want_args(1)?;
            let x = args[0];
            let ai = check_axis(*axis, x.rank())?;
            if *step == 0 || start > end || *end > x.shape[ai] {
                return err(format!(
                    "slice {start}..{end} step {step} out of range for size {}",
                    x.shape[ai]
                ));
            }
            let mut shape = x.shape.clone();
            shape[ai] = (end - start).div_ceil(*step);
            Ok(x.with_shape(shape))
        }
        Op::Pad { axis, lo, hi, interior } => {
            want_args(1)?;
            let x = args[0];
            let ai = check_axis(*axis, x.rank())?;
            let n = x.shape[ai];
            let mut shape = x.shape.clone();
            shape[ai] = lo + hi + n + interior * n.saturating_sub(1);
            Ok(x.with_shape(shape))
        }
        Op::Concat { axis } => {
            if args.is_empty() {
                return err("concat needs at least one argument");
            }
            let first = args[0];
            let ai = check_axis(*axis, first.rank())?;
            let mut total = 0;
            for a in args {
                if a.dtype != first.dtype || a.rank() != first.rank() {
                    return err(format!("cannot concatenate {first} and {a}"));
                }
                for (i, (&x, &y)) in a.shape.iter().zip(&first.shape).enumerate() {
                    if i != ai && x != y {
                        return err(format!("cannot concatenate {first} and {a} along axis {axis}"));
                    }
                }
                total += a.shape[ai];
            }
            let mut shape = first.shape.clone();
            shape[ai] = total;
            Ok(first.with_shape(shape))
        }
        Op::Gather => {
            want_args(2)?;
            let (table, idx) = (args[0], args[1]);
            if table.rank() < 1 {
                return err("gather needs a table of rank >= 1");
            }
            if idx.dtype != DType::I32 {
                return err(format!("gather indices must be i32, got {}", idx.dtype));
            }
            let mut shape = idx.shape.clone();
            shape.extend_from_slice(&table.shape[1..]);
            Ok(table.with_shape(shape))
        }
        Op::ScatterAdd { rows } => {
            want_args(2)?;
            let (idx, src) = (args[0], args[1]);
            if idx.dtype != DType::I32 {
                return err(format!("scatter_add indices must be i32, got {}", idx.dtype));
            }
            if src.dtype == DType::Bool {
                return err("scatter_add does not accept bool");
            }
            if src.rank() < idx.rank() || src.shape[..idx.rank()] != idx.shape[..] {
                return err(format!("scatter_add source {src} does not start with the index shape {idx}"));
            }
            let mut shape = vec![*rows];
            shape.extend_from_slice(&src.shape[idx.rank()..]);
            Ok(src.with_shape(shape))
        }
        Op::Cumsum { axis, .. } => {
            want_args(1)?;
            check_axis(*axis, args[0].rank())?;
            if args[0].dtype == DType::Bool {
                return err("cumsum does not accept bool");
            }
            Ok(args[0].clone())
        }
        Op::TopK { k } => {
            want_args(1)?;
            let x = args[0];
            if x.rank() < 1 || *k == 0 || *k > x.shape[x.rank() - 1] {
                return err(format!("top-{k} of {x}: k must be between 1 and the last dimension"));
            }
            let mut shape = x.shape.clone();
            *shape.last_mut().expect("rank >= 1 checked above") = *k;
            Ok(TensorType::new(DType::I32, shape))
        }
    }
}

/// Floating-point operations of one application (a multiply-add counts 2), for summaries and
/// benchmarks. Layout ops count 0.
pub fn flops(op: &Op, args: &[&TensorType], out: &TensorType) -> u64 {
    let n = out.numel() as u64;
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::Iota { .. } => 0,
        Op::Reshape | Op::Permute { .. } | Op::Broadcast | Op::Slice { .. } | Op::Pad { .. } => 0,
        Op::Concat { .. } | Op::Gather | Op::Cast { .. } | Op::TopK { .. } => 0,
        Op::RandomUniform { .. } | Op::Unary(_) | Op::Binary(_) | Op::Select => n,
        Op::Reduce { .. } | Op::ArgMax { .. } => args.first().map_or(0, |a| a.numel() as u64),
        Op::ScatterAdd { .. } => args.get(1).map_or(0, |a| a.numel() as u64),
        Op::Cumsum { .. } => n,
        Op::MatMul { trans_a, .. } => {
            let a = args[0];
            let r = a.rank();
            let k = if *trans_a { a.shape[r - 2] } else { a.shape[r - 1] };
            2 * n * k as u64
        }
    }
}
