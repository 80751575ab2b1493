//! Throughput of the embedded server and round-trip of RFC 2136 updates.
//!
//! `cargo bench -p failover-dns --bench dns` prints:
//! - the embedded server's queries per second measured by `dnsperf` (a real
//!   load generator; skipped when it is not installed) and by a bounded Rust
//!   loop of concurrent UDP clients;
//! - the median and p99 of `Rfc2136Router::apply` (read, signed UPDATE, read
//!   back) against a real `named`.
//!
//! `FAILOVER_BENCH_SECS` sets dnsperf's run time (default 5 s).

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover_core::ports::TrafficRouter;
use failover_core::{Policy, Region, RegionRole, Topology, WeightPlan};
use failover_dns::{EmbeddedConfig, EmbeddedDns, Rfc2136Config, Rfc2136Router, Selection};
use failover_testkit::bind::{BindServer, BindZone};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

const SERVICE: &str = "api.example.test.";

fn topology() -> Topology {
    let mut east = Region::new("east", RegionRole::Active);
    east.records = vec![ip("192.0.2.10"), ip("2001:db8::10")];
    let mut west = Region::new("west", RegionRole::Active);
    west.records = vec![ip("198.51.100.20")];
    Topology::builder(SERVICE)
        .region(east)
        .region(west)
        .build()
        .expect("valid topology")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

fn plan(generation: u64, east: u32, west: u32) -> WeightPlan {
    WeightPlan::in_region_order(generation, Duration::from_secs(30), [east, west])
}

fn main() {
    let secs: u64 = std::env::var("FAILOVER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = EmbeddedConfig::new("example.test.");
        config.selection = Selection::Weighted;
        let server = EmbeddedDns::bind(
            "127.0.0.1:0".parse().expect("addr"),
            &topology(),
            &Policy::default(),
            config,
        )
        .await
        .expect("bind");
        server.router().apply(&plan(1, 75, 25)).await.expect("plan");
        let addr = server.local_addr();
        dnsperf(addr, secs).await;
        rust_loop(addr).await;
        println!(
            "embedded: {} queries answered in total",
            server.queries_answered()
        );
        rfc2136_round_trip().await;
    });
}

async fn dnsperf(addr: SocketAddr, secs: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("queries.txt");
    // A bounded query file; dnsperf cycles through it until -l expires.
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(if i % 2 == 0 {
            "api.example.test A\n"
        } else {
            "api.example.test AAAA\n"
        });
    }
    std::fs::write(&file, text).expect("query file");
    let file_arg = file.display().to_string();
    let args = [
        "-s".to_owned(),
        addr.ip().to_string(),
        "-p".to_owned(),
        addr.port().to_string(),
        "-d".to_owned(),
        file_arg,
        "-l".to_owned(),
        secs.to_string(),
        "-c".to_owned(),
        "4".to_owned(),
        "-q".to_owned(),
        "200".to_owned(),
    ];
    println!("dnsperf {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || Command::new("dnsperf").args(&args).output())
        .await
        .expect("task");
    match out {
        Err(e) => println!("dnsperf not run ({e}): apt-get install dnsperf"),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines().filter(|l| {
                l.contains("Queries per second")
                    || l.contains("Queries completed")
                    || l.contains("Queries lost")
                    || l.contains("Average Latency")
            }) {
                println!("dnsperf: {}", line.trim());
            }
        }
    }
}

/// 16 concurrent UDP clients, each sending 5,000 queries one after another.
async fn rust_loop(addr: SocketAddr) {
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 5_000;
    let query = {
        let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(
            Name::from_ascii(SERVICE).expect("name"),
            RecordType::A,
        ));
        Arc::new(msg.to_vec().expect("encode"))
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let query = query.clone();
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            socket.connect(addr).await.expect("connect");
            let mut buf = [0u8; 512];
            let mut answered = 0usize;
            for _ in 0..PER_CLIENT {
                socket.send(&query).await.expect("send");
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
                {
                    answered += 1;
                }
            }
            answered
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.expect("client");
    }
    let elapsed = start.elapsed();
    println!(
        "rust loop: {CLIENTS} clients x {PER_CLIENT} queries: {answered} answered in {elapsed:.2?} = {:.0} qps",
        answered as f64 / elapsed.as_secs_f64()
    );
}

async fn rfc2136_round_trip() {
    const UPDATES: usize = 200;
    let bind = tokio::task::spawn_blocking(|| {
        BindServer::start(BindZone::new("example.test").record("api", ip("192.0.2.10")))
    })
    .await
    .expect("task");
    let bind = match bind {
        Ok(b) => b,
        Err(e) => {
            println!("rfc2136: named not started ({e})");
            return;
        }
    };
    let config = Rfc2136Config::new(bind.addr(), bind.zone(), bind.key_name(), bind.key_secret());
    let router = Rfc2136Router::new(config, &topology(), &Policy::default()).expect("config");
    let mut times = Vec::with_capacity(UPDATES);
    for i in 0..UPDATES {
        let p = if i % 2 == 0 {
            plan(i as u64, 0, 100)
        } else {
            plan(i as u64, 100, 0)
        };
        let start = Instant::now();
        router.apply(&p).await.expect("update");
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    println!(
        "rfc2136 apply (read A+AAAA, signed UPDATE, read back A+AAAA) x{UPDATES}: median {median:.2?}, p99 {p99:.2?}, max {:.2?}",
        times[times.len() - 1]
    );
    println!("rfc2136: {} updates accepted", router.updates_sent());
}
