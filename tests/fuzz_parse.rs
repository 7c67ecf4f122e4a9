//! Bounded property tests of the parser: on random bytes, random token soup and randomly
//! mutated copies of the project's `.model` files (tests/ui, stdlib, models), `syntax::parse`
//! never panics, every diagnostic span lies inside the text, and dumping and rendering the
//! result never panics either. Seeded, so a failure reproduces; the printed case index and
//! text identify it. Also checks that the shipped stdlib and example models parse cleanly.

use modelc::diag::{self, RenderOptions};
use modelc::source::{FileId, SourceMap, Span};
use modelc::syntax::{self, MAX_NESTING};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Cases per generator; `MODELC_FUZZ_CASES=50000 cargo test --test fuzz_parse` runs a longer
/// search (the seeds stay fixed, so a larger count extends the same sequence).
fn cases_per_kind() -> usize {
    std::env::var("MODELC_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000)
}

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
            let span = item.span();
            assert_span_inside(span, text, "item");
            let source = &text[span.start as usize..span.end as usize];
            assert!(!source.ends_with(char::is_whitespace), "item span ends in whitespace: {source:?}");
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
    for index in 0..cases_per_kind() {
        let len = rng.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
        check(index, "random bytes", &String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn token_soup_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for index in 0..cases_per_kind() {
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

/// The `.model` files of the project: test cases, the standard library and the examples.
fn corpus() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut corpus = Vec::new();
    for dir in ["tests/ui", "stdlib", "models"] {
        collect_models(&root.join(dir), &mut corpus);
    }
    corpus
}

#[test]
fn shipped_model_files_parse_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut shipped = Vec::new();
    collect_models(&root.join("stdlib"), &mut shipped);
    collect_models(&root.join("models"), &mut shipped);
    for (path, text) in &shipped {
        let (ast, diags) = syntax::parse(FileId(0), text);
        assert!(diags.is_empty(), "{path}: {:?}", diags.first());
        assert!(!ast.items.is_empty(), "{path}: no items");
    }
}

#[test]
fn mutated_model_files_never_panic() {
    let corpus: Vec<String> = corpus().into_iter().map(|(_, text)| text).collect();
    assert!(corpus.len() >= 20, "expected the tests/ui corpus, found {} files", corpus.len());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for index in 0..cases_per_kind() {
        let seed = &corpus[rng.random_range(0..corpus.len())];
        let mut text = window(&mut rng, seed);
        for _ in 0..rng.random_range(1..4) {
            text = mutate(&mut rng, &text);
        }
        check(index, "mutated", &text);
    }
}

fn collect_models(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_models(&path, out);
        } else if path.extension().is_some_and(|e| e == "model")
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            out.push((path.display().to_string(), text));
        }
    }
}

/// Large files (the standard library) are cut to a random window of whole lines, which keeps
/// the test fast and is one more kind of mutation.
fn window(rng: &mut ChaCha8Rng, text: &str) -> String {
    const MAX_BYTES: usize = 4000;
    if text.len() <= MAX_BYTES {
        return text.to_string();
    }
    let line_starts: Vec<usize> =
        std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    let start = line_starts[rng.random_range(0..line_starts.len())];
    let end = line_starts
        .iter()
        .copied()
        .filter(|&i| i > start && i - start <= MAX_BYTES)
        .max()
        .unwrap_or(text.len());
    text[start..end.max(start)].to_string()
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
            // Without the depth limit, trees this deep overflow a 2 MiB stack when dumped or
            // dropped.
            format!("fn f(x) {{ {}x }}", "-".repeat(30_000)),
            format!("fn f(x) {{ {}x }}", "not ".repeat(10_000)),
            format!("fn f(x) {{ x{} }}", " + x".repeat(10_000)),
            format!("fn f(x) {{ x{} }}", " ** x".repeat(10_000)),
            format!("fn f(x) {{ x{} }}", ".a".repeat(10_000)),
            format!("fn f(x) {{ x{} }}", "(1)".repeat(10_000)),
        ] {
            let (ast, diags) = syntax::parse(FileId(0), &text);
            assert_eq!(ast.items.len(), 1);
            assert!(diags.iter().all(|d| d.code == "E0006"), "{:?}", diags.first());
            let _ = syntax::dump(&ast, &text);
        }
    });
}
