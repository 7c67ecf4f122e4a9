//! The prelude: built-in functions and tensor methods. Each lowers to primitive graph ops (or
//! computes a compile-time value); everything richer (softmax, layer norm, attention, losses)
//! is written in the language in `stdlib/nn.model`.

use super::eval::{ArgVal, Ctx, Elaborator};
use super::value::{InitSpec, Value};
use crate::diag::Diagnostic;
use crate::ir::{BinaryOp, DType, Init, NodeId, Op, ReduceOp, ShapeDisplay, TensorType, UnaryOp};
use crate::source::Span;
use std::rc::Rc;

/// Every built-in function name.
pub const BUILTINS: &[&str] = &[
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "tanh",
    "sigmoid",
    "erf",
    "abs",
    "sin",
    "cos",
    "floor",
    "ceil",
    "round",
    "recip",
    "maximum",
    "minimum",
    "clamp",
    "where",
    "sum",
    "mean",
    "max",
    "min",
    "argmax",
    "reshape",
    "transpose",
    "permute",
    "flatten",
    "unsqueeze",
    "squeeze",
    "concat",
    "stack",
    "pad",
    "broadcast_to",
    "gather",
    "scatter_add",
    "one_hot",
    "topk",
    "cumsum",
    "iota",
    "arange",
    "zeros",
    "ones",
    "full",
    "normal",
    "uniform",
    "glorot",
    "xavier",
    "glorot_normal",
    "xavier_normal",
    "kaiming",
    "he",
    "kaiming_normal",
    "he_normal",
    "rand_uniform",
    "float",
    "int",
    "bool",
    "len",
    "range",
    "prod",
    "numel",
    "shape",
    "update",
    "matmul",
    "str",
    "error",
];

/// Built-ins that can also be called as tensor methods (`x.reshape(...)`).
pub const METHODS: &[&str] = &[
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "tanh",
    "sigmoid",
    "erf",
    "abs",
    "sin",
    "cos",
    "floor",
    "recip",
    "clamp",
    "sum",
    "mean",
    "max",
    "min",
    "argmax",
    "reshape",
    "view",
    "transpose",
    "permute",
    "flatten",
    "unsqueeze",
    "squeeze",
    "broadcast_to",
    "expand",
    "cumsum",
    "topk",
    "float",
    "int",
    "bool",
    "numel",
    "matmul",
];

pub fn lookup_builtin(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|b| **b == name).copied()
}

pub fn lookup_method(name: &str) -> Option<&'static str> {
    match name {
        "view" => Some("reshape"),
        "expand" => Some("broadcast_to"),
        _ => METHODS.iter().find(|b| **b == name).copied(),
    }
}

/// Call arguments split into positional and named, with helpers that report misuse.
struct Args {
    name: &'static str,
    pos: Vec<ArgVal>,
    named: Vec<ArgVal>,
    span: Span,
}

impl Args {
    fn get(&self, i: usize, name: &str) -> Option<&ArgVal> {
        self.named
            .iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.name == name))
            .or_else(|| self.pos.get(i))
    }

    fn span_of(&self, i: usize, name: &str) -> Span {
        self.get(i, name).map_or(self.span, |a| a.span)
    }
}

fn unary_of(name: &str) -> Option<UnaryOp> {
    Some(match name {
        "exp" => UnaryOp::Exp,
        "log" => UnaryOp::Log,
        "sqrt" => UnaryOp::Sqrt,
        "rsqrt" => UnaryOp::Rsqrt,
        "tanh" => UnaryOp::Tanh,
        "sigmoid" => UnaryOp::Sigmoid,
        "erf" => UnaryOp::Erf,
        "abs" => UnaryOp::Abs,
        "sin" => UnaryOp::Sin,
        "cos" => UnaryOp::Cos,
        "floor" => UnaryOp::Floor,
        "recip" => UnaryOp::Recip,
        _ => return None,
    })
}

fn ct_unary(name: &str, x: f64) -> f64 {
    match name {
        "exp" => x.exp(),
        "log" => x.ln(),
        "sqrt" => x.sqrt(),
        "rsqrt" => 1.0 / x.sqrt(),
        "tanh" => x.tanh(),
        "sigmoid" => 1.0 / (1.0 + (-x).exp()),
        "erf" => erf(x),
        "abs" => x.abs(),
        "sin" => x.sin(),
        "cos" => x.cos(),
        "floor" => x.floor(),
        "recip" => 1.0 / x,
        _ => f64::NAN,
    }
}

/// Abramowitz–Stegun 7.1.26 is too coarse for compile-time use; this series/continued
/// fraction pair is accurate to ~1e-15.
fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.5 {
        // Maclaurin series.
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        for n in 1..60 {
            term *= -x2 / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction.
        let mut f = 0.0;
        for n in (1..60).rev() {
            f = n as f64 / 2.0 / (a + f);
        }
        1.0 - (-a * a).exp() / (a + f) / std::f64::consts::PI.sqrt()
    };
    if x < 0.0 { -r } else { r }
}

impl<'p> Elaborator<'p> {
    pub fn call_builtin(
        &mut self,
        name: &'static str,
        recv: Option<Value>,
        args: Vec<ArgVal>,
        span: Span,
        ctx: &mut Ctx,
    ) -> Value {
        let mut pos = Vec::new();
        let mut named = Vec::new();
        if let Some(r) = recv {
            pos.push(ArgVal { name: None, value: r, span });
        }
        for a in args {
            if a.value.is_poison() {
                return Value::Poison;
            }
            if a.name.is_some() { named.push(a) } else { pos.push(a) }
        }
        let a = Args { name, pos, named, span };
        self.builtin(a, ctx).unwrap_or(Value::Poison)
    }

    // Accessors that report a diagnostic and return None on misuse.

    fn arg_count(&mut self, a: &Args, min: usize, max: usize, allowed_named: &[&str]) -> Option<()> {
        for n in &a.named {
            let nm = &n.name.as_ref().expect("named args have names").name;
            if !allowed_named.contains(&nm.as_str()) {
                self.err_at(
                    "E0302",
                    n.span,
                    format!("`{}` has no parameter `{nm}`", a.name),
                    "unknown parameter",
                    Some(if allowed_named.is_empty() {
                        format!("`{}` takes no named arguments", a.name)
                    } else {
                        format!("named parameters of `{}`: {}", a.name, allowed_named.join(", "))
                    }),
                );
                return None;
            }
        }
        let n = a.pos.len();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            self.err_at(
                "E0301",
                a.span,
                format!("`{}` takes {want} positional argument(s), got {n}", a.name),
                "wrong number of arguments",
                None,
            );
            return None;
        }
        Some(())
    }

    fn tensor_arg(&mut self, a: &Args, i: usize, name: &str) -> Option<NodeId> {
        match a.get(i, name).map(|x| &x.value) {
            Some(Value::Tensor(n)) => Some(*n),
            Some(Value::Poison) => None,
            Some(other) => {
                self.err_at(
                    "E0308",
                    a.span_of(i, name),
                    format!("argument `{name}` of `{}` must be a tensor, found {}", a.name, other.kind()),
                    "not a tensor",
                    None,
                );
                None
            }
            None => {
                self.err_at(
                    "E0303",
                    a.span,
                    format!("`{}` needs the argument `{name}`", a.name),
                    "missing argument",
                    None,
                );
                None
            }
        }
    }

    fn int_arg(&mut self, a: &Args, i: usize, name: &str, default: Option<i64>) -> Option<i64> {
        match a.get(i, name).map(|x| &x.value) {
            Some(Value::Int(v)) => Some(*v),
            Some(Value::Poison) => None,
            None if default.is_some() => default,
            Some(other) => {
                self.err_at(
                    "E0308",
                    a.span_of(i, name),
                    format!("argument `{name}` of `{}` must be an int, found {}", a.name, other.kind()),
                    "not an int",
                    None,
                );
                None
            }
            None => {
                self.err_at(
                    "E0303",
                    a.span,
                    format!("`{}` needs the argument `{name}`", a.name),
                    "missing argument",
                    None,
                );
                None
            }
        }
    }

    fn float_arg(&mut self, a: &Args, i: usize, name: &str, default: Option<f64>) -> Option<f64> {
        match a.get(i, name).map(|x| &x.value) {
            Some(Value::Int(v)) => Some(*v as f64),
            Some(Value::Float(v)) => Some(*v),
            Some(Value::Poison) => None,
            None if default.is_some() => default,
            Some(other) => {
                self.err_at(
                    "E0308",
                    a.span_of(i, name),
                    format!("argument `{name}` of `{}` must be a number, found {}", a.name, other.kind()),
                    "not a number",
                    None,
                );
                None
            }
            None => {
                self.err_at(
                    "E0303",
                    a.span,
                    format!("`{}` needs the argument `{name}`", a.name),
                    "missing argument",
                    None,
                );
                None
            }
        }
    }

    fn bool_arg(&mut self, a: &Args, i: usize, name: &str, default: bool) -> Option<bool> {
        match a.get(i, name).map(|x| &x.value) {
            Some(Value::Bool(v)) => Some(*v),
            None => Some(default),
            Some(Value::Poison) => None,
            Some(other) => {
                self.err_at(
                    "E0308",
                    a.span_of(i, name),
                    format!("argument `{name}` of `{}` must be a bool, found {}", a.name, other.kind()),
                    "not a bool",
                    None,
                );
                None
            }
        }
    }

    /// A list of ints, given either as one list argument or as the remaining positionals.
    fn int_list(&mut self, a: &Args, from: usize) -> Option<Vec<i64>> {
        let vals: Vec<(Value, Span)> = match a.pos.get(from) {
            Some(ArgVal { value: Value::List(xs) | Value::Tuple(xs), span, .. })
                if a.pos.len() == from + 1 =>
            {
                xs.iter().map(|x| (x.clone(), *span)).collect()
            }
            _ => a.pos[from.min(a.pos.len())..].iter().map(|x| (x.value.clone(), x.span)).collect(),
        };
        let mut out = Vec::with_capacity(vals.len());
        for (v, s) in vals {
            match v {
                Value::Int(i) => out.push(i),
                Value::Poison => return None,
                other => {
                    self.err_at(
                        "E0308",
                        s,
                        format!("`{}` needs ints here, found {}", a.name, other.kind()),
                        "not an int",
                        None,
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    fn shape_arg(&mut self, a: &Args, from: usize, span: Span) -> Option<Vec<usize>> {
        let dims = self.int_list(a, from)?;
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            self.err_at("E0206", span, format!("dimension {d} is negative"), "negative size", None);
            return None;
        }
        let shape: Vec<usize> = dims.into_iter().map(|d| d as usize).collect();
        self.check_numel(&shape, span).then_some(shape)
    }

    /// Axes argument for reductions: none (all), an int, or a list of ints.
    fn axes_arg(&mut self, a: &Args, i: usize, rank: usize) -> Option<Vec<usize>> {
        match a.get(i, "axis").map(|x| (x.value.clone(), x.span)) {
            None | Some((Value::None, _)) => Some((0..rank).collect()),
            Some((Value::List(xs) | Value::Tuple(xs), s)) => {
                let mut out = Vec::new();
                for x in xs.iter() {
                    out.push(self.axis(x, rank, s)?);
                }
                Some(out)
            }
            Some((v, s)) => Some(vec![self.axis(&v, rank, s)?]),
        }
    }

    fn builtin(&mut self, a: Args, ctx: &mut Ctx) -> Option<Value> {
        let span = a.span;
        let name = a.name;
        if let Some(op) = unary_of(name) {
            self.arg_count(&a, 1, 1, &[])?;
            return match &a.pos[0].value {
                Value::Tensor(x) => {
                    let dt = self.graph.dtype(*x);
                    if !op.accepts(dt) {
                        self.err_at(
                            "E0202",
                            a.pos[0].span,
                            format!("`{name}` needs an f32 tensor, found {dt}"),
                            format!("{dt} tensor"),
                            Some("convert with `.float()`".into()),
                        );
                        return None;
                    }
                    Some(Value::Tensor(self.unary_op(op, *x)))
                }
                Value::Int(i) if name == "floor" || name == "abs" => {
                    Some(Value::Int(if name == "abs" { i.checked_abs()? } else { *i }))
                }
                Value::Int(_) | Value::Float(_) => {
                    let x = self.float_arg(&a, 0, "x", None)?;
                    let r = ct_unary(name, x);
                    if name == "floor" {
                        return Some(Value::Int(r as i64));
                    }
                    Some(Value::Float(r))
                }
                other => {
                    self.err_at(
                        "E0308",
                        a.pos[0].span,
                        format!("`{name}` needs a tensor or a number, found {}", other.kind()),
                        "wrong argument",
                        None,
                    );
                    None
                }
            };
        }
        match name {
            "ceil" | "round" => {
                self.arg_count(&a, 1, 1, &[])?;
                let x = self.float_arg(&a, 0, "x", None)?;
                let r = if name == "ceil" { x.ceil() } else { x.round() };
                if !r.is_finite() || r.abs() > 9.0e15 {
                    self.err_at(
                        "E0402",
                        span,
                        format!("`{name}` of {x} is not a representable int"),
                        "out of range",
                        None,
                    );
                    return None;
                }
                Some(Value::Int(r as i64))
            }
            "maximum" | "minimum" => {
                self.arg_count(&a, 2, 2, &[])?;
                let op = if name == "maximum" { BinaryOp::Max } else { BinaryOp::Min };
                self.elementwise2(op, &a.pos[0], &a.pos[1], span)
            }
            "clamp" => {
                self.arg_count(&a, 1, 3, &["lo", "hi"])?;
                let mut v = a.pos[0].clone();
                if let Some(lo) = a.get(1, "lo").cloned() {
                    v = ArgVal { name: None, value: self.elementwise2(BinaryOp::Max, &v, &lo, span)?, span };
                }
                if let Some(hi) = a.get(2, "hi").cloned() {
                    v = ArgVal { name: None, value: self.elementwise2(BinaryOp::Min, &v, &hi, span)?, span };
                }
                Some(v.value)
            }
            "where" => {
                self.arg_count(&a, 3, 3, &[])?;
                let c = self.tensor_arg(&a, 0, "cond")?;
                if self.graph.dtype(c) != DType::Bool {
                    self.err_at(
                        "E0202",
                        a.pos[0].span,
                        format!("`where` needs a bool condition, found {}", self.graph.dtype(c)),
                        "not bool",
                        Some("compare to get a bool tensor, e.g. `mask > 0`".into()),
                    );
                    return None;
                }
                let dt = [&a.pos[1].value, &a.pos[2].value]
                    .iter()
                    .find_map(|v| if let Value::Tensor(n) = v { Some(self.graph.dtype(*n)) } else { None })
                    .unwrap_or(
                        if matches!(a.pos[1].value, Value::Int(_)) && matches!(a.pos[2].value, Value::Int(_))
                        {
                            DType::I32
                        } else {
                            DType::F32
                        },
                    );
                let x = self.scalar_to_tensor(&a.pos[1].value, dt, a.pos[1].span)?;
                let y = self.scalar_to_tensor(&a.pos[2].value, dt, a.pos[2].span)?;
                if self.graph.dtype(x) != self.graph.dtype(y) {
                    self.err_at(
                        "E0202",
                        span,
                        format!(
                            "`where` branches differ in element type: {} and {}",
                            self.graph.dtype(x),
                            self.graph.dtype(y)
                        ),
                        "mixed types",
                        None,
                    );
                    return None;
                }
                let sc = self.graph.shape(c).to_vec();
                let sx = self.graph.shape(x).to_vec();
                let sy = self.graph.shape(y).to_vec();
                let Some(s1) = Self::broadcast_shapes(&sc, &sx).and_then(|s| Self::broadcast_shapes(&s, &sy))
                else {
                    self.err_at(
                        "E0203",
                        span,
                        format!(
                            "`where` shapes {}, {} and {} cannot be broadcast together",
                            ShapeDisplay(&sc),
                            ShapeDisplay(&sx),
                            ShapeDisplay(&sy)
                        ),
                        "in this call",
                        None,
                    );
                    return None;
                };
                let c = self.graph.broadcast_to(c, &s1).ok()?;
                let x = self.graph.broadcast_to(x, &s1).ok()?;
                let y = self.graph.broadcast_to(y, &s1).ok()?;
                Some(Value::Tensor(self.graph.add(Op::Select, &[c, x, y], None)))
            }
            "sum" | "mean" => {
                self.arg_count(&a, 1, 2, &["axis", "keepdim"])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let rank = self.graph.shape(x).len();
                let axes = self.axes_arg(&a, 1, rank)?;
                let keep = self.bool_arg(&a, 2, "keepdim", false)?;
                let dt = self.graph.dtype(x);
                let x = if dt == DType::Bool { self.graph.cast(x, DType::I32) } else { x };
                if name == "mean" && dt != DType::F32 {
                    self.err_at(
                        "E0202",
                        a.pos[0].span,
                        format!("`mean` needs an f32 tensor, found {dt}"),
                        "not f32",
                        Some("convert with `.float()`".into()),
                    );
                    return None;
                }
                let r = self.reduce(ReduceOp::Sum, x, &axes, keep);
                if name == "sum" {
                    return Some(Value::Tensor(r));
                }
                let shape = self.graph.shape(x).to_vec();
                let count: usize = axes.iter().map(|&i| shape[i]).product();
                let c = self.graph.constant(1.0 / count.max(1) as f64, self.graph.ty(r).clone());
                Some(Value::Tensor(self.graph.binary(BinaryOp::Mul, r, c)))
            }
            "max" | "min" => {
                // `max(a, b)` on compile-time numbers; `max(x, axis)` reduces a tensor.
                if let Some(ArgVal { value: Value::Int(_) | Value::Float(_), .. }) = a.pos.first() {
                    self.arg_count(&a, 2, usize::MAX, &[])?;
                    let mut best = a.pos[0].value.clone();
                    for v in &a.pos[1..] {
                        let better = match (&best, &v.value) {
                            (Value::Int(x), Value::Int(y)) => (name == "max") == (y > x),
                            (x, y) => {
                                let (x, y) = (num(x)?, num(y)?);
                                (name == "max") == (y > x)
                            }
                        };
                        if better {
                            best = v.value.clone();
                        }
                    }
                    return Some(best);
                }
                if let Some(ArgVal { value: Value::List(xs), .. }) = a.pos.first() {
                    let xs = xs.clone();
                    let mut best: Option<Value> = None;
                    for v in xs.iter() {
                        let n = num(v)?;
                        if best.as_ref().is_none_or(|b| (name == "max") == (n > num(b).unwrap_or(n))) {
                            best = Some(v.clone());
                        }
                    }
                    return best.or(Some(Value::Poison));
                }
                self.arg_count(&a, 1, 2, &["axis", "keepdim"])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                if let Some(ArgVal { value: Value::Tensor(_) | Value::Float(_), span: s, .. }) = a.pos.get(1)
                {
                    self.err_at(
                        "E0308",
                        *s,
                        format!("the second argument of `{name}` on a tensor is an axis"),
                        "not an axis",
                        Some(format!("for the elementwise {name}imum of two values use `{name}imum(a, b)`")),
                    );
                    return None;
                }
                let rank = self.graph.shape(x).len();
                let axes = self.axes_arg(&a, 1, rank)?;
                let keep = self.bool_arg(&a, 2, "keepdim", false)?;
                let op = if name == "max" { ReduceOp::Max } else { ReduceOp::Min };
                if self.graph.dtype(x) == DType::Bool {
                    self.err_at(
                        "E0202",
                        a.pos[0].span,
                        format!("`{name}` does not apply to bool tensors"),
                        "bool",
                        None,
                    );
                    return None;
                }
                Some(Value::Tensor(self.reduce(op, x, &axes, keep)))
            }
            "argmax" => {
                self.arg_count(&a, 1, 2, &["axis", "keepdim"])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let rank = self.graph.shape(x).len();
                let axis_v = a.get(1, "axis").map_or(Value::Int(-1), |v| v.value.clone());
                let axis = self.axis(&axis_v, rank, span)?;
                let keep = self.bool_arg(&a, 2, "keepdim", false)?;
                let r = self.graph.add(Op::ArgMax { axis: axis as u32 }, &[x], None);
                if keep {
                    return Some(Value::Tensor(r));
                }
                let mut shape = self.graph.shape(x).to_vec();
                shape.remove(axis);
                Some(Value::Tensor(self.graph.reshape(r, shape)))
            }
            "reshape" => {
                self.arg_count(&a, 2, usize::MAX, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let dims = self.int_list(&a, 1)?;
                Some(self.reshape_to(x, &dims, span))
            }
            "transpose" => {
                self.arg_count(&a, 1, 3, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let rank = self.graph.shape(x).len();
                if rank < 2 && a.pos.len() == 1 {
                    return Some(Value::Tensor(x));
                }
                let i = self.axis(&a.pos.get(1).map_or(Value::Int(-2), |v| v.value.clone()), rank, span)?;
                let j = self.axis(&a.pos.get(2).map_or(Value::Int(-1), |v| v.value.clone()), rank, span)?;
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.swap(i, j);
                Some(Value::Tensor(self.permute(x, perm)))
            }
            "permute" => {
                self.arg_count(&a, 2, usize::MAX, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let rank = self.graph.shape(x).len();
                let dims = self.int_list(&a, 1)?;
                let mut perm = Vec::new();
                for d in dims {
                    perm.push(self.axis(&Value::Int(d), rank, span)?);
                }
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..rank).collect::<Vec<_>>() {
                    self.err_at(
                        "E0205",
                        span,
                        format!("{perm:?} is not a permutation of the {rank} axes"),
                        "bad permutation",
                        Some("list every axis exactly once".into()),
                    );
                    return None;
                }
                Some(Value::Tensor(self.permute(x, perm)))
            }
            "flatten" => {
                self.arg_count(&a, 1, 3, &["start", "end"])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let shape = self.graph.shape(x).to_vec();
                if shape.is_empty() {
                    return Some(Value::Tensor(self.graph.reshape(x, vec![1])));
                }
                let s = self.axis(
                    &a.get(1, "start").map_or(Value::Int(0), |v| v.value.clone()),
                    shape.len(),
                    span,
                )?;
                let e = self.axis(
                    &a.get(2, "end").map_or(Value::Int(-1), |v| v.value.clone()),
                    shape.len(),
                    span,
                )?;
                if s > e {
                    self.err_at(
                        "E0205",
                        span,
                        format!("flatten start {s} comes after end {e}"),
                        "bad range",
                        None,
                    );
                    return None;
                }
                let mut ns = shape[..s].to_vec();
                ns.push(shape[s..=e].iter().product());
                ns.extend_from_slice(&shape[e + 1..]);
                Some(Value::Tensor(self.graph.reshape(x, ns)))
            }
            "unsqueeze" => {
                self.arg_count(&a, 2, 2, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let mut shape = self.graph.shape(x).to_vec();
                let ax = self.axis(&a.pos[1].value, shape.len() + 1, a.pos[1].span)?;
                shape.insert(ax, 1);
                Some(Value::Tensor(self.graph.reshape(x, shape)))
            }
            "squeeze" => {
                self.arg_count(&a, 1, 2, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let shape = self.graph.shape(x).to_vec();
                let ns: Vec<usize> = match a.pos.get(1) {
                    None => shape.iter().copied().filter(|&d| d != 1).collect(),
                    Some(v) => {
                        let ax = self.axis(&v.value, shape.len(), v.span)?;
                        if shape[ax] != 1 {
                            self.err_at(
                                "E0205",
                                v.span,
                                format!("cannot squeeze axis {ax} of size {}", shape[ax]),
                                "not size 1",
                                None,
                            );
                            return None;
                        }
                        shape.iter().enumerate().filter(|(i, _)| *i != ax).map(|(_, &d)| d).collect()
                    }
                };
                Some(Value::Tensor(self.graph.reshape(x, ns)))
            }
            "concat" | "stack" => {
                self.arg_count(&a, 1, 2, &["axis"])?;
                let items = match &a.pos[0].value {
                    Value::List(xs) | Value::Tuple(xs) => xs.clone(),
                    other => {
                        self.err_at(
                            "E0308",
                            a.pos[0].span,
                            format!("`{name}` takes a list of tensors, found {}", other.kind()),
                            "not a list",
                            None,
                        );
                        return None;
                    }
                };
                if items.is_empty() {
                    self.err_at(
                        "E0308",
                        a.pos[0].span,
                        format!("`{name}` needs at least one tensor"),
                        "empty list",
                        None,
                    );
                    return None;
                }
                let mut nodes = Vec::new();
                for v in items.iter() {
                    match v {
                        Value::Tensor(n) => nodes.push(*n),
                        Value::Poison => return None,
                        other => {
                            self.err_at(
                                "E0308",
                                a.pos[0].span,
                                format!("`{name}` takes tensors, found {}", other.kind()),
                                "not a tensor",
                                None,
                            );
                            return None;
                        }
                    }
                }
                let rank = self.graph.shape(nodes[0]).len() + usize::from(name == "stack");
                let axis_v = a.get(1, "axis").map_or(Value::Int(0), |v| v.value.clone());
                let axis = self.axis(&axis_v, rank, span)?;
                if name == "stack" {
                    for n in nodes.iter_mut() {
                        let mut s = self.graph.shape(*n).to_vec();
                        s.insert(axis.min(s.len()), 1);
                        *n = self.graph.reshape(*n, s);
                    }
                }
                let first = self.graph.ty(nodes[0]).clone();
                for n in &nodes[1..] {
                    let t = self.graph.ty(*n).clone();
                    let ok = t.dtype == first.dtype
                        && t.rank() == first.rank()
                        && t.shape
                            .iter()
                            .zip(&first.shape)
                            .enumerate()
                            .all(|(i, (x, y))| i == axis || x == y);
                    if !ok {
                        self.err_at(
                            "E0201",
                            span,
                            format!("cannot {name} {first} and {t} along axis {axis}"),
                            "shapes differ",
                            Some(format!("all dimensions except axis {axis} must be equal")),
                        );
                        return None;
                    }
                }
                let mut out_shape = first.shape.clone();
                out_shape[axis] = nodes.iter().map(|n| self.graph.shape(*n)[axis]).sum();
                if !self.check_numel(&out_shape, span) {
                    return None;
                }
                if nodes.len() == 1 {
                    return Some(Value::Tensor(nodes[0]));
                }
                Some(Value::Tensor(self.graph.add(Op::Concat { axis: axis as u32 }, &nodes, None)))
            }
            "pad" => {
                self.arg_count(&a, 4, 4, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let rank = self.graph.shape(x).len();
                let axis = self.axis(&a.pos[1].value, rank, a.pos[1].span)?;
                let lo = self.int_arg(&a, 2, "lo", None)?;
                let hi = self.int_arg(&a, 3, "hi", None)?;
                if !(0..=1 << 24).contains(&lo) || !(0..=1 << 24).contains(&hi) {
                    self.err_at(
                        "E0205",
                        span,
                        format!("padding {lo}, {hi} must be between 0 and 2^24"),
                        "bad padding",
                        None,
                    );
                    return None;
                }
                let mut s = self.graph.shape(x).to_vec();
                s[axis] += (lo + hi) as usize;
                if !self.check_numel(&s, span) {
                    return None;
                }
                if lo == 0 && hi == 0 {
                    return Some(Value::Tensor(x));
                }
                Some(Value::Tensor(self.graph.add(
                    Op::Pad { axis: axis as u32, lo: lo as usize, hi: hi as usize, interior: 0 },
                    &[x],
                    None,
                )))
            }
            "broadcast_to" => {
                self.arg_count(&a, 2, usize::MAX, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let shape = self.shape_arg(&a, 1, span)?;
                match self.graph.broadcast_to(x, &shape) {
                    Ok(n) => Some(Value::Tensor(n)),
                    Err(_) => {
                        let t = self.graph.ty(x).clone();
                        self.err_at(
                            "E0203",
                            span,
                            format!("cannot broadcast {t} to {}", ShapeDisplay(&shape)),
                            "incompatible",
                            None,
                        );
                        None
                    }
                }
            }
            "gather" => {
                self.arg_count(&a, 2, 2, &[])?;
                let t = self.tensor_arg(&a, 0, "table")?;
                let i = self.tensor_arg(&a, 1, "idx")?;
                if self.graph.dtype(i) != DType::I32 || self.graph.shape(t).is_empty() {
                    self.err_at(
                        "E0202",
                        span,
                        "`gather(table, idx)` needs a table of rank >= 1 and i32 indices",
                        "wrong operands",
                        None,
                    );
                    return None;
                }
                let mut s = self.graph.shape(i).to_vec();
                s.extend_from_slice(&self.graph.shape(t)[1..]);
                if !self.check_numel(&s, span) {
                    return None;
                }
                Some(Value::Tensor(self.graph.add(Op::Gather, &[t, i], None)))
            }
            "scatter_add" => {
                self.arg_count(&a, 3, 3, &[])?;
                let i = self.tensor_arg(&a, 0, "idx")?;
                let src = self.tensor_arg(&a, 1, "src")?;
                let rows = self.int_arg(&a, 2, "rows", None)?;
                if rows < 0 {
                    self.err_at("E0206", a.pos[2].span, "rows must be non-negative", "negative", None);
                    return None;
                }
                let (ti, ts) = (self.graph.ty(i).clone(), self.graph.ty(src).clone());
                if ti.dtype != DType::I32
                    || ts.rank() < ti.rank()
                    || ts.shape[..ti.rank()] != ti.shape[..]
                    || ts.dtype == DType::Bool
                {
                    self.err_at(
                        "E0201",
                        span,
                        format!("`scatter_add(idx, src, rows)`: src {ts} must start with the shape of the i32 indices {ti}"),
                        "wrong operands",
                        None,
                    );
                    return None;
                }
                let mut s = vec![rows as usize];
                s.extend_from_slice(&ts.shape[ti.rank()..]);
                if !self.check_numel(&s, span) {
                    return None;
                }
                Some(Value::Tensor(self.graph.add(Op::ScatterAdd { rows: rows as usize }, &[i, src], None)))
            }
            "one_hot" => {
                self.arg_count(&a, 2, 2, &[])?;
                let i = self.tensor_arg(&a, 0, "idx")?;
                let n = self.int_arg(&a, 1, "n", None)?;
                if self.graph.dtype(i) != DType::I32 || n <= 0 {
                    self.err_at(
                        "E0202",
                        span,
                        "`one_hot(idx, n)` needs i32 indices and n > 0",
                        "wrong operands",
                        None,
                    );
                    return None;
                }
                let mut s = self.graph.shape(i).to_vec();
                s.push(n as usize);
                if !self.check_numel(&s, span) {
                    return None;
                }
                let rank = s.len();
                let io = self.iota(s.clone(), rank - 1);
                let mut s1 = self.graph.shape(i).to_vec();
                s1.push(1);
                let i1 = self.graph.reshape(i, s1);
                let ib = self.graph.broadcast_to(i1, &s).ok()?;
                let eq = self.graph.binary(BinaryOp::Eq, io, ib);
                Some(Value::Tensor(self.graph.cast(eq, DType::F32)))
            }
            "topk" => {
                self.arg_count(&a, 2, 2, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let k = self.int_arg(&a, 1, "k", None)?;
                let t = self.graph.ty(x).clone();
                let last = t.shape.last().copied().unwrap_or(0) as i64;
                if t.rank() == 0 || k < 1 || k > last {
                    self.err_at(
                        "E0502",
                        a.pos[1].span,
                        format!("top-{k} of {t}: k must be between 1 and the last dimension ({last})"),
                        "bad k",
                        None,
                    );
                    return None;
                }
                Some(Value::Tensor(self.graph.add(Op::TopK { k: k as usize }, &[x], None)))
            }
            "cumsum" => {
                self.arg_count(&a, 1, 2, &["axis", "reverse"])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                let rank = self.graph.shape(x).len();
                let axis_v = a.get(1, "axis").map_or(Value::Int(-1), |v| v.value.clone());
                let axis = self.axis(&axis_v, rank, span)?;
                let reverse = self.bool_arg(&a, 2, "reverse", false)?;
                let x = if self.graph.dtype(x) == DType::Bool { self.graph.cast(x, DType::I32) } else { x };
                Some(Value::Tensor(self.graph.add(Op::Cumsum { axis: axis as u32, reverse }, &[x], None)))
            }
            "iota" | "arange" => {
                self.arg_count(&a, 1, 2, &["axis"])?;
                match &a.pos[0].value {
                    Value::Int(n) => {
                        if *n < 0 {
                            self.err_at(
                                "E0206",
                                a.pos[0].span,
                                "size must be non-negative",
                                "negative",
                                None,
                            );
                            return None;
                        }
                        if !self.check_numel(&[*n as usize], span) {
                            return None;
                        }
                        Some(Value::Tensor(self.iota(vec![*n as usize], 0)))
                    }
                    _ => {
                        let shape = self.shape_arg(
                            &Args { pos: vec![a.pos[0].clone()], named: vec![], ..a },
                            0,
                            span,
                        )?;
                        let ax = match a.pos.get(1) {
                            Some(v) => self.axis(&v.value, shape.len(), v.span)?,
                            None => 0,
                        };
                        if shape.is_empty() {
                            self.err_at(
                                "E0206",
                                span,
                                "iota needs a shape of rank >= 1",
                                "empty shape",
                                None,
                            );
                            return None;
                        }
                        Some(Value::Tensor(self.iota(shape, ax)))
                    }
                }
            }
            "zeros" | "ones" => {
                if a.pos.is_empty() && a.named.is_empty() {
                    return Some(Value::Init(Rc::new(InitSpec::Ready(if name == "zeros" {
                        Init::Zeros
                    } else {
                        Init::Ones
                    }))));
                }
                self.arg_count(&a, 1, usize::MAX, &[])?;
                let shape = self.shape_arg(&a, 0, span)?;
                let v = if name == "zeros" { 0.0 } else { 1.0 };
                Some(Value::Tensor(self.graph.constant(v, TensorType::f32(shape))))
            }
            "full" => {
                if a.pos.len() == 1 && a.named.is_empty() {
                    let v = self.float_arg(&a, 0, "value", None)?;
                    return Some(Value::Init(Rc::new(InitSpec::Ready(Init::Full(v)))));
                }
                self.arg_count(&a, 2, 2, &[])?;
                let shape =
                    self.shape_arg(&Args { pos: vec![a.pos[0].clone()], named: vec![], ..a }, 0, span)?;
                let (v, dt) = match &a.pos[1].value {
                    Value::Int(i) => (*i as f64, DType::I32),
                    Value::Float(f) => (*f, DType::F32),
                    Value::Bool(b) => (f64::from(u8::from(*b)), DType::Bool),
                    other => {
                        self.err_at(
                            "E0308",
                            a.pos[1].span,
                            format!("fill value must be a number, found {}", other.kind()),
                            "not a number",
                            None,
                        );
                        return None;
                    }
                };
                Some(Value::Tensor(self.graph.constant(v, TensorType::new(dt, shape))))
            }
            "normal" => {
                self.arg_count(&a, 0, 2, &["std", "mean"])?;
                let std = self.float_arg(&a, 0, "std", Some(1.0))?;
                let mean = self.float_arg(&a, 1, "mean", Some(0.0))?;
                Some(Value::Init(Rc::new(InitSpec::Ready(Init::Normal { mean, std }))))
            }
            "uniform" => {
                self.arg_count(&a, 0, 2, &["lo", "hi"])?;
                let lo = self.float_arg(&a, 0, "lo", Some(0.0))?;
                let hi = self.float_arg(&a, 1, "hi", Some(1.0))?;
                if lo > hi {
                    self.err_at(
                        "E0308",
                        span,
                        format!("uniform({lo}, {hi}): the lower bound exceeds the upper"),
                        "empty range",
                        None,
                    );
                    return None;
                }
                Some(Value::Init(Rc::new(InitSpec::Ready(Init::Uniform { lo, hi }))))
            }
            "glorot" | "xavier" | "glorot_normal" | "xavier_normal" => {
                self.arg_count(&a, 0, 1, &["gain"])?;
                let gain = self.float_arg(&a, 0, "gain", Some(1.0))?;
                Some(Value::Init(Rc::new(InitSpec::Glorot { gain, normal: name.ends_with("normal") })))
            }
            "kaiming" | "he" | "kaiming_normal" | "he_normal" => {
                self.arg_count(&a, 0, 1, &["gain"])?;
                let gain = self.float_arg(&a, 0, "gain", Some(std::f64::consts::SQRT_2))?;
                Some(Value::Init(Rc::new(InitSpec::Kaiming { gain, normal: name.ends_with("normal") })))
            }
            "rand_uniform" => {
                self.arg_count(&a, 1, usize::MAX, &[])?;
                let shape = self.shape_arg(&a, 0, span)?;
                let key = self.rng_key();
                let stream = self.rng_stream;
                self.rng_stream += 1;
                Some(Value::Tensor(self.graph.add(
                    Op::RandomUniform { stream },
                    &[key],
                    Some(TensorType::f32(shape)),
                )))
            }
            "float" | "int" | "bool" => {
                self.arg_count(&a, 1, 1, &[])?;
                match &a.pos[0].value {
                    Value::Tensor(x) => {
                        let to = match name {
                            "float" => DType::F32,
                            "int" => DType::I32,
                            _ => DType::Bool,
                        };
                        if to == DType::Bool && self.graph.dtype(*x) != DType::Bool {
                            let z = self.graph.constant(0.0, self.graph.ty(*x).clone());
                            return Some(Value::Tensor(self.graph.binary(BinaryOp::Ne, *x, z)));
                        }
                        Some(Value::Tensor(self.graph.cast(*x, to)))
                    }
                    Value::Int(i) => Some(match name {
                        "float" => Value::Float(*i as f64),
                        "int" => Value::Int(*i),
                        _ => Value::Bool(*i != 0),
                    }),
                    Value::Float(f) => Some(match name {
                        "float" => Value::Float(*f),
                        "int" => {
                            if !f.is_finite() || f.abs() > 9.0e15 {
                                self.err_at(
                                    "E0402",
                                    span,
                                    format!("{f} does not fit an int"),
                                    "out of range",
                                    None,
                                );
                                return None;
                            }
                            Value::Int(f.trunc() as i64)
                        }
                        _ => Value::Bool(*f != 0.0),
                    }),
                    Value::Bool(b) => Some(match name {
                        "float" => Value::Float(f64::from(u8::from(*b))),
                        "int" => Value::Int(i64::from(*b)),
                        _ => Value::Bool(*b),
                    }),
                    other => {
                        self.err_at(
                            "E0308",
                            a.pos[0].span,
                            format!("cannot convert {} with `{name}`", other.kind()),
                            "cannot convert",
                            None,
                        );
                        None
                    }
                }
            }
            "len" => {
                self.arg_count(&a, 1, 1, &[])?;
                match &a.pos[0].value {
                    Value::List(xs) | Value::Tuple(xs) => Some(Value::Int(xs.len() as i64)),
                    Value::Str(s) => Some(Value::Int(s.chars().count() as i64)),
                    Value::Range(x, y) => Some(Value::Int((y - x).max(0))),
                    other => {
                        self.err_at(
                            "E0308",
                            a.pos[0].span,
                            format!("`len` of {}", other.kind()),
                            "has no length",
                            None,
                        );
                        None
                    }
                }
            }
            "range" => {
                self.arg_count(&a, 1, 2, &[])?;
                let (lo, hi) = if a.pos.len() == 1 {
                    (0, self.int_arg(&a, 0, "n", None)?)
                } else {
                    (self.int_arg(&a, 0, "start", None)?, self.int_arg(&a, 1, "end", None)?)
                };
                Some(Value::Range(lo, hi))
            }
            "prod" => {
                self.arg_count(&a, 1, 1, &[])?;
                let xs = self.int_list(&a, 0)?;
                let mut p: i64 = 1;
                for x in xs {
                    p = match p.checked_mul(x) {
                        Some(v) => v,
                        None => {
                            self.err_at("E0402", span, "integer overflow in `prod`", "overflows", None);
                            return None;
                        }
                    };
                }
                Some(Value::Int(p))
            }
            "numel" => {
                self.arg_count(&a, 1, 1, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                Some(Value::Int(self.graph.shape(x).iter().product::<usize>() as i64))
            }
            "shape" => {
                self.arg_count(&a, 1, 1, &[])?;
                let x = self.tensor_arg(&a, 0, "x")?;
                Some(Value::List(Rc::new(
                    self.graph.shape(x).iter().map(|&d| Value::Int(d as i64)).collect(),
                )))
            }
            "matmul" => {
                self.arg_count(&a, 2, 2, &[])?;
                let x = self.tensor_arg(&a, 0, "a")?;
                let y = self.tensor_arg(&a, 1, "b")?;
                Some(self.matmul(x, y, a.pos[0].span, a.pos[1].span, span))
            }
            "update" => {
                self.arg_count(&a, 2, 2, &[])?;
                let target = self.tensor_arg(&a, 0, "buffer")?;
                let value = self.tensor_arg(&a, 1, "value")?;
                let Op::Param { index } = self.graph.node(target).op else {
                    self.err_at(
                        "E0411",
                        a.pos[0].span,
                        "`update` needs a `buffer` of this module as its first argument",
                        "not a buffer",
                        None,
                    );
                    return None;
                };
                if self.graph.params[index as usize].trainable {
                    self.err_at(
                        "E0411",
                        a.pos[0].span,
                        format!(
                            "`{}` is a trainable `param`; only a `buffer` can be updated",
                            self.graph.params[index as usize].path
                        ),
                        "trainable",
                        Some("declare it with `buffer` instead of `param`".into()),
                    );
                    return None;
                }
                if self.graph.ty(value) != self.graph.ty(target) {
                    let (tv, tt) = (self.graph.ty(value).clone(), self.graph.ty(target).clone());
                    self.err_at(
                        "E0201",
                        a.pos[1].span,
                        format!("update value {tv} does not match the buffer {tt}"),
                        "wrong type",
                        None,
                    );
                    return None;
                }
                self.graph.updates.retain(|(p, _)| *p != index);
                self.graph.updates.push((index, value));
                Some(Value::Unit)
            }
            "str" => {
                self.arg_count(&a, 1, 1, &[])?;
                Some(Value::Str(Rc::from(match &a.pos[0].value {
                    Value::Str(s) => s.to_string(),
                    v => v.to_string(),
                })))
            }
            "error" => {
                self.arg_count(&a, 1, 2, &["help"])?;
                let msg = match &a.pos[0].value {
                    Value::Str(s) => s.to_string(),
                    v => v.to_string(),
                };
                let mut d = Diagnostic::error("E0501", msg).at(span, "reported here");
                if let Some(ArgVal { value: Value::Str(h), .. }) = a.get(1, "help") {
                    d = d.with_help(h.to_string());
                }
                self.error(d);
                None
            }
            other => {
                let _ = ctx;
                self.err_at("E0101", span, format!("unknown built-in `{other}`"), "unknown", None);
                None
            }
        }
    }

    fn elementwise2(&mut self, op: BinaryOp, x: &ArgVal, y: &ArgVal, span: Span) -> Option<Value> {
        match (&x.value, &y.value) {
            (Value::Int(a), Value::Int(b)) => {
                Some(Value::Int(if op == BinaryOp::Max { *a.max(b) } else { *a.min(b) }))
            }
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                let (a, b) = (num(&x.value)?, num(&y.value)?);
                Some(Value::Float(if op == BinaryOp::Max { a.max(b) } else { a.min(b) }))
            }
            _ => {
                let dt = [&x.value, &y.value]
                    .iter()
                    .find_map(|v| if let Value::Tensor(n) = v { Some(self.graph.dtype(*n)) } else { None })?;
                let a = self.scalar_to_tensor(&x.value, dt, x.span)?;
                let b = self.scalar_to_tensor(&y.value, dt, y.span)?;
                if self.graph.dtype(a) != self.graph.dtype(b) || dt == DType::Bool {
                    self.err_at(
                        "E0202",
                        span,
                        "operands need the same numeric element type",
                        "mixed types",
                        None,
                    );
                    return None;
                }
                let (a, b) = self.broadcast_pair(a, b, x.span, y.span, span)?;
                Some(Value::Tensor(self.graph.binary(op, a, b)))
            }
        }
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}
