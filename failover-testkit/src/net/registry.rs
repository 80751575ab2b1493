//! What a net started (process groups, tasks), so that dropping the net
//! ends everything, even what a leaked handle still refers to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::ns;

/// What the net started, so dropping it can end everything, even what a
/// leaked handle still refers to.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: Mutex<RegistryEntries>,
}

#[derive(Debug, Default)]
struct RegistryEntries {
    next: u64,
    groups: HashMap<u64, u32>,
    stops: HashMap<u64, Arc<Notify>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, RegistryEntries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// A new id for a process or a task.
    pub(crate) fn id(&self) -> u64 {
        let mut e = self.lock();
        e.next += 1;
        e.next
    }
    /// Records the process group `pgid` of process `id`.
    pub(crate) fn set_group(&self, id: u64, pgid: u32) {
        self.lock().groups.insert(id, pgid);
    }
    /// Records the stop signal of task `id`.
    pub(crate) fn set_stop(&self, id: u64, stop: Arc<Notify>) {
        self.lock().stops.insert(id, stop);
    }
    /// Forgets process or task `id` (it ended and was reaped or joined).
    pub(crate) fn remove(&self, id: u64) {
        let mut e = self.lock();
        e.groups.remove(&id);
        e.stops.remove(&id);
    }
    /// Kills every process group and stops every task still recorded.
    pub(crate) fn shut_down(&self) {
        let e = self.lock();
        for pgid in e.groups.values() {
            let _ = ns::signal_group(*pgid, libc::SIGKILL);
        }
        for stop in e.stops.values() {
            stop.notify_one();
        }
    }
}
