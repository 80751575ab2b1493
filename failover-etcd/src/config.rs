//! Where the store is, what this controller is called, and how long its lease
//! lasts; validated with errors that name the setting.

use std::time::Duration;

use failover_core::{Policy, Topology};

use crate::EtcdError;

/// The least lease TTL etcd 3.4 grants with its default heartbeat (100 ms)
/// and election timeout (1 s): it raises shorter requests to 1.5 s, so we ask
/// for whole seconds from 2 s up.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// How a controller (or a node guard) reaches etcd and names itself there.
///
/// A guard ([`EtcdGuardLease`](crate::EtcdGuardLease)) uses only the
/// connection settings (`endpoints`, `prefix`, `service`, the timeouts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, `http://HOST:PORT` (plain gRPC;
    /// TLS is not built in). Requests go to any member that answers.
    pub endpoints: Vec<String>,
    /// Key prefix shared by every service in the cluster, starting with `/`
    /// and not ending with one (default `/failover`).
    pub prefix: String,
    /// The service's name in the store: keys live under `<prefix>/<service>/`.
    /// Every controller and guard of one service uses the same name.
    pub service: String,
    /// This controller's unique name: the leader key's value while it leads.
    pub controller: String,
    /// This controller's vantage (a name in the topology): its verdicts are
    /// published under it.
    pub vantage: String,
    /// TTL of this controller's lease (leader key and verdicts), whole
    /// seconds, at least [`MIN_LEASE_TTL`] and at least 2 × `policy.interval`
    /// (default 10 s). A successor takes over at most this long after a
    /// leader dies.
    pub lease_ttl: Duration,
    /// How much earlier than `lease_ttl` after the last keep-alive it sent
    /// this controller considers its leadership lost, to absorb clock-rate
    /// drift and scheduling pauses (default 1 s; below `lease_ttl / 3`).
    pub lease_margin: Duration,
    /// Longest a TCP/HTTP2 connect to one member may take (default 2 s).
    pub connect_timeout: Duration,
    /// Longest one request (grant, keep-alive, get, txn) may take before it
    /// fails as `Timeout` (default 2 s).
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// A configuration with the defaults above.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        service: impl Into<String>,
        controller: impl Into<String>,
        vantage: impl Into<String>,
    ) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/failover".to_owned(),
            service: service.into(),
            controller: controller.into(),
            vantage: vantage.into(),
            lease_ttl: Duration::from_secs(10),
            lease_margin: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
        }
    }

    /// Checks what a guard needs: endpoints, prefix, service, timeouts.
    pub fn validate_connection(&self) -> Result<(), EtcdError> {
        if self.endpoints.is_empty() {
            return Err(invalid(
                "endpoints",
                "[]",
                "give at least one etcd client URL like http://127.0.0.1:2379",
            ));
        }
        for endpoint in &self.endpoints {
            check_endpoint(endpoint)?;
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.contains("//")
        {
            return Err(invalid(
                "prefix",
                &format!("{:?}", self.prefix),
                "must start with `/`, not end with `/` and have no empty segment, like /failover",
            ));
        }
        check_segment("service", &self.service)?;
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "0s", "must be above zero"));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("request_timeout", "0s", "must be above zero"));
        }
        Ok(())
    }

    /// Checks every setting on its own (what a controller needs).
    pub fn validate(&self) -> Result<(), EtcdError> {
        self.validate_connection()?;
        check_segment("controller", &self.controller)?;
        check_segment("vantage", &self.vantage)?;
        check_lease_ttl("lease_ttl", self.lease_ttl)?;
        if self.lease_margin.is_zero() || self.lease_margin * 3 >= self.lease_ttl {
            return Err(invalid(
                "lease_margin",
                &format!("{:?}", self.lease_margin),
                &format!(
                    "must be above zero and below lease_ttl / 3 ({:?}), so two keep-alives fit before the local deadline",
                    self.lease_ttl / 3
                ),
            ));
        }
        Ok(())
    }

    /// Checks the settings, that the vantage is in `topology` and that every
    /// topology name can be a key segment, and that the lease TTL suits
    /// `policy`'s probe interval (see [`check_ttl_for_policy`]).
    pub fn validate_against(&self, topology: &Topology, policy: &Policy) -> Result<(), EtcdError> {
        self.validate()?;
        check_topology_names(topology)?;
        if topology.vantage_id(&self.vantage).is_none() {
            return Err(EtcdError::UnknownName {
                what: "vantage",
                name: self.vantage.clone(),
                hint: "set `vantage` to one of the topology's vantages",
            });
        }
        check_ttl_for_policy("lease_ttl", self.lease_ttl, policy)
    }

    /// The endpoints as one string, for error messages.
    pub(crate) fn endpoints_text(&self) -> String {
        format!("[{}]", self.endpoints.join(", "))
    }
}

/// Refuses a lease TTL (the controllers' `lease_ttl`, a node guard's
/// `guard_ttl`) shorter than 2 × `policy.interval`: a lease that can lapse
/// between two probe rounds makes leadership (or a guard's fence) flap on one
/// slow round. The error names both settings.
pub fn check_ttl_for_policy(
    setting: &'static str,
    ttl: Duration,
    policy: &Policy,
) -> Result<(), EtcdError> {
    let min = policy.interval * 2;
    if ttl < min {
        return Err(EtcdError::TtlTooShort {
            setting,
            ttl,
            interval: policy.interval,
            min,
        });
    }
    Ok(())
}

/// Refuses a lease TTL that etcd cannot grant as asked: not whole seconds,
/// or below [`MIN_LEASE_TTL`].
pub fn check_lease_ttl(setting: &'static str, ttl: Duration) -> Result<(), EtcdError> {
    if ttl.subsec_nanos() != 0 || ttl < MIN_LEASE_TTL {
        return Err(EtcdError::Setting {
            setting,
            value: format!("{ttl:?}"),
            rule: format!(
                "etcd leases last whole seconds and at least {MIN_LEASE_TTL:?}; give a whole number of seconds from 2 up"
            ),
        });
    }
    Ok(())
}

/// Refuses topology names that cannot be one key segment.
pub(crate) fn check_topology_names(topology: &Topology) -> Result<(), EtcdError> {
    let names = topology
        .regions()
        .iter()
        .map(|r| ("region name", r.name.as_str()))
        .chain(
            topology
                .vantages()
                .iter()
                .map(|v| ("vantage name", v.as_str())),
        )
        .chain(
            topology
                .nodes()
                .iter()
                .map(|n| ("node name", n.name.as_str())),
        );
    for (what, name) in names {
        check_segment(what, name)?;
    }
    Ok(())
}

fn check_segment(setting: &'static str, value: &str) -> Result<(), EtcdError> {
    if value.is_empty() || value.contains('/') {
        return Err(invalid(
            setting,
            &format!("{value:?}"),
            "must be non-empty and contain no `/` (it is one segment of an etcd key)",
        ));
    }
    Ok(())
}

fn check_endpoint(endpoint: &str) -> Result<(), EtcdError> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        invalid(
            "endpoints",
            endpoint,
            "must be a plain client URL like http://127.0.0.1:2379 (https is not built in)",
        )
    })?;
    let rest = rest.trim_end_matches('/');
    let port = rest.rsplit_once(':').and_then(|(host, port)| {
        (!host.is_empty() && !host.contains('/'))
            .then(|| port.parse::<u16>().ok())
            .flatten()
    });
    match port {
        Some(p) if p != 0 => Ok(()),
        _ => Err(invalid(
            "endpoints",
            endpoint,
            "must name a host and a port, like http://127.0.0.1:2379",
        )),
    }
}

fn invalid(setting: &'static str, value: &str, rule: &str) -> EtcdError {
    EtcdError::Setting {
        setting,
        value: value.to_owned(),
        rule: rule.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EtcdConfig {
        EtcdConfig::new(["http://127.0.0.1:2379"], "api", "c1", "local")
    }

    fn names_setting(e: EtcdError, name: &str) {
        assert!(e.to_string().contains(name), "{e} should name {name}");
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = config();
        c.endpoints = vec![];
        names_setting(c.validate().unwrap_err(), "`endpoints`");
        let mut c = config();
        c.endpoints = vec!["127.0.0.1:2379".into()];
        names_setting(c.validate().unwrap_err(), "`endpoints`");
        let mut c = config();
        c.endpoints = vec!["http://127.0.0.1".into()];
        names_setting(c.validate().unwrap_err(), "`endpoints`");
        let mut c = config();
        c.prefix = "failover/".into();
        names_setting(c.validate().unwrap_err(), "`prefix`");
        let mut c = config();
        c.controller = "a/b".into();
        names_setting(c.validate().unwrap_err(), "`controller`");
        let mut c = config();
        c.lease_ttl = Duration::from_millis(2500);
        names_setting(c.validate().unwrap_err(), "`lease_ttl`");
        let mut c = config();
        c.lease_ttl = Duration::from_secs(1);
        names_setting(c.validate().unwrap_err(), "`lease_ttl`");
        let mut c = config();
        c.lease_margin = Duration::from_secs(4);
        names_setting(c.validate().unwrap_err(), "`lease_margin`");
        let mut c = config();
        c.request_timeout = Duration::ZERO;
        names_setting(c.validate().unwrap_err(), "`request_timeout`");
    }

    #[test]
    fn ttl_too_close_to_probe_interval_names_both_settings() {
        let policy = Policy {
            interval: Duration::from_secs(3),
            ..Policy::default()
        };
        let e = check_ttl_for_policy("lease_ttl", Duration::from_secs(5), &policy).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("`lease_ttl`") && text.contains("`policy.interval`"),
            "{text}"
        );
        assert_eq!(e.kind(), failover_core::PortErrorKind::Config);
        check_ttl_for_policy("lease_ttl", Duration::from_secs(6), &policy).unwrap();
    }
}
