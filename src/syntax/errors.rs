//! Turns a pest parse error into a [`Diagnostic`] (E0001, or E0006 when pest's own stack guard
//! stops it) that says, in words, what was expected and what was found; pest's rule names never
//! reach the user.

use super::Rule;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use pest::error::{Error, ErrorVariant, InputLocation};

/// What the end of the parsed text stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The end of the file (or of a top-level item chunk, which ends where the next begins).
    OfInput,
    /// The closing `}` of a body (error recovery parses a body without it).
    OfBody,
}

/// Converts pest's error for `chunk` (starting at byte `base` of the file).
pub fn from_pest(file: FileId, chunk: &str, base: usize, err: &Error<Rule>, end: End) -> Diagnostic {
    let rule_pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    }
    .min(chunk.len());
    let rule_positives: Vec<Rule> = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            // pest's own resource guard ("stack limit reached", "call limit reached").
            let found = token_at(chunk, rule_pos);
            return Diagnostic::error("E0006", format!("input too deeply nested to parse ({message})"))
                .at(Span::new(file, base + rule_pos, base + rule_pos + found.len()), "parsing stopped here")
                .with_help("split the expression using `let` bindings or helper functions");
        }
    };
    // pest places the error at the furthest position where a *rule* failed; the detailed
    // attempts also track literal tokens (`:` after `param w`), which may have got further.
    // They also track tokens inside lookaheads (the `reserved` check behind every name), which
    // can leave nothing to say; then the rule position is used.
    let attempts = err.parse_attempts();
    // `ParsingToken` is not exported by pest; its `Display` is the literal text.
    let max_tokens: Vec<String> = attempts
        .as_ref()
        .map(|a| a.expected_tokens().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    let further =
        attempts.as_ref().filter(|a| a.max_position > rule_pos && a.max_position <= chunk.len()).map(|a| {
            // Only the innermost rules of the further attempt are relevant; the member or
            // statement rules that contain them started earlier.
            let rules: Vec<Rule> = a
                .call_stacks()
                .iter()
                .filter_map(|c| c.deepest.get_rule().copied())
                .filter(|r| !starts_construct(*r))
                .collect();
            (a.max_position, expectation(chunk, a.max_position, &rules, &max_tokens))
        });
    let (pos, mut expected) = match further {
        Some((pos, expected)) if expected.describe().is_some() => (pos, expected),
        _ => {
            let literals = match &attempts {
                Some(a) if a.max_position == rule_pos => max_tokens.clone(),
                _ => Vec::new(),
            };
            (rule_pos, expectation(chunk, rule_pos, &rule_positives, &literals))
        }
    };
    let found = token_at(chunk, pos);
    let found_span = Span::new(file, base + pos, base + pos + found.len());
    let found_words = match found {
        "" if end == End::OfBody => "`}`".to_string(),
        "" => "end of input".to_string(),
        "\n" | "\r" => "end of line".to_string(),
        " " | "\t" => "a space".to_string(),
        _ => format!("`{found}`"),
    };
    let in_entry_key = rule_positives.contains(&Rule::entry)
        || attempts.as_ref().is_some_and(|a| {
            a.call_stacks().iter().any(|c| matches!(c.deepest.get_rule(), Some(Rule::key_path | Rule::entry)))
        });
    if end == End::OfBody && expected.end_of_input {
        expected.end_of_input = false;
        expected.tokens.insert(0, "`}`");
    }
    let message = match expected.describe() {
        Some(what) => format!("expected {what}, found {found_words}"),
        None => format!("unexpected {}", found_words.trim_start_matches("a ")),
    };
    let label = if found.is_empty() { "input ends here".to_string() } else { "unexpected here".to_string() };
    Diagnostic::error("E0001", message).at(found_span, label).with_help(expected.help(
        chunk,
        pos,
        found,
        in_entry_key,
    ))
}

/// What was expected at `pos`, from the rules and literal tokens pest tried there.
fn expectation(chunk: &str, pos: usize, positives: &[Rule], literals: &[String]) -> Expected {
    let mut positives = positives.to_vec();
    // Directly after a word, "a name" only means the word could have been longer.
    if chunk[..pos].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        positives.retain(|r| !matches!(r, Rule::word | Rule::ident));
    }
    let mut expected = Expected::new(&positives, literals);
    if expected.name && chunk[..pos].ends_with('.') {
        // `x.` followed by something other than a name (`x.0`, `2.`).
        expected.name = false;
        expected.tokens.push("a field name");
    }
    expected
}

/// Rules that start a member, statement or item: reported as the context of a failure that
/// happened inside them, not as what was expected.
fn starts_construct(rule: Rule) -> bool {
    use Rule::*;
    matches!(
        rule,
        file | member_list
            | stmt_list
            | entry_list
            | use_item
            | module_item
            | fn_decl
            | data_item
            | train_item
            | sweep_item
            | entry
            | let_member
            | param_member
            | buffer_member
            | dim_member
            | if_member
            | field_member
            | assert_stmt
            | let_stmt
            | assign_stmt
            | expr_stmt
            | block
            | member_block
            | param_list
            | param_decl
    )
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

/// What pest tried at the error position, sorted into the phrases a user understands. The
/// context decides what is worth naming: where a member could start, listing the operators
/// that could have continued the previous expression only adds noise.
#[derive(Default)]
struct Expected {
    item: bool,
    member: bool,
    statement: bool,
    expression: bool,
    type_: bool,
    pattern: bool,
    name: bool,
    operator: bool,
    end_of_input: bool,
    /// Single tokens such as "`}`", "`=`", "`in`", in the order first seen.
    tokens: Vec<&'static str>,
}

impl Expected {
    fn new(positives: &[Rule], literals: &[String]) -> Expected {
        use Rule::*;
        let mut e = Expected::default();
        let add = |e: &mut Expected, t: &'static str| {
            if !e.tokens.contains(&t) {
                e.tokens.push(t);
            }
        };
        for &rule in positives {
            match rule {
                EOI => e.end_of_input = true,
                kw_use | module_kw | kw_data | kw_train | kw_sweep | use_item | module_item | data_item
                | train_item | sweep_item => e.item = true,
                kw_param | kw_buffer | kw_dim | param_member | buffer_member | dim_member | let_member
                | field_member | if_member => e.member = true,
                kw_let | kw_assert | let_stmt | assign_stmt | assert_stmt | expr_stmt => e.statement = true,
                expr | or_expr | and_expr | cmp_expr | sum_expr | prod_expr | unary_expr | power_expr
                | power_rhs | postfix_expr | primary | prefix_op | float | int | string | bool_lit
                | if_expr | for_expr | paren_expr | list_expr | assert_msg | slice_end | slice_step | dim
                | arg | named_arg | slice_or_expr | index_item | none_lit => e.expression = true,
                type_expr | tensor_type | prim_type | tuple_type | dim_list => e.type_ = true,
                wildcard | tuple_pattern => e.pattern = true,
                word | ident | entry_label | dtype | key_path => e.name = true,
                range_op | or_op | and_op | cmp_op | sum_op | prod_op | pow_op => e.operator = true,
                param_list => add(&mut e, "`(`"),
                param_decl => add(&mut e, "a parameter"),
                ret_type => add(&mut e, "`->`"),
                member_block | block => add(&mut e, "`{`"),
                kw_if => add(&mut e, "`if`"),
                kw_else => add(&mut e, "`else`"),
                kw_in => add(&mut e, "`in`"),
                kw_of => add(&mut e, "`of`"),
                assign_op | assign_eq => add(&mut e, "`=`"),
                comma => add(&mut e, "`,`"),
                ellipsis => add(&mut e, "`...`"),
                _ => {}
            }
        }
        for lit in literals {
            let token = match lit.as_str() {
                "}" => "`}`",
                ")" => "`)`",
                "]" => "`]`",
                "," => "`,`",
                ":" => "`:`",
                "." => "`.`",
                "=" => "`=`",
                "->" => "`->`",
                "{" => "`{`",
                "(" => "`(`",
                "[" => "`[`",
                _ => continue,
            };
            add(&mut e, token);
        }
        // A member or statement could start here: the names, keywords and operators that
        // would continue the previous line are implied.
        if e.item || e.member || e.statement {
            e.name = false;
            e.operator = false;
            e.expression = false;
            e.tokens.retain(|t| matches!(*t, "`}`" | "`)`" | "`]`"));
        }
        if e.member {
            e.statement = false;
        }
        let after_expression = e.operator;
        let closers = e.tokens.iter().any(|t| matches!(*t, "`)`" | "`]`"));
        e.tokens.retain(|t| match *t {
            // `,` only matters inside brackets.
            "`,`" => closers,
            // `:` and `.` continue entry keys, named arguments and slices; after a complete
            // expression they are noise.
            "`:`" | "`.`" => !after_expression,
            // Bracket openers that start an expression or a type are covered by those words.
            "`(`" | "`[`" | "`{`" => !(e.expression || e.type_ || after_expression),
            _ => true,
        });
        if e.expression {
            e.name = false;
        }
        e
    }

    /// "a member (...) or `}`".
    fn describe(&self) -> Option<String> {
        let mut parts: Vec<&str> = Vec::new();
        // Closing delimiters first: forgetting one is the most common mistake.
        parts.extend(self.tokens.iter().copied().filter(|t| matches!(*t, "`}`" | "`)`" | "`]`")));
        if self.item {
            parts.push("an item (`use`, `module`, `model`, `fn`, `data`, `train`, `sweep`)");
        }
        if self.member {
            parts.push("a member (`name = ...`, `let`, `param`, `buffer`, `dim`, `fn`, `if`, `assert`)");
        }
        if self.statement {
            parts.push("a statement or expression");
        }
        if self.expression {
            parts.push("an expression");
        }
        if self.type_ {
            parts.push("a type");
        }
        if self.pattern {
            parts.push("a pattern (a name, `_` or `(a, b)`)");
        }
        if self.name {
            parts.push("a name");
        }
        if self.operator {
            parts.push("an operator");
        }
        parts.extend(self.tokens.iter().copied().filter(|t| !matches!(*t, "`}`" | "`)`" | "`]`")));
        if self.end_of_input {
            parts.push("end of input");
        }
        match parts.as_slice() {
            [] => None,
            [one] => Some(one.to_string()),
            [init @ .., last] => Some(format!("{} or {last}", init.join(", "))),
        }
    }

    /// A help line for the context of the error.
    fn help(&self, chunk: &str, pos: usize, found: &str, in_entry_key: bool) -> String {
        let before = &chunk[..pos];
        let callee: &str =
            before.trim_end().rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("");
        let could_continue = self.member || self.statement || self.operator || self.item;
        if (found == "(" || found == "[")
            && before.ends_with([' ', '\t'])
            && !callee.is_empty()
            && could_continue
        {
            let what = if found == "(" { "call" } else { "index" };
            return format!(
                "to {what} `{callee}`, write `{found}` directly after it, without a space: `{callee}{found}...`"
            );
        }
        if before.ends_with('.') && before[..before.len() - 1].ends_with(|c: char| c.is_ascii_digit()) {
            return "a float needs a digit after the point: write `2.0`, not `2.`".into();
        }
        if self.item {
            "a file is a sequence of items: `use`, `module`, `model`, `fn`, `data`, `train` and `sweep`"
                .into()
        } else if self.member {
            "a module body holds members such as `up = Linear(d, h)`, `param w: [d, d] = normal(0.02)` \
             or `fn forward(x) { ... }`"
                .into()
        } else if in_entry_key {
            "entries are written `key: value` or `key label: value`, e.g. `batch: 32`".into()
        } else if self.operator {
            "check for a missing operator or `,` between the two expressions".into()
        } else if self.expression
            && matches!(found, "let" | "param" | "buffer" | "dim" | "fn" | "assert" | "use" | "module")
        {
            format!(
                "`{found}` cannot start an expression; is the expression before it unfinished (a trailing operator)?"
            )
        } else if self.expression {
            "write an expression here, e.g. a name, a number or a call".into()
        } else if self.type_ {
            "a type is `int`, `float`, `bool`, `string`, `module`, `list`, a tensor type such as \
             `f32[B, T, d]`, or a tuple of types"
                .into()
        } else {
            "see docs/language.md for the syntax".into()
        }
    }
}
