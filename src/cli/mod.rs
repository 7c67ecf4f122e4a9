//! Subcommands of the `modelc` binary and what they share: loading a program, parsing
//! `--arg`/`--dim` values, printing diagnostics.

pub mod bench;
pub mod build;
pub mod check;
pub mod data;
pub mod ir;
pub mod run;
pub mod summary;
pub mod train;

use modelc::diag::{Diagnostic, RenderOptions, render};
use modelc::elab::value::Value;
use modelc::elab::{ElabOptions, Program};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;

/// Prints diagnostics to stderr (coloured when stderr is a terminal); returns whether any
/// was an error.
pub fn report(prog: &Program, diags: &[Diagnostic]) -> bool {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100);
    for d in diags {
        eprint!("{}", render(&prog.sources, d, RenderOptions { color, width }));
        eprintln!();
    }
    diags.iter().any(Diagnostic::is_error)
}

/// Loads a file and reports load and parse errors; `None` if there were errors.
pub fn load(path: &Path) -> Option<Program> {
    let prog = Program::load(path);
    if report(&prog, &prog.diagnostics) {
        return None;
    }
    Some(prog)
}

/// Parses `NAME=VALUE` pairs: ints, floats, `true`/`false`, anything else a string.
pub fn parse_args(items: &[String]) -> Result<Vec<(String, Value)>, String> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("`{kv}` is not of the form NAME=VALUE"))?;
            let val = if let Ok(i) = v.parse::<i64>() {
                Value::Int(i)
            } else if let Ok(f) = v.parse::<f64>() {
                Value::Float(f)
            } else if v == "true" || v == "false" {
                Value::Bool(v == "true")
            } else {
                Value::Str(Rc::from(v))
            };
            Ok((k.trim().to_string(), val))
        })
        .collect()
}

/// Parses `--dim NAME=INT` options.
pub fn parse_dims(items: &[String]) -> Result<Vec<(String, i64)>, String> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("`{kv}` is not of the form NAME=VALUE"))?;
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("dimension `{k}` must be a non-negative integer, got `{v}`"))?;
            if n < 0 {
                return Err(format!("dimension `{k}` must be non-negative, got {n}"));
            }
            Ok((k.trim().to_string(), n))
        })
        .collect()
}

pub fn elab_options(dims: &[String]) -> Result<ElabOptions, String> {
    Ok(ElabOptions { dims: parse_dims(dims)?, ..ElabOptions::default() })
}

/// Prints a usage error and returns exit code 2.
pub fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// The model to use: the one named, or the only model of the file.
pub fn pick_model(prog: &Program, name: Option<&str>) -> Result<String, String> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let models = prog.models();
    match models.as_slice() {
        [(_, m)] => Ok(m.name.name.clone()),
        [] => Err("the file declares no `model`".into()),
        many => Err(format!(
            "the file declares several models ({}); choose one with --model",
            many.iter().map(|(_, m)| m.name.name.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Binds symbolic dimensions of the model's `forward` signature that `--dim` did not give
/// from the shapes of the tensors in the input file (by parameter name).
pub fn dims_from_inputs(
    prog: &Program,
    model: &str,
    input: &Path,
    opts: &mut ElabOptions,
) -> Result<(), String> {
    use modelc::syntax::ast::{DimExpr, ExprKind, Item, Member, TypeExpr};
    let bytes = std::fs::read(input).map_err(|e| format!("cannot read `{}`: {e}", input.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", input.display()))?;
    let Some((_, Item::Module(m))) = prog.find_root_item(model) else { return Ok(()) };
    let Some(f) = m.members.iter().find_map(|mem| match mem {
        Member::Fn(f) if f.name.name == "forward" => Some(f),
        _ => None,
    }) else {
        return Ok(());
    };
    for p in &f.params {
        let Some(TypeExpr::Tensor { dims, .. }) = &p.ty else { continue };
        let Ok(view) = st.tensor(&p.name.name) else { continue };
        if dims.iter().any(|d| matches!(d, DimExpr::Ellipsis(_))) || view.shape().len() != dims.len() {
            continue;
        }
        for (d, &size) in dims.iter().zip(view.shape()) {
            if let DimExpr::Expr(e) = d
                && let ExprKind::Name(n) = &e.kind
                && !opts.dims.iter().any(|(k, _)| k == n)
                && !m.params.iter().any(|mp| &mp.name.name == n)
            {
                opts.dims.push((n.clone(), size as i64));
            }
        }
    }
    Ok(())
}
