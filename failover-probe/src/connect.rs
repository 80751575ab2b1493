//! Opening the probe's connection: name resolution, TCP connect and the
//! optional TLS handshake, all within the connect timeout, with every failure
//! mapped to the [`ProbeFailure`] that says why.

use std::io;
use std::net::{IpAddr, SocketAddr};

use failover_core::ProbeFailure;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::tls::TlsClient;

/// Where a probe connects: an IP address (no lookup) or a name resolved
/// afresh on every probe, so a DNS failure shows up as one.
#[derive(Clone, Debug)]
pub(crate) enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    pub(crate) fn parse(host: &str) -> Host {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.to_owned()),
        }
    }
}

/// Resolves and connects before `deadline`, trying each address in turn.
pub(crate) async fn connect_tcp(
    host: &Host,
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, (ProbeFailure, String)> {
    let addrs: Vec<SocketAddr> = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Name(name) => {
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host((name.as_str(), port)))
                .await
            {
                Err(_) => {
                    return Err((
                        ProbeFailure::ConnectTimeout,
                        format!("resolving {name} timed out"),
                    ))
                }
                Ok(Err(e)) => {
                    return Err((
                        ProbeFailure::NameResolution,
                        format!("resolving {name}: {e}"),
                    ))
                }
                Ok(Ok(addrs)) => addrs.collect(),
            }
        }
    };
    if addrs.is_empty() {
        return Err((
            ProbeFailure::NameResolution,
            "name resolved to no address".into(),
        ));
    }
    let mut last = (ProbeFailure::Io, String::new());
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err((
                    ProbeFailure::ConnectTimeout,
                    format!("connecting to {addr} timed out"),
                ))
            }
            Ok(Ok(stream)) => {
                // Small request/response exchanges: never wait for Nagle.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = (connect_failure(&e), format!("connecting to {addr}: {e}")),
        }
    }
    Err(last)
}

/// Runs the TLS handshake before `deadline`.
pub(crate) async fn handshake(
    tls: &TlsClient,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, (ProbeFailure, String)> {
    match tokio::time::timeout_at(
        deadline,
        tls.connector.connect(tls.server_name.clone(), tcp),
    )
    .await
    {
        Err(_) => Err((
            ProbeFailure::ConnectTimeout,
            "TLS handshake timed out".into(),
        )),
        Ok(Err(e)) => Err((ProbeFailure::Tls, format!("TLS handshake: {e}"))),
        Ok(Ok(stream)) => Ok(stream),
    }
}

fn connect_failure(e: &io::Error) -> ProbeFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
        io::ErrorKind::TimedOut => ProbeFailure::ConnectTimeout,
        _ => ProbeFailure::Io,
    }
}
