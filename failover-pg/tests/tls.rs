//! PostgreSQL over TLS (issue 10 item 9): a node whose `pg_hba.conf`
//! admits TLS connections only, with a certificate made by rcgen.

mod common;

use std::path::Path;

use failover_core::ports::DatabaseAdmin;
use failover_core::{NodeId, PortErrorKind};
use failover_pg::{NodeRole, PgCluster, PgError};
use failover_testkit::postgres::PgTestCluster;

fn cluster(dsn: &str) -> PgCluster {
    PgCluster::new()
        .with_node(NodeId(0), "pg-tls", dsn)
        .expect("valid TLS DSN")
}

fn unrelated_root(dir: &Path) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "some other CA");
    let ca = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
    let path = dir.join("other-root.crt");
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_root_connects_and_a_wrong_root_is_a_typed_error() {
    let tk = common::start(PgTestCluster::builder().replicas(0).tls(true)).await;
    let node = tk.node(0).unwrap().clone();
    let root = tk.tls_root_cert().expect("TLS cluster").to_path_buf();
    let with = |extra: String| format!("{} {extra}", node.admin_dsn());

    // The server takes TLS connections only: plain TCP is turned away.
    let plain = cluster(&with("sslmode=disable".into()));
    let err = plain
        .status(NodeId(0))
        .await
        .expect_err("plain TCP refused");
    assert_eq!(err.kind(), PortErrorKind::Auth, "{err}");

    // verify-full with the CA that signed the server's certificate.
    let good = cluster(&with(format!(
        "sslmode=verify-full sslrootcert='{}'",
        root.display()
    )));
    let st = good.status(NodeId(0)).await.expect("verify-full connects");
    assert_eq!(st.role, NodeRole::Primary);
    assert!(matches!(
        DatabaseAdmin::observe(&good, NodeId(0)).await,
        Ok(failover_core::NodeObservation::Primary { .. })
    ));
    // The same as a URL, and verify-ca.
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=verify-ca&sslrootcert={}",
        node.port,
        root.display()
    );
    cluster(&url)
        .status(NodeId(0))
        .await
        .expect("verify-ca over a URL connects");
    // require without a root encrypts without checking, like libpq.
    cluster(&with("sslmode=require".into()))
        .status(NodeId(0))
        .await
        .expect("require connects");

    // A root that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other = unrelated_root(dir.path());
    let bad = cluster(&with(format!(
        "sslmode=verify-full sslrootcert='{}'",
        other.display()
    )));
    let err = bad
        .status(NodeId(0))
        .await
        .expect_err("untrusted certificate");
    assert!(
        matches!(&err, PgError::Tls { node, .. } if node == "pg-tls"),
        "{err:?}"
    );
    assert_eq!(err.kind(), PortErrorKind::Auth);
    let text = err.to_string();
    assert!(
        text.contains("pg-tls") && text.contains("certificate"),
        "{text}"
    );
    // Not mistaken for an unreachable node by the controller's observer.
    let port = DatabaseAdmin::observe(&bad, NodeId(0))
        .await
        .expect_err("a TLS failure is an error, not Unreachable");
    assert_eq!(port.kind(), PortErrorKind::Auth);
    assert!(port.to_string().contains("pg-tls"), "{port}");

    // verify-full without a root: a config error naming node and field.
    let err = PgCluster::new()
        .with_node(NodeId(0), "pg-tls", &with("sslmode=verify-full".into()))
        .expect_err("no root");
    assert!(
        matches!(&err, PgError::Dsn { node, field, .. } if node == "pg-tls" && field == "sslrootcert"),
        "{err}"
    );
    assert_eq!(err.kind(), PortErrorKind::Config);
}
