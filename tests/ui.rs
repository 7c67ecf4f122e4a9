//! Data-driven snapshot tests: every `tests/ui/**/*.model` file is one case. Its first line,
//! `// stage: NAME`, says which stage's output to snapshot; snapshots live in
//! `tests/ui/snapshots`. Re-bless with `INSTA_UPDATE=always cargo test --test ui` and review
//! every changed `.snap` file before committing it.

use modelc::diag::{self, RenderOptions};
use modelc::source::SourceMap;
use modelc::syntax;
use std::path::Path;

#[path = "support/elab_stages.rs"]
mod elab_stages;

#[test]
fn ui() {
    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    insta::with_settings!({ snapshot_path => ui_dir.join("snapshots"), prepend_module_to_snapshot => false }, {
        insta::glob!("ui/**/*.model", |path| {
            let text = std::fs::read_to_string(path).expect("test case is readable UTF-8");
            let name = path.strip_prefix(&ui_dir).unwrap_or(path).to_string_lossy().replace('\\', "/");
            let output = run_case(&name, &text);
            // Name snapshots after the path below tests/ui, not after insta's default (the path
            // below the common prefix of all cases), so adding a case directory elsewhere does
            // not rename every existing snapshot.
            insta::with_settings!({ snapshot_suffix => name.replace('/', "__") }, {
                insta::assert_snapshot!(output);
            });
        });
    });
}

/// Runs the stage named on the first line of `text` and returns the text to snapshot.
fn run_case(name: &str, text: &str) -> String {
    let stage = text.lines().next().and_then(|l| l.strip_prefix("// stage:")).map(str::trim);
    let mut sources = SourceMap::new();
    let file = sources.add_text(name, text);
    match stage {
        Some("ast") => {
            let (ast, diags) = syntax::parse(file, text);
            let mut out = syntax::dump(&ast, text);
            if !diags.is_empty() {
                out.push_str("--- unexpected diagnostics ---\n");
                out.push_str(&diag::render_all(&sources, &diags, RenderOptions::default()));
            }
            out
        }
        Some("parse-errors") => {
            let (ast, diags) = syntax::parse(file, text);
            assert!(!diags.is_empty(), "{name}: a parse-errors case must produce diagnostics");
            let mut out = diag::render_all(&sources, &diags, RenderOptions::default());
            let names: Vec<&str> =
                ast.items.iter().filter_map(|i| i.name()).map(|n| n.name.as_str()).collect();
            out.push_str(&format!("--- items parsed: [{}]\n", names.join(", ")));
            out
        }
        Some(stage @ ("check" | "ir" | "summary")) => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
            elab_stages::run(stage, name, text, &dir).expect("elaborator stage")
        }
        Some(other) => {
            panic!("{name}: unknown stage `{other}` (known: ast, parse-errors, check, ir, summary)")
        }
        None => panic!("{name}: the first line must be `// stage: NAME`"),
    }
}
