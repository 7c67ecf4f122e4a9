//! Operators on values: compile-time arithmetic, and tensor arithmetic with numpy-style
//! broadcasting, matrix products and indexing lowered to primitive graph ops.

use super::eval::{Ctx, Elaborator};
use super::value::Value;
use crate::diag::Diagnostic;
use crate::ir::{BinaryOp, DType, NodeId, Op, ReduceOp, ShapeDisplay, TensorType, UnaryOp};
use crate::source::Span;
use crate::syntax::ast::{BinOp, IndexItem};
use std::rc::Rc;

fn ir_binop(op: BinOp) -> Option<BinaryOp> {
    Some(match op {
        BinOp::Add => BinaryOp::Add,
        BinOp::Sub => BinaryOp::Sub,
        BinOp::Mul => BinaryOp::Mul,
        BinOp::Div => BinaryOp::Div,
        BinOp::Rem => BinaryOp::Rem,
        BinOp::Pow => BinaryOp::Pow,
        BinOp::Eq => BinaryOp::Eq,
        BinOp::Ne => BinaryOp::Ne,
        BinOp::Lt => BinaryOp::Lt,
        BinOp::Le => BinaryOp::Le,
        BinOp::Gt => BinaryOp::Gt,
        BinOp::Ge => BinaryOp::Ge,
        BinOp::And => BinaryOp::And,
        BinOp::Or => BinaryOp::Or,
        BinOp::MatMul => return None,
    })
}

impl<'p> Elaborator<'p> {
    pub fn binary(&mut self, op: BinOp, l: Value, r: Value, lspan: Span, rspan: Span, span: Span) -> Value {
        use Value::*;
        match (&l, &r) {
            (Poison, _) | (_, Poison) => Poison,
            (None, _) | (_, None) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                let same = matches!((&l, &r), (None, None));
                Bool(if op == BinOp::Eq { same } else { !same })
            }
            (Tensor(_), _) | (_, Tensor(_)) => self.tensor_binary(op, l, r, lspan, rspan, span),
            (Int(a), Int(b)) => self.int_binary(op, *a, *b, rspan, span),
            (Int(_) | Float(_), Int(_) | Float(_)) => {
                let a = num(&l);
                let b = num(&r);
                match op {
                    BinOp::Add => Float(a + b),
                    BinOp::Sub => Float(a - b),
                    BinOp::Mul => Float(a * b),
                    BinOp::Div => {
                        if b == 0.0 {
                            return self.err_at(
                                "E0401",
                                rspan,
                                "division by zero",
                                "this is zero",
                                Option::None,
                            );
                        }
                        Float(a / b)
                    }
                    BinOp::Rem => {
                        if b == 0.0 {
                            return self.err_at(
                                "E0401",
                                rspan,
                                "division by zero",
                                "this is zero",
                                Option::None,
                            );
                        }
                        Float(a - b * (a / b).floor())
                    }
                    BinOp::Pow => Float(a.powf(b)),
                    BinOp::Eq => Bool(a == b),
                    BinOp::Ne => Bool(a != b),
                    BinOp::Lt => Bool(a < b),
                    BinOp::Le => Bool(a <= b),
                    BinOp::Gt => Bool(a > b),
                    BinOp::Ge => Bool(a >= b),
                    BinOp::And | BinOp::Or | BinOp::MatMul => self.bad_operands(op, &l, &r, span),
                }
            }
            (Bool(a), Bool(b)) => match op {
                BinOp::And => Bool(*a && *b),
                BinOp::Or => Bool(*a || *b),
                BinOp::Eq => Bool(a == b),
                BinOp::Ne => Bool(a != b),
                _ => self.bad_operands(op, &l, &r, span),
            },
            (Str(a), Str(b)) => match op {
                BinOp::Add => Str(Rc::from(format!("{a}{b}").as_str())),
                BinOp::Eq => Bool(a == b),
                BinOp::Ne => Bool(a != b),
                _ => self.bad_operands(op, &l, &r, span),
            },
            (List(a), List(b)) if op == BinOp::Add => {
                let mut v = a.to_vec();
                v.extend(b.iter().cloned());
                List(Rc::new(v))
            }
            _ => self.bad_operands(op, &l, &r, span),
        }
    }

    fn bad_operands(&mut self, op: BinOp, l: &Value, r: &Value, span: Span) -> Value {
        self.err_at(
            "E0305",
            span,
            format!("cannot apply `{}` to {} and {}", op.symbol(), l.kind(), r.kind()),
            "unsupported operands",
            None,
        )
    }

    fn int_binary(&mut self, op: BinOp, a: i64, b: i64, rspan: Span, span: Span) -> Value {
        use Value::*;
        let overflow = |s: &mut Self| {
            s.err_at(
                "E0402",
                span,
                "integer overflow in a compile-time expression",
                "overflows i64",
                Option::None,
            )
        };
        match op {
            BinOp::Add => a.checked_add(b).map_or_else(|| overflow(self), Int),
            BinOp::Sub => a.checked_sub(b).map_or_else(|| overflow(self), Int),
            BinOp::Mul => a.checked_mul(b).map_or_else(|| overflow(self), Int),
            BinOp::Div | BinOp::Rem => {
                if b == 0 {
                    return self.err_at("E0401", rspan, "division by zero", "this is zero", Option::None);
                }
                if a == i64::MIN && b == -1 {
                    return overflow(self);
                }
                // Floor division and a remainder with the divisor's sign (Python rules).
                let q = a / b;
                let q = if a % b != 0 && ((a < 0) != (b < 0)) { q - 1 } else { q };
                let r = a - q * b;
                Int(if op == BinOp::Div { q } else { r })
            }
            BinOp::Pow => {
                if b < 0 {
                    Float((a as f64).powf(b as f64))
                } else {
                    u32::try_from(b).ok().and_then(|e| a.checked_pow(e)).map_or_else(|| overflow(self), Int)
                }
            }
            BinOp::Eq => Bool(a == b),
            BinOp::Ne => Bool(a != b),
            BinOp::Lt => Bool(a < b),
            BinOp::Le => Bool(a <= b),
            BinOp::Gt => Bool(a > b),
            BinOp::Ge => Bool(a >= b),
            BinOp::And | BinOp::Or | BinOp::MatMul => self.bad_operands(op, &Int(a), &Int(b), span),
        }
    }

    /// Converts a compile-time scalar to a tensor of dtype `dt` (shape `[]`), if it fits.
    pub fn scalar_to_tensor(&mut self, v: &Value, dt: DType, span: Span) -> Option<NodeId> {
        let x = match (v, dt) {
            (Value::Int(i), DType::F32 | DType::I32) => *i as f64,
            (Value::Float(f), DType::F32) => *f,
            (Value::Float(_), DType::I32) => {
                self.err_at(
                    "E0202",
                    span,
                    "a float cannot combine with an i32 tensor",
                    "float",
                    Some("convert the tensor with `.float()`".into()),
                );
                return None;
            }
            (Value::Bool(b), DType::Bool) => f64::from(u8::from(*b)),
            (Value::Tensor(n), _) => return Some(*n),
            (other, dt) => {
                self.err_at(
                    "E0202",
                    span,
                    format!("{} cannot combine with a {dt} tensor", other.kind()),
                    "wrong kind of operand",
                    None,
                );
                return None;
            }
        };
        Some(self.graph.scalar(x, dt))
    }

    /// The numpy broadcast of two shapes.
    pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
        let n = a.len().max(b.len());
        let mut out = vec![0; n];
        for i in 0..n {
            let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
            let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
            out[i] = if da == db || db == 1 {
                da
            } else if da == 1 {
                db
            } else {
                return None;
            };
        }
        Some(out)
    }

    /// Broadcasts two tensors to a common shape, reporting E0203 on failure.
    pub fn broadcast_pair(
        &mut self,
        a: NodeId,
        b: NodeId,
        lspan: Span,
        rspan: Span,
        span: Span,
    ) -> Option<(NodeId, NodeId)> {
        let sa = self.graph.shape(a).to_vec();
        let sb = self.graph.shape(b).to_vec();
        let Some(shape) = Self::broadcast_shapes(&sa, &sb) else {
            self.error(
                Diagnostic::error(
                    "E0203",
                    format!(
                        "shapes {} and {} cannot be broadcast together",
                        ShapeDisplay(&sa),
                        ShapeDisplay(&sb)
                    ),
                )
                .at(span, "in this operation")
                .with_label(lspan, format!("{}", self.graph.ty(a)))
                .with_label(rspan, format!("{}", self.graph.ty(b)))
                .with_help("trailing dimensions must be equal or 1; reshape or transpose one operand"),
            );
            return None;
        };
        let a = self.graph.broadcast_to(a, &shape).ok()?;
        let b = self.graph.broadcast_to(b, &shape).ok()?;
        Some((a, b))
    }

    fn tensor_binary(
        &mut self,
        op: BinOp,
        l: Value,
        r: Value,
        lspan: Span,
        rspan: Span,
        span: Span,
    ) -> Value {
        if op == BinOp::MatMul {
            return match (l, r) {
                (Value::Tensor(a), Value::Tensor(b)) => self.matmul(a, b, lspan, rspan, span),
                (a, b) => self.bad_operands(op, &a, &b, span),
            };
        }
        // The dtype comes from the tensor operand; a scalar operand adopts it.
        let dt = match (&l, &r) {
            (Value::Tensor(a), _) => self.graph.dtype(*a),
            (_, Value::Tensor(b)) => self.graph.dtype(*b),
            _ => unreachable!("tensor_binary is called with at least one tensor"),
        };
        let Some(a) = self.scalar_to_tensor(&l, dt, lspan) else { return Value::Poison };
        let Some(b) = self.scalar_to_tensor(&r, dt, rspan) else { return Value::Poison };
        let (da, db) = (self.graph.dtype(a), self.graph.dtype(b));
        if da != db {
            let help = if da == DType::Bool || db == DType::Bool {
                "convert the bool tensor with `.float()` (1.0 for true) or `.int()`"
            } else {
                "convert one side with `.float()` or `.int()`"
            };
            return self.error(
                Diagnostic::error("E0202", format!("element types differ: {da} {} {db}", op.symbol()))
                    .at(span, "mixed element types")
                    .with_label(lspan, format!("{}", self.graph.ty(a)))
                    .with_label(rspan, format!("{}", self.graph.ty(b)))
                    .with_help(help),
            );
        }
        let Some(irop) = ir_binop(op) else { return Value::Poison };
        if irop.result_dtype(da).is_none() {
            return self.err_at(
                "E0202",
                span,
                format!("`{}` does not apply to {da} tensors", op.symbol()),
                "wrong element type",
                Some(match irop {
                    BinaryOp::And | BinaryOp::Or => {
                        "`&&`/`||` combine bool tensors; compare first (`x > 0`)".to_string()
                    }
                    BinaryOp::Pow => "`**` needs f32 tensors; convert with `.float()`".to_string(),
                    _ => "convert with `.float()` or `.int()`".to_string(),
                }),
            );
        }
        let Some((a, b)) = self.broadcast_pair(a, b, lspan, rspan, span) else { return Value::Poison };
        Value::Tensor(self.graph.binary(irop, a, b))
    }

    /// `a @ b` with numpy semantics: 1-D operands are promoted, a 2-D right operand applies to
    /// every leading index of the left one (flattened into one matrix product), otherwise batch
    /// dimensions broadcast.
    pub fn matmul(&mut self, a: NodeId, b: NodeId, lspan: Span, rspan: Span, span: Span) -> Value {
        let (ta, tb) = (self.graph.ty(a).clone(), self.graph.ty(b).clone());
        if ta.dtype != DType::F32 || tb.dtype != DType::F32 {
            return self.error(
                Diagnostic::error(
                    "E0202",
                    format!("`@` needs f32 operands, found {} and {}", ta.dtype, tb.dtype),
                )
                .at(span, "in this product")
                .with_help("convert with `.float()`"),
            );
        }
        if ta.rank() == 0 || tb.rank() == 0 {
            return self.err_at(
                "E0212",
                span,
                "`@` needs operands of rank 1 or more",
                "scalar operand",
                Some("use `*` to scale by a scalar".into()),
            );
        }
        let (mut a2, mut b2) = (a, b);
        let a_vec = ta.rank() == 1;
        let b_vec = tb.rank() == 1;
        if a_vec {
            a2 = self.graph.reshape(a, vec![1, ta.shape[0]]);
        }
        if b_vec {
            b2 = self.graph.reshape(b, vec![tb.shape[0], 1]);
        }
        let sa = self.graph.shape(a2).to_vec();
        let sb = self.graph.shape(b2).to_vec();
        let (ka, kb) = (sa[sa.len() - 1], sb[sb.len() - 2]);
        if ka != kb {
            return self.error(
                Diagnostic::error(
                    "E0201",
                    format!("matrix product of {} and {}: inner dimensions {ka} and {kb} differ", ta, tb),
                )
                .at(span, "in this product")
                .with_label(lspan, format!("{ta}: last dimension {ka}"))
                .with_label(rspan, format!("{tb}: dimension {} is {kb}", tb.rank().saturating_sub(2)))
                .with_help(
                    "the last dimension of the left operand must equal the second-to-last of the right one",
                ),
            );
        }
        let out = if sb.len() == 2 && sa.len() > 2 {
            // [..., M, K] @ [K, N]: one [prod(...) * M, K] @ [K, N] product.
            let rows: usize = sa[..sa.len() - 1].iter().product();
            let flat = self.graph.reshape(a2, vec![rows, ka]);
            let p = self.graph.add(Op::MatMul { trans_a: false, trans_b: false }, &[flat, b2], None);
            let mut shape = sa[..sa.len() - 1].to_vec();
            shape.push(sb[1]);
            self.graph.reshape(p, shape)
        } else {
            let batch_a = &sa[..sa.len() - 2];
            let batch_b = &sb[..sb.len() - 2];
            let Some(batch) = Self::broadcast_shapes(batch_a, batch_b) else {
                return self.err_at(
                    "E0203",
                    span,
                    format!("batch dimensions of {ta} and {tb} cannot be broadcast together"),
                    "in this product",
                    None,
                );
            };
            let mut full_a = batch.clone();
            full_a.extend_from_slice(&sa[sa.len() - 2..]);
            let mut full_b = batch.clone();
            full_b.extend_from_slice(&sb[sb.len() - 2..]);
            if !self.check_numel(&full_a, span) || !self.check_numel(&full_b, span) {
                return Value::Poison;
            }
            let (Ok(x), Ok(y)) = (self.graph.broadcast_to(a2, &full_a), self.graph.broadcast_to(b2, &full_b))
            else {
                return Value::Poison;
            };
            self.graph.add(Op::MatMul { trans_a: false, trans_b: false }, &[x, y], None)
        };
        let mut shape = self.graph.shape(out).to_vec();
        if b_vec {
            shape.pop();
        }
        if a_vec {
            let n = shape.len();
            shape.remove(n - if b_vec { 1 } else { 2 });
        }
        Value::Tensor(self.graph.reshape(out, shape))
    }

    /// Normalises a possibly negative axis for rank `rank`.
    pub fn axis(&mut self, v: &Value, rank: usize, span: Span) -> Option<usize> {
        match v {
            Value::Int(a) => {
                let r = rank as i64;
                let x = if *a < 0 { a + r } else { *a };
                if (0..r).contains(&x) {
                    Some(x as usize)
                } else {
                    self.err_at(
                        "E0205",
                        span,
                        format!("axis {a} is out of range for a tensor of rank {rank}"),
                        "bad axis",
                        Some(format!("axes run from {} to {}", -r, r - 1)),
                    );
                    None
                }
            }
            Value::Poison => None,
            other => {
                self.err_at(
                    "E0305",
                    span,
                    format!("an axis must be an int, found {}", other.kind()),
                    "not an axis",
                    None,
                );
                None
            }
        }
    }

    pub fn reduce(&mut self, op: ReduceOp, x: NodeId, axes: &[usize], keepdim: bool) -> NodeId {
        let mut ax: Vec<u32> = axes.iter().map(|&a| a as u32).collect();
        ax.sort_unstable();
        ax.dedup();
        let r = self.graph.reduce(op, x, ax.clone());
        if keepdim {
            return r;
        }
        let shape: Vec<usize> = self
            .graph
            .shape(x)
            .iter()
            .enumerate()
            .filter(|(i, _)| !ax.contains(&(*i as u32)))
            .map(|(_, &d)| d)
            .collect();
        self.graph.reshape(r, shape)
    }

    /// `x[items]` on lists, tuples and tensors.
    pub fn index(&mut self, base: Value, items: &[IndexItem], span: Span, ctx: &mut Ctx) -> Value {
        match base {
            Value::Poison => Value::Poison,
            Value::List(ref xs) | Value::Tuple(ref xs) => {
                let [IndexItem::Expr(e)] = items else {
                    return self.err_at(
                        "E0305",
                        span,
                        format!("{} can only be indexed by one int", base.kind()),
                        "bad index",
                        None,
                    );
                };
                let i = self.eval(e, ctx);
                match i {
                    Value::Int(i) => {
                        let n = xs.len() as i64;
                        let j = if i < 0 { i + n } else { i };
                        if (0..n).contains(&j) {
                            xs[j as usize].clone()
                        } else {
                            self.err_at(
                                "E0205",
                                e.span,
                                format!("index {i} is out of range for a list of {n}"),
                                "out of range",
                                None,
                            )
                        }
                    }
                    Value::Poison => Value::Poison,
                    other => self.err_at(
                        "E0305",
                        e.span,
                        format!("list index must be an int, found {}", other.kind()),
                        "not an int",
                        None,
                    ),
                }
            }
            Value::Tensor(x) => self.tensor_index(x, items, span, ctx),
            other => self.err_at(
                "E0305",
                span,
                format!("{} cannot be indexed", other.kind()),
                "not indexable",
                None,
            ),
        }
    }

    fn tensor_index(&mut self, x: NodeId, items: &[IndexItem], span: Span, ctx: &mut Ctx) -> Value {
        // A single i32 tensor index gathers rows: `table[ids]`.
        if let [IndexItem::Expr(e)] = items {
            let v = self.eval(e, ctx);
            if let Value::Tensor(idx) = v {
                if self.graph.dtype(idx) != DType::I32 {
                    return self.err_at(
                        "E0202",
                        e.span,
                        "tensor indices must be i32",
                        "not i32",
                        Some("convert with `.int()`".into()),
                    );
                }
                let mut shape = self.graph.shape(idx).to_vec();
                shape.extend_from_slice(&self.graph.shape(x)[1..]);
                if !self.check_numel(&shape, span) {
                    return Value::Poison;
                }
                return Value::Tensor(self.graph.add(Op::Gather, &[x, idx], None));
            }
            return self.tensor_index_items(x, items, Some(v), span, ctx);
        }
        self.tensor_index_items(x, items, None, span, ctx)
    }

    fn tensor_index_items(
        &mut self,
        x: NodeId,
        items: &[IndexItem],
        first: Option<Value>,
        span: Span,
        ctx: &mut Ctx,
    ) -> Value {
        let shape = self.graph.shape(x).to_vec();
        let rank = shape.len();
        let n_axes =
            items.iter().filter(|i| matches!(i, IndexItem::Expr(_) | IndexItem::Slice { .. })).count();
        let n_ell = items.iter().filter(|i| matches!(i, IndexItem::Ellipsis(_))).count();
        if n_ell > 1 || n_axes > rank {
            return self.err_at(
                "E0205",
                span,
                format!("{} indices for a tensor of rank {rank}", n_axes),
                "too many indices",
                Some(format!("the tensor has shape {}", ShapeDisplay(&shape))),
            );
        }
        let mut cur = x;
        let mut axis = 0usize; // axis in `cur`
        let mut final_shape: Vec<usize> = Vec::new();
        let mut first = first;
        for item in items {
            match item {
                IndexItem::Ellipsis(_) => {
                    let skip = rank - n_axes;
                    for _ in 0..skip {
                        final_shape.push(self.graph.shape(cur)[axis]);
                        axis += 1;
                    }
                }
                IndexItem::NewAxis(_) => final_shape.push(1),
                IndexItem::Expr(e) => {
                    let v = match first.take() {
                        Some(v) => v,
                        None => self.eval(e, ctx),
                    };
                    let size = self.graph.shape(cur)[axis];
                    let i = match v {
                        Value::Int(i) => i,
                        Value::Poison => return Value::Poison,
                        other => {
                            return self.err_at(
                                "E0305",
                                e.span,
                                format!("an index must be an int, found {}", other.kind()),
                                "not an int",
                                None,
                            );
                        }
                    };
                    let j = if i < 0 { i + size as i64 } else { i };
                    if !(0..size as i64).contains(&j) {
                        return self.err_at(
                            "E0205",
                            e.span,
                            format!("index {i} is out of range for axis {axis} of size {size}"),
                            "out of range",
                            None,
                        );
                    }
                    let j = j as usize;
                    cur = self.graph.add(
                        Op::Slice { axis: axis as u32, start: j, end: j + 1, step: 1 },
                        &[cur],
                        None,
                    );
                    axis += 1;
                }
                IndexItem::Slice { start, end, step, span: sspan } => {
                    let size = self.graph.shape(cur)[axis] as i64;
                    let mut get =
                        |s: &mut Self, e: &Option<crate::syntax::ast::Expr>| -> Result<Option<i64>, ()> {
                            match e {
                                None => Ok(None),
                                Some(e) => match s.eval(e, ctx) {
                                    Value::Int(i) => Ok(Some(i)),
                                    Value::Poison => Err(()),
                                    other => {
                                        s.err_at(
                                            "E0305",
                                            e.span,
                                            format!("slice bounds must be ints, found {}", other.kind()),
                                            "not an int",
                                            None,
                                        );
                                        Err(())
                                    }
                                },
                            }
                        };
                    let (Ok(a), Ok(b), Ok(st)) = (get(self, start), get(self, end), get(self, step)) else {
                        return Value::Poison;
                    };
                    let st = st.unwrap_or(1);
                    if st <= 0 {
                        return self.err_at(
                            "E0205",
                            *sspan,
                            format!("slice step must be positive, found {st}"),
                            "bad step",
                            None,
                        );
                    }
                    let norm = |v: i64| if v < 0 { v + size } else { v };
                    let a = a.map_or(0, norm);
                    let b = b.map_or(size, norm);
                    if a < 0 || b > size || a > b {
                        return self.err_at(
                            "E0205",
                            *sspan,
                            format!("slice {a}..{b} is out of range for axis {axis} of size {size}"),
                            "out of range",
                            Some(format!("the tensor has shape {}", ShapeDisplay(&shape))),
                        );
                    }
                    if !(a == 0 && b == size && st == 1) {
                        cur = self.graph.add(
                            Op::Slice {
                                axis: axis as u32,
                                start: a as usize,
                                end: b as usize,
                                step: st as usize,
                            },
                            &[cur],
                            None,
                        );
                    }
                    final_shape.push(self.graph.shape(cur)[axis]);
                    axis += 1;
                }
            }
        }
        while axis < rank {
            final_shape.push(self.graph.shape(cur)[axis]);
            axis += 1;
        }
        Value::Tensor(self.graph.reshape(cur, final_shape))
    }

    /// `reshape` with one `-1` allowed.
    pub fn reshape_to(&mut self, x: NodeId, dims: &[i64], span: Span) -> Value {
        let numel: usize = self.graph.shape(x).iter().product();
        let mut unknown = None;
        let mut known: usize = 1;
        for (i, &d) in dims.iter().enumerate() {
            if d == -1 {
                if unknown.is_some() {
                    return self.err_at(
                        "E0206",
                        span,
                        "reshape can infer only one `-1` dimension",
                        "two `-1`",
                        None,
                    );
                }
                unknown = Some(i);
            } else if d < 0 {
                return self.err_at(
                    "E0206",
                    span,
                    format!("reshape dimension {d} is negative"),
                    "negative",
                    None,
                );
            } else {
                known = match known.checked_mul(d as usize) {
                    Some(k) => k,
                    None => {
                        return self.err_at("E0207", span, "reshape target is too large", "too large", None);
                    }
                };
            }
        }
        let mut shape: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(i) = unknown {
            if known == 0 || !numel.is_multiple_of(known) {
                return self.err_at(
                    "E0206",
                    span,
                    format!("cannot reshape {} ({numel} elements) to {:?}", self.graph.ty(x), dims),
                    "sizes do not divide",
                    None,
                );
            }
            shape[i] = numel / known;
        } else if known != numel {
            let ty = self.graph.ty(x).clone();
            return self.err_at(
                "E0206",
                span,
                format!(
                    "cannot reshape {ty} ({numel} elements) to {} ({known} elements)",
                    ShapeDisplay(&shape)
                ),
                "element counts differ",
                Some("the product of the new dimensions must equal the number of elements".into()),
            );
        }
        Value::Tensor(self.graph.reshape(x, shape))
    }

    pub fn permute(&mut self, x: NodeId, perm: Vec<usize>) -> NodeId {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return x;
        }
        self.graph.add(Op::Permute { perm: perm.into_iter().map(|p| p as u32).collect() }, &[x], None)
    }

    pub fn unary_op(&mut self, op: UnaryOp, x: NodeId) -> NodeId {
        self.graph.unary(op, x)
    }

    pub fn iota(&mut self, shape: Vec<usize>, axis: usize) -> NodeId {
        self.graph.add(Op::Iota { axis: axis as u32 }, &[], Some(TensorType::new(DType::I32, shape)))
    }
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}
