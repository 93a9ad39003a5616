//! Who a call comes from: the client address, told apart from the proxies in
//! between, so that limits per address count clients and not load balancers.
//!
//! A server believes `x-forwarded-for` only from the peers it trusts (its own
//! proxies: the gateway, a load balancer), and then only as far as the header
//! was written by trusted hops: it walks the list from the right, where each
//! proxy appends the address it saw, skipping trusted addresses, and takes the
//! first one it does not trust. Everything left of that was written by the
//! client, who can write anything. An untrusted peer's header is ignored, and
//! the peer itself is the client.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use http::HeaderMap;
use ipnet::{IpNet, Ipv6Net};

/// The header proxies append the address they saw to (de facto standard).
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Addresses and networks whose `x-forwarded-for` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedNetworks(Vec<IpNet>);

impl TrustedNetworks {
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        Self(networks.into_iter().collect())
    }

    /// Loopback only (`127.0.0.0/8,::1`): a proxy on the same host.
    pub fn loopback() -> Self {
        "127.0.0.0/8,::1".parse().expect("loopback networks parse")
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client of a call that came from `peer` with `headers`. `None` as the
    /// peer is a call made within this process (service_kit::hop), whose header
    /// a proxy of this process wrote, so it is believed. `None` as the answer:
    /// such a call said nothing about its client.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(|peer| peer.to_canonical());
        if let Some(peer) = peer
            && !self.contains(peer)
        {
            return Some(peer);
        }
        // Every value, in order, as if joined by commas (RFC 9110 5.3).
        let hops: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .collect();
        let mut nearest = peer;
        for hop in hops.iter().rev() {
            let Some(address) = parse_hop(hop) else {
                // Written by a trusted proxy that should not have; nothing left
                // of it can be believed.
                return nearest;
            };
            if !self.contains(address) {
                return Some(address);
            }
            nearest = Some(address);
        }
        nearest
    }
}

/// A comma-separated list of addresses and networks, such as
/// `10.0.0.0/8,192.168.1.7,::1`; empty for none.
impl FromStr for TrustedNetworks {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(parse_network)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

impl fmt::Display for TrustedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// An address (`192.168.1.7`, one host) or a network in CIDR form (`10.0.0.0/8`).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(address.to_canonical()));
    }
    text.parse::<IpNet>()
        .map(|network| network.trunc())
        .map_err(|_| format!("`{text}` is neither an IP address nor a network like 10.0.0.0/8"))
}

/// One entry of `x-forwarded-for`: an address, which some proxies write with a
/// port (`192.0.2.1:4711`, `[2001:db8::1]:4711`) or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Ok(socket) = hop.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let bracketed = hop.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<IpAddr>()
        .ok()
        .map(|address| address.to_canonical())
}

/// What one client is counted as: an IPv4 address, or an IPv6 /64, the block
/// one subscriber is usually given, so that hopping between its 2^64 addresses
/// gains nothing.
pub fn counted_as(address: IpAddr) -> IpNet {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => Ipv6Net::new(v6, 64)
            .expect("64 is a valid IPv6 prefix length")
            .trunc()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_address_not_trusted() {
        let trusted: TrustedNetworks = "10.0.0.0/8, 192.168.1.7".parse().unwrap();
        /// What the case is, the peer, the `x-forwarded-for` values, the client.
        type Case<'a> = (&'a str, Option<&'a str>, &'a [&'a str], Option<&'a str>);
        let cases: &[Case] = &[
            (
                "an untrusted peer, no header",
                Some("203.0.113.9"),
                &[],
                Some("203.0.113.9"),
            ),
            (
                "an untrusted peer's header is ignored",
                Some("203.0.113.9"),
                &["198.51.100.1"],
                Some("203.0.113.9"),
            ),
            (
                "a trusted peer, no header",
                Some("10.1.2.3"),
                &[],
                Some("10.1.2.3"),
            ),
            (
                "a trusted peer names the client",
                Some("10.1.2.3"),
                &["198.51.100.1"],
                Some("198.51.100.1"),
            ),
            (
                "addresses the client wrote, left of the one a proxy saw, are skipped",
                Some("10.1.2.3"),
                &["1.1.1.1, 2.2.2.2, 198.51.100.1"],
                Some("198.51.100.1"),
            ),
            (
                "trusted proxies along the way are skipped",
                Some("10.1.2.3"),
                &["6.6.6.6, 198.51.100.1, 192.168.1.7", "10.9.9.9"],
                Some("198.51.100.1"),
            ),
            (
                "every hop trusted: the leftmost",
                Some("10.1.2.3"),
                &["10.0.0.1, 10.0.0.2"],
                Some("10.0.0.1"),
            ),
            (
                "garbage from a trusted hop: the nearest hop believed",
                Some("10.1.2.3"),
                &["198.51.100.1, nonsense, 10.0.0.2"],
                Some("10.0.0.2"),
            ),
            (
                "ports and brackets are accepted",
                Some("10.1.2.3"),
                &["[2001:db8::1]:4711"],
                Some("2001:db8::1"),
            ),
            (
                "an in-process call is believed",
                None,
                &["198.51.100.1"],
                Some("198.51.100.1"),
            ),
            ("an in-process call without a header", None, &[], None),
            (
                "an IPv4-mapped peer is its IPv4 address",
                Some("::ffff:10.1.2.3"),
                &["198.51.100.1"],
                Some("198.51.100.1"),
            ),
        ];
        for (case, peer, values, expected) in cases {
            let client = trusted.client(peer.map(ip), &headers(values));
            assert_eq!(client, expected.map(ip), "{case}");
        }
    }

    #[test]
    fn networks_parse_from_addresses_and_cidrs() {
        let trusted: TrustedNetworks = "127.0.0.1, 10.1.2.3/8,::1".parse().unwrap();
        assert_eq!(trusted.to_string(), "127.0.0.1/32,10.0.0.0/8,::1/128");
        assert_eq!(
            "".parse::<TrustedNetworks>().unwrap(),
            TrustedNetworks::default()
        );
        for bad in ["10.0.0.0/33", "example.com", "10.0.0"] {
            assert!(bad.parse::<TrustedNetworks>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_block() {
        assert_eq!(
            counted_as(ip("2001:db8:1:2:aaaa::1")),
            counted_as(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            counted_as(ip("2001:db8:1:2::1")),
            counted_as(ip("2001:db8:1:3::1"))
        );
        assert_eq!(counted_as(ip("192.0.2.1")).to_string(), "192.0.2.1/32");
        assert_eq!(
            counted_as(ip("::ffff:192.0.2.1")).to_string(),
            "192.0.2.1/32"
        );
    }
}
