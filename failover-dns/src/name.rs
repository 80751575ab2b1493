//! Parsing configured DNS names.

use hickory_proto::rr::Name;

use crate::DnsError;

/// Parses `value` as an absolute name (a missing final dot is added), naming
/// `field` in the error.
pub(crate) fn parse_fqdn(field: &'static str, value: &str) -> Result<Name, DnsError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(DnsError::config(
            field,
            "must be a DNS name, got an empty string",
        ));
    }
    let mut name = Name::from_ascii(trimmed)
        .map_err(|e| DnsError::config(field, format!("{trimmed:?} is not a DNS name: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}
