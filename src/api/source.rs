//! The source address of a request, for per-source login throttling: the TCP peer, or the first
//! `x-forwarded-for` hop when the peer is a trusted proxy (AUTHD_TRUSTED_PROXIES). Never trust
//! the header from anyone else: a client could name any address it likes.

use std::net::IpAddr;

use ipnet::IpNet;
use tonic::Request;

/// The address that sent `request`.
pub(super) fn source_address<T>(request: &Request<T>, trusted_proxies: &[IpNet]) -> Option<IpAddr> {
    let peer = request.remote_addr()?.ip();
    if !trusted_proxies.iter().any(|net| net.contains(&peer)) {
        return Some(peer);
    }
    let forwarded = request.metadata().get("x-forwarded-for")?.to_str().ok();
    forwarded
        .and_then(|header| header.split(',').next())
        .and_then(|hop| hop.trim().parse().ok())
        .or(Some(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        let peer: std::net::SocketAddr = peer.parse().unwrap();
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer),
            });
        if let Some(forwarded) = forwarded {
            request
                .metadata_mut()
                .insert("x-forwarded-for", forwarded.parse().unwrap());
        }
        request
    }

    #[test]
    fn the_peer_is_the_source_unless_it_is_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let direct = request("192.0.2.1:4000", Some("203.0.113.9"));
        assert_eq!(
            source_address(&direct, &trusted),
            Some("192.0.2.1".parse().unwrap())
        );
        let proxied = request("10.1.2.3:4000", Some("203.0.113.9, 10.1.2.3"));
        assert_eq!(
            source_address(&proxied, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        let garbage = request("10.1.2.3:4000", Some("not-an-ip"));
        assert_eq!(
            source_address(&garbage, &trusted),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            source_address(&proxied, &[]),
            Some("10.1.2.3".parse().unwrap())
        );
    }
}
