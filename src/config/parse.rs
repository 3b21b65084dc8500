//! Value parsers for the flags whose type clap does not know: durations with a range, IP
//! networks, and the back-end URLs (parsed by sqlx and the redis crate, never by hand).

use std::time::Duration;

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
