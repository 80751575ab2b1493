//! [`RemoteStatus`]: a [`FailoverState`] kept from a controller's admin API
//! (`GET /status`), polled.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::client::{excerpt, Endpoint};
use crate::error::Error;
use crate::state::{
    FailoverState, PromotionView, RegionHealth, RegionView, Snapshot, StatePublisher, WriterView,
};

/// The metric counting polls of the admin API, by `outcome` (`ok`, `failed`).
pub const REMOTE_POLL_METRIC: &str = "failover_tower_remote_poll_total";

/// Largest `/status` body read, bytes.
const MAX_STATUS_BODY: usize = 4 << 20;

/// Follows a controller's admin API: polls `GET /status` (plain HTTP, with
/// a bearer token) every [`interval`](Self::interval), each poll under a
/// [`timeout`](Self::timeout), and publishes what it reads into a
/// [`FailoverState`]. A failed poll (refused, timed out, not 200, not the
/// expected JSON) keeps the last state and marks it stale, with the reason.
///
/// A promotion's deadline is counted from the poll that first saw its
/// phase, with the phase's bound from the controller (`promotion.bound_ms`
/// in `/status`) or else [`promotion_bound`](Self::promotion_bound); so
/// `Retry-After` may exceed the true remaining time by up to one interval,
/// never the bound itself.
#[derive(Clone, Debug)]
pub struct RemoteStatus {
    endpoint: Endpoint,
    token: Option<String>,
    interval: Duration,
    timeout: Duration,
    local_region: Option<String>,
    promotion_bound: Option<Duration>,
}

impl RemoteStatus {
    /// Polls `url` (for example `http://10.0.0.5:9000/status`) every second,
    /// each poll within 2 s, without a token.
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(RemoteStatus {
            endpoint: Endpoint::parse(url, "url")?,
            token: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            local_region: None,
            promotion_bound: None,
        })
    }

    /// Sends `Authorization: Bearer <token>` (one of the admin API's tokens).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Time between polls (default 1 s, at least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Limit on each poll, connection included (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The region this instance runs in ([`Snapshot::local`]).
    pub fn local_region(mut self, region: impl Into<String>) -> Self {
        self.local_region = Some(region.into());
        self
    }

    /// The bound on a promotion when the controller does not give one.
    pub fn promotion_bound(mut self, bound: Duration) -> Self {
        self.promotion_bound = Some(bound);
        self
    }

    /// Starts polling: the state (at first [`Snapshot::unknown`]) and the
    /// task, which ends once every clone of the state is dropped.
    pub fn spawn(self) -> (FailoverState, JoinHandle<()>) {
        let (publisher, state) = FailoverState::channel(Snapshot::unknown());
        let task = tokio::spawn(self.run(publisher));
        (state, task)
    }

    async fn run(self, publisher: StatePublisher) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_phase: Option<(String, Option<Instant>)> = None;
        loop {
            tokio::select! {
                _ = publisher.closed() => return,
                _ = ticks.tick() => {}
            }
            let polled = tokio::select! {
                _ = publisher.closed() => return,
                polled = tokio::time::timeout(self.timeout, self.poll()) => polled,
            };
            let result = match polled {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            };
            match result {
                Ok(status) => {
                    metrics::counter!(REMOTE_POLL_METRIC, "outcome" => "ok").increment(1);
                    publisher.publish(self.snapshot(status, &mut last_phase));
                }
                Err(reason) => {
                    metrics::counter!(REMOTE_POLL_METRIC, "outcome" => "failed").increment(1);
                    let url = &self.endpoint.uri;
                    publisher.mark_stale(format!("GET {url} failed: {reason}"));
                }
            }
        }
    }

    async fn poll(&self) -> Result<StatusJson, String> {
        let (status, body) = self
            .endpoint
            .exchange(Method::GET, self.token.as_deref(), None, MAX_STATUS_BODY)
            .await?;
        if status != StatusCode::OK {
            return Err(format!("status {status}: {}", excerpt(&body)));
        }
        serde_json::from_slice::<StatusJson>(&body)
            .map_err(|e| format!("not the admin API's /status JSON: {e}"))
    }

    fn snapshot(
        &self,
        status: StatusJson,
        last_phase: &mut Option<(String, Option<Instant>)>,
    ) -> Snapshot {
        let now = Instant::now();
        let mut snapshot = Snapshot::fresh();
        snapshot.regions = status
            .regions
            .into_iter()
            .map(|r| {
                let mut view = RegionView::new(r.name);
                view.health = match r.health.as_str() {
                    "up" => RegionHealth::Up,
                    "down" => RegionHealth::Down,
                    _ => RegionHealth::Unknown,
                };
                view.weight = r.desired_weight;
                view.drained = r.drained;
                view.capacity = r.capacity.unwrap_or(1.0);
                view
            })
            .collect();
        snapshot.local = self
            .local_region
            .as_deref()
            .and_then(|name| snapshot.region(name).cloned());
        let fenced = status
            .nodes
            .iter()
            .any(|n| n.writer && n.fenced == Some(true));
        let mut writer = WriterView::default();
        writer.node = status.writer;
        writer.epoch = status.epoch;
        writer.fenced = fenced;
        snapshot.writer = writer;
        snapshot.promotion = match status.promotion.phase.as_str() {
            "idle" => {
                *last_phase = None;
                None
            }
            phase => {
                let deadline = match last_phase {
                    Some((seen, deadline)) if seen == phase => *deadline,
                    _ => status
                        .promotion
                        .bound_ms
                        .map(Duration::from_millis)
                        .or(self.promotion_bound)
                        .map(|bound| now + bound),
                };
                *last_phase = Some((phase.to_owned(), deadline));
                Some(PromotionView::new(phase, deadline))
            }
        };
        snapshot.updated_at = now;
        snapshot
    }
}

/// The parts of the admin API's `GET /status` this crate reads.
#[derive(Debug, Deserialize)]
struct StatusJson {
    regions: Vec<RegionJson>,
    writer: Option<String>,
    epoch: u64,
    promotion: PromotionJson,
    #[serde(default)]
    nodes: Vec<NodeJson>,
}

#[derive(Debug, Deserialize)]
struct RegionJson {
    name: String,
    health: String,
    desired_weight: u32,
    #[serde(default)]
    drained: bool,
    #[serde(default)]
    capacity: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct PromotionJson {
    phase: String,
    #[serde(default)]
    bound_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct NodeJson {
    #[serde(default)]
    writer: bool,
    #[serde(default)]
    fenced: Option<bool>,
}
