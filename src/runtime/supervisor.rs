//! Watches the runtime's own tasks (driver, workers, observer, probe
//! forwarder). A task that panics, or ends while the runtime is not
//! stopping, is recorded as dead: an error-level `tracing` event, a
//! `task_died` audit record, the `failover_task_deaths_total{task}` counter,
//! and an error returned by [`RuntimeHandle::health`](super::RuntimeHandle::health).
//! Never silence.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use serde_json::json;

use super::adapter_call::panic_message;
use super::audit::AuditLog;
use super::stop::StopSignal;
use super::RuntimeError;

/// A task of the runtime that died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskDeath {
    /// Which task: `driver`, `router worker`, `database worker`, …
    pub(crate) task: &'static str,
    /// How it died.
    pub(crate) message: String,
}

impl TaskDeath {
    pub(crate) fn to_error(&self) -> RuntimeError {
        if self.task == DRIVER {
            RuntimeError::DriverDied {
                message: self.message.clone(),
            }
        } else {
            RuntimeError::WorkerDied {
                worker: self.task,
                message: self.message.clone(),
            }
        }
    }
}

/// The name the driver task is supervised under.
pub(crate) const DRIVER: &str = "driver";

/// Deaths seen so far, shared by the supervisors and the handles.
#[derive(Clone, Debug, Default)]
pub(crate) struct Deaths(Arc<Mutex<Vec<TaskDeath>>>);

impl Deaths {
    /// The first death, if any (later ones are often its consequence).
    pub(crate) fn first(&self) -> Option<TaskDeath> {
        self.lock().first().cloned()
    }

    /// Whether the driver died.
    pub(crate) fn driver_died(&self) -> Option<TaskDeath> {
        self.lock().iter().find(|d| d.task == DRIVER).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TaskDeath>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, death: TaskDeath, audit: &AuditLog) {
        tracing::error!(task = death.task, message = %death.message,
            "failover runtime task died; the runtime is degraded");
        metrics::counter!("failover_task_deaths_total", "task" => death.task).increment(1);
        audit.record(
            "task_died",
            json!({"task": death.task, "message": death.message}),
        );
        self.lock().push(death);
    }
}

/// Runs `work` as the task named `task`, recording its death (panic, or an
/// end while the runtime is not stopping) in `deaths`.
pub(crate) async fn supervise(
    task: &'static str,
    work: impl Future<Output = ()>,
    deaths: Deaths,
    audit: AuditLog,
    stop: StopSignal,
) {
    let message = match AssertUnwindSafe(work).catch_unwind().await {
        Ok(()) if stop.is_stopping() => return,
        Ok(()) => "stopped while the runtime was running".to_owned(),
        Err(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
    };
    deaths.record(TaskDeath { task, message }, &audit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_ends_early_is_reported_not_silent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        let (audit, writer) = AuditLog::open(&path, false).await.expect("audit log");
        let (stop_tx, stop) = StopSignal::new();
        let deaths = Deaths::default();

        supervise(
            "router worker",
            async { panic!("index out of bounds") },
            deaths.clone(),
            audit.clone(),
            stop.clone(),
        )
        .await;
        supervise(
            DRIVER,
            async {},
            deaths.clone(),
            audit.clone(),
            stop.clone(),
        )
        .await;
        let first = deaths.first().expect("a death is recorded");
        assert_eq!(first.task, "router worker");
        assert!(first.message.contains("index out of bounds"), "{first:?}");
        assert!(matches!(
            first.to_error(),
            RuntimeError::WorkerDied {
                worker: "router worker",
                ..
            }
        ));
        assert!(matches!(
            deaths.driver_died().expect("driver death").to_error(),
            RuntimeError::DriverDied { .. }
        ));

        // Ending during shutdown is not a death.
        let _ = stop_tx.send(super::super::stop::Stop::Draining {
            deadline: tokio::time::Instant::now(),
        });
        supervise(
            "database observer",
            async {},
            deaths.clone(),
            audit.clone(),
            stop,
        )
        .await;
        assert_eq!(deaths.lock().len(), 2);

        drop(audit);
        writer.await.expect("writer ends");
        let log = std::fs::read_to_string(&path).expect("audit log");
        assert_eq!(log.matches("\"task_died\"").count(), 2, "{log}");
    }
}
