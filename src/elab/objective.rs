//! The graph of a `train` block's objective: the model instantiated with the block's
//! arguments, the batch fields of its data block bound as graph inputs (`x`, `y`, ...), and the
//! block's expressions (`loss:`, each `metric NAME:`) evaluated in one graph, with `model`
//! bound to the instance. `check` uses it to type the loss against the data; `train` builds the
//! training step and the evaluation graphs from it.

use super::check::train_model_call;
use super::eval::{ArgVal, Ctx, Elaborator};
use super::program::Program;
use super::value::Value;
use crate::diag::{Diagnostic, Label};
use crate::ir::{DType, Graph, NodeId, TensorType};
use crate::source::Span;
use crate::syntax::ast::{ConfigBlock, Expr, Ident, Item};

/// One expression of the objective and whether it must be an f32 scalar.
pub struct ObjectiveExpr<'a> {
    /// What the expression is, for messages (`loss`, `metric accuracy`).
    pub what: String,
    pub expr: &'a Expr,
    pub scalar: bool,
}

/// The elaborated objective: one graph, one node per expression (in order).
pub struct Objective {
    pub graph: Graph,
    pub nodes: Vec<NodeId>,
    pub warnings: Vec<Diagnostic>,
}

/// Builds the objective graph of train block `t`. `fields` are the batch fields with their
/// types; `data_label` (the data block's name span and a description of its batches) is added
/// to every diagnostic so a shape mismatch shows what the data provides. `training` selects the
/// training-mode graph (dropout active, batch statistics, buffer updates).
pub fn elaborate_objective(
    prog: &Program,
    t: &ConfigBlock,
    fields: &[(String, TensorType)],
    exprs: &[ObjectiveExpr<'_>],
    training: bool,
    data_label: Option<(Span, String)>,
) -> Result<Objective, Vec<Diagnostic>> {
    let Some((model_expr, model, args)) = train_model_call(t) else {
        return Err(vec![
            Diagnostic::error(
                "E0113",
                format!("train block `{}` needs `model: ModelName(args...)`", t.name.name),
            )
            .at(t.name.span, "no model"),
        ]);
    };
    let Some(r) = prog.resolve(prog.root, &model) else {
        return Err(vec![
            Diagnostic::error("E0101", format!("unknown model `{model}`")).at(model_expr.span, "not found"),
        ]);
    };
    if !matches!(prog.item(r), Item::Module(_)) {
        return Err(vec![
            Diagnostic::error("E0113", format!("`{model}` is not a model"))
                .at(model_expr.span, "not a model"),
        ]);
    }
    let mut el = Elaborator::new(prog, training);
    el.graph.name = format!("{}.objective", t.name.name);
    let mut ctx = Ctx::new(prog.root, None, false);
    let mut call_args = Vec::new();
    for (n, x) in &args {
        let v = el.eval(x, &mut ctx);
        call_args.push(ArgVal {
            name: n.as_ref().map(|n| Ident { name: n.clone(), span: x.span }),
            value: v,
            span: x.span,
        });
    }
    let Value::Module(root) = el.instantiate(r, call_args, model_expr.span) else {
        return Err(el.diags);
    };
    el.register_tree(root);
    let before = el.diags.len();
    let mut ctx = Ctx::new(prog.root, None, true);
    ctx.bind("model", Value::Module(root));
    for (name, ty) in fields {
        let span = data_label.as_ref().map(|(s, _)| *s);
        let node = el.graph.add_input(name, ty.clone(), span);
        ctx.bind(name, Value::Tensor(node));
    }
    let mut nodes = Vec::new();
    for ox in exprs {
        let v = el.eval(ox.expr, &mut ctx);
        match v {
            Value::Tensor(n) => {
                let ty = el.graph.ty(n).clone();
                if ty.dtype != DType::F32 || (ox.scalar && ty.numel() != 1) {
                    let want = if ox.scalar { "an f32 scalar" } else { "an f32 tensor" };
                    el.diags.push(
                        Diagnostic::error("E0701", format!("the {} must be {want}, found {ty}", ox.what))
                            .at(ox.expr.span, format!("this is {ty}"))
                            .with_help(
                                "reduce it, e.g. with `mean(...)` or `sum(...)`; the standard losses and \
                                 metrics already return a scalar",
                            ),
                    );
                }
                nodes.push(n);
            }
            other => {
                if !other.is_poison() && el.diags.len() == before {
                    el.diags.push(
                        Diagnostic::error(
                            "E0701",
                            format!("the {} must be an f32 scalar tensor, found {}", ox.what, other.kind()),
                        )
                        .at(ox.expr.span, "not a tensor"),
                    );
                }
                nodes.push(NodeId(0));
            }
        }
    }
    if let Some((span, text)) = &data_label {
        for d in &mut el.diags[before..] {
            d.labels.push(Label { span: *span, text: text.clone(), primary: false });
        }
    }
    if el.diags.iter().any(Diagnostic::is_error) {
        return Err(el.diags);
    }
    Ok(Objective { graph: el.graph, nodes, warnings: el.diags })
}

/// Evaluates compile-time expressions of a config block (numbers, strings, lists, tuples and
/// the file's constants) at the top level of the program.
pub struct ConstEvaluator<'p> {
    el: Elaborator<'p>,
}

impl<'p> ConstEvaluator<'p> {
    pub fn new(prog: &'p Program) -> ConstEvaluator<'p> {
        ConstEvaluator { el: Elaborator::new(prog, false) }
    }

    pub fn eval(&mut self, e: &Expr) -> Value {
        let mut ctx = Ctx::new(self.el.prog.root, None, false);
        self.el.eval(e, &mut ctx)
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.el.diags
    }
}

/// The candidate closest to `name` by edit distance, if close enough to suggest.
pub fn closest_name(name: &str, candidates: &[&str]) -> Option<String> {
    let owned: Vec<String> = candidates.iter().map(|s| s.to_string()).collect();
    super::eval::closest(name, &owned)
}
