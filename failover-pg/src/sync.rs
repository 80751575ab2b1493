//! The writer's synchronous standbys: `synchronous_standby_names`, set so
//! that the controller may rely on it.
//!
//! A standby's `application_name` must be its node name (the testkit's
//! replicas use their `cluster_name`, which is the default).

use std::time::{Duration, Instant};

use failover_core::{Epoch, FencingToken, NodeId, SyncSet, Synchronous};

use crate::cluster::Session;
use crate::epoch::read_epochs;
use crate::fence::quote_ident;
use crate::status::read_status;
use crate::{NodeRole, PgCluster, PgError};

const OP: &str = "set synchronous standbys";

/// The advisory lock that serialises configurations of one node, so a
/// token check and the setting it admits are never interleaved with
/// another's (an arbitrary constant: "fo-sync").
const SYNC_LOCK: i64 = 0x0066_6f2d_7379_6e63;

/// The newest leadership token that configured the node's synchronous
/// standbys: one row, kept in the database so it survives restarts and
/// follows the node's data.
const SYNC_TOKEN_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS failover; \
CREATE TABLE IF NOT EXISTS failover.sync_token ( \
  id int PRIMARY KEY CHECK (id = 1), token bigint NOT NULL, \
  recorded_at timestamptz NOT NULL DEFAULT now());";

/// The `synchronous_standby_names` value that requires every one of `names`
/// (`FIRST n (…)` with n their count); `''` for none.
pub fn synchronous_standby_names(names: &[&str]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
    format!("FIRST {} ({})", names.len(), list.join(", "))
}

impl PgCluster {
    /// Makes the primary `node` (which must carry `epoch`) require exactly
    /// `standbys` for every commit it acknowledges, and returns once that is
    /// in effect:
    ///
    /// 1. refuses a node that is not a primary ([`PgError::NotAPrimary`]) or
    ///    that records another promotion epoch ([`PgError::StaleEpoch`]);
    ///    with a `token` (a coordinated leader's), refuses one older than
    ///    the newest that configured the node ([`PgError::StaleToken`]) and
    ///    records it — under an advisory lock held until step 2 is done, in
    ///    a transaction committed locally (`synchronous_commit = local`: it
    ///    must not wait for the standby it may be dropping);
    /// 2. `ALTER SYSTEM SET synchronous_standby_names = 'FIRST n (…)'`
    ///    (`''` for none) and `pg_reload_conf()`;
    /// 3. with standbys: waits until this session sees the new value (the
    ///    postmaster passed the reload on), then runs `CHECKPOINT`, which the
    ///    checkpointer serves only after handling its pending reload — and
    ///    the checkpointer is the process that tells committing backends to
    ///    wait for standbys at all;
    /// 4. waits until every standby is a streaming `sync` standby in
    ///    `pg_stat_replication` and has flushed the WAL the primary had
    ///    flushed after step 3: every commit acknowledged before the
    ///    setting took effect is then on every standby, and every later one
    ///    waits for them.
    ///
    /// Steps 3–4 wait at most `timeouts.catch_up`
    /// ([`PgError::NotSynchronous`] says which standby, in which state).
    /// On that failure the previous setting is put back (with a `token`,
    /// only if no newer leader configured the node meanwhile): the new
    /// standbys were never recorded as synchronous, so nothing relies on
    /// them, and a writer left requiring a standby that is not there would
    /// acknowledge no commit at all.
    /// Dropping standbys returns after step 2: until the reload is
    /// processed the old, stricter setting applies.
    pub async fn set_synchronous(
        &self,
        node: NodeId,
        epoch: Epoch,
        standbys: SyncSet,
        token: Option<FencingToken>,
    ) -> Result<(), PgError> {
        let started = Instant::now();
        let s = self.connect(node, OP).await?;
        s.admin_session(OP).await?;
        // Our own bookkeeping never waits for a standby.
        s.batch(OP, "SET synchronous_commit = local").await?;
        let status = read_status(&s).await?;
        if status.role != NodeRole::Primary {
            return Err(PgError::NotAPrimary {
                node: s.node.clone(),
            });
        }
        let recorded = read_epochs(&s).await?.promoted.unwrap_or(Epoch(0));
        if recorded != epoch {
            return Err(PgError::StaleEpoch {
                node: s.node.clone(),
                requested: epoch,
                recorded,
                recorded_on: s.node.clone(),
            });
        }
        let mut names = Vec::with_capacity(standbys.len() as usize);
        for id in standbys.iter() {
            names.push(self.node_name(id).ok_or_else(|| PgError::Malformed {
                node: s.node.clone(),
                operation: OP,
                reason: format!("standby {id} is not in the cluster"),
            })?);
        }
        let value = synchronous_standby_names(&names);
        let previous = current_names(&s).await?;
        if let Some(token) = token {
            s.batch(OP, &format!("SELECT pg_advisory_lock({SYNC_LOCK})"))
                .await?;
            check_and_record_token(&s, token).await?;
        }
        set_names(&s, &value).await?;
        if token.is_some() {
            s.batch(OP, &format!("SELECT pg_advisory_unlock({SYNC_LOCK})"))
                .await?;
        }
        if names.is_empty() {
            tracing::warn!(node = %s.node, %epoch, "synchronous standbys dropped: commits are acknowledged without a standby");
            return Ok(());
        }
        let deadline = started + self.timeouts().catch_up;
        if let Err(e) = wait_until(&s, deadline, &value, &names).await {
            revert(&s, &previous, &value, token, &e).await;
            return Err(e);
        }
        let elapsed = started.elapsed();
        tracing::info!(node = %s.node, %epoch, standbys = %value, ?elapsed, "synchronous standbys in effect");
        metrics::histogram!("failover_pg_set_synchronous_seconds").record(elapsed.as_secs_f64());
        Ok(())
    }

    /// Sets a replica's `synchronous_standby_names` for the start of its
    /// term as writer, before its promotion: `on` starts asynchronous
    /// (`''`), `strict` requires any one standby (`'*'`), `off` leaves the
    /// setting alone.
    pub(crate) async fn prepare_synchronous(
        &self,
        s: &Session,
        mode: Synchronous,
    ) -> Result<(), PgError> {
        match mode {
            Synchronous::Off => Ok(()),
            Synchronous::On => set_names(s, "").await,
            Synchronous::Strict => set_names(s, "*").await,
        }
    }
}

/// Refuses `token` if the node was configured under a newer one; records it
/// otherwise. The caller holds the advisory lock.
async fn check_and_record_token(s: &Session, token: FencingToken) -> Result<(), PgError> {
    let requested = i64::try_from(token.0)
        .map_err(|_| s.malformed(OP, format!("{token} does not fit a bigint")))?;
    s.batch(OP, SYNC_TOKEN_SQL).await?;
    if let Some(recorded) = recorded_token(s).await? {
        if recorded > requested {
            tracing::warn!(node = %s.node, %token, recorded, "synchronous configuration refused: a newer leader configured this node");
            return Err(PgError::StaleToken {
                node: s.node.clone(),
                requested: token,
                recorded: FencingToken(recorded as u64),
            });
        }
    }
    s.query_with(
        OP,
        "INSERT INTO failover.sync_token (id, token) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token, recorded_at = now()",
        &[&requested],
    )
    .await?;
    Ok(())
}

/// The newest token that configured the node, if one is recorded. The
/// table exists: `check_and_record_token` created it.
async fn recorded_token(s: &Session) -> Result<Option<i64>, PgError> {
    let rows = s
        .query_with(
            OP,
            "SELECT token FROM failover.sync_token WHERE id = 1",
            &[],
        )
        .await?;
    rows.first().map(|row| s.get(OP, row, 0)).transpose()
}

async fn current_names(s: &Session) -> Result<String, PgError> {
    let row = s
        .query_one(OP, "SELECT current_setting('synchronous_standby_names')")
        .await?;
    s.get(OP, &row, 0)
}

/// Puts `previous` back after `value` did not take effect (`why`); with a
/// `token`, only if it is still the newest that configured the node.
/// Best effort: a failure is logged, and the caller reports `why` anyway.
async fn revert(
    s: &Session,
    previous: &str,
    value: &str,
    token: Option<FencingToken>,
    why: &PgError,
) {
    let reverted = async {
        if let Some(token) = token {
            s.batch(OP, &format!("SELECT pg_advisory_lock({SYNC_LOCK})"))
                .await?;
            let recorded = recorded_token(s).await?;
            let ours = i64::try_from(token.0).ok();
            let still_ours = recorded.is_none() || recorded == ours;
            if still_ours {
                set_names(s, previous).await?;
            }
            s.batch(OP, &format!("SELECT pg_advisory_unlock({SYNC_LOCK})"))
                .await?;
            Ok::<bool, PgError>(still_ours)
        } else {
            set_names(s, previous).await.map(|()| true)
        }
    };
    match reverted.await {
        Ok(true) => tracing::warn!(
            node = %s.node,
            standbys = %value,
            %previous,
            error = %why,
            "synchronous standbys {value:?} not in effect in time ({why}); put back {previous:?}, so the writer does not hold every commit for a standby that is not there"
        ),
        Ok(false) => tracing::warn!(
            node = %s.node,
            standbys = %value,
            "synchronous standbys {value:?} not in effect in time ({why}); a newer leader configured the node since, so its setting stays"
        ),
        Err(e) => tracing::error!(
            node = %s.node,
            standbys = %value,
            error = %e,
            "synchronous standbys {value:?} not in effect in time ({why}), and putting back {previous:?} failed: {e}; the writer may hold commits until the controller configures it again"
        ),
    }
}

async fn set_names(s: &Session, value: &str) -> Result<(), PgError> {
    // Separate statements: ALTER SYSTEM refuses to run in a transaction.
    s.batch(
        OP,
        &format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{}'",
            value.replace('\'', "''")
        ),
    )
    .await?;
    s.batch(OP, "SELECT pg_reload_conf()").await
}

async fn wait_until(
    s: &Session,
    deadline: Instant,
    value: &str,
    names: &[&str],
) -> Result<(), PgError> {
    let poll = Duration::from_millis(10);
    // 3. This backend sees the reload, so the postmaster has passed it on.
    loop {
        let row = s
            .query_one(OP, "SELECT current_setting('synchronous_standby_names')")
            .await?;
        let current: String = s.get(OP, &row, 0)?;
        if current == value {
            break;
        }
        if Instant::now() >= deadline {
            return Err(not_synchronous(s, names[0], "the reload was not seen"));
        }
        tokio::time::sleep(poll).await;
    }
    s.batch(OP, "CHECKPOINT").await?;
    // 4. Every standby streams synchronously and has flushed all the
    // primary had flushed once the setting was in effect.
    let mut target = None;
    loop {
        let status = read_status(s).await?;
        let target_lsn = *target.get_or_insert(status.flush_lsn);
        let mut missing = None;
        for name in names {
            match status.replicas.iter().find(|r| r.application_name == *name) {
                None => missing = Some((*name, "not connected".to_owned())),
                Some(r) if r.state != "streaming" || r.sync_state != "sync" => {
                    missing = Some((*name, format!("{} / {}", r.state, r.sync_state)));
                    // Measured again once it is synchronous.
                    target = None;
                }
                Some(r) if r.flush_lsn < target_lsn => {
                    missing = Some((
                        *name,
                        format!(
                            "flushed {} of {}",
                            r.flush_lsn.map_or("nothing".to_owned(), |l| l.to_string()),
                            target_lsn.map_or("?".to_owned(), |l| l.to_string())
                        ),
                    ));
                }
                Some(_) => {}
            }
            if missing.is_some() {
                break;
            }
        }
        let Some((name, state)) = missing else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(not_synchronous(s, name, &state));
        }
        tokio::time::sleep(poll).await;
    }
}

fn not_synchronous(s: &Session, standby: &str, state: &str) -> PgError {
    PgError::NotSynchronous {
        node: s.node.clone(),
        standby: standby.to_owned(),
        state: state.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::synchronous_standby_names;

    #[test]
    fn names_require_every_standby() {
        assert_eq!(synchronous_standby_names(&[]), "");
        assert_eq!(
            synchronous_standby_names(&["pg-west"]),
            "FIRST 1 (\"pg-west\")"
        );
        assert_eq!(
            synchronous_standby_names(&["a", "b\"c"]),
            "FIRST 2 (\"a\", \"b\"\"c\")"
        );
    }
}
