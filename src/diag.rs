//! Diagnostics as data: a stable code, a message, labelled spans, a help line and notes.
//! Every stage reports problems as [`Diagnostic`] values; only [`render`] (used by the CLI and
//! by snapshot tests) turns them into text, through miette, without colour at a fixed width.

use crate::source::{SourceMap, Span};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// A span with a short text shown under it.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub text: String,
    /// The primary label marks where the problem is; secondary labels explain it.
    pub primary: bool,
}

/// One problem in the user's input (never a compiler bug: those are panics caught by tests).
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code such as `E0201`; each is explained in `docs/errors.md`.
    pub code: &'static str,
    /// Lower case, no trailing period; says what was expected and what was found.
    pub message: String,
    pub labels: Vec<Label>,
    /// How to fix it.
    pub help: Option<String>,
    /// Context lines, e.g. the chain of module instantiations that led here.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message) }
    }

    /// Adds the primary label.
    pub fn at(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { span, text: text.into(), primary: true });
        self
    }

    /// Adds a secondary label.
    pub fn with_label(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { span, text: text.into(), primary: false });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The span of the primary label, if any.
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).or(self.labels.first()).map(|l| l.span)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

/// A list of diagnostics that stops a stage (returned as the `Err` of public APIs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Diagnostics {
        Diagnostics(vec![d])
    }
}

/// Rendering options: tests use no colour and a fixed width so snapshots are stable.
#[derive(Clone, Copy, Debug)]
pub struct RenderOptions {
    pub color: bool,
    pub width: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { color: false, width: 100 }
    }
}

/// Renders one diagnostic as text (the form shown on stderr and recorded in snapshots).
pub fn render(sources: &SourceMap, diag: &Diagnostic, opts: RenderOptions) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let report = MietteReport::new(sources, diag);
    let theme = if opts.color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(opts.width).with_links(false);
    let mut out = String::new();
    if handler.render_report(&mut out, &report).is_err() {
        // Rendering into a String cannot fail for I/O reasons; fall back to the plain form.
        out = format!("error[{}]: {}\n", diag.code, diag.message);
    }
    out
}

/// Renders all diagnostics, each followed by a blank line.
pub fn render_all(sources: &SourceMap, diags: &[Diagnostic], opts: RenderOptions) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render(sources, d, opts));
        out.push('\n');
    }
    out
}

/// Adapter from our data to miette's `Diagnostic` trait. miette labels refer to a single
/// source, so labels in other files than the primary one become notes with `file:line:col`.
struct MietteReport {
    message: String,
    code: String,
    severity: miette::Severity,
    help: Option<String>,
    source: miette::NamedSource<String>,
    labels: Vec<miette::LabeledSpan>,
    related_notes: Vec<String>,
}

impl MietteReport {
    fn new(sources: &SourceMap, d: &Diagnostic) -> MietteReport {
        let primary = d.primary_span();
        let (src_name, src_text, file) = match primary {
            Some(sp) => {
                let f = sources.get(sp.file);
                (f.name.clone(), f.text.clone(), Some(sp.file))
            }
            None => (String::new(), String::new(), None),
        };
        let mut labels = Vec::new();
        let mut related_notes = Vec::new();
        for l in &d.labels {
            if Some(l.span.file) == file {
                let text = if l.text.is_empty() { None } else { Some(l.text.clone()) };
                let span = miette::SourceSpan::new((l.span.start as usize).into(), l.span.len());
                labels.push(if l.primary {
                    miette::LabeledSpan::new_primary_with_span(text, span)
                } else {
                    miette::LabeledSpan::new_with_span(text, span)
                });
            } else {
                let loc = sources.location(l.span);
                related_notes.push(format!("{}: {}", loc, l.text));
            }
        }
        let mut location_line = String::new();
        if let Some(sp) = primary {
            location_line = format!(" ({})", sources.location(sp));
        }
        let mut notes: Vec<String> = related_notes;
        notes.extend(d.notes.iter().cloned());
        MietteReport {
            message: format!("{}{}", d.message, location_line),
            code: d.code.to_string(),
            severity: match d.severity {
                Severity::Error => miette::Severity::Error,
                Severity::Warning => miette::Severity::Warning,
            },
            help: d.help.clone(),
            source: miette::NamedSource::new(src_name, src_text),
            labels,
            related_notes: notes,
        }
    }
}

impl fmt::Debug for MietteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for MietteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MietteReport {}

impl miette::Diagnostic for MietteReport {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let mut text = String::new();
        if let Some(h) = &self.help {
            text.push_str(h);
        }
        for n in &self.related_notes {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str("note: ");
            text.push_str(n);
        }
        if text.is_empty() { None } else { Some(Box::new(text)) }
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        if self.labels.is_empty() { None } else { Some(&self.source) }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.labels.is_empty() { None } else { Some(Box::new(self.labels.iter().cloned())) }
    }
}
