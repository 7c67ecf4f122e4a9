//! Turns a pest parse error into a [`Diagnostic`] (E0001) that says, in words, what was
//! expected and what was found; pest's rule names never reach the user.

use super::Rule;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use pest::error::{Error, ErrorVariant, InputLocation};

/// Converts pest's error for `chunk` (starting at byte `base` of the file).
pub fn from_pest(file: FileId, chunk: &str, base: usize, err: &Error<Rule>) -> Diagnostic {
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    }
    .min(chunk.len());
    let found = token_at(chunk, pos);
    let found_span = Span::new(file, base + pos, base + pos + found.len());
    let found_words = if found.is_empty() { "end of input".to_string() } else { format!("`{found}`") };
    let positives: Vec<Rule> = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            // pest's own resource guard ("stack limit reached", "call limit reached").
            return Diagnostic::error("E0006", format!("input too deeply nested to parse ({message})"))
                .at(found_span, "parsing stopped here")
                .with_help("split the expression using `let` bindings or helper functions");
        }
    };
    let mut literals: Vec<String> = Vec::new();
    if let Some(attempts) = err.parse_attempts()
        && attempts.max_position == pos
    {
        // `ParsingToken` is not exported by pest; its `Display` is the literal text.
        literals.extend(attempts.expected_tokens().iter().map(ToString::to_string));
    }
    let expected = describe_expected(&positives, &literals);
    let message = match &expected {
        Some(what) => format!("expected {what}, found {found_words}"),
        None => format!("unexpected {found_words}"),
    };
    let label = if found.is_empty() { "input ends here".to_string() } else { "unexpected here".to_string() };
    Diagnostic::error("E0001", message).at(found_span, label).with_help(help_for(&positives, &literals))
}

/// The token starting at `pos`: a word, a number, a string start, or one punctuation mark
/// (two or three for compound operators). Empty at the end of the input.
fn token_at(chunk: &str, pos: usize) -> &str {
    let rest = &chunk[pos..];
    let Some(first) = rest.chars().next() else { return "" };
    let len = if first.is_ascii_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())
    } else {
        const COMPOUND: [&str; 16] =
            ["...", "..", "->", "**", "==", "!=", "<=", ">=", "&&", "||", "+=", "-=", "*=", "/=", "//", "/*"];
        COMPOUND.iter().find(|op| rest.starts_with(*op)).map_or(first.len_utf8(), |op| op.len())
    };
    &rest[..len]
}

/// What kind of thing each rule is, in words, and an order to list them in.
fn rule_words(rule: Rule) -> Option<(u8, &'static str)> {
    use Rule::*;
    Some(match rule {
        EOI => (90, "end of input"),
        use_item | module_item | fn_decl | data_item | train_item | sweep_item | kw_use | module_kw
        | kw_fn | kw_data | kw_train | kw_sweep => {
            (10, "an item (`use`, `module`, `model`, `fn`, `data`, `train`, `sweep`)")
        }
        let_member | param_member | buffer_member | dim_member | if_member | field_member | kw_param
        | kw_buffer | kw_dim => {
            (11, "a member (`name = ...`, `let`, `param`, `buffer`, `dim`, `fn`, `if`, `assert`)")
        }
        let_stmt | assign_stmt | expr_stmt | assert_stmt => (12, "a statement or expression"),
        entry | key_path => (13, "an entry (`key: value`)"),
        expr | or_expr | and_expr | cmp_expr | sum_expr | prod_expr | unary_expr | power_expr | power_rhs
        | postfix_expr | primary | prefix_op | float | int | string | bool_lit | if_expr | for_expr
        | block | paren_expr | list_expr | ident | assert_msg | slice_end | slice_step | dim | arg
        | named_arg | slice_or_expr | index_item => (20, "an expression"),
        range_op | or_op | and_op | cmp_op | sum_op | prod_op | pow_op => (30, "an operator"),
        call_args | index_suffix | field_suffix => (31, "`(`, `[` or `.`"),
        type_expr | tensor_type | prim_type | tuple_type | dtype | dim_list => (21, "a type"),
        word | entry_label => (22, "a name"),
        wildcard | tuple_pattern => (23, "a pattern (a name, `_` or `(a, b)`)"),
        param_list => (24, "a parameter list `(...)`"),
        param_decl => (25, "a parameter"),
        ret_type => (26, "`->`"),
        member_block => (27, "`{`"),
        kw_let | kw_if | kw_for | kw_assert => (20, "an expression"),
        ellipsis => (48, "`...`"),
        none_lit => (20, "an expression"),
        kw_else => (40, "`else`"),
        kw_in => (41, "`in`"),
        kw_of => (42, "`of`"),
        kw_help => (43, "`help:`"),
        assign_op | assign_eq => (44, "`=`"),
        slice_tail => (45, "`:`"),
        semi | comma => (46, "`;` or `,`"),
        repeat_tail | comp_tail | list_rest => (47, "`,`, `;` or `for`"),
        _ => return None,
    })
}

/// Literal tokens worth naming (closing brackets, separators); words and operators are
/// already covered by the rules that contain them.
const NAMED_LITERALS: [&str; 13] = ["}", ")", "]", "{", "(", "[", ",", ":", ";", "=", "->", ".", "\""];

/// "`}`, a member (...) or end of input": the rules and literal tokens pest tried at the error
/// position, in words, most useful first.
fn describe_expected(positives: &[Rule], literals: &[String]) -> Option<String> {
    let mut words: Vec<(u8, String)> = Vec::new();
    for &rule in positives {
        if let Some((order, text)) = rule_words(rule) {
            words.push((order, text.to_string()));
        }
    }
    let has_expression = words.iter().any(|(o, _)| *o == 20);
    for lit in literals {
        if !NAMED_LITERALS.contains(&lit.as_str()) || (lit == "\"" && has_expression) {
            continue;
        }
        let order = match lit.as_str() {
            "}" | ")" | "]" => 1,
            _ => 50,
        };
        let text = if lit == "\"" { "a string".to_string() } else { format!("`{lit}`") };
        words.push((order, text));
    }
    words.sort();
    words.dedup_by(|a, b| a.1 == b.1);
    if words.is_empty() {
        return None;
    }
    let texts: Vec<String> = words.into_iter().map(|(_, t)| t).take(6).collect();
    Some(match texts.as_slice() {
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
        [] => String::new(),
    })
}

/// A help line suited to what was expected.
fn help_for(positives: &[Rule], literals: &[String]) -> String {
    let expects = |r: Rule| positives.contains(&r);
    if expects(Rule::use_item) || expects(Rule::module_kw) {
        "a file is a sequence of items: `use`, `module`, `model`, `fn`, `data`, `train` and `sweep`".into()
    } else if expects(Rule::field_member) || expects(Rule::let_member) {
        "a module body holds members such as `up = Linear(d, h)`, `param w: [d, d] = normal(0.02)` \
         or `fn forward(x) { ... }`"
            .into()
    } else if expects(Rule::entry) {
        "entries are written `key: value` or `key label: value`, e.g. `batch: 32`".into()
    } else if literals.iter().any(|l| l == ")" || l == "]" || l == "}") {
        "check for a missing `,` or operator, or a missing closing delimiter".into()
    } else {
        "see docs/language.md for the syntax".into()
    }
}
