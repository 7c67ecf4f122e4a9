//! A compact, indented, stable text form of the AST for snapshot tests: one line per item,
//! member, parameter and statement, with its `line:col`; expressions print inline in a fully
//! parenthesised form, so operator precedence is visible.

use super::ast::*;
use crate::source::{SourceFile, Span};
use std::fmt::Write;

/// Dumps `file`, whose spans point into `text` (used for `line:col`).
pub fn dump(file: &File, text: &str) -> String {
    let mut d = Dumper { source: SourceFile::new("", None, text), out: String::new() };
    for item in &file.items {
        d.item(item);
    }
    d.out
}

struct Dumper {
    source: SourceFile,
    out: String,
}

impl Dumper {
    fn line(&mut self, indent: usize, text: &str, span: Option<Span>) {
        for _ in 0..indent {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        if let Some(span) = span {
            let (line, col) = self.source.line_col(span.start);
            let _ = write!(self.out, "  @{line}:{col}");
        }
        self.out.push('\n');
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Use(u) => {
                let target = match &u.target {
                    UseTarget::Stdlib(name) => name.name.clone(),
                    UseTarget::Path { path, .. } => format!("{path:?}"),
                };
                self.line(0, &format!("Use {target}"), Some(u.span));
            }
            Item::Module(m) => {
                let kind = match m.kind {
                    ModuleKind::Module => "Module",
                    ModuleKind::Model => "Model",
                };
                self.line(0, &format!("{kind} {}", m.name.name), Some(m.span));
                self.doc(1, m.doc.as_deref());
                self.params(1, &m.params);
                for member in &m.members {
                    self.member(1, member);
                }
            }
            Item::Fn(f) => self.fn_decl(0, f),
            Item::Data(b) | Item::Train(b) => {
                let kind = if matches!(item, Item::Data(_)) { "Data" } else { "Train" };
                self.line(0, &format!("{kind} {}", b.name.name), Some(b.span));
                for e in &b.entries {
                    self.entry(1, e);
                }
            }
            Item::Sweep(s) => {
                self.line(0, &format!("Sweep {} of {}", s.name.name, s.target.name), Some(s.span));
                for e in &s.entries {
                    self.entry(1, e);
                }
            }
        }
    }

    fn doc(&mut self, indent: usize, doc: Option<&str>) {
        if let Some(doc) = doc {
            self.line(indent, &format!("doc {doc:?}"), None);
        }
    }

    fn params(&mut self, indent: usize, params: &[ParamDecl]) {
        for p in params {
            let mut text = format!("param {}", p.name.name);
            if let Some(ty) = &p.ty {
                let _ = write!(text, ": {}", ty_str(ty));
            }
            if let Some(default) = &p.default {
                let _ = write!(text, " = {}", expr_str(default));
            }
            self.line(indent, &text, Some(p.span));
        }
    }

    fn entry(&mut self, indent: usize, e: &Entry) {
        let label = e.label.as_ref().map_or(String::new(), |l| format!(" {}", l.name));
        self.line(indent, &format!("Entry {}{label}: {}", e.key_path(), expr_str(&e.value)), Some(e.span));
    }

    fn fn_decl(&mut self, indent: usize, f: &FnDecl) {
        self.line(indent, &format!("Fn {}", f.name.name), Some(f.span));
        self.doc(indent + 1, f.doc.as_deref());
        self.params(indent + 1, &f.params);
        if let Some(ret) = &f.ret {
            self.line(indent + 1, &format!("returns {}", ty_str(ret)), None);
        }
        self.block(indent + 1, &f.body);
    }

    fn member(&mut self, indent: usize, m: &Member) {
        match m {
            Member::Field { name, value, span } => {
                self.line(indent, &format!("Field {} = {}", name.name, expr_str(value)), Some(*span))
            }
            Member::Let { name, value, span } => {
                self.line(indent, &format!("Let {} = {}", name.name, expr_str(value)), Some(*span))
            }
            Member::Param { name, ty, init, trainable, span } => {
                let kind = if *trainable { "Param" } else { "Buffer" };
                let init = init.as_ref().map_or(String::new(), |e| format!(" = {}", expr_str(e)));
                self.line(indent, &format!("{kind} {}: {}{init}", name.name, ty_str(ty)), Some(*span))
            }
            Member::Dim { name, value, span } => {
                self.line(indent, &format!("Dim {} = {}", name.name, expr_str(value)), Some(*span))
            }
            Member::Fn(f) => self.fn_decl(indent, f),
            Member::If { cond, then, otherwise, span } => {
                self.line(indent, &format!("If {}", expr_str(cond)), Some(*span));
                self.line(indent + 1, "then", None);
                for m in then {
                    self.member(indent + 2, m);
                }
                if !otherwise.is_empty() {
                    self.line(indent + 1, "else", None);
                    for m in otherwise {
                        self.member(indent + 2, m);
                    }
                }
            }
            Member::Assert(a) => self.line(indent, &assert_str(a), Some(a.span)),
        }
    }

    fn block(&mut self, indent: usize, b: &Block) {
        for s in &b.stmts {
            match s {
                Stmt::Let { pat, ty, value, span } => {
                    let ty = ty.as_ref().map_or(String::new(), |t| format!(": {}", ty_str(t)));
                    self.line(indent, &format!("Let {}{ty} = {}", pat_str(pat), expr_str(value)), Some(*span))
                }
                Stmt::Assign { name, value, span } => {
                    self.line(indent, &format!("Assign {} = {}", name.name, expr_str(value)), Some(*span))
                }
                Stmt::Assert(a) => self.line(indent, &assert_str(a), Some(a.span)),
                Stmt::Expr(e) => self.expr_tree(indent, "Expr", e),
            }
        }
        if let Some(tail) = &b.tail {
            self.expr_tree(indent, "Tail", tail);
        }
    }

    /// Statement-level `for`, `if` and blocks print as trees; other expressions inline.
    fn expr_tree(&mut self, indent: usize, what: &str, e: &Expr) {
        match &e.kind {
            ExprKind::For { pat, iter, body } => {
                self.line(
                    indent,
                    &format!("{what} for {} in {}", pat_str(pat), expr_str(iter)),
                    Some(e.span),
                );
                self.block(indent + 1, body);
            }
            ExprKind::If { .. } => {
                self.line(indent, what, Some(e.span));
                self.if_tree(indent + 1, e);
            }
            ExprKind::Block(b) => {
                self.line(indent, &format!("{what} block"), Some(e.span));
                self.block(indent + 1, b);
            }
            _ => self.line(indent, &format!("{what} {}", expr_str(e)), Some(e.span)),
        }
    }

    fn if_tree(&mut self, indent: usize, e: &Expr) {
        match &e.kind {
            ExprKind::If { cond, then, otherwise } => {
                self.line(indent, &format!("if {}", expr_str(cond)), None);
                self.block(indent + 1, then);
                if let Some(other) = otherwise {
                    self.line(indent, "else", None);
                    self.if_tree(indent + 1, other);
                }
            }
            ExprKind::Block(b) => self.block(indent, b),
            _ => self.line(indent, &expr_str(e), None),
        }
    }
}

fn assert_str(a: &AssertStmt) -> String {
    let mut text = format!("Assert {}", expr_str(&a.cond));
    if let Some(m) = &a.message {
        let _ = write!(text, ", message: {}", expr_str(m));
    }
    if let Some(h) = &a.help {
        let _ = write!(text, ", help: {}", expr_str(h));
    }
    text
}

fn ty_str(t: &TypeExpr) -> String {
    match t {
        TypeExpr::Int(_) => "int".into(),
        TypeExpr::Float(_) => "float".into(),
        TypeExpr::Bool(_) => "bool".into(),
        TypeExpr::Str(_) => "string".into(),
        TypeExpr::Module(_) => "module".into(),
        TypeExpr::List(_) => "list".into(),
        TypeExpr::Tensor { dtype, dims, .. } => {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    DimExpr::Ellipsis(_) => "...".to_string(),
                    DimExpr::Wildcard(_) => "_".to_string(),
                    DimExpr::Expr(e) => expr_str(e),
                })
                .collect();
            format!("{}[{}]", dtype.as_ref().map_or("", |d| d.name.as_str()), dims.join(", "))
        }
        TypeExpr::Tuple(ts, _) => tuple_str(&ts.iter().map(ty_str).collect::<Vec<_>>()),
    }
}

fn pat_str(p: &Pattern) -> String {
    match p {
        Pattern::Name(i) => i.name.clone(),
        Pattern::Wildcard(_) => "_".into(),
        Pattern::Tuple(ps, _) => tuple_str(&ps.iter().map(pat_str).collect::<Vec<_>>()),
    }
}

fn tuple_str(parts: &[String]) -> String {
    if parts.len() == 1 { format!("({},)", parts[0]) } else { format!("({})", parts.join(", ")) }
}

fn block_str(b: &Block) -> String {
    let mut parts: Vec<String> = b
        .stmts
        .iter()
        .map(|s| match s {
            Stmt::Let { pat, ty, value, .. } => {
                let ty = ty.as_ref().map_or(String::new(), |t| format!(": {}", ty_str(t)));
                format!("let {}{ty} = {};", pat_str(pat), expr_str(value))
            }
            Stmt::Assign { name, value, .. } => format!("{} = {};", name.name, expr_str(value)),
            Stmt::Assert(a) => format!("{};", assert_str(a)),
            Stmt::Expr(e) => format!("{};", expr_str(e)),
        })
        .collect();
    if let Some(t) = &b.tail {
        parts.push(expr_str(t));
    }
    if parts.is_empty() { "{ }".into() } else { format!("{{ {} }}", parts.join(" ")) }
}

/// One-line, fully parenthesised form of an expression.
fn expr_str(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Bool(v) => v.to_string(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Unary { op, expr } => {
            let op = match op {
                UnOp::Neg => "-",
                UnOp::Not => "not ",
            };
            format!("({op}{})", expr_str(expr))
        }
        ExprKind::Binary { op, lhs, rhs } => format!("({} {} {})", expr_str(lhs), op.symbol(), expr_str(rhs)),
        ExprKind::Call { callee, args } => {
            let args: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{}: {}", n.name, expr_str(&a.value)),
                    None => expr_str(&a.value),
                })
                .collect();
            format!("{}({})", expr_str(callee), args.join(", "))
        }
        ExprKind::Field { base, name } => format!("{}.{}", expr_str(base), name.name),
        ExprKind::Index { base, items } => {
            let items: Vec<String> = items
                .iter()
                .map(|i| match i {
                    IndexItem::Expr(e) => expr_str(e),
                    IndexItem::Slice { start, end, step, .. } => {
                        let part = |p: &Option<Expr>| p.as_ref().map_or(String::new(), expr_str);
                        match step {
                            Some(_) => format!("{}:{}:{}", part(start), part(end), part(step)),
                            None => format!("{}:{}", part(start), part(end)),
                        }
                    }
                    IndexItem::Ellipsis(_) => "...".into(),
                    IndexItem::NewAxis(_) => "None".into(),
                })
                .collect();
            format!("{}[{}]", expr_str(base), items.join(", "))
        }
        ExprKind::List(es) => format!("[{}]", es.iter().map(expr_str).collect::<Vec<_>>().join(", ")),
        ExprKind::Repeat { elem, count } => format!("[{}; {}]", expr_str(elem), expr_str(count)),
        ExprKind::Comprehension { elem, pat, iter } => {
            format!("[{} for {} in {}]", expr_str(elem), pat_str(pat), expr_str(iter))
        }
        ExprKind::Tuple(es) => tuple_str(&es.iter().map(expr_str).collect::<Vec<_>>()),
        ExprKind::Range { start, end } => format!("({}..{})", expr_str(start), expr_str(end)),
        ExprKind::If { cond, then, otherwise } => {
            let mut text = format!("if {} {}", expr_str(cond), block_str(then));
            if let Some(o) = otherwise {
                let _ = write!(text, " else {}", expr_str(o));
            }
            text
        }
        ExprKind::For { pat, iter, body } => {
            format!("for {} in {} {}", pat_str(pat), expr_str(iter), block_str(body))
        }
        ExprKind::Block(b) => block_str(b),
        ExprKind::Error => "<error>".into(),
    }
}
