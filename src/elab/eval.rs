//! The evaluator: expressions, statements, module instantiation, method calls and the checks
//! of tensor signatures (unification of symbolic dimensions at each call).

use super::program::Program;
use super::value::{Frame, Func, InitSpec, InstId, Instance, ItemRef, Member, ParamSlot, Value};
use crate::diag::Diagnostic;
use crate::ir::{DType, Graph, Init, NodeId, ParamInfo, ShapeDisplay, TensorType};
use crate::source::{FileId, Span};
use crate::syntax::ast::{self, BinOp, DimExpr, Expr, ExprKind, Item, Pattern, Stmt, TypeExpr, UnOp};
use std::collections::HashMap;
use std::rc::Rc;

/// Limits that keep elaboration of hostile input bounded.
pub const MAX_DEPTH: usize = 64;
pub const MAX_LIST: i64 = 4096;
pub const MAX_NODES: usize = 2_000_000;
/// Module instantiations plus function and method calls in one elaboration (recursion that
/// branches would otherwise grow exponentially within the depth limit).
pub const MAX_CALLS: usize = 200_000;
/// Largest number of elements of one tensor (2^36).
pub const MAX_NUMEL: u128 = 1 << 36;

#[derive(Clone, Debug)]
pub struct ElabOptions {
    /// Training mode: `training` is true in module code (dropout active, batch statistics).
    pub training: bool,
    /// Values of symbolic dimensions of the top-level signature (`--dim T=64`).
    pub dims: Vec<(String, i64)>,
    /// The method to elaborate (`forward`).
    pub method: String,
}

impl Default for ElabOptions {
    fn default() -> Self {
        ElabOptions { training: false, dims: Vec::new(), method: "forward".into() }
    }
}

/// One module instance of the elaborated tree, for summaries.
#[derive(Clone, Debug)]
pub struct InstanceInfo {
    pub path: String,
    pub module: String,
    pub args: String,
    pub depth: usize,
    /// Parameters declared directly by this instance (element counts, trainable only).
    pub own_params: u64,
    /// Output types of its first `forward` call (empty if never called).
    pub outputs: Vec<TensorType>,
}

/// The result of elaborating a model: the graph of one method and the instance tree.
#[derive(Debug)]
pub struct Elaborated {
    pub graph: Graph,
    pub instances: Vec<InstanceInfo>,
    /// Values the symbolic dimensions of the top-level signature took.
    pub dims: Vec<(String, i64)>,
    pub warnings: Vec<Diagnostic>,
}

/// Evaluation context of one function body or module body.
pub(super) struct Ctx {
    pub file: FileId,
    pub inst: Option<InstId>,
    pub locals: Vec<(Rc<str>, Value)>,
    /// Inside a method or function body (tensors allowed), not a module body.
    pub in_fn: bool,
}

impl Ctx {
    pub fn new(file: FileId, inst: Option<InstId>, in_fn: bool) -> Ctx {
        Ctx { file, inst, locals: Vec::new(), in_fn }
    }

    fn lookup_local(&self, name: &str) -> Option<&Value> {
        self.locals.iter().rev().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    pub fn bind(&mut self, name: &str, v: Value) {
        self.locals.push((Rc::from(name), v));
    }
}

/// A named argument or a positional one, evaluated, with its span.
#[derive(Clone, Debug)]
pub(super) struct ArgVal {
    pub name: Option<ast::Ident>,
    pub value: Value,
    pub span: Span,
}

pub(super) struct Elaborator<'p> {
    pub prog: &'p Program,
    pub graph: Graph,
    pub insts: Vec<Instance<'p>>,
    pub diags: Vec<Diagnostic>,
    pub training: bool,
    /// Instantiation and call chain, innermost last.
    pub chain: Vec<Frame>,
    /// Parameter index in the graph for each (instance, slot).
    pub param_index: HashMap<(InstId, usize), u32>,
    param_nodes: HashMap<(InstId, usize), NodeId>,
    pub inst_paths: HashMap<InstId, String>,
    pub rng_key: Option<NodeId>,
    pub rng_stream: u32,
    /// Output types of the first `forward` call of each instance.
    pub call_outputs: HashMap<InstId, Vec<TensorType>>,
    too_large_reported: bool,
    /// Instantiations and calls so far (bounded by `MAX_CALLS`).
    calls: usize,
}

impl<'p> Elaborator<'p> {
    pub fn new(prog: &'p Program, training: bool) -> Elaborator<'p> {
        Elaborator {
            prog,
            graph: Graph::new(""),
            insts: Vec::new(),
            diags: Vec::new(),
            training,
            chain: Vec::new(),
            param_index: HashMap::new(),
            param_nodes: HashMap::new(),
            inst_paths: HashMap::new(),
            rng_key: None,
            rng_stream: 0,
            call_outputs: HashMap::new(),
            too_large_reported: false,
            calls: 0,
        }
    }

    // ----- diagnostics -----

    /// Records an error, moving its primary label out of the standard library to the user's
    /// call site and adding the instantiation chain as notes. Returns `Poison` for convenience.
    pub fn error(&mut self, mut d: Diagnostic) -> Value {
        let primary = d.primary_span();
        if let Some(sp) = primary
            && self.prog.is_stdlib(sp.file)
            && let Some(user) = self.chain.iter().rev().find(|f| !self.prog.is_stdlib(f.span.file))
        {
            for l in &mut d.labels {
                l.primary = false;
            }
            d.labels.insert(
                0,
                crate::diag::Label {
                    span: user.span,
                    text: format!("in this use of `{}`", user.module),
                    primary: true,
                },
            );
        }
        // The chain, innermost first, with runs of the same frame (recursion) folded.
        let mut notes: Vec<String> = Vec::new();
        let mut repeat = 0;
        for f in self.chain.iter().rev() {
            let line = format!("in `{}` at {}", f.module, self.prog.sources.location(f.span));
            if notes.last() == Some(&line) {
                repeat += 1;
                continue;
            }
            if repeat > 0 {
                notes.push(format!("... {repeat} more time(s)"));
                repeat = 0;
            }
            if notes.len() >= 8 {
                break;
            }
            notes.push(line);
        }
        if repeat > 0 {
            notes.push(format!("... {repeat} more time(s)"));
        }
        d.notes.extend(notes);
        if !self
            .diags
            .iter()
            .any(|x| x.code == d.code && x.message == d.message && x.primary_span() == d.primary_span())
        {
            self.diags.push(d);
        }
        Value::Poison
    }

    pub fn err_at(
        &mut self,
        code: &'static str,
        span: Span,
        msg: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> Value {
        let mut d = Diagnostic::error(code, msg).at(span, label);
        if let Some(h) = help {
            d = d.with_help(h);
        }
        self.error(d)
    }

    /// Counts one instantiation or call; false (after reporting once) when the budget is spent.
    fn spend_call(&mut self, span: Span) -> bool {
        self.calls += 1;
        if self.calls == MAX_CALLS + 1 {
            self.err_at(
                "E0405",
                span,
                format!("elaboration needed more than {MAX_CALLS} module instantiations and calls"),
                "while evaluating this",
                Some("a module or function that creates or calls itself more than once grows without bound; add a stopping condition".into()),
            );
        }
        self.calls <= MAX_CALLS
    }

    // ----- names -----

    fn lookup(&mut self, ctx: &Ctx, name: &str, span: Span) -> Option<Value> {
        if let Some(v) = ctx.lookup_local(name) {
            return Some(v.clone());
        }
        if let Some(id) = ctx.inst {
            match self.insts[id.0 as usize].lookup(name).cloned() {
                Some(Member::Value(v)) => return Some(v),
                Some(Member::Param(slot)) => {
                    if !ctx.in_fn {
                        return Some(self.err_at(
                            "E0409",
                            span,
                            format!("parameter `{name}` is a tensor and can only be used inside a method"),
                            "used outside a method",
                            Some("move the computation into `fn forward` (or another method)".into()),
                        ));
                    }
                    return Some(Value::Tensor(self.param_node(id, slot)));
                }
                None => {}
            }
            if self.insts[id.0 as usize].method(name).is_some() {
                return Some(Value::Func(Func::Method(id, Rc::from(name))));
            }
            if name == "self" {
                return Some(Value::Module(id));
            }
        }
        if let Some(r) = self.prog.resolve(ctx.file, name) {
            return match self.prog.item(r) {
                Item::Module(_) => Some(Value::Func(Func::ModuleCtor(r))),
                Item::Fn(_) => Some(Value::Func(Func::User(r))),
                Item::Data(_) | Item::Train(_) | Item::Sweep(_) => Some(self.err_at(
                    "E0108",
                    span,
                    format!("`{name}` is a {} block, not a value", item_kind(self.prog.item(r))),
                    "used as a value",
                    Some(
                        "data, train and sweep blocks are referred to from `train` and `sweep` blocks".into(),
                    ),
                )),
                Item::Use(_) => None,
            };
        }
        match name {
            "training" => return Some(Value::Bool(self.training)),
            "None" => return Some(Value::None),
            "pi" => return Some(Value::Float(std::f64::consts::PI)),
            "inf" => return Some(Value::Float(f64::INFINITY)),
            _ => {}
        }
        if let Some(b) = super::builtins::lookup_builtin(name) {
            return Some(Value::Func(Func::Builtin(b)));
        }
        None
    }

    /// Names visible at this point, for "did you mean" suggestions.
    fn visible_names(&self, ctx: &Ctx) -> Vec<String> {
        let mut names: Vec<String> = ctx.locals.iter().map(|(n, _)| n.to_string()).collect();
        if let Some(id) = ctx.inst {
            let inst = &self.insts[id.0 as usize];
            names.extend(inst.env.iter().map(|(n, _)| n.to_string()));
            names.extend(inst.methods.iter().map(|(n, _)| n.to_string()));
        }
        names.extend(self.prog.scopes[ctx.file.0 as usize].keys().cloned());
        names.extend(super::builtins::BUILTINS.iter().map(|s| s.to_string()));
        names
    }

    fn unknown_name(&mut self, ctx: &Ctx, name: &str, span: Span) -> Value {
        let mut help = None;
        let in_stdlib = super::program::STDLIB.iter().find(|(_, text)| {
            text.contains(&format!("module {name}(")) || text.contains(&format!("fn {name}("))
        });
        if let Some((lib, _)) = in_stdlib {
            help =
                Some(format!("`{name}` is in the standard library: add `use {lib}` at the top of the file"));
        } else if let Some(s) = closest(name, &self.visible_names(ctx)) {
            help = Some(format!("a similar name exists: `{s}`"));
        }
        self.err_at("E0101", span, format!("unknown name `{name}`"), "not found in this scope", help)
    }

    // ----- parameters -----

    fn param_node(&mut self, id: InstId, slot: usize) -> NodeId {
        if let Some(&n) = self.param_nodes.get(&(id, slot)) {
            return n;
        }
        let index = match self.param_index.get(&(id, slot)) {
            Some(&i) => i,
            None => {
                // A module created inside a method body is not part of the module tree; give
                // its parameters a synthetic path so elaboration can go on after the error.
                let p = &self.insts[id.0 as usize].params[slot];
                let info = ParamInfo {
                    path: format!("<detached>.{}", p.name),
                    ty: p.ty.clone(),
                    init: p.init.clone(),
                    trainable: p.trainable,
                    span: Some(p.span),
                };
                let i = self.graph.add_param(info);
                self.param_index.insert((id, slot), i);
                i
            }
        };
        let saved = self.graph.current_span;
        self.graph.current_span = Some(self.insts[id.0 as usize].params[slot].span);
        let n = self.graph.param_node(index);
        self.graph.current_span = saved;
        self.param_nodes.insert((id, slot), n);
        n
    }

    /// Assigns paths to every instance reachable from `root` and registers parameters in the
    /// graph in tree order.
    pub fn register_tree(&mut self, root: InstId) {
        let mut order = Vec::new();
        self.walk_tree(root, String::new(), 0, &mut order);
        for (id, path, _) in order {
            let n = self.insts[id.0 as usize].params.len();
            for slot in 0..n {
                let p = &self.insts[id.0 as usize].params[slot];
                let full = if path.is_empty() { p.name.clone() } else { format!("{path}.{}", p.name) };
                let info = ParamInfo {
                    path: full,
                    ty: p.ty.clone(),
                    init: p.init.clone(),
                    trainable: p.trainable,
                    span: Some(p.span),
                };
                let i = self.graph.add_param(info);
                self.param_index.insert((id, slot), i);
            }
        }
    }

    /// Pre-order walk of the module tree: (instance, path, depth). An instance reachable twice
    /// (shared) keeps its first path.
    pub fn walk_tree(
        &mut self,
        id: InstId,
        path: String,
        depth: usize,
        out: &mut Vec<(InstId, String, usize)>,
    ) {
        if self.inst_paths.contains_key(&id) {
            return;
        }
        self.inst_paths.insert(id, path.clone());
        out.push((id, path.clone(), depth));
        let fields = self.insts[id.0 as usize].fields.clone();
        for (name, v) in fields {
            let p = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
            self.walk_value(&v, p, depth + 1, out);
        }
    }

    fn walk_value(&mut self, v: &Value, path: String, depth: usize, out: &mut Vec<(InstId, String, usize)>) {
        match v {
            Value::Module(c) => self.walk_tree(*c, path, depth, out),
            Value::List(xs) | Value::Tuple(xs) => {
                for (i, x) in xs.iter().enumerate() {
                    self.walk_value(x, format!("{path}.{i}"), depth, out);
                }
            }
            _ => {}
        }
    }

    // ----- expressions -----

    pub fn eval(&mut self, e: &Expr, ctx: &mut Ctx) -> Value {
        if self.graph.len() > MAX_NODES {
            if !self.too_large_reported {
                self.too_large_reported = true;
                return self.err_at(
                    "E0406",
                    e.span,
                    format!("the graph grew beyond {MAX_NODES} nodes"),
                    "while evaluating this",
                    Some("check for a runaway loop or a huge module array".into()),
                );
            }
            return Value::Poison;
        }
        match &e.kind {
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(x) => Value::Float(*x),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Str(s) => Value::Str(Rc::from(s.as_str())),
            ExprKind::Name(n) => match self.lookup(ctx, n, e.span) {
                Some(v) => v,
                None => self.unknown_name(ctx, n, e.span),
            },
            ExprKind::Unary { op, expr } => {
                let v = self.eval(expr, ctx);
                self.unary(*op, v, e.span)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                // `and` / `or` short-circuit at compile time.
                let l = self.eval(lhs, ctx);
                if let (BinOp::And, Value::Bool(false)) | (BinOp::Or, Value::Bool(true)) = (op, &l) {
                    return l;
                }
                let r = self.eval(rhs, ctx);
                self.with_span(e.span, |s| s.binary(*op, l, r, lhs.span, rhs.span, e.span))
            }
            ExprKind::Call { callee, args } => self.eval_call(callee, args, e.span, ctx),
            ExprKind::Field { base, name } => {
                let b = self.eval(base, ctx);
                self.field(b, name)
            }
            ExprKind::Index { base, items } => {
                let b = self.eval(base, ctx);
                self.with_span(e.span, |s| s.index(b, items, e.span, ctx))
            }
            ExprKind::List(xs) => {
                let vals: Vec<Value> = xs.iter().map(|x| self.eval(x, ctx)).collect();
                Value::List(Rc::new(vals))
            }
            ExprKind::Tuple(xs) => {
                let vals: Vec<Value> = xs.iter().map(|x| self.eval(x, ctx)).collect();
                Value::Tuple(Rc::new(vals))
            }
            ExprKind::Repeat { elem, count } => {
                let n = self.eval(count, ctx);
                let Some(n) = self.expect_count(n, count.span, "the count of `[elem; count]`") else {
                    return Value::Poison;
                };
                let mut vals = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    vals.push(self.eval(elem, ctx));
                }
                Value::List(Rc::new(vals))
            }
            ExprKind::Comprehension { elem, pat, iter } => {
                let it = self.eval(iter, ctx);
                let Some(items) = self.iterate(it, iter.span) else { return Value::Poison };
                let mut vals = Vec::with_capacity(items.len());
                for item in items {
                    let mark = ctx.locals.len();
                    self.bind_pattern(pat, item, ctx);
                    vals.push(self.eval(elem, ctx));
                    ctx.locals.truncate(mark);
                }
                Value::List(Rc::new(vals))
            }
            ExprKind::Range { start, end } => {
                let a = self.eval(start, ctx);
                let b = self.eval(end, ctx);
                match (a, b) {
                    (Value::Int(a), Value::Int(b)) => Value::Range(a, b),
                    (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
                    (a, b) => self.err_at(
                        "E0305",
                        e.span,
                        format!("a range needs two ints, found {} and {}", a.kind(), b.kind()),
                        "not an int range",
                        None,
                    ),
                }
            }
            ExprKind::If { cond, then, otherwise } => {
                let c = self.eval(cond, ctx);
                match c {
                    Value::Bool(true) => self.eval_block(then, ctx),
                    Value::Bool(false) => match otherwise {
                        Some(o) => self.eval(o, ctx),
                        None => Value::Unit,
                    },
                    Value::Poison => Value::Poison,
                    Value::Tensor(_) => self.err_at(
                        "E0404",
                        cond.span,
                        "`if` needs a compile-time bool, found a tensor",
                        "a tensor condition",
                        Some("choose elementwise with `where(cond, a, b)`".into()),
                    ),
                    other => self.err_at(
                        "E0404",
                        cond.span,
                        format!("`if` needs a bool, found {}", other.kind()),
                        "not a bool",
                        None,
                    ),
                }
            }
            ExprKind::For { pat, iter, body } => {
                let it = self.eval(iter, ctx);
                let Some(items) = self.iterate(it, iter.span) else { return Value::Poison };
                for item in items {
                    let mark = ctx.locals.len();
                    self.bind_pattern(pat, item, ctx);
                    self.eval_block(body, ctx);
                    ctx.locals.truncate(mark);
                }
                Value::Unit
            }
            ExprKind::Block(b) => self.eval_block(b, ctx),
            ExprKind::Error => Value::Poison,
        }
    }

    /// Runs `f` with the graph's current span set to `span` (nodes created get that span).
    pub fn with_span<T>(&mut self, span: Span, f: impl FnOnce(&mut Self) -> T) -> T {
        let saved = self.graph.current_span;
        self.graph.current_span = Some(span);
        let r = f(self);
        self.graph.current_span = saved;
        r
    }

    pub fn eval_block(&mut self, b: &ast::Block, ctx: &mut Ctx) -> Value {
        let mark = ctx.locals.len();
        for s in &b.stmts {
            // After a failed `assert` the rest of the body would only report follow-on errors.
            if !self.eval_stmt(s, ctx) {
                ctx.locals.truncate(mark);
                return Value::Poison;
            }
        }
        let v = match &b.tail {
            Some(t) => self.eval(t, ctx),
            None => Value::Unit,
        };
        ctx.locals.truncate(mark);
        v
    }

    /// Evaluates a statement; false if it was an `assert` that failed.
    fn eval_stmt(&mut self, s: &Stmt, ctx: &mut Ctx) -> bool {
        match s {
            Stmt::Let { pat, ty, value, .. } => {
                let v = self.eval(value, ctx);
                if let (Some(t), false) = (ty, v.is_poison()) {
                    let mut syms = SymEnv::default();
                    self.check_value_type(&v, t, &mut syms, ctx, value.span, "this `let`");
                }
                self.bind_pattern(pat, v, ctx);
            }
            Stmt::Assign { name, value, .. } => {
                let v = self.eval(value, ctx);
                match ctx.locals.iter_mut().rev().find(|(n, _)| **n == *name.name) {
                    Some(slot) => slot.1 = v,
                    None => {
                        let known = self.lookup(ctx, &name.name, name.span).is_some();
                        let msg = if known {
                            format!(
                                "cannot assign to `{}`: only `let` bindings can be re-assigned",
                                name.name
                            )
                        } else {
                            format!("cannot assign to unknown name `{}`", name.name)
                        };
                        self.err_at(
                            "E0110",
                            name.span,
                            msg,
                            "not a local binding",
                            Some(format!("declare it first with `let {} = ...`", name.name)),
                        );
                    }
                }
            }
            Stmt::Assert(a) => return self.eval_assert(a, ctx),
            Stmt::Expr(e) => {
                self.eval(e, ctx);
            }
        }
        true
    }

    /// Checks an `assert`; false if it failed (and was reported).
    pub fn eval_assert(&mut self, a: &ast::AssertStmt, ctx: &mut Ctx) -> bool {
        let c = self.eval(&a.cond, ctx);
        match c {
            Value::Bool(true) | Value::Poison => true,
            Value::Bool(false) => {
                let msg = match a.message.as_ref().map(|m| self.eval(m, ctx)) {
                    Some(Value::Str(s)) => s.to_string(),
                    Some(v) if !v.is_poison() => v.to_string(),
                    _ => "assertion failed".to_string(),
                };
                let help = match a.help.as_ref().map(|h| self.eval(h, ctx)) {
                    Some(Value::Str(s)) => Some(s.to_string()),
                    _ => None,
                };
                let d = Diagnostic::error("E0501", msg).at(a.cond.span, "this requirement does not hold");
                let d = match help {
                    Some(h) => d.with_help(h),
                    None => d,
                };
                self.error(d);
                false
            }
            other => {
                self.err_at(
                    "E0404",
                    a.cond.span,
                    format!("`assert` needs a bool, found {}", other.kind()),
                    "not a bool",
                    None,
                );
                false
            }
        }
    }

    pub fn bind_pattern(&mut self, pat: &Pattern, v: Value, ctx: &mut Ctx) {
        match pat {
            Pattern::Name(id) => ctx.bind(&id.name, v),
            Pattern::Wildcard(_) => {}
            Pattern::Tuple(ps, span) => {
                let items: Vec<Value> = match &v {
                    Value::Tuple(xs) | Value::List(xs) => xs.to_vec(),
                    Value::Poison => vec![Value::Poison; ps.len()],
                    other => {
                        self.err_at(
                            "E0306",
                            *span,
                            format!("cannot unpack {} into {} names", other.kind(), ps.len()),
                            "expects a tuple",
                            None,
                        );
                        vec![Value::Poison; ps.len()]
                    }
                };
                if items.len() != ps.len() {
                    self.err_at(
                        "E0306",
                        *span,
                        format!("cannot unpack {} values into {} names", items.len(), ps.len()),
                        "wrong number of names",
                        None,
                    );
                    for p in ps {
                        self.bind_pattern(p, Value::Poison, ctx);
                    }
                    return;
                }
                for (p, x) in ps.iter().zip(items) {
                    self.bind_pattern(p, x, ctx);
                }
            }
        }
    }

    /// The elements a `for` or comprehension iterates over.
    fn iterate(&mut self, v: Value, span: Span) -> Option<Vec<Value>> {
        match v {
            Value::Range(a, b) => {
                if b.saturating_sub(a) > MAX_LIST {
                    self.err_at(
                        "E0407",
                        span,
                        format!("range of {} elements is too long to unroll", b.saturating_sub(a)),
                        "too long",
                        Some(format!("compile-time loops are limited to {MAX_LIST} iterations")),
                    );
                    return None;
                }
                Some((a..b).map(Value::Int).collect())
            }
            Value::List(xs) | Value::Tuple(xs) => Some(xs.to_vec()),
            Value::Poison => None,
            other => {
                self.err_at(
                    "E0305",
                    span,
                    format!("cannot iterate over {}", other.kind()),
                    "not a list or range",
                    Some("iterate over a range `0..n` or a list".into()),
                );
                None
            }
        }
    }

    pub fn expect_count(&mut self, v: Value, span: Span, what: &str) -> Option<i64> {
        match v {
            Value::Int(n) if (0..=MAX_LIST).contains(&n) => Some(n),
            Value::Int(n) => {
                self.err_at(
                    "E0407",
                    span,
                    format!("{what} is {n}, outside 0..={MAX_LIST}"),
                    "out of range",
                    None,
                );
                None
            }
            Value::Poison => None,
            other => {
                self.err_at(
                    "E0305",
                    span,
                    format!("{what} must be an int, found {}", other.kind()),
                    "not an int",
                    None,
                );
                None
            }
        }
    }

    fn unary(&mut self, op: UnOp, v: Value, span: Span) -> Value {
        match (op, v) {
            (_, Value::Poison) => Value::Poison,
            (UnOp::Neg, Value::Int(i)) => match i.checked_neg() {
                Some(n) => Value::Int(n),
                None => self.err_at("E0402", span, "integer overflow", "overflows i64", None),
            },
            (UnOp::Neg, Value::Float(x)) => Value::Float(-x),
            (UnOp::Not, Value::Bool(b)) => Value::Bool(!b),
            (UnOp::Neg, Value::Tensor(n)) => {
                if self.graph.dtype(n) == DType::Bool {
                    return self.err_at(
                        "E0202",
                        span,
                        "cannot negate a bool tensor",
                        "bool",
                        Some("use `!x` for logical not".into()),
                    );
                }
                Value::Tensor(self.with_span(span, |s| s.graph.unary(crate::ir::UnaryOp::Neg, n)))
            }
            (UnOp::Not, Value::Tensor(n)) => {
                if self.graph.dtype(n) != DType::Bool {
                    return self.err_at(
                        "E0202",
                        span,
                        format!("`!` needs a bool tensor, found {}", self.graph.dtype(n)),
                        "not bool",
                        Some("compare first, e.g. `x > 0`".into()),
                    );
                }
                Value::Tensor(self.with_span(span, |s| s.graph.unary(crate::ir::UnaryOp::Not, n)))
            }
            (op, v) => self.err_at(
                "E0305",
                span,
                format!("cannot apply `{}` to {}", if op == UnOp::Neg { "-" } else { "!" }, v.kind()),
                "wrong operand",
                None,
            ),
        }
    }

    fn field(&mut self, b: Value, name: &ast::Ident) -> Value {
        match b {
            Value::Poison => Value::Poison,
            Value::Module(id) => {
                let inst = &self.insts[id.0 as usize];
                if let Some(m) = inst.lookup(&name.name).cloned() {
                    return match m {
                        Member::Value(v) => v,
                        Member::Param(slot) => Value::Tensor(self.param_node(id, slot)),
                    };
                }
                if inst.method(&name.name).is_some() {
                    return Value::Func(Func::Method(id, Rc::from(name.name.as_str())));
                }
                let module = inst.module.clone();
                let names: Vec<String> = inst
                    .env
                    .iter()
                    .map(|(n, _)| n.to_string())
                    .chain(inst.methods.iter().map(|(n, _)| n.to_string()))
                    .collect();
                let help = closest(&name.name, &names).map(|s| format!("a similar member exists: `{s}`"));
                self.err_at(
                    "E0107",
                    name.span,
                    format!("module `{module}` has no member `{}`", name.name),
                    "no such member",
                    help,
                )
            }
            Value::Tensor(n) => match name.name.as_str() {
                "shape" => {
                    Value::List(Rc::new(self.graph.shape(n).iter().map(|&d| Value::Int(d as i64)).collect()))
                }
                "ndim" => Value::Int(self.graph.shape(n).len() as i64),
                "dtype" => Value::Str(Rc::from(self.graph.dtype(n).name())),
                m => match super::builtins::lookup_method(m) {
                    Some(b) => Value::Func(Func::BoundBuiltin(b, Box::new(Value::Tensor(n)))),
                    None => self.err_at(
                        "E0107",
                        name.span,
                        format!("tensors have no method `{m}`"),
                        "unknown method",
                        closest(
                            m,
                            &super::builtins::METHODS.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                        )
                        .map(|s| format!("a similar method exists: `{s}`")),
                    ),
                },
            },
            Value::List(xs) if name.name == "len" => Value::Int(xs.len() as i64),
            other => self.err_at(
                "E0107",
                name.span,
                format!("{} has no member `{}`", other.kind(), name.name),
                "no such member",
                None,
            ),
        }
    }

    // ----- calls -----

    fn eval_call(&mut self, callee: &Expr, args: &[ast::Arg], span: Span, ctx: &mut Ctx) -> Value {
        let f = self.eval(callee, ctx);
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            let v = self.eval(&a.value, ctx);
            vals.push(ArgVal { name: a.name.clone(), value: v, span: a.value.span });
        }
        self.call(f, vals, callee.span, span, ctx)
    }

    pub fn call(
        &mut self,
        f: Value,
        args: Vec<ArgVal>,
        callee_span: Span,
        span: Span,
        ctx: &mut Ctx,
    ) -> Value {
        match f {
            Value::Poison => Value::Poison,
            Value::Func(Func::ModuleCtor(r)) => {
                if ctx.in_fn {
                    let name = self.item_name(r);
                    return self.err_at(
                        "E0408",
                        span,
                        format!("module `{name}` is instantiated inside a method"),
                        "instantiated here",
                        Some(format!(
                            "declare it as a field of the module (`layer = {name}(...)`) and call the field"
                        )),
                    );
                }
                self.instantiate(r, args, span)
            }
            Value::Module(id) => self.call_method(id, "forward", args, span),
            Value::Func(Func::Method(id, name)) => self.call_method(id, &name, args, span),
            Value::Func(Func::User(r)) => self.call_user_fn(r, args, span),
            Value::Func(Func::Builtin(b)) => {
                self.with_span(span, |s| s.call_builtin(b, None, args, span, ctx))
            }
            Value::Func(Func::BoundBuiltin(b, recv)) => {
                self.with_span(span, |s| s.call_builtin(b, Some(*recv), args, span, ctx))
            }
            other => self.err_at(
                "E0307",
                callee_span,
                format!("{} is not callable", other.kind()),
                "called here",
                None,
            ),
        }
    }

    fn item_name(&self, r: ItemRef) -> String {
        self.prog.item(r).name().map(|n| n.name.clone()).unwrap_or_default()
    }

    /// Matches call arguments to declared parameters. Returns, per parameter, the argument
    /// (or `None` when absent) — defaults are evaluated by the caller.
    fn match_args(
        &mut self,
        what: &str,
        params: &[ast::ParamDecl],
        args: Vec<ArgVal>,
        call_span: Span,
        decl_span: Span,
    ) -> Option<Vec<Option<ArgVal>>> {
        let mut slots: Vec<Option<ArgVal>> = vec![None; params.len()];
        let mut ok = true;
        let mut next_pos = 0;
        for a in args {
            match &a.name {
                None => {
                    if next_pos >= params.len() {
                        self.error(
                            Diagnostic::error(
                                "E0301",
                                format!("{what} takes {} argument(s) but more were given", params.len()),
                            )
                            .at(a.span, "unexpected argument")
                            .with_label(decl_span, "declared here")
                            .with_help("remove the extra argument"),
                        );
                        ok = false;
                        continue;
                    }
                    slots[next_pos] = Some(a);
                    next_pos += 1;
                }
                Some(n) => match params.iter().position(|p| p.name.name == n.name) {
                    Some(i) if slots[i].is_some() => {
                        self.err_at(
                            "E0304",
                            n.span,
                            format!("argument `{}` is given twice", n.name),
                            "given again",
                            None,
                        );
                        ok = false;
                    }
                    Some(i) => slots[i] = Some(a),
                    None => {
                        let names: Vec<String> = params.iter().map(|p| p.name.name.clone()).collect();
                        let help = match closest(&n.name, &names) {
                            Some(s) => format!("did you mean `{s}`? parameters are: {}", names.join(", ")),
                            None => format!(
                                "parameters are: {}",
                                if names.is_empty() { "(none)".into() } else { names.join(", ") }
                            ),
                        };
                        self.error(
                            Diagnostic::error("E0302", format!("{what} has no parameter `{}`", n.name))
                                .at(n.span, "unknown parameter")
                                .with_label(decl_span, "declared here")
                                .with_help(help),
                        );
                        ok = false;
                    }
                },
            }
        }
        for (i, p) in params.iter().enumerate() {
            if slots[i].is_none() && p.default.is_none() {
                self.error(
                    Diagnostic::error("E0303", format!("{what} needs a value for `{}`", p.name.name))
                        .at(call_span, format!("`{}` is missing", p.name.name))
                        .with_label(p.span, "declared here without a default")
                        .with_help(format!("pass it as `{}: ...`", p.name.name)),
                );
                ok = false;
            }
        }
        ok.then_some(slots)
    }

    /// Creates a module instance and evaluates its members.
    pub(super) fn instantiate(&mut self, r: ItemRef, args: Vec<ArgVal>, span: Span) -> Value {
        let Item::Module(decl) = self.prog.item(r) else { return Value::Poison };
        if !self.spend_call(span) {
            return Value::Poison;
        }
        if self.chain.len() >= MAX_DEPTH {
            return self.err_at(
                "E0405",
                span,
                format!("instantiation of `{}` is nested more than {MAX_DEPTH} deep", decl.name.name),
                "too deep",
                Some(
                    "a module that contains itself never ends; add a condition that stops the recursion"
                        .into(),
                ),
            );
        }
        let what = format!("module `{}`", decl.name.name);
        self.chain.push(Frame { module: Rc::from(decl.name.name.as_str()), span });
        let file = FileId(r.file);
        let result = (|| {
            let slots = self.match_args(&what, &decl.params, args, span, decl.name.span)?;
            let id = InstId(self.insts.len() as u32);
            self.insts.push(Instance {
                decl: r,
                module: Rc::from(decl.name.name.as_str()),
                env: Vec::new(),
                fields: Vec::new(),
                params: Vec::new(),
                methods: Vec::new(),
                dims: Vec::new(),
                chain: self.chain.clone(),
                args_text: String::new(),
            });
            let mut ctx = Ctx::new(file, Some(id), false);
            let mut args_text = Vec::new();
            let mut poisoned = false;
            for (p, slot) in decl.params.iter().zip(slots) {
                let (v, vspan) = match slot {
                    Some(a) => (a.value, a.span),
                    None => {
                        let d = p.default.as_ref().expect("match_args checked that a default exists");
                        (self.eval(d, &mut ctx), d.span)
                    }
                };
                let v = match &p.ty {
                    Some(t) if !v.is_poison() => self.coerce_ct(v, t, &p.name.name, &what, vspan, p.span),
                    _ => v,
                };
                poisoned |= v.is_poison();
                if !matches!(v, Value::Module(_) | Value::List(_) | Value::Poison) {
                    args_text.push(format!("{}={}", p.name.name, v));
                }
                self.insts[id.0 as usize]
                    .env
                    .push((Rc::from(p.name.name.as_str()), Member::Value(v.clone())));
                if matches!(v, Value::Module(_) | Value::List(_)) {
                    self.insts[id.0 as usize].fields.push((Rc::from(p.name.name.as_str()), v));
                }
            }
            self.insts[id.0 as usize].args_text = args_text.join(", ");
            if poisoned {
                // Members would only repeat errors about the bad argument.
                return Some(Value::Module(id));
            }
            if !self.eval_members(&decl.members, id, &mut ctx) {
                return None;
            }
            Some(Value::Module(id))
        })();
        self.chain.pop();
        result.unwrap_or(Value::Poison)
    }

    /// Evaluates module members in order; false once an `assert` failed (the remaining
    /// members are skipped, as they would only repeat the problem).
    fn eval_members(&mut self, members: &'p [ast::Member], id: InstId, ctx: &mut Ctx) -> bool {
        for m in members {
            match m {
                ast::Member::Field { name, value, .. } => {
                    let v = self.eval(value, ctx);
                    let inst = &mut self.insts[id.0 as usize];
                    if contains_module(&v) {
                        inst.fields.push((Rc::from(name.name.as_str()), v.clone()));
                    }
                    inst.env.push((Rc::from(name.name.as_str()), Member::Value(v)));
                }
                ast::Member::Let { name, value, .. } => {
                    let v = self.eval(value, ctx);
                    let inst = &mut self.insts[id.0 as usize];
                    if contains_module(&v) {
                        inst.fields.push((Rc::from(name.name.as_str()), v.clone()));
                    }
                    inst.env.push((Rc::from(name.name.as_str()), Member::Value(v)));
                }
                ast::Member::Param { name, ty, init, trainable, span } => {
                    let slot = self.eval_param_decl(name, ty, init.as_ref(), *trainable, *span, ctx);
                    let inst = &mut self.insts[id.0 as usize];
                    match slot {
                        Some(p) => {
                            inst.params.push(p);
                            let idx = inst.params.len() - 1;
                            inst.env.push((Rc::from(name.name.as_str()), Member::Param(idx)));
                        }
                        None => inst.env.push((Rc::from(name.name.as_str()), Member::Value(Value::Poison))),
                    }
                }
                ast::Member::Dim { name, value, .. } => {
                    let v = self.eval(value, ctx);
                    match v {
                        Value::Int(n) if n >= 0 => {
                            self.insts[id.0 as usize].dims.push((Rc::from(name.name.as_str()), n))
                        }
                        Value::Poison => {}
                        other => {
                            self.err_at(
                                "E0305",
                                value.span,
                                format!("`dim {}` needs a non-negative int, found {other}", name.name),
                                "not a dimension",
                                None,
                            );
                        }
                    }
                }
                ast::Member::Fn(f) => {
                    self.insts[id.0 as usize].methods.push((Rc::from(f.name.name.as_str()), f));
                }
                ast::Member::If { cond, then, otherwise, .. } => {
                    let c = self.eval(cond, ctx);
                    match c {
                        Value::Bool(true) => {
                            if !self.eval_members(then, id, ctx) {
                                return false;
                            }
                        }
                        Value::Bool(false) => {
                            if !self.eval_members(otherwise, id, ctx) {
                                return false;
                            }
                        }
                        Value::Poison => {}
                        other => {
                            self.err_at(
                                "E0404",
                                cond.span,
                                format!("`if` needs a bool, found {}", other.kind()),
                                "not a bool",
                                None,
                            );
                        }
                    }
                }
                ast::Member::Assert(a) => {
                    if !self.eval_assert(a, ctx) {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn eval_param_decl(
        &mut self,
        name: &ast::Ident,
        ty: &TypeExpr,
        init: Option<&Expr>,
        trainable: bool,
        span: Span,
        ctx: &mut Ctx,
    ) -> Option<ParamSlot> {
        let TypeExpr::Tensor { dtype, dims, span: tspan } = ty else {
            self.err_at(
                "E0209",
                ty.span(),
                format!("`{}` needs a tensor type such as `[d, h]`", name.name),
                "not a tensor type",
                None,
            );
            return None;
        };
        let dt = match dtype {
            None => DType::F32,
            Some(d) => self.dtype_named(d)?,
        };
        let mut shape = Vec::with_capacity(dims.len());
        for d in dims {
            match d {
                DimExpr::Expr(e) => {
                    let v = self.eval(e, ctx);
                    match v {
                        Value::Int(n) if n >= 0 => shape.push(n as usize),
                        Value::Poison => return None,
                        other => {
                            self.err_at(
                                "E0209",
                                e.span,
                                format!("parameter dimensions must be non-negative ints, found {other}"),
                                "not a size",
                                Some(
                                    "a parameter's shape must be known when the module is instantiated"
                                        .into(),
                                ),
                            );
                            return None;
                        }
                    }
                }
                DimExpr::Ellipsis(s) | DimExpr::Wildcard(s) => {
                    self.err_at(
                        "E0209",
                        *s,
                        "parameter shapes cannot use `...` or `_`",
                        "not a size",
                        Some("give every dimension of a parameter".into()),
                    );
                    return None;
                }
            }
        }
        if !self.check_numel(&shape, *tspan) {
            return None;
        }
        let ty = TensorType::new(dt, shape);
        let init = match init {
            None if trainable => {
                self.err_at(
                    "E0410",
                    span,
                    format!("parameter `{}` needs an initialiser", name.name),
                    "no `= ...`",
                    Some("add one, e.g. `= zeros()`, `= normal(0.02)`, `= glorot()` or `= kaiming()`".into()),
                );
                return None;
            }
            None => Init::Zeros,
            Some(e) => {
                let v = self.eval(e, ctx);
                let spec = match v {
                    Value::Init(s) => (*s).clone(),
                    Value::Func(Func::Builtin("zeros")) => InitSpec::Ready(Init::Zeros),
                    Value::Func(Func::Builtin("ones")) => InitSpec::Ready(Init::Ones),
                    Value::Int(x) => InitSpec::Ready(Init::Full(x as f64)),
                    Value::Float(x) => InitSpec::Ready(Init::Full(x)),
                    Value::Poison => return None,
                    other => {
                        self.err_at(
                            "E0410",
                            e.span,
                            format!("expected an initialiser, found {}", other.kind()),
                            "not an initialiser",
                            Some("use zeros(), ones(), full(v), normal(std), uniform(a, b), glorot(), glorot_normal(), kaiming() or kaiming_normal()".into()),
                        );
                        return None;
                    }
                };
                resolve_init(spec, &ty.shape)
            }
        };
        Some(ParamSlot { name: name.name.clone(), ty, init, trainable, span })
    }

    pub fn dtype_named(&mut self, d: &ast::Ident) -> Option<DType> {
        match d.name.as_str() {
            "f32" | "float" => Some(DType::F32),
            "i32" | "int" => Some(DType::I32),
            "bool" => Some(DType::Bool),
            other => {
                self.err_at(
                    "E0208",
                    d.span,
                    format!("unknown element type `{other}`"),
                    "unknown dtype",
                    Some("element types are f32, i32 and bool".into()),
                );
                None
            }
        }
    }

    /// Whether a shape has a representable number of elements; reports E0207 otherwise.
    pub fn check_numel(&mut self, shape: &[usize], span: Span) -> bool {
        let mut n: u128 = 1;
        for &d in shape {
            n = n.saturating_mul(d as u128);
        }
        if n > MAX_NUMEL {
            self.err_at(
                "E0207",
                span,
                format!("a tensor of shape {} is too large ({n} elements)", ShapeDisplay(shape)),
                "too large",
                Some(format!("tensors are limited to {MAX_NUMEL} elements")),
            );
            return false;
        }
        true
    }

    /// Checks (and converts int → float) a compile-time argument against its declared type.
    fn coerce_ct(
        &mut self,
        v: Value,
        t: &TypeExpr,
        pname: &str,
        what: &str,
        vspan: Span,
        pspan: Span,
    ) -> Value {
        let ok = match (t, &v) {
            (TypeExpr::Int(_), Value::Int(_)) => true,
            (TypeExpr::Float(_), Value::Float(_)) => true,
            (TypeExpr::Float(_), Value::Int(i)) => return Value::Float(*i as f64),
            (TypeExpr::Bool(_), Value::Bool(_)) => true,
            (TypeExpr::Str(_), Value::Str(_)) => true,
            (TypeExpr::Module(_), Value::Module(_)) => true,
            (TypeExpr::List(_), Value::List(_)) => true,
            (TypeExpr::Tensor { .. }, Value::Tensor(_)) => true,
            (TypeExpr::Tuple(..), Value::Tuple(_)) => true,
            _ => false,
        };
        if ok {
            return v;
        }
        let want = type_name(t);
        let mut help = format!("`{pname}` is declared as {want}");
        if let (TypeExpr::Int(_), Value::Float(x)) = (t, &v) {
            help = format!("`{pname}` must be a whole number; write `{}`", x.round() as i64);
        }
        if let (TypeExpr::Module(_), Value::Func(Func::ModuleCtor(_))) = (t, &v) {
            help = "pass an instance: add the arguments, e.g. `FeedForward(d, 4 * d)`".into();
        }
        self.error(
            Diagnostic::error(
                "E0308",
                format!("argument `{pname}` of {what} must be {want}, found {}", v.kind()),
            )
            .at(vspan, format!("this is {}", v.kind()))
            .with_label(pspan, "declared here")
            .with_help(help),
        )
    }

    /// Calls a method of an instance: binds arguments, checks tensor signatures (symbolic
    /// dimensions unified), evaluates the body and checks the result.
    pub fn call_method(&mut self, id: InstId, name: &str, args: Vec<ArgVal>, span: Span) -> Value {
        let inst = &self.insts[id.0 as usize];
        let module = inst.module.clone();
        let Some(f) = inst.method(name) else {
            let names: Vec<String> = inst.methods.iter().map(|(n, _)| n.to_string()).collect();
            let help = if name == "forward" {
                Some(format!(
                    "module `{module}` defines no `fn forward`; call one of its methods: {}",
                    names.join(", ")
                ))
            } else {
                closest(name, &names).map(|s| format!("did you mean `{s}`?"))
            };
            return self.err_at(
                "E0107",
                span,
                format!("module `{module}` has no method `{name}`"),
                "no such method",
                help,
            );
        };
        let file = FileId(inst.decl.file);
        self.run_fn(f, format!("{module}.{name}"), Some(id), file, args, span)
    }

    fn call_user_fn(&mut self, r: ItemRef, args: Vec<ArgVal>, span: Span) -> Value {
        let Item::Fn(f) = self.prog.item(r) else { return Value::Poison };
        self.run_fn(f, f.name.name.clone(), None, FileId(r.file), args, span)
    }

    fn run_fn(
        &mut self,
        f: &'p ast::FnDecl,
        what: String,
        inst: Option<InstId>,
        file: FileId,
        args: Vec<ArgVal>,
        span: Span,
    ) -> Value {
        if !self.spend_call(span) {
            return Value::Poison;
        }
        if self.chain.len() >= MAX_DEPTH {
            return self.err_at(
                "E0405",
                span,
                format!("calls are nested more than {MAX_DEPTH} deep in `{what}`"),
                "too deep",
                Some("a function that calls itself without end never finishes elaborating".into()),
            );
        }
        let Some(slots) = self.match_args(&format!("`{what}`"), &f.params, args, span, f.name.span) else {
            return Value::Poison;
        };
        self.chain.push(Frame { module: Rc::from(what.as_str()), span });
        let saved_scope = self.graph.current_scope;
        if let Some(id) = inst
            && let Some(p) = self.inst_paths.get(&id).cloned()
        {
            self.graph.current_scope = self.graph.scope(&p);
        }
        let mut ctx = Ctx::new(file, inst, true);
        let mut syms = SymEnv::default();
        let mut any_poison = false;
        for (p, slot) in f.params.iter().zip(slots) {
            let (v, vspan) = match slot {
                Some(a) => (a.value, a.span),
                None => {
                    let d = p.default.as_ref().expect("match_args checked that a default exists");
                    (self.eval(d, &mut ctx), d.span)
                }
            };
            let v = match &p.ty {
                Some(t @ TypeExpr::Tensor { .. }) => {
                    let before = self.diags.len();
                    if !v.is_poison() && !matches!(v, Value::None) {
                        self.check_value_type(
                            &v,
                            t,
                            &mut syms,
                            &mut ctx,
                            vspan,
                            &format!("argument `{}` of `{what}`", p.name.name),
                        );
                    }
                    // A mismatched argument would only produce follow-on errors in the body.
                    if self.diags.len() > before { Value::Poison } else { v }
                }
                Some(t) if !v.is_poison() => {
                    self.coerce_ct(v, t, &p.name.name, &format!("`{what}`"), vspan, p.span)
                }
                _ => v,
            };
            any_poison |= v.is_poison();
            ctx.bind(&p.name.name, v);
        }
        for (n, v) in &syms.names {
            if ctx.lookup_local(n).is_none() {
                ctx.bind(n, Value::Int(*v as i64));
            }
        }
        let result = if any_poison { Value::Poison } else { self.eval_block(&f.body, &mut ctx) };
        if let (Some(rt), false) = (&f.ret, result.is_poison()) {
            let tail_span = f.body.tail.as_ref().map_or(f.body.span, |t| t.span);
            self.check_value_type(
                &result,
                rt,
                &mut syms,
                &mut ctx,
                tail_span,
                &format!("the result of `{what}`"),
            );
        }
        if let Some(id) = inst
            && !self.call_outputs.contains_key(&id)
            && !result.is_poison()
        {
            let mut outs = Vec::new();
            collect_tensor_types(&self.graph, &result, &mut outs);
            self.call_outputs.insert(id, outs);
        }
        self.graph.current_scope = saved_scope;
        self.chain.pop();
        result
    }

    /// Checks a value against a type annotation, binding symbolic dimensions in `syms`.
    pub fn check_value_type(
        &mut self,
        v: &Value,
        t: &TypeExpr,
        syms: &mut SymEnv,
        ctx: &mut Ctx,
        vspan: Span,
        role: &str,
    ) {
        match (t, v) {
            (_, Value::Poison) => {}
            (TypeExpr::Tensor { dtype, dims, span }, Value::Tensor(n)) => {
                self.check_tensor(*n, dtype.as_ref(), dims, *span, syms, ctx, vspan, role);
            }
            (TypeExpr::Tuple(ts, tspan), Value::Tuple(vs)) => {
                if ts.len() != vs.len() {
                    self.error(
                        Diagnostic::error(
                            "E0210",
                            format!("{role} has {} values, expected {}", vs.len(), ts.len()),
                        )
                        .at(vspan, format!("{} values", vs.len()))
                        .with_label(*tspan, "declared here"),
                    );
                    return;
                }
                for (i, (t, v)) in ts.iter().zip(vs.iter()).enumerate() {
                    self.check_value_type(v, t, syms, ctx, vspan, &format!("value {i} of {role}"));
                }
            }
            (TypeExpr::Tensor { span, .. }, other) | (TypeExpr::Tuple(_, span), other) => {
                self.error(
                    Diagnostic::error(
                        "E0210",
                        format!("{role} must be {}, found {}", type_name(t), other.kind()),
                    )
                    .at(vspan, format!("this is {}", other.kind()))
                    .with_label(*span, "declared here"),
                );
            }
            (t, v) => {
                let ok = matches!(
                    (t, v),
                    (TypeExpr::Int(_), Value::Int(_))
                        | (TypeExpr::Float(_), Value::Float(_) | Value::Int(_))
                        | (TypeExpr::Bool(_), Value::Bool(_))
                        | (TypeExpr::Str(_), Value::Str(_))
                        | (TypeExpr::Module(_), Value::Module(_))
                        | (TypeExpr::List(_), Value::List(_))
                );
                if !ok {
                    self.error(
                        Diagnostic::error(
                            "E0210",
                            format!("{role} must be {}, found {}", type_name(t), v.kind()),
                        )
                        .at(vspan, format!("this is {}", v.kind()))
                        .with_label(t.span(), "declared here"),
                    );
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_tensor(
        &mut self,
        n: NodeId,
        dtype: Option<&ast::Ident>,
        dims: &[DimExpr],
        tspan: Span,
        syms: &mut SymEnv,
        ctx: &mut Ctx,
        vspan: Span,
        role: &str,
    ) {
        let actual = self.graph.ty(n).clone();
        if let Some(d) = dtype {
            let Some(want) = self.dtype_named(d) else { return };
            if want != actual.dtype {
                let help = match (want, actual.dtype) {
                    (DType::F32, DType::I32) => "convert with `.float()`",
                    (DType::I32, DType::F32) => "convert with `.int()` (truncates)",
                    _ => "convert with `.float()`, `.int()` or a comparison",
                };
                self.error(
                    Diagnostic::error(
                        "E0202",
                        format!("{role} has element type {}, expected {want}", actual.dtype),
                    )
                    .at(vspan, format!("this is {actual}"))
                    .with_label(d.span, format!("{want} expected here"))
                    .with_help(help),
                );
                return;
            }
        } else if actual.dtype != DType::F32 {
            self.error(
                Diagnostic::error("E0202", format!("{role} has element type {}, expected f32", actual.dtype))
                    .at(vspan, format!("this is {actual}"))
                    .with_label(tspan, "an unmarked tensor type means f32")
                    .with_help(format!(
                        "write `{}[...]` in the signature, or convert the value",
                        actual.dtype
                    )),
            );
            return;
        }
        let shape = &actual.shape;
        let has_ellipsis = matches!(dims.first(), Some(DimExpr::Ellipsis(_)));
        let fixed = if has_ellipsis { &dims[1..] } else { dims };
        if fixed.iter().any(|d| matches!(d, DimExpr::Ellipsis(_))) {
            self.err_at(
                "E0211",
                tspan,
                "`...` may only stand first in a tensor type",
                "misplaced `...`",
                None,
            );
            return;
        }
        let rank_ok = if has_ellipsis { shape.len() >= fixed.len() } else { shape.len() == fixed.len() };
        if !rank_ok {
            self.error(
                Diagnostic::error(
                    "E0212",
                    format!(
                        "{role} has rank {} (shape {}), expected {}{} dimensions",
                        shape.len(),
                        ShapeDisplay(shape),
                        if has_ellipsis { "at least " } else { "" },
                        fixed.len()
                    ),
                )
                .at(vspan, format!("this is {actual}"))
                .with_label(tspan, "declared here")
                .with_help("reshape the value, or change the declared type"),
            );
            return;
        }
        let lead = shape.len() - fixed.len();
        if has_ellipsis {
            let leading = shape[..lead].to_vec();
            match &syms.ellipsis {
                Some((prev, pspan)) if *prev != leading => {
                    let pspan = *pspan;
                    let prev = prev.clone();
                    self.error(
                        Diagnostic::error(
                            "E0204",
                            format!(
                                "{role}: leading dimensions `...` are {} here but {} before",
                                ShapeDisplay(&leading),
                                ShapeDisplay(&prev)
                            ),
                        )
                        .at(vspan, format!("this is {actual}"))
                        .with_label(pspan, "bound here"),
                    );
                    return;
                }
                Some(_) => {}
                None => syms.ellipsis = Some((leading, vspan)),
            }
        }
        // First bind bare names that are not compile-time values (symbolic dimensions), then
        // check compound expressions with those names in scope.
        let mut problems: Vec<(usize, String, Span)> = Vec::new();
        for (i, d) in fixed.iter().enumerate() {
            let actual_d = shape[lead + i];
            let DimExpr::Expr(e) = d else { continue };
            let ExprKind::Name(name) = &e.kind else { continue };
            if self.is_ct_name(ctx, name) {
                continue;
            }
            match syms.names.iter().find(|(n, _)| n == name) {
                Some((_, v)) if *v != actual_d => {
                    let bound_at = syms.spans.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
                    let v = *v;
                    let mut d = Diagnostic::error(
                        "E0204",
                        format!("dimension `{name}` is {v} from an earlier binding but {actual_d} in {role}"),
                    )
                    .at(vspan, format!("this is {actual}"))
                    .with_help(format!("every use of `{name}` in one call must have the same size"));
                    if let Some(s) = bound_at {
                        d = d.with_label(s, format!("`{name}` = {v} bound here"));
                    }
                    self.error(d);
                    return;
                }
                Some(_) => {}
                None => {
                    syms.names.push((name.clone(), actual_d));
                    syms.spans.push((name.clone(), vspan));
                }
            }
        }
        for (i, d) in fixed.iter().enumerate() {
            let actual_d = shape[lead + i];
            let DimExpr::Expr(e) = d else { continue };
            if let ExprKind::Name(name) = &e.kind
                && !self.is_ct_name(ctx, name)
            {
                continue;
            }
            let mark = ctx.locals.len();
            for (n, v) in &syms.names {
                ctx.bind(n, Value::Int(*v as i64));
            }
            let want = self.eval(e, ctx);
            ctx.locals.truncate(mark);
            match want {
                Value::Int(w) if w >= 0 && w as usize == actual_d => {}
                Value::Int(w) => problems.push((i, format!("{w}"), e.span)),
                Value::Poison => return,
                other => {
                    self.err_at(
                        "E0209",
                        e.span,
                        format!("a dimension must be an int, found {}", other.kind()),
                        "not a size",
                        None,
                    );
                    return;
                }
            }
        }
        if let Some((i, want, dspan)) = problems.first().cloned() {
            let expected = self.render_dims(dims, shape, lead, syms, ctx);
            let dim_text = self.prog.sources.get(dspan.file).snippet(dspan).to_string();
            let mut d = Diagnostic::error(
                "E0201",
                format!("{role} has shape {}, expected {expected}", ShapeDisplay(shape)),
            )
            .at(vspan, format!("this is {actual}"))
            .with_label(dspan, format!("`{dim_text}` is {want} here"));
            let why = self.explain_dim(ctx, &dim_text);
            d = d.with_help(match why {
                Some(w) => format!("dimension {} must be {want}: {w}", lead + i),
                None => format!("dimension {} must be {want}", lead + i),
            });
            self.error(d);
        }
    }

    /// `[B, T, d] = [2, 64, 128]`-style rendering of an expected type.
    fn render_dims(
        &mut self,
        dims: &[DimExpr],
        shape: &[usize],
        lead: usize,
        syms: &SymEnv,
        ctx: &mut Ctx,
    ) -> String {
        let mut written = Vec::new();
        let mut values = Vec::new();
        for d in dims {
            match d {
                DimExpr::Ellipsis(s) => {
                    written.push(self.prog.sources.get(s.file).snippet(*s).to_string());
                    for &x in &shape[..lead] {
                        values.push(x.to_string());
                    }
                }
                DimExpr::Wildcard(_) => {
                    written.push("_".into());
                    values.push("_".into());
                }
                DimExpr::Expr(e) => {
                    written.push(self.prog.sources.get(e.span.file).snippet(e.span).to_string());
                    let mark = ctx.locals.len();
                    for (n, v) in &syms.names {
                        ctx.bind(n, Value::Int(*v as i64));
                    }
                    let saved = self.diags.len();
                    let v = self.eval(e, ctx);
                    self.diags.truncate(saved);
                    ctx.locals.truncate(mark);
                    values.push(match v {
                        Value::Int(x) => x.to_string(),
                        _ => "?".into(),
                    });
                }
            }
        }
        let w = format!("[{}]", written.join(", "));
        let v = format!("[{}]", values.join(", "));
        if w == v { w } else { format!("{w} = {v}") }
    }

    /// Why a compile-time name has its value, e.g. "`d` is an argument of `Block`, given at
    /// models/x.model:31:14".
    fn explain_dim(&self, ctx: &Ctx, text: &str) -> Option<String> {
        let id = ctx.inst?;
        let inst = &self.insts[id.0 as usize];
        let decl = match self.prog.item(inst.decl) {
            Item::Module(m) => m,
            _ => return None,
        };
        let names: Vec<&str> =
            decl.params.iter().map(|p| p.name.name.as_str()).filter(|n| text.contains(n)).collect();
        if names.is_empty() {
            return None;
        }
        let vals: Vec<String> = names
            .iter()
            .filter_map(|n| match inst.lookup(n) {
                Some(Member::Value(v)) => Some(format!("`{n}` = {v}")),
                _ => None,
            })
            .collect();
        let site =
            inst.chain.last().map(|f| self.prog.sources.location(f.span).to_string()).unwrap_or_default();
        Some(format!("{} from the arguments of `{}` instantiated at {site}", vals.join(", "), inst.module))
    }

    /// Whether a name denotes a compile-time value here (as opposed to a symbolic dimension).
    fn is_ct_name(&self, ctx: &Ctx, name: &str) -> bool {
        if let Some(v) = ctx.lookup_local(name) {
            return matches!(v, Value::Int(_));
        }
        if let Some(id) = ctx.inst
            && let Some(Member::Value(v)) = self.insts[id.0 as usize].lookup(name)
        {
            return matches!(v, Value::Int(_) | Value::Poison);
        }
        false
    }

    pub fn rng_key(&mut self) -> NodeId {
        if let Some(k) = self.rng_key {
            return k;
        }
        let saved = (self.graph.current_scope, self.graph.current_span);
        self.graph.current_scope = crate::ir::ScopeId(0);
        let k = self.graph.add_input("rng_key", TensorType::new(DType::I32, vec![]), None);
        (self.graph.current_scope, self.graph.current_span) = saved;
        self.rng_key = Some(k);
        k
    }
}

/// Symbolic dimensions bound in one call.
#[derive(Default, Debug)]
pub struct SymEnv {
    pub names: Vec<(String, usize)>,
    pub spans: Vec<(String, Span)>,
    pub ellipsis: Option<(Vec<usize>, Span)>,
}

fn contains_module(v: &Value) -> bool {
    match v {
        Value::Module(_) => true,
        Value::List(xs) | Value::Tuple(xs) => xs.iter().any(contains_module),
        _ => false,
    }
}

fn collect_tensor_types(g: &Graph, v: &Value, out: &mut Vec<TensorType>) {
    match v {
        Value::Tensor(n) => out.push(g.ty(*n).clone()),
        Value::Tuple(xs) | Value::List(xs) => xs.iter().for_each(|x| collect_tensor_types(g, x, out)),
        _ => {}
    }
}

pub fn type_name(t: &TypeExpr) -> String {
    match t {
        TypeExpr::Int(_) => "an int".into(),
        TypeExpr::Float(_) => "a float".into(),
        TypeExpr::Bool(_) => "a bool".into(),
        TypeExpr::Str(_) => "a string".into(),
        TypeExpr::Module(_) => "a module instance".into(),
        TypeExpr::List(_) => "a list".into(),
        TypeExpr::Tensor { .. } => "a tensor".into(),
        TypeExpr::Tuple(ts, _) => format!("a tuple of {}", ts.len()),
    }
}

fn item_kind(it: &Item) -> &'static str {
    match it {
        Item::Use(_) => "use",
        Item::Module(m) if m.kind == ast::ModuleKind::Model => "model",
        Item::Module(_) => "module",
        Item::Fn(_) => "fn",
        Item::Data(_) => "data",
        Item::Train(_) => "train",
        Item::Sweep(_) => "sweep",
    }
}

/// Turns an initialiser into a concrete [`Init`] for a parameter shape. Fans: rank 1 `[n]`
/// → (n, n); rank 2 `[in, out]`; rank 3 `[batch, in, out]` (expert weights); rank ≥ 4
/// `[out, in, k...]` (convolutions).
pub fn resolve_init(spec: InitSpec, shape: &[usize]) -> Init {
    let (fan_in, fan_out) = match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        2 => (shape[0], shape[1]),
        3 => (shape[1], shape[2]),
        _ => {
            let rf: usize = shape[2..].iter().product();
            (shape[1] * rf, shape[0] * rf)
        }
    };
    match spec {
        InitSpec::Ready(i) => i,
        InitSpec::Glorot { gain, normal } => Init::Glorot { fan_in, fan_out, gain, normal },
        InitSpec::Kaiming { gain, normal } => Init::Kaiming { fan_in, gain, normal },
    }
}

/// The closest name by edit distance, if close enough to be a likely typo.
pub fn closest(name: &str, candidates: &[String]) -> Option<String> {
    let mut best: Option<(usize, &String)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let d = edit_distance(name, c);
        let limit = (name.len().max(c.len()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Elaborates `method` of model `name` with top-level arguments `args` (name, value).
pub fn elaborate_model(
    prog: &Program,
    name: &str,
    args: &[(String, Value)],
    opts: &ElabOptions,
) -> Result<Elaborated, Vec<Diagnostic>> {
    let args: Vec<(String, Value, Option<Span>)> =
        args.iter().map(|(n, v)| (n.clone(), v.clone(), None)).collect();
    elaborate_model_at(prog, name, &args, None, opts)
}

/// Like [`elaborate_model`], with the source spans of the arguments and of the call (a
/// `train` block's `model:` entry) so that errors point there.
pub fn elaborate_model_at(
    prog: &Program,
    name: &str,
    args: &[(String, Value, Option<Span>)],
    call_span: Option<Span>,
    opts: &ElabOptions,
) -> Result<Elaborated, Vec<Diagnostic>> {
    let mut el = Elaborator::new(prog, opts.training);
    let Some((r, item)) = prog.find_root_item(name) else {
        let models: Vec<String> = prog.models().iter().map(|(_, m)| m.name.name.clone()).collect();
        let help = match closest(name, &models) {
            Some(s) => format!("did you mean `{s}`?"),
            None if models.is_empty() => "the file declares no `model`".to_string(),
            None => format!("models in this file: {}", models.join(", ")),
        };
        return Err(vec![Diagnostic::error("E0109", format!("no model named `{name}`")).with_help(help)]);
    };
    let Item::Module(decl) = item else {
        return Err(vec![
            Diagnostic::error("E0109", format!("`{name}` is not a model")).at(item.span(), "declared here"),
        ]);
    };
    el.graph.name = format!("{}.{}", decl.name.name, opts.method);
    let span = call_span.unwrap_or(decl.name.span);
    let call_args: Vec<ArgVal> = args
        .iter()
        .map(|(n, v, s)| {
            let s = s.unwrap_or(span);
            ArgVal { name: Some(ast::Ident { name: n.clone(), span: s }), value: v.clone(), span: s }
        })
        .collect();
    let root = el.instantiate(r, call_args, span);
    let Value::Module(root) = root else {
        return Err(el.diags);
    };
    el.register_tree(root);
    let inst = &el.insts[root.0 as usize];
    let Some(f) = inst.method(&opts.method) else {
        let d = Diagnostic::error("E0107", format!("model `{name}` has no method `{}`", opts.method))
            .at(decl.name.span, "declared here")
            .with_help(format!("add `fn {}(...) -> ... {{ ... }}`", opts.method));
        el.diags.push(d);
        return Err(el.diags);
    };
    // Bind the top-level signature: compile-time dims from the instance, symbolic ones from
    // the options, then `dim` defaults, then 1.
    let mut dims: Vec<(String, i64)> = opts.dims.clone();
    for (n, v) in &inst.dims {
        if !dims.iter().any(|(m, _)| m == &**n) {
            dims.push((n.to_string(), *v));
        }
    }
    let mut used_dims: Vec<(String, i64)> = Vec::new();
    let mut warnings = Vec::new();
    let mut inputs = Vec::new();
    let mut ctx = Ctx::new(FileId(r.file), Some(root), true);
    for p in &f.params {
        let Some(TypeExpr::Tensor { dtype, dims: tdims, span: tspan }) = &p.ty else {
            if p.default.is_some() {
                continue;
            }
            el.err_at(
                "E0311",
                p.span,
                format!("parameter `{}` of the top-level `{}` needs a tensor type", p.name.name, opts.method),
                "no tensor type",
                Some(format!("declare it like `{}: f32[B, 64]`", p.name.name)),
            );
            continue;
        };
        let dt = match dtype {
            None => DType::F32,
            Some(d) => el.dtype_named(d).unwrap_or(DType::F32),
        };
        let mut shape = Vec::new();
        for d in tdims {
            match d {
                DimExpr::Ellipsis(_) => {}
                DimExpr::Wildcard(s) => {
                    el.err_at(
                        "E0311",
                        *s,
                        "`_` cannot stand in a top-level signature",
                        "unknown size",
                        Some("name the dimension (e.g. `B`) and give it with `--dim B=...`".into()),
                    );
                }
                DimExpr::Expr(e) => {
                    let v = match &e.kind {
                        ExprKind::Name(n) if !el.is_ct_name(&ctx, n) => {
                            let v = match dims.iter().find(|(m, _)| m == n) {
                                Some((_, v)) => *v,
                                None => {
                                    warnings.push(
                                        Diagnostic::warning(
                                            "W0001",
                                            format!("dimension `{n}` has no value; using 1"),
                                        )
                                        .at(e.span, "free dimension")
                                        .with_help(format!(
                                            "add `dim {n} = ...` to the model, or pass `--dim {n}=...`"
                                        )),
                                    );
                                    dims.push((n.clone(), 1));
                                    1
                                }
                            };
                            if !used_dims.iter().any(|(m, _)| m == n) {
                                used_dims.push((n.clone(), v));
                            }
                            Value::Int(v)
                        }
                        _ => {
                            let mark = ctx.locals.len();
                            for (n, v) in &dims {
                                ctx.bind(n, Value::Int(*v));
                            }
                            let v = el.eval(e, &mut ctx);
                            ctx.locals.truncate(mark);
                            v
                        }
                    };
                    match v {
                        Value::Int(x) if x >= 0 => shape.push(x as usize),
                        Value::Poison => {}
                        other => {
                            el.err_at(
                                "E0209",
                                e.span,
                                format!("a dimension must be a non-negative int, found {other}"),
                                "not a size",
                                None,
                            );
                        }
                    }
                }
            }
        }
        if !el.check_numel(&shape, *tspan) {
            continue;
        }
        let node = el.graph.add_input(&p.name.name, TensorType::new(dt, shape), Some(p.span));
        inputs.push(ArgVal { name: Some(p.name.clone()), value: Value::Tensor(node), span: p.span });
    }
    if el.diags.iter().any(Diagnostic::is_error) {
        return Err(el.diags);
    }
    let result = el.call_method(root, &opts.method, inputs, decl.name.span);
    match &result {
        Value::Tensor(n) => el.graph.add_output("out", *n),
        Value::Tuple(xs) => {
            for (i, x) in xs.iter().enumerate() {
                match x {
                    Value::Tensor(n) => el.graph.add_output(&format!("out{i}"), *n),
                    Value::Poison => {}
                    other => {
                        el.err_at(
                            "E0312",
                            decl.name.span,
                            format!("output {i} of `{}` is {}, not a tensor", opts.method, other.kind()),
                            "here",
                            None,
                        );
                    }
                }
            }
        }
        Value::Poison => {}
        other => {
            el.err_at(
                "E0312",
                decl.name.span,
                format!("`{}` returns {}, not tensors", opts.method, other.kind()),
                "here",
                None,
            );
        }
    }
    if el.diags.iter().any(Diagnostic::is_error) {
        return Err(el.diags);
    }
    let instances = super::summary::instance_infos(&mut el, root);
    warnings.append(&mut el.diags);
    Ok(Elaborated { graph: el.graph, instances, dims: used_dims, warnings })
}
