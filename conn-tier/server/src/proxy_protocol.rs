//! The PROXY protocol header (v1 text, v2 binary) that a load balancer
//! sends first on each connection it opens to a node: the client's real
//! address. Behind HAProxy or an AWS NLB every client otherwise looks like
//! the balancer, and they would all share one per-IP budget: a single
//! flooding client could lock everyone out.
//!
//! A header is read only from a configured balancer (`--trusted-proxies`),
//! and one must come from it; from anyone else the first bytes are HTTP,
//! and a header there is not believed (it fails as a bad request).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature (12 bytes).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;
/// The longest v2 address block read (IPv6 addresses and some TLVs).
const V2_MAX: usize = 512;

/// An address range: `10.0.0.0/8`, `127.0.0.1` (one address), `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client may reach a dual-stack socket as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (full, rest) = ((bits / 8) as usize, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { net, bits })
    }
}

/// Reads exactly the PROXY header at the start of `stream` and returns the
/// client's address: the header's source, or `peer` itself for a header
/// that names none (v2 `LOCAL`, the balancer's own health check; v1
/// `UNKNOWN`). `Err` says why the connection is dropped.
pub async fn read_header(stream: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, String> {
    let mut buf = vec![0u8; 12];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("reading the PROXY header: {e}"))?;
    if buf.as_slice() == V2_SIGNATURE {
        let mut rest = [0u8; 4];
        stream
            .read_exact(&mut rest)
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        if len > V2_MAX {
            return Err(format!("a PROXY v2 header of {len} bytes"));
        }
        buf.extend_from_slice(&rest);
        let start = buf.len();
        buf.resize(start + len, 0);
        stream
            .read_exact(&mut buf[start..])
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        return v2_source(&buf, peer);
    }
    if !buf.starts_with(b"PROXY ") {
        return Err("a trusted proxy sent no PROXY header".into());
    }
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= V1_MAX {
            return Err("a PROXY v1 header over 107 bytes".into());
        }
        let b = stream
            .read_u8()
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        buf.push(b);
    }
    v1_source(&buf, peer)
}

fn v2_source(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, String> {
    use ppp::v2::{Addresses, Command, Header};
    let h = Header::try_from(header).map_err(|e| format!("a bad PROXY v2 header: {e}"))?;
    match (h.command, h.addresses) {
        (Command::Local, _) | (_, Addresses::Unspecified) => Ok(peer),
        (_, Addresses::IPv4(a)) => Ok(SocketAddr::new(a.source_address.into(), a.source_port)),
        (_, Addresses::IPv6(a)) => Ok(SocketAddr::new(a.source_address.into(), a.source_port)),
        (_, Addresses::Unix(_)) => Ok(peer),
    }
}

fn v1_source(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, String> {
    use ppp::v1::{Addresses, Header};
    let h = Header::try_from(header).map_err(|e| format!("a bad PROXY v1 header: {e}"))?;
    match h.addresses {
        Addresses::Unknown => Ok(peer),
        Addresses::Tcp4(a) => Ok(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Tcp6(a) => Ok(SocketAddr::new(a.source_address.into(), a.source_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_what_they_say() {
        assert!(cidr("10.0.0.0/8").contains("10.1.2.3".parse().unwrap()));
        assert!(!cidr("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(cidr("127.0.0.1").contains("127.0.0.1".parse().unwrap()));
        assert!(!cidr("127.0.0.1").contains("127.0.0.2".parse().unwrap()));
        assert!(cidr("192.168.0.0/23").contains("192.168.1.9".parse().unwrap()));
        assert!(!cidr("192.168.0.0/23").contains("192.168.2.1".parse().unwrap()));
        assert!(cidr("127.0.0.1/32").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(cidr("::1").contains("::1".parse().unwrap()));
        assert!(cidr("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    /// What `read_header` makes of `bytes` sent first on a connection, and
    /// what is left on the stream after it.
    async fn read(bytes: Vec<u8>) -> (Result<SocketAddr, String>, Vec<u8>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        });
        let (mut s, peer) = l.accept().await.unwrap();
        let got = read_header(&mut s, peer).await;
        client.await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            s.read_to_end(&mut rest),
        )
        .await;
        (got, rest)
    }

    #[tokio::test]
    async fn a_v2_header_gives_the_client_address_and_leaves_the_request() {
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "203.0.113.7:40000".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:8080".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let (got, rest) = read(header).await;
        assert_eq!(got.unwrap(), "203.0.113.7:40000".parse().unwrap());
        assert!(rest.starts_with(b"GET / HTTP/1.1"), "{rest:?}");
    }

    #[tokio::test]
    async fn a_v1_header_and_a_local_check_are_read_too() {
        let (got, rest) = read(b"PROXY TCP4 198.51.100.2 10.0.0.1 5555 8080\r\n".to_vec()).await;
        assert_eq!(got.unwrap(), "198.51.100.2:5555".parse().unwrap());
        assert!(rest.starts_with(b"GET /"));
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (got, _) = read(local).await;
        assert!(
            got.unwrap().ip().is_loopback(),
            "the balancer's own address"
        );
    }

    #[tokio::test]
    async fn no_header_or_a_bad_one_from_a_trusted_proxy_is_refused() {
        let (got, _) = read(b"GET /healthz HTTP/1.1\r\n".to_vec()).await;
        assert!(got.is_err());
        let (got, _) = read(b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n".to_vec()).await;
        assert!(got.is_err());
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'9', 200));
        let (got, _) = read(long).await;
        assert!(got.is_err());
    }
}
