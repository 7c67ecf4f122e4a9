//! `modelc check`: load problems, every `model` elaborated with its defaults, and the
//! references of `train` and `sweep` blocks.

use super::eval::{Ctx, ElabOptions, Elaborator, elaborate_model, elaborate_model_at};
use super::objective::{ObjectiveExpr, elaborate_objective};
use super::program::Program;
use super::value::Value;
use crate::diag::Diagnostic;
use crate::syntax::ast::{ConfigBlock, Expr, ExprKind, Item, ModuleKind};

/// Checks a whole program; returns every diagnostic (errors and warnings), deduplicated.
pub fn check_program(prog: &Program, opts: &ElabOptions) -> Vec<Diagnostic> {
    let mut diags: Vec<Diagnostic> = prog.diagnostics.clone();
    let parse_failed = diags.iter().any(Diagnostic::is_error);
    for (_, m) in prog.models() {
        if let Some(p) = m.params.iter().find(|p| p.default.is_none()) {
            diags.push(
                Diagnostic::warning(
                    "W0002",
                    format!("model `{}` was not elaborated: `{}` has no default", m.name.name, p.name.name),
                )
                .at(p.span, "no default")
                .with_help("give every model parameter a default so `check` can build it"),
            );
            continue;
        }
        match elaborate_model(prog, &m.name.name, &[], opts) {
            Ok(e) => diags.extend(e.warnings),
            Err(ds) => diags.extend(ds),
        }
    }
    if !parse_failed {
        for (_, item) in prog.root_items() {
            match item {
                Item::Train(t) => check_train(prog, t, opts, &mut diags),
                Item::Data(d) => diags.extend(crate::data::plan::check_data_block(d)),
                Item::Sweep(s) => match prog.resolve(prog.root, &s.target.name) {
                    Some(r) if matches!(prog.item(r), Item::Train(_)) => {}
                    _ => diags.push(
                        Diagnostic::error(
                            "E0112",
                            format!(
                                "sweep `{}` varies `{}`, which is not a `train` block",
                                s.name.name, s.target.name
                            ),
                        )
                        .at(s.target.span, "not a train block")
                        .with_help("write `sweep NAME of TRAIN_BLOCK { ... }`"),
                    ),
                },
                _ => {}
            }
        }
    }
    dedup(diags)
}

fn dedup(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for d in diags {
        if !out
            .iter()
            .any(|x| x.code == d.code && x.message == d.message && x.primary_span() == d.primary_span())
        {
            out.push(d);
        }
    }
    out
}

/// A train block's `model:` entry: the expression, the model's name and its arguments.
pub type ModelCall<'a> = (&'a Expr, String, Vec<(Option<String>, &'a Expr)>);

/// The `model:` entry of a train block: a model name or a call of one with arguments.
pub fn train_model_call(t: &ConfigBlock) -> Option<ModelCall<'_>> {
    let e = &t.entries.iter().find(|e| e.key_path() == "model")?.value;
    match &e.kind {
        ExprKind::Name(n) => Some((e, n.clone(), Vec::new())),
        ExprKind::Call { callee, args } => match &callee.kind {
            ExprKind::Name(n) => Some((
                e,
                n.clone(),
                args.iter().map(|a| (a.name.as_ref().map(|i| i.name.clone()), &a.value)).collect(),
            )),
            _ => None,
        },
        _ => None,
    }
}

fn check_train(prog: &Program, t: &ConfigBlock, opts: &ElabOptions, diags: &mut Vec<Diagnostic>) {
    diags.extend(crate::train::spec::check_train_settings(prog, t));
    let mut data_block: Option<&ConfigBlock> = None;
    match t.entries.iter().find(|e| e.key_path() == "data") {
        Some(e) => match &e.value.kind {
            ExprKind::Name(n) => match prog.resolve(prog.root, n) {
                Some(r) if matches!(prog.item(r), Item::Data(_)) => {
                    if let Item::Data(d) = prog.item(r) {
                        data_block = Some(d);
                    }
                }
                _ => diags.push(
                    Diagnostic::error("E0111", format!("`{n}` is not a `data` block"))
                        .at(e.value.span, "expected the name of a data block")
                        .with_help("declare it with `data NAME { ... }` in this file or a used one"),
                ),
            },
            _ => diags.push(
                Diagnostic::error("E0111", "`data:` takes the name of a data block")
                    .at(e.value.span, "not a name")
                    .with_help("write `data: my_data`"),
            ),
        },
        None => diags.push(
            Diagnostic::error("E0113", format!("train block `{}` has no `data:` entry", t.name.name))
                .at(t.name.span, "no data")
                .with_help("add `data: NAME` naming a data block"),
        ),
    }
    let Some((e, name, args)) = train_model_call(t) else {
        let span = t.entries.iter().find(|e| e.key_path() == "model").map_or(t.name.span, |e| e.value.span);
        diags.push(
            Diagnostic::error(
                "E0113",
                format!("train block `{}` needs `model: ModelName(args...)`", t.name.name),
            )
            .at(span, "no model")
            .with_help("name a `model` declared in this file, e.g. `model: CharLM(layers: 2)`"),
        );
        return;
    };
    match prog.resolve(prog.root, &name).map(|r| prog.item(r)) {
        Some(Item::Module(m)) if m.kind == ModuleKind::Model => {}
        Some(Item::Module(_)) => {
            diags.push(
                Diagnostic::error("E0113", format!("`{name}` is a `module`; a train block needs a `model`"))
                    .at(e.span, "not a model")
                    .with_help(format!("declare it with `model {name}(...)` to train it")),
            );
            return;
        }
        _ => {
            diags.push(
                Diagnostic::error("E0101", format!("unknown model `{name}`"))
                    .at(e.span, "not found")
                    .with_help("name a `model` declared in this file"),
            );
            return;
        }
    }
    if let Some(d) = data_block {
        check_loss_against_data(prog, t, d, &name, diags);
    }
    if args.is_empty() {
        return; // the defaults were checked with the model itself
    }
    let mut el = Elaborator::new(prog, false);
    let mut ctx = Ctx::new(prog.root, None, false);
    let mut vals = Vec::new();
    for (n, x) in &args {
        let v = el.eval(x, &mut ctx);
        match n {
            Some(n) => vals.push((n.clone(), v, Some(x.span))),
            None => diags.push(
                Diagnostic::error("E0313", "model arguments in a train block must be named")
                    .at(x.span, "positional")
                    .with_help("write `Model(name: value)`"),
            ),
        }
    }
    diags.append(&mut el.diags);
    if vals.iter().any(|(_, v, _)| matches!(v, Value::Poison)) {
        return;
    }
    match elaborate_model_at(prog, &name, &vals, Some(e.span), opts) {
        Ok(el) => diags.extend(el.warnings),
        Err(ds) => diags.extend(ds),
    }
}

/// Type-checks a train block's `loss:` against its data: the batch fields (`x`, `y`, ...) with
/// the shapes and dtypes the data block declares are passed through the loss expression,
/// which calls the model; a mismatch is reported at the loss expression and the model's
/// signature, with the data block's batch signature as a label. CSV feature counts given by
/// column patterns come from the files' header lines; other sizes known only after reading the
/// data (images without a declared shape) leave the train block unchecked here.
fn check_loss_against_data(
    prog: &Program,
    t: &ConfigBlock,
    data: &ConfigBlock,
    model: &str,
    diags: &mut Vec<Diagnostic>,
) {
    use crate::data::plan::DimSig;
    let Some(loss) = t.entries.iter().find(|e| e.key_path() == "loss") else { return };
    let base = prog.sources.get(prog.root).path.as_ref().and_then(|p| p.parent().map(|d| d.to_path_buf()));
    let Ok(plan) = crate::data::lower_data_block(data, base.as_deref().unwrap_or(std::path::Path::new(".")))
    else {
        return; // the data block's own diagnostics are reported by its check
    };
    let mut sig = plan.batch_signature();
    // A feature count given by a column pattern is read from the CSV header lines.
    if let Some(n) = plan.feature_count_from_headers() {
        for f in &mut sig {
            for d in &mut f.dims {
                if matches!(d, DimSig::Symbol("F")) {
                    *d = DimSig::Fixed(n);
                }
            }
        }
    }
    let mut fields = Vec::new();
    for f in &sig {
        let mut shape = Vec::new();
        for d in &f.dims {
            match d {
                DimSig::Batch(n) | DimSig::Fixed(n) => shape.push(*n),
                DimSig::Symbol(_) => return,
            }
        }
        fields.push((f.name.clone(), crate::ir::TensorType::new(f.dtype, shape)));
    }
    let Some((_, Item::Module(_))) = prog.find_root_item(model) else { return };
    let sig_text: Vec<String> = sig.iter().map(ToString::to_string).collect();
    let label = format!("batches of `{}`: {}", data.name.name, sig_text.join(", "));
    let exprs = [ObjectiveExpr { what: "loss".into(), expr: &loss.value, scalar: true }];
    match elaborate_objective(prog, t, &fields, &exprs, true, Some((data.name.span, label))) {
        Ok(o) => diags.extend(o.warnings),
        Err(ds) => diags.extend(ds),
    }
}
