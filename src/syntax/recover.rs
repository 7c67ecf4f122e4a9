//! Finding more than one error per item. After the first error in an item, the rest of its
//! body is parsed again from the next line that clearly starts a member (in a module), a
//! statement (in a function body) or an entry (in a `data`/`train`/`sweep` block). These
//! fragments are parsed only to report their errors: the broken item itself is dropped.
//!
//! Only lines directly inside the item's outer braces (not nested deeper, not inside a comment
//! or string) that look like the start of such a construct are used, so a continuation line of
//! a multi-line expression does not produce a spurious error.

use super::Rule;
use std::ops::Range;

/// What the body of an item holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Members,
    Statements,
    Entries,
}

impl BodyKind {
    /// The grammar rule that parses a tail of such a body.
    pub fn rule(self) -> Rule {
        match self {
            BodyKind::Members => Rule::member_list,
            BodyKind::Statements => Rule::stmt_list,
            BodyKind::Entries => Rule::entry_list,
        }
    }
}

/// One item's body: what it holds, the byte range between its outer braces, and the offsets of
/// the lines in it where parsing can resume.
pub struct Body {
    pub kind: BodyKind,
    pub range: Range<usize>,
    pub resume_points: Vec<usize>,
}

/// Finds the body of the item in `chunk` (which starts with the item, possibly after comments).
pub fn item_body(chunk: &str) -> Option<Body> {
    let kind = match first_word(chunk)? {
        "module" | "model" => BodyKind::Members,
        "fn" => BodyKind::Statements,
        "data" | "train" | "sweep" => BodyKind::Entries,
        _ => return None,
    };
    let b = chunk.as_bytes();
    let mut depth = 0usize;
    let mut body_start = None;
    let mut line_starts_at_depth_one = Vec::new();
    let mut at_line_start = true;
    let mut i = 0;
    while i < b.len() {
        if at_line_start && depth == 1 && body_start.is_some() {
            line_starts_at_depth_one.push(i);
        }
        at_line_start = false;
        match b[i] {
            b'\n' => at_line_start = true,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i + 1 < b.len() && b[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' => depth += 1,
            b'{' => {
                if depth == 0 && body_start.is_none() {
                    body_start = Some(i + 1);
                }
                depth += 1;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0
                    && b[i] == b'}'
                    && let Some(start) = body_start
                {
                    let range = start..i;
                    let resume_points = line_starts_at_depth_one
                        .into_iter()
                        .filter(|&p| p < i && starts_construct(kind, &chunk[p..i]))
                        .collect();
                    return Some(Body { kind, range, resume_points });
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The first word of `chunk` after whitespace and comments.
fn first_word(chunk: &str) -> Option<&str> {
    let mut rest = chunk;
    loop {
        rest = rest.trim_start();
        if rest.starts_with("//") {
            rest = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    if end == 0 { None } else { Some(&rest[..end]) }
}

/// Whether `line` (the rest of the body from a line start) clearly starts a construct of `kind`.
fn starts_construct(kind: BodyKind, line: &str) -> bool {
    let line = line.trim_start_matches([' ', '\t']);
    let word_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(line.len());
    let (word, after) = line.split_at(word_end);
    if word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let after_spaces = after.trim_start_matches([' ', '\t']);
    let keyword = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let assigns = |ops: &[&str]| {
        ops.iter().any(|op| after_spaces.starts_with(op) && !after_spaces[op.len()..].starts_with('='))
    };
    match kind {
        BodyKind::Members => {
            (keyword && matches!(word, "let" | "param" | "buffer" | "dim" | "fn" | "if" | "assert"))
                || assigns(&["="])
        }
        BodyKind::Statements => {
            (keyword && matches!(word, "let" | "assert" | "for" | "if"))
                || assigns(&["=", "+=", "-=", "*=", "/="])
        }
        BodyKind::Entries => {
            // `key:`, `key label:` or `a.b.c:`.
            let mut rest = after_spaces;
            while let Some(after_dot) = rest.strip_prefix('.') {
                let end = after_dot
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after_dot.len());
                rest = after_dot[end..].trim_start_matches([' ', '\t']);
            }
            if !rest.starts_with(':') {
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                rest = rest[end..].trim_start_matches([' ', '\t']);
            }
            rest.starts_with(':') && !rest.starts_with("::")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume_lines(chunk: &str) -> (BodyKind, Vec<&str>) {
        let body = item_body(chunk).expect("an item with a body");
        let lines =
            body.resume_points.iter().map(|&p| chunk[p..].lines().next().unwrap_or("").trim()).collect();
        (body.kind, lines)
    }

    #[test]
    fn module_members_resume_at_member_starts_only() {
        let chunk = "/// doc\nmodule M(d: int) {\n    up = f(\n        x = 1)\n    let h = 4 *\n        d\n    // c = 3\n    /* e = 4\n    g = 5 */\n    param w: [d]\n    a == b\n    fn forward(x) {\n        y = x\n    }\n}\n";
        let (kind, lines) = resume_lines(chunk);
        assert_eq!(kind, BodyKind::Members);
        assert_eq!(lines, ["up = f(", "let h = 4 *", "param w: [d]", "fn forward(x) {"]);
    }

    #[test]
    fn statements_and_entries() {
        let (kind, lines) =
            resume_lines("fn f(x = {1}) {\n    let a = x\n    a += 1\n    g(a)\n    for i in xs { }\n}\n");
        assert_eq!(kind, BodyKind::Statements);
        assert_eq!(lines, ["let a = x", "a += 1", "for i in xs { }"]);
        let (kind, lines) = resume_lines(
            "data d {\n    batch: 32\n    source s: text(\"a\")\n    opt.lr: 1\n    x[::2]\n}\n",
        );
        assert_eq!(kind, BodyKind::Entries);
        assert_eq!(lines, ["batch: 32", "source s: text(\"a\")", "opt.lr: 1"]);
        assert!(item_body("use nn\n").is_none());
    }
}
