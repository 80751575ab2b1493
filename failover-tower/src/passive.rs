//! [`PassiveHealthLayer`]: what this service's users actually get from each
//! region (5xx, slow responses), counted per request and reported to the
//! controllers in aggregates — passive health, next to their probes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::mpsc;
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::RequestHead;

/// The metric counting requests by `region` and `outcome` (`ok`, `error`:
/// a 5xx or no response, `slow`: answered but over the latency threshold).
pub const PASSIVE_METRIC: &str = "failover_tower_requests_total";

/// The metric counting aggregates handed to the sink, by `region`, and
/// (`outcome="dropped"`) those a full channel sink had to drop;
/// [`AdminTrafficSink`](crate::AdminTrafficSink) adds `posted` and
/// `post_failed`.
pub const PASSIVE_REPORT_METRIC: &str = "failover_tower_traffic_reports_total";

/// What one region's requests came to over one reporting period: the
/// aggregate a [`TrafficSink`] receives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionTraffic {
    /// The region that served the requests (its name in the topology).
    pub region: Arc<str>,
    /// When the counts were taken (the end of the period).
    pub at: Instant,
    /// Requests completed in the period.
    pub requests: u32,
    /// Of those, how many failed: a 5xx status, or an error instead of a
    /// response.
    pub errors: u32,
    /// Of those, how many answered (without error) slower than the
    /// threshold.
    pub slow: u32,
    /// Errors in a row at the end of the period, across periods (0 when
    /// the last request succeeded).
    pub consecutive_errors: u32,
}

/// Where [`PassiveHealthLayer`] sends its aggregates. Called at most once
/// per region per reporting period, from the request path: it must not
/// block. A closure `Fn(RegionTraffic)` is a sink, and so is a
/// `tokio::sync::mpsc::Sender<RegionTraffic>` (a full channel drops the
/// aggregate and counts it in [`PASSIVE_REPORT_METRIC`]). The facade's
/// `failover::tower::passive_health` feeds the runtime in this process;
/// [`AdminTrafficSink`](crate::AdminTrafficSink) posts to controllers in
/// other processes.
pub trait TrafficSink: Send + Sync + 'static {
    /// Takes one region's aggregate.
    fn report(&self, traffic: RegionTraffic);
}

impl<F: Fn(RegionTraffic) + Send + Sync + 'static> TrafficSink for F {
    fn report(&self, traffic: RegionTraffic) {
        self(traffic)
    }
}

impl TrafficSink for mpsc::Sender<RegionTraffic> {
    fn report(&self, traffic: RegionTraffic) {
        let region = traffic.region.to_string();
        if self.try_send(traffic).is_err() {
            metrics::counter!(PASSIVE_REPORT_METRIC, "region" => region, "outcome" => "dropped")
                .increment(1);
            tracing::warn!(
                "passive health: the traffic channel is full or closed; an aggregate was dropped"
            );
        }
    }
}

type RegionOf = Arc<dyn Fn(RequestHead<'_>) -> Option<Arc<str>> + Send + Sync>;

/// A layer that classifies every response — an error when its status is
/// 5xx or the service failed instead of answering, slow when it answered
/// later than the threshold — per region that served it, and hands the
/// counts to a [`TrafficSink`] at most once per reporting period (default
/// 1 s). The controllers judge the region by them
/// (`failover_core::PassivePolicy`): a region whose probes pass but whose
/// users fail is drained.
///
/// The region is the one this instance runs in unless a function says
/// otherwise ([`region_of`](PassiveHealthLayerBuilder::region_of), for a gateway that calls
/// several). Latency is measured from the call to the response head (a
/// streamed body's time is not counted). A request whose future is dropped
/// before it answers (its client left) is not counted. Every request is
/// counted in [`PASSIVE_METRIC`].
#[derive(Clone)]
pub struct PassiveHealthLayer {
    shared: Arc<Shared>,
}

struct Shared {
    local: Arc<str>,
    region_of: Option<RegionOf>,
    slow_after: Option<Duration>,
    every: Duration,
    sink: Box<dyn TrafficSink>,
    tally: Mutex<Tally>,
}

/// Counts since the last report, per region (few regions: a vector).
struct Tally {
    last_report: Instant,
    regions: Vec<Counts>,
}

struct Counts {
    region: Arc<str>,
    requests: u32,
    errors: u32,
    slow: u32,
    consecutive_errors: u32,
}

impl fmt::Debug for PassiveHealthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveHealthLayer")
            .field("local", &self.shared.local)
            .field("region_of", &self.shared.region_of.is_some())
            .field("slow_after", &self.shared.slow_after)
            .field("report_every", &self.shared.every)
            .finish()
    }
}

/// Settings of a [`PassiveHealthLayer`], from [`PassiveHealthLayer::builder`].
pub struct PassiveHealthLayerBuilder {
    local: Arc<str>,
    region_of: Option<RegionOf>,
    slow_after: Option<Duration>,
    every: Duration,
}

impl fmt::Debug for PassiveHealthLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveHealthLayerBuilder")
            .field("local", &self.local)
            .field("slow_after", &self.slow_after)
            .field("report_every", &self.every)
            .finish()
    }
}

impl PassiveHealthLayer {
    /// Settings for an instance in region `local` (the region its requests
    /// are counted for by default): no latency threshold, reports every
    /// second.
    pub fn builder(local: impl Into<Arc<str>>) -> PassiveHealthLayerBuilder {
        PassiveHealthLayerBuilder {
            local: local.into(),
            region_of: None,
            slow_after: None,
            every: Duration::from_secs(1),
        }
    }

    /// Counts every request for this instance's region `local` and reports to `sink`
    /// every second; no latency threshold.
    pub fn new(local: impl Into<Arc<str>>, sink: impl TrafficSink) -> Self {
        PassiveHealthLayer::builder(local).sink(sink)
    }

    fn record(&self, region: Option<Arc<str>>, error: bool, slow: bool, now: Instant) {
        let shared = &self.shared;
        let region = region.unwrap_or_else(|| Arc::clone(&shared.local));
        let outcome = match (error, slow) {
            (true, _) => "error",
            (false, true) => "slow",
            (false, false) => "ok",
        };
        // The label shares the region's name: no copy per request.
        metrics::counter!(PASSIVE_METRIC, "region" => Arc::clone(&region), "outcome" => outcome)
            .increment(1);
        let due = {
            // A poisoned lock only means another request panicked while
            // counting: the counts are still usable.
            let mut tally = shared.tally.lock().unwrap_or_else(|e| e.into_inner());
            let counts = match tally.regions.iter().position(|c| c.region == region) {
                Some(i) => &mut tally.regions[i],
                None => {
                    tally.regions.push(Counts {
                        region,
                        requests: 0,
                        errors: 0,
                        slow: 0,
                        consecutive_errors: 0,
                    });
                    let last = tally.regions.len() - 1;
                    &mut tally.regions[last]
                }
            };
            counts.requests = counts.requests.saturating_add(1);
            if error {
                counts.errors = counts.errors.saturating_add(1);
                counts.consecutive_errors = counts.consecutive_errors.saturating_add(1);
            } else {
                counts.consecutive_errors = 0;
            }
            if slow {
                counts.slow = counts.slow.saturating_add(1);
            }
            if now.saturating_duration_since(tally.last_report) < shared.every {
                None
            } else {
                tally.last_report = now;
                let due: Vec<RegionTraffic> = tally
                    .regions
                    .iter_mut()
                    .filter(|c| c.requests > 0)
                    .map(|c| {
                        let traffic = RegionTraffic {
                            region: Arc::clone(&c.region),
                            at: now,
                            requests: c.requests,
                            errors: c.errors,
                            slow: c.slow,
                            consecutive_errors: c.consecutive_errors,
                        };
                        c.requests = 0;
                        c.errors = 0;
                        c.slow = 0;
                        traffic
                    })
                    .collect();
                Some(due)
            }
        };
        // The sink runs outside the lock.
        for traffic in due.into_iter().flatten() {
            metrics::counter!(PASSIVE_REPORT_METRIC, "region" => Arc::clone(&traffic.region), "outcome" => "reported")
                .increment(1);
            tracing::debug!(
                region = %traffic.region,
                requests = traffic.requests,
                errors = traffic.errors,
                slow = traffic.slow,
                consecutive_errors = traffic.consecutive_errors,
                "passive health: reporting what users saw"
            );
            shared.sink.report(traffic);
        }
    }
}

impl PassiveHealthLayerBuilder {
    /// Decides the region each request is served by with `f` (`None`: this
    /// instance's region), for a gateway in front of several regions.
    pub fn region_of(
        mut self,
        f: impl Fn(RequestHead<'_>) -> Option<Arc<str>> + Send + Sync + 'static,
    ) -> Self {
        self.region_of = Some(Arc::new(f));
        self
    }

    /// Counts a response later than `threshold` as slow (none by default;
    /// the facade takes `policy.passive.latency.threshold`).
    pub fn slow_after(mut self, threshold: Duration) -> Self {
        self.slow_after = Some(threshold);
        self
    }

    /// Reports at most once per `period` (default 1 s; at least 1 ms).
    pub fn report_every(mut self, period: Duration) -> Self {
        self.every = period.max(Duration::from_millis(1));
        self
    }

    /// The layer, reporting to `sink`.
    pub fn sink(self, sink: impl TrafficSink) -> PassiveHealthLayer {
        PassiveHealthLayer {
            shared: Arc::new(Shared {
                local: self.local,
                region_of: self.region_of,
                slow_after: self.slow_after,
                every: self.every,
                sink: Box::new(sink),
                tally: Mutex::new(Tally {
                    last_report: Instant::now(),
                    regions: Vec::with_capacity(4),
                }),
            }),
        }
    }
}

impl<S> Layer<S> for PassiveHealthLayer {
    type Service = PassiveHealth<S>;

    fn layer(&self, inner: S) -> PassiveHealth<S> {
        PassiveHealth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`PassiveHealthLayer`] makes.
#[derive(Clone, Debug)]
pub struct PassiveHealth<S> {
    inner: S,
    layer: PassiveHealthLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PassiveHealth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = PassiveHealthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let region = self
            .layer
            .shared
            .region_of
            .as_ref()
            .and_then(|f| f(RequestHead::of(&req)));
        PassiveHealthFuture {
            inner: self.inner.call(req),
            layer: Some(self.layer.clone()),
            region,
            start: Instant::now(),
        }
    }
}

pin_project! {
    /// The future of [`PassiveHealth`]: the inner service's, counted when
    /// it completes.
    pub struct PassiveHealthFuture<F> {
        #[pin]
        inner: F,
        layer: Option<PassiveHealthLayer>,
        region: Option<Arc<str>>,
        start: Instant,
    }
}

impl<F> fmt::Debug for PassiveHealthFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassiveHealthFuture")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for PassiveHealthFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let Some(layer) = this.layer.take() {
            let now = Instant::now();
            let (error, slow) = match &output {
                Ok(response) => (
                    response.status().is_server_error(),
                    layer
                        .shared
                        .slow_after
                        .is_some_and(|t| now.saturating_duration_since(*this.start) > t),
                ),
                Err(_) => (true, false),
            };
            layer.record(this.region.take(), error, slow, now);
        }
        Poll::Ready(output)
    }
}
