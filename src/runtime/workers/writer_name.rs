//! The writer-name worker: points the writer's DNS name at the node whose
//! promotion completed ([`WriterName::point`]). The driver sends a job only
//! on `Promoted` (or `WriterMoved`, a promoted writer adopted from the
//! nodes), and the builder one for the configured primary of a fresh
//! deployment, so the name never moves before the old writer was fenced nor to
//! a node that was not promoted. Each job carries the leader's token; a
//! retryable failure is retried with backoff until it lands, unless a newer
//! job arrives first (only the latest writer matters), or the term ends.
//! Not a controller action: the controller does not wait for it.

use std::sync::Arc;

use failover_core::ports::WriterName;
use failover_core::{Epoch, FencingToken, NodeId};
use serde_json::json;
use tokio::sync::mpsc;

use super::Term;
use crate::runtime::adapter_call::guarded;
use crate::runtime::audit::AuditLog;
use crate::runtime::retry::RetryPolicy;
use crate::runtime::stop::StopSignal;

/// Point the writer name at `node`, promoted at `epoch`, under `term`.
#[derive(Clone, Debug)]
pub(crate) struct WriterJob {
    pub(crate) node: NodeId,
    /// For events: the node's name.
    pub(crate) name: String,
    pub(crate) epoch: Epoch,
    pub(crate) term: Option<FencingToken>,
}

/// Runs until the job channel closes or shutdown begins.
pub(crate) async fn follow(
    target: Arc<dyn WriterName>,
    mut jobs: mpsc::UnboundedReceiver<WriterJob>,
    retry: RetryPolicy,
    term: Term,
    audit: AuditLog,
    mut stop: StopSignal,
) {
    let mut next = None;
    loop {
        let mut job = match next.take() {
            Some(job) => job,
            None => {
                let job = tokio::select! {
                    biased;
                    job = jobs.recv() => job,
                    () = stop.begun() => None,
                };
                match job {
                    Some(job) if !stop.is_stopping() => job,
                    _ => return,
                }
            }
        };
        while let Ok(newer) = jobs.try_recv() {
            job = newer;
        }
        let mut attempt = 0u32;
        loop {
            if let Err(error) = term.admit(job.term, "point_writer_name") {
                audit.record(
                    "writer_name_failed",
                    json!({"node": job.name, "epoch": job.epoch.0, "error": error.to_string()}),
                );
                break;
            }
            attempt += 1;
            let call = guarded(
                "writer_name.point",
                retry.call_timeout,
                target.point(job.node, job.epoch, job.term),
            );
            let Some(result) = stop.finish_by_deadline(call).await else {
                return;
            };
            match result {
                Ok(()) => {
                    tracing::warn!(node = %job.name, epoch = job.epoch.0, attempt,
                        "the writer name points at {}, the writer at {}", job.name, job.epoch);
                    metrics::counter!("failover_writer_name_moves_total").increment(1);
                    audit.record(
                        "writer_name",
                        json!({"node": job.name, "epoch": job.epoch.0, "attempts": attempt,
                               "token": job.term.map(|t| t.0)}),
                    );
                    break;
                }
                Err(error) if error.is_retryable() => {
                    let wait = retry.backoff(attempt);
                    tracing::warn!(node = %job.name, epoch = job.epoch.0, attempt, %error,
                        "pointing the writer name at {} failed ({error}); retrying in {} ms",
                        job.name, wait.as_millis());
                    metrics::counter!("failover_writer_name_failures_total").increment(1);
                    let waited = stop
                        .finish_by_deadline(async {
                            tokio::select! {
                                () = tokio::time::sleep(wait) => None,
                                Some(newer) = jobs.recv() => Some(newer),
                            }
                        })
                        .await;
                    match waited {
                        None => return,
                        Some(None) => {}
                        Some(Some(newer)) => {
                            next = Some(newer);
                            break;
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(node = %job.name, epoch = job.epoch.0, %error,
                        "pointing the writer name at {} was refused ({error}); not retrying", job.name);
                    metrics::counter!("failover_writer_name_failures_total").increment(1);
                    audit.record(
                        "writer_name_failed",
                        json!({"node": job.name, "epoch": job.epoch.0, "attempts": attempt,
                               "error": error.to_string()}),
                    );
                    break;
                }
            }
        }
    }
}
