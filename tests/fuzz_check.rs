//! Bounded property test of the whole front end: randomly mutated copies of the example
//! models and the ui cases go through `check_program` (parse, load, elaborate every model,
//! check train blocks) and never panic; every diagnostic renders. Seeded, so a failure
//! reproduces from the printed case.

use modelc::diag::{RenderOptions, render_all};
use modelc::elab::{ElabOptions, Program, check_program};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const CASES: usize = 600;

const NUMBERS: &[&str] = &["0", "-1", "1", "3", "7", "64", "4096", "99999999999", "1e30", "0.5", "-0.0"];
const SNIPPETS: &[&str] = &[
    "x",
    "d",
    "B",
    "T",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "+",
    "*",
    "@",
    "/",
    "%",
    "..",
    "...",
    "None",
    "true",
    "if",
    "for",
    "let",
    "fn",
    "param",
    "[d; 3]",
    "x.reshape(-1)",
    "self",
    "forward",
    "sum(x)",
    "x[0]",
    "i32",
    "f32",
    "-",
    "\"s\"",
    "Linear(2, 3)",
];

fn corpus() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["models", "tests/ui/check", "tests/ui/ir"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "model") {
                let text = std::fs::read_to_string(&p).expect("readable");
                files.push((p, text));
            }
        }
    }
    files.sort();
    files
}

fn mutate(text: &str, rng: &mut ChaCha8Rng) -> String {
    let mut s = text.to_string();
    for _ in 0..rng.random_range(1..4) {
        if s.is_empty() {
            break;
        }
        let mut at = rng.random_range(0..s.len());
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        match rng.random_range(0..6) {
            0 => {
                let mut end = (at + rng.random_range(1..12)).min(s.len());
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.replace_range(at..end, "");
            }
            1 => s.insert_str(at, SNIPPETS[rng.random_range(0..SNIPPETS.len())]),
            2 => {
                // Replace the next number with another one.
                if let Some(off) = s[at..].find(|c: char| c.is_ascii_digit()) {
                    let start = at + off;
                    let len = s[start..].find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len() - start);
                    s.replace_range(start..start + len, NUMBERS[rng.random_range(0..NUMBERS.len())]);
                }
            }
            3 => {
                // Duplicate a line.
                let lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = rng.random_range(0..lines.len());
                    let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                    v.insert(i, lines[i].to_string());
                    s = v.join("\n");
                }
            }
            4 => {
                // Swap two identifiers' positions by replacing one word with another from the text.
                let words: Vec<&str> =
                    s.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| !w.is_empty()).collect();
                if words.len() > 2 {
                    let a = words[rng.random_range(0..words.len())].to_string();
                    let b = words[rng.random_range(0..words.len())].to_string();
                    s = s.replacen(&a, &b, 1);
                }
            }
            _ => {
                let lines: Vec<&str> = s.lines().collect();
                if lines.len() > 2 {
                    let i = rng.random_range(0..lines.len());
                    let j = rng.random_range(0..lines.len());
                    let mut v: Vec<&str> = lines.clone();
                    v.swap(i, j);
                    s = v.join("\n");
                }
            }
        }
    }
    s
}

#[test]
fn check_never_panics_on_mutated_models() {
    let corpus = corpus();
    assert!(corpus.len() > 20, "corpus too small: {}", corpus.len());
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_c0de);
    let opts = ElabOptions::default();
    for case in 0..CASES {
        let (path, text) = &corpus[rng.random_range(0..corpus.len())];
        let mutated = mutate(text, &mut rng);
        let dir = path.parent().expect("has a parent");
        if std::env::var_os("MODELC_FUZZ_VERBOSE").is_some() {
            eprintln!("case {case} from {}:\n{mutated}\n----", path.display());
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            let prog = Program::from_source("case.model", &mutated, Some(dir));
            let diags = check_program(&prog, &opts);
            // Rendering must not panic either (spans inside their files).
            let _ = render_all(&prog.sources, &diags, RenderOptions::default());
        }));
        if result.is_err() {
            panic!("case {case} (from {}) panicked; input:\n{mutated}", path.display());
        }
    }
}
