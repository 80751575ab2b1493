//! [`ShedLayer`]: while the serving regions carry more than their capacity,
//! requests below a priority are shed with `503`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, Either as EitherFuture, MapOk, Ready, TryFutureExt};
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::{Priority, RequestHead};
use crate::response;
use crate::state::FailoverState;

/// The metric counting the shed layer's decisions, by `outcome` (`served`
/// or `shed`) and `priority` (`low` … `critical`).
pub const SHED_METRIC: &str = "failover_tower_shed_total";

/// The header the priority is read from by default.
pub const PRIORITY_HEADER: &str = "x-priority";

type Classifier = Arc<dyn Fn(RequestHead<'_>) -> Priority + Send + Sync>;

/// A layer that, while the serving regions carry more than their capacity
/// ([`Load::over_capacity`](crate::Load::over_capacity) of the
/// [`FailoverState`]), answers requests below a priority with `503
/// Service Unavailable` and `Retry-After`; [`Priority::Critical`] always
/// passes. Every decision is counted in [`SHED_METRIC`].
///
/// The priority comes from the `x-priority` header (`low`, `normal`,
/// `high`, `critical`; missing or unknown: the default priority, `normal`)
/// unless a classifier is given. A stale state sheds by its last load.
#[derive(Clone)]
pub struct ShedLayer {
    state: FailoverState,
    header: HeaderName,
    classifier: Option<Classifier>,
    default_priority: Priority,
    shed_below: Priority,
    retry_after: Duration,
}

impl fmt::Debug for ShedLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedLayer")
            .field("header", &self.header)
            .field("classifier", &self.classifier.is_some())
            .field("default_priority", &self.default_priority)
            .field("shed_below", &self.shed_below)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl ShedLayer {
    /// Sheds on `state`'s load: below [`Priority::Normal`] (so `low`),
    /// priority from `x-priority`, default `normal`, `Retry-After: 5`.
    pub fn new(state: FailoverState) -> Self {
        ShedLayer {
            state,
            header: HeaderName::from_static(PRIORITY_HEADER),
            classifier: None,
            default_priority: Priority::Normal,
            shed_below: Priority::Normal,
            retry_after: Duration::from_secs(5),
        }
    }

    /// Sheds requests whose priority is below `priority` while over
    /// capacity (at most [`Priority::Critical`]: critical always passes).
    pub fn shed_below(mut self, priority: Priority) -> Self {
        self.shed_below = priority;
        self
    }

    /// Reads the priority from `header` instead of `x-priority`.
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// The priority of a request without a (valid) priority header.
    pub fn default_priority(mut self, priority: Priority) -> Self {
        self.default_priority = priority;
        self
    }

    /// Decides priorities with `f` instead of the header (for example by path).
    pub fn classifier(
        mut self,
        f: impl Fn(RequestHead<'_>) -> Priority + Send + Sync + 'static,
    ) -> Self {
        self.classifier = Some(Arc::new(f));
        self
    }

    /// The `Retry-After` of a shed request (default 5 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The priority of `head`.
    pub fn priority(&self, head: RequestHead<'_>) -> Priority {
        match &self.classifier {
            Some(f) => f(head),
            None => head
                .headers
                .get(&self.header)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(self.default_priority),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ShedLayer`] makes.
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

type Passed<B> = fn(Response<B>) -> Response<Either<B, Full<Bytes>>>;

/// The future of [`Shed`].
pub type ShedFuture<F, B, E> =
    EitherFuture<Ready<Result<Response<Either<B, Full<Bytes>>>, E>>, MapOk<F, Passed<B>>>;

fn passed<B>(response: Response<B>) -> Response<Either<B, Full<Bytes>>> {
    response.map(Either::Left)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Shed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = ShedFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let layer = &self.layer;
        let priority = layer.priority(RequestHead::of(&req));
        let shed = priority < layer.shed_below && priority < Priority::Critical && {
            let load = layer.state.snapshot().load();
            load.over_capacity()
        };
        if shed {
            metrics::counter!(SHED_METRIC, "outcome" => "shed", "priority" => priority.as_str())
                .increment(1);
            let load = layer.state.snapshot().load();
            tracing::debug!(
                path = req.uri().path(),
                %priority,
                load_percent = (load.ratio() * 100.0).round(),
                "shed: request below the priority threshold while the serving regions are over capacity"
            );
            let response = response::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(layer.retry_after),
                format!(
                    "shed: the serving regions carry {:.0} % of their capacity and this request's priority ({priority}) is below {}",
                    load.ratio() * 100.0,
                    layer.shed_below
                ),
            );
            return EitherFuture::Left(future::ready(Ok(response.map(Either::Right))));
        }
        metrics::counter!(SHED_METRIC, "outcome" => "served", "priority" => priority.as_str())
            .increment(1);
        EitherFuture::Right(self.inner.call(req).map_ok(passed as Passed<ResBody>))
    }
}
