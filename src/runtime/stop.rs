//! How the runtime's tasks learn that it is stopping, and by when in-flight
//! work must be done.
//!
//! [`Runtime::shutdown`](super::Runtime::shutdown) moves the state from
//! `Running` to `Draining { deadline }` once. Sources of inputs (probes, the
//! database observer) stop at once; an action already started may finish
//! (retries included) until the deadline and is abandoned after it; an
//! action not yet started is abandoned at once (except a newer weight plan
//! that supersedes the one in flight while it waits to retry: it takes that
//! one's place). Every action ends with a done, failed or abandoned record
//! in the audit log.

use std::future::Future;

use tokio::sync::watch;
use tokio::time::Instant;

/// The runtime's life as its tasks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Normal operation.
    Running,
    /// Shutting down: in-flight actions may run until `deadline`.
    Draining {
        /// When in-flight actions are abandoned.
        deadline: Instant,
    },
}

/// A task's view of [`Stop`]; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct StopSignal(watch::Receiver<Stop>);

impl StopSignal {
    /// A sender in `Running` state and its first receiver.
    pub(crate) fn new() -> (watch::Sender<Stop>, StopSignal) {
        let (tx, rx) = watch::channel(Stop::Running);
        (tx, StopSignal(rx))
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.0.borrow() != Stop::Running
    }

    /// Resolves once shutdown has begun (or the runtime was dropped).
    pub(crate) async fn begun(&mut self) {
        let _ = self.0.wait_for(|stop| *stop != Stop::Running).await;
    }

    /// Runs `work` to its end, unless shutdown begins and its deadline passes
    /// first: then `None`, and `work` is dropped at its current await point.
    pub(crate) async fn finish_by_deadline<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            let stop = *self.0.borrow_and_update();
            match stop {
                Stop::Running => tokio::select! {
                    out = &mut work => return Some(out),
                    changed = self.0.changed() => {
                        if changed.is_err() {
                            // The runtime was dropped; its tasks are aborted anyway.
                            return Some(work.await);
                        }
                    }
                },
                Stop::Draining { deadline } => tokio::select! {
                    out = &mut work => return Some(out),
                    () = tokio::time::sleep_until(deadline) => return None,
                },
            }
        }
    }
}
