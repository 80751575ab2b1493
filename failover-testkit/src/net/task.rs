//! Async code running in a region: a dedicated OS thread moved into the
//! region's namespace, with a tokio runtime of its own.

use std::future::Future;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::{ns, NetError, Region, Registry};
use crate::proxy::TcpProxy;

/// How long a stopped runtime waits for its blocking tasks.
const SHUTDOWN: Duration = Duration::from_secs(5);

/// A future running in a region, started by [`Net::run`](super::Net::run).
/// Dropping the handle stops the future (it is dropped at its next await)
/// and joins the thread.
#[derive(Debug)]
pub struct RegionTask<T> {
    region: String,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<Option<T>>>,
    registry: Arc<Registry>,
    id: u64,
}

impl<T: Send + 'static> RegionTask<T> {
    pub(super) fn start<F, Fut>(
        region: Region,
        registry: Arc<Registry>,
        make: F,
    ) -> Result<RegionTask<T>, NetError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let id = registry.id();
        let stop = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), NetError>>();
        let path = region.netns_path();
        let namespace = region.namespace.clone();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("region-{}", region.name))
            .spawn(move || {
                if let Err(error) = ns::enter(&path) {
                    let _ = ready_tx.send(Err(NetError::Io {
                        what: format!("enter {} on a new thread", path.display()),
                        namespace: Some(namespace),
                        error,
                    }));
                    return None;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(error) => {
                        let _ = ready_tx.send(Err(NetError::Io {
                            what: "build a tokio runtime".into(),
                            namespace: Some(namespace),
                            error,
                        }));
                        return None;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let out = runtime.block_on(async move {
                    tokio::select! {
                        out = make() => Some(out),
                        () = stopped.notified() => None,
                    }
                });
                runtime.shutdown_timeout(SHUTDOWN);
                out
            })
            .map_err(|error| NetError::Io {
                what: "spawn a thread".into(),
                namespace: Some(region.namespace.clone()),
                error,
            })?;
        registry.set_stop(id, Arc::clone(&stop));
        let mut task = RegionTask {
            region: region.name.clone(),
            stop,
            thread: Some(thread),
            registry,
            id,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(task),
            Ok(Err(e)) => Err(e),
            // The thread ended without a word: it panicked.
            Err(_) => match task.wait() {
                Err(e) => Err(e),
                Ok(_) => Err(NetError::TaskStopped {
                    region: region.name,
                }),
            },
        }
    }

    /// The region it runs in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether the future has finished (or panicked, or was stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the future to finish and returns its output. Put a
    /// timeout in the future if it may hang.
    pub fn join(mut self) -> Result<T, NetError> {
        match self.wait()? {
            Some(out) => Ok(out),
            None => Err(NetError::TaskStopped {
                region: self.region.clone(),
            }),
        }
    }

    /// Stops the future and joins the thread; its output if it had
    /// finished before.
    pub fn stop(mut self) -> Result<Option<T>, NetError> {
        self.stop.notify_one();
        self.wait()
    }

    fn wait(&mut self) -> Result<Option<T>, NetError> {
        let Some(thread) = self.thread.take() else {
            return Ok(None);
        };
        let joined = thread.join();
        self.registry.remove(self.id);
        joined.map_err(|panic| NetError::TaskPanicked {
            region: self.region.clone(),
            message: panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(not a string)".into()),
        })
    }
}

impl<T> Drop for RegionTask<T> {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.registry.remove(self.id);
    }
}

/// A server started on a region's runtime by
/// [`Net::serve`](super::Net::serve) (or [`Net::proxy`](super::Net::proxy)):
/// its handle, usable from any thread (it dereferences to it), and the
/// region thread that runs it. Dropping it drops the handle, then stops the
/// runtime and joins the thread.
#[derive(Debug)]
pub struct RegionService<T> {
    // Dropped first: the server ends before its runtime goes.
    service: T,
    _task: RegionTask<()>,
}

impl<T> RegionService<T> {
    pub(super) fn new(service: T, task: RegionTask<()>) -> RegionService<T> {
        RegionService {
            service,
            _task: task,
        }
    }
}

impl<T> std::ops::Deref for RegionService<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.service
    }
}

/// A [`TcpProxy`] running in a region, from [`Net::proxy`](super::Net::proxy).
pub type RegionProxy = RegionService<TcpProxy>;
