//! Source files and spans.

use std::fmt;

/// Index of a file in [`Sources`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// One input file (or standard input) and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path as the user gave it, used in diagnostics and provenance.
    pub name: String,
    pub text: String,
    /// The file could not be read as text (it was reported); `text` holds only the
    /// part before the problem, for rendering, and the file is not parsed.
    pub unreadable: bool,
}

/// Every input file of a run. Spans refer to files by [`FileId`].
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).expect("fewer than 4 billion files"));
        self.files.push(SourceFile { name: name.into(), text: text.into(), unreadable: false });
        id
    }

    /// Adds a file that was reported unreadable; see [`SourceFile::unreadable`].
    pub fn add_unreadable(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let id = self.add(name, text);
        self.files[id.0 as usize].unreadable = true;
        id
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }

    /// `file:line:col` of a span, as diagnostics and provenance print it.
    pub fn location(&self, span: Span) -> String {
        format!("{}:{}:{}", self.get(span.file).name, span.line, span.col)
    }
}

/// A region of a source file: 1-based line and column of its start (columns count
/// characters), and its length in characters on that line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}
