//! A database worker: runs its jobs strictly in the order the controller
//! issued them, retrying retryable errors up to `retry.fence_attempts` /
//! `retry.database_attempts` times. The runtime runs three: one for fences
//! and unfences (so operations on one node stay in order), one for
//! promotions, and one for the writer's synchronous standbys (which may wait
//! for a standby to catch up, and must hold up neither). A promotion needs no ordering against fences here: the
//! controller sends it only once the old writer is proven stopped (its
//! fence reported done, or its guard lease expired), so a fence of an
//! unreachable node hanging until its timeout never holds it up.

use std::sync::Arc;

use failover_core::ports::DatabaseAdmin;
use failover_core::Input;
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    abandon, failure, note_failed_attempt, record_duration, DatabaseJob, Report, Reports, Term,
    NOT_STARTED, PAST_DEADLINE,
};
use crate::runtime::adapter_call::guarded;
use crate::runtime::audit::AuditLog;
use crate::runtime::retry::RetryPolicy;
use crate::runtime::stop::StopSignal;

/// Runs until the job channel closes or shutdown begins; at shutdown the
/// job in flight may finish until the deadline, queued jobs are abandoned.
pub(crate) async fn administer(
    database: Arc<dyn DatabaseAdmin>,
    mut jobs: mpsc::UnboundedReceiver<DatabaseJob>,
    reports: Reports,
    retry: RetryPolicy,
    term: Term,
    audit: AuditLog,
    mut stop: StopSignal,
) {
    loop {
        let job = tokio::select! {
            biased;
            job = jobs.recv() => job,
            () = stop.begun() => None,
        };
        let job = match job {
            Some(job) if !stop.is_stopping() => job,
            other => {
                if let Some(job) = other {
                    abandon(&audit, job.id(), 0, NOT_STARTED);
                }
                abandon_queued(&mut jobs, &audit);
                return;
            }
        };
        let (id, what, attempts) = match job {
            DatabaseJob::Fence { id, .. } => (id, "fence", retry.fence_attempts),
            DatabaseJob::Promote { id, .. } => (id, "promote", retry.database_attempts),
            DatabaseJob::Unfence { id, .. } => (id, "unfence", retry.fence_attempts),
            // Decided afresh by the controller after a failure.
            DatabaseJob::SetSynchronous { id, .. } => (id, "set synchronous", 1),
        };
        let mut attempt = 0u32;
        let started = std::time::Instant::now();
        let outcome = loop {
            if let Err(error) = term.admit(job.term(), what) {
                break Err(error);
            }
            attempt += 1;
            let call = async {
                match job {
                    DatabaseJob::Fence { node, epoch, .. } => {
                        guarded(
                            "database.fence",
                            retry.call_timeout,
                            database.fence(node, epoch),
                        )
                        .await
                    }
                    DatabaseJob::Promote { request, .. } => guarded(
                        "database.promote",
                        retry.promote_timeout,
                        database.promote(&request),
                    )
                    .await
                    .map(Some),
                    DatabaseJob::Unfence { node, epoch, .. } => guarded(
                        "database.unfence",
                        retry.call_timeout,
                        database.unfence(node, epoch),
                    )
                    .await
                    .map(|()| None),
                    DatabaseJob::SetSynchronous {
                        node,
                        epoch,
                        standbys,
                        token,
                        ..
                    } => guarded(
                        "database.set_synchronous",
                        retry.promote_timeout,
                        database.set_synchronous(node, epoch, standbys, token),
                    )
                    .await
                    .map(|()| None),
                }
            };
            let Some(result) = stop.finish_by_deadline(call).await else {
                abandon(&audit, id, attempt, PAST_DEADLINE);
                abandon_queued(&mut jobs, &audit);
                return;
            };
            match result {
                Err(error) if error.is_retryable() && attempt < attempts.max(1) => {
                    let wait = retry.backoff(attempt);
                    note_failed_attempt(&audit, &reports, id, what, attempt, &error, Some(wait));
                    if stop
                        .finish_by_deadline(tokio::time::sleep(wait))
                        .await
                        .is_none()
                    {
                        abandon(&audit, id, attempt, PAST_DEADLINE);
                        abandon_queued(&mut jobs, &audit);
                        return;
                    }
                }
                Err(error) => {
                    note_failed_attempt(&audit, &reports, id, what, attempt, &error, None);
                    break Err(error);
                }
                Ok(lsn) => break Ok(lsn),
            }
        };
        record_duration(
            what,
            if outcome.is_ok() { "done" } else { "failed" },
            started,
        );
        let input = match outcome {
            Ok(lsn) => {
                tracing::info!(action = what, attempt, lsn = ?lsn.map(|l| l.to_string()), "database action done");
                audit.record(
                    "action_done",
                    json!({"action": id.0, "attempts": attempt, "lsn": lsn.map(|l| l.to_string())}),
                );
                match (job, lsn) {
                    // The fenced node's final position: a switchover promotes at exactly it.
                    (DatabaseJob::Fence { .. }, Some(final_lsn)) => {
                        Input::FenceDone { id, final_lsn }
                    }
                    _ => Input::ActionDone { id },
                }
            }
            Err(error) => {
                tracing::error!(action = what, attempt, %error, "database action failed");
                audit.record(
                    "action_failed",
                    json!({"action": id.0, "attempts": attempt, "error": error.to_string()}),
                );
                Input::ActionFailed {
                    id,
                    failure: failure(&error),
                }
            }
        };
        let _ = reports.send(Report::Finished(input));
    }
}

fn abandon_queued(jobs: &mut mpsc::UnboundedReceiver<DatabaseJob>, audit: &AuditLog) {
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        abandon(audit, job.id(), 0, NOT_STARTED);
    }
}
