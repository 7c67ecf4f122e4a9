//! The front end: pest grammar (`grammar/model.pest`) → [`ast`]. Parsing never panics and
//! returns every error it can find: a lexical pre-scan ([`scan`]) catches unclosed delimiters,
//! unterminated strings and excessive nesting before pest runs, and when the whole file fails
//! to parse, each top-level item is parsed on its own so independent errors are all reported.

pub mod ast;
mod build;
mod dump;
mod errors;
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
    // Detailed attempts give the literal tokens expected at an error. The setting is
    // process-wide, so it is only ever switched on: switching it off for speed would race with
    // parses on other threads and make their messages nondeterministic.
    pest::set_error_detail(true);
    if whole.diags.is_empty()
        && let Some(items) = parse_chunk(file, text, text, 0, &mut diags)
    {
        return (ast::File { file, items }, diags);
    }
    // Recovery: parse each top-level item on its own, so that an error in one item does not
    // hide errors in the others and the good items are still returned.
    diags.clear();
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
        if let Some(chunk_items) = parse_chunk(file, text, chunk, range.start, &mut diags) {
            items.extend(chunk_items);
        }
    }
    (ast::File { file, items }, diags)
}

/// Parses `chunk`, which starts at byte `base` of `text`. Returns `None` (with a diagnostic)
/// when pest rejects the chunk; AST-level problems (bad literals, reserved names) are reported
/// without dropping the items.
fn parse_chunk(
    file: FileId,
    text: &str,
    chunk: &str,
    base: usize,
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
            diags.push(errors::from_pest(file, chunk, base, &err));
            None
        }
    }
}
