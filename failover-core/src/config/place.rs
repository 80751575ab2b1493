//! Where a configuration error is in the TOML text: the field's path in the
//! file's own names (`region[1].capacity`) and its line and column.
//!
//! Serde errors from the TOML reader carry a byte span but no key path, and
//! validation errors carry a key path but no span; the parsed document (every
//! key and value with its span) answers both questions.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::{ConfigError, ConfigLocation};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// A parsed TOML text, kept to place errors.
pub(super) struct Document<'i> {
    text: &'i str,
    root: Option<Spanned<DeTable<'i>>>,
}

impl<'i> Document<'i> {
    pub(super) fn new(text: &'i str) -> Self {
        Document {
            text,
            root: DeTable::parse(text).ok(),
        }
    }

    /// The 1-based line and column of a byte offset.
    pub(super) fn location(&self, offset: usize) -> ConfigLocation {
        let offset = offset.min(self.text.len());
        // Back off to a character boundary so slicing cannot panic.
        let offset = (0..=offset)
            .rev()
            .find(|&i| self.text.is_char_boundary(i))
            .unwrap_or(0);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        ConfigLocation {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    /// Turns an error of the TOML reader into one that names the field and
    /// its place.
    pub(super) fn place_toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim_end().to_owned();
        let span = error.span();
        let mut path = match (&self.root, &span) {
            (Some(root), Some(span)) => {
                let mut path = Vec::new();
                find_in_table(root.get_ref(), span, &mut path);
                path
            }
            _ => Vec::new(),
        };
        // A key the table lacks has no span of its own: name it inside the
        // table that lacks it, and point at that table.
        if let Some(missing) = quoted_after(&message, "missing field ") {
            path.push(Step::Key(missing.to_owned()));
        }
        ConfigError::Parse {
            field: (!path.is_empty()).then(|| render(&path)),
            message: plain_types(&message),
            at: span.map(|s| self.location(s.start)),
        }
    }

    /// Adds the place of the error's field, when the field is written in the
    /// text (or else of the closest enclosing table that is).
    pub(super) fn place_invalid(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Invalid {
                field,
                rule,
                at: None,
            } => {
                let at = self
                    .root
                    .as_ref()
                    .and_then(|root| span_of_path(root, &field))
                    .map(|span| self.location(span.start));
                ConfigError::Invalid { field, rule, at }
            }
            other => other,
        }
    }
}

/// The text between the backticks after `prefix`, like `service` in
/// "missing field `service`".
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

/// Serde names Rust types ("expected u32"); say what to write instead.
fn plain_types(message: &str) -> String {
    const PLAIN: [(&str, &str); 5] = [
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u64", "expected a whole number ≥ 0"),
        ("expected f64", "expected a number"),
        (
            "invalid IP address syntax",
            "not an IPv4 or IPv6 address (like 192.0.2.10 or 2001:db8::10)",
        ),
    ];
    PLAIN
        .iter()
        .find(|(rust, _)| message.ends_with(rust))
        .map(|(rust, plain)| format!("{}{plain}", &message[..message.len() - rust.len()]))
        .unwrap_or_else(|| message.to_owned())
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer != &(0..0)
}

/// Extends `path` with the deepest key or array item of `table` whose span
/// holds `span`. Returns whether one did.
fn find_in_table(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<Step>) -> bool {
    for (key, value) in table.iter() {
        if contains(&key.span(), span) {
            path.push(Step::Key(key.get_ref().to_string()));
            return true;
        }
        path.push(Step::Key(key.get_ref().to_string()));
        if find_in_value(value, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &mut Vec<Step>) -> bool {
    // Search children first: a header-defined table's own span need not cover
    // its body, and the items of `[[region]]` are spread over the file.
    let found = match value.get_ref() {
        DeValue::Table(table) => find_in_table(table, span, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            path.push(Step::Index(i));
            if find_in_value(item, span, path) {
                true
            } else {
                path.pop();
                false
            }
        }),
        _ => false,
    };
    found || contains(&value.span(), span)
}

/// The span of the deepest written part of `field` (a path like
/// `region[1].capacity`; `region[]` stops at the list).
fn span_of_path(root: &Spanned<DeTable<'_>>, field: &str) -> Option<Range<usize>> {
    let mut best: Option<Range<usize>> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    for part in field.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, Some(rest.trim_end_matches(']'))),
            None => (part, None),
        };
        let Some((key, mut value)) = table?.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        best = Some(key.span());
        if let Some(index) = index {
            let item = match (index.parse::<usize>(), value.get_ref()) {
                (Ok(i), DeValue::Array(items)) => items.get(i),
                _ => None,
            };
            let Some(item) = item else { break };
            best = Some(item.span());
            value = item;
        }
        table = value.get_ref().as_table();
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_from_one() {
        let doc = Document::new("a = 1\nbé = 2\n");
        assert_eq!(doc.location(0), ConfigLocation { line: 1, column: 1 });
        assert_eq!(doc.location(6), ConfigLocation { line: 2, column: 1 });
        // "bé = " is 6 bytes, 5 characters.
        assert_eq!(doc.location(12), ConfigLocation { line: 2, column: 6 });
    }
}
