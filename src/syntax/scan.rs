//! The lexical pre-scan run before pest: finds unterminated strings and block comments,
//! unbalanced delimiters and nesting deeper than [`MAX_NESTING`]. pest would report these late
//! and vaguely (or, for deep nesting, recurse too far); here they get precise spans. Also
//! splits a file into top-level item chunks for error recovery.

use super::MAX_NESTING;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use std::ops::Range;

/// What the pre-scan found in one chunk of text.
#[derive(Default)]
pub struct Scan {
    /// Lexical errors: at most one delimiter error, since later ones are usually consequences
    /// of the first, and none when a string is unterminated (its quote hides delimiters).
    pub diags: Vec<Diagnostic>,
    /// Byte ranges (in the chunk) of block comments; an unterminated one runs to the end.
    pub block_comments: Vec<Range<usize>>,
    /// Where an unterminated block comment starts: the text before it can still be parsed.
    pub unterminated_comment: Option<usize>,
    /// Whether the only errors are an unterminated block comment (E0004).
    pub only_unterminated_comment: bool,
}

/// Scans `chunk`, which starts at byte `base` of its file.
pub fn scan(file: FileId, chunk: &str, base: usize) -> Scan {
    let bytes = chunk.as_bytes();
    let span = |start: usize, end: usize| Span::new(file, base + start, base + end);
    let mut result = Scan::default();
    let mut diags = Vec::new();
    let mut delimiter_diag = None;
    let mut string_error = false;
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
                Some(end) => {
                    result.block_comments.push(i..end + 2);
                    // Continue after the `*/` (the loop's `i += 1` skips the `/`).
                    i = end + 1;
                }
                None => {
                    result.block_comments.push(i..bytes.len());
                    result.unterminated_comment = Some(i);
                    diags.push(
                        Diagnostic::error("E0004", "unterminated block comment")
                            .at(span(i, i + 2), "this comment is never closed")
                            .with_help("close the comment with `*/`; everything after `/*` is part of it"),
                    );
                    break;
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
                            string_error = true;
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
                    result.diags.push(
                        Diagnostic::error(
                            "E0006",
                            format!("brackets nested more than {MAX_NESTING} levels deep"),
                        )
                        .at(span(i, i + 1), format!("nesting level {} starts here", open.len()))
                        .with_help("split the expression using `let` bindings or helper functions"),
                    );
                    return result;
                }
            }
            closer @ (b')' | b']' | b'}') if delimiters_ok => match open.pop() {
                Some((opener, _)) if matching(opener) == closer => {}
                Some((opener, at)) => {
                    delimiters_ok = false;
                    let expected = matching(opener) as char;
                    let closer = closer as char;
                    // If an outer delimiter matches, the inner one was left open (`f(x }`);
                    // otherwise the closer itself is wrong (`f(x]`).
                    let closes_outer = open.iter().any(|&(o, _)| matching(o) == closer as u8);
                    delimiter_diag = Some(if closes_outer {
                        Diagnostic::error("E0002", format!("unclosed delimiter `{}`", opener as char))
                            .at(span(i, i + 1), format!("expected `{expected}` before this `{closer}`"))
                            .with_label(span(at, at + 1), "opened here")
                            .with_help(format!("add the missing `{expected}`"))
                    } else {
                        Diagnostic::error(
                            "E0002",
                            format!("mismatched closing delimiter: expected `{expected}`, found `{closer}`"),
                        )
                        .at(span(i, i + 1), "does not match the opening delimiter")
                        .with_label(span(at, at + 1), "opened here")
                        .with_help(format!("replace it with `{expected}`, or remove it if it is extra"))
                    });
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
    if delimiters_ok
        && result.unterminated_comment.is_none()
        && let Some(&(opener, at)) = open.last()
    {
        let end = chunk.trim_end().len();
        delimiter_diag = Some(
            Diagnostic::error("E0002", format!("unclosed delimiter `{}`", opener as char))
                .at(span(end, end), format!("expected `{}` here", matching(opener) as char))
                .with_label(span(at, at + 1), "opened here")
                .with_help(format!("add the missing `{}`", matching(opener) as char)),
        );
    }
    if !string_error {
        diags.extend(delimiter_diag);
    }
    result.only_unterminated_comment = result.unterminated_comment.is_some() && diags.len() == 1;
    result.diags = diags;
    result
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
/// The chunks cover the whole text; the first may hold only comments. Lines inside the
/// `block_comments` ranges never start a chunk.
pub fn item_chunks(text: &str, block_comments: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut starts = vec![0];
    let mut offset = 0;
    let mut previous_was_doc = false;
    for line in text.split_inclusive('\n') {
        let is_doc = line.starts_with("///");
        let starts_item = ITEM_KEYWORDS.iter().any(|kw| {
            line.strip_prefix(kw)
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        });
        let in_comment = block_comments.iter().any(|c| c.start < offset && offset < c.end);
        if (is_doc || starts_item) && !previous_was_doc && offset > 0 && !in_comment {
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
