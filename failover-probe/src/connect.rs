//! Opening the probe's connection: name resolution, TCP connect and the
//! optional TLS handshake, all within the connect timeout, with every failure
//! mapped to the [`ProbeFailure`] that says why.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use failover_core::ProbeFailure;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::client::TlsStream;

use crate::tls::TlsClient;

/// Why a probe failed, and the detail for the log.
pub(crate) type Failure = (ProbeFailure, String);

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

/// Resolves and connects before `timer` (armed for the connect deadline)
/// fires, trying each address in turn.
///
/// The caller owns the timer so that one timer entry serves the whole probe
/// (connect, then response): arming and disarming a tokio timer costs more
/// per probe than anything else here on loopback.
pub(crate) async fn connect_tcp(
    host: &Host,
    port: u16,
    mut timer: Pin<&mut Sleep>,
) -> Result<TcpStream, Failure> {
    let name = match host {
        // An IP literal: no lookup, no address list.
        Host::Ip(ip) => return connect_addr(SocketAddr::new(*ip, port), timer).await,
        Host::Name(name) => name,
    };
    let addrs = tokio::select! {
        biased;
        resolved = tokio::net::lookup_host((name.as_str(), port)) => match resolved {
            Ok(addrs) => addrs,
            Err(e) => {
                return Err((
                    ProbeFailure::NameResolution,
                    format!("resolving {name}: {e}"),
                ))
            }
        },
        () = &mut timer => {
            return Err((
                ProbeFailure::ConnectTimeout,
                format!("resolving {name} timed out"),
            ))
        }
    };
    let mut last = None;
    for addr in addrs {
        match connect_addr(addr, timer.as_mut()).await {
            Ok(stream) => return Ok(stream),
            Err(timeout @ (ProbeFailure::ConnectTimeout, _)) => return Err(timeout),
            Err(failure) => last = Some(failure),
        }
    }
    Err(last.unwrap_or_else(|| {
        (
            ProbeFailure::NameResolution,
            "name resolved to no address".into(),
        )
    }))
}

/// Connects to one address before `timer` fires.
async fn connect_addr(addr: SocketAddr, timer: Pin<&mut Sleep>) -> Result<TcpStream, Failure> {
    tokio::select! {
        biased;
        connected = TcpStream::connect(addr) => match connected {
            Ok(stream) => {
                // Small request/response exchanges: never wait for Nagle.
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Err(e) => Err((connect_failure(&e), format!("connecting to {addr}: {e}"))),
        },
        () = timer => Err((
            ProbeFailure::ConnectTimeout,
            format!("connecting to {addr} timed out"),
        )),
    }
}

/// Runs the TLS handshake before `timer` fires.
pub(crate) async fn handshake(
    tls: &TlsClient,
    tcp: TcpStream,
    timer: Pin<&mut Sleep>,
) -> Result<TlsStream<TcpStream>, Failure> {
    tokio::select! {
        biased;
        done = tls.connector.connect(tls.server_name.clone(), tcp) => match done {
            Ok(stream) => Ok(stream),
            Err(e) => Err((ProbeFailure::Tls, format!("TLS handshake: {e}"))),
        },
        () = timer => Err((
            ProbeFailure::ConnectTimeout,
            "TLS handshake timed out".into(),
        )),
    }
}

fn connect_failure(e: &io::Error) -> ProbeFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
        io::ErrorKind::TimedOut => ProbeFailure::ConnectTimeout,
        _ => ProbeFailure::Io,
    }
}
