//! Stages of the ui snapshot harness that run the elaborator: `check` (rendered diagnostics
//! of `modelc check`), `ir` (graph text of a model) and `summary` (the summary table).
//! Optional header lines after the stage: `// model: NAME`, `// args: k=v, k=v`,
//! `// dims: B=2, T=8`.

use modelc::diag::{self, RenderOptions};
use modelc::elab::value::Value;
use modelc::elab::{ElabOptions, Program, check_program, elaborate_model, summarize};
use modelc::ir::{print_graph, verify};
use std::path::Path;
use std::rc::Rc;

fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|l| l.starts_with("//"))
        .find_map(|l| l.strip_prefix("//").map(str::trim).and_then(|l| l.strip_prefix(key)).map(str::trim))
}

fn pairs(s: Option<&str>) -> Vec<(String, String)> {
    s.map(|s| {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').expect("header pairs are NAME=VALUE");
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect()
    })
    .unwrap_or_default()
}

fn value(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        Value::Int(i)
    } else if let Ok(f) = v.parse::<f64>() {
        Value::Float(f)
    } else if v == "true" || v == "false" {
        Value::Bool(v == "true")
    } else {
        Value::Str(Rc::from(v))
    }
}

fn options(text: &str) -> ElabOptions {
    let dims = pairs(header(text, "dims:"))
        .into_iter()
        .map(|(k, v)| (k, v.parse().expect("dims are integers")))
        .collect();
    ElabOptions {
        dims,
        training: header(text, "training:").is_some_and(|v| v == "true"),
        ..ElabOptions::default()
    }
}

/// Elaborates the model of a case and returns the program and the result.
fn elaborate(
    name: &str,
    text: &str,
    dir: &Path,
) -> (Program, Result<modelc::elab::Elaborated, Vec<modelc::diag::Diagnostic>>) {
    let prog = Program::from_source(name, text, Some(dir));
    assert!(
        prog.diagnostics.is_empty(),
        "{name}: does not parse:\n{}",
        diag::render_all(&prog.sources, &prog.diagnostics, RenderOptions::default())
    );
    let model = match header(text, "model:") {
        Some(m) => m.to_string(),
        None => {
            let ms = prog.models();
            assert_eq!(ms.len(), 1, "{name}: name the model with `// model: NAME`");
            ms[0].1.name.name.clone()
        }
    };
    let args: Vec<(String, Value)> =
        pairs(header(text, "args:")).into_iter().map(|(k, v)| (k, value(&v))).collect();
    let r = elaborate_model(&prog, &model, &args, &options(text));
    (prog, r)
}

/// Runs an elaborator stage; `None` if the stage is not one of these.
pub fn run(stage: &str, name: &str, text: &str, dir: &Path) -> Option<String> {
    match stage {
        "check" => {
            let prog = Program::from_source(name, text, Some(dir));
            let diags = check_program(&prog, &options(text));
            assert!(
                diags.iter().any(|d| d.is_error()),
                "{name}: a check case must produce at least one error"
            );
            let mut out = diag::render_all(&prog.sources, &diags, RenderOptions::default());
            out.push_str(&format!("--- {} error(s)\n", diags.iter().filter(|d| d.is_error()).count()));
            Some(out)
        }
        "ir" => {
            let (prog, r) = elaborate(name, text, dir);
            match r {
                Ok(e) => {
                    if let Err(errs) = verify(&e.graph) {
                        panic!("{name}: the elaborated graph fails the verifier:\n{}", errs.join("\n"));
                    }
                    Some(print_graph(&e.graph))
                }
                Err(ds) => panic!(
                    "{name}: elaboration failed:\n{}",
                    diag::render_all(&prog.sources, &ds, RenderOptions::default())
                ),
            }
        }
        "summary" => {
            let (prog, r) = elaborate(name, text, dir);
            match r {
                Ok(e) => Some(summarize(&e).1),
                Err(ds) => panic!(
                    "{name}: elaboration failed:\n{}",
                    diag::render_all(&prog.sources, &ds, RenderOptions::default())
                ),
            }
        }
        _ => None,
    }
}
