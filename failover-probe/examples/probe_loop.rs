//! A probe loop to profile one side at a time: the server in one process,
//! the client (HttpProbe or the bench's bare connect + GET + close) in
//! another, so `strace -c`, `perf stat` and callgrind count the client alone.
//!
//! ```text
//! cargo run --release -p failover-probe --example probe_loop -- serve
//! # prints the port; then, in another shell:
//! strace -f -c target/release/examples/probe_loop probe PORT 10000 1
//! strace -f -c target/release/examples/probe_loop bare  PORT 10000 1
//! ```
//!
//! Arguments: `serve`, or `probe|bare PORT CHECKS IN_FLIGHT`. The client
//! runs on a current-thread runtime, so no work-stealing noise. PORT 0
//! starts the server inside the client's process instead, on one runtime of
//! two workers, as the bench does. With
//! `PROBE_SIZES=1` it also prints the size of one check's future, which the
//! `Probe` trait boxes (allocates and copies) on every check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use failover_core::ports::Probe;
use failover_probe::{HttpProbe, HttpProbeConfig};
use failover_testkit::http::RegionalApi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn usage() -> ! {
    eprintln!("usage: probe_loop serve | probe_loop probe|bare PORT CHECKS IN_FLIGHT");
    std::process::exit(2)
}

/// The bench's bare loop, unchanged.
async fn bare_get(addr: SocketAddr, request: &[u8]) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(256);
    stream.read_to_end(&mut buf).await.is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else { usage() };
    if mode == "serve" {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        else {
            usage()
        };
        rt.block_on(async {
            let Ok(api) = RegionalApi::start_http() else {
                usage()
            };
            println!("{}", api.addr().port());
            std::future::pending::<()>().await;
        });
        return;
    }
    let parse = |i: usize| -> u64 {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let (port, checks, in_flight) = (parse(1), parse(2), parse(3).max(1));
    let Ok(port) = u16::try_from(port) else {
        usage()
    };
    // PORT 0: the bench's own setup instead, the server in the client's
    // runtime of two workers.
    let in_process = port == 0;
    let built = if in_process {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let Ok(rt) = built else { usage() };
    let api = if in_process {
        match rt.block_on(async { RegionalApi::start_http() }) {
            Ok(api) => Some(api),
            Err(_) => usage(),
        }
    } else {
        None
    };
    let port = api.as_ref().map_or(port, |api| api.addr().port());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let bare = match mode.as_str() {
        "bare" => true,
        "probe" => false,
        _ => usage(),
    };
    let Ok(probe) = HttpProbe::new(HttpProbeConfig::new("127.0.0.1", port)) else {
        usage()
    };
    let probe = Arc::new(probe);
    if std::env::var_os("PROBE_SIZES").is_some() {
        let fut = probe.check();
        eprintln!("check future: {} bytes", std::mem::size_of_val(&*fut));
        type Io = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
        type B = http_body_util::Empty<bytes::Bytes>;
        eprintln!(
            "hyper connection {} bytes, request {} bytes, tokio Sleep {} bytes",
            std::mem::size_of::<hyper::client::conn::http1::Connection<Io, B>>(),
            std::mem::size_of::<http::Request<B>>(),
            std::mem::size_of::<tokio::time::Sleep>(),
        );
    }
    let request: Arc<[u8]> =
        format!("GET / HTTP/1.1\r\nhost: {addr}\r\nuser-agent: bare\r\nconnection: close\r\n\r\n")
            .into_bytes()
            .into();
    let start = Instant::now();
    let failed = rt.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..in_flight {
            let share = checks / in_flight + u64::from(w < checks % in_flight);
            let (probe, request) = (Arc::clone(&probe), Arc::clone(&request));
            workers.spawn(async move {
                let mut failed = 0u64;
                for _ in 0..share {
                    let ok = if bare {
                        bare_get(addr, &request).await
                    } else {
                        probe.check().await.is_ok()
                    };
                    failed += u64::from(!ok);
                }
                failed
            });
        }
        let mut failed = 0;
        while let Some(r) = workers.join_next().await {
            failed += r.unwrap_or(u64::MAX);
        }
        failed
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{mode}: {checks} checks, {in_flight} in flight, {failed} failed, {:.0}/s",
        checks as f64 / secs
    );
}
