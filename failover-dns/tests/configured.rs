//! The router a configuration file's `[router]` table chooses.

use std::time::Duration;

use failover_core::{Config, WeightPlan};
use failover_dns::{ConfiguredRouter, DnsError};

fn config(router: &str) -> Config {
    Config::from_toml(&format!(
        r#"
service = "api.example.test."
vantages = ["local"]

[[region]]
name = "east"
records = ["192.0.2.10"]

[[region]]
name = "west"
records = ["198.51.100.20"]

[router]
{router}
"#
    ))
    .expect("valid config")
}

#[tokio::test]
async fn an_embedded_router_from_the_file_binds_and_takes_plans() {
    let cfg = config("kind = \"embedded\"\nserver = \"127.0.0.1:0\"\nzone = \"example.test.\"");
    let built = ConfiguredRouter::from_config(&cfg).await.expect("bound");
    let ConfiguredRouter::Embedded(dns) = &built else {
        panic!("{built:?}")
    };
    assert_ne!(dns.local_addr().port(), 0, "bound to a real port");
    let router = built.router();
    let plan = WeightPlan::in_region_order(1, Duration::from_secs(30), [1, 0]);
    router.apply(&plan).await.expect("applied");
    let back = router.read_back().await.expect("read back");
    let weights: Vec<u32> = back.iter().map(|w| w.weight).collect();
    assert_eq!(weights, [1, 0]);
    built.shutdown().await;
}

#[tokio::test]
async fn an_rfc2136_router_without_its_secret_names_the_field() {
    let cfg = config(
        "kind = \"rfc2136\"\nserver = \"127.0.0.1:5353\"\nzone = \"example.test.\"\n\
         key_name = \"failover\"\nkey_secret_env = \"FAILOVER_TEST_SECRET_THAT_IS_NOT_SET\"",
    );
    let err = ConfiguredRouter::from_config(&cfg).await.unwrap_err();
    assert!(
        matches!(
            err,
            DnsError::Config {
                field: "router.key_secret_env",
                ..
            }
        ),
        "{err}"
    );
}

#[cfg(not(feature = "route53"))]
#[tokio::test]
async fn route53_without_the_feature_says_which_feature() {
    let cfg = config("kind = \"route53\"\nhosted_zone_id = \"Z0123\"");
    let err = ConfiguredRouter::from_config(&cfg).await.unwrap_err();
    assert!(err.to_string().contains("route53"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_no_address_names_the_field() {
    let cfg = config("kind = \"embedded\"\nserver = \"dns.example.test\"");
    let err = ConfiguredRouter::from_config(&cfg).await.unwrap_err();
    assert!(
        matches!(
            err,
            DnsError::Config {
                field: "router.server",
                ..
            }
        ),
        "{err}"
    );
}
