//! The embedded authoritative DNS server: the default traffic router, which
//! needs no DNS provider because the library itself answers for the service name.
//!
//! With controllers coordinated by a store, plans carry the leader's
//! [`FencingToken`]. The router remembers the highest token it applied and
//! refuses a plan under an older one ([`DnsError::StaleToken`], kind
//! `Refused`), so a deposed leader's late plan changes no answer; plans under
//! the same or a newer token apply, and a plan without a token (a single
//! controller) always applies. The token is kept in memory only (no TXT
//! record is served): the check and the swap happen under the one lock that
//! already serialises plan swaps, with no allocation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use failover_core::ports::{TrafficRouter, WriterName};
use failover_core::{
    Epoch, FencingToken, NodeId, Policy, PortError, RegionWeight, Topology, WeightPlan,
};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::answer::{QueryRng, RegionRecords, Selection, ZoneFacts};
use crate::authority::{AuthoritativeZone, WriterAnswer, ZoneState};
use crate::name::parse_fqdn;
use crate::writer::{WriterFacts, WriterNameConfig};
use crate::DnsError;

/// How the embedded server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// The zone apex it is authoritative for, like `example.test.`; the
    /// topology's service name must be inside it. Names outside get REFUSED,
    /// unknown names inside get NXDOMAIN.
    pub zone: String,
    /// The name in the apex NS record and the SOA MNAME. Default `ns1.<zone>`.
    pub nameserver: Option<String>,
    /// The SOA RNAME (mailbox as a name). Default `hostmaster.<zone>`.
    pub hostmaster: Option<String>,
    /// Weighted choice per query, or all serving records.
    pub selection: Selection,
    /// Seed of the weighted choice, so tests and simulations are reproducible.
    pub seed: u64,
    /// Idle time after which a TCP client connection is closed.
    pub tcp_idle_timeout: Duration,
}

impl EmbeddedConfig {
    /// Weighted selection, seed 0, default NS/SOA names, 10 s TCP idle timeout.
    pub fn new(zone: impl Into<String>) -> Self {
        EmbeddedConfig {
            zone: zone.into(),
            nameserver: None,
            hostmaster: None,
            selection: Selection::Weighted,
            seed: 0,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// The running server. Dropping it stops serving (its tasks are aborted);
/// [`shutdown`](EmbeddedDns::shutdown) stops it gracefully. Either way its
/// [`EmbeddedRouter`]s then refuse plans with [`DnsError::Stopped`] (a
/// [`PortError`] of kind `Unavailable` through [`TrafficRouter`]), so a
/// runtime whose server went away reports failed plans instead of applying
/// them to nothing; a drop while a router is still held is also logged.
///
/// Must be created inside a tokio runtime.
///
/// hickory-server logs every request at `info` level under the
/// `hickory_server` target: filter it to `warn` in production subscribers
/// (`RUST_LOG=info,hickory_server=warn`), or logging will cost more than
/// answering.
pub struct EmbeddedDns {
    router: EmbeddedRouter,
    server: Server<AuthoritativeZone>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for EmbeddedDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDns")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl EmbeddedDns {
    /// Binds UDP and TCP on `addr` (port 0: one free port for both) and starts
    /// answering for `topology`'s service name at every region's base weight,
    /// with `policy.ttl` and `policy.all_down`, until the first plan arrives.
    pub async fn bind(
        addr: SocketAddr,
        topology: &Topology,
        policy: &Policy,
        config: EmbeddedConfig,
    ) -> Result<Self, DnsError> {
        let mut router = EmbeddedRouter::new(topology, policy, &config)?;
        let (udp, tcp) = bind_pair(addr).await?;
        let local_addr = udp
            .local_addr()
            .map_err(|source| DnsError::Bind { addr, source })?;
        router.server_addr = local_addr;
        let mut server = Server::new(AuthoritativeZone(router.state.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, config.tcp_idle_timeout, 64);
        tracing::info!(%local_addr, zone = %config.zone, service = topology.service(), "embedded DNS server listening (UDP+TCP)");
        Ok(EmbeddedDns {
            router,
            server,
            local_addr,
        })
    }

    /// The address both the UDP socket and the TCP listener are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that swaps plans and reads them back; it implements
    /// [`TrafficRouter`]. Cheap to clone; keeps working while the server runs.
    pub fn router(&self) -> EmbeddedRouter {
        self.router.clone()
    }

    /// Queries answered since start (every opcode, every outcome).
    pub fn queries_answered(&self) -> u64 {
        self.router.state.queries.load(Ordering::Relaxed)
    }

    /// Stops accepting queries and waits for the server tasks to end. Its
    /// routers refuse plans from now on.
    pub async fn shutdown(mut self) {
        self.router.serving.store(false, Ordering::SeqCst);
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::warn!(%error, "embedded DNS server ended with an error");
        }
        tracing::info!(local_addr = %self.local_addr, "embedded DNS server shut down");
    }
}

impl Drop for EmbeddedDns {
    fn drop(&mut self) {
        // `swap` tells a drop after `shutdown` (already stopped) from a
        // silent one.
        let was_serving = self.router.serving.swap(false, Ordering::SeqCst);
        let routers_held = Arc::strong_count(&self.router.serving) > 1;
        if was_serving && routers_held {
            tracing::warn!(
                local_addr = %self.local_addr,
                "embedded DNS server dropped while its router is still held: it no longer \
                 answers, and plans applied through the router now fail (Unavailable); \
                 keep the EmbeddedDns alive as long as the runtime uses its router"
            );
        }
    }
}

/// Swaps the embedded server's plan; implements [`TrafficRouter`].
#[derive(Clone, Debug)]
pub struct EmbeddedRouter {
    state: Arc<ZoneState>,
    facts: Arc<ZoneFacts>,
    /// Serialises plan swaps (readers never take it), so two concurrent
    /// `apply` calls cannot lose one another's SOA serial increment. It
    /// guards the highest fencing token applied, so the check and the swap
    /// are one step.
    writer: Arc<Mutex<Option<FencingToken>>>,
    applied: Arc<AtomicU64>,
    /// False once the server was shut down or dropped.
    serving: Arc<AtomicBool>,
    /// Where the server answers, for the error once it stopped.
    server_addr: SocketAddr,
    /// The writer name, once [`serve_writer_name`](Self::serve_writer_name)
    /// configured it.
    writer_name: Arc<OnceLock<WriterFacts>>,
}

impl EmbeddedRouter {
    fn new(
        topology: &Topology,
        policy: &Policy,
        config: &EmbeddedConfig,
    ) -> Result<Self, DnsError> {
        let zone = parse_fqdn("embedded.zone", &config.zone)?;
        let service = parse_fqdn("topology.service", topology.service())?;
        if !zone.zone_of(&service) {
            return Err(DnsError::config(
                "embedded.zone",
                format!("service name {service} is not inside zone {zone}"),
            ));
        }
        let nameserver = match &config.nameserver {
            Some(ns) => parse_fqdn("embedded.nameserver", ns)?,
            None => prefixed("ns1", &zone)?,
        };
        let hostmaster = match &config.hostmaster {
            Some(h) => parse_fqdn("embedded.hostmaster", h)?,
            None => prefixed("hostmaster", &zone)?,
        };
        let ttl = ttl_secs(policy.ttl)?;
        let facts = ZoneFacts {
            zone: zone.clone(),
            service: service.clone(),
            nameserver,
            hostmaster,
            regions: topology
                .regions()
                .iter()
                .map(|r| RegionRecords {
                    addrs: r.records.clone(),
                    base_weight: r.base_weight,
                })
                .collect(),
            all_down: policy.all_down,
        };
        let initial = facts.build(None, ttl, None);
        Ok(EmbeddedRouter {
            state: Arc::new(ZoneState {
                zone: LowerName::new(&zone),
                service: LowerName::new(&service),
                selection: config.selection,
                current: RwLock::new(Arc::new(initial)),
                rng: QueryRng::new(config.seed),
                queries: AtomicU64::new(0),
                writer: RwLock::new(None),
            }),
            facts: Arc::new(facts),
            writer: Arc::new(Mutex::new(None)),
            applied: Arc::new(AtomicU64::new(0)),
            serving: Arc::new(AtomicBool::new(true)),
            server_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            writer_name: Arc::new(OnceLock::new()),
        })
    }

    /// Starts answering for the writer name (see [`crate::writer`]): no
    /// records (NODATA) until the first [`WriterName::point`], which the
    /// runtime sends for the configured primary of a fresh deployment and
    /// after each completed promotion. (Starting from the configured
    /// primary would name an old, fenced writer after a restart.) Every
    /// clone of this router shares it. Errors name the field; configuring it
    /// twice is an error.
    pub fn serve_writer_name(
        &self,
        topology: &Topology,
        config: &WriterNameConfig,
    ) -> Result<(), DnsError> {
        let facts = WriterFacts::new(&self.facts.zone, &self.facts.service, topology, config)?;
        let empty = WriterAnswer {
            name: LowerName::new(&facts.name),
            node: None,
            a: Vec::new(),
            aaaa: Vec::new(),
        };
        let name = facts.name.clone();
        self.writer_name
            .set(facts)
            .map_err(|_| DnsError::config("writer_name", "already served; configure it once"))?;
        tracing::info!(name = %name, "embedded DNS: serving the writer name {name}; no records until the writer is known");
        self.state.swap_writer(Arc::new(empty));
        Ok(())
    }

    /// The node the writer name points at now (`None`: not served, or no
    /// writer yet).
    pub fn writer_node(&self) -> Option<NodeId> {
        self.state.writer().and_then(|w| w.node)
    }

    /// [`WriterName::point`], with this crate's error.
    pub fn point_writer(
        &self,
        node: NodeId,
        epoch: Epoch,
        token: Option<FencingToken>,
    ) -> Result<(), DnsError> {
        self.check_serving()?;
        let Some(facts) = self.writer_name.get() else {
            return Err(DnsError::config(
                "writer_name",
                "not served: call EmbeddedRouter::serve_writer_name first",
            ));
        };
        let answer = writer_answer(facts, node)?;
        // The same lock and token as plans: a deposed leader moves nothing.
        let mut highest = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(ours), Some(newer)) = (token, *highest) {
            if ours < newer {
                metrics::counter!("failover_dns_stale_plans_refused_total", "adapter" => "embedded")
                    .increment(1);
                tracing::warn!(name = %facts.name, node = facts.node_name(node), token = ours.0, newer = newer.0, "embedded DNS: refused to point {} at {} under {ours}: {newer} of a newer leader was applied", facts.name, facts.node_name(node));
                return Err(DnsError::StaleToken {
                    holder: format!("embedded DNS server {}", self.server_addr),
                    ours,
                    newer,
                    rcode: None,
                });
            }
        }
        if token > *highest {
            *highest = token;
        }
        if self.state.writer().is_some_and(|w| w.node == Some(node)) {
            tracing::debug!(name = %facts.name, node = facts.node_name(node), "embedded DNS: the writer name already points there");
            return Ok(());
        }
        tracing::warn!(name = %facts.name, node = facts.node_name(node), epoch = epoch.0, "embedded DNS: the writer name {} now points at {} (promoted at {epoch})", facts.name, facts.node_name(node));
        metrics::counter!("failover_dns_writer_moves_total", "adapter" => "embedded").increment(1);
        self.state.swap_writer(Arc::new(answer));
        Ok(())
    }

    /// Whether the server still answers; plans are refused once it does not.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    fn check_serving(&self) -> Result<(), DnsError> {
        if self.is_serving() {
            Ok(())
        } else {
            Err(DnsError::Stopped {
                addr: self.server_addr,
            })
        }
    }

    /// Makes `plan` live for the next query. Applying the live plan again
    /// changes nothing (not even the SOA serial). Fails with
    /// [`DnsError::Stopped`] once the server was shut down or dropped, and
    /// with [`DnsError::StaleToken`] when `plan.token` is older than the
    /// highest token applied (a deposed leader's plan). A plan without a
    /// token always applies.
    pub fn set_plan(&self, plan: &WeightPlan) -> Result<(), DnsError> {
        self.check_serving()?;
        let regions = self.facts.regions.len();
        if let Some(w) = plan.weights.iter().find(|w| w.region.index() >= regions) {
            return Err(DnsError::UnknownRegion {
                region: w.region,
                regions,
            });
        }
        let ttl = ttl_secs(plan.ttl)?;
        let mut highest = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(ours), Some(newer)) = (plan.token, *highest) {
            if ours < newer {
                metrics::counter!("failover_dns_stale_plans_refused_total", "adapter" => "embedded")
                    .increment(1);
                tracing::warn!(generation = plan.generation, token = ours.0, newer = newer.0, "embedded DNS: refused a plan under {ours}: {newer} of a newer leader was applied, so this plan comes from a deposed leader");
                return Err(DnsError::StaleToken {
                    holder: format!("embedded DNS server {}", self.server_addr),
                    ours,
                    newer,
                    rcode: None,
                });
            }
        }
        if plan.token > *highest {
            *highest = plan.token;
        }
        let previous = self.state.snapshot();
        if previous
            .plan
            .as_ref()
            .is_some_and(|p| same_routing(p, plan))
        {
            tracing::debug!(
                generation = plan.generation,
                "embedded DNS: plan already live"
            );
            return Ok(());
        }
        let next = self.facts.build(Some(plan), ttl, Some(&previous));
        if plan.total() == 0 {
            tracing::warn!(generation = plan.generation, policy = ?self.facts.all_down, "embedded DNS: plan drains every region");
        }
        tracing::info!(generation = plan.generation, weights = ?next.effective, ttl, "embedded DNS: plan swapped");
        self.state.swap(Arc::new(next));
        self.applied.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("failover_dns_plans_applied_total", "adapter" => "embedded").increment(1);
        Ok(())
    }

    /// The weights being served now (fail-open may keep earlier weights when a
    /// plan drains every region).
    pub fn live_weights(&self) -> Vec<RegionWeight> {
        self.state.snapshot().effective.clone()
    }

    /// The highest fencing token of the plans applied (`None` while only
    /// plans without a token were applied).
    pub fn highest_token(&self) -> Option<FencingToken> {
        *self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Plans that changed the answers since start.
    pub fn plans_applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl TrafficRouter for EmbeddedRouter {
    async fn apply(&self, plan: &WeightPlan) -> Result<(), PortError> {
        self.set_plan(plan).map_err(PortError::from)
    }

    /// The weights being served; `Unavailable` once the server stopped, since
    /// nothing is served then.
    async fn read_back(&self) -> Result<Vec<RegionWeight>, PortError> {
        self.check_serving()?;
        Ok(self.live_weights())
    }
}

#[async_trait]
impl WriterName for EmbeddedRouter {
    async fn point(
        &self,
        node: NodeId,
        epoch: Epoch,
        token: Option<FencingToken>,
    ) -> Result<(), PortError> {
        self.point_writer(node, epoch, token)
            .map_err(PortError::from)
    }
}

/// The writer name's records when `node` is the writer.
fn writer_answer(facts: &WriterFacts, node: NodeId) -> Result<WriterAnswer, DnsError> {
    let addrs = facts.addrs(node)?;
    let record = |addr: &std::net::IpAddr| {
        Record::from_rdata(facts.name.clone(), facts.ttl, RData::from(*addr))
    };
    Ok(WriterAnswer {
        name: LowerName::new(&facts.name),
        node: Some(node),
        a: addrs.iter().filter(|a| a.is_ipv4()).map(record).collect(),
        aaaa: addrs.iter().filter(|a| a.is_ipv6()).map(record).collect(),
    })
}

/// Two plans route the same way (the generation alone does not matter).
fn same_routing(a: &WeightPlan, b: &WeightPlan) -> bool {
    a.ttl == b.ttl && a.weights == b.weights
}

fn ttl_secs(ttl: Duration) -> Result<u32, DnsError> {
    u32::try_from(ttl.as_secs())
        .map_err(|_| DnsError::config("policy.ttl", "must fit a DNS TTL (u32 seconds)"))
}

fn prefixed(label: &str, zone: &Name) -> Result<Name, DnsError> {
    Name::from_ascii(label)
        .and_then(|l| l.append_domain(zone))
        .map_err(|e| DnsError::config("embedded.zone", format!("cannot form {label}.{zone}: {e}")))
}

/// Binds UDP and TCP on the same port; with port 0, retries (bounded) until
/// the port the OS gave the UDP socket is also free for TCP.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut last = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| DnsError::Bind { addr, source })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) if addr.port() == 0 => last = Some(source),
            Err(source) => return Err(DnsError::Bind { addr, source }),
        }
    }
    Err(DnsError::Bind {
        addr,
        source: last.unwrap_or_else(|| std::io::Error::other("no free UDP+TCP port pair")),
    })
}
