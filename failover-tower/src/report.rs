//! [`AdminTrafficSink`]: passive health from a service in another process —
//! each aggregate of [`PassiveHealthLayer`](crate::PassiveHealthLayer) is
//! posted to every controller's admin API (`POST /traffic`).

use std::time::Duration;

use http::{Method, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{excerpt, Endpoint};
use crate::error::Error;
use crate::passive::{RegionTraffic, TrafficSink, PASSIVE_REPORT_METRIC};

/// Largest answer read from `POST /traffic`, bytes.
const MAX_ANSWER: usize = 64 << 10;

/// A [`TrafficSink`] that posts every aggregate to the admin API of each
/// controller given (`POST /traffic`, with a bearer token), for services
/// that do not run the controller in their own process.
///
/// - **Every controller, not only the leader:** each keeps its own
///   passive-health window over the reports, so whichever controller leads
///   — now or after a leadership change — judges on the same traffic.
/// - **Never blocks the request path:** [`report`](TrafficSink::report)
///   queues the aggregate for each controller (at most
///   [`queue`](AdminTrafficSinkBuilder::queue) per controller); a full queue
///   drops it for that controller. One task per controller posts its queue,
///   each post within [`timeout`](AdminTrafficSinkBuilder::timeout), so a
///   dead or slow controller holds up no other.
/// - **Counted:** [`PASSIVE_REPORT_METRIC`] by `region` and `outcome`:
///   `posted`, `post_failed` (refused, timed out, or not `202`), `dropped`
///   (a full queue). The first failure after a success, and the first
///   success after failures, are logged at `warn`/`info` with the reason —
///   not every failure, so an outage does not flood the log.
/// - The controller stamps each report with its own clock on arrival;
///   a report that waited in a queue counts as that late.
#[derive(Clone, Debug)]
pub struct AdminTrafficSink {
    queues: Vec<mpsc::Sender<RegionTraffic>>,
}

/// Settings of an [`AdminTrafficSink`]; [`spawn`](Self::spawn) starts it.
#[derive(Clone, Debug)]
pub struct AdminTrafficSinkBuilder {
    endpoints: Vec<Endpoint>,
    token: Option<String>,
    timeout: Duration,
    queue: usize,
}

impl AdminTrafficSink {
    /// Posts to each admin API in `urls`: its base URL (for example
    /// `http://10.0.0.5:9850`; the path `/traffic` is added), plain HTTP.
    /// At least one. Defaults: no token, 1 s per post, 64 queued per
    /// controller.
    pub fn builder<S: AsRef<str>>(urls: &[S]) -> Result<AdminTrafficSinkBuilder, Error> {
        if urls.is_empty() {
            return Err(Error::Config {
                field: "urls",
                rule: "at least one controller's admin API URL is needed".into(),
            });
        }
        let endpoints = urls
            .iter()
            .map(|url| {
                let endpoint = Endpoint::parse(url.as_ref(), "urls")?;
                let path = endpoint.uri.path().trim_end_matches('/');
                Ok(endpoint.with_path(&format!("{path}/traffic")))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(AdminTrafficSinkBuilder {
            endpoints,
            token: None,
            timeout: Duration::from_secs(1),
            queue: 64,
        })
    }
}

impl AdminTrafficSinkBuilder {
    /// Sends `Authorization: Bearer <token>` (one of the admin API's tokens).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Limit on each post, connection included (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Aggregates queued per controller before new ones are dropped
    /// (default 64, at least 1).
    pub fn queue(mut self, aggregates: usize) -> Self {
        self.queue = aggregates.max(1);
        self
    }

    /// Starts one posting task per controller (on the current tokio
    /// runtime): the sink to give
    /// [`PassiveHealthLayerBuilder::sink`](crate::PassiveHealthLayerBuilder::sink),
    /// and the tasks, which end once every clone of the sink is dropped.
    pub fn spawn(self) -> (AdminTrafficSink, Vec<JoinHandle<()>>) {
        let mut queues = Vec::with_capacity(self.endpoints.len());
        let mut tasks = Vec::with_capacity(self.endpoints.len());
        for endpoint in self.endpoints {
            let (tx, rx) = mpsc::channel(self.queue);
            queues.push(tx);
            tasks.push(tokio::spawn(post_all(
                endpoint,
                self.token.clone(),
                self.timeout,
                rx,
            )));
        }
        (AdminTrafficSink { queues }, tasks)
    }
}

impl TrafficSink for AdminTrafficSink {
    fn report(&self, traffic: RegionTraffic) {
        for queue in &self.queues {
            if queue.try_send(traffic.clone()).is_err() {
                metrics::counter!(PASSIVE_REPORT_METRIC, "region" => traffic.region.to_string(), "outcome" => "dropped")
                    .increment(1);
            }
        }
    }
}

/// Posts one controller's queue, in order, until the sink is gone.
async fn post_all(
    endpoint: Endpoint,
    token: Option<String>,
    timeout: Duration,
    mut rx: mpsc::Receiver<RegionTraffic>,
) {
    let mut failing = false;
    while let Some(traffic) = rx.recv().await {
        let body = serde_json::json!({
            "region": &*traffic.region,
            "requests": traffic.requests,
            "errors": traffic.errors,
            "slow": traffic.slow,
            "consecutive_errors": traffic.consecutive_errors,
        })
        .to_string()
        .into_bytes();
        let posted = tokio::time::timeout(
            timeout,
            endpoint.exchange(Method::POST, token.as_deref(), Some(body), MAX_ANSWER),
        )
        .await;
        let result = match posted {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(reason)) => Err(reason),
            Ok(Ok((StatusCode::ACCEPTED, _))) => Ok(()),
            Ok(Ok((status, body))) => Err(format!("status {status}: {}", excerpt(&body))),
        };
        let region = traffic.region.to_string();
        match result {
            Ok(()) => {
                metrics::counter!(PASSIVE_REPORT_METRIC, "region" => region, "outcome" => "posted")
                    .increment(1);
                if failing {
                    tracing::info!(url = %endpoint.uri, "passive health: traffic reports reach the controller again");
                    failing = false;
                }
            }
            Err(reason) => {
                metrics::counter!(PASSIVE_REPORT_METRIC, "region" => region, "outcome" => "post_failed")
                    .increment(1);
                if !failing {
                    tracing::warn!(url = %endpoint.uri, %reason, "passive health: a traffic report did not reach the controller (further failures are counted, not logged)");
                    failing = true;
                }
            }
        }
    }
}
