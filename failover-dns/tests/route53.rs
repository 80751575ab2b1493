//! The Route 53 router against a real Route 53 API server: moto in server
//! mode (`failover_testkit::moto`), on a free loopback port per test.
//!
//! What moto does not enforce, and so these tests cannot show: it accepts a
//! DELETE whose values differ from the record in place (it checks only that
//! such a value was once written, then deletes by name and type), and a
//! CREATE of a record that already exists with other values. Real Route 53
//! refuses both, which is what makes a stale leader's *racing* batch fail
//! atomically. The stale-leader test below is the refusal moto can show:
//! a newer token in place refuses the plan and the zone is unchanged.

use std::time::Duration;

use failover_core::ports::TrafficRouter;
use failover_core::{
    AllDownPolicy, FencingToken, Policy, PortErrorKind, Region as FoRegion, RegionId, RegionRole,
    RegionWeight, Topology, WeightPlan,
};
use failover_dns::{DnsError, Route53Config, Route53Router, StaticCredentials, WeightedSet};
use failover_testkit::moto::MotoServer;

const ZONE: &str = "example.test.";
const SERVICE: &str = "api.example.test.";

fn topology() -> Topology {
    let mut east = FoRegion::new("east", RegionRole::Active);
    east.records = vec!["192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()];
    let mut west = FoRegion::new("west", RegionRole::Active);
    west.records = vec!["198.51.100.20".parse().unwrap()];
    Topology::builder(SERVICE)
        .region(east)
        .region(west)
        .build()
        .unwrap()
}

fn policy(all_down: AllDownPolicy) -> Policy {
    Policy {
        all_down,
        ..Policy::default()
    }
}

fn plan(generation: u64, weights: [u32; 2], token: Option<u64>) -> WeightPlan {
    WeightPlan {
        token: token.map(FencingToken),
        ..WeightPlan::in_region_order(generation, Duration::from_secs(30), weights)
    }
}

fn keys() -> StaticCredentials {
    StaticCredentials {
        access_key_id: "AKIDFAILOVERTEST".into(),
        secret_access_key: "not-a-secret".into(),
    }
}

/// Creates the hosted zone and returns its id.
async fn create_zone(moto: &MotoServer) -> String {
    Route53Router::create_hosted_zone(&config(moto, "Z0"), ZONE)
        .await
        .unwrap_or_else(|e| panic!("create zone: {e}\n{}", moto.log_tail()))
}

fn config(moto: &MotoServer, zone: &str) -> Route53Config {
    let mut config = Route53Config::new(zone);
    config.endpoint = Some(moto.endpoint());
    config.static_credentials = Some(keys());
    config.timeout = Duration::from_secs(3);
    config.insync_timeout = Duration::from_secs(10);
    config
}

async fn router(moto: &MotoServer, zone: &str, all_down: AllDownPolicy) -> Route53Router {
    Route53Router::connect(config(moto, zone), &topology(), &policy(all_down))
        .await
        .unwrap()
}

fn set(id: &str, weight: u32, values: &[&str]) -> WeightedSet {
    WeightedSet {
        set_id: id.into(),
        weight,
        ttl: 30,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn weights(pairs: [u32; 2]) -> Vec<RegionWeight> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, w)| RegionWeight {
            region: RegionId(i as u32),
            weight: *w,
        })
        .collect()
}

#[tokio::test]
async fn a_plan_is_applied_as_weighted_sets_and_read_back_equal() {
    let moto = MotoServer::start().unwrap();
    let zone = create_zone(&moto).await;
    let router = router(&moto, &zone, AllDownPolicy::FailOpen).await;

    router.apply(&plan(1, [100, 40], None)).await.unwrap();
    assert_eq!(router.read_back().await.unwrap(), weights([100, 40]));
    assert_eq!(
        router.live_sets().await.unwrap(),
        vec![
            set("east", 100, &["192.0.2.10", "192.0.2.11"]),
            set("west", 40, &["198.51.100.20"]),
        ]
    );
    assert_eq!(router.changes_sent(), 1);

    // Idempotent: the live plan again sends nothing.
    router.apply(&plan(2, [100, 40], None)).await.unwrap();
    assert_eq!(router.changes_sent(), 1);

    // Weights above 255 are scaled, the largest to 255.
    router.apply(&plan(3, [1000, 500], None)).await.unwrap();
    assert_eq!(router.read_back().await.unwrap(), weights([255, 128]));
}

#[tokio::test]
async fn a_drained_region_is_kept_at_weight_zero_beside_a_serving_one() {
    let moto = MotoServer::start().unwrap();
    let zone = create_zone(&moto).await;
    let router = router(&moto, &zone, AllDownPolicy::FailClosed).await;

    router.apply(&plan(1, [100, 100], None)).await.unwrap();
    router.apply(&plan(2, [0, 100], None)).await.unwrap();
    // Route 53 never answers with a weight-0 set while another set of the
    // name has a weight above 0.
    assert_eq!(
        router.live_sets().await.unwrap(),
        vec![
            set("east", 0, &["192.0.2.10", "192.0.2.11"]),
            set("west", 100, &["198.51.100.20"]),
        ]
    );
    assert_eq!(router.read_back().await.unwrap(), weights([0, 100]));
}

#[tokio::test]
async fn fail_closed_deletes_every_set_instead_of_writing_all_zero() {
    let moto = MotoServer::start().unwrap();
    let zone = create_zone(&moto).await;
    let router = router(&moto, &zone, AllDownPolicy::FailClosed).await;

    router.apply(&plan(1, [100, 100], None)).await.unwrap();
    router.apply(&plan(2, [0, 0], None)).await.unwrap();
    // All weights 0 would make Route 53 serve every record: fail-closed
    // leaves no record at the name instead.
    assert_eq!(router.live_sets().await.unwrap(), vec![]);
    assert_eq!(router.read_back().await.unwrap(), weights([0, 0]));

    // The next serving plan creates the sets again.
    router.apply(&plan(3, [0, 100], None)).await.unwrap();
    assert_eq!(router.read_back().await.unwrap(), weights([0, 100]));
}

#[tokio::test]
async fn fail_open_writes_every_set_at_zero_which_route53_serves_equally() {
    let moto = MotoServer::start().unwrap();
    let zone = create_zone(&moto).await;
    let router = router(&moto, &zone, AllDownPolicy::FailOpen).await;

    router.apply(&plan(1, [100, 0], None)).await.unwrap();
    router.apply(&plan(2, [0, 0], None)).await.unwrap();
    assert_eq!(
        router.live_sets().await.unwrap(),
        vec![
            set("east", 0, &["192.0.2.10", "192.0.2.11"]),
            set("west", 0, &["198.51.100.20"]),
        ]
    );
}

#[tokio::test]
async fn a_stale_leaders_plan_is_refused_and_the_zone_is_unchanged() {
    let moto = MotoServer::start().unwrap();
    let zone = create_zone(&moto).await;
    let old_leader = router(&moto, &zone, AllDownPolicy::FailOpen).await;
    let new_leader = router(&moto, &zone, AllDownPolicy::FailOpen).await;

    old_leader
        .apply(&plan(1, [100, 100], Some(1)))
        .await
        .unwrap();
    assert_eq!(
        old_leader.live_token().await.unwrap(),
        Some(FencingToken(1))
    );
    // A new term raises the token in the same batch as its weights.
    new_leader.apply(&plan(1, [0, 100], Some(2))).await.unwrap();
    assert_eq!(
        new_leader.live_token().await.unwrap(),
        Some(FencingToken(2))
    );
    let before = new_leader.live_sets().await.unwrap();
    let changes = old_leader.changes_sent();

    // The deposed leader wakes up and drains the other region.
    let err = old_leader
        .apply(&plan(2, [100, 0], Some(1)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PortErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("token 2"), "{err}");
    assert_eq!(old_leader.changes_sent(), changes, "nothing was sent");
    assert_eq!(new_leader.live_sets().await.unwrap(), before);
    assert_eq!(
        new_leader.live_token().await.unwrap(),
        Some(FencingToken(2))
    );

    // The current leader goes on under its token.
    new_leader
        .apply(&plan(2, [50, 100], Some(2)))
        .await
        .unwrap();
    assert_eq!(new_leader.read_back().await.unwrap(), weights([50, 100]));
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_and_a_restarted_one_takes_the_plan() {
    let mut moto = MotoServer::start().unwrap();
    moto.seed(7).unwrap();
    let zone = create_zone(&moto).await;
    let router = router(&moto, &zone, AllDownPolicy::FailOpen).await;
    router.apply(&plan(1, [100, 100], None)).await.unwrap();

    moto.stop();
    let err = router.apply(&plan(2, [0, 100], None)).await.unwrap_err();
    assert_eq!(err.kind(), PortErrorKind::Unavailable, "{err}");
    assert!(err.kind().is_retryable());

    // moto forgets its zones on restart; the same seed gives the same id.
    moto.restart().unwrap();
    moto.seed(7).unwrap();
    assert_eq!(create_zone(&moto).await, zone);
    router.apply(&plan(2, [0, 100], None)).await.unwrap();
    assert_eq!(router.read_back().await.unwrap(), weights([0, 100]));
}

#[tokio::test]
async fn a_malformed_zone_id_is_a_config_error_naming_it() {
    let moto = MotoServer::start().unwrap();
    let err = Route53Router::connect(
        config(&moto, "not a zone!"),
        &topology(),
        &Policy::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            DnsError::Config {
                field: "route53.hosted_zone_id",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not a zone!"), "{err}");

    // Well formed, but Route 53 has no such zone.
    let router = router(&moto, "ZNOSUCHZONE0001", AllDownPolicy::FailOpen).await;
    let err = router.apply(&plan(1, [100, 100], None)).await.unwrap_err();
    assert_eq!(err.kind(), PortErrorKind::Config, "{err}");
    assert!(err.to_string().contains("route53.hosted_zone_id"), "{err}");
    assert!(err.to_string().contains("ZNOSUCHZONE0001"), "{err}");
}

#[tokio::test]
async fn an_invalid_change_batch_is_malformed_with_route53s_message() {
    let moto = MotoServer::start().unwrap();
    let zone = create_zone(&moto).await;
    let mut config = config(&moto, &zone);
    // A name outside the hosted zone: Route 53 refuses the batch.
    config.record_name = Some("api.elsewhere.test.".into());
    let router = Route53Router::connect(config, &topology(), &Policy::default())
        .await
        .unwrap();
    let err = router.apply(&plan(1, [100, 100], None)).await.unwrap_err();
    assert_eq!(err.kind(), PortErrorKind::Malformed, "{err}");
    let text = err.to_string();
    assert!(text.contains("InvalidChangeBatch"), "{text}");
    assert!(text.contains("api.elsewhere.test"), "{text}");
}

#[tokio::test]
async fn rejected_credentials_are_auth() {
    let moto = MotoServer::start_checking_credentials().unwrap();
    let router = router(&moto, "ZANYZONE0001", AllDownPolicy::FailOpen).await;
    let err = router.apply(&plan(1, [100, 100], None)).await.unwrap_err();
    assert_eq!(err.kind(), PortErrorKind::Auth, "{err}");
    assert!(!err.kind().is_retryable());
}

#[tokio::test]
async fn a_token_record_holding_something_else_is_malformed_and_names_it() {
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    use aws_smithy_http_client::tls;

    let moto = MotoServer::start().unwrap();
    let zone = create_zone(&moto).await;
    let router = router(&moto, &zone, AllDownPolicy::FailOpen).await;
    // Someone else's TXT record sits at the token's name.
    let client = aws_sdk_route53::Client::from_conf(
        aws_sdk_route53::Config::builder()
            .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .credentials_provider(aws_sdk_route53::config::Credentials::new(
                "AKIDFAILOVERTEST",
                "x",
                None,
                None,
                "test",
            ))
            .build(),
    );
    let txt = ResourceRecordSet::builder()
        .name(router.token_name())
        .r#type(RrType::Txt)
        .ttl(60)
        .resource_records(
            ResourceRecord::builder()
                .value("\"v=spf1 -all\"")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    client
        .change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Create)
                        .resource_record_set(txt)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let err = router
        .apply(&plan(1, [100, 100], Some(1)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PortErrorKind::Malformed, "{err}");
    let text = err.to_string();
    assert!(text.contains("_failover.api.example.test."), "{text}");
    assert!(text.contains("v=spf1"), "{text}");
    // Nothing was written.
    assert_eq!(router.live_sets().await.unwrap(), vec![]);
}

/// `[router] kind = "route53"` in a configuration file builds the router
/// (credentials from the standard AWS chain: here the environment).
#[tokio::test]
async fn the_router_table_of_a_config_file_builds_a_route53_router() {
    let moto = MotoServer::start().unwrap();
    let zone = create_zone(&moto).await;
    // The standard chain reads these; moto accepts any key. (Only this test
    // sets them; the others pass static credentials.)
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDFAILOVERTEST");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "not-a-secret");
    let cfg = failover_core::Config::from_toml(&format!(
        r#"
service = "{SERVICE}"
vantages = ["local"]

[[region]]
name = "east"
records = ["192.0.2.10", "192.0.2.11"]

[[region]]
name = "west"
records = ["198.51.100.20"]

[router]
kind = "route53"
hosted_zone_id = "{zone}"
set_identifiers = {{ west = "usw2" }}
endpoint = "{}"
"#,
        moto.endpoint()
    ))
    .expect("valid config");
    let built = failover_dns::ConfiguredRouter::from_config(&cfg)
        .await
        .expect("connected");
    built
        .router()
        .apply(&plan(1, [100, 40], None))
        .await
        .unwrap();
    let failover_dns::ConfiguredRouter::Route53(r53) = &built else {
        panic!("{built:?}")
    };
    assert_eq!(
        r53.live_sets().await.unwrap(),
        vec![
            set("east", 100, &["192.0.2.10", "192.0.2.11"]),
            set("usw2", 40, &["198.51.100.20"]),
        ]
    );
}
