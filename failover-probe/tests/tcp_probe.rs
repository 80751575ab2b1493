//! TcpProbe against real listeners on loopback.

use std::time::Duration;

use failover_core::ports::Probe;
use failover_core::{ProbeFailure, ProbeOutcome};
use failover_probe::{TcpProbe, TcpProbeConfig, TlsSettings};
use failover_testkit::http::RegionalApi;

async fn check(config: TcpProbeConfig) -> ProbeOutcome {
    let probe = TcpProbe::new(config).expect("valid probe config");
    tokio::time::timeout(Duration::from_secs(10), probe.check())
        .await
        .expect("probe ignored its own timeout")
}

#[tokio::test]
async fn connect_passes_then_refused_after_stop() {
    let api = RegionalApi::start_http().unwrap();
    let config = TcpProbeConfig::new("127.0.0.1", api.addr().port());
    assert!(check(config.clone()).await.is_ok());
    api.stop().await;
    assert_eq!(
        check(config).await,
        ProbeOutcome::Failed(ProbeFailure::Refused)
    );
}

#[tokio::test]
async fn tls_handshake_checks_ca_and_name() {
    let api = RegionalApi::start_https("db.us-east.test").unwrap();
    let ca = TlsSettings::with_ca_der(api.ca().unwrap().ca_der().clone());
    let port = api.addr().port();

    let good =
        TcpProbeConfig::new("127.0.0.1", port).with_tls(ca.clone().server_name("db.us-east.test"));
    let outcome = check(good).await;
    assert!(outcome.is_ok(), "{outcome:?}");

    let wrong = TcpProbeConfig::new("127.0.0.1", port).with_tls(ca.server_name("db.eu-west.test"));
    assert_eq!(check(wrong).await, ProbeOutcome::Failed(ProbeFailure::Tls));
}

#[tokio::test]
async fn unanswered_tls_handshake_counts_against_the_connect_timeout() {
    // A plain HTTP server waits for a request head that a ClientHello never
    // completes, so the handshake stalls.
    let plain = RegionalApi::start_http().unwrap();
    let https = RegionalApi::start_https("db.test").unwrap();
    let ca = TlsSettings::with_ca_der(https.ca().unwrap().ca_der().clone()).server_name("db.test");
    let mut config = TcpProbeConfig::new("127.0.0.1", plain.addr().port()).with_tls(ca);
    config.connect_timeout = Duration::from_millis(200);
    let start = std::time::Instant::now();
    assert_eq!(
        check(config).await,
        ProbeOutcome::Failed(ProbeFailure::ConnectTimeout)
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}
