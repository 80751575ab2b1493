//! TLS client settings shared by the HTTP and TCP probes: which CA to trust
//! and which server name (SNI) to send and verify.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::ProbeError;

/// TLS settings for a probe. There is no built-in web PKI root set: a probe
/// trusts exactly the CA certificates given here (usually the service's
/// own CA, or the public CA that signed its certificate).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TlsSettings {
    /// CA certificates (DER) to trust. At least one is required.
    pub roots: Vec<CertificateDer<'static>>,
    /// Name sent as SNI and verified against the certificate; `None` uses the
    /// probe's host (a DNS name or an IP address).
    pub server_name: Option<String>,
}

impl TlsSettings {
    /// Trusts every certificate in a PEM bundle.
    pub fn with_ca_pem(pem: &[u8]) -> Result<TlsSettings, ProbeError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ProbeError::InvalidCa {
                reason: e.to_string(),
            })?;
        if roots.is_empty() {
            return Err(ProbeError::InvalidCa {
                reason: "no CERTIFICATE block in the PEM text".into(),
            });
        }
        Ok(TlsSettings {
            roots,
            server_name: None,
        })
    }

    /// Trusts one DER certificate.
    pub fn with_ca_der(der: CertificateDer<'static>) -> TlsSettings {
        TlsSettings {
            roots: vec![der],
            server_name: None,
        }
    }

    /// Sends and verifies `name` instead of the probe's host.
    pub fn server_name(mut self, name: impl Into<String>) -> TlsSettings {
        self.server_name = Some(name.into());
        self
    }

    /// Builds the connector once, so each probe only pays for the handshake.
    pub(crate) fn client(&self, host: &str, alpn_http1: bool) -> Result<TlsClient, ProbeError> {
        if self.roots.is_empty() {
            return Err(ProbeError::NoTrustedCa {
                host: host.to_owned(),
            });
        }
        let mut store = rustls::RootCertStore::empty();
        for root in &self.roots {
            store.add(root.clone()).map_err(|e| ProbeError::InvalidCa {
                reason: e.to_string(),
            })?;
        }
        // An explicit provider: never depend on a process-wide default that
        // another crate in the binary may or may not have installed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        if alpn_http1 {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name =
            ServerName::try_from(name.to_owned()).map_err(|_| ProbeError::InvalidServerName {
                name: name.to_owned(),
            })?;
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A ready-to-use TLS connector and the name it verifies.
#[derive(Clone)]
pub(crate) struct TlsClient {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}
