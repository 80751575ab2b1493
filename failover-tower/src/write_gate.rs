//! [`WriteGateLayer`]: mutating requests wait out a writer change with
//! `503` and `Retry-After`; reads pass.

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{self, Either as EitherFuture, MapOk, Ready, TryFutureExt};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::{MutationClassifier, RequestHead};
use crate::response;
use crate::state::{FailoverState, Snapshot};

/// The metric counting the gate's decisions, by `outcome`: `read` (not a
/// mutation, passed), `open` (a mutation, passed), `promotion`, `fenced`,
/// `unknown_writer` (a mutation answered 503 for that reason).
pub const WRITE_GATE_METRIC: &str = "failover_tower_write_gate_total";

/// Why the gate holds mutations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Closed {
    /// A promotion is in progress: the writer is moving.
    Promotion,
    /// The writer's node is fenced (it refuses writes).
    Fenced,
    /// No writer is known and the source has lost contact.
    UnknownWriter,
}

impl Closed {
    /// The metric label of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Promotion => "promotion",
            Closed::Fenced => "fenced",
            Closed::UnknownWriter => "unknown_writer",
        }
    }
}

/// What the gate does with a mutation, given a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteVerdict {
    /// Mutations pass.
    Open,
    /// Mutations get `503` with `Retry-After: retry_after` (rounded up to
    /// whole seconds, at least 1).
    Closed {
        /// Why.
        reason: Closed,
        /// The rest of the planner's bound on the promotion when there is
        /// one, else the gate's fallback.
        retry_after: Duration,
    },
}

impl WriteVerdict {
    /// The verdict on `snapshot` at `now`, with `fallback` as the
    /// `Retry-After` when no planner bound applies.
    ///
    /// Closed while a promotion is in progress, while the writer is fenced,
    /// and while no writer is known and the source has lost contact. A
    /// known, unfenced writer stays open while stale: the last state is the
    /// best guess, and the database itself refuses writes on a fenced node.
    pub fn of(snapshot: &Snapshot, now: Instant, fallback: Duration) -> Self {
        let bound = snapshot
            .promotion
            .as_ref()
            .and_then(|p| p.remaining(now))
            .unwrap_or(fallback);
        let reason = if snapshot.promotion.is_some() {
            Closed::Promotion
        } else if snapshot.writer.fenced {
            Closed::Fenced
        } else if snapshot.writer.node.is_none() && snapshot.is_stale() {
            Closed::UnknownWriter
        } else {
            return WriteVerdict::Open;
        };
        WriteVerdict::Closed {
            reason,
            retry_after: bound,
        }
    }
}

/// A layer that answers mutating requests with `503 Service Unavailable`
/// and `Retry-After` while the writer moves, is fenced, or is unknown and
/// the state is stale ([`WriteVerdict::of`]); reads always pass, so users
/// see a read-only service rather than errors.
///
/// Mutations are decided by method ([`is_mutating`](crate::is_mutating))
/// unless [`WriteGateLayer::classifier`] says otherwise. Every decision is
/// counted in [`WRITE_GATE_METRIC`].
#[derive(Clone, Debug)]
pub struct WriteGateLayer {
    state: FailoverState,
    classifier: MutationClassifier,
    fallback: Duration,
}

impl WriteGateLayer {
    /// Gates on `state`, mutations by method, a fallback `Retry-After` of 5 s.
    pub fn new(state: FailoverState) -> Self {
        WriteGateLayer {
            state,
            classifier: MutationClassifier::by_method(),
            fallback: Duration::from_secs(5),
        }
    }

    /// Decides which requests mutate.
    pub fn classifier(mut self, classifier: MutationClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The `Retry-After` when no planner bound applies (a fenced writer, an
    /// unknown one, a promotion waiting for an operator); default 5 s.
    pub fn fallback_retry_after(mut self, retry_after: Duration) -> Self {
        self.fallback = retry_after;
        self
    }
}

impl<S> Layer<S> for WriteGateLayer {
    type Service = WriteGate<S>;

    fn layer(&self, inner: S) -> WriteGate<S> {
        WriteGate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`WriteGateLayer`] makes.
#[derive(Clone, Debug)]
pub struct WriteGate<S> {
    inner: S,
    layer: WriteGateLayer,
}

type Passed<B> = fn(Response<B>) -> Response<Either<B, Full<Bytes>>>;

/// The future of [`WriteGate`].
pub type WriteGateFuture<F, B, E> =
    EitherFuture<Ready<Result<Response<Either<B, Full<Bytes>>>, E>>, MapOk<F, Passed<B>>>;

fn passed<B>(response: Response<B>) -> Response<Either<B, Full<Bytes>>> {
    response.map(Either::Left)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for WriteGate<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = WriteGateFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let layer = &self.layer;
        let outcome = if !layer.classifier.mutates(RequestHead::of(&req)) {
            "read"
        } else {
            let snapshot = layer.state.snapshot();
            match WriteVerdict::of(&snapshot, Instant::now(), layer.fallback) {
                WriteVerdict::Open => "open",
                WriteVerdict::Closed {
                    reason,
                    retry_after,
                } => {
                    metrics::counter!(WRITE_GATE_METRIC, "outcome" => reason.as_str()).increment(1);
                    tracing::debug!(
                        method = %req.method(),
                        path = req.uri().path(),
                        reason = reason.as_str(),
                        retry_after_s = response::retry_after_secs(retry_after),
                        "write gate: mutation refused while the writer is not available"
                    );
                    let message = match reason {
                        Closed::Promotion => format!(
                            "writes are paused while the database writer moves (promotion {}); reads still work",
                            snapshot.promotion.as_ref().map_or("", |p| p.phase.as_str())
                        ),
                        Closed::Fenced => "writes are paused: the database writer is fenced; reads still work".to_owned(),
                        Closed::UnknownWriter => "writes are paused: the database writer is unknown and the failover state is stale; reads still work".to_owned(),
                    };
                    let response = response::plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some(retry_after),
                        message,
                    );
                    return EitherFuture::Left(future::ready(Ok(response.map(Either::Right))));
                }
            }
        };
        metrics::counter!(WRITE_GATE_METRIC, "outcome" => outcome).increment(1);
        EitherFuture::Right(self.inner.call(req).map_ok(passed as Passed<ResBody>))
    }
}
