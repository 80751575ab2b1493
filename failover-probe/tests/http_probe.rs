//! HttpProbe against real regional APIs on loopback, one behaviour each.

use std::time::{Duration, Instant};

use failover_core::ports::Probe;
use failover_core::{ProbeFailure, ProbeOutcome};
use failover_probe::{HttpProbe, HttpProbeConfig, TlsSettings};
use failover_testkit::http::{ApiMode, RegionalApi, TestCa};

/// Outer bound on any single probe in these tests: a probe that ignores its
/// own timeouts fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(10);

fn config_for(api: &RegionalApi, path: &str) -> HttpProbeConfig {
    let mut config =
        HttpProbeConfig::from_url(&format!("{}{path}", api.base_url())).expect("test URL parses");
    config.connect_timeout = Duration::from_secs(2);
    config.response_timeout = Duration::from_secs(2);
    config
}

async fn check(probe: &HttpProbe) -> ProbeOutcome {
    tokio::time::timeout(GUARD, probe.check())
        .await
        .expect("probe ignored its own timeouts")
}

async fn check_config(config: HttpProbeConfig) -> ProbeOutcome {
    check(&HttpProbe::new(config).expect("valid probe config")).await
}

fn failure(outcome: ProbeOutcome) -> ProbeFailure {
    match outcome {
        ProbeOutcome::Failed(f) => f,
        ProbeOutcome::Ok { .. } => panic!("expected a failure, got {outcome:?}"),
    }
}

#[tokio::test]
async fn healthy_region_passes_with_body_match() {
    let api = RegionalApi::start_http().unwrap();
    let mut config = config_for(&api, "/healthz");
    config.body_contains = Some("healthy region=".into());
    let outcome = check_config(config).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(api.requests(), 1);
    let head = api.last_request().to_ascii_lowercase();
    assert!(head.starts_with("get /healthz http/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nhost: {}\r\n", api.addr())),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
}

#[tokio::test]
async fn method_host_and_headers_are_configurable() {
    let api = RegionalApi::start_http().unwrap();
    let mut config = config_for(&api, "/ready?deep=1");
    config.method = http::Method::HEAD;
    config.host_header = Some("api.us-east.example".into());
    config
        .headers
        .insert("x-probe", http::HeaderValue::from_static("failover"));
    let outcome = check_config(config).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    let head = api.last_request().to_ascii_lowercase();
    assert!(
        head.starts_with("head /ready?deep=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nhost: api.us-east.example\r\n"), "{head}");
    assert!(head.contains("\r\nx-probe: failover\r\n"), "{head}");
}

#[tokio::test]
async fn body_mismatch_is_reported() {
    let api = RegionalApi::start_http().unwrap();
    let mut config = config_for(&api, "/");
    config.body_contains = Some("region=eu-west".into());
    assert_eq!(
        failure(check_config(config).await),
        ProbeFailure::BodyMismatch
    );
}

#[tokio::test]
async fn status_500_fails_with_its_code() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::Status(500));
    let outcome = check_config(config_for(&api, "/")).await;
    assert_eq!(failure(outcome), ProbeFailure::Status(500));
}

#[tokio::test]
async fn expected_status_set_is_honoured() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::Status(204));
    let mut config = config_for(&api, "/");
    config.expected_status = vec![200, 204];
    assert!(check_config(config).await.is_ok());
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::Redirect);
    let outcome = check_config(config_for(&api, "/")).await;
    assert_eq!(failure(outcome), ProbeFailure::Status(301));
    // One request only: the Location was not fetched.
    assert_eq!(api.requests(), 1);
}

#[tokio::test]
async fn accepted_but_unanswered_times_out_on_time() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::Hang);
    let timeout = Duration::from_millis(300);
    let mut config = config_for(&api, "/");
    config.response_timeout = timeout;
    let probe = HttpProbe::new(config).unwrap();
    let start = Instant::now();
    // The server never answers: only the probe's own timeout can end the
    // check. The outer bound is far beyond it, so a loaded machine cannot
    // fail the test; a probe without a working timeout still does.
    let outcome = tokio::time::timeout(Duration::from_secs(30), check(&probe))
        .await
        .expect("the response timeout ended the check");
    let elapsed = start.elapsed();
    assert_eq!(failure(outcome), ProbeFailure::ResponseTimeout);
    // A timer never fires early, however loaded the machine.
    assert!(elapsed >= timeout, "fired early: {elapsed:?}");
}

#[tokio::test]
async fn refused_connection_and_restart_on_same_port() {
    let api = RegionalApi::start_http().unwrap();
    let probe = HttpProbe::new(config_for(&api, "/")).unwrap();
    assert!(check(&probe).await.is_ok());
    api.stop().await;
    assert_eq!(failure(check(&probe).await), ProbeFailure::Refused);
    api.start().unwrap();
    assert!(check(&probe).await.is_ok());
}

#[tokio::test]
async fn slow_body_hits_the_response_timeout() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::SlowBody {
        byte_delay: Duration::from_millis(50),
    });
    let mut config = config_for(&api, "/");
    config.response_timeout = Duration::from_millis(300);
    // The headers arrive at once; only the whole-response timeout catches this.
    let outcome = check_config(config).await;
    assert_eq!(failure(outcome), ProbeFailure::ResponseTimeout);
}

#[tokio::test]
async fn body_limit_stops_reading_a_slow_body_early() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::SlowBody {
        byte_delay: Duration::from_millis(10),
    });
    let mut config = config_for(&api, "/");
    config.body_limit = 3;
    config.body_contains = Some("hea".into());
    // 3 bytes take ~30 ms; the whole 64-byte body would take ~640 ms.
    config.response_timeout = Duration::from_millis(500);
    let outcome = check_config(config).await;
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[tokio::test]
async fn oversized_body_is_read_only_up_to_the_limit() {
    let api = RegionalApi::start_http().unwrap();
    let huge = 4 * 1024 * 1024 * 1024_u64;
    api.set_mode(ApiMode::Oversized { bytes: huge });
    let mut config = config_for(&api, "/");
    config.body_contains = Some("healthy".into());
    assert!(check_config(config.clone()).await.is_ok());

    config.body_contains = Some("not in the first 4 KiB".into());
    assert_eq!(
        failure(check_config(config).await),
        ProbeFailure::BodyMismatch
    );

    // Stop the server, which waits until its connection tasks have ended:
    // the count is then final. Only socket buffers' worth was ever written,
    // not gigabytes.
    api.stop().await;
    let sent = api.oversized_bytes_sent();
    assert!(sent < 256 * 1024 * 1024, "server wrote {sent} bytes");
}

#[tokio::test]
async fn endless_response_head_is_a_protocol_failure() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::HugeHead {
        bytes: 1024 * 1024 * 1024,
    });
    assert_eq!(
        failure(check_config(config_for(&api, "/")).await),
        ProbeFailure::Protocol
    );
    api.stop().await;
    let sent = api.oversized_bytes_sent();
    assert!(sent < 64 * 1024 * 1024, "server wrote {sent} header bytes");
}

#[tokio::test]
async fn garbage_is_a_protocol_failure() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::Garbage);
    assert_eq!(
        failure(check_config(config_for(&api, "/")).await),
        ProbeFailure::Protocol
    );
}

#[tokio::test]
async fn flapping_server_alternates() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::Flapping { period: 2 });
    let probe = HttpProbe::new(config_for(&api, "/")).unwrap();
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(check(&probe).await.is_ok());
    }
    assert_eq!(
        seen,
        [true, true, false, false, true, true, false, false],
        "{seen:?}"
    );
}

#[tokio::test]
async fn fresh_connection_per_probe_by_default_keep_alive_on_request() {
    let api = RegionalApi::start_http().unwrap();
    let fresh = HttpProbe::new(config_for(&api, "/")).unwrap();
    for _ in 0..3 {
        assert!(check(&fresh).await.is_ok());
    }
    assert_eq!(api.connections(), 3);

    let mut config = config_for(&api, "/");
    config.keep_alive = true;
    let reused = HttpProbe::new(config).unwrap();
    for _ in 0..3 {
        assert!(check(&reused).await.is_ok());
    }
    assert_eq!(api.connections(), 4, "keep-alive opened one connection");
    assert_eq!(api.requests(), 6);

    // A kept-alive connection still reports the region failing…
    api.set_mode(ApiMode::Status(503));
    assert_eq!(failure(check(&reused).await), ProbeFailure::Status(503));
    // …and a server restart (idle connection closed) is not a false failure.
    api.set_mode(ApiMode::Healthy);
    api.stop().await;
    api.start().unwrap();
    assert!(check(&reused).await.is_ok());
}

#[tokio::test]
async fn localhost_name_is_resolved() {
    let api = RegionalApi::start_http().unwrap();
    let mut config = HttpProbeConfig::new("localhost", api.addr().port());
    config.connect_timeout = Duration::from_secs(2);
    let outcome = check_config(config).await;
    assert!(outcome.is_ok(), "{outcome:?}");
}

fn tls_config(api: &RegionalApi, ca: &TestCa, sni: &str) -> HttpProbeConfig {
    let tls = TlsSettings::with_ca_pem(ca.ca_pem().as_bytes())
        .unwrap()
        .server_name(sni);
    let mut config = config_for(api, "/healthz").with_tls(tls);
    config.body_contains = Some("healthy".into());
    config
}

#[tokio::test]
async fn https_with_test_ca_passes() {
    let api = RegionalApi::start_https("api.us-east.test").unwrap();
    let ca = api.ca().unwrap();
    let outcome = check_config(tls_config(&api, ca, "api.us-east.test")).await;
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[tokio::test]
async fn https_with_wrong_sni_is_a_tls_failure() {
    let api = RegionalApi::start_https("api.us-east.test").unwrap();
    let ca = api.ca().unwrap();
    let outcome = check_config(tls_config(&api, ca, "api.eu-west.test")).await;
    assert_eq!(failure(outcome), ProbeFailure::Tls);
}

#[tokio::test]
async fn https_with_untrusted_ca_is_a_tls_failure() {
    let api = RegionalApi::start_https("api.us-east.test").unwrap();
    let other = TestCa::generate("api.us-east.test").unwrap();
    let outcome = check_config(tls_config(&api, &other, "api.us-east.test")).await;
    assert_eq!(failure(outcome), ProbeFailure::Tls);
}

#[tokio::test]
async fn plain_http_to_https_port_is_a_protocol_failure() {
    let api = RegionalApi::start_https("api.us-east.test").unwrap();
    let mut config = HttpProbeConfig::new("127.0.0.1", api.addr().port());
    config.response_timeout = Duration::from_secs(2);
    let outcome = check_config(config).await;
    assert!(
        matches!(
            outcome,
            ProbeOutcome::Failed(ProbeFailure::Protocol | ProbeFailure::Io)
        ),
        "{outcome:?}"
    );
}

#[test]
fn bad_configuration_is_an_error_not_a_panic() {
    assert!(HttpProbeConfig::from_url("ftp://example.test/").is_err());
    assert!(HttpProbeConfig::from_url("not a url").is_err());
    let https = HttpProbeConfig::from_url("https://api.example.test/healthz").unwrap();
    assert_eq!(https.port, 443);
    assert!(
        HttpProbe::new(https).is_err(),
        "https without a CA must be refused"
    );
    let mut config = HttpProbeConfig::new("127.0.0.1", 80);
    config.path = "no-slash".into();
    assert!(HttpProbe::new(config).is_err());
    let mut config = HttpProbeConfig::new("127.0.0.1", 80);
    config.expected_status.clear();
    assert!(HttpProbe::new(config).is_err());
    assert!(TlsSettings::with_ca_pem(b"garbage").is_err());
}

/// The `Probe` trait boxes each check's future (async_trait), so its size is
/// paid on every check: kept well under the 4.5 KB it once was.
/// BENCHMARKS.md quotes the printed size.
#[tokio::test]
async fn the_check_future_stays_small() {
    let api = RegionalApi::start_http().unwrap();
    let probe = HttpProbe::new(config_for(&api, "/")).unwrap();
    let future = Probe::check(&probe);
    let bytes = std::mem::size_of_val(&*future);
    println!("HttpProbe check future: {bytes} bytes");
    assert!(bytes <= 1_536, "the check future grew to {bytes} bytes");
    assert!(future.await.is_ok());
}
