//! The tokio runtime: drives the sans-IO [`Controller`](failover_core::Controller)
//! exactly as its docs say, executes its actions on the adapters with retry
//! and backoff, feeds every completion and failure back, and reports through
//! `tracing`, `metrics` and an append-only JSON-lines audit log.
//!
//! One task, the driver, owns the controller; inputs are handled strictly
//! one at a time, with `now` read once per input. Its sources have their own
//! channels, read in priority order, so an operator command never queues
//! behind probe results:
//!
//! ```text
//! operator ───────── commands (1st) ─┐        ┌─▶ router worker   (SetWeights)
//! workers' reports ─ reports  (2nd) ─┤        ├─▶ database worker (Fence, Promote)
//! controller timer ─────────  (3rd) ─┼▶ driver┼─▶ tracing + metrics + audit (Notify)
//! probe scheduler ─┐                 │        └─▶ status (watch)
//! db observer ─────┴ inputs   (4th) ─┘
//! ```
//!
//! With a coordinator ([`RuntimeBuilder::coordinator`]) the store's changes
//! come in on a channel of their own, read right after commands, and
//! `coordination` runs the store's writes, the verdict publisher and the
//! local DNS that follows the stored plan.
//!
//! Files, one concept each: `builder` (settings and start-up), `driver`
//! (the loop), `coordination` (controllers in every region), `workers`
//! (router, database and writer-name workers, the observer),
//! `adapter_call` (every adapter call under a timeout and `catch_unwind`),
//! `supervisor` (a dead task is an error on the handle, never silence),
//! `stop` (shutdown's deadline), `audit`, `retry`, `status`, `telemetry`;
//! with the `admin` feature, `admin` (the operator's HTTP API, started by
//! `RuntimeBuilder::admin`).
//!
//! Failure handling:
//! - every adapter call runs under a time limit ([`RetryPolicy::call_timeout`],
//!   [`RetryPolicy::promote_timeout`], `policy.timeout` for observations and
//!   probes) and `catch_unwind`: a plug-in that hangs or panics makes that
//!   action fail with a message saying so; its worker goes on;
//! - a task of the runtime that dies anyway shows in [`RuntimeHandle::health`]
//!   ([`RuntimeError::WorkerDied`], [`RuntimeError::DriverDied`]), as an
//!   error-level `tracing` event and as a `task_died` audit record;
//! - each failed attempt at applying a plan is a `tracing` warning, an
//!   `action_retry` audit record, a `failover_router_failures_total`
//!   increment and a line in [`RuntimeStatus::recent_events`];
//!   [`RouterStatus::applied`] shows the plan the router last confirmed,
//!   beside the desired one in `controller.plan`.
//!
//! Shutdown ([`Runtime::shutdown`]): the admin API stops; probes and observations stop; the driver
//! stops taking commands and issuing actions, but keeps feeding completions
//! to the controller until every worker has exited; an action in flight may
//! finish (retries included) until [`RuntimeBuilder::shutdown_deadline`];
//! every action ends with an `action_done`, `action_failed` or
//! `action_abandoned` audit record; then the audit log is drained and synced.

mod adapter_call;
#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod audit;
mod builder;
mod coordination;
mod driver;
mod handle;
mod retry;
mod status;
mod stop;
mod supervisor;
mod telemetry;
mod workers;
mod writer_store;

use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "probe")]
use failover_probe::ProbeScheduler;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use builder::RuntimeBuilder;
pub use handle::RuntimeHandle;
pub use retry::RetryPolicy;
pub use status::{NodeRole, NodeView, RouterStatus, RuntimeStatus};

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The audit log could not be opened.
    #[error("cannot open audit log {path}: {source}")]
    AuditLog {
        /// The path given to [`RuntimeBuilder::audit_log`].
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The recorded fencing epoch could not be read at start-up, so the
    /// runtime cannot know which epochs are safe to use. Fix database access first.
    #[error("cannot read the recorded fencing epoch at start-up: {0}")]
    RecordedEpoch(failover_core::PortError),
    /// The guard lease server (see [`RuntimeBuilder::guard_leases`]) did not start.
    #[error("cannot start the guard lease server: {0}")]
    LeaseServer(crate::lease::LeaseError),
    /// The coordination store could not be joined (unreachable, wrong
    /// endpoints, refused): the error names the endpoints and the setting.
    #[error("cannot join the coordination store: {0}")]
    Coordinator(failover_core::PortError),
    /// Builder settings that do not go together; the message names them.
    #[error("invalid runtime setup: {0}")]
    Setup(String),
    /// The admin API (see `RuntimeBuilder::admin`, feature `admin`) could not listen.
    #[error("cannot start the admin API on {listen}: {source}")]
    Admin {
        /// The address it was to listen on.
        listen: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// This controller does not lead: operator commands go to the leader
    /// (see `controller.leader` in the leader's status).
    #[error(
        "this controller does not lead (coordinated mode): send operator commands to the leader"
    )]
    NotLeader,
    /// The configuration names database nodes but no database adapter was given.
    #[error("the topology has database nodes but no database adapter was given: call RuntimeBuilder::database")]
    NoDatabase,
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    ConfigFile {
        /// The path given to [`RuntimeBuilder::from_config_file`].
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid; the error names the field and the rule.
    #[error("invalid configuration in {path}: {source}")]
    Config {
        /// The file it came from.
        path: PathBuf,
        /// What is wrong.
        source: failover_core::ConfigError,
    },
    /// The runtime has stopped; the handle can no longer send to it.
    #[error("the failover runtime has stopped")]
    Stopped,
    /// The task that owns the controller died: no input is handled any
    /// more. Restart the runtime (a bug; please report it with the message).
    #[error(
        "the failover driver died ({message}); no decisions are made any more: restart the runtime"
    )]
    DriverDied {
        /// How it died, e.g. the panic message.
        message: String,
    },
    /// A worker of the runtime died; the actions it runs fail from now on.
    #[error("the failover runtime's {worker} died ({message}); its actions fail until the runtime is restarted")]
    WorkerDied {
        /// `router worker`, `database worker`, `database observer` or `probe forwarder`.
        worker: &'static str,
        /// How it died, e.g. the panic message.
        message: String,
    },
}

/// A running failover controller. Call [`Runtime::shutdown`] to stop it and
/// wait for every task; dropping it stops the tasks without waiting (actions
/// in flight are abandoned without a record, and the audit log may lose its
/// last lines).
pub struct Runtime {
    handle: RuntimeHandle,
    stop: watch::Sender<stop::Stop>,
    shutdown_deadline: Duration,
    driver: Option<JoinHandle<()>>,
    #[cfg(feature = "probe")]
    scheduler: Option<ProbeScheduler>,
    tasks: Vec<JoinHandle<()>>,
    audit_task: Option<JoinHandle<()>>,
    lease_server: Option<std::sync::Arc<crate::lease::LeaseServer>>,
    coordinator: Option<std::sync::Arc<dyn failover_core::ports::Coordinator>>,
    #[cfg(feature = "admin")]
    admin: Option<admin::AdminServer>,
}

impl Runtime {
    /// The guard lease server, when started with
    /// [`RuntimeBuilder::guard_leases`]: give its [`url`](crate::lease::LeaseServer::url)
    /// to each node's guard.
    pub fn lease_server(&self) -> Option<&std::sync::Arc<crate::lease::LeaseServer>> {
        self.lease_server.as_ref()
    }

    /// The address the admin API listens on, when started with
    /// [`RuntimeBuilder::admin`] (the port chosen when it was given as 0).
    #[cfg(feature = "admin")]
    #[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// A cloneable handle for operator commands, probe results, status and health.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Stops the runtime and waits for it. Probes and database observations
    /// stop first; then actions in flight may finish until the shutdown
    /// deadline ([`RuntimeBuilder::shutdown_deadline`], from this call) and
    /// are abandoned after it, actions not yet started are abandoned, and
    /// each gets its `action_done`, `action_failed` or `action_abandoned`
    /// audit record (they are idempotent, and a controller started next
    /// re-derives them); the driver feeds every completion to the controller
    /// until the workers have exited; last, the audit log is written out and
    /// synced.
    pub async fn shutdown(mut self) {
        let deadline = tokio::time::Instant::now() + self.shutdown_deadline;
        // No more operator requests; the server's hold on the audit log goes too.
        #[cfg(feature = "admin")]
        if let Some(admin) = self.admin.take() {
            admin.task.abort();
            let _ = admin.task.await;
        }
        #[cfg(feature = "probe")]
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.shutdown().await;
        }
        self.stop.send_replace(stop::Stop::Draining { deadline });
        // Workers give up at the deadline; this bounds an adapter that
        // blocks its thread instead of awaiting.
        let limit = deadline + Duration::from_secs(2);
        let tasks = std::mem::take(&mut self.tasks);
        for mut task in self.driver.take().into_iter().chain(tasks) {
            if tokio::time::timeout_at(limit, &mut task).await.is_err() {
                tracing::error!("a runtime task did not stop by the shutdown deadline; aborted");
                task.abort();
            }
        }
        if let Some(coordinator) = self.coordinator.take() {
            // Hand over at once rather than after the leader lease's TTL.
            match tokio::time::timeout(Duration::from_secs(5), coordinator.resign()).await {
                Ok(Ok(())) => tracing::info!("resigned from the coordination store"),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not resign; the lease expires by itself")
                }
                Err(_) => tracing::warn!("resigning took over 5 s; the lease expires by itself"),
            }
        }
        if let Some(task) = self.audit_task.take() {
            // The writer ends once the last record sender (held by the tasks
            // above) is gone, after writing and syncing everything queued.
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::error!("the audit log writer did not finish within 5 s");
            }
        }
        tracing::info!("failover runtime stopped");
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // After `shutdown` everything below is already empty.
        self.stop.send_replace(stop::Stop::Draining {
            deadline: tokio::time::Instant::now(),
        });
        // Dropping the scheduler drops each target's stop signal, which ends it.
        #[cfg(feature = "probe")]
        self.scheduler.take();
        #[cfg(feature = "admin")]
        if let Some(admin) = self.admin.take() {
            admin.task.abort();
        }
        for task in self.driver.take().into_iter().chain(self.tasks.drain(..)) {
            task.abort();
        }
    }
}
