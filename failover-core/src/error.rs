//! Errors of the core crate.

use std::fmt;

/// Where in a configuration file something is: a 1-based line and a 1-based
/// column (counted in characters, as editors count them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfigLocation {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl fmt::Display for ConfigLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Invalid configuration. Every variant names the field and the rule it broke,
/// and, when the configuration came from a file, the line and column, so the
/// message alone tells an operator what to change and where.
///
/// Field paths use the names written in the TOML file: `service`,
/// `region[1].capacity`, `node[0].region`, `policy.fall` (indices from 0).
/// A rule about every entry of a list names the list with empty brackets,
/// like `region[].base_weight`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field broke a rule.
    Invalid {
        /// The path of the field, like `policy.fall` or `region[1].name`.
        field: String,
        /// The rule it broke, with the offending value.
        rule: String,
        /// Where the field is written (where the table that lacks it starts,
        /// for a field left out); `None` when the configuration was built in code.
        at: Option<ConfigLocation>,
    },
    /// The TOML text did not parse or did not match the expected shape
    /// (a wrong type, an unknown key, a missing required key), or a
    /// configuration could not be written as TOML.
    Parse {
        /// The path of the field, when the problem is about one (an unknown
        /// key is named by its own path, like `region[0].wieght`).
        field: Option<String>,
        /// What is wrong, from the TOML reader.
        message: String,
        /// Where in the text.
        at: Option<ConfigLocation>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid { field, rule, at } => {
                write!(f, "invalid `{field}`")?;
                if let Some(at) = at {
                    write!(f, " at {at}")?;
                }
                write!(f, ": {rule}")
            }
            ConfigError::Parse { field, message, at } => {
                f.write_str("configuration does not parse")?;
                match (field, at) {
                    (Some(field), Some(at)) => write!(f, ": `{field}` at {at}")?,
                    (Some(field), None) => write!(f, ": `{field}`")?,
                    (None, Some(at)) => write!(f, " at {at}")?,
                    (None, None) => {}
                }
                write!(f, ": {message}")
            }
        }
    }
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            rule: rule.into(),
            at: None,
        }
    }

    /// The field this error is about, when it is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Parse { field, .. } => field.as_deref(),
        }
    }

    /// Where in the configuration file the error is, when it came from one.
    pub fn location(&self) -> Option<ConfigLocation> {
        match self {
            ConfigError::Invalid { at, .. } | ConfigError::Parse { at, .. } => *at,
        }
    }
}
