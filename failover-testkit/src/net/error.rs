//! What can go wrong while building a net, injecting a fault or running
//! something in a region.

use std::fmt;

/// Why a [`Net`](super::Net) operation failed. Each variant names what was
/// attempted and where.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// Network namespaces cannot be created here (not root, no iproute2):
    /// tests skip with this reason.
    Unsupported {
        /// What is missing and how to get it.
        why: String,
    },
    /// An `ip` command (or another program) exited with an error.
    Command {
        /// The command line.
        command: String,
        /// The namespace it acted in, if any.
        namespace: Option<String>,
        /// Its exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// A system call, file, thread or process operation failed.
    Io {
        /// What was being done.
        what: String,
        /// The namespace it concerned, if any.
        namespace: Option<String>,
        /// The error.
        error: std::io::Error,
    },
    /// No region of that name in the net.
    UnknownRegion {
        /// The name asked for.
        region: String,
        /// The regions there are.
        known: Vec<String>,
    },
    /// The net was described or used in a way it cannot follow.
    Config(String),
    /// Code run in a region panicked.
    TaskPanicked {
        /// The region it ran in.
        region: String,
        /// The panic message.
        message: String,
    },
    /// Code run in a region was stopped (its net was dropped) before it
    /// produced a result.
    TaskStopped {
        /// The region it ran in.
        region: String,
    },
    /// A process started in a region is not running, so it cannot be
    /// signalled.
    NotRunning {
        /// The region.
        region: String,
        /// What was asked of it.
        what: String,
    },
}

impl NetError {
    /// Whether the machine cannot make namespaces at all (a test skips).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, NetError::Unsupported { .. })
    }
}

fn at(namespace: &Option<String>) -> String {
    namespace
        .as_ref()
        .map(|n| format!(" in namespace {n}"))
        .unwrap_or_default()
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Unsupported { why } => {
                write!(f, "network namespaces are not available: {why}")
            }
            NetError::Command {
                command,
                namespace,
                status,
                stderr,
            } => write!(
                f,
                "`{command}`{} failed ({status}): {stderr}",
                at(namespace)
            ),
            NetError::Io {
                what,
                namespace,
                error,
            } => write!(f, "{what}{}: {error}", at(namespace)),
            NetError::UnknownRegion { region, known } => write!(
                f,
                "no region `{region}` in this net (regions: {})",
                known.join(", ")
            ),
            NetError::Config(why) => write!(f, "net configuration: {why}"),
            NetError::TaskPanicked { region, message } => {
                write!(f, "code run in region `{region}` panicked: {message}")
            }
            NetError::TaskStopped { region } => write!(
                f,
                "code run in region `{region}` was stopped before it finished"
            ),
            NetError::NotRunning { region, what } => write!(
                f,
                "cannot {what}: the process in region `{region}` is not running"
            ),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}
