//! Compile-time values of the elaborator: numbers, strings, lists, module instances, functions
//! and tensors (graph nodes). Elaboration is an interpreter over these values whose tensor
//! operations append nodes to the graph being built.

use crate::ir::{Init, NodeId, TensorType};
use crate::source::Span;
use crate::syntax::ast::FnDecl;
use std::fmt;
use std::rc::Rc;

/// Index of an item (module, model, fn, data, train, sweep) in a [`super::Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemRef {
    pub file: u32,
    pub item: u32,
}

/// Handle of a module instance in the elaborator's instance arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstId(pub u32);

/// A callable value.
#[derive(Clone, Debug, PartialEq)]
pub enum Func {
    /// A top-level `fn`.
    User(ItemRef),
    /// A module or model declaration: calling it creates an instance.
    ModuleCtor(ItemRef),
    /// A method of an instance (`m.forward`, `self.attend`).
    Method(InstId, Rc<str>),
    /// A built-in function of the prelude.
    Builtin(&'static str),
    /// A built-in method bound to its receiver (`x.reshape`).
    BoundBuiltin(&'static str, Box<Value>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Unit,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Rc<str>),
    /// A tensor: a node of the graph being built (its type is in the graph).
    Tensor(NodeId),
    Module(InstId),
    List(Rc<Vec<Value>>),
    Tuple(Rc<Vec<Value>>),
    /// `start..end`
    Range(i64, i64),
    Func(Func),
    /// A parameter initialiser (`normal(0.02)`), valid only as a `param` default.
    Init(Rc<InitSpec>),
    /// The placeholder `None`.
    None,
    /// The result of an expression whose error has already been reported; every operation on
    /// it quietly yields `Poison` again, so one mistake gives one diagnostic.
    Poison,
}

/// An initialiser before the parameter shape is known (fans come from the shape).
#[derive(Clone, Debug, PartialEq)]
pub enum InitSpec {
    Ready(Init),
    Glorot { gain: f64, normal: bool },
    Kaiming { gain: f64, normal: bool },
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Unit => "unit `()`",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Tensor(_) => "tensor",
            Value::Module(_) => "module instance",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Range(..) => "range",
            Value::Func(Func::ModuleCtor(_)) => "module declaration",
            Value::Func(_) => "function",
            Value::Init(_) => "initialiser",
            Value::None => "None",
            Value::Poison => "<error>",
        }
    }

    pub fn is_poison(&self) -> bool {
        matches!(self, Value::Poison)
    }
}

/// A `param` or `buffer` declared by an instance.
#[derive(Clone, Debug)]
pub struct ParamSlot {
    pub name: String,
    pub ty: TensorType,
    pub init: Init,
    pub trainable: bool,
    pub span: Span,
}

/// What a name in an instance's environment stands for.
#[derive(Clone, Debug)]
pub enum Member {
    Value(Value),
    /// Index into `Instance::params`.
    Param(usize),
}

/// One frame of the instantiation chain, for diagnostics' notes.
#[derive(Clone, Debug)]
pub struct Frame {
    pub module: Rc<str>,
    pub span: Span,
}

/// A module instance: its arguments, fields, parameters and methods.
#[derive(Clone, Debug)]
pub struct Instance<'p> {
    pub decl: ItemRef,
    pub module: Rc<str>,
    /// Names visible to methods: arguments, fields, lets, params, in declaration order.
    pub env: Vec<(Rc<str>, Member)>,
    /// Sub-module fields in declaration order (for parameter paths and the summary tree).
    pub fields: Vec<(Rc<str>, Value)>,
    pub params: Vec<ParamSlot>,
    /// Methods by name (the file they are declared in comes with `decl`).
    pub methods: Vec<(Rc<str>, &'p FnDecl)>,
    /// Default values of symbolic dimensions (`dim T = ctx`).
    pub dims: Vec<(Rc<str>, i64)>,
    /// Where it was created and the chain of instantiations above it.
    pub chain: Vec<Frame>,
    /// Compile-time arguments as written, for the summary (`d=128, heads=4`).
    pub args_text: String,
}

impl<'p> Instance<'p> {
    pub fn lookup(&self, name: &str) -> Option<&Member> {
        self.env.iter().rev().find(|(n, _)| &**n == name).map(|(_, m)| m)
    }

    pub fn method(&self, name: &str) -> Option<&'p FnDecl> {
        self.methods.iter().find(|(n, _)| &**n == name).map(|(_, m)| *m)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Unit => f.write_str("()"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", crate::ir::fmt_f64(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Tensor(n) => write!(f, "tensor {n}"),
            Value::Module(i) => write!(f, "module #{}", i.0),
            Value::List(xs) | Value::Tuple(xs) => {
                let (open, close) = if matches!(self, Value::List(_)) { ("[", "]") } else { ("(", ")") };
                f.write_str(open)?;
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str(close)
            }
            Value::Range(a, b) => write!(f, "{a}..{b}"),
            Value::Func(_) => f.write_str("<function>"),
            Value::Init(_) => f.write_str("<initialiser>"),
            Value::None => f.write_str("None"),
            Value::Poison => f.write_str("<error>"),
        }
    }
}
