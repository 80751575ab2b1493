//! One DNS exchange with a server: UDP with a deadline, falling back to TCP
//! when the reply is truncated. Written directly on tokio sockets (rather
//! than hickory-net's client streams) so that every failure keeps its
//! meaning: no reply → timeout, an unsigned BADSIG reply → authentication
//! failure, garbage → malformed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::DnsError;

/// Largest reply we accept over UDP (EDNS-sized).
const UDP_BUFFER: usize = 4096;

/// Sends `request` (already encoded, id `id`) and returns the raw reply bytes.
///
/// The UDP socket is deliberately not connected: an ICMP "port unreachable"
/// from a stopped server is then ignored and the exchange ends as a
/// [`DnsError::Timeout`], which the runtime retries, instead of an error that
/// depends on the network path.
pub(crate) async fn exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    timeout: Duration,
    what: &'static str,
) -> Result<Vec<u8>, DnsError> {
    let deadline = Instant::now() + timeout;
    let io = |source| DnsError::Io {
        server,
        what,
        source,
    };
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.send_to(request, server).await.map_err(io)?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let (len, from) = match received {
            Err(_) => {
                return Err(DnsError::Timeout {
                    server,
                    what,
                    after: timeout,
                })
            }
            Ok(Err(source)) => return Err(io(source)),
            Ok(Ok(got)) => got,
        };
        let reply = buf.get(..len).unwrap_or(&[]);
        // Only the server's reply to this id counts; anything else is noise
        // or spoofing and must not end the wait.
        if from != server || reply.len() < 12 || !has_id(reply, id) {
            tracing::debug!(%from, len, "ignoring unrelated datagram");
            continue;
        }
        // The TC bit: byte 2 of the header.
        let truncated = reply.get(2).is_some_and(|flags| flags & 0x02 != 0);
        if !truncated {
            return Ok(reply.to_vec());
        }
        tracing::debug!(%server, what, "reply truncated, retrying over TCP");
        return exchange_tcp(server, request, id, deadline, timeout, what).await;
    }
}

async fn exchange_tcp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    deadline: Instant,
    timeout: Duration,
    what: &'static str,
) -> Result<Vec<u8>, DnsError> {
    let io = |source| DnsError::Io {
        server,
        what,
        source,
    };
    let work = async {
        let mut stream = TcpStream::connect(server).await.map_err(io)?;
        let len = u16::try_from(request.len()).map_err(|_| DnsError::Encode {
            what,
            reason: format!("{} bytes do not fit a TCP DNS message", request.len()),
        })?;
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(request);
        stream.write_all(&framed).await.map_err(io)?;
        let reply_len = stream.read_u16().await.map_err(io)?;
        let mut reply = vec![0u8; usize::from(reply_len)];
        stream.read_exact(&mut reply).await.map_err(io)?;
        if reply.len() < 12 || !has_id(&reply, id) {
            return Err(DnsError::Malformed {
                server,
                what,
                reason: "TCP reply does not match the request id".to_owned(),
            });
        }
        Ok(reply)
    };
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or(Err(DnsError::Timeout {
            server,
            what,
            after: timeout,
        }))
}

/// Whether a message starts with this id.
fn has_id(message: &[u8], id: u16) -> bool {
    message.first_chunk::<2>() == Some(&id.to_be_bytes())
}

/// Decodes a reply, mapping garbage to [`DnsError::Malformed`].
pub(crate) fn decode(
    server: SocketAddr,
    what: &'static str,
    bytes: &[u8],
) -> Result<Message, DnsError> {
    Message::from_vec(bytes).map_err(|e| DnsError::Malformed {
        server,
        what,
        reason: e.to_string(),
    })
}
