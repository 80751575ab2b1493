//! The system calls the harness needs and std does not offer: entering a
//! network namespace (`setns`), on this thread or in a child before `exec`,
//! and signalling a process group. The only `unsafe` code of the testkit.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Moves the calling thread (only it: `setns` is per thread) into the
/// network namespace mounted at `path`. Threads it starts afterwards are
/// born there too.
pub(crate) fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: `file` is an open descriptor for the whole call; setns reads
    // nothing else from us and changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `command`, when spawned, run in the network namespace mounted at
/// `path`: the child enters it between `fork` and `exec`.
pub(crate) fn place(command: &mut Command, path: &Path) -> io::Result<()> {
    // Opened here, in the parent: the child only calls setns, which is
    // async-signal-safe, as code between fork and exec must be. The
    // descriptor is close-on-exec, so the program never sees it.
    let file = File::open(path)?;
    // SAFETY: the closure allocates nothing and calls only setns and reads
    // errno, both safe between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    Ok(())
}

/// Sends `signal` to every process of the process group `pgid`.
pub(crate) fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid =
        i32::try_from(pgid).map_err(|_| io::Error::other("process group id out of range"))?;
    if pgid <= 1 {
        // kill(0 or -1) would signal our own group or every process.
        return Err(io::Error::other(format!(
            "refusing to signal process group {pgid}"
        )));
    }
    // SAFETY: kill takes plain integers; a negative pid names a group.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `kill -9`s one process (not a group): what a crashed run left in a
/// namespace.
pub(crate) fn kill_process(pid: u32) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    if pid <= 1 || pid as u32 == std::process::id() {
        return Err(io::Error::other(format!("refusing to kill pid {pid}")));
    }
    // SAFETY: kill takes plain integers.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this process runs with effective uid 0, which creating network
/// namespaces needs.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}
