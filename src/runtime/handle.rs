//! [`RuntimeHandle`]: commands in; status, events and health out.

use failover_core::{Command, Epoch, Event, Input, ProbeResult, TrafficReport};
use tokio::sync::{broadcast, mpsc, watch};

use super::status::RuntimeStatus;
use super::supervisor::Deaths;
use super::RuntimeError;

/// Talks to a running [`Runtime`](super::Runtime). Cheap to clone.
#[derive(Clone, Debug)]
pub struct RuntimeHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) inputs: mpsc::Sender<Input>,
    pub(crate) status: watch::Receiver<RuntimeStatus>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) deaths: Deaths,
    /// Whether the runtime runs with a coordinator (then only the leader
    /// takes commands).
    pub(crate) coordinated: bool,
    /// The coordinator, to say who leads.
    pub(crate) coordinator: Option<CoordinatorRef>,
}

/// The runtime's coordinator, held by its handle to say who leads.
#[derive(Clone)]
pub(crate) struct CoordinatorRef(pub(crate) std::sync::Arc<dyn failover_core::ports::Coordinator>);

impl std::fmt::Debug for CoordinatorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Coordinator")
    }
}

impl RuntimeHandle {
    /// Sends an operator command (drain, undrain, switchover, force promote,
    /// pause, resume). Commands have their own channel, which the controller
    /// reads before probe results: a command never waits behind them.
    ///
    /// With a coordinator only the leader takes commands: elsewhere this is
    /// [`RuntimeError::NotLeader`], and nothing changes. (The leader stores
    /// the intent of drains and pauses, so every controller converges on it.)
    pub async fn command(&self, command: Command) -> Result<(), RuntimeError> {
        self.alive()?;
        if self.coordinated && self.status.borrow().controller.leader.is_none() {
            return Err(RuntimeError::NotLeader);
        }
        self.commands
            .send(command)
            .await
            .map_err(|_| self.stopped())
    }

    /// The controller that leads, as the coordination store last showed it
    /// (its id and, when it advertised one, its admin API's URL): where a
    /// command refused with [`RuntimeError::NotLeader`] should go. `None`
    /// without a coordinator, or while no controller leads.
    pub fn leader(&self) -> Option<failover_core::LeaderInfo> {
        self.coordinator.as_ref().and_then(|c| c.0.leader())
    }

    /// Feeds a probe result from a source of your own (for example a probe
    /// scheduler from `failover-probe`, or a check the library does not ship).
    /// Waits while the input channel is full.
    pub async fn report_probe(&self, result: ProbeResult) -> Result<(), RuntimeError> {
        self.alive()?;
        self.inputs
            .send(Input::Probe(result))
            .await
            .map_err(|_| self.stopped())
    }

    /// Feeds what the service's users saw of one region's requests (passive
    /// health; see `failover_core::PassivePolicy`). The controller ignores
    /// it while `policy.passive` is off. `failover::tower::passive_health`
    /// (feature `tower`) calls this for every aggregate of its layer.
    /// Waits while the input channel is full.
    pub async fn report_traffic(&self, report: TrafficReport) -> Result<(), RuntimeError> {
        self.alive()?;
        self.inputs
            .send(Input::Traffic(report))
            .await
            .map_err(|_| self.stopped())
    }

    /// `Ok` while every task of the runtime runs; otherwise the first that
    /// died: [`RuntimeError::DriverDied`] or [`RuntimeError::WorkerDied`]
    /// (each death is also an error-level `tracing` event and a `task_died`
    /// audit record).
    pub fn health(&self) -> Result<(), RuntimeError> {
        match self.deaths.first() {
            Some(death) => Err(death.to_error()),
            None => Ok(()),
        }
    }

    /// The latest status.
    pub fn status(&self) -> RuntimeStatus {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every status change.
    pub fn watch_status(&self) -> watch::Receiver<RuntimeStatus> {
        self.status.clone()
    }

    /// Every event from now on, as the controller emitted it (with its `at`
    /// instant), for alerting hooks and measurements. A receiver that falls
    /// more than 1,024 events behind loses the oldest (and is told so).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The fencing epoch the controller is at.
    pub fn epoch(&self) -> Epoch {
        self.status.borrow().controller.epoch
    }

    fn alive(&self) -> Result<(), RuntimeError> {
        match self.deaths.driver_died() {
            Some(death) => Err(death.to_error()),
            None => Ok(()),
        }
    }

    fn stopped(&self) -> RuntimeError {
        self.alive().err().unwrap_or(RuntimeError::Stopped)
    }
}
