//! Where a node of the test cluster runs: on the host's loopback (the
//! default) or in a network namespace, listening on that namespace's
//! address — a region of [`crate::net`], so that replication crosses links
//! a drill can cut.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{PgTestError, APP_ROLE};

/// The first port of nodes in namespaces: node `i` listens on
/// `NAMESPACED_PORT + i`. A fresh namespace has no other listener, and the
/// index keeps two nodes of one cluster in one namespace apart.
pub(crate) const NAMESPACED_PORT: u16 = 5432;

/// Where one node runs and the address it listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlacement {
    /// The network namespace (a path like `/var/run/netns/<name>`), or
    /// `None` for the host's.
    pub netns: Option<PathBuf>,
    /// The address the node listens on and clients connect to.
    pub host: IpAddr,
}

impl NodePlacement {
    /// On the host's loopback, `127.0.0.1` (the default).
    pub fn loopback() -> NodePlacement {
        NodePlacement {
            netns: None,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// In the network namespace mounted at `netns`, listening on `host`
    /// (for a [`Region`](crate::net::Region): its `netns_path()` and
    /// `addr()`). Its superuser `psql` still works from the host, over the
    /// unix socket, which namespaces do not separate.
    pub fn namespace(netns: impl Into<PathBuf>, host: impl Into<IpAddr>) -> NodePlacement {
        NodePlacement {
            netns: Some(netns.into()),
            host: host.into(),
        }
    }
}

impl Default for NodePlacement {
    fn default() -> Self {
        NodePlacement::loopback()
    }
}

/// Makes `command` run in `netns`, if any.
pub(crate) fn enter_on_exec(
    command: &mut Command,
    netns: Option<&Path>,
) -> Result<(), PgTestError> {
    let Some(path) = netns else {
        return Ok(());
    };
    #[cfg(target_os = "linux")]
    {
        crate::net::enter_on_exec(command, path).map_err(|error| PgTestError::Io {
            what: format!("open {}", path.display()),
            error,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = command;
        Err(PgTestError::Config(format!(
            "node placed in {}: network namespaces need Linux",
            path.display()
        )))
    }
}

/// `pg_hba.conf`: unix-socket trust for the superuser, and for every host
/// the nodes listen on, a password for [`APP_ROLE`] and trust for the rest
/// (replication included).
pub(crate) fn hba(tls: bool, hosts: &[IpAddr]) -> String {
    let tcp = if tls { "hostssl" } else { "host" };
    let mut text = String::from("local all all trust\nlocal replication all trust\n");
    let mut seen = Vec::new();
    for host in std::iter::once(IpAddr::V4(Ipv4Addr::LOCALHOST)).chain(hosts.iter().copied()) {
        if seen.contains(&host) {
            continue;
        }
        seen.push(host);
        let net = match host {
            IpAddr::V4(_) => format!("{host}/32"),
            IpAddr::V6(_) => format!("{host}/128"),
        };
        text.push_str(&format!(
            "{tcp} all {APP_ROLE} {net} scram-sha-256\n{tcp} all all {net} trust\n\
             {tcp} replication all {net} trust\n"
        ));
    }
    text
}
