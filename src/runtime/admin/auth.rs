//! [`AdminAuth`]: the named bearer tokens the admin API accepts.

use crate::lease::secrets_equal;

/// Shortest token the admin API accepts, bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// The bearer tokens the admin API accepts, each under a name (a person, a
/// team, a tool) that the audit log records as the caller of each command.
///
/// A request carries `Authorization: Bearer <token>`; the token is compared
/// with every configured one in constant time (the time depends only on the
/// lengths, never on where a guess first differs).
#[derive(Clone, Default)]
pub struct AdminAuth {
    tokens: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("AdminAuth")
            .field("names", &names)
            .field("tokens", &"<redacted>")
            .finish()
    }
}

impl AdminAuth {
    /// No tokens yet: every request is refused until one is added.
    pub fn new() -> Self {
        AdminAuth::default()
    }

    /// Accepts `token` and names its holder `name` in the audit log. The
    /// runtime refuses to start when a token is shorter than
    /// [`MIN_TOKEN_LEN`] bytes, when two tokens are equal, or when a name
    /// is empty or repeated.
    pub fn token(mut self, name: impl Into<String>, token: impl Into<String>) -> Self {
        self.tokens.push((name.into(), token.into().into_bytes()));
        self
    }

    /// The names of the tokens, in the order they were added.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|(name, _)| name.as_str())
    }

    /// Checks the rules [`token`](Self::token) states; the error names the
    /// token by its name and the rule.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.tokens.is_empty() {
            return Err("AdminAuth has no tokens: add one with AdminAuth::token".into());
        }
        for (i, (name, token)) in self.tokens.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(format!("AdminAuth token #{i} has an empty name"));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "AdminAuth token `{name}` is {} bytes; at least {MIN_TOKEN_LEN} are needed",
                    token.len()
                ));
            }
            for (other, other_token) in &self.tokens[..i] {
                if other == name {
                    return Err(format!("AdminAuth names two tokens `{name}`"));
                }
                if other_token == token {
                    return Err(format!("AdminAuth tokens `{other}` and `{name}` are equal"));
                }
            }
        }
        Ok(())
    }

    /// The name of the caller whose `Authorization` header value this is,
    /// if it is `Bearer <a configured token>`. Every configured token is
    /// compared, whichever matches, so the time taken does not tell which.
    pub(crate) fn caller(&self, authorization: &[u8]) -> Option<&str> {
        // The scheme is case-insensitive (RFC 9110, 11.1).
        let (scheme, token) = authorization.split_at_checked(7)?;
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return None;
        }
        let mut found = None;
        for (name, expected) in &self.tokens {
            if secrets_equal(token, expected) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_the_name_of_the_matching_token() {
        let auth = AdminAuth::new()
            .token("alice", "alice-token-0123456789")
            .token("deploy-bot", "bot-token-0123456789ab");
        assert_eq!(auth.check(), Ok(()));
        assert_eq!(
            auth.caller(b"Bearer bot-token-0123456789ab"),
            Some("deploy-bot")
        );
        assert_eq!(auth.caller(b"Bearer alice-token-0123456789"), Some("alice"));
        assert_eq!(auth.caller(b"Bearer alice-token-012345678"), None);
        assert_eq!(auth.caller(b"alice-token-0123456789"), None);
        assert_eq!(auth.caller(b"Bearer "), None);
        assert_eq!(auth.caller(b"bearer alice-token-0123456789"), Some("alice"));
        assert_eq!(auth.caller(b"Basic alice-token-0123456789"), None);
    }

    #[test]
    fn short_repeated_or_missing_tokens_are_refused_by_name() {
        let short = AdminAuth::new().token("ops", "short").check().unwrap_err();
        assert!(short.contains("`ops`") && short.contains("16"), "{short}");
        let twice = AdminAuth::new()
            .token("a", "same-token-0123456789")
            .token("b", "same-token-0123456789")
            .check()
            .unwrap_err();
        assert!(twice.contains("`a`") && twice.contains("`b`"), "{twice}");
        assert!(AdminAuth::new().check().is_err());
    }
}
