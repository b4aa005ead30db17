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
                let (text, col) = excerpt(text.trim_end_matches('\r'), span.col);
                let _ = writeln!(out, "{pad} |");
                let _ = writeln!(out, "{line_no} | {text}");
                let before: String = text
                    .chars()
                    .take(col.saturating_sub(1) as usize)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                // The underline stays on the excerpt, even for a token that runs on.
                let room = text.chars().count().saturating_sub(col as usize - 1).max(1);
                let width = (span.len.max(1) as usize).min(room);
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

/// Longest source line shown in full; longer ones are cut around the column.
const EXCERPT_WIDTH: usize = 96;

/// The part of `line` to show and the 1-based column of the span in it: the whole line
/// when it is short, else a window around `col` with `…` marking what was cut.
fn excerpt(line: &str, col: u32) -> (String, u32) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= EXCERPT_WIDTH {
        return (line.to_owned(), col);
    }
    let at = (col.max(1) - 1) as usize;
    let start = at.saturating_sub(EXCERPT_WIDTH / 3).min(chars.len().saturating_sub(EXCERPT_WIDTH));
    let end = (start + EXCERPT_WIDTH).min(chars.len());
    let mut text = String::new();
    let mut shift = start as u32;
    if start > 0 {
        text.push('…');
        shift -= 1;
    }
    text.extend(&chars[start..end]);
    if end < chars.len() {
        text.push('…');
    }
    (text, col - shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;

    #[test]
    fn long_lines_are_cut_around_the_span() {
        let mut sources = Sources::default();
        let line = format!("{}target{}", "a".repeat(500), "b".repeat(500));
        let file = sources.add("f.yaml", line);
        let d = Diagnostic::new(codes::INVALID_PORT, "bad")
            .at(Span { file, line: 1, col: 501, len: 6 }, "here");
        let out = d.render(&sources);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() < 120), "{out}");
        let source = lines.iter().find(|l| l.contains("target")).unwrap();
        let marks = lines.iter().find(|l| l.contains("^^^^^^")).unwrap();
        let at = |l: &str, pat: &str| l.char_indices().position(|(i, _)| l[i..].starts_with(pat));
        assert_eq!(at(source, "target"), at(marks, "^^^^^^"), "{out}");
    }
}
