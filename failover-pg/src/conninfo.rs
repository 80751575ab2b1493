//! libpq connection strings and `postgresql.conf` values: the two quoting
//! layers a `primary_conninfo` passes through.
//!
//! - **libpq** (`key=value key='value'`): a value is single-quoted when it
//!   is empty or holds a space, a quote or a backslash; inside, `\` and `'`
//!   are escaped with a backslash. [`quote_value`] always quotes, which
//!   libpq accepts for every value; [`conninfo`] joins pairs.
//! - **`postgresql.conf` / `postgresql.auto.conf`** (`name = 'value'`): the
//!   server's configuration lexer reads `''` and `\'` as a quote, `\\` as a
//!   backslash, `\n`, `\r`, `\t`, `\b`, `\f` as control characters, and
//!   rejects a raw newline inside a string (the whole file is then ignored
//!   on reload, and a restart fails). [`conf_value`] writes a value it reads
//!   back unchanged.
//!
//! A `primary_conninfo` written by [`rejoin`](fn@crate::rejoin) goes through
//! both: its values are libpq-quoted (build it with [`conninfo`]), and the
//! whole string is written with [`conf_value`].

/// `value` quoted for a libpq `key=value` connection string: in single
/// quotes, with `\` and `'` escaped by a backslash. Newlines and other
/// characters pass as they are (libpq keeps them inside quotes).
pub fn quote_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A libpq connection string from `(key, value)` pairs, every value quoted
/// with [`quote_value`]: `conninfo([("host", "10.0.0.5"), ("password",
/// "it's")])` is `host='10.0.0.5' password='it\'s'`.
pub fn conninfo<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={}", quote_value(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `value` as a quoted `postgresql.conf` string (with its quotes) that the
/// server's configuration lexer reads back as exactly `value`.
pub fn conf_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Splits a libpq `key=value` connection string into its pairs, with
/// libpq's rules: whitespace separates pairs and may surround `=`; a value
/// is a run of non-space characters or a single-quoted string; `\x` stands
/// for `x` in both. The error says what is wrong and where.
#[allow(dead_code)] // read by the TLS options of the node DSN
pub(crate) fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let Some(&(start, _)) = chars.peek() else {
            return Ok(pairs);
        };
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(format!(
                "missing \"=\" after `{key}` at byte {start} of the connection string"
            ));
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek().is_some_and(|(_, c)| *c == '\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "unterminated quoted value of `{key}` in the connection string"
                        ))
                    }
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => {
                            return Err(format!(
                                "unterminated quoted value of `{key}` in the connection string"
                            ))
                        }
                    },
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some((_, next)) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD: &str = "it's a \\ back'slash\nand a newline\tand a tab";

    #[test]
    fn libpq_quoting_round_trips_through_the_libpq_parser() {
        let text = conninfo([
            ("host", "127.0.0.1"),
            ("application_name", AWKWARD),
            ("password", ""),
        ]);
        assert_eq!(
            parse_pairs(&text).unwrap(),
            vec![
                ("host".to_string(), "127.0.0.1".to_string()),
                ("application_name".to_string(), AWKWARD.to_string()),
                ("password".to_string(), String::new()),
            ]
        );
        assert_eq!(quote_value("a'b\\c"), "'a\\'b\\\\c'");
    }

    #[test]
    fn libpq_parser_reads_unquoted_spaced_and_escaped_values() {
        assert_eq!(
            parse_pairs(" host = 10.0.0.5  port=5432 sslrootcert=/tmp/a\\ b.pem ").unwrap(),
            vec![
                ("host".into(), "10.0.0.5".into()),
                ("port".into(), "5432".into()),
                ("sslrootcert".into(), "/tmp/a b.pem".into()),
            ]
        );
        assert!(parse_pairs("host")
            .unwrap_err()
            .contains("missing \"=\" after `host`"));
        assert!(parse_pairs("password='abc")
            .unwrap_err()
            .contains("unterminated"));
    }

    #[test]
    fn conf_quoting_escapes_quotes_backslashes_and_control_characters() {
        assert_eq!(conf_value("plain"), "'plain'");
        assert_eq!(conf_value("it's"), "'it''s'");
        assert_eq!(conf_value("a\\b"), "'a\\\\b'");
        let quoted = conf_value(AWKWARD);
        assert!(
            !quoted.contains('\n'),
            "a raw newline breaks the conf file: {quoted}"
        );
        assert_eq!(
            quoted,
            "'it''s a \\\\ back''slash\\nand a newline\\tand a tab'"
        );
    }
}
