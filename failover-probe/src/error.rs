//! The crate's one error type: what is wrong with a probe's configuration.
//!
//! Probe *outcomes* are never errors: a refused connection or a bad status is
//! a [`ProbeOutcome::Failed`](failover_core::ProbeOutcome::Failed), not a
//! `ProbeError`. This type only says why a probe could not be built.

use failover_core::ports::{PortError, PortErrorKind};

/// Why a probe could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The probe URL could not be parsed.
    #[error(
        "probe URL `{url}` is invalid: {reason}; write it as http://host[:port]/path or https://…"
    )]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// The probe URL uses a scheme other than `http` or `https`.
    #[error("probe URL `{url}` has an unsupported scheme; use http or https")]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
    },
    /// A configuration field has a value the probe cannot use.
    #[error("probe setting `{field}` is invalid: {reason}")]
    InvalidSetting {
        /// The field's name (for example `path` or `host_header`).
        field: &'static str,
        /// What is wrong and what to use instead.
        reason: String,
    },
    /// TLS was requested but no CA certificate was given to trust.
    #[error("TLS for `{host}` has no CA certificate to trust; add one with TlsSettings::with_ca_pem or with_ca_der")]
    NoTrustedCa {
        /// The probed host.
        host: String,
    },
    /// A CA certificate could not be parsed or added to the trust store.
    #[error("CA certificate is unusable: {reason}; give a PEM or DER X.509 CA certificate")]
    InvalidCa {
        /// What the parser or rustls said.
        reason: String,
    },
    /// The TLS server name (SNI) is not a valid DNS name or IP address.
    #[error("TLS server name `{name}` is not a DNS name or IP address")]
    InvalidServerName {
        /// The name as given.
        name: String,
    },
    /// rustls refused the client configuration.
    #[error("TLS client configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl From<ProbeError> for PortError {
    fn from(err: ProbeError) -> Self {
        PortError::new(PortErrorKind::Config, err)
    }
}
