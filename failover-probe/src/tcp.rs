//! The TCP probe: the region accepts connections (and, optionally, completes
//! a TLS handshake with a certificate the probe trusts). Useful for
//! non-HTTP services and as a cheaper L4 check.

use std::time::Duration;

use async_trait::async_trait;
use failover_core::ports::Probe;
use failover_core::ProbeOutcome;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::connect::{self, Host};
use crate::tls::{TlsClient, TlsSettings};
use crate::ProbeError;

/// What a [`TcpProbe`] connects to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TcpProbeConfig {
    /// Host name or IP address. A name is resolved on every probe.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Time allowed for resolution, connect and TLS handshake together. Default 2 s.
    pub connect_timeout: Duration,
    /// Complete a TLS handshake after connecting. Default `None`.
    pub tls: Option<TlsSettings>,
}

impl TcpProbeConfig {
    /// A plain connect check of `host:port` with a 2 s timeout.
    pub fn new(host: impl Into<String>, port: u16) -> TcpProbeConfig {
        TcpProbeConfig {
            host: host.into(),
            port,
            connect_timeout: Duration::from_secs(2),
            tls: None,
        }
    }

    /// Also completes a TLS handshake with these settings.
    pub fn with_tls(mut self, tls: TlsSettings) -> TcpProbeConfig {
        self.tls = Some(tls);
        self
    }
}

/// A TCP (optionally TLS) connect probe; implements [`Probe`].
#[derive(Debug)]
pub struct TcpProbe {
    config: TcpProbeConfig,
    host: Host,
    tls: Option<TlsClient>,
}

impl TcpProbe {
    /// Validates `config` and prepares the TLS client once.
    pub fn new(config: TcpProbeConfig) -> Result<TcpProbe, ProbeError> {
        if config.host.is_empty() {
            return Err(ProbeError::InvalidSetting {
                field: "host",
                reason: "empty; give a host name or IP address".into(),
            });
        }
        if config.connect_timeout.is_zero() {
            return Err(ProbeError::InvalidSetting {
                field: "connect_timeout",
                reason: "must be above zero".into(),
            });
        }
        let tls = match &config.tls {
            Some(settings) => Some(settings.client(config.host.trim_matches(['[', ']']), false)?),
            None => None,
        };
        Ok(TcpProbe {
            host: Host::parse(&config.host),
            config,
            tls,
        })
    }

    /// The configuration this probe runs with.
    pub fn config(&self) -> &TcpProbeConfig {
        &self.config
    }
}

#[async_trait]
impl Probe for TcpProbe {
    async fn check(&self) -> ProbeOutcome {
        let start = Instant::now();
        let timer = tokio::time::sleep_until(start + self.config.connect_timeout);
        tokio::pin!(timer);
        let result = async {
            let tcp = connect::connect_tcp(&self.host, self.config.port, timer.as_mut()).await?;
            if let Some(tls) = &self.tls {
                let mut stream = connect::handshake(tls, tcp, timer.as_mut()).await?;
                // Say goodbye properly so the server logs no handshake error;
                // its outcome does not change the verdict.
                tokio::select! {
                    biased;
                    _ = stream.shutdown() => {}
                    () = timer.as_mut() => {}
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => ProbeOutcome::Ok {
                latency: start.elapsed(),
            },
            Err((failure, detail)) => {
                tracing::debug!(host = %self.config.host, port = self.config.port, %failure, %detail, "TCP probe failed");
                ProbeOutcome::Failed(failure)
            }
        }
    }
}
