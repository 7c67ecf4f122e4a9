//! The abstract syntax tree of a `.model` file. Every node carries the [`Span`] it was parsed
//! from. The tree is produced by `syntax::parse` and consumed by the elaborator; it knows
//! nothing of shapes or the IR.

use crate::source::{FileId, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// One parsed file.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub file: FileId,
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Use(UseDecl),
    /// `module Name(...) { ... }` or `model Name(...) { ... }`.
    Module(ModuleDecl),
    /// A top-level function, e.g. `fn gelu(x) { ... }` in the standard library.
    Fn(FnDecl),
    /// `data name { key: value ... }` — a data pipeline.
    Data(ConfigBlock),
    /// `train name { key: value ... }` — a training run.
    Train(ConfigBlock),
    /// `sweep name of train_name { key: [values] ... }` — a grid of runs.
    Sweep(SweepDecl),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Use(u) => u.span,
            Item::Module(m) => m.span,
            Item::Fn(f) => f.span,
            Item::Data(b) | Item::Train(b) => b.span,
            Item::Sweep(s) => s.span,
        }
    }

    /// The declared name (`None` for `use`).
    pub fn name(&self) -> Option<&Ident> {
        match self {
            Item::Use(_) => None,
            Item::Module(m) => Some(&m.name),
            Item::Fn(f) => Some(&f.name),
            Item::Data(b) | Item::Train(b) => Some(&b.name),
            Item::Sweep(s) => Some(&s.name),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct UseDecl {
    pub target: UseTarget,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum UseTarget {
    /// `use nn` — a standard-library file embedded in the binary (`stdlib/nn.model`).
    Stdlib(Ident),
    /// `use "layers/blocks.model"` — a file relative to the using file.
    Path { path: String, span: Span },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    Module,
    /// A `model` is a module that can be instantiated at the top level (by `check`, `ir`,
    /// `train`); otherwise the same.
    Model,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModuleDecl {
    pub kind: ModuleKind,
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    pub members: Vec<Member>,
    /// `///` doc comment lines directly above the declaration, joined with newlines.
    pub doc: Option<String>,
    pub span: Span,
}

/// A compile-time parameter of a module or a function: `d: int`, `causal: bool = false`,
/// `body: module`, `x: [B, T, d]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Member {
    /// `name = expr`: a sub-module (`up = Linear(d, h)`), an array of sub-modules, or a
    /// compile-time value, visible to methods as `name` and to other modules as `m.name`.
    Field { name: Ident, value: Expr, span: Span },
    /// `let name = expr`: a compile-time local of the module body (not a field).
    Let { name: Ident, value: Expr, span: Span },
    /// `param name: [shape] = init` (trainable) or `buffer name: [shape] = init` (not trainable).
    Param { name: Ident, ty: TypeExpr, init: Option<Expr>, trainable: bool, span: Span },
    /// `dim T = expr`: default value of a symbolic dimension of this model's signatures when it
    /// is instantiated at the top level.
    Dim { name: Ident, value: Expr, span: Span },
    /// `fn name(...) -> type { ... }`: a method; `forward` is called by `m(x)`.
    Fn(FnDecl),
    /// `if cond { members } else { members }` evaluated at instantiation.
    If { cond: Expr, then: Vec<Member>, otherwise: Vec<Member>, span: Span },
    /// `assert cond, "message"` (optionally `, help: "..."`), checked at instantiation.
    Assert(AssertStmt),
}

#[derive(Clone, Debug, PartialEq)]
pub struct AssertStmt {
    pub cond: Expr,
    pub message: Option<Expr>,
    pub help: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FnDecl {
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    pub ret: Option<TypeExpr>,
    pub body: Block,
    pub doc: Option<String>,
    pub span: Span,
}

/// Type annotations of parameters and return values.
#[derive(Clone, Debug, PartialEq)]
pub enum TypeExpr {
    Int(Span),
    Float(Span),
    Bool(Span),
    Str(Span),
    /// A module instance (for higher-order modules such as `Residual(body: module)`).
    Module(Span),
    /// `f32[B, T, d]`, `i32[B, T]`, `[..., d]` (dtype defaults to f32), `f32[]` (scalar).
    Tensor {
        dtype: Option<Ident>,
        dims: Vec<DimExpr>,
        span: Span,
    },
    /// `(T1, T2)`: several return values.
    Tuple(Vec<TypeExpr>, Span),
    /// `[int]`-style lists are written `list`; element types are not checked statically.
    List(Span),
}

impl TypeExpr {
    pub fn span(&self) -> Span {
        match self {
            TypeExpr::Int(s)
            | TypeExpr::Float(s)
            | TypeExpr::Bool(s)
            | TypeExpr::Str(s)
            | TypeExpr::Module(s)
            | TypeExpr::List(s) => *s,
            TypeExpr::Tensor { span, .. } | TypeExpr::Tuple(_, span) => *span,
        }
    }
}

/// One dimension of a tensor type.
#[derive(Clone, Debug, PartialEq)]
pub enum DimExpr {
    /// `...`: any number of leading dimensions (only first).
    Ellipsis(Span),
    /// `_`: any size, not bound to a name.
    Wildcard(Span),
    /// A name or a compile-time expression: `B`, `d`, `4 * d`, `128`. A bare name that is not
    /// a compile-time value in scope is a symbolic dimension, bound at each call.
    Expr(Expr),
}

/// `{ stmt* tail? }`: the value is the tail expression (or unit).
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub tail: Option<Box<Expr>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `let pat (: type)? = expr`
    Let {
        pat: Pattern,
        ty: Option<TypeExpr>,
        value: Expr,
        span: Span,
    },
    /// `name = expr` (re-binding an existing local), also `name += expr` etc. desugared by the
    /// parser into `name = name + expr`.
    Assign {
        name: Ident,
        value: Expr,
        span: Span,
    },
    Assert(AssertStmt),
    /// An expression evaluated for its effect (`for`, `if`), its value discarded.
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Pattern {
    Name(Ident),
    Wildcard(Span),
    Tuple(Vec<Pattern>, Span),
}

impl Pattern {
    pub fn span(&self) -> Span {
        match self {
            Pattern::Name(i) => i.span,
            Pattern::Wildcard(s) | Pattern::Tuple(_, s) => *s,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `%`
    Rem,
    /// `@` — matrix product.
    MatMul,
    /// `**`
    Pow,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `and` / `&&`
    And,
    /// `or` / `||`
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::MatMul => "@",
            BinOp::Pow => "**",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

/// A call argument: positional (`x`) or named (`causal: true`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

/// One position inside `x[...]`.
// Index items are few and short-lived; boxing the slice bounds would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum IndexItem {
    /// `x[i]` — selects one element and drops the axis.
    Expr(Expr),
    /// `a:b`, `:b`, `a:`, `:`, `a:b:s` — keeps the axis.
    Slice { start: Option<Expr>, end: Option<Expr>, step: Option<Expr>, span: Span },
    /// `...` — all remaining axes.
    Ellipsis(Span),
    /// `None` — inserts an axis of size 1.
    NewAxis(Span),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Name(String),
    Unary {
        op: UnOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `callee(args)`; a method call is a call whose callee is a `Field`.
    Call {
        callee: Box<Expr>,
        args: Vec<Arg>,
    },
    /// `base.name`
    Field {
        base: Box<Expr>,
        name: Ident,
    },
    /// `base[items]`
    Index {
        base: Box<Expr>,
        items: Vec<IndexItem>,
    },
    /// `[a, b, c]`
    List(Vec<Expr>),
    /// `[elem; count]` — `count` evaluations of `elem` (each a fresh module instance).
    Repeat {
        elem: Box<Expr>,
        count: Box<Expr>,
    },
    /// `[elem for pat in iter]`
    Comprehension {
        elem: Box<Expr>,
        pat: Pattern,
        iter: Box<Expr>,
    },
    /// `(a, b)`
    Tuple(Vec<Expr>),
    /// `start..end` (exclusive).
    Range {
        start: Box<Expr>,
        end: Box<Expr>,
    },
    /// `if cond { ... } else { ... }`; `otherwise` is a `Block` or another `If`.
    If {
        cond: Box<Expr>,
        then: Block,
        otherwise: Option<Box<Expr>>,
    },
    /// `for pat in iter { ... }` — unrolled at compile time; its value is unit.
    For {
        pat: Pattern,
        iter: Box<Expr>,
        body: Block,
    },
    Block(Block),
    /// Produced by the parser's error recovery where an expression could not be read.
    Error,
}

/// `data` and `train` blocks: an ordered list of `key label?: value` entries. Their meaning
/// is given by later stages (`data::plan`, `train`); the front end checks names in them.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigBlock {
    pub name: Ident,
    pub entries: Vec<Entry>,
    pub span: Span,
}

/// `key: value` or `key label: value` (e.g. `source emma: text("...")`); `key` may be a
/// dotted path in sweeps (`optimizer.lr: [1e-3, 3e-4]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: Vec<Ident>,
    pub label: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

impl Entry {
    /// The dotted key as written (`optimizer.lr`).
    pub fn key_path(&self) -> String {
        self.key.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(".")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SweepDecl {
    pub name: Ident,
    /// The `train` block the sweep varies.
    pub target: Ident,
    pub entries: Vec<Entry>,
    pub span: Span,
}
