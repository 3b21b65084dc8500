//! The source address of a request, for per-source throttling: the TCP peer, or, when the peer is
//! a trusted proxy (AUTHD_TRUSTED_PROXIES), the address that proxy saw.
//!
//! `x-forwarded-for` is a list each proxy appends to, so only its right end is written by proxies
//! we trust; everything left of the first untrusted hop was written by the client and may name any
//! address. The source is therefore the **rightmost hop that is not a trusted proxy**, walking
//! right to left over every `x-forwarded-for` value (several headers count as one list, in order).
//! When the walk meets a hop it cannot parse, or the header is absent, the source is the nearest
//! trusted proxy's own address: never "no source", never a value the client chose. Hops may be
//! `ip`, `ip:port`, `[v6]` or `[v6]:port`.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tonic::Request;

/// The address that sent `request`; `None` only when the transport has no peer address.
pub(super) fn source_address<T>(request: &Request<T>, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    // On a dual-stack listener IPv4 peers arrive as ::ffff:a.b.c.d: compare them as IPv4.
    let peer = canonical(request.remote_addr()?.ip());
    let hops = request
        .metadata()
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.as_bytes());
    Some(walk_forwarded_for(peer, hops, trusted_proxies))
}

/// Walks the `x-forwarded-for` values from the right, starting at the peer: see the module
/// documentation. Values are split into hops as bytes, so a hop that is not text (which no
/// address is) stops the walk only where it stands, not the hops a proxy appended after it.
fn walk_forwarded_for<'a>(
    peer: IpAddr,
    values: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted_proxies: &[IpNet],
) -> IpAddr {
    let trusted = |address: &IpAddr| trusted_proxies.iter().any(|net| net.contains(address));
    let mut nearest = peer;
    if !trusted(&nearest) {
        return nearest;
    }
    for value in values.rev() {
        for hop in value.rsplit(|byte| *byte == b',') {
            let hop = std::str::from_utf8(hop).ok().and_then(parse_hop);
            match hop {
                Some(address) if trusted(&address) => nearest = address,
                Some(address) => return address,
                None => return nearest,
            }
        }
    }
    nearest
}

/// One hop: `ip`, `ip:port`, `[v6]` or `[v6]:port`, with surrounding spaces.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    if let Ok(socket) = hop.parse::<SocketAddr>() {
        return Some(canonical(socket.ip()));
    }
    let bracketed = hop.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|v6| canonical(IpAddr::V6(v6)))
}

/// An IPv4-mapped IPv6 address is the IPv4 address it maps.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    fn request(peer: &str, forwarded: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        let peer: SocketAddr = peer.parse().unwrap();
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer),
            });
        for value in forwarded {
            request
                .metadata_mut()
                .append("x-forwarded-for", value.parse().unwrap());
        }
        request
    }

    fn source(peer: &str, forwarded: &[&str], trusted: &[&str]) -> IpAddr {
        let trusted: Vec<IpNet> = trusted.iter().map(|net| net.parse().unwrap()).collect();
        source_address(&request(peer, forwarded), &trusted).unwrap()
    }

    const PROXIES: &[&str] = &["10.0.0.0/8"];

    #[test]
    fn an_untrusted_peer_is_the_source_whatever_it_forwards() {
        assert_eq!(
            source("192.0.2.1:4000", &["203.0.113.9"], PROXIES),
            ip("192.0.2.1")
        );
        assert_eq!(
            source("10.1.2.3:4000", &["203.0.113.9"], &[]),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_source_not_the_leftmost() {
        // The client wrote "198.51.100.66" itself; the proxy appended the address it saw.
        let hops = ["198.51.100.66, 203.0.113.9"];
        assert_eq!(source("10.1.2.3:4000", &hops, PROXIES), ip("203.0.113.9"));
        // Trusted hops on the right are walked past.
        let hops = ["198.51.100.66, 203.0.113.9, 10.9.9.9"];
        assert_eq!(source("10.1.2.3:4000", &hops, PROXIES), ip("203.0.113.9"));
    }

    #[test]
    fn several_headers_form_one_list_in_order() {
        let hops = ["198.51.100.66", "203.0.113.9", "10.9.9.9"];
        assert_eq!(source("10.1.2.3:4000", &hops, PROXIES), ip("203.0.113.9"));
    }

    #[test]
    fn no_header_means_the_trusted_peer_itself() {
        assert_eq!(source("10.1.2.3:4000", &[], PROXIES), ip("10.1.2.3"));
    }

    #[test]
    fn an_unparseable_hop_means_the_nearest_trusted_proxy() {
        for garbage in ["unknown", "not-an-ip", "", "_hidden", "999.1.1.1"] {
            assert_eq!(
                source("10.1.2.3:4000", &[garbage], PROXIES),
                ip("10.1.2.3"),
                "{garbage:?}"
            );
        }
        let hops = ["203.0.113.9, unknown, 10.9.9.9"];
        assert_eq!(source("10.1.2.3:4000", &hops, PROXIES), ip("10.9.9.9"));
    }

    #[test]
    fn ports_and_brackets_are_understood() {
        for (hop, expected) in [
            ("203.0.113.9:51234", "203.0.113.9"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("2001:db8::7", "2001:db8::7"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
        ] {
            assert_eq!(
                source("10.1.2.3:4000", &[hop], PROXIES),
                ip(expected),
                "{hop}"
            );
        }
    }

    #[test]
    fn a_chain_of_only_trusted_hops_ends_at_the_farthest_proxy() {
        let hops = ["10.7.7.7, 10.8.8.8"];
        assert_eq!(source("10.1.2.3:4000", &hops, PROXIES), ip("10.7.7.7"));
    }

    #[test]
    fn bytes_that_are_not_text_stop_the_walk_only_where_they_stand() {
        let mut request = request("10.1.2.3:4000", &[]);
        let value = tonic::metadata::AsciiMetadataValue::try_from(&b"\xff\xfe, 203.0.113.9"[..])
            .expect("obs-text is a valid header value");
        request.metadata_mut().insert("x-forwarded-for", value);
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(source_address(&request, &trusted), Some(ip("203.0.113.9")));
    }

    #[test]
    fn an_ipv4_proxy_seen_through_a_dual_stack_listener_is_still_trusted() {
        let hops = ["198.51.100.66, 203.0.113.9"];
        assert_eq!(
            source("[::ffff:127.0.0.1]:4000", &hops, &["127.0.0.1/32"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            source("[::ffff:192.0.2.1]:4000", &hops, &["127.0.0.1/32"]),
            ip("192.0.2.1")
        );
    }
}
