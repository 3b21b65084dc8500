//! Value parsers for the flags whose type clap does not know: durations with a range, IP
//! networks, and the back-end URLs (parsed by sqlx and the redis crate, never by hand).

use std::time::Duration;

use crate::store::{DatabaseLocation, RedisTopology};

/// `AUTHD_DATABASE_URL`: a parsed database location, or none (empty: the embedded default).
#[derive(Debug, Clone)]
pub struct DatabaseUrl(pub Option<DatabaseLocation>);

impl DatabaseUrl {
    /// Parses the flag's value; empty means none.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim().is_empty() {
            return Ok(Self(None));
        }
        value.parse().map(|location| Self(Some(location)))
    }
}

/// `AUTHD_REDIS_URL`: the seed URLs, each parsed by the redis crate; empty means no Redis.
#[derive(Debug, Clone)]
pub struct RedisNodes(Vec<String>);

impl RedisNodes {
    /// Parses the flag's comma-separated value.
    pub fn parse(value: &str) -> Result<Self, String> {
        RedisTopology::parse_nodes(value).map(Self)
    }

    /// The topology these nodes form: one server, or a cluster (several seeds, or `force_cluster`).
    pub fn topology(&self, force_cluster: bool) -> Option<RedisTopology> {
        RedisTopology::from_nodes(&self.0, force_cluster)
    }
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
