//! Evaluation of one node from the values of its arguments: the exhaustive `match` on
//! [`Op`] and the scalar semantics of every elementwise op (see the doc comments in
//! `ir/op.rs`, which this file implements exactly).
//!
//! **Invariant:** the graph passed the verifier, so argument counts, dtypes and shapes are the
//! ones `infer_type` accepts. A dtype combination the verifier excludes is reported as
//! [`InterpError::Invariant`] instead of panicking.

use super::float::Float;
use super::indexing;
use super::layout;
use super::reduce;
use super::value::Value;
use super::{InterpError, LeafKind};
use crate::ir::{BinaryOp, DType, Graph, NodeId, Op, ReduceOp, UnaryOp, random_uniform_value};
use ndarray::{ArrayD, IxDyn, Zip};
use std::cmp::Ordering;

/// Applies `$body` to the array inside a value of any dtype, keeping the dtype.
macro_rules! same_dtype {
    ($v:expr, $a:ident => $body:expr) => {
        match $v {
            Value::Float($a) => Value::Float($body),
            Value::Int($a) => Value::Int($body),
            Value::Bool($a) => Value::Bool($body),
        }
    };
}

/// The value of node `id`, given the values of its arguments (in order) and the run's
/// inputs and parameters (already checked against the graph's tables).
pub(crate) fn eval_node<E: Float>(
    g: &Graph,
    id: NodeId,
    args: &[&Value<E>],
    inputs: &[Value<E>],
    params: &[Value<E>],
) -> Result<Value<E>, InterpError> {
    let node = g.node(id);
    let ty = g.ty(id);
    let shape = ty.shape.as_slice();
    let bad = |what: &str| InterpError::Invariant { node: id, message: format!("`{}`: {what}", node.op) };
    let arg = |i: usize| args.get(i).copied().ok_or_else(|| bad("missing argument"));
    Ok(match &node.op {
        Op::Input { index } => leaf(inputs, *index)
            .ok_or(InterpError::LeafOutOfRange { what: LeafKind::Input, index: *index })?,
        Op::Param { index } => leaf(params, *index)
            .ok_or(InterpError::LeafOutOfRange { what: LeafKind::Param, index: *index })?,
        Op::Const { value } => {
            let dim = IxDyn(shape);
            match ty.dtype {
                DType::F32 => Value::Float(ArrayD::from_elem(dim, E::from_f64(*value))),
                // Ints are stored exactly; `as` truncates anything else like a cast would.
                DType::I32 => Value::Int(ArrayD::from_elem(dim, *value as i32)),
                DType::Bool => Value::Bool(ArrayD::from_elem(dim, *value != 0.0)),
            }
        }
        Op::Iota { axis } => {
            let ax = *axis as usize;
            // Positions fit in i32: tensors are addressed with 32-bit lanes at run time.
            Value::Int(ArrayD::from_shape_fn(IxDyn(shape), |ix| ix[ax] as i32))
        }
        Op::RandomUniform { stream } => {
            let key = arg(0)?.as_int().and_then(|k| k.iter().next().copied()).ok_or_else(|| bad("key"))?;
            let n: usize = shape.iter().product();
            // The linear index is taken modulo 2^32, as documented on the op.
            let data: Vec<E> =
                (0..n).map(|i| E::from_f32(random_uniform_value(key, *stream, i as u32))).collect();
            Value::Float(ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| bad(&e.to_string()))?)
        }
        Op::Unary(u) => unary(*u, arg(0)?).ok_or_else(|| bad("operand dtype"))?,
        Op::Binary(b) => binary(*b, arg(0)?, arg(1)?).ok_or_else(|| bad("operand dtypes"))?,
        Op::Select => {
            let cond = arg(0)?.as_bool().ok_or_else(|| bad("condition is not bool"))?;
            match (arg(1)?, arg(2)?) {
                (Value::Float(a), Value::Float(b)) => Value::Float(select(cond, a, b)),
                (Value::Int(a), Value::Int(b)) => Value::Int(select(cond, a, b)),
                (Value::Bool(a), Value::Bool(b)) => Value::Bool(select(cond, a, b)),
                _ => return Err(bad("branches differ in dtype")),
            }
        }
        Op::Cast { to } => cast(arg(0)?, *to),
        Op::Reduce { op, axes } => match (op, arg(0)?) {
            (ReduceOp::Sum, Value::Float(a)) => {
                Value::Float(reduce::reduce(a, axes, E::zero(), |x, y| x + y))
            }
            (ReduceOp::Max, Value::Float(a)) => Value::Float(reduce::reduce(a, axes, E::NEG_INFINITY, fmax)),
            (ReduceOp::Min, Value::Float(a)) => Value::Float(reduce::reduce(a, axes, E::INFINITY, fmin)),
            (ReduceOp::Sum, Value::Int(a)) => Value::Int(reduce::reduce(a, axes, 0, i32::wrapping_add)),
            (ReduceOp::Max, Value::Int(a)) => Value::Int(reduce::reduce(a, axes, i32::MIN, i32::max)),
            (ReduceOp::Min, Value::Int(a)) => Value::Int(reduce::reduce(a, axes, i32::MAX, i32::min)),
            (ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min, Value::Bool(_)) => {
                return Err(bad("bool operand"));
            }
        },
        Op::ArgMax { axis } => Value::Int(match arg(0)? {
            Value::Float(a) => reduce::argmax(a, *axis, float_greater),
            Value::Int(a) => reduce::argmax(a, *axis, |x, y| x > y),
            Value::Bool(a) => reduce::argmax(a, *axis, |x, y| x & !y),
        }),
        Op::MatMul { trans_a, trans_b } => match (arg(0)?, arg(1)?) {
            (Value::Float(a), Value::Float(b)) => {
                Value::Float(reduce::matmul(a, b, *trans_a, *trans_b, shape))
            }
            _ => return Err(bad("operands are not float")),
        },
        Op::Reshape => same_dtype!(arg(0)?, a => layout::reshape(a, shape)),
        Op::Permute { perm } => same_dtype!(arg(0)?, a => layout::permute(a, perm)),
        Op::Broadcast => same_dtype!(arg(0)?, a => layout::broadcast(a, shape)),
        Op::Slice { axis, start, end, step } => {
            same_dtype!(arg(0)?, a => layout::slice(a, *axis, *start, *end, *step))
        }
        Op::Pad { axis, lo, hi, interior } => {
            same_dtype!(arg(0)?, a => layout::pad(a, *axis, *lo, *hi, *interior))
        }
        Op::Concat { axis } => concat(args, *axis).ok_or_else(|| bad("operands differ in dtype"))?,
        Op::Gather => {
            let idx = arg(1)?.as_int().ok_or_else(|| bad("indices are not i32"))?;
            same_dtype!(arg(0)?, t => indexing::gather(t, idx))
        }
        Op::ScatterAdd { rows } => {
            let idx = arg(0)?.as_int().ok_or_else(|| bad("indices are not i32"))?;
            match arg(1)? {
                Value::Float(s) => Value::Float(indexing::scatter_add(idx, s, *rows, |x, y| x + y)),
                Value::Int(s) => Value::Int(indexing::scatter_add(idx, s, *rows, i32::wrapping_add)),
                Value::Bool(_) => return Err(bad("bool source")),
            }
        }
        Op::Cumsum { axis, reverse } => match arg(0)? {
            Value::Float(a) => Value::Float(indexing::cumsum(a, *axis, *reverse, |x, y| x + y)),
            Value::Int(a) => Value::Int(indexing::cumsum(a, *axis, *reverse, i32::wrapping_add)),
            Value::Bool(_) => return Err(bad("bool operand")),
        },
        Op::TopK { k } => Value::Int(match arg(0)? {
            Value::Float(a) => indexing::topk(a, *k, float_desc),
            Value::Int(a) => indexing::topk(a, *k, |x, y| y.cmp(&x)),
            Value::Bool(a) => indexing::topk(a, *k, |x, y| y.cmp(&x)),
        }),
    })
}

fn leaf<E: Float>(table: &[Value<E>], index: u32) -> Option<Value<E>> {
    table.get(index as usize).cloned()
}

fn select<T: Clone>(cond: &ArrayD<bool>, a: &ArrayD<T>, b: &ArrayD<T>) -> ArrayD<T> {
    Zip::from(cond).and(a).and(b).map_collect(|&c, x, y| if c { x.clone() } else { y.clone() })
}

fn concat<E: Float>(args: &[&Value<E>], axis: u32) -> Option<Value<E>> {
    match args.first()? {
        Value::Float(_) => {
            let parts: Option<Vec<_>> = args.iter().map(|v| v.as_float()).collect();
            Some(Value::Float(layout::concat(&parts?, axis)))
        }
        Value::Int(_) => {
            let parts: Option<Vec<_>> = args.iter().map(|v| v.as_int()).collect();
            Some(Value::Int(layout::concat(&parts?, axis)))
        }
        Value::Bool(_) => {
            let parts: Option<Vec<_>> = args.iter().map(|v| v.as_bool()).collect();
            Some(Value::Bool(layout::concat(&parts?, axis)))
        }
    }
}

/// `Cast`: float → int truncates toward zero, saturating, NaN → 0; float → bool is `x != 0`
/// (so NaN → true); int → bool is `x != 0`; bool → number is 0 or 1; int → float rounds to
/// nearest.
fn cast<E: Float>(v: &Value<E>, to: DType) -> Value<E> {
    match (v, to) {
        (Value::Float(a), DType::F32) => Value::Float(a.clone()),
        (Value::Float(a), DType::I32) => Value::Int(a.mapv(E::to_i32_saturating)),
        (Value::Float(a), DType::Bool) => Value::Bool(a.mapv(|x| x != E::zero())),
        (Value::Int(a), DType::F32) => Value::Float(a.mapv(E::from_i32)),
        (Value::Int(a), DType::I32) => Value::Int(a.clone()),
        (Value::Int(a), DType::Bool) => Value::Bool(a.mapv(|x| x != 0)),
        (Value::Bool(a), DType::F32) => Value::Float(a.mapv(|x| if x { E::one() } else { E::zero() })),
        (Value::Bool(a), DType::I32) => Value::Int(a.mapv(i32::from)),
        (Value::Bool(a), DType::Bool) => Value::Bool(a.clone()),
    }
}

fn unary<E: Float>(u: UnaryOp, v: &Value<E>) -> Option<Value<E>> {
    match v {
        Value::Float(a) => Some(Value::Float(a.mapv(unary_float_fn::<E>(u)?))),
        Value::Int(a) => Some(Value::Int(a.mapv(unary_int_fn(u)?))),
        Value::Bool(a) => match u {
            UnaryOp::Not => Some(Value::Bool(a.mapv(|x| !x))),
            UnaryOp::Neg
            | UnaryOp::Abs
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Recip
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Erf
            | UnaryOp::Sin
            | UnaryOp::Cos
            | UnaryOp::Floor => None,
        },
    }
}

/// The float function of a unary op, `None` for ops that do not take floats.
fn unary_float_fn<E: Float>(u: UnaryOp) -> Option<fn(E) -> E> {
    Some(match u {
        UnaryOp::Neg => E::neg,
        UnaryOp::Abs => E::abs,
        UnaryOp::Exp => E::exp,
        UnaryOp::Log => E::ln,
        UnaryOp::Sqrt => E::sqrt,
        UnaryOp::Rsqrt => |x: E| E::one() / x.sqrt(),
        UnaryOp::Recip => |x: E| E::one() / x,
        UnaryOp::Tanh => E::tanh,
        UnaryOp::Sigmoid => |x: E| E::one() / (E::one() + x.neg().exp()),
        UnaryOp::Erf => E::erf,
        UnaryOp::Sin => E::sin,
        UnaryOp::Cos => E::cos,
        UnaryOp::Floor => E::floor,
        UnaryOp::Not => return None,
    })
}

/// The i32 function of a unary op (two's complement, wrapping: `neg`/`abs` of `i32::MIN` is
/// `i32::MIN`), `None` for ops that do not take ints.
fn unary_int_fn(u: UnaryOp) -> Option<fn(i32) -> i32> {
    match u {
        UnaryOp::Neg => Some(i32::wrapping_neg),
        UnaryOp::Abs => Some(i32::wrapping_abs),
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
        | UnaryOp::Floor
        | UnaryOp::Not => None,
    }
}

fn binary<E: Float>(b: BinaryOp, x: &Value<E>, y: &Value<E>) -> Option<Value<E>> {
    match (x, y) {
        (Value::Float(p), Value::Float(q)) => {
            if let Some(f) = float_arith_fn::<E>(b) {
                Some(Value::Float(zip_map(p, q, f)))
            } else {
                Some(Value::Bool(zip_map(p, q, float_cmp_fn::<E>(b)?)))
            }
        }
        (Value::Int(p), Value::Int(q)) => {
            if let Some(f) = int_arith_fn(b) {
                Some(Value::Int(zip_map(p, q, f)))
            } else {
                Some(Value::Bool(zip_map(p, q, int_cmp_fn(b)?)))
            }
        }
        (Value::Bool(p), Value::Bool(q)) => Some(Value::Bool(zip_map(p, q, bool_fn(b)?))),
        _ => None,
    }
}

fn zip_map<T: Copy, R>(p: &ArrayD<T>, q: &ArrayD<T>, f: fn(T, T) -> R) -> ArrayD<R> {
    Zip::from(p).and(q).map_collect(|&x, &y| f(x, y))
}

/// Float arithmetic with a float result; `None` for comparisons and logical ops.
fn float_arith_fn<E: Float>(b: BinaryOp) -> Option<fn(E, E) -> E> {
    Some(match b {
        BinaryOp::Add => |x, y| x + y,
        BinaryOp::Sub => |x, y| x - y,
        BinaryOp::Mul => |x, y| x * y,
        BinaryOp::Div => |x, y| x / y,
        BinaryOp::Rem => float_rem,
        BinaryOp::Pow => E::powf,
        BinaryOp::Max => fmax,
        BinaryOp::Min => fmin,
        BinaryOp::Eq
        | BinaryOp::Ne
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge
        | BinaryOp::And
        | BinaryOp::Or => return None,
    })
}

/// IEEE comparisons: every comparison with NaN is false except `ne`.
fn float_cmp_fn<E: Float>(b: BinaryOp) -> Option<fn(E, E) -> bool> {
    Some(match b {
        BinaryOp::Eq => |x, y| x == y,
        BinaryOp::Ne => |x, y| x != y,
        BinaryOp::Lt => |x, y| x < y,
        BinaryOp::Le => |x, y| x <= y,
        BinaryOp::Gt => |x, y| x > y,
        BinaryOp::Ge => |x, y| x >= y,
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Div
        | BinaryOp::Rem
        | BinaryOp::Pow
        | BinaryOp::Max
        | BinaryOp::Min
        | BinaryOp::And
        | BinaryOp::Or => return None,
    })
}

/// i32 arithmetic, wrapping on overflow; `None` for comparisons and float/bool-only ops.
fn int_arith_fn(b: BinaryOp) -> Option<fn(i32, i32) -> i32> {
    Some(match b {
        BinaryOp::Add => i32::wrapping_add,
        BinaryOp::Sub => i32::wrapping_sub,
        BinaryOp::Mul => i32::wrapping_mul,
        BinaryOp::Div => int_floor_div,
        BinaryOp::Rem => int_floor_rem,
        BinaryOp::Max => i32::max,
        BinaryOp::Min => i32::min,
        BinaryOp::Pow
        | BinaryOp::Eq
        | BinaryOp::Ne
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge
        | BinaryOp::And
        | BinaryOp::Or => return None,
    })
}

fn int_cmp_fn(b: BinaryOp) -> Option<fn(i32, i32) -> bool> {
    Some(match b {
        BinaryOp::Eq => |x, y| x == y,
        BinaryOp::Ne => |x, y| x != y,
        BinaryOp::Lt => |x, y| x < y,
        BinaryOp::Le => |x, y| x <= y,
        BinaryOp::Gt => |x, y| x > y,
        BinaryOp::Ge => |x, y| x >= y,
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Div
        | BinaryOp::Rem
        | BinaryOp::Pow
        | BinaryOp::Max
        | BinaryOp::Min
        | BinaryOp::And
        | BinaryOp::Or => return None,
    })
}

fn bool_fn(b: BinaryOp) -> Option<fn(bool, bool) -> bool> {
    Some(match b {
        BinaryOp::Eq => |x, y| x == y,
        BinaryOp::Ne => |x, y| x != y,
        BinaryOp::And => |x, y| x & y,
        BinaryOp::Or => |x, y| x | y,
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Div
        | BinaryOp::Rem
        | BinaryOp::Pow
        | BinaryOp::Max
        | BinaryOp::Min
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge => return None,
    })
}

/// Integer division rounding toward negative infinity. `x / 0 == 0`; `i32::MIN / -1` wraps to
/// `i32::MIN`.
pub fn int_floor_div(x: i32, y: i32) -> i32 {
    if y == 0 {
        return 0;
    }
    let q = x.wrapping_div(y);
    let r = x.wrapping_rem(y);
    // Truncation rounded toward zero; step down when the exact quotient was negative.
    if r != 0 && ((r < 0) != (y < 0)) { q.wrapping_sub(1) } else { q }
}

/// Remainder with the sign of the divisor, so `x == y * (x div y) + x rem y` always holds;
/// hence `x rem 0 == x`.
pub fn int_floor_rem(x: i32, y: i32) -> i32 {
    if y == 0 {
        return x;
    }
    let r = x.wrapping_rem(y);
    if r != 0 && ((r < 0) != (y < 0)) { r + y } else { r }
}

/// Python's float `%`: `fmod`, moved into the divisor's sign; a zero result takes the sign of
/// the divisor; `x rem 0` is NaN.
pub fn float_rem<E: Float>(x: E, y: E) -> E {
    let r = x.fmod(y);
    if r != E::zero() {
        if (y < E::zero()) != (r < E::zero()) { r + y } else { r }
    } else {
        E::zero().copysign(y)
    }
}

/// Maximum that propagates NaN and orders -0.0 below +0.0 (IEEE 754-2019 `maximum`, which
/// is also Cranelift's `fmax`).
pub fn fmax<E: Float>(x: E, y: E) -> E {
    if x.is_nan() {
        x
    } else if y.is_nan() {
        y
    } else if x > y {
        x
    } else if y > x {
        y
    } else if x.is_sign_negative() {
        // Equal: only ±0 can differ, and +0 is the larger.
        y
    } else {
        x
    }
}

/// Minimum that propagates NaN and orders -0.0 below +0.0 (IEEE 754-2019 `minimum`).
pub fn fmin<E: Float>(x: E, y: E) -> E {
    if x.is_nan() {
        x
    } else if y.is_nan() {
        y
    } else if x < y {
        x
    } else if y < x {
        y
    } else if x.is_sign_negative() {
        x
    } else {
        y
    }
}

/// The order `argmax` uses: NaN above everything (so the first NaN wins), -0.0 equal to +0.0.
fn float_greater<E: Float>(x: E, y: E) -> bool {
    match (x.is_nan(), y.is_nan()) {
        (true, false) => true,
        (false, false) => x > y,
        (_, true) => false,
    }
}

/// The order `topk` sorts by: descending, NaN first (largest), equal elements `Equal` so the
/// stable sort keeps them in index order.
fn float_desc<E: Float>(x: E, y: E) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
    }
}

/// Applies an elementwise op (`Unary`, `Binary`, `Cast`, `Select`) to scalar constants with
/// exactly the interpreter's semantics, computing floats in f64. Arguments and result are
/// encoded like [`Op::Const`] values (ints exact, bools 0/1). `None` for other ops or dtypes
/// the op does not accept. Constant folding uses this so folded and unfolded graphs agree.
pub fn eval_const_elementwise(op: &Op, args: &[(f64, DType)]) -> Option<f64> {
    let scalar = |&(v, dt): &(f64, DType)| -> Value<f64> {
        let dim = IxDyn(&[]);
        match dt {
            DType::F32 => Value::Float(ArrayD::from_elem(dim, v)),
            DType::I32 => Value::Int(ArrayD::from_elem(dim, v as i32)),
            DType::Bool => Value::Bool(ArrayD::from_elem(dim, v != 0.0)),
        }
    };
    let vals: Vec<Value<f64>> = args.iter().map(scalar).collect();
    let result = match (op, vals.as_slice()) {
        (Op::Unary(u), [x]) => unary(*u, x)?,
        (Op::Binary(b), [x, y]) => binary(*b, x, y)?,
        (Op::Cast { to }, [x]) => cast(x, *to),
        (Op::Select, [Value::Bool(c), x, y]) => {
            let pick = *c.iter().next()?;
            if pick { x.clone() } else { y.clone() }
        }
        (
            Op::Input { .. }
            | Op::Param { .. }
            | Op::Const { .. }
            | Op::Iota { .. }
            | Op::RandomUniform { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Select
            | Op::Cast { .. }
            | Op::Reduce { .. }
            | Op::ArgMax { .. }
            | Op::MatMul { .. }
            | Op::Reshape
            | Op::Permute { .. }
            | Op::Broadcast
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::Concat { .. }
            | Op::Gather
            | Op::ScatterAdd { .. }
            | Op::Cumsum { .. }
            | Op::TopK { .. },
            _,
        ) => return None,
    };
    match result {
        Value::Float(a) => a.iter().next().copied(),
        Value::Int(a) => a.iter().next().map(|&v| f64::from(v)),
        Value::Bool(a) => a.iter().next().map(|&v| if v { 1.0 } else { 0.0 }),
    }
}
