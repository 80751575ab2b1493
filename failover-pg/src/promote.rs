//! Promotion of a replica, gated by RPO and fencing epoch.

use std::time::{Duration, Instant};

use failover_core::{Epoch, Lsn, MaxRpo, NodeId, PromoteRequest, RpoGate};

use crate::cluster::Session;
use crate::epoch::{epoch_sql, read_epochs, SCHEMA_SQL};
use crate::fence::quote_ident;
use crate::status::read_status;
use crate::{NodeRole, NodeStatus, PgCluster, PgError, RpoReference};

const OP: &str = "promote";

impl PgCluster {
    /// Promotes `request.node`, starting on the spare session an observation
    /// opened to it when there is one (no connect on the critical path):
    /// 1. refuses a node that is not in recovery ([`PgError::NotAReplica`]) —
    ///    unless this very epoch promoted it (a retried call, see
    ///    "Retries" below), which returns its LSN again;
    /// 2. refuses a stale epoch ([`PgError::StaleEpoch`], naming both epochs)
    ///    against every reachable node (an unreachable one costs at most
    ///    `timeouts.connect` and is skipped);
    /// 3. checks the gate: `Within` compares the candidate's received WAL with
    ///    `reference` and its replay delay with `max` ([`PgError::LagExceeded`]
    ///    states the lag and where the reference came from); `CaughtUp` waits
    ///    up to `timeouts.catch_up` for replay to reach the LSN
    ///    ([`PgError::NotCaughtUp`]); `Forced` skips;
    ///
    ///    With `reference: None` (a restarted controller that never saw the
    ///    old primary) the reference is the best position a reachable node
    ///    reports: a reachable primary's flushed WAL, else the most WAL a
    ///    reachable replica received, the candidate included. This is
    ///    failover-core's rule too (its controller measures the lag against
    ///    the best replica when it has no primary position), so the two gates
    ///    admit the same candidates and a restart does not loop on refusals.
    ///    It bounds the loss against what survives, not against what the
    ///    dead primary may have written after its last report: keep a time
    ///    limit in `max` for that. With a byte limit and no position at all,
    ///    the gate refuses with [`PgError::RpoUnknown`] naming what is missing;
    /// 4. writes the intent `failover.promoting = 'EPOCH:TIMELINE'` to the
    ///    node's `postgresql.auto.conf` (`ALTER SYSTEM`, which a replica
    ///    accepts: it is a file, not WAL);
    ///    and, unless `request.synchronous` is off, the node's own
    ///    `synchronous_standby_names` for its term as writer (`''` for on,
    ///    `'*'` for strict): a setting inherited from a base backup or
    ///    `pg_rewind` may name a standby that is not there, or the node itself;
    /// 5. runs `pg_promote(wait => false)` and polls `pg_is_in_recovery()` every
    ///    5 ms (up to `timeouts.promote`), lifts a fence the node inherited
    ///    (read-only default, revoked `LOGIN`s), records the epoch in
    ///    `failover.epoch` in a transaction that is also the write check.
    ///
    /// Returns the last WAL position replayed from the old primary: every
    /// transaction up to it survived.
    ///
    /// # Retries
    /// `pg_promote` can take effect while the call fails before the epoch is
    /// recorded (a client timeout, a lost connection). A retry of the same
    /// request then finds a primary and returns `Ok` with the same LSN when
    /// - the node records this epoch for itself (the first call finished), or
    /// - the node still carries this epoch's intent and its timeline is above
    ///   the one the intent recorded (this request's `pg_promote` took
    ///   effect): the epoch is then checked against every reachable node
    ///   like a fresh request and recorded. The intent is left in place (it
    ///   matches only its own epoch, recorded by then); the next promotion
    ///   overwrites it and [`rejoin`](fn@crate::rejoin) drops it.
    ///
    /// Any other primary is refused with [`PgError::NotAReplica`]: a node
    /// promoted by another epoch (or by hand) is never given this epoch.
    ///
    /// The epoch record is committed with `synchronous_commit = local`: it is
    /// durable on the new primary's disk even when that node's own
    /// `synchronous_standby_names` names standbys that are not attached yet
    /// (application writes would wait for them; configure it accordingly).
    pub async fn promote(&self, request: &PromoteRequest) -> Result<Lsn, PgError> {
        let started = Instant::now();
        let s = self.promotion_session(request.node).await?;
        let status = read_status(&s).await?;
        if status.role == NodeRole::Primary {
            return self.already_promoted(&s, request, status.timeline).await;
        }
        if let Some(wait) = status
            .retrieve_retry_interval
            .filter(|w| *w > Duration::from_millis(200))
        {
            // PostgreSQL 15 acts on the promotion only when this wait ends.
            tracing::warn!(node = %s.node, ?wait,
                "wal_retrieve_retry_interval may delay this promotion by up to {wait:?} after \
                 the primary's death; set it to 50-100ms on every node");
            metrics::counter!("failover_pg_slow_retrieve_retry_total").increment(1);
        }
        self.check_epoch(&s.node, request.epoch).await?;
        self.check_gate(&s, request.gate).await?;
        write_intent(&s, request.epoch, status.timeline).await?;
        self.prepare_synchronous(&s, request.synchronous).await?;

        // `pg_promote(wait => true)` checks for the end of recovery every
        // 100 ms; polling ourselves every 5 ms saves most of one such step.
        let row = s.query_one(OP, "SELECT pg_promote(wait => false)").await?;
        let signalled: bool = s.get(OP, &row, 0)?;
        if !signalled {
            return Err(PgError::PromotionFailed {
                node: s.node.clone(),
                reason: "pg_promote could not signal the postmaster".into(),
            });
        }
        let promoting = Instant::now();
        loop {
            let row = s.query_one(OP, "SELECT pg_is_in_recovery()").await?;
            let in_recovery: bool = s.get(OP, &row, 0)?;
            if !in_recovery {
                break;
            }
            if promoting.elapsed() >= self.timeouts().promote {
                return Err(PgError::PromotionFailed {
                    node: s.node.clone(),
                    reason: format!(
                        "still in recovery {:?} after pg_promote",
                        self.timeouts().promote
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let row = s
            .query_one(
                OP,
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_current_wal_lsn()::text",
            )
            .await?;
        let in_recovery: bool = s.get(OP, &row, 0)?;
        if in_recovery {
            return Err(PgError::PromotionFailed {
                node: s.node.clone(),
                reason: "still in recovery after pg_promote returned true".into(),
            });
        }
        let lsn = promoted_lsn(&s, &row)?;
        self.lift_fence_and_record(&s, request.epoch, lsn).await?;
        let elapsed = started.elapsed();
        tracing::warn!(node = %s.node, epoch = %request.epoch, %lsn, ?elapsed, "node promoted");
        metrics::counter!("failover_pg_promotions_total").increment(1);
        metrics::histogram!("failover_pg_promote_seconds").record(elapsed.as_secs_f64());
        Ok(lsn)
    }

    /// The candidate's spare session, opened before it was needed, else a
    /// fresh one; set up as an admin session either way. A spare that fails
    /// its first statement (for any reason but a timeout) is replaced.
    async fn promotion_session(&self, node: NodeId) -> Result<Session, PgError> {
        if let Some(s) = self.observers().take_spare(node) {
            match s.admin_session(OP).await {
                Ok(()) => {
                    metrics::counter!("failover_pg_spare_sessions_used_total").increment(1);
                    return Ok(s);
                }
                Err(e @ PgError::Timeout { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(node = %s.node, error = %e, "spare session failed; connecting afresh")
                }
            }
        }
        let s = self.connect(node, OP).await?;
        s.admin_session(OP).await?;
        Ok(s)
    }

    /// A primary is fine only if this epoch promoted it (an idempotent
    /// retry): see "Retries" on [`promote`](Self::promote).
    async fn already_promoted(
        &self,
        s: &Session,
        request: &PromoteRequest,
        timeline: u32,
    ) -> Result<Lsn, PgError> {
        let epochs = read_epochs(s).await?;
        if epochs.promoted == Some(request.epoch) {
            let e = epoch_sql(&s.node, request.epoch)?;
            let rows = s
                .query_with(
                    OP,
                    "SELECT lsn FROM failover.epoch WHERE epoch = $1 AND node = $2",
                    &[&e, &s.node],
                )
                .await?;
            if let Some(row) = rows.first() {
                let lsn = s.lsn(OP, row, 0)?.unwrap_or_default();
                tracing::info!(node = %s.node, epoch = %request.epoch, "promotion already done");
                return Ok(lsn);
            }
        }
        match read_intent(s).await? {
            Some((epoch, before)) if epoch == request.epoch && timeline > before => {
                tracing::warn!(node = %s.node, %epoch, before, timeline,
                    "promotion took effect but its epoch was not recorded: recording it now");
                self.check_epoch(&s.node, request.epoch).await?;
                let row = s
                    .query_one(
                        OP,
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
                         pg_current_wal_lsn()::text",
                    )
                    .await?;
                let lsn = promoted_lsn(s, &row)?;
                self.lift_fence_and_record(s, request.epoch, lsn).await?;
                metrics::counter!("failover_pg_promotions_completed_on_retry_total").increment(1);
                Ok(lsn)
            }
            intent => {
                tracing::warn!(node = %s.node, epoch = %request.epoch, ?intent, timeline,
                    promoted = ?epochs.promoted, "promotion refused: node is a primary this epoch did not promote");
                Err(PgError::NotAReplica {
                    node: s.node.clone(),
                })
            }
        }
    }

    async fn check_gate(&self, s: &Session, gate: RpoGate) -> Result<(), PgError> {
        match gate {
            RpoGate::Forced => {
                tracing::warn!(node = %s.node, "promotion forced: RPO gate skipped");
                Ok(())
            }
            RpoGate::Within { max, reference } => {
                let st = read_status(s).await?;
                let reference = match reference {
                    Some(r) => RpoReference::Controller(r),
                    None => self.best_known_position(&st).await,
                };
                match within_gate(max, reference, st.received(), st.replay_delay) {
                    Gate::Admit(lag_bytes) => {
                        tracing::info!(node = %s.node, ?lag_bytes, %reference, delay = ?st.replay_delay, ?max, "RPO gate passed");
                        Ok(())
                    }
                    Gate::Unknown(missing) => {
                        tracing::warn!(node = %s.node, %reference, ?max, missing, "promotion refused: loss cannot be measured");
                        metrics::counter!("failover_pg_rpo_refused_total").increment(1);
                        Err(PgError::RpoUnknown {
                            node: s.node.clone(),
                            missing: missing.to_owned(),
                            max,
                        })
                    }
                    Gate::Exceeded(lag_bytes) => {
                        tracing::warn!(node = %s.node, ?lag_bytes, %reference, delay = ?st.replay_delay, ?max, "promotion refused by RPO gate");
                        metrics::counter!("failover_pg_rpo_refused_total").increment(1);
                        Err(PgError::LagExceeded {
                            node: s.node.clone(),
                            lag_bytes,
                            received: st.received(),
                            reference,
                            delay: st.replay_delay,
                            max,
                        })
                    }
                }
            }
            RpoGate::CaughtUp { lsn } => self.wait_replayed(s, lsn).await,
            RpoGate::Synchronous => {
                tracing::info!(node = %s.node, "RPO gate passed: the candidate is a synchronous standby the old primary required, so it has every acknowledged commit");
                Ok(())
            }
        }
    }

    /// The most WAL any reachable node reports, and where: a primary's
    /// flushed position, a replica's received one (`candidate` is the
    /// candidate's status, already read). Unreachable nodes are skipped.
    async fn best_known_position(&self, candidate: &NodeStatus) -> RpoReference {
        let reads = self
            .all_nodes()
            .iter()
            .filter(|n| n.id != candidate.node)
            .map(|n| async move { (n.name.clone(), self.status(n.id).await) });
        let statuses = futures::future::join_all(reads).await;
        let known = statuses
            .into_iter()
            .filter_map(|(name, r)| match r {
                Ok(st) => Some(st),
                Err(e) => {
                    tracing::debug!(on = %name, error = %e, "RPO reference: node skipped");
                    None
                }
            })
            .chain(std::iter::once(candidate.clone()));
        let mut best = RpoReference::Nowhere;
        for st in known {
            let position = match st.role {
                NodeRole::Primary => st
                    .flush_lsn
                    .or(st.current_lsn)
                    .map(|lsn| RpoReference::Flushed { node: st.node, lsn }),
                NodeRole::Replica => st
                    .received()
                    .map(|lsn| RpoReference::Received { node: st.node, lsn }),
            };
            if let Some(p) = position {
                if best.lsn() < p.lsn() {
                    best = p;
                }
            }
        }
        best
    }

    /// Waits (bounded by `timeouts.catch_up`) until the replica behind `s`
    /// has replayed `lsn`.
    pub(crate) async fn wait_replayed(&self, s: &Session, lsn: Lsn) -> Result<(), PgError> {
        let started = Instant::now();
        let mut replayed = None;
        while started.elapsed() <= self.timeouts().catch_up {
            let row = s
                .query_one(OP, "SELECT pg_last_wal_replay_lsn()::text")
                .await?;
            replayed = s.lsn(OP, &row, 0)?;
            if replayed.is_some_and(|r| r >= lsn) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(PgError::NotCaughtUp {
            node: s.node.clone(),
            replayed,
            required: lsn,
            waited: started.elapsed(),
        })
    }

    /// On the freshly promoted node: lift an inherited fence and record the
    /// epoch, both in one transaction that re-checks the epoch under a lock.
    async fn lift_fence_and_record(
        &self,
        s: &Session,
        epoch: Epoch,
        lsn: Lsn,
    ) -> Result<(), PgError> {
        let e = epoch_sql(&s.node, epoch)?;
        // Separate statements: ALTER SYSTEM refuses to run in the implicit
        // transaction of a multi-statement batch.
        s.batch(OP, "ALTER SYSTEM RESET default_transaction_read_only")
            .await?;
        s.batch(OP, "SELECT pg_reload_conf()").await?;
        s.batch(OP, SCHEMA_SQL).await?;
        s.batch(
            OP,
            "BEGIN; LOCK TABLE failover.epoch, failover.fence IN EXCLUSIVE MODE",
        )
        .await?;
        let result = async {
            if let Some(recorded) = read_epochs(s).await?.refuses(epoch) {
                return Err(PgError::StaleEpoch {
                    node: s.node.clone(),
                    requested: epoch,
                    recorded,
                    recorded_on: s.node.clone(),
                });
            }
            let rows = s
                .query_with(
                    OP,
                    "SELECT DISTINCT r FROM failover.fence f, unnest(f.roles) r \
                     WHERE NOT f.restored AND f.node <> $1 \
                     AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)",
                    &[&s.node],
                )
                .await?;
            for row in &rows {
                let role: String = s.get(OP, row, 0)?;
                s.batch(OP, &format!("ALTER ROLE {} LOGIN", quote_ident(&role)))
                    .await?;
                tracing::info!(node = %s.node, role, "LOGIN restored after inherited fence");
            }
            s.query_with(
                OP,
                "UPDATE failover.fence SET restored = true WHERE NOT restored AND node <> $1",
                &[&s.node],
            )
            .await?;
            let lsn_text = lsn.to_string();
            s.query_with(
                OP,
                "INSERT INTO failover.epoch (epoch, node, lsn) VALUES ($1, $2, $3)",
                &[&e, &s.node, &lsn_text],
            )
            .await?;
            Ok(())
        }
        .await;
        match result {
            // The intent stays in postgresql.auto.conf: removing it here
            // would delay the call's return past the moment observers see
            // the recorded epoch, and it is harmless (it matches only this
            // epoch, now recorded). The next promotion overwrites it and a
            // rejoin drops it.
            Ok(()) => s.batch(OP, "COMMIT").await,
            Err(err) => {
                let _ = s.batch(OP, "ROLLBACK").await;
                Err(err)
            }
        }
    }
}

/// What the `Within` gate decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Within `max`; the lag in bytes when measured.
    Admit(Option<u64>),
    /// Measured, and beyond `max`.
    Exceeded(Option<u64>),
    /// `max` sets a limit that cannot be checked: what is missing.
    Unknown(&'static str),
}

/// The `Within` gate's rule, given the reference (the controller's, or the
/// best reachable position), the most WAL the candidate holds and its replay
/// delay: each limit `max` sets needs its evidence, else the gate says what
/// is missing instead of refusing for ever as if the lag were too high.
fn within_gate(
    max: MaxRpo,
    reference: RpoReference,
    received: Option<Lsn>,
    delay: Option<Duration>,
) -> Gate {
    let lag = reference
        .lsn()
        .and_then(|r| received.map(|rcv| r.bytes_after(rcv)));
    if max.bytes.is_some() && lag.is_none() {
        return Gate::Unknown(if received.is_none() {
            "the candidate's WAL position: it reports neither a received nor a replayed LSN"
        } else {
            "a reference position: none was given and no reachable node reports a WAL position"
        });
    }
    if max.time.is_some() && delay.is_none() {
        return Gate::Unknown(
            "the candidate's replay delay: pg_last_xact_replay_timestamp() is null \
             (no transaction replayed since it started)",
        );
    }
    if max.admits(lag.unwrap_or(0), delay) {
        Gate::Admit(lag)
    } else {
        Gate::Exceeded(lag)
    }
}

/// The LSN a promotion returns from a row of `pg_is_in_recovery()`,
/// `pg_last_wal_replay_lsn()`, `pg_current_wal_lsn()`: the last replayed
/// position (static once recovery ended), else the current one.
fn promoted_lsn(s: &Session, row: &tokio_postgres::Row) -> Result<Lsn, PgError> {
    Ok(s.lsn(OP, row, 1)?
        .or(s.lsn(OP, row, 2)?)
        .unwrap_or_default())
}

/// The setting that carries a promotion's intent in `postgresql.auto.conf`.
/// A custom (dotted) name: `ALTER SYSTEM` takes it once the session has
/// defined the placeholder with `SET`.
pub(crate) const INTENT_SETTING: &str = "failover.promoting";

/// Records on the replica behind `s`, before `pg_promote`, that `epoch` is
/// promoting it from `timeline`. Node-local (a file), durable across a
/// client timeout, a controller restart and a server restart.
async fn write_intent(s: &Session, epoch: Epoch, timeline: u32) -> Result<(), PgError> {
    s.batch(OP, &format!("SET {INTENT_SETTING} = ''")).await?;
    // Separate statements: ALTER SYSTEM refuses to run in a transaction.
    s.batch(
        OP,
        &format!(
            "ALTER SYSTEM SET {INTENT_SETTING} = '{}:{timeline}'",
            epoch.0
        ),
    )
    .await?;
    s.batch(OP, "SELECT pg_reload_conf()").await
}

/// The intent on the node behind `s`: `(epoch, timeline before)`.
async fn read_intent(s: &Session) -> Result<Option<(Epoch, u32)>, PgError> {
    let row = s
        .query_one(
            OP,
            &format!("SELECT current_setting('{INTENT_SETTING}', true)"),
        )
        .await?;
    let text: Option<String> = s.get(OP, &row, 0)?;
    Ok(text.as_deref().and_then(parse_intent))
}

fn parse_intent(text: &str) -> Option<(Epoch, u32)> {
    let (epoch, timeline) = text.split_once(':')?;
    Some((Epoch(epoch.parse().ok()?), timeline.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_within_gate_needs_evidence_for_each_limit_and_says_what_is_missing() {
        let bytes = MaxRpo::bytes(100);
        let time = MaxRpo {
            bytes: None,
            time: Some(Duration::from_secs(5)),
        };
        let from_replica = RpoReference::Received {
            node: failover_core::NodeId(2),
            lsn: Lsn(1_000),
        };
        let d = Some(Duration::from_secs(1));
        // Against the best reachable position (no reference from the controller).
        assert_eq!(
            within_gate(bytes, from_replica, Some(Lsn(950)), d),
            Gate::Admit(Some(50))
        );
        assert_eq!(
            within_gate(bytes, from_replica, Some(Lsn(1_000)), None),
            Gate::Admit(Some(0))
        );
        assert_eq!(
            within_gate(bytes, from_replica, Some(Lsn(800)), d),
            Gate::Exceeded(Some(200))
        );
        // Ahead of the reference: no loss.
        assert_eq!(
            within_gate(bytes, RpoReference::Controller(Lsn(10)), Some(Lsn(20)), d),
            Gate::Admit(Some(0))
        );
        // Nothing to measure against: says so, never loops as "too far behind".
        assert!(matches!(
            within_gate(bytes, RpoReference::Nowhere, Some(Lsn(1)), d),
            Gate::Unknown(m) if m.starts_with("a reference position")
        ));
        assert!(matches!(
            within_gate(bytes, RpoReference::Controller(Lsn(1)), None, d),
            Gate::Unknown(m) if m.starts_with("the candidate's WAL position")
        ));
        // A time limit needs a replay delay, not a reference.
        assert_eq!(
            within_gate(time, RpoReference::Nowhere, None, d),
            Gate::Admit(None)
        );
        assert_eq!(
            within_gate(
                time,
                RpoReference::Nowhere,
                None,
                Some(Duration::from_secs(9))
            ),
            Gate::Exceeded(None)
        );
        assert!(matches!(
            within_gate(time, from_replica, Some(Lsn(1_000)), None),
            Gate::Unknown(m) if m.contains("replay delay")
        ));
    }

    #[test]
    fn intent_parses_epoch_and_timeline_and_nothing_else() {
        assert_eq!(parse_intent("7:3"), Some((Epoch(7), 3)));
        assert_eq!(parse_intent(""), None);
        assert_eq!(parse_intent("7"), None);
        assert_eq!(parse_intent("x:3"), None);
        assert_eq!(parse_intent("7:-1"), None);
    }
}
