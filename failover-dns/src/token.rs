//! The leader's fencing token as DNS data: one TXT record `"token=N"` at
//! its own owner name (by default `_failover.<service name>`), which RFC 2136
//! updates use as a prerequisite so the server itself refuses a deposed
//! leader's update.

use failover_core::FencingToken;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::Name;

use crate::DnsError;

/// The label put in front of the service name for the default owner name.
pub(crate) const TOKEN_LABEL: &str = "_failover";

/// The text of the TXT record that holds `token`: `token=N`.
pub(crate) fn token_text(token: FencingToken) -> String {
    format!("token={}", token.0)
}

/// The TXT RDATA that holds `token`.
pub(crate) fn token_txt(token: FencingToken) -> TXT {
    TXT::new(vec![token_text(token)])
}

/// The token TXT RRset as the server serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeldToken {
    /// Every TXT record at the owner name, exactly as read (the
    /// prerequisite that pins this state must name each one).
    pub(crate) records: Vec<TXT>,
    /// The highest token among them (`None`: no record).
    pub(crate) token: Option<FencingToken>,
}

/// What a router holding `ours` must do about the token in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenStep {
    /// A newer leader's token is in place: refuse the plan.
    Refuse(FencingToken),
    /// Exactly our token is in place: pin it and change only the weights.
    Hold,
    /// An older token, or none (or ours among leftovers): replace the
    /// RRset with ours, pinning what was read.
    Raise,
}

impl HeldToken {
    /// Parses the TXT records read at `name` from `server`; anything but
    /// `token=N` strings is an error naming the record.
    pub(crate) fn parse(
        server: std::net::SocketAddr,
        name: &Name,
        records: Vec<TXT>,
    ) -> Result<Self, DnsError> {
        let mut token = None;
        for txt in &records {
            let text: Vec<u8> = txt.txt_data.iter().flatten().copied().collect();
            let parsed = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.strip_prefix("token="))
                .and_then(|n| n.parse::<u64>().ok());
            let Some(n) = parsed else {
                return Err(DnsError::TokenRecord {
                    server,
                    name: name.to_string(),
                    found: records
                        .iter()
                        .map(|r| {
                            let bytes: Vec<u8> = r.txt_data.iter().flatten().copied().collect();
                            String::from_utf8_lossy(&bytes).into_owned()
                        })
                        .collect(),
                });
            };
            token = token.max(Some(FencingToken(n)));
        }
        Ok(HeldToken { records, token })
    }

    /// Whether the RRset is exactly one record holding `token`.
    pub(crate) fn is_exactly(&self, token: FencingToken) -> bool {
        matches!(self.records.as_slice(), [only] if *only == token_txt(token))
    }

    /// What a plan under `ours` must do.
    pub(crate) fn step(&self, ours: FencingToken) -> TokenStep {
        match self.token {
            Some(held) if held > ours => TokenStep::Refuse(held),
            _ if self.is_exactly(ours) => TokenStep::Hold,
            _ => TokenStep::Raise,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(texts: &[&str]) -> Result<HeldToken, DnsError> {
        HeldToken::parse(
            "127.0.0.1:53".parse().expect("addr"),
            &Name::from_ascii("_failover.api.example.test.").expect("name"),
            texts
                .iter()
                .map(|t| TXT::new(vec![(*t).to_owned()]))
                .collect(),
        )
    }

    #[test]
    fn a_newer_token_refuses_ours_an_older_or_absent_one_is_raised() {
        let t = FencingToken;
        assert_eq!(held(&[]).expect("absent").step(t(5)), TokenStep::Raise);
        assert_eq!(held(&["token=4"]).expect("4").step(t(5)), TokenStep::Raise);
        assert_eq!(held(&["token=5"]).expect("5").step(t(5)), TokenStep::Hold);
        assert_eq!(
            held(&["token=7"]).expect("7").step(t(5)),
            TokenStep::Refuse(t(7))
        );
        // Leftovers beside ours are cleaned up by a raise; a newer one among
        // them still refuses.
        assert_eq!(
            held(&["token=5", "token=3"]).expect("two").step(t(5)),
            TokenStep::Raise
        );
        assert_eq!(
            held(&["token=3", "token=8"]).expect("two").step(t(5)),
            TokenStep::Refuse(t(8))
        );
    }

    #[test]
    fn a_split_string_is_joined_and_foreign_text_is_an_error_naming_the_record() {
        let split = HeldToken::parse(
            "127.0.0.1:53".parse().expect("addr"),
            &Name::from_ascii("_failover.api.example.test.").expect("name"),
            vec![TXT::new(vec!["token=".to_owned(), "12".to_owned()])],
        )
        .expect("joined");
        assert_eq!(split.token, Some(FencingToken(12)));
        let err = held(&["v=spf1 -all"]).expect_err("not a token");
        let text = err.to_string();
        assert!(
            text.contains("_failover.api.example.test.") && text.contains("v=spf1 -all"),
            "{text}"
        );
        assert!(held(&["token=-1"]).is_err());
        assert!(held(&["token="]).is_err());
    }
}
