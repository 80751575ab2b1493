//! Database replication state as observed by an adapter.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A PostgreSQL write-ahead-log position, in bytes since the start of WAL.
/// Displays as PostgreSQL does (`16/B374D848`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Bytes from `other` up to `self`, zero when `other` is ahead.
    pub const fn bytes_after(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Error from [`Lsn::from_str`](std::str::FromStr).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers separated by '/', like 16/B374D848")]
pub struct ParseLsnError(pub String);

impl std::str::FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A fencing token. Every promotion carries a strictly greater epoch than the
/// last; adapters record it durably and refuse anything older, so a stale
/// controller can never promote or write again.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub const fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// One observation of one database node, for [`Input::Replication`](crate::Input::Replication).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// The node observed.
    pub node: NodeId,
    /// When the observation was started (the driver's clock): everything
    /// committed before `at` is reflected in it. (A switchover trusts a
    /// fenced primary's position only from an observation started after the
    /// fence completed.)
    pub at: Instant,
    /// What was seen.
    pub observation: NodeObservation,
}

/// What a node reported about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeObservation {
    /// The node could not be reached or queried.
    Unreachable,
    /// The node accepts writes (`pg_is_in_recovery()` is false).
    Primary {
        /// The timeline the node is on.
        timeline: u32,
        /// `pg_current_wal_lsn()`: how far it has written.
        current_lsn: Lsn,
        /// The fencing epoch the node carries, if the adapter records one.
        epoch: Option<Epoch>,
        /// Whether the node has been fenced (refuses writes).
        fenced: bool,
        /// How long commits have been waiting for the synchronous standbys
        /// it requires (PostgreSQL: the oldest backend in wait event
        /// `SyncRep`, capped by the standbys' last reply); `None` when no
        /// commit waits, or the adapter does not say. A required standby
        /// that keeps commits waiting
        /// `fall` × `interval` no longer acknowledges them, however healthy
        /// it looks to the controller: it is replaced (see
        /// [`EventKind::SynchronousStalled`](crate::EventKind::SynchronousStalled)).
        sync_wait: Option<Duration>,
    },
    /// The node is a streaming replica (in recovery).
    Replica {
        /// The timeline the node is replaying.
        timeline: u32,
        /// `pg_last_wal_receive_lsn()`: WAL received and flushed locally.
        receive_lsn: Option<Lsn>,
        /// `pg_last_wal_replay_lsn()`: WAL applied.
        replay_lsn: Option<Lsn>,
        /// Time since the last replayed transaction's commit, as the node
        /// reports it (`now() - pg_last_xact_replay_timestamp()`), if known.
        replay_delay: Option<Duration>,
        /// While its WAL receiver streams: how long ago it last received a
        /// message from its upstream (`now() - last_msg_receipt_time` of
        /// `pg_stat_wal_receiver`, on the replica's own clock). `None` when
        /// no receiver streams, or the adapter does not say. A message
        /// received after the controller began failing to reach the writer
        /// shows the writer alive (see [`EventKind::DatabaseDownVetoed`](crate::EventKind::DatabaseDownVetoed)).
        upstream_heard: Option<Duration>,
    },
}
