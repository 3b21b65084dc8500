//! Value parsers for the flags whose type clap does not know: durations with a range, IP
//! networks, listen addresses that can be `off`, header-name prefixes, the public URL (by the
//! `url` crate) and the back-end URLs (parsed by sqlx and the redis crate, never by hand).

use std::{net::SocketAddr, time::Duration};

use crate::store::{DatabaseLocation, RedisTopology};

/// `AUTHD_DATABASE_URL`: a location parsed by sqlx, or none (empty: the embedded default). The
/// error never repeats the URL (it may carry a password).
pub fn database_url(value: &str) -> Result<Option<DatabaseLocation>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value.parse().map(Some)
}

/// `AUTHD_REDIS_URL`: the topology of its comma-separated seed URLs (each parsed by the redis
/// crate; a cluster for several, or with `force_cluster`), or none. Errors redact passwords.
pub fn redis_topology(value: &str, force_cluster: bool) -> Result<Option<RedisTopology>, String> {
    let nodes = RedisTopology::parse_nodes(value)?;
    Ok(RedisTopology::from_nodes(&nodes, force_cluster))
}

/// A humantime duration (`15m`, `1h`, `90s`, `250ms`) within `min..=max`.
pub fn duration_between(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value| {
        let duration = humantime::parse_duration(value.trim()).map_err(|e| e.to_string())?;
        if duration < min || duration > max {
            return Err(format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(duration)
    }
}

/// A humantime duration of at least `min`.
pub fn duration_at_least(
    min: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value| {
        let duration = humantime::parse_duration(value.trim()).map_err(|e| e.to_string())?;
        if duration < min {
            return Err(format!(
                "must be at least {}",
                humantime::format_duration(min)
            ));
        }
        Ok(duration)
    }
}

/// An IP network, or a single address as a /32 or /128.
pub fn network(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is neither an IP address nor a CIDR network"))
}

/// A listen address, or `off` (no listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListenAddr(pub Option<SocketAddr>);

/// `AUTHD_HTTP_LISTEN_ADDR`: `host:port`, or `off`.
pub fn http_listen_addr(value: &str) -> Result<HttpListenAddr, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(HttpListenAddr(None));
    }
    value
        .parse()
        .map(|address| HttpListenAddr(Some(address)))
        .map_err(|_| format!("{value:?} is neither host:port nor `off`"))
}

/// `AUTHD_PUBLIC_URL`: an absolute http(s) URL without query, fragment or credentials; returned
/// without a trailing slash, so paths can be appended.
pub fn public_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http:// or https:// URL with a host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".to_owned());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `AUTHD_FORWARD_HEADER_PREFIX`: what, followed by `user-id`, makes a valid HTTP header name;
/// lower-cased (HTTP/2 header names are lower case).
pub fn header_prefix(value: &str) -> Result<String, String> {
    let prefix = value.trim().to_ascii_lowercase();
    if prefix.is_empty() {
        return Err("must not be empty".to_owned());
    }
    http::HeaderName::from_bytes(format!("{prefix}user-id").as_bytes())
        .map_err(|_| format!("{prefix:?} cannot start an HTTP header name"))?;
    Ok(prefix)
}
