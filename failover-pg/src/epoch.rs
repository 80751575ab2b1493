//! Durable fencing epochs.
//!
//! Two tables in the admin database's `failover` schema carry them, so they
//! replicate to every replica with the rest of the WAL:
//! - `failover.epoch`: one row per promotion (epoch, node, LSN, time);
//! - `failover.fence`: one row per fence (epoch, node, the roles whose LOGIN
//!   it revoked, whether a later promotion restored them).
//!
//! A request with epoch `e` is stale when `e ≤` the highest promotion epoch, or
//! `e <` the highest fence epoch, found on the target or on any reachable
//! node. A fence carries the epoch of the promotion that follows it, so the
//! promotion may reuse the fence's epoch but never go below it.

use std::time::Duration;

use failover_core::{Epoch, NodeId};

use crate::cluster::Session;
use crate::{PgCluster, PgError};

/// Creates the schema and tables if needed (primary only).
pub(crate) const SCHEMA_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS failover; \
CREATE TABLE IF NOT EXISTS failover.epoch ( \
  epoch bigint PRIMARY KEY, node text NOT NULL, lsn text, \
  recorded_at timestamptz NOT NULL DEFAULT now()); \
CREATE TABLE IF NOT EXISTS failover.fence ( \
  epoch bigint NOT NULL, node text NOT NULL, roles text[] NOT NULL DEFAULT '{}', \
  restored boolean NOT NULL DEFAULT false, \
  recorded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (epoch, node));";

/// The epochs recorded on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Epochs {
    pub(crate) promoted: Option<Epoch>,
    pub(crate) fenced: Option<Epoch>,
}

impl Epochs {
    pub(crate) fn highest(self) -> Option<Epoch> {
        self.promoted.max(self.fenced)
    }

    /// The recorded epoch that makes `requested` stale, if any.
    pub(crate) fn refuses(self, requested: Epoch) -> Option<Epoch> {
        match (self.promoted, self.fenced) {
            (Some(p), _) if requested <= p => Some(p),
            (_, Some(f)) if requested < f => Some(f),
            _ => None,
        }
    }
}

const OP: &str = "read epochs";

fn epoch_of(s: &Session, v: Option<i64>) -> Result<Option<Epoch>, PgError> {
    v.map(|v| {
        u64::try_from(v)
            .map(Epoch)
            .map_err(|_| s.malformed(OP, format!("negative epoch {v}")))
    })
    .transpose()
}

/// Reads the epochs on the node behind `s` (none if the tables do not exist).
pub(crate) async fn read_epochs(s: &Session) -> Result<Epochs, PgError> {
    let row = s
        .query_one(
            OP,
            "SELECT to_regclass('failover.epoch') IS NOT NULL \
             AND to_regclass('failover.fence') IS NOT NULL",
        )
        .await?;
    let exists: bool = s.get(OP, &row, 0)?;
    if !exists {
        return Ok(Epochs::default());
    }
    let row = s
        .query_one(
            OP,
            "SELECT (SELECT max(epoch) FROM failover.epoch), (SELECT max(epoch) FROM failover.fence)",
        )
        .await?;
    Ok(Epochs {
        promoted: epoch_of(s, s.get(OP, &row, 0)?)?,
        fenced: epoch_of(s, s.get(OP, &row, 1)?)?,
    })
}

/// An epoch as a SQL bigint.
pub(crate) fn epoch_sql(node: &str, e: Epoch) -> Result<i64, PgError> {
    i64::try_from(e.0).map_err(|_| PgError::StaleEpoch {
        node: node.to_owned(),
        requested: e,
        recorded: Epoch(i64::MAX as u64),
        recorded_on: "(bigint limit)".to_owned(),
    })
}

impl PgCluster {
    /// Epochs of every reachable node, skipping those that cannot be reached.
    pub(crate) async fn reachable_epochs(&self) -> Vec<(NodeId, String, Result<Epochs, PgError>)> {
        self.epochs_within(None).await
    }

    /// Like [`Self::reachable_epochs`], but a node that has not answered
    /// within `limit` counts as unreachable.
    pub(crate) async fn epochs_within(
        &self,
        limit: Option<Duration>,
    ) -> Vec<(NodeId, String, Result<Epochs, PgError>)> {
        let reads = self.all_nodes().iter().map(|n| async move {
            let read = async {
                let s = self.connect(n.id, OP).await?;
                read_epochs(&s).await
            };
            let r = match limit {
                None => read.await,
                Some(limit) => tokio::time::timeout(limit, read).await.unwrap_or_else(|_| {
                    Err(PgError::Timeout {
                        node: n.name.clone(),
                        operation: OP,
                        after: limit,
                    })
                }),
            };
            (n.id, n.name.clone(), r)
        });
        futures::future::join_all(reads).await
    }

    /// Refuses `requested` for `node` if any reachable node recorded an epoch
    /// that makes it stale.
    /// Every node is read at once, for at most `timeouts.peer_epoch`.
    pub(crate) async fn check_epoch(&self, node: &str, requested: Epoch) -> Result<(), PgError> {
        let limit = self.timeouts().peer_epoch;
        for (_, name, r) in self.epochs_within(Some(limit)).await {
            match r {
                Ok(epochs) => {
                    if let Some(recorded) = epochs.refuses(requested) {
                        tracing::warn!(node, %requested, %recorded, on = %name, "stale epoch refused");
                        metrics::counter!("failover_pg_stale_epoch_refused_total").increment(1);
                        return Err(PgError::StaleEpoch {
                            node: node.to_owned(),
                            requested,
                            recorded,
                            recorded_on: name,
                        });
                    }
                }
                Err(e) => tracing::debug!(on = %name, error = %e, "epoch not read: node skipped"),
            }
        }
        Ok(())
    }

    /// The highest epoch recorded on any reachable node; an error only when
    /// no node could be read at all.
    pub async fn highest_epoch(&self) -> Result<Option<Epoch>, PgError> {
        let mut highest = None;
        let mut last_err = None;
        let mut any = false;
        for (_, _, r) in self.reachable_epochs().await {
            match r {
                Ok(e) => {
                    any = true;
                    highest = highest.max(e.highest());
                }
                Err(e) => last_err = Some(e),
            }
        }
        match (any, last_err) {
            (false, Some(e)) => Err(e),
            _ => Ok(highest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_needs_an_epoch_above_promotions_and_not_below_fences() {
        let none = Epochs::default();
        assert_eq!(none.refuses(Epoch(0)), None);
        let e = Epochs {
            promoted: Some(Epoch(5)),
            fenced: Some(Epoch(7)),
        };
        assert_eq!(e.highest(), Some(Epoch(7)));
        assert_eq!(e.refuses(Epoch(5)), Some(Epoch(5)));
        assert_eq!(e.refuses(Epoch(4)), Some(Epoch(5)));
        assert_eq!(e.refuses(Epoch(6)), Some(Epoch(7)));
        // The fence's own epoch is the one its promotion carries.
        assert_eq!(e.refuses(Epoch(7)), None);
        assert_eq!(e.refuses(Epoch(8)), None);
    }
}
