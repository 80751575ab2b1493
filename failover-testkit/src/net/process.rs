//! A process started in a region, with the faults drills inflict on
//! processes: `kill -9`, a long pause (`SIGSTOP` … `SIGCONT`), a restart.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;

use super::{ns, place, NetError, Region, Registry};

/// Builds the command of a [`RegionProcess`], again at every restart.
type MakeCommand = Box<dyn FnMut() -> Command + Send>;

/// A process running in a region's namespace, in a process group of its
/// own, so that signals reach its children too (a postmaster's backends).
/// Started by [`Net::spawn`](super::Net::spawn). Dropping it kills the
/// group and reaps the process.
pub struct RegionProcess {
    region: Region,
    make: MakeCommand,
    child: Option<Child>,
    registry: Arc<Registry>,
    id: u64,
}

impl std::fmt::Debug for RegionProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionProcess")
            .field("region", &self.region.name)
            .field("pid", &self.pid())
            .finish()
    }
}

impl RegionProcess {
    pub(super) fn start(
        region: Region,
        make: MakeCommand,
        registry: Arc<Registry>,
    ) -> Result<RegionProcess, NetError> {
        let id = registry.id();
        let mut process = RegionProcess {
            region,
            make,
            child: None,
            registry,
            id,
        };
        process.launch()?;
        Ok(process)
    }

    fn launch(&mut self) -> Result<(), NetError> {
        let mut command = (self.make)();
        command.process_group(0);
        place(&mut command, &self.region)?;
        let child = command.spawn().map_err(|error| NetError::Io {
            what: format!("spawn {command:?}"),
            namespace: Some(self.region.namespace.clone()),
            error,
        })?;
        // process_group(0): the child leads a group whose id is its pid.
        self.registry.set_group(self.id, child.id());
        tracing::info!(region = %self.region.name, pid = child.id(), "net: process started");
        self.child = Some(child);
        Ok(())
    }

    /// The region it runs in.
    pub fn region(&self) -> &str {
        &self.region.name
    }

    /// Its pid (also its process group id), while started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it runs (a paused process runs). An exited process is not
    /// reaped here but by [`kill`](Self::kill) (or the drop): while it is
    /// unreaped its pid, which names its process group, cannot be reused,
    /// so signalling the group can never reach a stranger's processes.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|child| process_state(child.id()).is_some_and(|s| s != 'Z'))
    }

    /// `kill -9`s its process group and reaps it; returns how it ended
    /// (`None` if it was not started). A paused process is killed too.
    pub fn kill(&mut self) -> Result<Option<ExitStatus>, NetError> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // ESRCH (already gone) is fine: the wait below reports how it ended.
        let _ = ns::signal_group(child.id(), libc::SIGKILL);
        let status = child.wait().map_err(|error| NetError::Io {
            what: format!("reap process {}", child.id()),
            namespace: Some(self.region.namespace.clone()),
            error,
        });
        self.registry.remove(self.id);
        tracing::info!(region = %self.region.name, pid = child.id(), "net: process killed");
        status.map(Some)
    }

    /// Pauses its process group (`SIGSTOP`): it holds its sockets and
    /// answers nothing, like a process stuck in a long GC or a frozen VM.
    pub fn pause(&mut self) -> Result<(), NetError> {
        self.signal(libc::SIGSTOP, "pause")
    }

    /// Resumes a paused process group (`SIGCONT`).
    pub fn resume(&mut self) -> Result<(), NetError> {
        self.signal(libc::SIGCONT, "resume")
    }

    /// Kills it (if it runs) and starts the command anew, from `make`.
    pub fn restart(&mut self) -> Result<(), NetError> {
        self.kill()?;
        self.launch()
    }

    fn signal(&mut self, signal: i32, what: &str) -> Result<(), NetError> {
        if !self.is_running() {
            return Err(NetError::NotRunning {
                region: self.region.name.clone(),
                what: what.to_owned(),
            });
        }
        let pid = self.pid().unwrap_or(0);
        ns::signal_group(pid, signal).map_err(|error| NetError::Io {
            what: format!("{what} process group {pid}"),
            namespace: Some(self.region.namespace.clone()),
            error,
        })?;
        tracing::info!(region = %self.region.name, pid, "net: process {what}d");
        Ok(())
    }
}

/// A process's state letter from `/proc/PID/stat` (`R`, `S`, `T` stopped,
/// `Z` exited and not reaped), or `None` if there is no such process.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: read after it.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

impl Drop for RegionProcess {
    fn drop(&mut self) {
        let _ = self.kill();
        self.registry.remove(self.id);
    }
}
