//! Who a client is, as limits count it: its address (IPv6 by its /64) and
//! its network (IPv4 /24, IPv6 /48), for the caps that one network, however
//! many addresses it has, must meet together.

use std::net::IpAddr;

/// A client address as limits count it: IPv4 as it is, IPv6 by its /64 (one
/// customer's network; `::1` stays itself), an IPv4-mapped IPv6 address as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The address limits count for a peer.
    pub fn of(ip: IpAddr) -> ClientAddr {
        match ip {
            IpAddr::V4(_) => ClientAddr(ip),
            IpAddr::V6(v6) if v6.is_loopback() => ClientAddr(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientAddr(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    ClientAddr(IpAddr::V6([s[0], s[1], s[2], s[3], 0, 0, 0, 0].into()))
                }
            },
        }
    }
}

/// A client's network: IPv4 /24, IPv6 /48 (`::1` stays itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network(pub IpAddr);

impl Network {
    /// The network `addr` is in.
    pub fn of(addr: ClientAddr) -> Network {
        match addr.0 {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Network(IpAddr::V4([o[0], o[1], o[2], 0].into()))
            }
            IpAddr::V6(v6) if v6.is_loopback() => Network(addr.0),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Network(IpAddr::V6([s[0], s[1], s[2], 0, 0, 0, 0, 0].into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> ClientAddr {
        ClientAddr::of(s.parse().expect("ip"))
    }

    #[test]
    fn ipv6_counts_by_its_network() {
        let a = ClientAddr::of("2001:db8:1:2::1".parse().expect("ip"));
        let b = ClientAddr::of("2001:db8:1:2:ffff::9".parse().expect("ip"));
        let c = ClientAddr::of("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ClientAddr::of("::ffff:192.0.2.1".parse().expect("ip")).0,
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn networks_are_ipv4_slash_24_and_ipv6_slash_48() {
        assert_eq!(Network::of(addr("192.0.2.77")), Network::of(addr("192.0.2.1")));
        assert_ne!(Network::of(addr("192.0.2.77")), Network::of(addr("192.0.3.77")));
        assert_eq!(Network::of(addr("2001:db8:1:2::1")), Network::of(addr("2001:db8:1:ffff::1")));
        assert_ne!(Network::of(addr("2001:db8:1::1")), Network::of(addr("2001:db8:2::1")));
    }
}
