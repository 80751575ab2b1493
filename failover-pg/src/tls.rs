//! TLS to PostgreSQL nodes: `sslmode` and `sslrootcert` in a node's DSN.
//!
//! A node's DSN may carry libpq's two TLS settings (key/value or as URL
//! query parameters):
//!
//! | `sslmode` | TLS | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | only with `sslrootcert`: chain |
//! | `require` | always, else the connection fails | only with `sslrootcert`: chain |
//! | `verify-ca` | always | chain up to `sslrootcert` |
//! | `verify-full` | always | chain up to `sslrootcert` and the host name (or IP) |
//!
//! `sslrootcert` is a PEM file with one or more root certificates, read once
//! when the node is added ([`PgCluster::with_node`](crate::PgCluster::with_node));
//! `verify-ca` and `verify-full` need it (libpq's `~/.postgresql/root.crt`
//! default is not read). As with libpq, `prefer`/`require` with a root
//! certificate verify the chain like `verify-ca`; without one they encrypt
//! but accept any certificate.
//!
//! A handshake that fails (an untrusted certificate, a name mismatch, a
//! server without TLS under `require`) is [`PgError::Tls`] naming the node,
//! of kind `Auth`: not retryable, and never taken for an unreachable node.
//!
//! TLS runs on rustls (ring provider) through a small adapter to
//! tokio-postgres' `MakeTlsConnect`. SCRAM channel binding is not offered
//! (`channel_binding=prefer` falls back to plain SCRAM).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::conninfo::{conninfo, parse_pairs};
use crate::PgError;

/// libpq's `sslmode`, as far as this crate supports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it (libpq's default).
    #[default]
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS, and the certificate chains to `sslrootcert`.
    VerifyCa,
    /// TLS, the certificate chains to `sslrootcert` and names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// The TLS settings taken out of a node's DSN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    pub(crate) mode: SslMode,
    pub(crate) root_cert: Option<String>,
}

fn dsn_err(node: &str, field: &str, reason: impl Into<String>) -> PgError {
    PgError::Dsn {
        node: node.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn take_option(
    node: &str,
    options: &mut TlsOptions,
    key: &str,
    value: &str,
) -> Result<bool, PgError> {
    match key {
        "sslmode" => {
            options.mode = SslMode::parse(value).ok_or_else(|| {
                dsn_err(
                    node,
                    "sslmode",
                    format!(
                        "`{value}` is not one of disable, prefer, require, verify-ca, verify-full"
                    ),
                )
            })?;
            Ok(true)
        }
        "sslrootcert" => {
            options.root_cert = Some(value.to_owned());
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn percent_decode(node: &str, text: &str) -> Result<String, PgError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| dsn_err(node, "dsn", format!("bad percent escape in `{text}`")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| dsn_err(node, "dsn", format!("`{text}` is not UTF-8")))
}

/// Splits `sslmode` and `sslrootcert` off `dsn` (which tokio-postgres does
/// not accept in full), returning the rest for tokio-postgres' parser.
pub(crate) fn split_tls_options(node: &str, dsn: &str) -> Result<(String, TlsOptions), PgError> {
    let mut options = TlsOptions::default();
    let trimmed = dsn.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return Ok((dsn.to_owned(), options));
        };
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let decoded = percent_decode(node, value)?;
            if !take_option(node, &mut options, key, &decoded)? {
                kept.push(param);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, options));
    }
    let pairs = parse_pairs(dsn).map_err(|reason| dsn_err(node, "dsn", reason))?;
    let mut kept = Vec::new();
    for (key, value) in &pairs {
        if !take_option(node, &mut options, key, value)? {
            kept.push((key.as_str(), value.as_str()));
        }
    }
    Ok((conninfo(kept), options))
}

/// The connector for `options`, `None` for `disable` (plain TCP).
pub(crate) fn connector(
    node: &str,
    options: &TlsOptions,
) -> Result<Option<RustlsConnect>, PgError> {
    if options.mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &options.root_cert {
        Some(path) => Some(Arc::new(read_roots(node, Path::new(path))?)),
        None if matches!(options.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(dsn_err(
                node,
                "sslrootcert",
                "sslmode verify-ca and verify-full need a root certificate file; give sslrootcert=PATH",
            ))
        }
        None => None,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| dsn_err(node, "sslmode", e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => Arc::new(AcceptAnyCertificate { provider }),
        Some(roots) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| dsn_err(node, "sslrootcert", e.to_string()))?;
            if options.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(RustlsConnect {
        config: Arc::new(config),
    }))
}

fn read_roots(node: &str, path: &Path) -> Result<RootCertStore, PgError> {
    let pem = std::fs::read(path).map_err(|e| {
        dsn_err(
            node,
            "sslrootcert",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            dsn_err(
                node,
                "sslrootcert",
                format!("{} is not a PEM certificate file: {e}", path.display()),
            )
        })?;
        roots
            .add(cert)
            .map_err(|e| dsn_err(node, "sslrootcert", format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(dsn_err(
            node,
            "sslrootcert",
            format!("{} holds no certificate", path.display()),
        ));
    }
    Ok(roots)
}

/// `prefer`/`require` without a root certificate: libpq encrypts and checks
/// nothing; the handshake's signatures are still verified.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a root, the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres' TLS hook over tokio-rustls.
#[derive(Clone, Debug)]
pub(crate) struct RustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnectOne;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnectOne, Self::Error> {
        Ok(RustlsConnectOne {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// One connection's handshake.
pub(crate) struct RustlsConnectOne {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnectOne
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
        })
    }
}

/// An established TLS stream.
pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// The TLS failure inside a tokio-postgres error, if that is what it is.
pub(crate) fn tls_failure(e: &tokio_postgres::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(inner) = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(inner.to_string());
        }
        source = err.source();
    }
    let text = e.to_string();
    text.contains("TLS").then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_are_taken_out_of_key_value_and_url_dsns() {
        let (rest, o) = split_tls_options(
            "pg-east",
            "host=10.0.0.5 sslmode=verify-full sslrootcert='/etc/pg/root ca.pem' user=postgres",
        )
        .unwrap();
        assert_eq!(rest, "host='10.0.0.5' user='postgres'");
        assert_eq!(o.mode, SslMode::VerifyFull);
        assert_eq!(o.root_cert.as_deref(), Some("/etc/pg/root ca.pem"));

        let (rest, o) = split_tls_options(
            "pg-east",
            "postgresql://postgres@10.0.0.5/postgres?sslmode=verify-ca&sslrootcert=%2Ftmp%2Froot.pem&connect_timeout=2",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://postgres@10.0.0.5/postgres?connect_timeout=2"
        );
        assert_eq!(o.mode, SslMode::VerifyCa);
        assert_eq!(o.root_cert.as_deref(), Some("/tmp/root.pem"));

        let (_, o) = split_tls_options("pg-east", "host=h").unwrap();
        assert_eq!(o, TlsOptions::default());
    }

    #[test]
    fn bad_tls_options_name_the_node_and_the_field() {
        let e = split_tls_options("pg-east", "host=h sslmode=verify").unwrap_err();
        assert!(
            matches!(&e, PgError::Dsn { node, field, .. } if node == "pg-east" && field == "sslmode"),
            "{e}"
        );
        let e = connector(
            "pg-east",
            &TlsOptions {
                mode: SslMode::VerifyFull,
                root_cert: None,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let e = connector(
            "pg-east",
            &TlsOptions {
                mode: SslMode::VerifyFull,
                root_cert: Some("/nonexistent/root.pem".into()),
            },
        )
        .unwrap_err();
        assert!(
            matches!(&e, PgError::Dsn { node, field, .. } if node == "pg-east" && field == "sslrootcert"),
            "{e}"
        );
        assert!(connector(
            "n",
            &TlsOptions {
                mode: SslMode::Disable,
                root_cert: None
            }
        )
        .unwrap()
        .is_none());
        assert!(connector("n", &TlsOptions::default()).unwrap().is_some());
    }
}
