//! [`NodeKill`]: the guard's last resort, for a node it cannot fence.
//!
//! A fence is a conversation with PostgreSQL. A server that is frozen
//! (`SIGSTOP`, a cgroup freeze, a stalled disk that blocks every backend)
//! cannot hold it: the fence times out, the lease runs out, another node is
//! promoted — and when the old server thaws, its backends carry on
//! committing. With asynchronous replication those commits are acknowledged
//! writes on a deposed primary: two writers.
//!
//! So when the guard cannot confirm its fence by its lease deadline, it
//! kills the server instead, as a watchdog would (Patroni reboots the
//! machine through `/dev/watchdog` for the same case). `SIGKILL` takes a
//! stopped process too, and the guard's deadline comes `margin` before the
//! store can let the lease expire, so no other node is promoted before the
//! node is gone.
//!
//! The guard finds the postmaster through `postmaster.pid` in the data
//! directory and kills it only if `/proc/PID/cwd` *is* that directory (the
//! postmaster works inside its data directory), so a stale pid file whose
//! pid was reused never kills a stranger. It stops the postmaster first (so
//! it forks nothing more), kills every child (backends, WAL writer,
//! checkpointer, parallel workers), then the postmaster, and waits until it
//! is gone. Linux only (`/proc`); signals are sent with the shell's `kill`
//! builtin, so nothing beyond `/bin/sh` is needed.
//!
//! **Do not let anything restart the killed server on its own** (a
//! `Restart=` in its systemd unit, a container restart policy): it would come
//! back as a primary before its guard could fence it again. Bring it back
//! as a replica of the new writer ([`rejoin()`](crate::rejoin())).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::PgError;

/// Kills the PostgreSQL server of one data directory: see the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct NodeKill {
    data_dir: PathBuf,
}

/// What [`NodeKill::kill`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillOutcome {
    /// No server was running in the data directory; nothing was signalled.
    NotRunning {
        /// Why it is taken as not running.
        why: String,
    },
    /// The postmaster and its children were killed and are gone.
    Killed {
        /// The postmaster's pid.
        postmaster: u32,
        /// How many of its children were killed with it.
        children: usize,
    },
}

impl NodeKill {
    /// The server of `data_dir`: the directory must exist (it is resolved
    /// now, so the check against `/proc/PID/cwd` compares real paths).
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self, PgError> {
        let given = data_dir.into();
        let data_dir = std::fs::canonicalize(&given).map_err(|e| PgError::GuardSetting {
            field: "kill data_dir",
            reason: format!(
                "{}: {e}; give the node's PostgreSQL data directory",
                given.display()
            ),
        })?;
        if !Path::new("/proc/self/stat").exists() {
            return Err(PgError::GuardSetting {
                field: "kill data_dir",
                reason: "killing the node needs /proc (Linux)".to_owned(),
            });
        }
        Ok(NodeKill { data_dir })
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Kills the server now, from a blocking thread.
    pub async fn kill(&self) -> Result<KillOutcome, PgError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.kill_blocking())
            .await
            .map_err(|e| this_error(&self.data_dir, format!("the kill task failed: {e}")))?
    }

    /// The postmaster running in the data directory, if one is: its pid,
    /// checked against `/proc/PID/cwd` like [`kill`](Self::kill) does.
    pub async fn running(&self) -> Result<Option<u32>, PgError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.postmaster().map(Result::ok))
            .await
            .map_err(|e| this_error(&self.data_dir, format!("the check task failed: {e}")))?
    }

    /// `Ok(Ok(pid))`: the live postmaster of the data directory;
    /// `Ok(Err(why))`: none runs.
    fn postmaster(&self) -> Result<Result<u32, String>, PgError> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let text = match std::fs::read_to_string(&pid_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err(format!("no {}", pid_file.display())))
            }
            Err(e) => {
                return Err(this_error(
                    &self.data_dir,
                    format!("reading postmaster.pid: {e}"),
                ))
            }
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
            .filter(|pid| *pid > 1)
        else {
            return Err(this_error(
                &self.data_dir,
                format!(
                    "postmaster.pid does not start with a pid: {:?}",
                    text.lines().next()
                ),
            ));
        };
        if matches!(state(pid), None | Some('Z' | 'X')) {
            return Ok(Err(format!("postmaster {pid} is not running")));
        }
        match std::fs::read_link(format!("/proc/{pid}/cwd")) {
            Ok(cwd) if cwd == self.data_dir => Ok(Ok(pid)),
            Ok(cwd) => Ok(Err(format!(
                "pid {pid} from postmaster.pid works in {}, not in the data directory: a stale pid file",
                cwd.display()
            ))),
            Err(e) if matches!(state(pid), None | Some('Z' | 'X')) => {
                Ok(Err(format!("postmaster {pid} is not running ({e})")))
            }
            Err(e) => Err(this_error(
                &self.data_dir,
                format!("cannot tell whether pid {pid} is its postmaster: /proc/{pid}/cwd: {e}"),
            )),
        }
    }

    fn kill_blocking(&self) -> Result<KillOutcome, PgError> {
        let pid = match self.postmaster()? {
            Ok(pid) => pid,
            Err(why) => return Ok(KillOutcome::NotRunning { why }),
        };
        // Stopped, it forks no child between our scan and its death.
        signal("STOP", &[pid]).map_err(|e| this_error(&self.data_dir, e))?;
        wait_for(Duration::from_millis(500), || {
            matches!(state(pid), None | Some('T' | 't' | 'Z' | 'X'))
        });
        let mut children = 0;
        for _ in 0..3 {
            let found = children_of(pid);
            if found.is_empty() {
                break;
            }
            children += found.len();
            // A child may exit on its own in between: only the postmaster
            // must be signalled successfully.
            let _ = signal("KILL", &found);
        }
        signal("KILL", &[pid]).map_err(|e| this_error(&self.data_dir, e))?;
        let gone = wait_for(Duration::from_secs(5), || {
            matches!(state(pid), None | Some('Z' | 'X'))
        });
        if !gone {
            return Err(this_error(
                &self.data_dir,
                format!("postmaster {pid} is still alive 5 s after SIGKILL"),
            ));
        }
        Ok(KillOutcome::Killed {
            postmaster: pid,
            children,
        })
    }
}

fn this_error(data_dir: &Path, reason: String) -> PgError {
    PgError::Kill {
        data_dir: data_dir.display().to_string(),
        reason,
    }
}

/// `kill -s SIGNAL pids…` through the shell's builtin.
fn signal(signal: &str, pids: &[u32]) -> Result<(), String> {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("kill -s \"$0\" \"$@\"")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .output()
        .map_err(|e| format!("running /bin/sh to send SIG{signal}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "SIG{signal} to {pids:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The state letter of `pid` from `/proc/PID/stat`; `None` once it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid …`; comm may hold spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Polls `done` every 5 ms for up to `limit`; whether it became true.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_data_directory_is_refused_by_name() {
        let err = NodeKill::new("/nonexistent/pgdata").expect_err("refused");
        assert!(err.to_string().contains("kill data_dir"), "{err}");
        assert!(err.to_string().contains("/nonexistent/pgdata"), "{err}");
    }

    #[test]
    fn no_pid_file_or_a_stale_one_kills_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kill = NodeKill::new(dir.path()).expect("kill");
        assert!(matches!(
            kill.kill_blocking().expect("outcome"),
            KillOutcome::NotRunning { .. }
        ));
        // This test process's own pid: alive, but it does not work in the
        // data directory, so it must not be touched.
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n{}\n", std::process::id(), dir.path().display()),
        )
        .expect("pid file");
        match kill.kill_blocking().expect("outcome") {
            KillOutcome::NotRunning { why } => assert!(why.contains("stale"), "{why}"),
            other => panic!("killed a stranger: {other:?}"),
        }
        std::fs::write(dir.path().join("postmaster.pid"), "garbage\n").expect("pid file");
        assert!(kill.kill_blocking().is_err());
    }

    #[test]
    fn the_state_and_parent_of_a_process_are_read_from_proc() {
        let me = std::process::id();
        assert!(matches!(state(me), Some('R' | 'S')));
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 30")
            .spawn()
            .expect("child");
        let pid = child.id();
        assert!(wait_for(Duration::from_secs(5), || children_of(me).contains(&pid)));
        signal("KILL", &[pid]).expect("kill");
        child.wait().expect("reaped");
        assert_eq!(state(pid), None);
    }
}
