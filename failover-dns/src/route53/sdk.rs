//! The AWS SDK side: building the client (rustls with ring, the standard
//! credentials chain, an endpoint override) and turning its errors into
//! [`DnsError`]s with the right [`PortErrorKind`].

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_route53::config::{Credentials, Region};
use aws_sdk_route53::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use failover_core::PortErrorKind;

use super::Route53Config;
use crate::DnsError;

/// Route 53's global endpoint, shown in errors when none is configured.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://route53.amazonaws.com";

/// Error codes Route 53 returns for rejected or missing credentials.
const AUTH_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "UnrecognizedClientException",
    "InvalidSignatureException",
];

/// Error codes that mean "slow down and try again": Route 53 allows five
/// requests a second per account, and one change batch at a time per zone.
const RETRY_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "PriorRequestNotComplete",
    "RequestLimitExceeded",
];

/// Builds the SDK client. Its own retries are off: the router retries
/// throttling itself (with jitter, bounded) and reports everything else at
/// once, so an unreachable endpoint is `Unavailable` in one timeout, not
/// after the SDK's three attempts.
pub(crate) async fn client(config: &Route53Config) -> aws_sdk_route53::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(config.signing_region.clone()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(config.timeout)
                .operation_attempt_timeout(config.timeout)
                .build(),
        );
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    if let Some(keys) = &config.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.clone(),
            None,
            None,
            "failover-route53-config",
        ));
    }
    aws_sdk_route53::Client::new(&loader.load().await)
}

/// Whether `code` is one the router retries with backoff.
pub(crate) fn is_retry_code(code: &str) -> bool {
    RETRY_CODES.contains(&code)
}

/// A failed call, classified.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Route 53 answered with an error code.
    Service {
        code: String,
        message: String,
        status: u16,
    },
    /// Nothing usable came back.
    Transport { reason: String, kind: PortErrorKind },
}

impl Failure {
    /// The Route 53 error code, if Route 53 answered.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Failure::Service { code, .. } => Some(code),
            Failure::Transport { .. } => None,
        }
    }

    /// The crate error for a failure of `operation` on `zone`.
    pub(crate) fn into_error(
        self,
        operation: &'static str,
        zone: &str,
        endpoint: &str,
    ) -> DnsError {
        match self {
            Failure::Service {
                code,
                message,
                status,
            } => {
                let kind = service_kind(&code, status);
                if code == "NoSuchHostedZone" {
                    return DnsError::Config {
                        field: "route53.hosted_zone_id",
                        reason: format!(
                            "Route 53 has no hosted zone {zone:?} ({operation}: {code}: {message})"
                        ),
                    };
                }
                DnsError::Route53 {
                    operation,
                    zone: zone.to_owned(),
                    code,
                    message,
                    kind,
                }
            }
            Failure::Transport { reason, kind } => DnsError::Route53Transport {
                endpoint: endpoint.to_owned(),
                operation,
                reason,
                kind,
            },
        }
    }
}

/// The kind of a Route 53 error code (HTTP `status`).
pub(crate) fn service_kind(code: &str, status: u16) -> PortErrorKind {
    if AUTH_CODES.contains(&code) || status == 401 || status == 403 {
        PortErrorKind::Auth
    } else if is_retry_code(code) || status >= 500 || code == "ServiceUnavailable" {
        PortErrorKind::Unavailable
    } else if code == "NoSuchHostedZone" {
        PortErrorKind::Config
    } else {
        // InvalidChangeBatch, InvalidInput, InvalidDomainName…: the request
        // itself was refused; sending it again changes nothing.
        PortErrorKind::Malformed
    }
}

/// Classifies an SDK error.
pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let chain = error_chain(&err);
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            Failure::Service {
                code: e
                    .code()
                    .map_or_else(|| format!("HTTP {status} (no error code)"), str::to_owned),
                message: e.message().unwrap_or("").to_owned(),
                status,
            }
        }
        SdkError::TimeoutError(_) => Failure::Transport {
            reason: chain,
            kind: PortErrorKind::Timeout,
        },
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                PortErrorKind::Timeout
            } else if mentions_credentials(&chain) {
                PortErrorKind::Auth
            } else {
                PortErrorKind::Unavailable
            };
            Failure::Transport {
                reason: chain,
                kind,
            }
        }
        SdkError::ResponseError(_) => Failure::Transport {
            reason: format!("unreadable reply: {chain}"),
            kind: PortErrorKind::Malformed,
        },
        _ => Failure::Transport {
            kind: if mentions_credentials(&chain) {
                PortErrorKind::Auth
            } else {
                PortErrorKind::Config
            },
            reason: chain,
        },
    }
}

/// The SDK reports missing or unusable credentials as a failure to find an
/// identity for the signing scheme, before anything is sent.
fn mentions_credentials(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    lower.contains("credential") || lower.contains("identity") || lower.contains("auth scheme")
}

/// Every message in the error's source chain, joined: the top-level SDK
/// messages ("dispatch failure") say little on their own.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// The wait before retry `attempt` (1-based) of a throttled call: full
/// jitter over an exponential ceiling from 100 ms, capped at 3.2 s.
/// `random` is a fresh random number.
pub(crate) fn throttle_backoff(attempt: u32, random: u64) -> Duration {
    let ceiling_ms = 100u64 << attempt.min(5);
    Duration::from_millis(ceiling_ms / 2 + random % (ceiling_ms / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_onto_port_kinds() {
        assert_eq!(
            service_kind("InvalidChangeBatch", 400),
            PortErrorKind::Malformed
        );
        assert_eq!(service_kind("InvalidInput", 400), PortErrorKind::Malformed);
        assert_eq!(service_kind("Throttling", 400), PortErrorKind::Unavailable);
        assert_eq!(
            service_kind("PriorRequestNotComplete", 400),
            PortErrorKind::Unavailable
        );
        assert_eq!(
            service_kind("InvalidClientTokenId", 403),
            PortErrorKind::Auth
        );
        assert_eq!(service_kind("Whatever", 403), PortErrorKind::Auth);
        assert_eq!(
            service_kind("InternalFailure", 500),
            PortErrorKind::Unavailable
        );
        assert!(is_retry_code("PriorRequestNotComplete"));
        assert!(!is_retry_code("InvalidChangeBatch"));
    }

    #[test]
    fn throttle_backoff_grows_and_stays_bounded() {
        for attempt in 1..20 {
            for random in [0, 7, u64::MAX] {
                let wait = throttle_backoff(attempt, random);
                assert!(wait >= Duration::from_millis(100));
                assert!(wait <= Duration::from_millis(3200), "{wait:?}");
            }
        }
        assert!(throttle_backoff(4, 0) > throttle_backoff(1, u64::MAX));
    }
}
