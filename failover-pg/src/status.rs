//! Replication status of one node: role, timeline, WAL positions, lag.

use std::sync::Arc;
use std::time::Duration;

use failover_core::{Epoch, Lsn, NodeId, NodeObservation};

use crate::cluster::Session;
use crate::epoch::read_epochs;
use crate::{PgCluster, PgError};

/// Whether a node writes or replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// `pg_is_in_recovery()` is false: the node accepts writes (unless fenced).
    Primary,
    /// In recovery: a streaming (or archive-replaying) replica.
    Replica,
}

/// One replica as its primary sees it (`pg_stat_replication`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaLag {
    /// The replica's `application_name` (its `cluster_name` by default).
    pub application_name: String,
    /// `streaming`, `catchup`, ...
    pub state: String,
    /// `sync`, `potential`, `quorum` or `async`.
    pub sync_state: String,
    /// WAL flushed on the replica.
    pub flush_lsn: Option<Lsn>,
    /// WAL replayed on the replica.
    pub replay_lsn: Option<Lsn>,
    /// `pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)`, bytes.
    pub replay_lag_bytes: Option<u64>,
    /// `replay_lag` as the primary measured it.
    pub replay_lag: Option<Duration>,
}

/// The replica's WAL receiver (`pg_stat_wal_receiver`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalReceiver {
    /// `streaming`, `starting`, `waiting`, ...
    pub status: String,
    /// The timeline being received.
    pub received_timeline: Option<u32>,
    /// Host of the upstream it streams from.
    pub sender_host: Option<String>,
    /// Port of the upstream.
    pub sender_port: Option<u16>,
    /// Last WAL position the upstream reported.
    pub latest_end_lsn: Option<Lsn>,
    /// `now() - last_msg_receipt_time`: how long ago the last message (WAL
    /// or keepalive) arrived from the upstream, on this node's clock.
    pub last_message_age: Option<Duration>,
}

/// Everything the adapter reads about a node in one observation.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// Primary or replica.
    pub role: NodeRole,
    /// The timeline: on a primary the one it writes (from its current WAL
    /// file name), on a replica the one it receives, else its last checkpoint's.
    pub timeline: u32,
    /// Primary only: `pg_current_wal_lsn()`.
    pub current_lsn: Option<Lsn>,
    /// Primary only: `pg_current_wal_flush_lsn()`, durable on local disk.
    pub flush_lsn: Option<Lsn>,
    /// Replica only: `pg_last_wal_receive_lsn()`.
    pub receive_lsn: Option<Lsn>,
    /// Replica only: `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<Lsn>,
    /// Replica only: received but not yet replayed, bytes.
    pub replay_backlog_bytes: Option<u64>,
    /// Replica only: `now() - pg_last_xact_replay_timestamp()`. Grows while
    /// the primary is idle too; it is an upper bound on lost time.
    pub replay_delay: Option<Duration>,
    /// Replica only: `pg_is_wal_replay_paused()`.
    pub replay_paused: bool,
    /// Replica only: the WAL receiver, if one runs.
    pub wal_receiver: Option<WalReceiver>,
    /// Replica only: `wal_retrieve_retry_interval`. After its primary dies
    /// a replica waits this long between attempts to find WAL — and
    /// PostgreSQL 15 acts on a promotion request only when the wait ends,
    /// so it bounds how long `pg_promote` takes after a crash (default 5 s;
    /// set it to 50–100 ms on every node).
    pub retrieve_retry_interval: Option<Duration>,
    /// Primary only: its replicas.
    pub replicas: Vec<ReplicaLag>,
    /// Primary only: how long commits have been waiting for a synchronous
    /// standby, `None` when none waits. PostgreSQL records no start for a
    /// wait, so this is the age of the oldest backend in wait event
    /// `SyncRep` (`now() - query_start`: a long statement's age counts too),
    /// capped by the time since the newest reply of a connected synchronous
    /// standby (`pg_stat_replication.reply_time`): a standby that still
    /// replies is not the one holding commits, whatever a statement's age.
    /// The price: under `remote_apply`, a standby whose replay stalls while
    /// it still receives keeps replying every `wal_receiver_status_interval`,
    /// so its stall shows only once that interval exceeds `fall` × `interval`.
    /// The core replaces a required standby that keeps commits waiting
    /// `fall` × `interval`. Reading other roles' sessions needs superuser or
    /// `pg_read_all_stats`, as every observation here does.
    pub sync_wait: Option<Duration>,
    /// The node's own promotion epoch: the highest one recorded in
    /// `failover.epoch` (a fence's epoch never counts, or a node fenced at
    /// a higher epoch could pass for a newer writer).
    pub epoch: Option<Epoch>,
    /// Whether the node is fenced (`default_transaction_read_only` is on).
    pub fenced: bool,
}

impl NodeStatus {
    /// The core's view of this status.
    pub fn observation(&self) -> NodeObservation {
        match self.role {
            NodeRole::Primary => NodeObservation::Primary {
                timeline: self.timeline,
                current_lsn: self.current_lsn.unwrap_or_default(),
                epoch: self.epoch,
                fenced: self.fenced,
                sync_wait: self.sync_wait,
            },
            NodeRole::Replica => NodeObservation::Replica {
                timeline: self.timeline,
                receive_lsn: self.receive_lsn,
                replay_lsn: self.replay_lsn,
                replay_delay: self.replay_delay,
                upstream_heard: self
                    .wal_receiver
                    .as_ref()
                    .filter(|w| w.status == "streaming")
                    .and_then(|w| w.last_message_age),
            },
        }
    }

    /// The most WAL this replica holds: received or, when it never streamed,
    /// replayed. Everything up to it survives a promotion.
    pub fn received(&self) -> Option<Lsn> {
        self.receive_lsn.max(self.replay_lsn)
    }

    /// Bytes of WAL this replica lacks compared with `reference` (the
    /// primary's position), `None` if it has no WAL position.
    pub fn lag_bytes_behind(&self, reference: Lsn) -> Option<u64> {
        self.received().map(|r| reference.bytes_after(r))
    }
}

/// Seconds (from SQL, possibly negative with clock skew) to a duration.
pub(crate) fn seconds(s: Option<f64>) -> Option<Duration> {
    s.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok())
}

const OP: &str = "status";

/// Reads the node's full status over `s`.
pub(crate) async fn read_status(s: &Session) -> Result<NodeStatus, PgError> {
    let row = s
        .query_one(
            OP,
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'",
        )
        .await?;
    let in_recovery: bool = s.get(OP, &row, 0)?;
    let fenced: bool = s.get(OP, &row, 1)?;
    let epochs = read_epochs(s).await?;
    let mut st = NodeStatus {
        node: s.id,
        role: if in_recovery {
            NodeRole::Replica
        } else {
            NodeRole::Primary
        },
        timeline: 0,
        current_lsn: None,
        flush_lsn: None,
        receive_lsn: None,
        replay_lsn: None,
        replay_backlog_bytes: None,
        replay_delay: None,
        replay_paused: false,
        wal_receiver: None,
        retrieve_retry_interval: None,
        replicas: Vec::new(),
        sync_wait: None,
        epoch: epochs.promoted,
        fenced: fenced && !in_recovery,
    };
    if in_recovery {
        read_replica(s, &mut st).await?;
    } else {
        read_primary(s, &mut st).await?;
    }
    Ok(st)
}

async fn read_primary(s: &Session, st: &mut NodeStatus) -> Result<(), PgError> {
    let row = s
        .query_one(
            OP,
            "SELECT pg_current_wal_lsn()::text, pg_current_wal_flush_lsn()::text, \
             pg_walfile_name(pg_current_wal_lsn()), \
             (SELECT CASE WHEN w.oldest IS NULL THEN NULL \
                     ELSE extract(epoch FROM least(now() - w.oldest, now() - r.reply))::float8 END \
              FROM (SELECT min(query_start) AS oldest FROM pg_stat_activity \
                    WHERE wait_event = 'SyncRep') w, \
                   (SELECT max(reply_time) AS reply FROM pg_stat_replication \
                    WHERE sync_state IN ('sync', 'quorum')) r)",
        )
        .await?;
    st.current_lsn = s.lsn(OP, &row, 0)?;
    st.flush_lsn = s.lsn(OP, &row, 1)?;
    st.sync_wait = seconds(s.get(OP, &row, 3)?);
    let walfile: &str = s.get(OP, &row, 2)?;
    st.timeline = walfile
        .get(..8)
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or_else(|| s.malformed(OP, format!("WAL file name {walfile:?}")))?;
    let rows = s
        .query(
            OP,
            "SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''), \
             flush_lsn::text, replay_lsn::text, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8, \
             extract(epoch FROM replay_lag)::float8 \
             FROM pg_stat_replication ORDER BY application_name",
        )
        .await?;
    for r in &rows {
        let lag: Option<f64> = s.get(OP, r, 5)?;
        st.replicas.push(ReplicaLag {
            application_name: s.get::<String>(OP, r, 0)?,
            state: s.get::<String>(OP, r, 1)?,
            sync_state: s.get::<String>(OP, r, 2)?,
            flush_lsn: s.lsn(OP, r, 3)?,
            replay_lsn: s.lsn(OP, r, 4)?,
            replay_lag_bytes: lag.map(|b| b.max(0.0) as u64),
            replay_lag: seconds(s.get(OP, r, 6)?),
        });
    }
    Ok(())
}

async fn read_replica(s: &Session, st: &mut NodeStatus) -> Result<(), PgError> {
    let row = s
        .query_one(
            OP,
            "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
             extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, \
             pg_is_wal_replay_paused(), \
             pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8, \
             (SELECT timeline_id FROM pg_control_checkpoint()), \
             (SELECT setting::float8 FROM pg_settings WHERE name = 'wal_retrieve_retry_interval')",
        )
        .await?;
    st.receive_lsn = s.lsn(OP, &row, 0)?;
    st.replay_lsn = s.lsn(OP, &row, 1)?;
    st.replay_delay = seconds(s.get(OP, &row, 2)?);
    st.replay_paused = s.get(OP, &row, 3)?;
    let backlog: Option<f64> = s.get(OP, &row, 4)?;
    st.replay_backlog_bytes = backlog.map(|b| b.max(0.0) as u64);
    let checkpoint_tli: Option<i32> = s.get(OP, &row, 5)?;
    let retry_ms: Option<f64> = s.get(OP, &row, 6)?;
    st.retrieve_retry_interval = seconds(retry_ms.map(|ms| ms / 1000.0));
    let rows = s
        .query(
            OP,
            "SELECT status, received_tli, sender_host, sender_port, latest_end_lsn::text, \
             extract(epoch FROM now() - last_msg_receipt_time)::float8 \
             FROM pg_stat_wal_receiver",
        )
        .await?;
    if let Some(r) = rows.first() {
        let tli: Option<i32> = s.get(OP, r, 1)?;
        let port: Option<i32> = s.get(OP, r, 3)?;
        st.wal_receiver = Some(WalReceiver {
            status: s.get::<Option<String>>(OP, r, 0)?.unwrap_or_default(),
            received_timeline: tli.and_then(|t| u32::try_from(t).ok()),
            sender_host: s.get(OP, r, 2)?,
            sender_port: port.and_then(|p| u16::try_from(p).ok()),
            latest_end_lsn: s.lsn(OP, r, 4)?,
            last_message_age: seconds(s.get(OP, r, 5)?),
        });
    }
    st.timeline = st
        .wal_receiver
        .as_ref()
        .and_then(|w| w.received_timeline)
        .or_else(|| checkpoint_tli.and_then(|t| u32::try_from(t).ok()))
        .unwrap_or(0);
    Ok(())
}

impl PgCluster {
    /// Reads the full status of `node`. An unreachable node is an error here
    /// (unlike [`observe`](failover_core::ports::DatabaseAdmin::observe)).
    ///
    /// Reads over the node's kept observation session, opening it if there is
    /// none; a kept session that fails for any reason but a timeout (the
    /// node restarted, a fence terminated it) is replaced by a fresh one and
    /// the read repeated once. After a timeout the session is dropped, and
    /// the next call opens another.
    pub async fn status(&self, node: NodeId) -> Result<NodeStatus, PgError> {
        if let Some(s) = self.observers().get(node) {
            match read_status(&s).await {
                Ok(st) => return Ok(self.observed(&s, st)),
                Err(e) => {
                    self.observers().forget(node, &s);
                    if matches!(e, PgError::Timeout { .. }) {
                        return Err(e);
                    }
                    tracing::debug!(node = %s.node, error = %e, "observation session failed; reopening");
                }
            }
        }
        let s = Arc::new(self.connect(node, OP).await?);
        let st = read_status(&s).await?;
        self.observers().keep(node, Arc::clone(&s));
        Ok(self.observed(&s, st))
    }

    fn observed(&self, s: &Session, st: NodeStatus) -> NodeStatus {
        if st.role == NodeRole::Replica {
            self.open_spare(s.id);
        }
        let name = s.node.clone();
        if let Some(d) = st.replay_delay {
            metrics::gauge!("failover_pg_replay_delay_seconds", "node" => name.clone())
                .set(d.as_secs_f64());
        }
        if let Some(b) = st.replay_backlog_bytes {
            metrics::gauge!("failover_pg_replay_backlog_bytes", "node" => name).set(b as f64);
        }
        st
    }
}

impl PgCluster {
    /// Opens a spare session to the replica `node` in the background, for a
    /// promotion to start on (see `ObserverSessions`). Outside a tokio
    /// runtime, or with one already open or opening, does nothing.
    fn open_spare(&self, node: NodeId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.observers().begin_spare(node) {
            return;
        }
        let cluster = self.clone();
        runtime.spawn(async move {
            let session = cluster.connect(node, "spare session").await.ok();
            cluster.observers().end_spare(node, session);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(receive: Option<u64>, replay: Option<u64>) -> NodeStatus {
        NodeStatus {
            node: NodeId(1),
            role: NodeRole::Replica,
            timeline: 3,
            current_lsn: None,
            flush_lsn: None,
            receive_lsn: receive.map(Lsn),
            replay_lsn: replay.map(Lsn),
            replay_backlog_bytes: None,
            replay_delay: Some(Duration::from_millis(1500)),
            replay_paused: false,
            wal_receiver: None,
            retrieve_retry_interval: None,
            replicas: Vec::new(),
            sync_wait: None,
            epoch: None,
            fenced: false,
        }
    }

    #[test]
    fn lag_counts_from_the_most_wal_held() {
        assert_eq!(
            replica(Some(100), Some(90)).lag_bytes_behind(Lsn(150)),
            Some(50)
        );
        // Never streamed: replayed WAL is what it holds.
        assert_eq!(replica(None, Some(90)).lag_bytes_behind(Lsn(150)), Some(60));
        assert_eq!(
            replica(Some(200), Some(90)).lag_bytes_behind(Lsn(150)),
            Some(0)
        );
        assert_eq!(replica(None, None).lag_bytes_behind(Lsn(150)), None);
    }

    #[test]
    fn observation_carries_role_and_positions() {
        let r = replica(Some(100), Some(90));
        assert_eq!(
            r.observation(),
            NodeObservation::Replica {
                timeline: 3,
                receive_lsn: Some(Lsn(100)),
                replay_lsn: Some(Lsn(90)),
                replay_delay: Some(Duration::from_millis(1500)),
                upstream_heard: None,
            }
        );
        let mut p = replica(None, None);
        p.role = NodeRole::Primary;
        p.current_lsn = Some(Lsn(7));
        p.epoch = Some(Epoch(2));
        p.fenced = true;
        assert_eq!(
            p.observation(),
            NodeObservation::Primary {
                timeline: 3,
                current_lsn: Lsn(7),
                epoch: Some(Epoch(2)),
                fenced: true,
                sync_wait: None,
            }
        );
    }

    #[test]
    fn negative_or_invalid_seconds_are_clamped_or_dropped() {
        assert_eq!(seconds(Some(-3.0)), Some(Duration::ZERO));
        assert_eq!(seconds(Some(f64::NAN)), Some(Duration::ZERO));
        assert_eq!(seconds(Some(f64::INFINITY)), None);
        assert_eq!(seconds(None), None);
    }
}
