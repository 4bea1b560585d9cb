//! Errors in a config file, each pointing at `file:line:column`.
//!
//! Validation names the offending value by its key path (`counterpart[2].number`); this module
//! turns the path into a position by looking it up in a span-keeping parse of the same text, so
//! the typed model stays free of span wrappers.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(&'static str),
    Index(usize),
}

impl From<&'static str> for Step {
    fn from(k: &'static str) -> Self {
        Step::Key(k)
    }
}

impl From<usize> for Step {
    fn from(i: usize) -> Self {
        Step::Index(i)
    }
}

/// A key path into the document, e.g. `counterpart[2].ssh_keys[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Step>);

impl KeyPath {
    pub fn join(&self, step: impl Into<Step>) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(step.into());
        KeyPath(steps)
    }
}

/// Builds a [`KeyPath`]: `key_path!["counterpart", 2, "number"]`.
#[macro_export]
macro_rules! key_path {
    ($($step:expr),* $(,)?) => {
        $crate::config::diagnostic::KeyPath(vec![$($crate::config::diagnostic::Step::from($step)),*])
    };
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if i == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One finding about a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Warning => "warning: ",
            Severity::Error => "",
        };
        write!(
            f,
            "{}:{}:{}: {tag}{}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Maps byte offsets and key paths of one config text to positions.
pub struct SourceMap<'a> {
    file: &'a Path,
    text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> SourceMap<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        SourceMap {
            file,
            text,
            doc: toml_edit::Document::parse(text).ok(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// The span of the value at `path`, or of its nearest existing ancestor.
    pub fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item = doc.as_item();
        let mut best = None;
        for step in &path.0 {
            let next = match step {
                Step::Key(k) => item.get(*k),
                Step::Index(i) => item.get(*i),
            };
            match next {
                Some(next) => {
                    item = next;
                    if let Some(span) = item.span() {
                        best = Some(span);
                    } else if let Some(table) = item.as_table() {
                        // Tables of an array of tables carry no span of their own: point at
                        // their first key instead.
                        let first_key = table
                            .iter()
                            .next()
                            .and_then(|(k, _)| table.key(k))
                            .and_then(|k| k.span());
                        best = table.span().or(first_key).or(best);
                    }
                }
                None => break,
            }
        }
        best
    }

    /// The key path of the innermost value whose text holds `offset`: the value a parse
    /// error points at, named as validation names it (`counterpart[3].number`).
    pub fn path_of_value_at(&self, offset: usize) -> Option<String> {
        fn walk(item: &toml_edit::Item, offset: usize, path: &mut String) -> bool {
            use toml_edit::Item;
            match item {
                Item::Table(t) => walk_table(t.iter(), offset, path),
                Item::ArrayOfTables(a) => a.iter().enumerate().any(|(i, t)| {
                    step(path, &format!("[{i}]"), |path| {
                        walk_table(t.iter(), offset, path)
                    })
                }),
                Item::Value(v) => walk_value(v, offset, path),
                Item::None => false,
            }
        }
        fn walk_table<'t>(
            entries: impl Iterator<Item = (&'t str, &'t toml_edit::Item)>,
            offset: usize,
            path: &mut String,
        ) -> bool {
            for (k, v) in entries {
                let sep = if path.is_empty() { "" } else { "." };
                if step(path, &format!("{sep}{k}"), |path| walk(v, offset, path)) {
                    return true;
                }
            }
            false
        }
        fn walk_value(v: &toml_edit::Value, offset: usize, path: &mut String) -> bool {
            if !v.span().is_some_and(|s| s.contains(&offset)) {
                return false;
            }
            match v {
                toml_edit::Value::Array(a) => {
                    a.iter().enumerate().any(|(i, v)| {
                        step(path, &format!("[{i}]"), |path| walk_value(v, offset, path))
                    });
                }
                toml_edit::Value::InlineTable(t) => {
                    for (k, v) in t.iter() {
                        if step(path, &format!(".{k}"), |path| walk_value(v, offset, path)) {
                            break;
                        }
                    }
                }
                _ => {}
            }
            true
        }
        /// Appends `s` to the path for `f`, and takes it off again unless `f` found the value.
        fn step(path: &mut String, s: &str, f: impl FnOnce(&mut String) -> bool) -> bool {
            let len = path.len();
            path.push_str(s);
            let found = f(path);
            if !found {
                path.truncate(len);
            }
            found
        }
        let doc = self.doc.as_ref()?;
        let mut path = String::new();
        walk_table(doc.as_table().iter(), offset, &mut path).then_some(path)
    }

    pub fn at_offset(&self, offset: usize, severity: Severity, message: String) -> Diagnostic {
        let (line, column) = self.line_col(offset);
        Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            severity,
            message,
        }
    }

    pub fn at_path(&self, path: &KeyPath, severity: Severity, message: String) -> Diagnostic {
        let offset = self.span_of(path).map_or(0, |s| s.start);
        self.at_offset(offset, severity, format!("{path}: {message}"))
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values() {
        let text = "[gateway]\nx = 1\n\n[[counterpart]]\nid = \"a\"\n\n[[counterpart]]\nid = \"b\"\nkeys = [\"k0\", \"k1\"]\n";
        let map = SourceMap::new(Path::new("t.toml"), text);
        let d = map.at_path(
            &key_path!["counterpart", 1, "id"],
            Severity::Error,
            "dup".into(),
        );
        assert_eq!((d.line, d.column), (8, 6));
        let d = map.at_path(
            &key_path!["counterpart", 1, "keys", 1],
            Severity::Error,
            "bad".into(),
        );
        assert_eq!((d.line, d.column), (9, 15));
        assert_eq!(d.to_string(), "t.toml:9:15: counterpart[1].keys[1]: bad");
    }

    #[test]
    fn a_value_is_named_by_its_path() {
        let text = "[gateway]\nclamd = \"smb:x\"\n\n[[counterpart]]\nid = \"a\"\n\n[[counterpart]]\nid = \"b\"\nkeys = [\"k0\", \"k1\"]\n";
        let map = SourceMap::new(Path::new("t.toml"), text);
        let at = |needle: &str| text.find(needle).map(|i| i + 1);
        let path = |needle| at(needle).and_then(|o| map.path_of_value_at(o));
        assert_eq!(path("smb").as_deref(), Some("gateway.clamd"));
        assert_eq!(path("\"b\"").as_deref(), Some("counterpart[1].id"));
        assert_eq!(path("k1").as_deref(), Some("counterpart[1].keys[1]"));
        assert_eq!(map.path_of_value_at(0), None, "a header is no value");
    }

    #[test]
    fn missing_key_falls_back_to_parent() {
        let text = "[gateway]\n\n[[noc]]\nid = \"n\"\n";
        let map = SourceMap::new(Path::new("t.toml"), text);
        let d = map.at_path(
            &key_path!["noc", 0, "cert_subject"],
            Severity::Error,
            "m".into(),
        );
        assert_eq!(d.line, 3, "the [[noc]] header");
    }
}
