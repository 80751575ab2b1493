//! Where a server of the testkit runs: on the host's loopback (the
//! default) or in a network namespace, listening on that namespace's
//! address — a region of [`crate::net`], so that its traffic crosses links
//! a drill can cut. PostgreSQL nodes
//! ([`PgTestClusterBuilder::placements`](crate::postgres::PgTestClusterBuilder::placements))
//! and etcd members ([`EtcdCluster::start_placed`](crate::etcd::EtcdCluster::start_placed))
//! take one each.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where one server runs and the address it listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The network namespace (a path like `/var/run/netns/<name>`), or
    /// `None` for the host's.
    pub netns: Option<PathBuf>,
    /// The address the node listens on and clients connect to.
    pub host: IpAddr,
}

impl Placement {
    /// On the host's loopback, `127.0.0.1` (the default).
    pub fn loopback() -> Placement {
        Placement {
            netns: None,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// In the network namespace mounted at `netns`, listening on `host`
    /// (for a [`Region`](crate::net::Region): its `netns_path()` and
    /// `addr()`). Its superuser `psql` still works from the host, over the
    /// unix socket, which namespaces do not separate.
    pub fn namespace(netns: impl Into<PathBuf>, host: impl Into<IpAddr>) -> Placement {
        Placement {
            netns: Some(netns.into()),
            host: host.into(),
        }
    }
}

impl Default for Placement {
    fn default() -> Self {
        Placement::loopback()
    }
}

/// Makes `command`, when spawned, run in `netns` (if any).
pub(crate) fn enter_on_exec(command: &mut Command, netns: Option<&Path>) -> std::io::Result<()> {
    let Some(path) = netns else {
        return Ok(());
    };
    #[cfg(target_os = "linux")]
    {
        crate::net::enter_on_exec(command, path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = command;
        Err(unsupported(path))
    }
}

/// Runs `f` on a thread in `netns` (or on this thread when `None`) and
/// returns its result: a probe from the host of a server that listens on a
/// region's address.
pub(crate) fn in_namespace<T, F>(netns: Option<&Path>, f: F) -> std::io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let Some(path) = netns else {
        return Ok(f());
    };
    #[cfg(target_os = "linux")]
    {
        std::thread::scope(|s| {
            s.spawn(|| crate::net::enter_this_thread(path).map(|()| f()))
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a probe thread panicked")))
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        Err(unsupported(path))
    }
}

#[cfg(not(target_os = "linux"))]
fn unsupported(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!(
            "placed in {}: network namespaces need Linux",
            path.display()
        ),
    )
}
