//! PROXY protocol (v1 text and v2 binary, parsed by the `ppp` crate): balancers that proxy TCP
//! (AWS NLB with IP targets, HAProxy) put the client's address in a header before its first byte.
//! Only connections from the configured balancer addresses are read for one, and from them one is
//! required; from anywhere else a header is never believed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use ppp::{v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a trusted balancer has to send the header after connecting.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The first bytes of each header version.
const V2_SIGNATURE: &[u8] = v2::PROTOCOL_PREFIX;
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Address block plus TLVs accepted in a v2 header; AWS and HAProxy send far less.
const V2_MAX_PAYLOAD: usize = 4096;

/// Is a command line a PROXY v1 header (which an untrusted source must not send)? A v2 header
/// needs no check: its signature reads as blank lines and `QUIT`, so the session ends at once.
pub fn looks_like_header(line: &[u8]) -> bool {
    line.starts_with(V1_PREFIX)
}

/// The balancer addresses PROXY headers are read from; empty: the protocol is off.
pub fn trusted(sources: &[IpNet], from: IpAddr) -> bool {
    let from = from.to_canonical();
    sources.iter().any(|net| net.contains(&from))
}

/// The client's address for a connection that came from `from`: the header's source when `from`
/// is a trusted balancer (an error if the header is missing or invalid: such a connection must be
/// dropped), otherwise `from` itself, with nothing read from the stream.
pub async fn client_address(
    stream: &mut TcpStream,
    from: SocketAddr,
    sources: &[IpNet],
) -> io::Result<SocketAddr> {
    if !trusted(sources, from.ip()) {
        return Ok(from);
    }
    tokio::time::timeout(HEADER_TIMEOUT, read_header(stream, from))
        .await
        .map_err(|_| invalid("no PROXY header within 10 s"))?
}

/// Reads exactly one header (and not a byte past it, so what follows is the client's own).
async fn read_header(stream: &mut TcpStream, from: SocketAddr) -> io::Result<SocketAddr> {
    let mut header = vec![0u8; V1_PREFIX.len()];
    stream.read_exact(&mut header).await?;
    if header == V1_PREFIX {
        // Text: up to the LF, one byte at a time so nothing after it is consumed.
        let mut byte = [0u8; 1];
        while header.last() != Some(&b'\n') {
            if header.len() >= V1_MAX {
                return Err(invalid("PROXY v1 header longer than 107 bytes"));
            }
            stream.read_exact(&mut byte).await?;
            header.push(byte[0]);
        }
        let parsed = v1::Header::try_from(header.as_slice())
            .map_err(|e| invalid(&format!("bad PROXY v1 header: {e}")))?;
        return Ok(match parsed.addresses {
            v1::Addresses::Tcp4(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
            v1::Addresses::Tcp6(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
            // The balancer's own connection (a health check): its address is the peer's.
            v1::Addresses::Unknown => from,
        });
    }
    if !V2_SIGNATURE.starts_with(&header) {
        return Err(invalid(
            "connection from a PROXY source without a PROXY header",
        ));
    }
    // Binary: 16 fixed bytes, the last two the length of what follows.
    header.resize(16, 0);
    stream.read_exact(&mut header[V1_PREFIX.len()..]).await?;
    let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if length > V2_MAX_PAYLOAD {
        return Err(invalid("PROXY v2 header longer than 4 KiB"));
    }
    header.resize(16 + length, 0);
    stream.read_exact(&mut header[16..]).await?;
    let parsed = v2::Header::try_from(header.as_slice())
        .map_err(|e| invalid(&format!("bad PROXY v2 header: {e}")))?;
    Ok(match (parsed.command, parsed.addresses) {
        (v2::Command::Proxy, v2::Addresses::IPv4(ip)) => {
            SocketAddr::from((ip.source_address, ip.source_port))
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(ip)) => {
            SocketAddr::from((ip.source_address, ip.source_port))
        }
        // LOCAL (health checks) and address families without an IP: the connection's own peer.
        _ => from,
    })
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Sends `bytes` then `after` over loopback and returns what `client_address` made of the
    /// connection, and the bytes left for the session.
    async fn receive(bytes: Vec<u8>, sources: &[IpNet]) -> (io::Result<SocketAddr>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(&bytes).await.unwrap();
            stream.write_all(b"USER x\r\n").await.unwrap();
            stream.shutdown().await.unwrap();
        });
        let (mut stream, from) = listener.accept().await.unwrap();
        let result = client_address(&mut stream, from, sources).await;
        client.await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        (result, rest)
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap()]
    }

    #[tokio::test]
    async fn v1_and_v2_give_the_client_address_and_leave_the_rest() {
        let v1 = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 21\r\n".to_vec();
        let (address, rest) = receive(v1, &loopback()).await;
        assert_eq!(address.unwrap(), "198.51.100.7:40000".parse().unwrap());
        assert_eq!(rest, b"USER x\r\n");

        let client: SocketAddr = "[2001:db8::7]:40001".parse().unwrap();
        let server: SocketAddr = "[2001:db8::1]:21".parse().unwrap();
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, server),
        )
        .write_tlv(v2::Type::NoOp, b"pad")
        .unwrap()
        .build()
        .unwrap();
        let (address, rest) = receive(v2, &loopback()).await;
        assert_eq!(address.unwrap(), client);
        assert_eq!(rest, b"USER x\r\n");
    }

    #[tokio::test]
    async fn a_trusted_source_without_a_header_is_refused() {
        let (address, _) = receive(b"USER alice\r\n".to_vec(), &loopback()).await;
        assert!(address.is_err());
        let (address, _) = receive(b"PROXY TCP4 nonsense\r\n".to_vec(), &loopback()).await;
        assert!(address.is_err());
        let (address, _) = receive(b"\r\n\r\n\0\r\nQUIT\n\x99".to_vec(), &loopback()).await;
        assert!(address.is_err());
    }

    #[tokio::test]
    async fn other_sources_are_not_read() {
        let v1 = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 21\r\n".to_vec();
        let elsewhere: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let (address, rest) = receive(v1.clone(), &elsewhere).await;
        assert_eq!(
            address.unwrap().ip(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(rest.starts_with(b"PROXY "));
        assert!(looks_like_header(&rest));
        assert!(!looks_like_header(b"USER x\r\n"));
        assert!(trusted(&loopback(), "::ffff:127.0.0.5".parse().unwrap()));
        assert!(!trusted(&[], "127.0.0.1".parse().unwrap()));
    }
}
