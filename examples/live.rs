//! A live regional failover on loopback, with real sockets and, when the
//! machine has PostgreSQL, a real primary and streaming replica.
//!
//! ```sh
//! cargo run --example live --features full                      # with PostgreSQL if found
//! cargo run --example live --features full -- --no-database     # traffic only
//! cargo run --example live --features full -- --metrics 127.0.0.1:9464   # Prometheus endpoint
//! RUST_LOG=failover=info cargo run --example live --features full        # the runtime's tracing events too
//! # Route 53 weighted records instead of the embedded server, against moto
//! # (`moto_server -p 5000`; scripts/test installs it in /tmp/failover-moto-venv):
//! cargo run --example live --features full,route53 -- --no-database --router route53 --endpoint http://127.0.0.1:5000
//! ```
//!
//! With `--router route53` the plans go to a Route 53 hosted zone (created
//! at the endpoint, or `--hosted-zone-id ID`), and "the DNS answer" printed
//! is what Route 53 serves by its weighted-routing rule: the records of
//! every set with a weight above 0 (every set when all are 0). Credentials
//! come from the standard AWS chain; when the environment has none and an
//! endpoint is given, placeholder keys are used (moto accepts any).
//!
//! It starts two regional HTTP APIs (us-east active, us-west standby), the
//! embedded authoritative DNS server and the failover runtime with fast
//! settings (500 ms probes, fall 3, TTL 1 s). Then it kills us-east — API
//! and primary together — and prints the decisions as they happen, the DNS
//! answers switching and the promotion, and the measured detection, DNS
//! cutover and promotion times beside the planner's bounds. Finally it
//! restores us-east's API and shows the gradual failback.

#[path = "support/regions.rs"]
mod regions;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use failover::decision::objectives::{database_cutover_unconfirmed, load_after_losing, Bounds};
use failover::decision::{EventKind, Health, Policy};
use failover::pg::GuardSettings;
use regions::{BoxError, LiveRegions, EAST, WEST_IP};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::broadcast;

fn policy() -> Policy {
    Policy {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(250),
        jitter: Duration::ZERO,
        fall: 3,
        rise: 2,
        ttl: Duration::from_secs(1),
        hold_down: Duration::from_secs(2),
        ramp_steps: vec![10, 25, 50, 100],
        ramp_interval: Duration::from_secs(1),
        ..Policy::default()
    }
}

fn secs(d: Duration) -> String {
    format!("{:>6.3} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut with_database = true;
    let mut metrics: Option<SocketAddr> = None;
    let mut router_kind = "embedded".to_owned();
    let mut endpoint: Option<String> = None;
    let mut zone_id: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-database" => with_database = false,
            "--router" => {
                router_kind = args
                    .next()
                    .ok_or("--router needs a kind: embedded or route53")?;
            }
            "--endpoint" => {
                endpoint = Some(args.next().ok_or(
                    "--endpoint needs the Route 53 API URL, like http://127.0.0.1:5000",
                )?);
            }
            "--hosted-zone-id" => {
                zone_id = Some(args.next().ok_or("--hosted-zone-id needs an id")?);
            }
            "--metrics" => {
                let addr = args
                    .next()
                    .ok_or("--metrics needs an address, like 127.0.0.1:9464")?;
                metrics = Some(addr.parse().map_err(|e| format!("--metrics {addr}: {e}"))?);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (try --no-database, --metrics ADDR, --router route53 --endpoint URL)"
                )
                .into())
            }
        }
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    if let Some(addr) = metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()?;
        println!("metrics: http://{addr}/metrics");
    }
    if with_database && failover_testkit::postgres::find_bindir().is_err() {
        println!("PostgreSQL binaries not found: running traffic failover only (install postgresql for the database part)");
        with_database = false;
    }

    let policy = policy();
    println!(
        "starting us-east (active) and us-west (standby, 60 % of peak) on loopback{}…",
        if with_database {
            ", with PostgreSQL primary pg-east and replica pg-west"
        } else {
            ""
        }
    );
    let answers = Answers::for_kind(
        &router_kind,
        endpoint,
        zone_id,
        &regions::config(policy.clone(), with_database)?,
    )
    .await?;
    let live = LiveRegions::start_routed(policy.clone(), with_database, answers.router()).await?;
    let topology = live.config.topology().clone();
    let handle = live.runtime.handle();
    answers.describe(&live);

    // Steady state: us-east up and answering.
    let steady = Instant::now() + Duration::from_secs(20);
    while handle.status().controller.regions[EAST.index()].health != Health::Up {
        if Instant::now() > steady {
            return Err("us-east never became healthy".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "steady: {} → {:?}\n",
        topology.service(),
        answers.answer(&live).await?
    );

    let mut events = handle.subscribe_events();
    let outage = live.kill_east().await?;
    println!(
        "t+ 0.000 s  KILL us-east: API stopped{}",
        if with_database {
            ", pg-east SIGKILL"
        } else {
            ""
        }
    );

    let mut detected = None;
    let mut dns_switched = None;
    let mut promoted = None;
    let mut writable = None;
    let mut last_answer = answers.answer(&live).await?;
    let deadline = outage + Duration::from_secs(30);
    while Instant::now() < deadline {
        drain(&mut events, &topology, outage, &mut detected, &mut promoted);
        let answer = answers.answer(&live).await.unwrap_or_default();
        if answer != last_answer {
            println!(
                "t+{}  DNS answer {:?} → {:?}",
                secs(outage.elapsed()),
                last_answer,
                answer
            );
            if answer == [WEST_IP] && dns_switched.is_none() {
                dns_switched = Some(outage.elapsed());
            }
            last_answer = answer;
        }
        if with_database && promoted.is_some() && writable.is_none() && live.west_writable().await {
            writable = Some(outage.elapsed());
            println!(
                "t+{}  first write committed on pg-west",
                secs(outage.elapsed())
            );
        }
        if dns_switched.is_some() && (!with_database || writable.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let bounds = Bounds::for_policy(&policy, Duration::ZERO);
    let load = load_after_losing(&topology, &[EAST]);
    println!("\n                         measured   planner best  planner worst");
    let row = |name: &str, measured: Option<Duration>, best: Duration, worst: Duration| {
        let m = measured.map_or_else(|| "   (none)".to_owned(), secs);
        println!("{name:<24} {m}   {}      {}", secs(best), secs(worst));
    };
    row(
        "detection (region down)",
        detected,
        bounds.best_detection,
        bounds.worst_detection,
    );
    row(
        "DNS answer switched",
        dns_switched,
        bounds.best_detection,
        bounds.worst_detection,
    );
    row(
        "clients cut over (+TTL)",
        dns_switched.map(|d| d + policy.ttl),
        bounds.best_cutover + policy.ttl,
        bounds.worst_cutover,
    );
    if let (true, Some(guard_ttl)) = (with_database, live.config.policy().guard_ttl) {
        // The dead primary cannot confirm a fence: the proof is its guard
        // lease expiring, at most one TTL after its last renewal (at least
        // TTL less one renewal interval after the kill), then the claim and
        // the promotion (budget 1.5 s).
        let promote = Duration::from_millis(1500);
        let best = guard_ttl - GuardSettings::for_ttl(guard_ttl).renew_interval;
        let worst = database_cutover_unconfirmed(bounds.worst_detection, guard_ttl, promote);
        row("promotion done", promoted, best, worst);
        row("pg-west writable", writable, best, worst);
        println!(
            "(database bounds: the {} guard lease must expire first — never promoted on \"unreachable\")",
            secs(guard_ttl).trim()
        );
    }
    println!(
        "us-west load after losing us-east: {:.0} % of its capacity{}",
        load.percent(),
        if load.saturated() { " (SATURATED)" } else { "" }
    );

    println!("\nrestoring us-east's API (pg-east stays down: rejoin it with failover_pg::rejoin)…");
    let restored = Instant::now();
    live.east.start()?;
    let mut last_weight = None;
    let done = restored + Duration::from_secs(30);
    while Instant::now() < done {
        drain(&mut events, &topology, outage, &mut detected, &mut promoted);
        let status = handle.status();
        let weight = status.controller.regions[EAST.index()].weight;
        if last_weight != Some(weight) {
            let west = status.controller.regions[regions::WEST.index()].weight;
            println!(
                "t+{}  weights us-east {weight:>3} / us-west {west:>3}",
                secs(outage.elapsed())
            );
            last_weight = Some(weight);
        }
        if weight == topology.region(EAST).base_weight
            && status.controller.regions[regions::WEST.index()].weight == 0
        {
            println!(
                "failback complete {:.1} s after the API returned",
                restored.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drain(&mut events, &topology, outage, &mut detected, &mut promoted);
    live.runtime.shutdown().await;
    live.dns.shutdown().await;
    Ok(())
}

/// Where the plans go, and how the example reads "the DNS answer" back.
enum Answers {
    /// The embedded authoritative server: an uncached query.
    Embedded,
    /// Route 53 weighted records.
    #[cfg(feature = "route53")]
    Route53(Arc<failover::dns::Route53Router>),
}

impl Answers {
    async fn for_kind(
        kind: &str,
        endpoint: Option<String>,
        zone_id: Option<String>,
        config: &failover::decision::Config,
    ) -> Result<Answers, BoxError> {
        match kind {
            "embedded" => Ok(Answers::Embedded),
            #[cfg(feature = "route53")]
            "route53" => {
                use failover::dns::{Route53Config, Route53Router, StaticCredentials};
                let mut r53 = Route53Config::new(zone_id.clone().unwrap_or_else(|| "Z0".into()));
                r53.endpoint = endpoint;
                if r53.endpoint.is_some() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                    println!("no AWS credentials in the environment: using placeholder keys (moto accepts any)");
                    r53.static_credentials = Some(StaticCredentials {
                        access_key_id: "AKIDFAILOVERLIVE".into(),
                        secret_access_key: "placeholder".into(),
                    });
                }
                if zone_id.is_none() {
                    r53.hosted_zone_id =
                        Route53Router::create_hosted_zone(&r53, "failover.test.").await?;
                    println!(
                        "created hosted zone {} for failover.test.",
                        r53.hosted_zone_id
                    );
                }
                let router =
                    Route53Router::connect(r53, config.topology(), config.policy()).await?;
                Ok(Answers::Route53(Arc::new(router)))
            }
            #[cfg(not(feature = "route53"))]
            "route53" => {
                let _ = (endpoint, zone_id, config);
                Err("--router route53 needs the route53 feature: cargo run --example live --features full,route53 -- …".into())
            }
            other => {
                Err(format!("--router {other:?}: this example runs embedded or route53").into())
            }
        }
    }

    fn router(&self) -> Option<Arc<dyn failover::decision::ports::TrafficRouter>> {
        match self {
            Answers::Embedded => None,
            #[cfg(feature = "route53")]
            Answers::Route53(router) => Some(router.clone()),
        }
    }

    fn describe(&self, live: &LiveRegions) {
        match self {
            Answers::Embedded => println!(
                "embedded DNS for {} at {}",
                live.config.topology().service(),
                live.dns.local_addr()
            ),
            #[cfg(feature = "route53")]
            Answers::Route53(router) => println!(
                "Route 53 weighted records for {} ({router:?})",
                router.record_name()
            ),
        }
    }

    /// The addresses a client gets now.
    async fn answer(&self, live: &LiveRegions) -> Result<Vec<IpAddr>, BoxError> {
        match self {
            Answers::Embedded => live.resolve().await,
            #[cfg(feature = "route53")]
            Answers::Route53(router) => {
                let sets = router.live_sets().await?;
                let all_zero = sets.iter().all(|s| s.weight == 0);
                let mut addrs = Vec::new();
                for set in sets.iter().filter(|s| all_zero || s.weight > 0) {
                    for value in &set.values {
                        addrs.push(value.parse()?);
                    }
                }
                addrs.sort();
                Ok(addrs)
            }
        }
    }
}

/// Prints every event received so far and notes the ones measured.
fn drain(
    events: &mut broadcast::Receiver<failover::decision::Event>,
    topology: &failover::decision::Topology,
    outage: Instant,
    detected: &mut Option<Duration>,
    promoted: &mut Option<Duration>,
) {
    loop {
        match events.try_recv() {
            Ok(event) => {
                let t = event.at.saturating_duration_since(outage);
                println!("t+{}  {}", secs(t), event.display(topology));
                match event.kind {
                    EventKind::RegionDown { region, .. }
                        if region == EAST && detected.is_none() =>
                    {
                        *detected = Some(t)
                    }
                    EventKind::Promoted { .. } if promoted.is_none() => *promoted = Some(t),
                    _ => {}
                }
            }
            Err(broadcast::error::TryRecvError::Lagged(n)) => println!("({n} events not shown)"),
            Err(_) => return,
        }
    }
}
