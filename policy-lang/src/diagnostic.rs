//! Diagnostics: what is wrong, where, and what to do about it.

use std::fmt::Write as _;

use crate::codes::Code;
use crate::source::{Sources, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
    Note,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// One finding about the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    /// What is wrong, in one sentence without a trailing period.
    pub message: String,
    /// Where, with a label saying what is wrong exactly there.
    pub span: Option<Span>,
    pub label: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic { code, message: message.into(), span: None, label: String::new(), help: None }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Self {
        self.span = Some(span);
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn severity(&self) -> Severity {
        self.code.severity
    }

    /// Renders the diagnostic as plain text (no colour) for a terminal or a snapshot:
    ///
    /// ```text
    /// error[PL0013]: port 70000 is out of range
    ///   --> policies/web.yaml:12:17
    ///    |
    /// 12 |         - port: 70000
    ///    |                 ^^^^^ must be 1-65535
    ///    = help: use a port between 1 and 65535, or a named container port
    /// ```
    pub fn render(&self, sources: &Sources) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}[{}]: {}", self.severity().as_str(), self.code.code, self.message);
        if let Some(span) = self.span {
            let file = sources.get(span.file);
            let line_no = span.line.to_string();
            let pad = " ".repeat(line_no.len());
            let _ = writeln!(out, "{pad}--> {}:{}:{}", file.name, span.line, span.col);
            if let Some(text) = file.text.lines().nth(span.line.saturating_sub(1) as usize) {
                let text = text.trim_end_matches('\r');
                let _ = writeln!(out, "{pad} |");
                let _ = writeln!(out, "{line_no} | {text}");
                let before: String = text
                    .chars()
                    .take(span.col.saturating_sub(1) as usize)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let width = span.len.max(1) as usize;
                let _ = writeln!(out, "{pad} | {before}{} {}", "^".repeat(width), self.label);
            }
        }
        if let Some(help) = &self.help {
            let pad = self.span.map_or(0, |s| s.line.to_string().len());
            let _ = writeln!(out, "{} = help: {help}", " ".repeat(pad));
        }
        out
    }
}
