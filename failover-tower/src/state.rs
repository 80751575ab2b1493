//! [`FailoverState`]: what a service instance knows of the controllers'
//! state, and [`StatePublisher`], the side a source writes it with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A region's health as the controllers see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RegionHealth {
    /// Not evaluated yet, or not reported by the source.
    #[default]
    Unknown,
    /// Enough vantages see it up.
    Up,
    /// A quorum of vantages sees it down.
    Down,
}

/// One region as the controllers see it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RegionView {
    /// The region's name, as in the topology (`us-east`).
    pub name: String,
    /// Its health.
    pub health: RegionHealth,
    /// Its weight in the controllers' desired plan (0: it takes no traffic).
    pub weight: u32,
    /// Whether an operator drained it.
    pub drained: bool,
    /// The share of peak load it can carry (1.0 = all of peak; the
    /// topology's `capacity`).
    pub capacity: f64,
}

impl RegionView {
    /// A region named `name`: unknown health, weight 0, not drained,
    /// capacity 1.0 (all of peak).
    pub fn new(name: impl Into<String>) -> Self {
        RegionView {
            name: name.into(),
            health: RegionHealth::Unknown,
            weight: 0,
            drained: false,
            capacity: 1.0,
        }
    }

    /// Whether the region takes traffic in the desired plan (weight above 0).
    pub fn serving(&self) -> bool {
        self.weight > 0
    }
}

/// The database writer as the controllers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterView {
    /// The node taking writes (its name in the topology), if known.
    pub node: Option<String>,
    /// The fencing epoch of the current writer (strictly increasing with
    /// every promotion).
    pub epoch: u64,
    /// Whether the writer's node has been fenced (it refuses writes).
    pub fenced: bool,
}

/// A database promotion in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PromotionView {
    /// The controller's phase, as a word (`fencing`, `claiming`,
    /// `catching_up`, `promoting`, `refused`, `unproven`, `needs_operator`).
    pub phase: String,
    /// When the planner's bound on the rest of the promotion runs out
    /// (monotonic clock of this process); `None` when the phase has no
    /// bound (it waits for an operator or a retry).
    pub deadline: Option<Instant>,
}

impl PromotionView {
    /// A promotion in `phase`, bounded by `deadline` if known.
    pub fn new(phase: impl Into<String>, deadline: Option<Instant>) -> Self {
        PromotionView {
            phase: phase.into(),
            deadline,
        }
    }

    /// What is left of the planner's bound at `now` (zero once it ran out),
    /// or `None` without a bound.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(now))
    }
}

/// Load on the serving regions against their capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// The load the service carries, as a share of peak (1.0 = peak).
    pub demand: f64,
    /// The combined capacity of the serving regions, as a share of peak.
    pub capacity: f64,
}

impl Load {
    /// Demand over capacity (1.67 for peak on a standby built for 60 % of
    /// it); infinite when nothing serves.
    pub fn ratio(&self) -> f64 {
        if self.capacity > 0.0 {
            self.demand / self.capacity
        } else {
            f64::INFINITY
        }
    }

    /// Whether the serving regions carry more than their capacity.
    pub fn over_capacity(&self) -> bool {
        self.ratio() > 1.0
    }
}

/// Why a [`Snapshot`] is stale: the source lost contact.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Staleness {
    /// Since when the source has had no contact (the first failure after
    /// the last success).
    pub since: Instant,
    /// What failed, as a sentence.
    pub reason: String,
}

/// The controllers' state as one instance last learnt it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The region this instance runs in, if the source was told it and knows it.
    pub local: Option<RegionView>,
    /// Every region, in topology order.
    pub regions: Vec<RegionView>,
    /// The database writer.
    pub writer: WriterView,
    /// The promotion in progress, if any.
    pub promotion: Option<PromotionView>,
    /// The load the service carries as a share of peak (1.0, the planner's
    /// assumption, unless the source knows better).
    pub demand: f64,
    /// When this state was learnt (monotonic clock of this process).
    pub updated_at: Instant,
    /// Set while the source has lost contact: the rest of the snapshot is
    /// the last state it learnt.
    pub stale: Option<Staleness>,
}

impl Snapshot {
    /// Nothing learnt yet: no regions, writer unknown, and stale since now
    /// with "no contact with the controllers yet" — so the write gate holds
    /// mutations until the first contact.
    pub fn unknown() -> Self {
        let now = Instant::now();
        Snapshot {
            local: None,
            regions: Vec::new(),
            writer: WriterView::default(),
            promotion: None,
            demand: 1.0,
            updated_at: now,
            stale: Some(Staleness {
                since: now,
                reason: "no contact with the controllers yet".to_owned(),
            }),
        }
    }

    /// A fresh (not stale) snapshot learnt now, with no regions, no writer
    /// and no promotion: fill in its fields.
    pub fn fresh() -> Self {
        Snapshot {
            stale: None,
            ..Snapshot::unknown()
        }
    }

    /// Load on the serving regions: [`Snapshot::demand`] against the
    /// capacity of the regions with a weight above 0.
    pub fn load(&self) -> Load {
        Load {
            demand: self.demand,
            capacity: self
                .regions
                .iter()
                .filter(|r| r.serving() && r.capacity.is_finite())
                .map(|r| r.capacity)
                .sum(),
        }
    }

    /// Whether the source has lost contact (the snapshot is the last state).
    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }

    /// The region named `name`.
    pub fn region(&self, name: &str) -> Option<&RegionView> {
        self.regions.iter().find(|r| r.name == name)
    }
}

/// A cheaply clonable view of the controllers' state, kept current by a
/// source (the in-process runtime, or a controller's admin API through
/// [`RemoteStatus`](crate::RemoteStatus)), for the layers of this crate and
/// for the service itself.
///
/// When the source loses contact it keeps the last state and says so
/// ([`Snapshot::stale`]).
#[derive(Clone, Debug)]
pub struct FailoverState {
    rx: watch::Receiver<Arc<Snapshot>>,
}

impl FailoverState {
    /// A state and the publisher that updates it, starting at `initial`
    /// (usually [`Snapshot::unknown`]).
    pub fn channel(initial: Snapshot) -> (StatePublisher, FailoverState) {
        let (tx, rx) = watch::channel(Arc::new(initial));
        (StatePublisher { tx }, FailoverState { rx })
    }

    /// The current snapshot (one reference-count increment, no copy).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.rx.borrow())
    }

    /// Waits until the state satisfies `ready`, and returns that snapshot;
    /// `None` if the source is gone first (the state stays as it was).
    pub async fn wait_for(
        &self,
        mut ready: impl FnMut(&Snapshot) -> bool,
    ) -> Option<Arc<Snapshot>> {
        let mut rx = self.rx.clone();
        rx.wait_for(|s| ready(s)).await.ok().map(|s| Arc::clone(&s))
    }
}

/// The writing side of a [`FailoverState`]: a source publishes what it
/// learns, or marks the state stale when it loses contact.
#[derive(Debug)]
pub struct StatePublisher {
    tx: watch::Sender<Arc<Snapshot>>,
}

impl StatePublisher {
    /// Publishes a new state; it is fresh whatever its `stale` field said.
    pub fn publish(&self, mut snapshot: Snapshot) {
        snapshot.stale = None;
        self.tx.send_replace(Arc::new(snapshot));
    }

    /// Says the source lost contact, keeping the last state. The first
    /// failure after a success sets [`Staleness::since`]; later ones only
    /// update the reason.
    pub fn mark_stale(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.tx.send_modify(|current| {
            let mut next = Snapshot::clone(current);
            let since = match &current.stale {
                Some(s) => s.since,
                None => {
                    tracing::warn!(%reason, "failover state: lost contact with the controllers; keeping the last state");
                    Instant::now()
                }
            };
            next.stale = Some(Staleness { since, reason });
            *current = Arc::new(next);
        });
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.tx.borrow())
    }

    /// A [`FailoverState`] reading this publisher.
    pub fn subscribe(&self) -> FailoverState {
        FailoverState {
            rx: self.tx.subscribe(),
        }
    }

    /// Resolves when every [`FailoverState`] reading this publisher is
    /// dropped (a source's task stops then).
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}
