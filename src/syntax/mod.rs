//! The front end: pest grammar (`grammar/model.pest`) → [`ast`]. Parsing never panics and
//! returns every error it can find: a lexical pre-scan ([`scan`]) catches unclosed delimiters,
//! unterminated strings and excessive nesting before pest runs, and when the whole file fails
//! to parse, each top-level item is parsed on its own so independent errors are all reported.

pub mod ast;
mod build;
mod dump;
mod errors;
mod recover;
mod scan;

pub use dump::dump;

use crate::diag::Diagnostic;
use crate::source::FileId;
use pest::Parser;
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "../grammar/model.pest"]
struct ModelParser;

/// Bracket nesting deeper than this is rejected before pest runs (E0006): pest parses
/// recursively, and a deeper input could exhaust the stack.
pub const MAX_NESTING: usize = 200;

/// Stack size of the parsing thread. pest and the AST builder recurse once per nesting level;
/// 200 levels need about 4 MiB in a debug build (measured), more than a test thread's 2 MiB.
/// The stack is only reserved address space until touched, so a wide margin is cheap.
const PARSE_STACK_BYTES: usize = 64 << 20;

/// Parses one file. Returns the items that parsed (all of them when there are no errors) and
/// every diagnostic found. Runs on a thread of its own with a known stack size, so the result
/// does not depend on the caller's stack.
pub fn parse(file: FileId, text: &str) -> (ast::File, Vec<Diagnostic>) {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("modelc-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, || parse_here(file, text));
        match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread available (resource limits): parse on the caller's stack; pest's own
            // stack guard still turns an overflow into an error.
            Err(_) => parse_here(file, text),
        }
    })
}

fn parse_here(file: FileId, text: &str) -> (ast::File, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let whole = scan::scan(file, text, 0);
    if whole.diags.is_empty() {
        // Fast path: without pest's detailed attempt tracking (about twice as fast). A file
        // that fails is parsed again below with the tracking on, so messages do not change.
        let parsed = detail::with(false, || ModelParser::parse(Rule::file, text));
        if let Ok(pairs) = parsed {
            let mut builder = build::Builder::new(file, text, 0);
            let items = builder.file(pairs);
            diags.extend(builder.into_diagnostics());
            return (ast::File { file, items }, diags);
        }
    }
    // Detailed attempts give the literal tokens expected at an error.
    detail::with(true, || parse_with_errors(file, text, whole, diags))
}

/// The slow path of [`parse_here`], for a file that does not parse (or fails the pre-scan):
/// every parse in here runs with pest's detailed error tracking on.
fn parse_with_errors(
    file: FileId,
    text: &str,
    whole: scan::Scan,
    mut diags: Vec<Diagnostic>,
) -> (ast::File, Vec<Diagnostic>) {
    if whole.diags.is_empty()
        && let Some(items) = parse_chunk(file, text, text, 0, false, &mut diags)
    {
        return (ast::File { file, items }, diags);
    }
    let whole_file_diags = if whole.diags.is_empty() { std::mem::take(&mut diags) } else { whole.diags };
    // Recovery: parse each top-level item on its own, so that an error in one item does not
    // hide errors in the others and the good items are still returned.
    let mut items = Vec::new();
    for range in scan::item_chunks(text, &whole.block_comments) {
        let mut chunk = &text[range.clone()];
        let lexical = scan::scan(file, chunk, range.start);
        if lexical.only_unterminated_comment
            && let Some(at) = lexical.unterminated_comment
        {
            // The text before the comment may still hold good items.
            chunk = &chunk[..at];
        } else if !lexical.diags.is_empty() {
            diags.extend(lexical.diags);
            continue;
        }
        diags.extend(lexical.diags);
        if let Some(chunk_items) = parse_chunk(file, text, chunk, range.start, true, &mut diags) {
            items.extend(chunk_items);
        }
    }
    if !diags.iter().any(Diagnostic::is_error) {
        // Every chunk parsed on its own although the whole file did not (a chunk boundary cut
        // a construct in two): report what the whole-file parse found.
        diags.extend(whole_file_diags);
    }
    (ast::File { file, items }, diags)
}

/// pest's error-detail switch ([`pest::set_error_detail`]) is process-wide and read when a
/// parse starts. Parses run with it off unless they need the details; this lock lets any number
/// of parses in the same mode run at once and makes a parse in the other mode wait until they
/// have finished, so a parse on another thread never sees the switch flip under it (which would
/// make its error messages nondeterministic).
mod detail {
    use std::sync::{Condvar, Mutex, PoisonError};

    /// The mode the switch is in and how many parses are running in it.
    static MODE: Mutex<(bool, usize)> = Mutex::new((false, 0));
    static IDLE: Condvar = Condvar::new();

    struct Held;

    impl Drop for Held {
        fn drop(&mut self) {
            let mut mode = MODE.lock().unwrap_or_else(PoisonError::into_inner);
            mode.1 -= 1;
            if mode.1 == 0 {
                IDLE.notify_all();
            }
        }
    }

    /// Runs `f` with pest's error detail set to `enabled`. Not reentrant with the other mode.
    pub fn with<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
        let held = {
            let mut mode = MODE.lock().unwrap_or_else(PoisonError::into_inner);
            while mode.1 > 0 && mode.0 != enabled {
                mode = IDLE.wait(mode).unwrap_or_else(PoisonError::into_inner);
            }
            if mode.1 == 0 {
                mode.0 = enabled;
                pest::set_error_detail(enabled);
            }
            mode.1 += 1;
            Held
        };
        let result = f();
        drop(held);
        result
    }
}

/// Parses `chunk`, which starts at byte `base` of `text`. Returns `None` (with diagnostics)
/// when pest rejects the chunk, after looking for `later_errors` in the rest of the item's body;
/// AST-level problems (bad literals, reserved names) are reported without dropping the items.
fn parse_chunk(
    file: FileId,
    text: &str,
    chunk: &str,
    base: usize,
    later_errors: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<ast::Item>> {
    match ModelParser::parse(Rule::file, chunk) {
        Ok(pairs) => {
            let mut builder = build::Builder::new(file, text, base);
            let items = builder.file(pairs);
            diags.extend(builder.into_diagnostics());
            Some(items)
        }
        Err(err) => {
            let first = errors::from_pest(file, chunk, base, &err, errors::End::OfInput);
            let first_pos = first.primary_span().map_or(0, |s| s.start as usize - base);
            diags.push(first);
            if later_errors {
                report_later_errors(file, chunk, base, first_pos, diags);
            }
            None
        }
    }
}

/// At most this many further errors are reported per item, after the first.
const MAX_LATER_ERRORS_PER_ITEM: usize = 10;

/// After the first error in the item in `chunk` (at offset `first_pos`), looks for more
/// errors in the rest of its body; see [`recover`].
fn report_later_errors(
    file: FileId,
    chunk: &str,
    base: usize,
    first_pos: usize,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(body) = recover::item_body(chunk) else { return };
    let mut after = first_pos;
    for _ in 0..MAX_LATER_ERRORS_PER_ITEM {
        let Some(&start) = body.resume_points.iter().find(|&&p| p > after) else { return };
        let fragment = &chunk[start..body.range.end];
        let Err(err) = ModelParser::parse(body.kind.rule(), fragment) else { return };
        let diag = errors::from_pest(file, fragment, base + start, &err, errors::End::OfBody);
        // Each error moves on to a later resume point, so the loop always progresses.
        after = diag.primary_span().map_or(start, |s| (s.start as usize - base).max(start));
        diags.push(diag);
    }
}

#[cfg(test)]
mod tests {
    use super::ast::*;
    use super::*;

    fn parse_ok(text: &str) -> File {
        let (file, diags) = parse(FileId(0), text);
        assert!(diags.is_empty(), "unexpected diagnostics: {diags:?}");
        file
    }

    fn snippet(text: &str, span: crate::source::Span) -> &str {
        &text[span.start as usize..span.end as usize]
    }

    fn only_fn(file: &File) -> &FnDecl {
        match file.items.as_slice() {
            [Item::Fn(f)] => f,
            other => panic!("expected one fn, got {other:?}"),
        }
    }

    #[test]
    fn spans_cover_exactly_their_source_text() {
        let text = "fn f(x) {\n    let y = (x + 1) * g(x).h;\n    y += 2;\n    y\n}\n";
        let file = parse_ok(text);
        let f = only_fn(&file);
        assert_eq!(snippet(text, f.span), text.trim_end());
        assert_eq!(snippet(text, f.params[0].span), "x");
        let Stmt::Let { value, span, .. } = &f.body.stmts[0] else { panic!("{:?}", f.body.stmts[0]) };
        assert_eq!(snippet(text, *span), "let y = (x + 1) * g(x).h");
        assert_eq!(snippet(text, value.span), "(x + 1) * g(x).h");
        let ExprKind::Binary { lhs, rhs, .. } = &value.kind else { panic!("{value:?}") };
        assert_eq!(snippet(text, lhs.span), "(x + 1)");
        assert_eq!(snippet(text, rhs.span), "g(x).h");
        let Stmt::Assign { name, value, span } = &f.body.stmts[1] else { panic!("{:?}", f.body.stmts[1]) };
        assert_eq!(snippet(text, *span), "y += 2");
        assert_eq!(snippet(text, name.span), "y");
        assert_eq!(snippet(text, value.span), "y += 2");
        let tail = f.body.tail.as_ref().expect("tail");
        assert_eq!(snippet(text, tail.span), "y");
    }

    #[test]
    fn member_spans_exclude_trailing_whitespace_and_comments() {
        let text =
            "module M {\n    up = f(a)   // comment\n    /* block */\n    param w: [d] = g(\"//\")  \n}\n";
        let file = parse_ok(text);
        let Item::Module(m) = &file.items[0] else { panic!() };
        let spans: Vec<&str> = m
            .members
            .iter()
            .map(|member| match member {
                Member::Field { span, .. } | Member::Param { span, .. } => snippet(text, *span),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(spans, ["up = f(a)", "param w: [d] = g(\"//\")"]);
    }

    #[test]
    fn entry_and_use_spans_exclude_separators() {
        let text = "use nn;\ndata d { batch: 32, seed: 0; source s: text(\"a\") }\n";
        let file = parse_ok(text);
        assert_eq!(snippet(text, file.items[0].span()), "use nn");
        let Item::Data(d) = &file.items[1] else { panic!() };
        let entries: Vec<&str> = d.entries.iter().map(|e| snippet(text, e.span)).collect();
        assert_eq!(entries, ["batch: 32", "seed: 0", "source s: text(\"a\")"]);
        assert_eq!(d.entries[2].label.as_ref().map(|l| l.name.as_str()), Some("s"));
    }

    #[test]
    fn crlf_line_endings_and_doc_comments() {
        let text = "/// Doc line.\r\nmodel M {\r\n    n = 1\r\n}\r\n";
        let file = parse_ok(text);
        let Item::Module(m) = &file.items[0] else { panic!() };
        assert_eq!(m.kind, ModuleKind::Model);
        assert_eq!(m.doc.as_deref(), Some("Doc line."));
    }

    #[test]
    fn recovery_keeps_good_items_and_reports_each_bad_one() {
        let text = "model A { n = }\nmodel B { n = 1 }\nfn c(x) { x + }\nfn d() { 0 }\n";
        let (file, diags) = parse(FileId(0), text);
        let names: Vec<&str> = file.items.iter().filter_map(|i| i.name()).map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["B", "d"]);
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(diags.iter().all(|d| d.code == "E0001"));
        // Spans are file offsets, not chunk offsets.
        let second = diags[1].primary_span().expect("span");
        assert_eq!(&text[second.start as usize..second.end as usize], "}");
        assert!(second.start as usize > text.find("fn c").unwrap_or(0));
    }

    #[test]
    fn call_and_index_need_no_space_but_field_may_follow_a_newline() {
        let file = parse_ok("fn f(x) {\n    let a = g\n    (x)\n    x\n        .sum()\n}\n");
        let f = only_fn(&file);
        assert_eq!(f.body.stmts.len(), 2, "{:?}", f.body.stmts);
        let tail = f.body.tail.as_ref().expect("tail");
        assert!(
            matches!(&tail.kind, ExprKind::Call { callee, .. } if matches!(callee.kind, ExprKind::Field { .. }))
        );
    }

    #[test]
    fn every_syntax_error_code_is_documented() {
        let docs = include_str!("../../docs/errors.md");
        assert!(docs.contains("## Syntax (E00xx)"));
        for code in ["E0001", "E0002", "E0003", "E0004", "E0005", "E0006", "E0007", "E0008", "E0009"] {
            assert!(docs.contains(&format!("### {code}:")), "{code} is not explained in docs/errors.md");
        }
    }
}
