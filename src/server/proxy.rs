//! The PROXY protocol, version 2 (HAProxy's `send-proxy-v2`), server side.
//!
//! Behind a TCP pass-through balancer every connection's peer is the
//! balancer, so the per-address limits (requests a minute, open connections)
//! would count all clients as one. The balancer can instead open each
//! connection with a binary header naming the client's address; inkan reads
//! it before the TLS handshake (the ClientHello follows on the same stream).
//!
//! A header is read only on connections from the configured balancer
//! addresses, and there it is required: anyone else could claim any address,
//! and a balancer's connection without a header would pass its own address.
//! Only version 2 is read (binary, bounded); the version 1 text line is
//! refused, as are UDP and UNIX sockets. TLVs (CRC32C, unique ID, ALPN) are
//! skipped unread. The whole header must arrive within a deadline, so that a
//! silent connection does not hold a connection slot.
//!
//! Spec: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part: signature, version and command, family, length.
pub const FIXED: usize = 16;

/// The largest declared length (the bytes after [`FIXED`]) accepted: the
/// smallest TCP segment every host must accept, in which the spec fits the
/// whole header (so this is a little generous).
pub const MAX: usize = 536;

/// Version 2, command LOCAL: the balancer's own connection (a health check).
const LOCAL: u8 = 0x20;
/// Version 2, command PROXY: a client's connection, relayed.
const PROXY: u8 = 0x21;
/// Family and protocol unspecified: no address to use.
const UNSPEC: u8 = 0x00;
/// TCP over IPv4.
const TCP4: u8 = 0x11;
/// TCP over IPv6.
const TCP6: u8 = 0x21;
/// Source and destination addresses and ports, TCP over IPv4.
const TCP4_LEN: u16 = 12;
/// Source and destination addresses and ports, TCP over IPv6.
const TCP6_LEN: u16 = 36;

/// What the header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client's address as the balancer saw it.
    Client(SocketAddr),
    /// LOCAL command (the balancer's own health check) or UNSPEC family: use
    /// the balancer's address.
    Local,
}

/// A connection whose PROXY header is refused: close it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The buffer ends before the header: this many bytes in all are needed.
    #[error("the PROXY header is incomplete: {0} bytes are needed")]
    Incomplete(usize),
    /// The declared length is over [`MAX`].
    #[error("the PROXY header declares {0} bytes after its fixed part, more than the 536 accepted")]
    TooLong(usize),
    /// A version 1 (text) header.
    #[error("a PROXY protocol version 1 (text) header was sent; configure the balancer for version 2 (send-proxy-v2)")]
    V1,
    /// Not a PROXY header at all.
    #[error("the connection does not start with a PROXY protocol version 2 header")]
    Signature,
    /// A version other than 2.
    #[error("the PROXY header has version {0}, not 2")]
    Version(u8),
    /// A command other than LOCAL or PROXY.
    #[error("the PROXY header has the unknown command {0:#x}")]
    Command(u8),
    /// A family and protocol other than TCP over IPv4 or IPv6 (or UNSPEC).
    #[error("the PROXY header's family and protocol {0:#04x} are not supported (only TCP over IPv4 or IPv6)")]
    Unsupported(u8),
    /// The declared length is shorter than the family's addresses.
    #[error("the PROXY header declares {len} bytes, too few for the addresses of family {family:#04x}")]
    Length {
        /// The family and protocol byte.
        family: u8,
        /// The declared length.
        len: u16,
    },
    /// The peer closed the connection before the end of the header.
    #[error("the connection was closed before the end of the PROXY header")]
    Closed,
    /// The header did not arrive within the deadline.
    #[error("no complete PROXY header arrived within {0:?}")]
    Timeout(Duration),
    /// Reading failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[source] std::io::Error),
}

impl ProxyError {
    fn io(e: std::io::Error) -> ProxyError {
        if e.kind() == ErrorKind::UnexpectedEof {
            ProxyError::Closed
        } else {
            ProxyError::Io(e)
        }
    }
}

/// Reads one PROXY v2 header from `io` within `deadline`, consuming exactly
/// the header's bytes (what follows, the TLS ClientHello, stays unread).
pub async fn read_header<R: AsyncRead + Unpin>(io: &mut R, deadline: Duration) -> Result<Origin, ProxyError> {
    match tokio::time::timeout(deadline, read(io)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout(deadline)),
    }
}

/// The fixed part, then exactly the declared length.
async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<Origin, ProxyError> {
    let mut buf = [0u8; FIXED + MAX];
    io.read_exact(&mut buf[..FIXED]).await.map_err(ProxyError::io)?;
    // The fixed part alone is checked (and a length over MAX refused) before
    // anything more is read.
    let total = match parse(&buf[..FIXED]) {
        Ok((origin, _)) => return Ok(origin),
        Err(ProxyError::Incomplete(total)) => total,
        Err(e) => return Err(e),
    };
    let rest = buf.get_mut(FIXED..total).ok_or(ProxyError::TooLong(total.saturating_sub(FIXED)))?;
    io.read_exact(rest).await.map_err(ProxyError::io)?;
    match parse(&buf[..total]) {
        Ok((origin, _)) => Ok(origin),
        // Not reached: `total` bytes are the whole header.
        Err(ProxyError::Incomplete(_)) => Err(ProxyError::Closed),
        Err(e) => Err(e),
    }
}

/// Whether `buf` agrees with `pattern` as far as either goes.
fn agrees(buf: &[u8], pattern: &[u8]) -> bool {
    let n = buf.len().min(pattern.len());
    buf[..n] == pattern[..n]
}

/// Parses a header at the start of `buf` (bytes after it are ignored): the
/// origin and the header's length. A refusal is given as soon as the bytes
/// present show it; otherwise a `buf` too short gives
/// [`ProxyError::Incomplete`] with the length needed (at most
/// [`FIXED`] + [`MAX`]).
pub fn parse(buf: &[u8]) -> Result<(Origin, usize), ProxyError> {
    if !agrees(buf, &SIGNATURE) {
        return Err(if agrees(buf, b"PROXY ") { ProxyError::V1 } else { ProxyError::Signature });
    }
    let Some(&[_, _, _, _, _, _, _, _, _, _, _, _, ver_cmd, family, len_hi, len_lo]) = buf.get(..FIXED) else {
        return Err(ProxyError::Incomplete(FIXED));
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Version(ver_cmd >> 4));
    }
    if ver_cmd != LOCAL && ver_cmd != PROXY {
        return Err(ProxyError::Command(ver_cmd & 0x0f));
    }
    let len = u16::from_be_bytes([len_hi, len_lo]);
    if usize::from(len) > MAX {
        return Err(ProxyError::TooLong(usize::from(len)));
    }
    let total = FIXED + usize::from(len);
    // LOCAL: the family and addresses are ignored (the spec says so), and
    // only skipped.
    let needs = match (ver_cmd, family) {
        (LOCAL, _) | (_, UNSPEC) => 0,
        (_, TCP4) => TCP4_LEN,
        (_, TCP6) => TCP6_LEN,
        (_, other) => return Err(ProxyError::Unsupported(other)),
    };
    if len < needs {
        return Err(ProxyError::Length { family, len });
    }
    let Some(block) = buf.get(FIXED..total) else {
        return Err(ProxyError::Incomplete(total));
    };
    let client = match needs {
        0 => return Ok((Origin::Local, total)),
        TCP4_LEN => source(block, false),
        _ => source(block, true),
    };
    // `None` is not reached: the length was checked against the family.
    client.map(|client| (Origin::Client(client), total)).ok_or(ProxyError::Length { family, len })
}

/// The source address and port of a TCP4 or TCP6 address block; an
/// IPv4-mapped IPv6 address is given as IPv4.
fn source(block: &[u8], tcp6: bool) -> Option<SocketAddr> {
    let (ip, port_at) = if tcp6 {
        let ip: [u8; 16] = block.get(..16)?.try_into().ok()?;
        (IpAddr::from(ip).to_canonical(), 32)
    } else {
        let ip: [u8; 4] = block.get(..4)?.try_into().ok()?;
        (IpAddr::from(ip), 8)
    };
    let port: [u8; 2] = block.get(port_at..port_at + 2)?.try_into().ok()?;
    Some(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// A v2 PROXY header for `client` → `server` (TCP4 if both are IPv4, else
/// TCP6 with IPv4 addresses mapped), no TLVs: what a balancer sends.
pub fn encode(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED + usize::from(TCP6_LEN));
    out.extend_from_slice(&SIGNATURE);
    out.push(PROXY);
    match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            out.push(TCP4);
            out.extend_from_slice(&TCP4_LEN.to_be_bytes());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&s.octets());
        }
        (c, s) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(TCP6);
            out.extend_from_slice(&TCP6_LEN.to_be_bytes());
            out.extend_from_slice(&v6(c).octets());
            out.extend_from_slice(&v6(s).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&server.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What HAProxy 2.6 sent (`send-proxy-v2`) for 127.0.0.1:37594 → 127.0.0.1:18080, then "hello".
    const HAPROXY_TCP4: &str = "0d0a0d0a000d0a515549540a2111000c7f0000017f00000192da46a068656c6c6f";
    /// Its health check: LOCAL, UNSPEC, no addresses.
    const HAPROXY_CHECK: &str = "0d0a0d0a000d0a515549540a20000000";
    /// With `proxy-v2-options crc32c,unique-id`: [::1]:54382 → [::1]:18081 with
    /// a CRC32C and a unique ID TLV, then "hello".
    const HAPROXY_TCP6_TLVS: &str = "0d0a0d0a000d0a515549540a21210034000000000000000000000000000000010000000000000000\
                                     0000000000000001d46e46a10300043ef05c5605000661626331323368656c6c6f";
    /// Its health check: LOCAL with a CRC32C TLV.
    const HAPROXY_CHECK_TLV: &str = "0d0a0d0a000d0a515549540a20000007030004a9b87e8f";

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    /// The fixed part with these bytes, no address block.
    fn fixed(ver_cmd: u8, family: u8, len: u16) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[ver_cmd, family]);
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn haproxy_headers_are_read() {
        let cases = [
            (HAPROXY_TCP4, Origin::Client(addr("127.0.0.1:37594")), 28),
            (HAPROXY_CHECK, Origin::Local, 16),
            (HAPROXY_TCP6_TLVS, Origin::Client(addr("[::1]:54382")), 68),
            (HAPROXY_CHECK_TLV, Origin::Local, 23),
        ];
        for (bytes, origin, len) in cases {
            assert_eq!(parse(&hex(bytes)).expect(bytes), (origin, len), "{bytes}");
        }
    }

    #[test]
    fn encode_round_trips() {
        for (client, server, len) in
            [("192.0.2.1:50000", "198.51.100.2:443", 28), ("[2001:db8::1]:50000", "[2001:db8::2]:443", 52)]
        {
            let h = encode(addr(client), addr(server));
            assert_eq!(h.len(), len);
            assert_eq!(parse(&h).expect(client), (Origin::Client(addr(client)), len));
        }
    }

    #[test]
    fn ipv4_in_a_tcp6_header_is_given_as_ipv4() {
        let h = encode(addr("192.0.2.1:5000"), addr("[2001:db8::2]:443"));
        assert_eq!((h[13], h.len()), (TCP6, 52));
        assert_eq!(parse(&h).expect("mixed"), (Origin::Client(addr("192.0.2.1:5000")), 52));
        let h = encode(addr("[::ffff:192.0.2.1]:5000"), addr("[2001:db8::2]:443"));
        assert_eq!(parse(&h).expect("mapped"), (Origin::Client(addr("192.0.2.1:5000")), 52));
    }

    #[test]
    fn local_and_unspec_use_the_balancer_address() {
        assert_eq!(parse(&fixed(LOCAL, UNSPEC, 0)).expect("local"), (Origin::Local, 16));
        // LOCAL: the family is ignored, its addresses skipped.
        let mut h = fixed(LOCAL, 0x31, 216);
        h.resize(16 + 216, 0);
        assert_eq!(parse(&h).expect("local unix"), (Origin::Local, 232));
        let mut h = fixed(PROXY, UNSPEC, 4);
        h.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(parse(&h).expect("unspec"), (Origin::Local, 20));
    }

    #[test]
    fn tlvs_are_skipped() {
        let mut h = encode(addr("192.0.2.1:50000"), addr("198.51.100.2:443"));
        // NOOP with one byte, AUTHORITY "a.test".
        let tlvs = [0x04, 0, 1, 0, 0x02, 0, 6, b'a', b'.', b't', b'e', b's', b't'];
        h[14..16].copy_from_slice(&(12 + tlvs.len() as u16).to_be_bytes());
        h.extend_from_slice(&tlvs);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse(&h).expect("tlvs"), (Origin::Client(addr("192.0.2.1:50000")), len));
    }

    #[test]
    fn a_short_buffer_is_incomplete() {
        for bytes in [HAPROXY_TCP4, HAPROXY_CHECK, HAPROXY_TCP6_TLVS, HAPROXY_CHECK_TLV] {
            let h = hex(bytes);
            let (_, total) = parse(&h).expect(bytes);
            for n in 0..total {
                match parse(&h[..n]) {
                    Err(ProxyError::Incomplete(need)) => assert_eq!(need, if n < FIXED { FIXED } else { total }),
                    other => panic!("{bytes} cut at {n}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn too_long_is_refused_from_the_fixed_part() {
        assert!(matches!(parse(&fixed(PROXY, TCP4, 537)), Err(ProxyError::TooLong(537))));
        assert!(matches!(parse(&fixed(LOCAL, UNSPEC, u16::MAX)), Err(ProxyError::TooLong(65535))));
        let mut h = encode(addr("192.0.2.1:50000"), addr("198.51.100.2:443"));
        h[14..16].copy_from_slice(&536u16.to_be_bytes());
        h.resize(FIXED + MAX, 0);
        assert_eq!(parse(&h).expect("536"), (Origin::Client(addr("192.0.2.1:50000")), FIXED + MAX));
        let origin = run(read_header(&mut &h[..], Duration::from_secs(5))).expect("536");
        assert_eq!(origin, Origin::Client(addr("192.0.2.1:50000")));
    }

    #[test]
    fn other_protocols_and_bad_headers_are_refused() {
        // A TLS ClientHello, HTTP, without a header.
        let others: [&[u8]; 3] = [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"\x16", b"GET / HTTP/1.1\r\n"];
        for bytes in others {
            assert!(matches!(parse(bytes), Err(ProxyError::Signature)), "{bytes:?}");
        }
        let v1s: [&[u8]; 3] = [b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n", b"PROXY UNKNOWN\r\n", b"PROXY "];
        for v1 in v1s {
            assert!(matches!(parse(v1), Err(ProxyError::V1)), "{v1:?}");
        }
        assert!(matches!(parse(&fixed(0x11, TCP4, 12)), Err(ProxyError::Version(1))));
        assert!(matches!(parse(&fixed(0x22, TCP4, 12)), Err(ProxyError::Command(2))));
        for family in [0x12, 0x22, 0x31, 0x32, 0x10, 0x13, 0x41] {
            assert!(matches!(parse(&fixed(PROXY, family, 216)), Err(ProxyError::Unsupported(f)) if f == family));
        }
        assert!(matches!(parse(&fixed(PROXY, TCP6, 12)), Err(ProxyError::Length { family: TCP6, len: 12 })));
        assert!(matches!(parse(&fixed(PROXY, TCP4, 0)), Err(ProxyError::Length { family: TCP4, len: 0 })));
    }

    #[test]
    fn no_mutation_panics_or_claims_more_than_it_has() {
        for bytes in [HAPROXY_TCP4, HAPROXY_CHECK, HAPROXY_TCP6_TLVS, HAPROXY_CHECK_TLV] {
            let h = hex(bytes);
            for i in 0..h.len() {
                for v in [0x00, 0x01, 0x11, 0x20, 0x21, 0x31, 0x80, 0xff] {
                    let mut m = h.clone();
                    m[i] = v;
                    match parse(&m) {
                        Ok((_, n)) => assert!(n <= m.len() && n <= FIXED + MAX),
                        Err(ProxyError::Incomplete(n)) => assert!(n > m.len() && n <= FIXED + MAX),
                        Err(_) => {}
                    }
                }
            }
        }
    }

    #[test]
    fn read_header_consumes_exactly_the_header() {
        let bytes = hex(HAPROXY_TCP6_TLVS);
        let mut r: &[u8] = &bytes;
        let origin = run(read_header(&mut r, Duration::from_secs(5))).expect("header");
        assert_eq!(origin, Origin::Client(addr("[::1]:54382")));
        assert_eq!(r, &b"hello"[..]);

        let (mut rx, mut tx) = tokio::io::duplex(1024);
        let (origin, rest) = run(async move {
            tx.write_all(&hex(HAPROXY_TCP4)).await.expect("write");
            drop(tx);
            let origin = read_header(&mut rx, Duration::from_secs(5)).await.expect("header");
            let mut rest = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut rest).await.expect("rest");
            (origin, rest)
        });
        assert_eq!(origin, Origin::Client(addr("127.0.0.1:37594")));
        assert_eq!(rest, b"hello");
    }

    #[test]
    fn read_header_refuses_without_waiting_for_more() {
        let (mut rx, mut tx) = tokio::io::duplex(1024);
        let result = run(async {
            tx.write_all(&fixed(PROXY, TCP4, 600)).await.expect("write");
            read_header(&mut rx, Duration::from_secs(5)).await
        });
        assert!(matches!(result, Err(ProxyError::TooLong(600))), "{result:?}");
        let v1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n";
        assert!(matches!(run(read_header(&mut &v1[..], Duration::from_secs(5))), Err(ProxyError::V1)));
        drop(tx);
    }

    #[test]
    fn a_silent_or_short_connection_is_refused() {
        let (mut rx, tx) = tokio::io::duplex(64);
        let result = run(read_header(&mut rx, Duration::from_millis(50)));
        assert!(matches!(result, Err(ProxyError::Timeout(_))), "{result:?}");
        drop(tx);

        let (mut rx, mut tx) = tokio::io::duplex(64);
        let result = run(async {
            tx.write_all(&hex(HAPROXY_TCP4)[..20]).await.expect("write");
            read_header(&mut rx, Duration::from_millis(50)).await
        });
        assert!(matches!(result, Err(ProxyError::Timeout(_))), "{result:?}");
        drop(tx);

        let bytes = hex(HAPROXY_TCP4);
        let result = run(read_header(&mut &bytes[..20], Duration::from_secs(5)));
        assert!(matches!(result, Err(ProxyError::Closed)), "{result:?}");
    }

    #[test]
    fn messages_name_the_problem() {
        assert!(ProxyError::V1.to_string().contains("send-proxy-v2"));
        assert!(ProxyError::Unsupported(0x31).to_string().contains("0x31"));
        let length = ProxyError::Length { family: TCP6, len: 12 }.to_string();
        assert!(length.contains("12 bytes") && length.contains("0x21"), "{length}");
    }
}
