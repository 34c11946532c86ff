//! Client addresses: the peer address as each host reports it, and
//! `X-Forwarded-For` read only as far as configured proxies are trusted.

use crate::request::RequestView;
use crate::text::{decimal, Spell};
use std::net::{IpAddr, SocketAddr};

/// Parses a peer address as a host reports it: `"1.2.3.4:5678"` or
/// `"[::1]:5678"` (Envoy), `"1.2.3.4"` or `"::1"` (nginx).
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    // "[::1]" without a port.
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<IpAddr>().ok()
}

/// Where a client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpSource {
    /// The TCP peer (trusted_hops is 0).
    Peer,
    /// The `X-Forwarded-For` entry written by the outermost trusted proxy.
    ForwardedFor,
    /// trusted_hops > 0 but `X-Forwarded-For` was missing, too short or held
    /// something that is not an address there: the peer was used instead.
    PeerFallback,
}

/// The client address for keying.
///
/// With `trusted_hops = 0` it is the peer: `X-Forwarded-For` is ignored, so a
/// client cannot choose its key. With `trusted_hops = n` the `n` proxies
/// nearest us each appended the address they saw, so the entry `n` from the
/// right is the one the outermost trusted proxy saw; anything further left was
/// written by the client and is ignored. Repeated `X-Forwarded-For` headers
/// are joined in order, as RFC 9110 allows. When the list is too short or the
/// entry is not an address, the peer is used (every such request then shares
/// the nearest proxy's budget: stricter, never looser).
pub fn client_ip(req: &RequestView, trusted_hops: u32) -> (Option<IpAddr>, ClientIpSource) {
    let peer = req.peer().and_then(parse_addr);
    if trusted_hops == 0 {
        return (peer, ClientIpSource::Peer);
    }
    let n = trusted_hops as usize;
    let mut entries: Vec<&str> = Vec::new();
    for value in req.header_values("x-forwarded-for") {
        entries.extend(value.split(',').map(str::trim).filter(|e| !e.is_empty()));
    }
    let chosen = entries.len().checked_sub(n).and_then(|i| entries.get(i)).and_then(|e| parse_addr(e));
    match chosen {
        Some(ip) => (Some(ip), ClientIpSource::ForwardedFor),
        None => (peer, ClientIpSource::PeerFallback),
    }
}

/// Appends `ip` as [`std::fmt::Display`] spells it; IPv4 (every request's
/// case) without the formatting machinery.
pub fn push_ip(out: &mut impl Spell, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = [0u8; 20];
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push_str(".");
                }
                out.push_str(decimal(u64::from(octet), &mut digits));
            }
        }
        IpAddr::V6(v6) => out.push_str(&v6.to_string()),
    }
}

/// The key of a client address: the address itself when the prefix is the
/// full length, else its network (`2001:db8:1:2::/64`), so that a client
/// rotating addresses inside its network keeps one key.
pub fn network_key(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> String {
    let mut out = String::with_capacity(24);
    push_network_key(&mut out, ip, ipv4_prefix, ipv6_prefix);
    out
}

/// Appends [`network_key`] to `out`.
pub fn push_network_key(out: &mut impl Spell, ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) {
    // An IPv4 client reaching a dual-stack listener as ::ffff:a.b.c.d is an
    // IPv4 client (its top 64 bits are zero: as IPv6, every such client would
    // share one /64).
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let mut digits = [0u8; 20];
    match ip {
        IpAddr::V4(v4) if ipv4_prefix < 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(ipv4_prefix)).unwrap_or(0);
            push_ip(out, IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) & mask)));
            out.push_str("/");
            out.push_str(decimal(u64::from(ipv4_prefix), &mut digits));
        }
        IpAddr::V6(v6) if ipv6_prefix < 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(ipv6_prefix)).unwrap_or(0);
            push_ip(out, IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask)));
            out.push_str("/");
            out.push_str(decimal(u64::from(ipv6_prefix), &mut digits));
        }
        other => push_ip(out, other),
    }
}

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare
/// address for a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text.trim(), None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { net, prefix })
    }

    /// Does the range hold `ip`? (IPv4 ranges never hold IPv6 addresses.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = |bits: u32, prefix: u8| if prefix == 0 { 0 } else { u128::MAX << (bits - u32::from(prefix)) };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let m = mask(32, self.prefix) as u32;
                u32::from(n) & m == u32::from(i) & m
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let m = mask(128, self.prefix);
                u128::from(n) & m == u128::from(i) & m
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod network_key_tests {
    use super::network_key;

    #[test]
    fn clients_are_keyed_by_their_network() {
        let key = |s: &str| network_key(s.parse().unwrap(), 32, 64);
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64", "one /64, one key");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7", "IPv4-mapped is IPv4");
        assert_eq!(network_key("192.0.2.7".parse().unwrap(), 24, 64), "192.0.2.0/24");
        assert_eq!(network_key("2001:db8::1".parse().unwrap(), 32, 128), "2001:db8::1");
    }

    #[test]
    fn numbers_and_addresses_are_spelled_as_display_spells_them() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 99, 255, 1000, 65_535, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(crate::text::decimal(n, &mut buf), n.to_string());
        }
        for ip in ["0.0.0.0", "10.0.0.1", "192.168.100.255", "255.255.255.255", "2001:db8::1", "::1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            super::push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cidr_ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.200.1.2".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nonsense"), None);
    }

    use super::*;

    fn req(xff: &[&str], peer: &str) -> RequestView {
        let headers = xff.iter().map(|v| ("X-Forwarded-For".to_string(), v.to_string())).collect();
        RequestView::new(headers, Some(peer.to_string()))
    }

    #[test]
    fn peer_forms_of_both_hosts() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(parse_addr("10.1.2.3:4567"), Some(v4));
        assert_eq!(parse_addr("10.1.2.3"), Some(v4));
        assert_eq!(parse_addr("[::1]:80"), Some(v6));
        assert_eq!(parse_addr("::1"), Some(v6));
        assert_eq!(parse_addr("[::1]"), Some(v6));
        assert_eq!(parse_addr("nonsense"), None);
        assert_eq!(parse_addr(""), None);
    }

    #[test]
    fn zero_hops_ignores_forwarded_for() {
        let (ip, src) = client_ip(&req(&["6.6.6.6"], "10.0.0.1:1234"), 0);
        assert_eq!(ip, "10.0.0.1".parse().ok());
        assert_eq!(src, ClientIpSource::Peer);
    }

    #[test]
    fn one_hop_takes_rightmost_and_ignores_spoofed_prefix() {
        // The client sent "6.6.6.6"; our trusted proxy appended what it saw.
        let (ip, src) = client_ip(&req(&["6.6.6.6, 203.0.113.7"], "10.0.0.1:1234"), 1);
        assert_eq!(ip, "203.0.113.7".parse().ok());
        assert_eq!(src, ClientIpSource::ForwardedFor);
    }

    #[test]
    fn two_hops_and_repeated_headers() {
        let r = req(&["6.6.6.6, 203.0.113.7", "10.9.9.9"], "10.0.0.1:1234");
        assert_eq!(client_ip(&r, 2).0, "203.0.113.7".parse().ok());
    }

    #[test]
    fn short_or_garbage_list_falls_back_to_peer() {
        let (ip, src) = client_ip(&req(&[], "10.0.0.1:1"), 1);
        assert_eq!((ip, src), ("10.0.0.1".parse().ok(), ClientIpSource::PeerFallback));
        let (ip, src) = client_ip(&req(&["1.1.1.1"], "10.0.0.1:1"), 2);
        assert_eq!((ip, src), ("10.0.0.1".parse().ok(), ClientIpSource::PeerFallback));
        let (ip, src) = client_ip(&req(&["1.1.1.1, not-an-ip"], "10.0.0.1:1"), 1);
        assert_eq!((ip, src), ("10.0.0.1".parse().ok(), ClientIpSource::PeerFallback));
    }

    #[test]
    fn forwarded_entry_with_port_is_accepted() {
        let (ip, _) = client_ip(&req(&["203.0.113.7:5555"], "10.0.0.1:1"), 1);
        assert_eq!(ip, "203.0.113.7".parse().ok());
    }
}
