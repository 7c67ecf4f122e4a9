//! Bounded property tests of the parser: on random bytes, random token soup and randomly
//! mutated copies of the `tests/ui` cases, `syntax::parse` never panics, every diagnostic
//! span lies inside the text, and dumping and rendering the result never panics either.
//! Seeded, so a failure reproduces; the printed case index and text identify it.

use modelc::diag::{self, RenderOptions};
use modelc::source::{FileId, SourceMap, Span};
use modelc::syntax::{self, MAX_NESTING};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

const CASES_PER_KIND: usize = 1000;

/// Tokens of the language plus a few troublemakers.
const VOCAB: &[&str] = &[
    "use",
    "module",
    "model",
    "fn",
    "data",
    "train",
    "sweep",
    "of",
    "param",
    "buffer",
    "dim",
    "let",
    "if",
    "else",
    "for",
    "in",
    "true",
    "false",
    "and",
    "or",
    "not",
    "assert",
    "None",
    "help",
    "int",
    "float",
    "bool",
    "string",
    "list",
    "f32",
    "i32",
    "x",
    "_",
    "B",
    "d",
    "forward",
    "0",
    "1_000",
    "99999999999999999999999",
    "0.02",
    "3e-4",
    "1.5E+3",
    "2.",
    "\"s\"",
    "\"a\\nb\"",
    "\"bad\\q\"",
    "\"open",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    ":",
    ".",
    "..",
    "...",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "@",
    "**",
    "!",
    "&&",
    "||",
    "+=",
    "-=",
    "*=",
    "/=",
    "->",
    "//",
    "/*",
    "*/",
    "///",
    "\n",
    " ",
    "\t",
    "é",
    "\u{0}",
];

fn check(index: usize, kind: &str, text: &str) {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let (ast, diags) = syntax::parse(FileId(0), text);
        for d in &diags {
            for label in &d.labels {
                assert_span_inside(label.span, text, &d.message);
            }
        }
        for item in &ast.items {
            assert_span_inside(item.span(), text, "item");
        }
        let _ = syntax::dump(&ast, text);
        // Rendering goes through miette; a sample keeps the test fast.
        if index.is_multiple_of(8) {
            let mut sources = SourceMap::new();
            sources.add_text("fuzz.model", text);
            let _ = diag::render_all(&sources, &diags, RenderOptions::default());
        }
    }));
    assert!(result.is_ok(), "{kind} case {index} panicked on input {text:?}");
}

fn assert_span_inside(span: Span, text: &str, what: &str) {
    assert_eq!(span.file, FileId(0), "{what}: wrong file");
    assert!(
        span.start <= span.end && span.end as usize <= text.len(),
        "{what}: span {}..{} outside text of length {}",
        span.start,
        span.end,
        text.len()
    );
    assert!(
        text.is_char_boundary(span.start as usize) && text.is_char_boundary(span.end as usize),
        "{what}: span {}..{} splits a character",
        span.start,
        span.end
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for index in 0..CASES_PER_KIND {
        let len = rng.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        check(index, "random bytes", &String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn token_soup_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for index in 0..CASES_PER_KIND {
        let len = rng.random_range(0..80);
        let mut text = String::new();
        for _ in 0..len {
            text.push_str(VOCAB[rng.random_range(0..VOCAB.len())]);
            if rng.random_bool(0.5) {
                text.push(' ');
            }
        }
        check(index, "token soup", &text);
    }
}

#[test]
fn mutated_ui_cases_never_panic() {
    let mut corpus = Vec::new();
    collect_models(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui"), &mut corpus);
    assert!(corpus.len() >= 20, "expected the tests/ui corpus, found {} files", corpus.len());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for index in 0..CASES_PER_KIND {
        let mut text = corpus[rng.random_range(0..corpus.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            text = mutate(&mut rng, &text);
        }
        check(index, "mutated", &text);
    }
}

fn collect_models(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_models(&path, out);
        } else if path.extension().is_some_and(|e| e == "model")
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            out.push(text);
        }
    }
}

/// One random edit at character boundaries: delete, duplicate or insert a token.
fn mutate(rng: &mut ChaCha8Rng, text: &str) -> String {
    let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
    let a = boundaries[rng.random_range(0..boundaries.len())];
    let b = boundaries[rng.random_range(0..boundaries.len())];
    let (lo, hi) = (a.min(b), a.max(b).min(a.min(b) + 40));
    let hi = *boundaries.iter().find(|&&i| i >= hi).unwrap_or(&text.len());
    match rng.random_range(0..3) {
        0 => format!("{}{}", &text[..lo], &text[hi..]),
        1 => format!("{}{}{}", &text[..hi], &text[lo..hi], &text[hi..]),
        _ => format!("{}{}{}", &text[..lo], VOCAB[rng.random_range(0..VOCAB.len())], &text[lo..]),
    }
}

/// Runs `f` on a thread with a 2 MiB stack (the default for test threads), so the nesting
/// limits are checked against a realistic stack rather than the main thread's 8 MiB.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    let handle = std::thread::Builder::new().stack_size(2 << 20).spawn(f).expect("spawn test thread");
    assert!(handle.join().is_ok(), "parser panicked or overflowed its stack");
}

fn nested(open: &str, close: &str, depth: usize) -> String {
    format!("fn f(x) {}{}{}\n", open.repeat(depth), "x", close.repeat(depth))
}

#[test]
fn nesting_up_to_the_limit_parses_and_beyond_is_rejected() {
    on_small_stack(|| {
        // The function body's `{` is one level.
        for (open, close) in [("(", ")"), ("[", "]"), ("{", "}"), ("f(", ")"), ("x[", "]")] {
            let ok =
                format!("fn f(x) {{ {}x{} }}\n", open.repeat(MAX_NESTING - 1), close.repeat(MAX_NESTING - 1));
            let (ast, diags) = syntax::parse(FileId(0), &ok);
            assert!(diags.is_empty(), "{open}: {:?}", diags.first());
            assert_eq!(ast.items.len(), 1);
            let deep = nested(open, close, MAX_NESTING + 1);
            let (_, diags) = syntax::parse(FileId(0), &deep);
            assert_eq!(diags.len(), 1, "{open}");
            assert_eq!(diags[0].code, "E0006");
        }
    });
}

#[test]
fn long_operator_chains_do_not_overflow() {
    on_small_stack(|| {
        for text in [
            format!("fn f(x) {{ {}x }}", "-".repeat(100_000)),
            format!("fn f(x) {{ {}x }}", "not ".repeat(20_000)),
            format!("fn f(x) {{ x{} }}", " + x".repeat(20_000)),
            format!("fn f(x) {{ x{} }}", " ** x".repeat(20_000)),
            format!("fn f(x) {{ x{} }}", ".a".repeat(20_000)),
            format!("fn f(x) {{ x{} }}", "(1)".repeat(20_000)),
        ] {
            let (ast, diags) = syntax::parse(FileId(0), &text);
            assert_eq!(ast.items.len(), 1);
            assert!(diags.iter().all(|d| d.code == "E0006"), "{:?}", diags.first());
            let _ = syntax::dump(&ast, &text);
        }
    });
}
