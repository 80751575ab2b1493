//! Errors of the core crate.

/// Invalid configuration. Every variant names the field and the rule it broke,
/// so the message alone tells an operator what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field broke a rule.
    #[error("invalid `{field}`: {rule}")]
    Invalid {
        /// The path of the field, like `policy.fall` or `regions[1].name`.
        field: String,
        /// The rule it broke, with the offending value.
        rule: String,
    },
    /// The TOML text did not parse or did not match the expected shape.
    #[error("configuration does not parse: {0}")]
    Parse(String),
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The field this error is about, when it is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Parse(_) => None,
        }
    }
}
