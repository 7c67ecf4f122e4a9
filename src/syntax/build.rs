//! Builds the AST from pest's parse tree. The grammar guarantees the shape of each pair, so
//! the accessors below only fail on a grammar/builder mismatch, which is a compiler bug; they
//! then produce an `ExprKind::Error` node rather than panic. Literal values (integer range,
//! string escapes) and reserved words used as names are checked here.

use super::Rule;
use super::ast::*;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use pest::iterators::{Pair, Pairs};

/// Words that cannot name anything (see docs/language.md).
pub const RESERVED: [&str; 18] = [
    "use", "module", "fn", "param", "buffer", "dim", "let", "if", "else", "for", "in", "true", "false",
    "and", "or", "not", "assert", "None",
];

/// Expressions nested deeper than this (counting operator chains such as `a + b + ...`, which
/// build left-nested trees) are rejected, so that later recursive passes cannot overflow.
const MAX_EXPR_DEPTH: usize = 1000;

pub struct Builder<'t> {
    file: FileId,
    /// The whole file (for doc comments above an item).
    text: &'t str,
    /// Byte offset of the parsed chunk in `text`.
    base: usize,
    diags: Vec<Diagnostic>,
    /// Current expression nesting, see [`MAX_EXPR_DEPTH`].
    depth: usize,
    depth_reported: bool,
}

impl<'t> Builder<'t> {
    pub fn new(file: FileId, text: &'t str, base: usize) -> Builder<'t> {
        Builder { file, text, base, diags: Vec::new(), depth: 0, depth_reported: false }
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.diags
    }

    /// The span of a pair without trailing whitespace and comments: pest includes them in a
    /// rule that ends with an optional or repeated part that did not match (`x = f(a)` followed
    /// by a newline would otherwise span the newline and the next line's indentation).
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        let text = pair.as_str();
        // Trailing trivia ends in whitespace, or in `/` for a block comment; a line comment
        // ends in a newline (a pair never reaches the end of input inside trailing trivia,
        // since every item ends with `}`, a name or a string).
        let len = if text.ends_with(|c: char| c.is_ascii_whitespace() || c == '/') {
            end_of_last_token(text)
        } else {
            text.len()
        };
        Span::new(self.file, self.base + s.start(), self.base + s.start() + len)
    }

    // ------------------------------------------------------------ items

    pub fn file(&mut self, pairs: Pairs<'_, Rule>) -> Vec<Item> {
        let mut items = Vec::new();
        for file in pairs {
            for pair in file.into_inner() {
                if let Some(item) = self.item(pair) {
                    items.push(item);
                }
            }
        }
        items
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Option<Item> {
        let span = self.span(&pair);
        Some(match pair.as_rule() {
            Rule::use_item => {
                let target = pair.into_inner().find(|p| p.as_rule() != Rule::kw_use)?;
                let target = if target.as_rule() == Rule::string {
                    let span = self.span(&target);
                    UseTarget::Path { path: self.string(target), span }
                } else {
                    UseTarget::Stdlib(self.name(target))
                };
                Item::Use(UseDecl { target, span })
            }
            Rule::module_item => Item::Module(self.module(pair)),
            Rule::fn_decl => Item::Fn(self.fn_decl(pair)),
            Rule::data_item | Rule::train_item => {
                let is_data = pair.as_rule() == Rule::data_item;
                let mut inner = pair.into_inner().skip(1);
                let name = self.name(inner.next()?);
                let entries = inner.map(|e| self.entry(e)).collect();
                let block = ConfigBlock { name, entries, span };
                if is_data { Item::Data(block) } else { Item::Train(block) }
            }
            Rule::sweep_item => {
                let mut inner =
                    pair.into_inner().filter(|p| !matches!(p.as_rule(), Rule::kw_sweep | Rule::kw_of));
                let name = self.name(inner.next()?);
                let target = self.name(inner.next()?);
                let entries = inner.map(|e| self.entry(e)).collect();
                Item::Sweep(SweepDecl { name, target, entries, span })
            }
            _ => return None,
        })
    }

    fn module(&mut self, pair: Pair<'_, Rule>) -> ModuleDecl {
        let span = self.span(&pair);
        let doc = self.doc_before(span.start as usize);
        let mut kind = ModuleKind::Module;
        let mut name = None;
        let mut params = Vec::new();
        let mut members = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::module_kw if p.as_str() == "model" => kind = ModuleKind::Model,
                Rule::module_kw => kind = ModuleKind::Module,
                Rule::word => name = Some(self.name(p)),
                Rule::param_list => params = self.params(p),
                _ => members.extend(self.member(p)),
            }
        }
        let name = name.unwrap_or_else(|| self.missing_ident(span));
        ModuleDecl { kind, name, params, members, doc, span }
    }

    fn params(&mut self, list: Pair<'_, Rule>) -> Vec<ParamDecl> {
        list.into_inner().map(|p| self.param_decl(p)).collect()
    }

    fn param_decl(&mut self, pair: Pair<'_, Rule>) -> ParamDecl {
        let span = self.span(&pair);
        let mut name = None;
        let mut ty = None;
        let mut default = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::word => name = Some(self.name(p)),
                Rule::type_expr => ty = Some(self.type_expr(p)),
                _ => default = Some(self.expr(p)),
            }
        }
        let name = name.unwrap_or_else(|| self.missing_ident(span));
        ParamDecl { name, ty, default, span }
    }

    fn fn_decl(&mut self, pair: Pair<'_, Rule>) -> FnDecl {
        let span = self.span(&pair);
        let doc = self.doc_before(span.start as usize);
        let mut name = None;
        let mut params = Vec::new();
        let mut ret = None;
        let mut body = Block { stmts: Vec::new(), tail: None, span };
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::word => name = Some(self.name(p)),
                Rule::param_list => params = self.params(p),
                Rule::ret_type => ret = p.into_inner().next().map(|t| self.type_expr(t)),
                Rule::block => body = self.block(p),
                _ => {}
            }
        }
        let name = name.unwrap_or_else(|| self.missing_ident(span));
        FnDecl { name, params, ret, body, doc, span }
    }

    fn entry(&mut self, pair: Pair<'_, Rule>) -> Entry {
        let span = self.span(&pair);
        let mut key = Vec::new();
        let mut label = None;
        let mut value = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                // Keys may be reserved words (`in: ...`): they name settings, not bindings.
                Rule::key_path => key = p.into_inner().map(|w| self.ident(&w)).collect(),
                Rule::entry_label => label = p.into_inner().next().map(|w| self.name(w)),
                _ => value = Some(self.expr(p)),
            }
        }
        let value = value.unwrap_or(Expr { kind: ExprKind::Error, span });
        Entry { key, label, value, span }
    }

    /// The `///` lines directly above the line where `offset` starts an item.
    fn doc_before(&self, offset: usize) -> Option<String> {
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        if !self.text[line_start..offset].trim().is_empty() {
            return None;
        }
        let mut lines = Vec::new();
        let mut end = line_start;
        while end > 0 {
            // `end - 1` is the '\n' ending the previous line.
            let start = self.text[..end - 1].rfind('\n').map_or(0, |i| i + 1);
            let line = self.text[start..end - 1].trim();
            match line.strip_prefix("///") {
                Some(doc) if !doc.starts_with('/') => {
                    lines.push(doc.strip_prefix(' ').unwrap_or(doc).trim_end().to_string())
                }
                _ => break,
            }
            end = start;
        }
        if lines.is_empty() {
            return None;
        }
        lines.reverse();
        Some(lines.join("\n"))
    }

    // ------------------------------------------------------------ members

    fn member(&mut self, pair: Pair<'_, Rule>) -> Option<Member> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        Some(match rule {
            Rule::let_member | Rule::dim_member | Rule::field_member => {
                let mut inner = pair
                    .into_inner()
                    .filter(|p| !matches!(p.as_rule(), Rule::kw_let | Rule::kw_dim | Rule::assign_eq));
                let name = self.name(inner.next()?);
                let value = self.expr(inner.next()?);
                match rule {
                    Rule::let_member => Member::Let { name, value, span },
                    Rule::dim_member => Member::Dim { name, value, span },
                    _ => Member::Field { name, value, span },
                }
            }
            Rule::param_member | Rule::buffer_member => {
                let mut inner = pair.into_inner().skip(1);
                let name = self.name(inner.next()?);
                let ty = self.type_expr(inner.next()?);
                if !matches!(ty, TypeExpr::Tensor { .. }) {
                    let keyword = if rule == Rule::param_member { "param" } else { "buffer" };
                    self.diags.push(
                        Diagnostic::error("E0008", format!("`{keyword}` needs a tensor type"))
                            .at(ty.span(), "not a tensor type")
                            .with_help(format!(
                                "give the shape, e.g. `{keyword} {}: [d, d]`; for a compile-time value write `{} = ...`",
                                name.name, name.name
                            )),
                    );
                }
                let init = inner.next().map(|p| self.expr(p));
                Member::Param { name, ty, init, trainable: rule == Rule::param_member, span }
            }
            Rule::fn_decl => Member::Fn(self.fn_decl(pair)),
            Rule::if_member => self.if_member(pair),
            Rule::assert_stmt => Member::Assert(self.assert_stmt(pair)),
            _ => return None,
        })
    }

    fn if_member(&mut self, pair: Pair<'_, Rule>) -> Member {
        let span = self.span(&pair);
        let mut cond = None;
        let mut then = Vec::new();
        let mut otherwise = Vec::new();
        let mut seen_then = false;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::expr => cond = Some(self.expr(p)),
                Rule::member_block if !seen_then => {
                    seen_then = true;
                    then = p.into_inner().filter_map(|m| self.member(m)).collect();
                }
                Rule::member_block => otherwise = p.into_inner().filter_map(|m| self.member(m)).collect(),
                Rule::if_member => otherwise = vec![self.if_member(p)],
                _ => {}
            }
        }
        let cond = cond.unwrap_or(Expr { kind: ExprKind::Error, span });
        Member::If { cond, then, otherwise, span }
    }

    fn assert_stmt(&mut self, pair: Pair<'_, Rule>) -> AssertStmt {
        let span = self.span(&pair);
        let mut cond = None;
        let mut message = None;
        let mut help = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::expr => cond = Some(self.expr(p)),
                Rule::assert_msg => message = p.into_inner().next().map(|e| self.expr(e)),
                Rule::assert_help => help = p.into_inner().nth(1).map(|e| self.expr(e)),
                _ => {}
            }
        }
        let cond = cond.unwrap_or(Expr { kind: ExprKind::Error, span });
        AssertStmt { cond, message, help, span }
    }

    // ------------------------------------------------------------ types

    fn type_expr(&mut self, pair: Pair<'_, Rule>) -> TypeExpr {
        let span = self.span(&pair);
        let Some(inner) = pair.into_inner().next() else { return TypeExpr::Tuple(Vec::new(), span) };
        match inner.as_rule() {
            Rule::tuple_type => {
                let mut types = Vec::new();
                let mut commas = 0;
                for p in inner.into_inner() {
                    if p.as_rule() == Rule::comma {
                        commas += 1;
                    } else {
                        types.push(self.type_expr(p));
                    }
                }
                // As in expressions, `(T)` is just `T`; `(T,)` is a one-element tuple.
                if types.len() == 1 && commas == 0 {
                    return types.remove(0);
                }
                TypeExpr::Tuple(types, span)
            }
            Rule::tensor_type => {
                let mut dtype = None;
                let mut dims = Vec::new();
                for p in inner.into_inner() {
                    match p.as_rule() {
                        Rule::dtype => dtype = Some(self.ident(&p)),
                        _ => dims = p.into_inner().map(|d| self.dim(d)).collect(),
                    }
                }
                if let Some(DimExpr::Ellipsis(at)) =
                    dims.iter().skip(1).find(|d| matches!(d, DimExpr::Ellipsis(_)))
                {
                    self.diags.push(
                        Diagnostic::error("E0009", "`...` must be the first dimension")
                            .at(*at, "`...` stands for the leading dimensions")
                            .with_help("move `...` to the front, e.g. `[..., T, d]`"),
                    );
                }
                TypeExpr::Tensor { dtype, dims, span }
            }
            _ => match inner.as_str() {
                "int" => TypeExpr::Int(span),
                "float" => TypeExpr::Float(span),
                "bool" => TypeExpr::Bool(span),
                "string" => TypeExpr::Str(span),
                "module" => TypeExpr::Module(span),
                _ => TypeExpr::List(span),
            },
        }
    }

    fn dim(&mut self, pair: Pair<'_, Rule>) -> DimExpr {
        let span = self.span(&pair);
        match pair.into_inner().next() {
            Some(p) if p.as_rule() == Rule::ellipsis => DimExpr::Ellipsis(span),
            Some(p) if p.as_rule() == Rule::wildcard => DimExpr::Wildcard(span),
            Some(p) => DimExpr::Expr(self.expr(p)),
            None => DimExpr::Expr(Expr { kind: ExprKind::Error, span }),
        }
    }

    // ------------------------------------------------------------ blocks and statements

    fn block(&mut self, pair: Pair<'_, Rule>) -> Block {
        let span = self.span(&pair);
        let mut stmts = Vec::new();
        let mut tail = None;
        let mut inner = pair.into_inner().peekable();
        while let Some(p) = inner.next() {
            let is_last = inner.peek().is_none();
            match p.as_rule() {
                Rule::let_stmt => stmts.push(self.let_stmt(p)),
                Rule::assign_stmt => stmts.push(self.assign_stmt(p)),
                Rule::assert_stmt => stmts.push(Stmt::Assert(self.assert_stmt(p))),
                Rule::expr_stmt => {
                    let mut parts = p.into_inner();
                    let Some(e) = parts.next() else { continue };
                    let has_semi = parts.next().is_some();
                    let expr = self.expr(e);
                    if is_last && !has_semi {
                        tail = Some(Box::new(expr));
                    } else {
                        stmts.push(Stmt::Expr(expr));
                    }
                }
                _ => {}
            }
        }
        Block { stmts, tail, span }
    }

    fn let_stmt(&mut self, pair: Pair<'_, Rule>) -> Stmt {
        let span = self.span(&pair);
        let mut pat = None;
        let mut ty = None;
        let mut value = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::kw_let => {}
                Rule::type_expr => ty = Some(self.type_expr(p)),
                Rule::expr => value = Some(self.expr(p)),
                _ => pat = Some(self.pattern(p)),
            }
        }
        let pat = pat.unwrap_or(Pattern::Wildcard(span));
        let value = value.unwrap_or(Expr { kind: ExprKind::Error, span });
        Stmt::Let { pat, ty, value, span }
    }

    fn assign_stmt(&mut self, pair: Pair<'_, Rule>) -> Stmt {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let (Some(name), Some(op), Some(value)) = (inner.next(), inner.next(), inner.next()) else {
            return Stmt::Expr(Expr { kind: ExprKind::Error, span });
        };
        let name = self.name(name);
        let value = self.expr(value);
        let op = match op.as_str() {
            "+=" => Some(BinOp::Add),
            "-=" => Some(BinOp::Sub),
            "*=" => Some(BinOp::Mul),
            "/=" => Some(BinOp::Div),
            _ => None,
        };
        let value = match op {
            // `x += e` is `x = x + e`; the `x` operand points at the target name, and the sum
            // spans `x += e`.
            Some(op) => {
                let lhs = Expr { kind: ExprKind::Name(name.name.clone()), span: name.span };
                let span = name.span.to(value.span);
                Expr { kind: ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(value) }, span }
            }
            None => value,
        };
        Stmt::Assign { name, value, span }
    }

    fn pattern(&mut self, pair: Pair<'_, Rule>) -> Pattern {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::wildcard => Pattern::Wildcard(span),
            Rule::tuple_pattern => Pattern::Tuple(pair.into_inner().map(|p| self.pattern(p)).collect(), span),
            _ => Pattern::Name(self.name(pair)),
        }
    }

    // ------------------------------------------------------------ expressions

    /// Builds any expression-level pair. Each `expr` pair (a bracketed or nested expression)
    /// and each operator of a chain adds one level to [`Builder::depth`].
    pub fn expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let nests = pair.as_rule() == Rule::expr;
        if !self.enter(usize::from(nests)) {
            return self.too_deep(&pair);
        }
        let e = self.expr_inner(pair);
        self.depth -= usize::from(nests);
        e
    }

    /// Reserves `levels` of nesting; the caller gives them back with `self.depth -= levels`.
    /// Returns false (reserving nothing) when the limit would be exceeded.
    fn enter(&mut self, levels: usize) -> bool {
        if self.depth + levels > MAX_EXPR_DEPTH {
            return false;
        }
        self.depth += levels;
        true
    }

    /// Reports E0006 (once per chunk) and stands in an error node for `pair`.
    fn too_deep(&mut self, pair: &Pair<'_, Rule>) -> Expr {
        let span = self.span(pair);
        if !self.depth_reported {
            self.depth_reported = true;
            let start = Span { end: (span.start + 1).min(span.end), ..span };
            self.diags.push(
                Diagnostic::error(
                    "E0006",
                    format!("expression nested more than {MAX_EXPR_DEPTH} levels deep"),
                )
                .at(start, "this expression is too deep")
                .with_help("split the expression using `let` bindings"),
            );
        }
        Expr { kind: ExprKind::Error, span }
    }

    fn expr_inner(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::expr => self.binary_chain(pair, Some(("range", "`(a..b)..c`"))),
            Rule::cmp_expr => self.binary_chain(pair, Some(("comparison", "`a < b and b < c`"))),
            Rule::or_expr | Rule::and_expr | Rule::sum_expr | Rule::prod_expr => {
                self.binary_chain(pair, None)
            }
            Rule::unary_expr => self.unary(pair),
            Rule::power_expr => self.power(pair),
            Rule::postfix_expr => self.postfix(pair),
            Rule::primary => match pair.into_inner().next() {
                Some(p) => self.expr(p),
                None => Expr { kind: ExprKind::Error, span },
            },
            _ => self.atom(pair),
        }
    }

    /// A left-associative chain `a op b op c`. For a non-associative operator
    /// (`non_assoc = Some((what, instead))`) a second operator is reported; the chain is still
    /// built left to right.
    fn binary_chain(&mut self, pair: Pair<'_, Rule>, non_assoc: Option<(&str, &str)>) -> Expr {
        let span = self.span(&pair);
        let parts: Vec<Pair<'_, Rule>> = pair.clone().into_inner().collect();
        let ops = parts.len() / 2;
        if !self.enter(ops) {
            return self.too_deep(&pair);
        }
        let mut parts = parts.into_iter();
        let mut acc = match parts.next() {
            Some(first) => self.expr(first),
            None => Expr { kind: ExprKind::Error, span },
        };
        let mut count = 0;
        while let (Some(op), Some(rhs)) = (parts.next(), parts.next()) {
            count += 1;
            if count == 2
                && let Some((what, instead)) = non_assoc
            {
                let op_span = self.span(&op);
                self.diags.push(
                    Diagnostic::error("E0001", format!("{what} operators cannot be chained"))
                        .at(op_span, format!("second {what} operator"))
                        .with_help(format!("use parentheses or split it, e.g. {instead}")),
                );
            }
            let rhs = self.expr(rhs);
            acc = binary(op.as_str(), acc, rhs);
        }
        self.depth -= ops;
        acc
    }

    /// `prefix_op* operand`: the operators apply right to left.
    fn unary(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let parts: Vec<Pair<'_, Rule>> = pair.clone().into_inner().collect();
        let levels = parts.len().saturating_sub(1);
        if !self.enter(levels) {
            return self.too_deep(&pair);
        }
        let mut ops = Vec::new();
        let mut operand = Expr { kind: ExprKind::Error, span };
        for p in parts {
            if p.as_rule() == Rule::prefix_op {
                ops.push((self.span(&p), prefix(&p)));
            } else {
                operand = self.expr(p);
            }
        }
        self.depth -= levels;
        apply_prefixes(ops, operand)
    }

    /// `a ** b ** c` is `a ** (b ** c)`; each right operand is `prefix_op* postfix`, and its
    /// prefix operators cover the rest of the chain (`a ** -b ** c` is `a ** -(b ** c)`).
    fn power(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let parts: Vec<Pair<'_, Rule>> = pair.clone().into_inner().collect();
        let levels = parts
            .iter()
            .map(|p| if p.as_rule() == Rule::power_rhs { p.clone().into_inner().count() } else { 0 })
            .sum();
        if !self.enter(levels) {
            return self.too_deep(&pair);
        }
        let mut operands: Vec<(Vec<(Span, UnOp)>, Expr)> = Vec::new();
        for p in parts {
            match p.as_rule() {
                Rule::pow_op => {}
                Rule::power_rhs => {
                    let mut ops = Vec::new();
                    let mut operand = Expr { kind: ExprKind::Error, span };
                    for q in p.into_inner() {
                        if q.as_rule() == Rule::prefix_op {
                            ops.push((self.span(&q), prefix(&q)));
                        } else {
                            operand = self.expr(q);
                        }
                    }
                    operands.push((ops, operand));
                }
                _ => operands.push((Vec::new(), self.expr(p))),
            }
        }
        self.depth -= levels;
        let Some((last_ops, last)) = operands.pop() else { return Expr { kind: ExprKind::Error, span } };
        let mut acc = apply_prefixes(last_ops, last);
        while let Some((ops, lhs)) = operands.pop() {
            let span = lhs.span.to(acc.span);
            acc = Expr {
                kind: ExprKind::Binary { op: BinOp::Pow, lhs: Box::new(lhs), rhs: Box::new(acc) },
                span,
            };
            acc = apply_prefixes(ops, acc);
        }
        acc
    }

    /// `primary (call | index | .field)*`, left to right.
    fn postfix(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let parts: Vec<Pair<'_, Rule>> = pair.clone().into_inner().collect();
        let levels = parts.len().saturating_sub(1);
        if !self.enter(levels) {
            return self.too_deep(&pair);
        }
        let mut parts = parts.into_iter();
        let mut acc = match parts.next() {
            Some(first) => self.expr(first),
            None => Expr { kind: ExprKind::Error, span },
        };
        for suffix in parts {
            let span = acc.span.to(self.span(&suffix));
            let kind = match suffix.as_rule() {
                Rule::call_args => {
                    let args = suffix.into_inner().map(|a| self.arg(a)).collect();
                    ExprKind::Call { callee: Box::new(acc), args }
                }
                Rule::index_suffix => {
                    let items = suffix.into_inner().map(|i| self.index_item(i)).collect();
                    ExprKind::Index { base: Box::new(acc), items }
                }
                _ => match suffix.into_inner().next() {
                    Some(name) => ExprKind::Field { base: Box::new(acc), name: self.ident(&name) },
                    None => ExprKind::Error,
                },
            };
            acc = Expr { kind, span };
        }
        self.depth -= levels;
        acc
    }

    fn arg(&mut self, pair: Pair<'_, Rule>) -> Arg {
        let span = self.span(&pair);
        match pair.into_inner().next() {
            Some(p) if p.as_rule() == Rule::named_arg => {
                let mut inner = p.into_inner();
                let name = inner.next().map(|n| self.ident(&n));
                let value = inner.next().map_or(Expr { kind: ExprKind::Error, span }, |v| self.expr(v));
                Arg { name, value }
            }
            Some(p) => Arg { name: None, value: self.expr(p) },
            None => Arg { name: None, value: Expr { kind: ExprKind::Error, span } },
        }
    }

    fn index_item(&mut self, pair: Pair<'_, Rule>) -> IndexItem {
        let span = self.span(&pair);
        let Some(inner) = pair.into_inner().next() else {
            return IndexItem::Expr(Expr { kind: ExprKind::Error, span });
        };
        match inner.as_rule() {
            Rule::ellipsis => IndexItem::Ellipsis(span),
            Rule::none_lit => IndexItem::NewAxis(span),
            _ => {
                let mut start = None;
                let mut tail = None;
                for p in inner.into_inner() {
                    match p.as_rule() {
                        Rule::slice_tail => tail = Some(p),
                        _ => start = Some(self.expr(p)),
                    }
                }
                let Some(tail) = tail else {
                    return IndexItem::Expr(start.unwrap_or(Expr { kind: ExprKind::Error, span }));
                };
                let mut end = None;
                let mut step = None;
                for p in tail.into_inner() {
                    let is_end = p.as_rule() == Rule::slice_end;
                    let value = p.into_inner().next().map(|e| self.expr(e));
                    if is_end {
                        end = value;
                    } else {
                        step = value;
                    }
                }
                IndexItem::Slice { start, end, step, span }
            }
        }
    }

    /// Literals, names and bracketed forms (the children of `primary`).
    fn atom(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::int => self.int(&pair),
            Rule::float => self.float(&pair),
            Rule::string => ExprKind::Str(self.string(pair)),
            Rule::bool_lit => ExprKind::Bool(pair.as_str() == "true"),
            // `None` as a value (an absent optional argument); as an index it is `NewAxis`.
            Rule::none_lit => ExprKind::Name("None".to_string()),
            Rule::ident => ExprKind::Name(pair.as_str().to_string()),
            Rule::block => ExprKind::Block(self.block(pair)),
            Rule::if_expr => self.if_expr(pair),
            Rule::for_expr => {
                let mut pat = None;
                let mut iter = None;
                let mut body = None;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::kw_for | Rule::kw_in => {}
                        Rule::expr => iter = Some(self.expr(p)),
                        Rule::block => body = Some(self.block(p)),
                        _ => pat = Some(self.pattern(p)),
                    }
                }
                ExprKind::For {
                    pat: pat.unwrap_or(Pattern::Wildcard(span)),
                    iter: Box::new(iter.unwrap_or(Expr { kind: ExprKind::Error, span })),
                    body: body.unwrap_or(Block { stmts: Vec::new(), tail: None, span }),
                }
            }
            Rule::paren_expr => {
                let mut elems = Vec::new();
                let mut commas = 0;
                for p in pair.into_inner() {
                    if p.as_rule() == Rule::comma {
                        commas += 1;
                    } else {
                        elems.push(self.expr(p));
                    }
                }
                if elems.len() == 1 && commas == 0 {
                    // Grouping parentheses: the inner expression, spanning the parentheses.
                    let mut inner = elems.remove(0);
                    inner.span = span;
                    return inner;
                }
                ExprKind::Tuple(elems)
            }
            Rule::list_expr => self.list(pair),
            _ => ExprKind::Error,
        };
        Expr { kind, span }
    }

    fn if_expr(&mut self, pair: Pair<'_, Rule>) -> ExprKind {
        let span = self.span(&pair);
        let mut cond = None;
        let mut then = None;
        let mut otherwise = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::expr => cond = Some(self.expr(p)),
                Rule::block if then.is_none() => then = Some(self.block(p)),
                Rule::block => {
                    let span = self.span(&p);
                    otherwise = Some(Box::new(Expr { kind: ExprKind::Block(self.block(p)), span }));
                }
                Rule::if_expr => {
                    let span = self.span(&p);
                    otherwise = Some(Box::new(Expr { kind: self.if_expr(p), span }));
                }
                _ => {}
            }
        }
        ExprKind::If {
            cond: Box::new(cond.unwrap_or(Expr { kind: ExprKind::Error, span })),
            then: then.unwrap_or(Block { stmts: Vec::new(), tail: None, span }),
            otherwise,
        }
    }

    fn list(&mut self, pair: Pair<'_, Rule>) -> ExprKind {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let Some(first) = inner.next() else { return ExprKind::List(Vec::new()) };
        let first = self.expr(first);
        let Some(tail) = inner.next() else { return ExprKind::List(vec![first]) };
        match tail.as_rule() {
            Rule::repeat_tail => {
                let count =
                    tail.into_inner().next().map_or(Expr { kind: ExprKind::Error, span }, |c| self.expr(c));
                ExprKind::Repeat { elem: Box::new(first), count: Box::new(count) }
            }
            Rule::comp_tail => {
                let mut pat = Pattern::Wildcard(span);
                let mut iter = Expr { kind: ExprKind::Error, span };
                for p in tail.into_inner() {
                    match p.as_rule() {
                        Rule::kw_for | Rule::kw_in => {}
                        Rule::expr => iter = self.expr(p),
                        _ => pat = self.pattern(p),
                    }
                }
                ExprKind::Comprehension { elem: Box::new(first), pat, iter: Box::new(iter) }
            }
            _ => {
                let mut elems = vec![first];
                elems.extend(tail.into_inner().map(|e| self.expr(e)));
                ExprKind::List(elems)
            }
        }
    }

    // ------------------------------------------------------------ literals and names

    fn int(&mut self, pair: &Pair<'_, Rule>) -> ExprKind {
        let digits: String = pair.as_str().chars().filter(|&c| c != '_').collect();
        match digits.parse::<i64>() {
            Ok(v) => ExprKind::Int(v),
            Err(_) => {
                let span = self.span(pair);
                self.diags.push(
                    Diagnostic::error("E0003", format!("integer literal `{}` is too large", pair.as_str()))
                        .at(span, "does not fit in a 64-bit signed integer")
                        .with_help(format!(
                            "the largest integer is {}; use a float such as `1e19` for larger values",
                            i64::MAX
                        )),
                );
                ExprKind::Error
            }
        }
    }

    fn float(&mut self, pair: &Pair<'_, Rule>) -> ExprKind {
        let digits: String = pair.as_str().chars().filter(|&c| c != '_').collect();
        match digits.parse::<f64>() {
            Ok(v) if v.is_finite() => ExprKind::Float(v),
            _ => {
                let span = self.span(pair);
                self.diags.push(
                    Diagnostic::error("E0003", format!("float literal `{}` is out of range", pair.as_str()))
                        .at(span, "too large for a 64-bit float")
                        .with_help(format!("the largest float is about {:e}", f64::MAX)),
                );
                ExprKind::Error
            }
        }
    }

    /// The value of a string literal; invalid escapes are reported (E0007) and kept verbatim.
    fn string(&mut self, pair: Pair<'_, Rule>) -> String {
        let Some(body) = pair.into_inner().next() else { return String::new() };
        let body_start = self.span(&body).start as usize;
        let mut out = String::new();
        let mut chars = body.as_str().char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                other => {
                    let escaped = other.map_or(0, |(_, e)| e.len_utf8());
                    let span = Span::new(self.file, body_start + i, body_start + i + 1 + escaped);
                    let shown = other.map_or(String::new(), |(_, e)| e.to_string());
                    self.diags.push(
                        Diagnostic::error("E0007", format!("invalid escape `\\{shown}` in string"))
                            .at(span, "not a valid escape")
                            .with_help("valid escapes are `\\\"`, `\\\\`, `\\n` and `\\t`; write `\\\\` for a backslash"),
                    );
                    out.push('\\');
                    out.push_str(&shown);
                }
            }
        }
        out
    }

    /// A name being declared or bound: reserved words are reported (E0005) but kept, so the
    /// rest of the item still reaches later stages.
    fn name(&mut self, pair: Pair<'_, Rule>) -> Ident {
        let ident = self.ident(&pair);
        if RESERVED.contains(&ident.name.as_str()) {
            self.diags.push(
                Diagnostic::error(
                    "E0005",
                    format!("`{}` is a reserved word and cannot be used as a name", ident.name),
                )
                .at(ident.span, "reserved word")
                .with_help(format!("choose another name, e.g. `{}_`", ident.name)),
            );
        }
        ident
    }

    fn ident(&self, pair: &Pair<'_, Rule>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(pair) }
    }

    fn missing_ident(&self, span: Span) -> Ident {
        Ident { name: String::new(), span }
    }
}

fn prefix(op: &Pair<'_, Rule>) -> UnOp {
    if op.as_str() == "-" { UnOp::Neg } else { UnOp::Not }
}

/// Wraps `operand` in prefix operators, the last one innermost.
fn apply_prefixes(ops: Vec<(Span, UnOp)>, mut operand: Expr) -> Expr {
    for (op_span, op) in ops.into_iter().rev() {
        let span = op_span.to(operand.span);
        operand = Expr { kind: ExprKind::Unary { op, expr: Box::new(operand) }, span };
    }
    operand
}

fn binary(op: &str, lhs: Expr, rhs: Expr) -> Expr {
    let span = lhs.span.to(rhs.span);
    let op = match op {
        ".." => return Expr { kind: ExprKind::Range { start: Box::new(lhs), end: Box::new(rhs) }, span },
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "%" => BinOp::Rem,
        "@" => BinOp::MatMul,
        "**" => BinOp::Pow,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "&&" | "and" => BinOp::And,
        // The grammar's `or_op` is the only operator left: `||` or `or`.
        _ => BinOp::Or,
    };
    Expr { kind: ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span }
}

/// Byte length of `text` up to the end of its last token, skipping trailing whitespace and
/// comments. `text` starts at a token boundary, so a forward scan sees strings and comments
/// whole.
fn end_of_last_token(text: &str) -> usize {
    let b = text.as_bytes();
    let mut i = 0;
    let mut end = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                end = i;
            }
            _ => {
                i += 1;
                end = i;
            }
        }
    }
    end
}
