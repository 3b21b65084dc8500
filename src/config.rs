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
        self.database()?;
        self.redis()?;
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

    /// The Redis URL, if revocations live in Redis.
    pub fn redis(&self) -> Result<Option<&str>, ConfigError> {
        match self.redis_url.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(url)
                if url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("redis+unix://")
                    || url.starts_with("unix://") =>
            {
                Ok(Some(url))
            }
            Some(_) => Err(ConfigError::new(
                "AUTHD_REDIS_URL",
                "must start with redis://, rediss:// or unix://",
            )),
        }
    }

    /// The Ed25519 key file: the configured path or DATA_DIR/signing-key.pem.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("signing-key.pem"))
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
    fn unknown_database_scheme_is_refused() {
        let config = parse(&["--database-url", "mysql://root@localhost/test"]).unwrap();
        assert_eq!(config.check().unwrap_err().setting, "AUTHD_DATABASE_URL");
    }
}
