//! The leader's fencing token in RFC 2136 updates: one TXT record
//! `"token=N"` at its own owner name (by default `_failover.<service name>`),
//! which every update under a token uses as a prerequisite so the server
//! itself refuses a deposed leader's update. The parent module's docs
//! describe the protocol.

use std::sync::PoisonError;

use failover_core::{FencingToken, WeightPlan};
use hickory_proto::op::Message;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::Rfc2136Router;
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

/// How many times `apply` reads the token record and
/// decides again when another leader changed it between the read and the
/// update.
pub(super) const TOKEN_ATTEMPTS: u32 = 4;

/// What an UPDATE asserts about the token record, and whether it replaces it.
#[derive(Clone, Copy, Debug)]
pub(super) enum TokenPin<'a> {
    /// A plan without a token: the record is neither checked nor touched.
    Unchecked,
    /// The record holds exactly `token=N`; only the weights change.
    Holds(FencingToken),
    /// The record is exactly `from` (absent when it holds nothing); the
    /// update replaces it with `token=to`.
    Raise {
        from: &'a HeldToken,
        to: FencingToken,
    },
}

impl TokenPin<'_> {
    /// The token the record holds once the update is accepted.
    pub(super) fn token(&self) -> Option<FencingToken> {
        match *self {
            TokenPin::Unchecked => None,
            TokenPin::Holds(token) | TokenPin::Raise { to: token, .. } => Some(token),
        }
    }
}

impl Rfc2136Router {
    /// Owner name of the TXT record that holds the leader's fencing token,
    /// like `_failover.api.example.com.`.
    pub fn token_name(&self) -> String {
        self.token_name.to_string()
    }

    /// Reads the fencing token in place: the highest `token=N` of the TXT
    /// record at [`token_name`](Self::token_name), `None` when there is none.
    /// A record holding anything else is a [`DnsError::TokenRecord`].
    pub async fn live_token(&self) -> Result<Option<FencingToken>, DnsError> {
        Ok(self.read_token().await?.token)
    }

    /// `apply` for a plan issued under `ours`: read the token record, refuse
    /// if a newer one is in place, otherwise one UPDATE that pins the record
    /// (raising it when it is older or absent) and changes the weights.
    /// Another leader changing the record between the read and the update
    /// fails the prerequisite; then read again and decide again, at most
    /// [`TOKEN_ATTEMPTS`] times.
    pub(super) async fn apply_under(
        &self,
        plan: &WeightPlan,
        ours: FencingToken,
    ) -> Result<(), DnsError> {
        let mut trusted = self.held() == Some(ours);
        let mut last_rcode = String::new();
        for attempt in 1..=TOKEN_ATTEMPTS {
            let seen = self.live_records().await?;
            let (desired, ttl) = self.desired(plan, &seen)?;
            // A router that put `ours` in place itself skips the read when
            // it has weights to change: the prerequisite makes the server
            // check the token anyway. With nothing to change it reads, so
            // that a deposed leader learns it even then.
            let read = if trusted && seen != desired {
                None
            } else {
                Some(self.read_token().await?)
            };
            trusted = false;
            let pin = match &read {
                None => TokenPin::Holds(ours),
                Some(held) => match held.step(ours) {
                    TokenStep::Refuse(newer) => return Err(self.stale(ours, newer, None)),
                    TokenStep::Hold => {
                        self.set_held(Some(ours));
                        TokenPin::Holds(ours)
                    }
                    TokenStep::Raise => TokenPin::Raise {
                        from: held,
                        to: ours,
                    },
                },
            };
            let rcode = match self.update(plan, &seen, &desired, ttl, pin).await {
                Err(DnsError::Conflict { rcode, .. }) => rcode,
                other => return other,
            };
            // The server refused a prerequisite: the token record or the
            // weight records changed since they were read.
            let now = self.read_token().await?;
            if let TokenStep::Refuse(newer) = now.step(ours) {
                return Err(self.stale(ours, newer, Some(rcode)));
            }
            let token_moved = match &read {
                Some(held) => *held != now,
                None => !now.is_exactly(ours),
            };
            if !token_moved {
                // Only the weight records changed: a retryable conflict, as
                // for plans without a token.
                return Err(DnsError::Conflict {
                    server: self.server,
                    name: self.service.to_string(),
                    rcode,
                });
            }
            tracing::info!(token = ours.0, found = ?now.token, attempt, %rcode, record = %self.token_name, "RFC 2136: the token record changed between our read and our update (another leader raised it); reading it again and deciding anew");
            last_rcode = rcode;
        }
        Err(DnsError::Conflict {
            server: self.server,
            name: self.token_name.to_string(),
            rcode: last_rcode,
        })
    }

    /// The token record's part of an UPDATE: its prerequisite (§2.4.2
    /// "RRset exists, value dependent", or §2.4.3 "RRset does not exist"
    /// when a raise finds none) and, for a raise, its replacement (§2.5.2
    /// delete the RRset, §2.5.1 add `token=N`). Being in the same message as
    /// the weight changes makes the check and the change atomic at the server.
    pub(super) fn pin_token(&self, msg: &mut Message, pin: TokenPin<'_>, ttl: u32) {
        let name = &self.token_name;
        let txt = |t: TXT| RData::TXT(t);
        match pin {
            TokenPin::Unchecked => {}
            TokenPin::Holds(token) => {
                msg.add_answer(Record::from_rdata(name.clone(), 0, txt(token_txt(token))));
            }
            TokenPin::Raise { from, to } => {
                if from.records.is_empty() {
                    let mut none = Record::update0(name.clone(), 0, RecordType::TXT);
                    none.dns_class = DNSClass::NONE;
                    msg.add_answer(none);
                } else {
                    for record in &from.records {
                        msg.add_answer(Record::from_rdata(name.clone(), 0, txt(record.clone())));
                    }
                    let mut all = Record::update0(name.clone(), 0, RecordType::TXT);
                    all.dns_class = DNSClass::ANY;
                    msg.add_authority(all);
                }
                msg.add_authority(Record::from_rdata(name.clone(), ttl, txt(token_txt(to))));
            }
        }
    }

    /// The refusal of a plan under `ours` because `newer` is in place;
    /// `rcode` when the server itself refused the update.
    pub(super) fn stale(
        &self,
        ours: FencingToken,
        newer: FencingToken,
        rcode: Option<String>,
    ) -> DnsError {
        self.set_held(None);
        metrics::counter!("failover_dns_stale_plans_refused_total", "adapter" => "rfc2136")
            .increment(1);
        tracing::warn!(token = ours.0, newer = newer.0, record = %self.token_name, server = %self.server, rcode = ?rcode, "RFC 2136: refused a plan under {ours}: the token record holds {newer} of a newer leader, so this controller was deposed and must not route traffic");
        DnsError::StaleToken {
            holder: format!("TXT {} on DNS server {}", self.token_name, self.server),
            ours,
            newer,
            rcode,
        }
    }

    pub(super) fn held(&self) -> Option<FencingToken> {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_held(&self, token: Option<FencingToken>) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = token;
    }

    pub(super) async fn read_token(&self) -> Result<HeldToken, DnsError> {
        let records = self
            .lookup(&self.token_name, RecordType::TXT)
            .await?
            .into_iter()
            .filter_map(|r| match r.data {
                RData::TXT(txt) => Some(txt),
                _ => None,
            })
            .collect();
        HeldToken::parse(self.server, &self.token_name, records)
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
