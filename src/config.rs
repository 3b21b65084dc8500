//! Command-line flags and `AUTHD_*` environment variables (clap), checked once into typed settings.
//! An invalid value stops start-up with a message that names the setting.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

/// Default listen address: loopback only, so a fresh install is not reachable from the network.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50051";
/// Access token lifetime. Short-lived bearer tokens limit the damage of a leak (RFC 9068 §5, OWASP).
pub const DEFAULT_ACCESS_TOKEN_TTL: &str = "15m";
/// Tolerated clock skew between instances when checking `exp`, `nbf` and `iat`.
pub const DEFAULT_CLOCK_LEEWAY: &str = "5s";
/// HS256 secrets must be at least as long as the hash output (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Consecutive failed logins of one account before it backs off (OWASP Authentication Cheat
/// Sheet: throttle per account; NIST SP 800-63B §5.2.2: at most 100 consecutive failures).
pub const DEFAULT_LOGIN_FAILURES_BEFORE_BACKOFF: u32 = 5;
/// First back-off delay; doubles with each further failure.
pub const DEFAULT_LOGIN_BACKOFF_BASE: &str = "1s";
/// Longest back-off delay.
pub const DEFAULT_LOGIN_BACKOFF_MAX: &str = "15m";
/// Failed logins from one source address per window before it is refused.
pub const DEFAULT_SOURCE_MAX_FAILURES: u32 = 100;
/// The source address window.
pub const DEFAULT_SOURCE_WINDOW: &str = "15m";
/// Longest time one call may take before DEADLINE_EXCEEDED (clients may ask for less).
pub const DEFAULT_REQUEST_TIMEOUT: &str = "10s";
/// HTTP/2 streams one connection may have open at once.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;

/// The JWT signing algorithm; verification accepts only this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// Ed25519 signatures; the key is a PKCS#8 PEM file.
    #[value(name = "EdDSA", alias = "eddsa")]
    EdDsa,
    /// HMAC-SHA256 with a shared secret of at least 32 bytes.
    #[value(name = "HS256", alias = "hs256")]
    Hs256,
}

/// How Verify checks revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RevocationMode {
    /// Ask the revocation store on every Verify: a Logout that answered OK is seen by the very
    /// next Verify on every instance.
    Strict,
    /// Answer from an in-memory mirror fed by Redis pub/sub (falls back to strict while the
    /// mirror is not known to be current). Requires Redis.
    Cached,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// authd's configuration. Every flag can also be set with the environment variable shown.
#[derive(Debug, Clone, Parser)]
#[command(name = "authd", version, about = "gRPC authentication service")]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "AUTHD_LISTEN_ADDR", value_name = "AUTHD_LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,

    /// User database: postgres://… or sqlite://…; empty means embedded SQLite at DATA_DIR/authd.db.
    #[arg(
        long,
        env = "AUTHD_DATABASE_URL",
        value_name = "AUTHD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Redis for revocations: redis://… or rediss://…; empty means the user database holds them.
    #[arg(
        long,
        env = "AUTHD_REDIS_URL",
        value_name = "AUTHD_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Treat AUTHD_REDIS_URL as a Redis Cluster even when it names a single seed node.
    #[arg(long, env = "AUTHD_REDIS_CLUSTER", value_name = "AUTHD_REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub redis_cluster: bool,

    /// Largest number of Postgres connections this instance opens.
    #[arg(long, env = "AUTHD_DATABASE_MAX_CONNECTIONS", value_name = "AUTHD_DATABASE_MAX_CONNECTIONS", default_value_t = crate::store::postgres::DEFAULT_MAX_CONNECTIONS)]
    pub database_max_connections: u32,

    /// Prefix of every Redis key authd writes.
    #[arg(
        long,
        env = "AUTHD_REDIS_KEY_PREFIX",
        value_name = "AUTHD_REDIS_KEY_PREFIX",
        default_value = "authd:"
    )]
    pub redis_key_prefix: String,

    /// Directory for the embedded database and the generated signing key.
    #[arg(
        long,
        env = "AUTHD_DATA_DIR",
        value_name = "AUTHD_DATA_DIR",
        default_value = "./authd-data"
    )]
    pub data_dir: PathBuf,

    /// Ed25519 PKCS#8 PEM signing key; default DATA_DIR/signing-key.pem, generated (0600) if absent.
    #[arg(
        long,
        env = "AUTHD_SIGNING_KEY_FILE",
        value_name = "AUTHD_SIGNING_KEY_FILE"
    )]
    pub signing_key_file: Option<PathBuf>,

    /// JWT signing algorithm.
    #[arg(
        long,
        env = "AUTHD_JWT_ALG",
        value_name = "AUTHD_JWT_ALG",
        value_enum,
        default_value = "EdDSA"
    )]
    pub jwt_alg: JwtAlgorithm,

    /// HS256 secret, at least 32 bytes; required with --jwt-alg HS256.
    #[arg(
        long,
        env = "AUTHD_JWT_SECRET",
        value_name = "AUTHD_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<SecretString>,

    /// `iss` of issued tokens; the only issuer accepted.
    #[arg(
        long,
        env = "AUTHD_JWT_ISSUER",
        value_name = "AUTHD_JWT_ISSUER",
        default_value = "authd"
    )]
    pub jwt_issuer: String,

    /// `aud` of issued tokens; the only audience accepted.
    #[arg(
        long,
        env = "AUTHD_JWT_AUDIENCE",
        value_name = "AUTHD_JWT_AUDIENCE",
        default_value = "authd"
    )]
    pub jwt_audience: String,

    /// Lifetime of access tokens (humantime: 15m, 1h, 90s).
    #[arg(long, env = "AUTHD_ACCESS_TOKEN_TTL", value_name = "AUTHD_ACCESS_TOKEN_TTL", default_value = DEFAULT_ACCESS_TOKEN_TTL, value_parser = parse_duration)]
    pub access_token_ttl: Duration,

    /// Tolerated clock skew (humantime).
    #[arg(long, env = "AUTHD_CLOCK_LEEWAY", value_name = "AUTHD_CLOCK_LEEWAY", default_value = DEFAULT_CLOCK_LEEWAY, value_parser = parse_duration)]
    pub clock_leeway: Duration,

    /// Consecutive failed logins of one account before exponential back-off.
    #[arg(long, env = "AUTHD_LOGIN_FAILURES_BEFORE_BACKOFF", value_name = "AUTHD_LOGIN_FAILURES_BEFORE_BACKOFF", default_value_t = DEFAULT_LOGIN_FAILURES_BEFORE_BACKOFF)]
    pub login_failures_before_backoff: u32,

    /// First back-off delay (doubles per further failure).
    #[arg(long, env = "AUTHD_LOGIN_BACKOFF_BASE", value_name = "AUTHD_LOGIN_BACKOFF_BASE", default_value = DEFAULT_LOGIN_BACKOFF_BASE, value_parser = parse_duration)]
    pub login_backoff_base: Duration,

    /// Longest back-off delay.
    #[arg(long, env = "AUTHD_LOGIN_BACKOFF_MAX", value_name = "AUTHD_LOGIN_BACKOFF_MAX", default_value = DEFAULT_LOGIN_BACKOFF_MAX, value_parser = parse_duration)]
    pub login_backoff_max: Duration,

    /// Failed logins per source address per window (0 disables the limit).
    #[arg(long, env = "AUTHD_SOURCE_MAX_FAILURES", value_name = "AUTHD_SOURCE_MAX_FAILURES", default_value_t = DEFAULT_SOURCE_MAX_FAILURES)]
    pub source_max_failures: u32,

    /// The per-source window.
    #[arg(long, env = "AUTHD_SOURCE_WINDOW", value_name = "AUTHD_SOURCE_WINDOW", default_value = DEFAULT_SOURCE_WINDOW, value_parser = parse_duration)]
    pub source_window: Duration,

    /// Proxies (IPs or CIDRs, comma-separated) whose `x-forwarded-for` first hop is trusted as the
    /// source address.
    #[arg(long, env = "AUTHD_TRUSTED_PROXIES", value_name = "AUTHD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Password hashing threads; 0 means one per core.
    #[arg(
        long,
        env = "AUTHD_HASH_CONCURRENCY",
        value_name = "AUTHD_HASH_CONCURRENCY",
        default_value_t = 0
    )]
    pub hash_concurrency: usize,

    /// Password hashes that may wait for a thread before requests are shed (RESOURCE_EXHAUSTED).
    #[arg(long, env = "AUTHD_HASH_QUEUE", value_name = "AUTHD_HASH_QUEUE", default_value_t = crate::password::DEFAULT_HASH_QUEUE)]
    pub hash_queue: usize,

    /// Longest time one call may take.
    #[arg(long, env = "AUTHD_REQUEST_TIMEOUT", value_name = "AUTHD_REQUEST_TIMEOUT", default_value = DEFAULT_REQUEST_TIMEOUT, value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How Verify checks revocation: strict (ask Redis every time) or cached (in-memory mirror).
    #[arg(
        long,
        env = "AUTHD_REVOCATION_MODE",
        value_name = "AUTHD_REVOCATION_MODE",
        value_enum,
        default_value = "strict"
    )]
    pub revocation_mode: RevocationMode,

    /// Verified tokens remembered so their signature is not checked again (0 disables).
    #[arg(long, env = "AUTHD_VERIFY_CACHE_ENTRIES", value_name = "AUTHD_VERIFY_CACHE_ENTRIES", default_value_t = crate::token_cache::DEFAULT_CAPACITY)]
    pub verify_cache_entries: usize,

    /// HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "AUTHD_MAX_CONCURRENT_STREAMS", value_name = "AUTHD_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,

    /// Log format.
    #[arg(
        long,
        env = "AUTHD_LOG_FORMAT",
        value_name = "AUTHD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Where users live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSetting {
    /// A Postgres URL.
    Postgres(String),
    /// A SQLite URL (the embedded default when none is configured).
    Sqlite(String),
}

/// A setting that cannot be used, named as the user would set it.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {reason}")]
pub struct ConfigError {
    /// The environment variable naming the setting.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Checks what clap cannot: cross-field rules and value ranges.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.access_token_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "AUTHD_ACCESS_TOKEN_TTL",
                "must be at least 1s",
            ));
        }
        if self.access_token_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new(
                "AUTHD_ACCESS_TOKEN_TTL",
                "must be at most 24h",
            ));
        }
        if self.clock_leeway > Duration::from_secs(300) {
            return Err(ConfigError::new("AUTHD_CLOCK_LEEWAY", "must be at most 5m"));
        }
        if self.jwt_issuer.is_empty() {
            return Err(ConfigError::new("AUTHD_JWT_ISSUER", "must not be empty"));
        }
        if self.jwt_audience.is_empty() {
            return Err(ConfigError::new("AUTHD_JWT_AUDIENCE", "must not be empty"));
        }
        if self.redis_key_prefix.is_empty() {
            return Err(ConfigError::new(
                "AUTHD_REDIS_KEY_PREFIX",
                "must not be empty",
            ));
        }
        if self.login_failures_before_backoff == 0 {
            return Err(ConfigError::new(
                "AUTHD_LOGIN_FAILURES_BEFORE_BACKOFF",
                "must be at least 1",
            ));
        }
        if self.login_backoff_base.is_zero() || self.login_backoff_base > self.login_backoff_max {
            return Err(ConfigError::new(
                "AUTHD_LOGIN_BACKOFF_BASE",
                "must be more than 0 and at most AUTHD_LOGIN_BACKOFF_MAX",
            ));
        }
        if self.source_window.is_zero() {
            return Err(ConfigError::new(
                "AUTHD_SOURCE_WINDOW",
                "must be more than 0",
            ));
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::new(
                "AUTHD_DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if self.hash_queue == 0 {
            return Err(ConfigError::new("AUTHD_HASH_QUEUE", "must be at least 1"));
        }
        if self.request_timeout < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "AUTHD_REQUEST_TIMEOUT",
                "must be at least 100ms",
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::new(
                "AUTHD_MAX_CONCURRENT_STREAMS",
                "must be at least 1",
            ));
        }
        self.database()?;
        if self.redis()?.is_none() && self.revocation_mode == RevocationMode::Cached {
            return Err(ConfigError::new(
                "AUTHD_REVOCATION_MODE",
                "cached mode needs Redis (AUTHD_REDIS_URL)",
            ));
        }
        if self.jwt_alg == JwtAlgorithm::Hs256 {
            let secret_len = self
                .jwt_secret
                .as_ref()
                .map_or(0, |s| s.expose_secret().len());
            if secret_len < MIN_HS256_SECRET_BYTES {
                return Err(ConfigError::new(
                    "AUTHD_JWT_SECRET",
                    format!("HS256 needs a secret of at least {MIN_HS256_SECRET_BYTES} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// The user database to use: the configured URL, or SQLite in the data directory.
    pub fn database(&self) -> Result<DatabaseSetting, ConfigError> {
        match self.database_url.as_deref().map(str::trim) {
            None | Some("") => {
                let path = self.data_dir.join("authd.db");
                Ok(DatabaseSetting::Sqlite(format!(
                    "sqlite://{}",
                    path.display()
                )))
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(DatabaseSetting::Postgres(url.to_owned()))
            }
            Some(url) if url.starts_with("sqlite:") => Ok(DatabaseSetting::Sqlite(url.to_owned())),
            Some(_) => Err(ConfigError::new(
                "AUTHD_DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite:",
            )),
        }
    }

    /// Where Redis is, if revocations and throttling live in Redis.
    pub fn redis(&self) -> Result<Option<crate::store::redis::RedisTopology>, ConfigError> {
        use crate::store::redis::RedisTopology;
        let urls: Vec<&str> = self
            .redis_url
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        let known_scheme = |url: &&str| {
            ["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        };
        if let Some(bad) = urls.iter().find(|url| !known_scheme(url)) {
            return Err(ConfigError::new(
                "AUTHD_REDIS_URL",
                format!(
                    "{:?} must start with redis://, rediss:// or unix://",
                    redact_url(bad)
                ),
            ));
        }
        Ok(match urls.as_slice() {
            [] => None,
            [url] if !self.redis_cluster => Some(RedisTopology::Single((*url).to_owned())),
            nodes => Some(RedisTopology::Cluster(
                nodes.iter().map(|n| (*n).to_owned()).collect(),
            )),
        })
    }

    /// The Ed25519 key file: the configured path or DATA_DIR/signing-key.pem.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("signing-key.pem"))
    }

    /// Hashing threads and queue, with 0 threads meaning one per core.
    pub fn hashing_limits(&self) -> crate::password::HashingLimits {
        let mut limits = crate::password::HashingLimits::for_this_machine();
        if self.hash_concurrency > 0 {
            limits.concurrency = self.hash_concurrency;
        }
        limits.queue = self.hash_queue;
        limits
    }

    /// The login throttling policy.
    pub fn throttle_policy(&self) -> crate::throttle::ThrottlePolicy {
        crate::throttle::ThrottlePolicy {
            failures_before_backoff: self.login_failures_before_backoff,
            backoff_base: self.login_backoff_base,
            backoff_max: self.login_backoff_max,
            source_max_failures: self.source_max_failures,
            source_window: self.source_window,
        }
    }
}

/// An IP network, or a single address as a /32 or /128.
fn parse_network(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is neither an IP address nor a CIDR network"))
}

/// A URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

fn parse_duration(value: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("authd").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_secure() {
        let config = parse(&[]).unwrap();
        assert!(config.listen_addr.ip().is_loopback());
        assert_eq!(config.jwt_alg, JwtAlgorithm::EdDsa);
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert_eq!(config.clock_leeway, Duration::from_secs(5));
        assert!(matches!(
            config.database().unwrap(),
            DatabaseSetting::Sqlite(_)
        ));
        config.check().unwrap();
    }

    #[test]
    fn unparsable_duration_names_the_setting() {
        let error = parse(&["--access-token-ttl", "soon"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("AUTHD_ACCESS_TOKEN_TTL"), "{error}");
    }

    #[test]
    fn short_hs256_secret_is_refused() {
        let config = parse(&["--jwt-alg", "HS256", "--jwt-secret", "too-short"]).unwrap();
        let error = config.check().unwrap_err();
        assert_eq!(error.setting, "AUTHD_JWT_SECRET");
        let config = parse(&["--jwt-alg", "HS256"]).unwrap();
        assert_eq!(config.check().unwrap_err().setting, "AUTHD_JWT_SECRET");
    }

    #[test]
    fn several_redis_urls_mean_a_cluster() {
        use crate::store::redis::RedisTopology;
        let config = parse(&["--redis-url", "redis://a:7000, redis://b:7001"]).unwrap();
        assert_eq!(
            config.redis().unwrap(),
            Some(RedisTopology::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into()
            ]))
        );
        let config = parse(&["--redis-url", "redis://a:7000"]).unwrap();
        assert_eq!(
            config.redis().unwrap(),
            Some(RedisTopology::Single("redis://a:7000".into()))
        );
        let config = parse(&["--redis-url", "redis://a:7000", "--redis-cluster"]).unwrap();
        assert!(matches!(
            config.redis().unwrap(),
            Some(RedisTopology::Cluster(_))
        ));
        let config = parse(&["--redis-url", "http://user:secret@a:7000"]).unwrap();
        let error = config.check().unwrap_err();
        assert_eq!(error.setting, "AUTHD_REDIS_URL");
        assert!(!error.reason.contains("secret"));
    }

    #[test]
    fn unknown_database_scheme_is_refused() {
        let config = parse(&["--database-url", "mysql://root@localhost/test"]).unwrap();
        assert_eq!(config.check().unwrap_err().setting, "AUTHD_DATABASE_URL");
    }
}
