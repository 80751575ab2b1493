//! Unfencing: giving writes back to a primary whose fence was not followed
//! by a promotion.
//!
//! A fence at epoch `e` is placed for the promotion at `e`. When that
//! promotion fails (the candidate refused, timed out, or died) and the old
//! writer's region is back, the old writer is still the only node that may
//! write, and it must get its writes back: [`PgCluster::unfence`] undoes
//! exactly what [`PgCluster::fence`] did:
//! 1. refuses unless the node is a primary ([`PgError::NotAPrimary`]);
//! 2. refuses ([`PgError::StaleEpoch`]) when any reachable node records a
//!    promotion that owns the writer role from `e` on — a promotion at an
//!    epoch above `e`, or at `e` itself on another node — or when the node
//!    carries a fence above `e` (a later attempt fenced it again);
//! 3. in one transaction under the epoch tables' lock (re-checking step 2 on
//!    the node itself): gives `LOGIN` back to the roles recorded in the
//!    node's own `failover.fence` rows up to `e` and marks them restored;
//! 4. `ALTER SYSTEM RESET default_transaction_read_only`, `pg_reload_conf()`,
//!    and waits (bounded by the statement timeout) until a new session sees
//!    writes allowed.
//!
//! Idempotent: a node that is not fenced is left as is and `Ok` is returned.
//!
//! Limit: an unreachable node is skipped in step 2, like every epoch check of
//! this crate. Unfence only when the promotion is known not to have happened
//! (the controller got its failure back, and no other controller acts).

use std::time::{Duration, Instant};

use failover_core::{Epoch, NodeId};

use crate::cluster::Session;
use crate::epoch::epoch_sql;
use crate::fence::quote_ident;
use crate::{PgCluster, PgError};

const OP: &str = "unfence";

/// What an unfence did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnfenceReport {
    /// The node.
    pub node: NodeId,
    /// The fence epoch that was lifted.
    pub epoch: Epoch,
    /// Roles whose `LOGIN` came back by this call (empty on a repeated call).
    pub roles_restored: Vec<String>,
    /// Whether the node was read-only (`default_transaction_read_only`)
    /// before the call.
    pub was_read_only: bool,
}

/// A record on the node behind `s` that forbids lifting a fence of `node`
/// at `epoch`: `(epoch, what)`.
async fn owner_after(
    s: &Session,
    node: &str,
    epoch: Epoch,
) -> Result<Option<(Epoch, String)>, PgError> {
    let row = s
        .query_one(
            OP,
            "SELECT to_regclass('failover.epoch') IS NOT NULL \
             AND to_regclass('failover.fence') IS NOT NULL",
        )
        .await?;
    let exists: bool = s.get(OP, &row, 0)?;
    if !exists {
        return Ok(None);
    }
    let e = epoch_sql(&s.node, epoch)?;
    let rows = s
        .query_with(
            OP,
            "SELECT epoch, 'a promotion of ' || node FROM failover.epoch \
               WHERE epoch > $1 OR (epoch = $1 AND node <> $2) \
             UNION ALL \
             SELECT epoch, 'a fence of ' || node FROM failover.fence \
               WHERE epoch > $1 AND node = $2 \
             ORDER BY 1 DESC LIMIT 1",
            &[&e, &node],
        )
        .await?;
    match rows.first() {
        None => Ok(None),
        Some(r) => {
            let found: i64 = s.get(OP, r, 0)?;
            let what: String = s.get(OP, r, 1)?;
            let found = u64::try_from(found)
                .map_err(|_| s.malformed(OP, format!("negative epoch {found}")))?;
            Ok(Some((Epoch(found), what)))
        }
    }
}

impl PgCluster {
    /// Lifts the fence placed at `epoch` on `node`: see the
    /// [module docs](crate::unfence) for the rule and the steps.
    pub async fn unfence(&self, node: NodeId, epoch: Epoch) -> Result<UnfenceReport, PgError> {
        let s = self.connect(node, OP).await?;
        s.admin_session(OP).await?;
        let row = s
            .query_one(
                OP,
                "SELECT pg_is_in_recovery(), \
                 (SELECT reset_val FROM pg_settings WHERE name = 'default_transaction_read_only') = 'on'",
            )
            .await?;
        let in_recovery: bool = s.get(OP, &row, 0)?;
        // reset_val: the configured value; `setting` is this admin session's
        // own `off`.
        let was_read_only: bool = s.get(OP, &row, 1)?;
        if in_recovery {
            return Err(PgError::NotAPrimary {
                node: s.node.clone(),
            });
        }
        // Every reachable node: a promotion that happened elsewhere lives on
        // the new primary and its replicas, not on the fenced node.
        for n in self.all_nodes() {
            let other = match self.connect(n.id, OP).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(on = %n.name, error = %e, "unfence: epochs not read, node skipped");
                    continue;
                }
            };
            if let Some((recorded, what)) = owner_after(&other, &s.node, epoch).await? {
                return Err(self.refuse_unfence(&s.node, epoch, recorded, what, &n.name));
            }
        }
        let roles = self.restore_logins(&s, epoch).await?;
        // Separate statements: ALTER SYSTEM refuses to run in a transaction.
        s.batch(OP, "ALTER SYSTEM RESET default_transaction_read_only")
            .await?;
        s.batch(OP, "SELECT pg_reload_conf()").await?;
        self.wait_writable(node).await?;
        tracing::warn!(node = %s.node, %epoch, ?roles, was_read_only, "fence lifted: node takes writes again");
        metrics::counter!("failover_pg_unfences_total").increment(1);
        Ok(UnfenceReport {
            node,
            epoch,
            roles_restored: roles,
            was_read_only,
        })
    }

    fn refuse_unfence(
        &self,
        node: &str,
        epoch: Epoch,
        recorded: Epoch,
        what: String,
        on: &str,
    ) -> PgError {
        tracing::warn!(node, %epoch, %recorded, what, on, "unfence refused: a later epoch owns the writer role");
        metrics::counter!("failover_pg_stale_epoch_refused_total").increment(1);
        PgError::StaleEpoch {
            node: node.to_owned(),
            requested: epoch,
            recorded,
            recorded_on: format!("{on} ({what})"),
        }
    }

    async fn restore_logins(&self, s: &Session, epoch: Epoch) -> Result<Vec<String>, PgError> {
        let row = s
            .query_one(OP, "SELECT to_regclass('failover.fence') IS NOT NULL")
            .await?;
        let exists: bool = s.get(OP, &row, 0)?;
        if !exists {
            return Ok(Vec::new());
        }
        let e = epoch_sql(&s.node, epoch)?;
        s.batch(
            OP,
            "BEGIN; LOCK TABLE failover.epoch, failover.fence IN EXCLUSIVE MODE",
        )
        .await?;
        let result = async {
            if let Some((recorded, what)) = owner_after(s, &s.node, epoch).await? {
                return Err(self.refuse_unfence(&s.node, epoch, recorded, what, &s.node));
            }
            let rows = s
                .query_with(
                    OP,
                    "SELECT DISTINCT r FROM failover.fence f, unnest(f.roles) r \
                     WHERE NOT f.restored AND f.node = $1 AND f.epoch <= $2 \
                     AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) ORDER BY r",
                    &[&s.node, &e],
                )
                .await?;
            let mut roles = Vec::with_capacity(rows.len());
            for row in &rows {
                let role: String = s.get(OP, row, 0)?;
                s.batch(OP, &format!("ALTER ROLE {} LOGIN", quote_ident(&role)))
                    .await?;
                roles.push(role);
            }
            s.query_with(
                OP,
                "UPDATE failover.fence SET restored = true \
                 WHERE NOT restored AND node = $1 AND epoch <= $2",
                &[&s.node, &e],
            )
            .await?;
            Ok(roles)
        }
        .await;
        match result {
            Ok(roles) => {
                s.batch(OP, "COMMIT").await?;
                Ok(roles)
            }
            Err(err) => {
                let _ = s.batch(OP, "ROLLBACK").await;
                Err(err)
            }
        }
    }

    /// Waits until a new session on `node` starts read-write: the reload is
    /// asynchronous, and the caller's next write must not meet the old value.
    async fn wait_writable(&self, node: NodeId) -> Result<(), PgError> {
        let started = Instant::now();
        loop {
            let s = self.connect(node, OP).await?;
            let row = s
                .query_one(
                    OP,
                    "SELECT current_setting('default_transaction_read_only')",
                )
                .await?;
            let value: String = s.get(OP, &row, 0)?;
            if value == "off" {
                return Ok(());
            }
            if started.elapsed() > self.timeouts().statement {
                return Err(PgError::UnfenceIncomplete {
                    node: s.node.clone(),
                    reason: format!(
                        "default_transaction_read_only still {value} {:?} after the fence was lifted",
                        started.elapsed()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
