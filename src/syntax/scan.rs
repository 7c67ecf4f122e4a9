//! The lexical pre-scan run before pest: finds unterminated strings and block comments,
//! unbalanced delimiters and nesting deeper than [`MAX_NESTING`]. pest would report these late
//! and vaguely (or, for deep nesting, recurse too far); here they get precise spans. Also
//! splits a file into top-level item chunks for error recovery.

use super::MAX_NESTING;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use std::ops::Range;

/// Scans `chunk` (which starts at byte `base` of its file) and returns its lexical errors: at
/// most one delimiter error, since later ones are usually consequences of the first.
pub fn scan(file: FileId, chunk: &str, base: usize) -> Vec<Diagnostic> {
    let bytes = chunk.as_bytes();
    let span = |start: usize, end: usize| Span::new(file, base + start, base + end);
    let mut diags = Vec::new();
    // Open delimiters: (byte, offset).
    let mut open: Vec<(u8, usize)> = Vec::new();
    let mut delimiters_ok = true;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => match find(bytes, i + 2, b"*/") {
                Some(end) => i = end + 2,
                None => {
                    diags.push(
                        Diagnostic::error("E0004", "unterminated block comment")
                            .at(span(i, i + 2), "this comment is never closed")
                            .with_help("close the comment with `*/`"),
                    );
                    return diags;
                }
            },
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        Some(b'"') => break,
                        Some(b'\\') if bytes.get(i + 1).is_some_and(|&b| b != b'\n') => i += 2,
                        Some(b'\n') | None => {
                            let line_end = if i > start + 1 && bytes[i - 1] == b'\r' { i - 1 } else { i };
                            diags.push(
                                Diagnostic::error("E0004", "unterminated string literal")
                                    .at(span(start, line_end), "this string is not closed on its line")
                                    .with_help("add the closing `\"`; strings cannot span lines"),
                            );
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            opener @ (b'(' | b'[' | b'{') if delimiters_ok => {
                open.push((opener, i));
                if open.len() > MAX_NESTING {
                    diags.push(
                        Diagnostic::error(
                            "E0006",
                            format!("brackets nested more than {MAX_NESTING} levels deep"),
                        )
                        .at(span(i, i + 1), format!("nesting level {} starts here", open.len()))
                        .with_help("split the expression using `let` bindings or helper functions"),
                    );
                    return diags;
                }
            }
            closer @ (b')' | b']' | b'}') if delimiters_ok => match open.pop() {
                Some((opener, _)) if matching(opener) == closer => {}
                Some((opener, at)) => {
                    delimiters_ok = false;
                    diags.push(
                        Diagnostic::error(
                            "E0002",
                            format!(
                                "mismatched closing delimiter: expected `{}`, found `{}`",
                                matching(opener) as char,
                                closer as char
                            ),
                        )
                        .at(span(i, i + 1), "does not match the opening delimiter")
                        .with_label(span(at, at + 1), "opened here")
                        .with_help(format!(
                            "close the `{}` with `{}` before this point",
                            opener as char,
                            matching(opener) as char
                        )),
                    );
                }
                None => {
                    delimiters_ok = false;
                    diags.push(
                        Diagnostic::error(
                            "E0001",
                            format!("unexpected closing delimiter `{}`", closer as char),
                        )
                        .at(span(i, i + 1), "nothing is open here")
                        .with_help("remove it, or add the missing opening delimiter before it"),
                    );
                }
            },
            _ => {}
        }
        i += 1;
    }
    if delimiters_ok && let Some(&(opener, at)) = open.last() {
        let end = chunk.trim_end().len();
        diags.push(
            Diagnostic::error("E0002", format!("unclosed delimiter `{}`", opener as char))
                .at(span(end, end), format!("expected `{}` here", matching(opener) as char))
                .with_label(span(at, at + 1), "opened here")
                .with_help(format!("add the missing `{}`", matching(opener) as char)),
        );
    }
    diags
}

fn matching(opener: u8) -> u8 {
    match opener {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// Words that start a top-level item.
const ITEM_KEYWORDS: [&str; 7] = ["use", "module", "model", "fn", "data", "train", "sweep"];

/// Splits a file into chunks, each starting at a line that begins (in column 0) with an item
/// keyword or a `///` doc comment (a run of doc lines and the item after it stay together).
/// The chunks cover the whole text; the first may hold only comments.
pub fn item_chunks(text: &str) -> Vec<Range<usize>> {
    let mut starts = vec![0];
    let mut offset = 0;
    let mut previous_was_doc = false;
    for line in text.split_inclusive('\n') {
        let is_doc = line.starts_with("///");
        let starts_item = ITEM_KEYWORDS.iter().any(|kw| {
            line.strip_prefix(kw)
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        });
        if (is_doc || starts_item) && !previous_was_doc && offset > 0 {
            starts.push(offset);
        }
        previous_was_doc = is_doc;
        offset += line.len();
    }
    let mut chunks: Vec<Range<usize>> = starts.windows(2).map(|w| w[0]..w[1]).collect();
    if let Some(&last) = starts.last() {
        chunks.push(last..text.len());
    }
    chunks
}
