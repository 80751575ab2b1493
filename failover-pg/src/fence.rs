//! Fencing: making an old primary provably stop accepting writes.
//!
//! # Mechanism
//! [`PgCluster::fence`] connects to the node as the superuser and, in order:
//! 1. in **one transaction** (with `synchronous_commit = local`, so it cannot
//!    hang on a standby that is gone): checks the epoch is not stale, sets
//!    `NOLOGIN` on every login role that is neither a superuser nor a
//!    replication role, and records the epoch and those roles in
//!    `failover.fence`;
//! 2. `ALTER SYSTEM SET default_transaction_read_only = on` and
//!    `pg_reload_conf()`, so every new transaction of every remaining session
//!    starts read-only;
//! 3. terminates every other client backend (`pg_terminate_backend(pid, 1000)`,
//!    which waits for the exit) and repeats until a round finds no session of
//!    a fenced role (at least two rounds, 100 ms apart: a backend that passed
//!    authentication just before step 1 committed is caught by the second).
//!
//! After it returns `Ok`, an application role can neither keep a session (all
//! were terminated; an open transaction was rolled back, never committed) nor
//! open a new one (no `LOGIN`). `default_transaction_read_only` alone would not
//! be enough — any client can `SET default_transaction_read_only = off` or
//! `BEGIN READ WRITE` — so it is only a second layer here.
//!
//! Step 3 terminates *every* other client backend, superuser sessions
//! included (their open transactions roll back too); a monitoring or
//! controller session on the node simply reconnects.
//!
//! # Limits
//! - Superusers and replication roles keep `LOGIN` (the controller itself and
//!   the replicas need them). Applications must not write as a superuser.
//! - Steps 1's catalog changes are WAL-logged, so a replica that is still
//!   streaming receives the `NOLOGIN` too. [`PgCluster::promote`] restores
//!   `LOGIN` for the roles recorded in `failover.fence` on the node it promotes.
//!   `ALTER SYSTEM` is a file, not WAL: replicas do not inherit it.
//! - An unreachable node cannot be fenced: the call fails with
//!   [`PgError::Unreachable`] (`Unavailable`). Then the epoch recorded on the
//!   new primary and the runtime's DNS move are the fence: clients are sent to
//!   the new primary, and a controller resuming with an older epoch is refused.
//!   Powering the old machine off (STONITH) is out of scope of this crate.
//! - A commit whose record was flushed before the fence is committed on the
//!   old primary; whether the new primary has it is the RPO question
//!   (synchronous replication or a zero-loss switchover make it zero).

use std::time::{Duration, Instant};

use failover_core::{Epoch, Lsn, NodeId};

use crate::cluster::Session;
use crate::epoch::{epoch_sql, read_epochs, SCHEMA_SQL};
use crate::{PgCluster, PgError};

const OP: &str = "fence";

/// What a fence did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceReport {
    /// The fenced node.
    pub node: NodeId,
    /// The epoch recorded.
    pub epoch: Epoch,
    /// Roles whose `LOGIN` was revoked by this call.
    pub roles_revoked: Vec<String>,
    /// Client sessions terminated.
    pub sessions_terminated: u64,
    /// `pg_current_wal_flush_lsn()` after the fence: every write the node
    /// ever acknowledged is at or before it. `None` if the node was a replica.
    pub flush_lsn: Option<Lsn>,
}

/// SQL identifier quoting.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PgCluster {
    /// Fences `node` with `epoch`: see the [module docs](crate::fence) for the
    /// mechanism and its limits. Idempotent: fencing again with the same
    /// epoch succeeds. A replica is already read-only and is left as is.
    pub async fn fence(&self, node: NodeId, epoch: Epoch) -> Result<FenceReport, PgError> {
        let s = self.connect(node, OP).await?;
        s.admin_session(OP).await?;
        let row = s.query_one(OP, "SELECT pg_is_in_recovery()").await?;
        let in_recovery: bool = s.get(OP, &row, 0)?;
        if in_recovery {
            tracing::info!(node = %s.node, "fence: node is a replica, already read-only");
            return Ok(FenceReport {
                node,
                epoch,
                roles_revoked: Vec::new(),
                sessions_terminated: 0,
                flush_lsn: None,
            });
        }
        s.batch(OP, SCHEMA_SQL).await?;
        let roles = self.revoke_and_record(&s, epoch).await?;
        // Separate statements: ALTER SYSTEM refuses to run in the implicit
        // transaction of a multi-statement batch.
        s.batch(OP, "ALTER SYSTEM SET default_transaction_read_only = on")
            .await?;
        s.batch(OP, "SELECT pg_reload_conf()").await?;
        let terminated = self.terminate_sessions(&s).await?;
        let row = s
            .query_one(OP, "SELECT pg_current_wal_flush_lsn()::text")
            .await?;
        let flush_lsn = s.lsn(OP, &row, 0)?;
        tracing::warn!(node = %s.node, %epoch, ?roles, terminated, ?flush_lsn, "node fenced");
        metrics::counter!("failover_pg_fences_total").increment(1);
        Ok(FenceReport {
            node,
            epoch,
            roles_revoked: roles,
            sessions_terminated: terminated,
            flush_lsn,
        })
    }

    async fn revoke_and_record(&self, s: &Session, epoch: Epoch) -> Result<Vec<String>, PgError> {
        let e = epoch_sql(&s.node, epoch)?;
        s.batch(
            OP,
            "BEGIN; LOCK TABLE failover.epoch, failover.fence IN EXCLUSIVE MODE",
        )
        .await?;
        let result = async {
            let recorded = read_epochs(s).await?;
            if let Some(r) = recorded.refuses(epoch) {
                return Err(PgError::StaleEpoch {
                    node: s.node.clone(),
                    requested: epoch,
                    recorded: r,
                    recorded_on: s.node.clone(),
                });
            }
            let rows = s
                .query(
                    OP,
                    "SELECT rolname::text FROM pg_roles WHERE rolcanlogin AND NOT rolsuper \
                     AND NOT rolreplication AND rolname <> current_user ORDER BY rolname",
                )
                .await?;
            let mut roles = Vec::with_capacity(rows.len());
            for r in &rows {
                roles.push(s.get::<String>(OP, r, 0)?);
            }
            for r in &roles {
                s.batch(OP, &format!("ALTER ROLE {} NOLOGIN", quote_ident(r)))
                    .await?;
            }
            s.query_with(
                OP,
                "INSERT INTO failover.fence (epoch, node, roles) VALUES ($1, $2, $3) \
                 ON CONFLICT (epoch, node) DO UPDATE SET roles = ARRAY( \
                   SELECT DISTINCT unnest(failover.fence.roles || excluded.roles))",
                &[&e, &s.node, &roles],
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
                // Best effort: the connection closes on drop anyway, which
                // rolls back too.
                let _ = s.batch(OP, "ROLLBACK").await;
                Err(err)
            }
        }
    }

    /// Terminates every other client backend until a round finds none of a
    /// non-superuser role left. Returns how many were terminated.
    async fn terminate_sessions(&self, s: &Session) -> Result<u64, PgError> {
        let deadline = Instant::now() + self.timeouts().statement;
        let mut terminated = 0u64;
        let mut rounds = 0u32;
        loop {
            let row = s
                .query_one(
                    OP,
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid, 1000)), \
                       count(*) FILTER (WHERE NOT r.rolsuper AND NOT r.rolreplication) \
                     FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid \
                     WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
                )
                .await?;
            let killed: i64 = s.get(OP, &row, 0)?;
            let app_sessions: i64 = s.get(OP, &row, 1)?;
            terminated += u64::try_from(killed).unwrap_or(0);
            rounds += 1;
            if rounds >= 2 && app_sessions == 0 {
                return Ok(terminated);
            }
            if Instant::now() > deadline {
                return Err(PgError::FenceIncomplete {
                    node: s.node.clone(),
                    reason: format!(
                        "{app_sessions} application session(s) still present after {rounds} rounds of pg_terminate_backend"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
