//! `Settings`: the configuration as start-up uses it, every value typed and checked. Built once
//! from the parsed flags by [`Config::settings`], which also checks the rules that join several
//! flags (a back-off base within its maximum, cached mode only with Redis, an HS256 secret, the
//! password-hash parameters between OWASP's minimums and the ceiling for stored hashes).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use secrecy::{ExposeSecret as _, SecretString};

use super::{
    Config, JwtAlgorithm, LogFormat, MIN_HS256_DISTINCT_BYTES, MIN_HS256_SECRET_BYTES,
    RevocationMode, parse,
};
use crate::{
    hashing::{HashingLimits, PasswordParameter, PasswordParams, PasswordParamsError},
    store::{DatabaseLocation, RedisTopology},
    throttle::ThrottlePolicy,
};

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

/// Where the token signing key comes from.
#[derive(Debug)]
pub enum SigningKeySetting {
    /// A keys directory of Ed25519 keys (rotation), created with a key if it holds none.
    Ed25519Directory {
        /// The directory.
        dir: PathBuf,
        /// The single key file earlier versions generated in the data directory: adopted as the
        /// first key when the directory holds none.
        legacy: PathBuf,
    },
    /// One Ed25519 PKCS#8 PEM file (`AUTHD_SIGNING_KEY_FILE`), which must exist.
    Ed25519File(PathBuf),
    /// An HS256 secret of at least [`MIN_HS256_SECRET_BYTES`].
    Hs256(SecretString),
}

/// What issued tokens say and how long they live.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss`, the only issuer accepted.
    pub issuer: String,
    /// `aud`, the only audience accepted.
    pub audience: String,
    /// Access-token lifetime.
    pub ttl: Duration,
    /// Tolerated clock skew.
    pub leeway: Duration,
}

/// Limits of the gRPC listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Longest time one call may take.
    pub request_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Connections: how many at once, and how long without a preface or a call.
    pub connections: crate::server::connections::ConnectionLimits,
}

/// The HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where to serve it.
    pub listen_addr: SocketAddr,
    /// Where clients reach it, without a trailing slash; `None`: http:// + the bound address.
    pub public_url: Option<String>,
}

/// What gateways (Envoy ext_authz, forward-auth) are told for an accepted token.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Prefix of the forwarded headers, lower case (`x-authd-`).
    pub header_prefix: String,
    /// Whether ext_authz asks Envoy to remove `authorization` before the upstream.
    pub strip_authorization: bool,
}

/// The listeners' TLS (AUTHD_TLS_*): their files, read at start and again when they change.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA certificates a client certificate must chain to (mutual TLS), if required.
    pub client_ca_file: Option<PathBuf>,
}

/// TLS towards Redis (`rediss://`): files read at start.
#[derive(Debug, Clone, Default)]
pub struct RedisTlsFiles {
    /// CA certificates to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (TLS client authentication).
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// The whole configuration, typed and checked.
#[derive(Debug)]
pub struct Settings {
    /// Where to serve gRPC.
    pub listen_addr: SocketAddr,
    /// TLS on the gRPC and HTTP listeners, if configured.
    pub tls: Option<ListenerTls>,
    /// The HTTP listener, unless `off`.
    pub http: Option<HttpSettings>,
    /// What gateways are told.
    pub gateway: GatewaySettings,
    /// The user database.
    pub database: DatabaseLocation,
    /// Largest number of Postgres connections.
    pub database_max_connections: u32,
    /// Redis, if revocations and throttle counts live there.
    pub redis: Option<RedisTopology>,
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// Whether an evicting Redis is accepted (with a warning).
    pub redis_allow_eviction: bool,
    /// TLS material for `rediss://`.
    pub redis_tls: RedisTlsFiles,
    /// How Verify checks revocation (cached only with Redis).
    pub revocation_mode: RevocationMode,
    /// Directory of the embedded database and the generated signing key.
    pub data_dir: PathBuf,
    /// The signing key.
    pub signing_key: SigningKeySetting,
    /// How often a keys directory is read again (also on SIGHUP).
    pub signing_keys_reload: std::time::Duration,
    /// Token claims and lifetimes.
    pub tokens: TokenSettings,
    /// Login throttling.
    pub throttle: ThrottlePolicy,
    /// Peers whose `x-forwarded-for` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Password hashing threads and queue.
    pub hashing: HashingLimits,
    /// Argon2id parameters of new password hashes.
    pub password_params: PasswordParams,
    /// Verified tokens remembered (0 disables the cache).
    pub verify_cache_entries: usize,
    /// Listener limits.
    pub server: ServerLimits,
    /// Whether gRPC server reflection is served.
    pub reflection: bool,
    /// Session lifetimes and the refresh-token reuse grace.
    pub sessions: crate::service::SessionPolicy,
    /// The audit log.
    pub audit: AuditSettings,
    /// Who may call WatchRevocations.
    pub watchers: crate::service::WatchAccess,
    /// Log format.
    pub log_format: LogFormat,
}

/// Where audit events go and what they carry (AUTHD_AUDIT_LOG, AUTHD_AUDIT_HASH_KEY,
/// AUTHD_INSTANCE_ID).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The file events are appended to, besides the log.
    pub file: Option<PathBuf>,
    /// The key of the email hashes; `None`: a random one per process.
    pub email_hash_key: Option<SecretString>,
    /// The instance's name.
    pub instance_id: String,
}

/// The shortest AUTHD_AUDIT_HASH_KEY.
pub const MIN_AUDIT_HASH_KEY_BYTES: usize = 32;
/// The shortest AUTHD_WATCH_TOKEN.
pub const MIN_WATCH_TOKEN_BYTES: usize = 32;

impl Config {
    /// The typed settings, once the rules that join several flags hold.
    pub fn settings(self) -> Result<Settings, ConfigError> {
        if self.login_backoff_base > self.login_backoff_max {
            return Err(ConfigError::new(
                "AUTHD_LOGIN_BACKOFF_BASE",
                "must be at most AUTHD_LOGIN_BACKOFF_MAX",
            ));
        }
        let redis = parse::redis_topology(self.redis_url.expose_secret(), self.redis_cluster)
            .map_err(|reason| ConfigError::new("AUTHD_REDIS_URL", reason))?;
        if redis.is_none() && self.revocation_mode == RevocationMode::Cached {
            return Err(ConfigError::new(
                "AUTHD_REVOCATION_MODE",
                "cached mode needs Redis (AUTHD_REDIS_URL)",
            ));
        }
        let signing_key = self.signing_key()?;
        let audit = self.audit()?;
        let tls = self.listener_tls()?;
        let watchers = self.watchers(tls.as_ref())?;
        let redis_tls = self.redis_tls()?;
        let database = match parse::database_url(self.database_url.expose_secret())
            .map_err(|reason| ConfigError::new("AUTHD_DATABASE_URL", reason))?
        {
            Some(location) => location,
            None => embedded_database(&self.data_dir)?,
        };
        let password_params = PasswordParams::new(
            self.password_memory_kib,
            self.password_iterations,
            self.password_parallelism,
        )
        .map_err(password_params_error)?;
        let concurrency = match self.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            threads => threads,
        };
        Ok(Settings {
            listen_addr: self.listen_addr,
            tls,
            http: self.http_listen_addr.0.map(|listen_addr| HttpSettings {
                listen_addr,
                public_url: self.public_url,
            }),
            gateway: GatewaySettings {
                header_prefix: self.forward_header_prefix,
                strip_authorization: self.extauthz_strip_authorization,
            },
            database,
            database_max_connections: self.database_max_connections.get(),
            redis,
            redis_key_prefix: self.redis_key_prefix,
            redis_allow_eviction: self.redis_allow_eviction,
            redis_tls,
            revocation_mode: self.revocation_mode,
            data_dir: self.data_dir,
            signing_key,
            signing_keys_reload: self.signing_keys_reload_interval,
            tokens: TokenSettings {
                issuer: self.jwt_issuer,
                audience: self.jwt_audience,
                ttl: self.access_token_ttl,
                leeway: self.clock_leeway,
            },
            throttle: ThrottlePolicy {
                failures_before_backoff: self.login_failures_before_backoff.get(),
                backoff_base: self.login_backoff_base,
                backoff_max: self.login_backoff_max,
                account_max_failures: self.account_max_failures,
                account_window: self.account_window,
                source_max_failures: self.source_max_failures,
                source_max_registrations: self.source_max_registrations,
                source_window: self.source_window,
            },
            trusted_proxies: self.trusted_proxies,
            hashing: HashingLimits {
                concurrency,
                queue: self.hash_queue.get(),
            },
            password_params,
            verify_cache_entries: self.verify_cache_entries,
            server: ServerLimits {
                request_timeout: self.request_timeout,
                max_concurrent_streams: self.max_concurrent_streams.get(),
                connections: crate::server::connections::ConnectionLimits {
                    max_connections: self.max_connections.get(),
                    max_connections_per_source: self.max_connections_per_source.get(),
                    handshake_timeout: self.handshake_timeout,
                    idle_timeout: self.idle_timeout,
                },
            },
            reflection: self.reflection,
            sessions: crate::service::SessionPolicy {
                refresh_token_ttl: self.refresh_token_ttl,
                max_age: self.session_max_age,
                reuse_grace: self.refresh_reuse_grace,
                max_per_user: self.max_sessions_per_user,
            },
            audit,
            watchers,
            log_format: self.log_format,
        })
    }

    fn watchers(
        &self,
        tls: Option<&ListenerTls>,
    ) -> Result<crate::service::WatchAccess, ConfigError> {
        let token = match &self.watch_token {
            Some(token) if token.expose_secret().len() < MIN_WATCH_TOKEN_BYTES => {
                return Err(ConfigError::new(
                    "AUTHD_WATCH_TOKEN",
                    format!("must be at least {MIN_WATCH_TOKEN_BYTES} characters"),
                ));
            }
            Some(token) if !token.expose_secret().bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(ConfigError::new(
                    "AUTHD_WATCH_TOKEN",
                    "only visible ASCII characters (it travels in an HTTP header)",
                ));
            }
            other => other.as_ref(),
        };
        let client_certificates = tls.is_some_and(|tls| tls.client_ca_file.is_some());
        Ok(crate::service::WatchAccess::new(token, client_certificates))
    }

    fn listener_tls(&self) -> Result<Option<ListenerTls>, ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert_file), Some(key_file)) => Ok(Some(ListenerTls {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                client_ca_file: self.tls_client_ca_file.clone(),
            })),
            (None, None) if self.tls_client_ca_file.is_some() => Err(ConfigError::new(
                "AUTHD_TLS_CLIENT_CA_FILE",
                "mutual TLS needs AUTHD_TLS_CERT_FILE and AUTHD_TLS_KEY_FILE",
            )),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::new(
                "AUTHD_TLS_KEY_FILE",
                "required with AUTHD_TLS_CERT_FILE",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                "AUTHD_TLS_CERT_FILE",
                "required with AUTHD_TLS_KEY_FILE",
            )),
        }
    }

    fn audit(&self) -> Result<AuditSettings, ConfigError> {
        if let Some(key) = &self.audit_hash_key
            && key.expose_secret().len() < MIN_AUDIT_HASH_KEY_BYTES
        {
            return Err(ConfigError::new(
                "AUTHD_AUDIT_HASH_KEY",
                format!("must be at least {MIN_AUDIT_HASH_KEY_BYTES} bytes"),
            ));
        }
        let instance_id = match self.instance_id.as_deref().map(str::trim) {
            Some("") => {
                return Err(ConfigError::new("AUTHD_INSTANCE_ID", "must not be empty"));
            }
            Some(id) if id.len() > 253 || id.chars().any(char::is_control) => {
                return Err(ConfigError::new(
                    "AUTHD_INSTANCE_ID",
                    "at most 253 characters, none of them control characters",
                ));
            }
            Some(id) => id.to_owned(),
            None => crate::audit::default_instance_id(),
        };
        Ok(AuditSettings {
            file: self.audit_log.clone(),
            email_hash_key: self.audit_hash_key.clone(),
            instance_id,
        })
    }

    fn redis_tls(&self) -> Result<RedisTlsFiles, ConfigError> {
        let client_identity = match (&self.redis_client_cert_file, &self.redis_client_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "AUTHD_REDIS_CLIENT_KEY_FILE",
                    "required with AUTHD_REDIS_CLIENT_CERT_FILE",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "AUTHD_REDIS_CLIENT_CERT_FILE",
                    "required with AUTHD_REDIS_CLIENT_KEY_FILE",
                ));
            }
        };
        Ok(RedisTlsFiles {
            ca_file: self.redis_ca_file.clone(),
            client_identity,
        })
    }

    fn signing_key(&self) -> Result<SigningKeySetting, ConfigError> {
        match self.jwt_alg {
            JwtAlgorithm::EdDsa => match (&self.signing_key_file, &self.signing_keys_dir) {
                (Some(_), Some(_)) => Err(ConfigError::new(
                    "AUTHD_SIGNING_KEYS_DIR",
                    "set either AUTHD_SIGNING_KEYS_DIR or AUTHD_SIGNING_KEY_FILE, not both",
                )),
                (Some(file), None) => Ok(SigningKeySetting::Ed25519File(file.clone())),
                (None, dir) => Ok(SigningKeySetting::Ed25519Directory {
                    dir: dir.clone().unwrap_or_else(|| self.data_dir.join("keys")),
                    legacy: self.data_dir.join("signing-key.pem"),
                }),
            },
            JwtAlgorithm::Hs256 => {
                let secret = self.jwt_secret.as_ref().ok_or_else(|| {
                    ConfigError::new("AUTHD_JWT_SECRET", "required with AUTHD_JWT_ALG=HS256")
                })?;
                let bytes = secret.expose_secret().as_bytes();
                if bytes.len() < MIN_HS256_SECRET_BYTES {
                    return Err(ConfigError::new(
                        "AUTHD_JWT_SECRET",
                        format!("HS256 needs a secret of at least {MIN_HS256_SECRET_BYTES} bytes"),
                    ));
                }
                let distinct = bytes.iter().collect::<std::collections::HashSet<_>>().len();
                if distinct < MIN_HS256_DISTINCT_BYTES {
                    return Err(ConfigError::new(
                        "AUTHD_JWT_SECRET",
                        format!(
                            "the secret has only {distinct} distinct bytes (at least \
                             {MIN_HS256_DISTINCT_BYTES}): use a random one, e.g. \
                             `openssl rand -base64 48`"
                        ),
                    ));
                }
                Ok(SigningKeySetting::Hs256(secret.clone()))
            }
        }
    }
}

/// A refused password-hash parameter, named by its variable.
fn password_params_error(error: PasswordParamsError) -> ConfigError {
    let setting = match error.parameter() {
        PasswordParameter::MemoryKib => "AUTHD_PASSWORD_MEMORY_KIB",
        PasswordParameter::Iterations => "AUTHD_PASSWORD_ITERATIONS",
        PasswordParameter::Parallelism => "AUTHD_PASSWORD_PARALLELISM",
    };
    ConfigError::new(setting, error.to_string())
}

/// The embedded database in `data_dir`, unless an older authd left it elsewhere: starting on a new
/// empty database there would silently bring revoked tokens back, so start-up stops and says
/// where the old one is.
fn embedded_database(data_dir: &std::path::Path) -> Result<DatabaseLocation, ConfigError> {
    let path = data_dir.join("authd.db");
    if let Some(legacy) = DatabaseLocation::legacy_sqlite_file(&path)
        && legacy.exists()
        && !path.exists()
    {
        return Err(ConfigError::new(
            "AUTHD_DATA_DIR",
            format!(
                "an older authd kept this directory's database at {} (it percent-decoded the \
                 path); move that file (with its -wal and -shm files) to {}",
                legacy.display(),
                path.display()
            ),
        ));
    }
    Ok(DatabaseLocation::sqlite_file(&path))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("authd").chain(args.iter().copied()))
    }

    fn refused_setting(args: &[&str]) -> &'static str {
        parse(args).unwrap().settings().unwrap_err().setting
    }

    #[test]
    fn defaults_are_secure() {
        let settings = parse(&[]).unwrap().settings().unwrap();
        assert!(settings.listen_addr.ip().is_loopback());
        assert!(matches!(
            &settings.signing_key,
            SigningKeySetting::Ed25519Directory { dir, .. } if dir.ends_with("authd-data/keys")
        ));
        assert_eq!(settings.tokens.ttl, Duration::from_secs(900));
        assert_eq!(settings.tokens.leeway, Duration::from_secs(5));
        assert!(settings.database.is_embedded());
        assert!(settings.redis.is_none());
        assert!(settings.hashing.concurrency >= 1);
        assert_eq!(settings.password_params, PasswordParams::DEFAULT);
        assert_eq!(
            (
                settings.password_params.memory_kib(),
                settings.password_params.iterations(),
                settings.password_params.parallelism()
            ),
            (19_456, 2, 1)
        );
    }

    #[test]
    fn password_parameters_come_from_their_flags_or_variables() {
        let settings = parse(&[
            "--password-memory-kib",
            "47104",
            "--password-iterations",
            "1",
            "--password-parallelism",
            "2",
        ])
        .unwrap()
        .settings()
        .unwrap();
        assert_eq!(
            settings.password_params,
            PasswordParams::new(47_104, 1, 2).unwrap()
        );
        // Setting the variables here would race the other tests: check the flags read them.
        let command = <Config as clap::CommandFactory>::command();
        for (id, variable, default) in [
            ("password_memory_kib", "AUTHD_PASSWORD_MEMORY_KIB", "19456"),
            ("password_iterations", "AUTHD_PASSWORD_ITERATIONS", "2"),
            ("password_parallelism", "AUTHD_PASSWORD_PARALLELISM", "1"),
        ] {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .unwrap();
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(variable)));
            assert_eq!(arg.get_default_values(), [default]);
        }
    }

    #[test]
    fn password_parameters_outside_owasp_minimums_or_the_ceiling_name_their_variable() {
        for (args, setting) in [
            (
                &["--password-memory-kib", "19455"][..],
                "AUTHD_PASSWORD_MEMORY_KIB",
            ),
            (&["--password-iterations", "1"], "AUTHD_PASSWORD_MEMORY_KIB"),
            (
                &["--password-memory-kib", "65537"],
                "AUTHD_PASSWORD_MEMORY_KIB",
            ),
            (&["--password-iterations", "0"], "AUTHD_PASSWORD_ITERATIONS"),
            (&["--password-iterations", "9"], "AUTHD_PASSWORD_ITERATIONS"),
            (
                &["--password-parallelism", "0"],
                "AUTHD_PASSWORD_PARALLELISM",
            ),
            (
                &["--password-parallelism", "5"],
                "AUTHD_PASSWORD_PARALLELISM",
            ),
        ] {
            let error = parse(args).unwrap().settings().unwrap_err();
            assert_eq!(error.setting, setting, "{args:?}");
            assert!(error.to_string().contains(setting), "{args:?}: {error}");
        }
        let error = parse(&["--password-memory-kib", "9216"])
            .unwrap()
            .settings()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("invalid AUTHD_PASSWORD_MEMORY_KIB: 9216 KiB with 2 iteration(s)")
                && error.contains("19456 KiB")
                && error.contains("m=47104 t=1"),
            "{error}"
        );
    }

    #[test]
    fn values_out_of_range_are_refused_by_their_flag() {
        for (args, setting) in [
            (
                &["--access-token-ttl", "soon"][..],
                "AUTHD_ACCESS_TOKEN_TTL",
            ),
            (&["--access-token-ttl", "0s"], "AUTHD_ACCESS_TOKEN_TTL"),
            (&["--access-token-ttl", "25h"], "AUTHD_ACCESS_TOKEN_TTL"),
            (&["--clock-leeway", "6m"], "AUTHD_CLOCK_LEEWAY"),
            (&["--request-timeout", "50ms"], "AUTHD_REQUEST_TIMEOUT"),
            (&["--hash-queue", "0"], "AUTHD_HASH_QUEUE"),
            (
                &["--password-memory-kib", "lots"],
                "AUTHD_PASSWORD_MEMORY_KIB",
            ),
            (
                &["--password-iterations", "2.5"],
                "AUTHD_PASSWORD_ITERATIONS",
            ),
            (&["--jwt-issuer", ""], "AUTHD_JWT_ISSUER"),
        ] {
            let error = parse(args).unwrap_err().to_string();
            assert!(error.contains(setting), "{args:?}: {error}");
        }
    }

    #[test]
    fn rules_across_flags_name_the_setting() {
        assert_eq!(
            refused_setting(&["--jwt-alg", "HS256", "--jwt-secret", "too-short"]),
            "AUTHD_JWT_SECRET"
        );
        assert_eq!(refused_setting(&["--jwt-alg", "HS256"]), "AUTHD_JWT_SECRET");
        let repeated = "k".repeat(32);
        let pattern = "abcd".repeat(10);
        for weak in [repeated.as_str(), pattern.as_str()] {
            assert_eq!(
                refused_setting(&["--jwt-alg", "HS256", "--jwt-secret", weak]),
                "AUTHD_JWT_SECRET",
                "{weak}"
            );
        }
        let random = "q8Zr2LkW9vXc4TnB7yHd1MfJ6sPa3GeU";
        parse(&["--jwt-alg", "HS256", "--jwt-secret", random])
            .unwrap()
            .settings()
            .unwrap();
        assert_eq!(
            refused_setting(&["--revocation-mode", "cached"]),
            "AUTHD_REVOCATION_MODE"
        );
        assert_eq!(
            refused_setting(&["--login-backoff-base", "2m", "--login-backoff-max", "1m"]),
            "AUTHD_LOGIN_BACKOFF_BASE"
        );
    }

    #[test]
    fn bad_back_end_urls_are_refused_without_repeating_their_passwords() {
        for (args, setting) in [
            (
                &["--database-url", "mysql://root:S3cret@localhost/test"][..],
                "AUTHD_DATABASE_URL",
            ),
            (
                &[
                    "--database-url",
                    "postgres://authd:S3cret@db:notaport/authd",
                ],
                "AUTHD_DATABASE_URL",
            ),
            (
                &[
                    "--database-url",
                    "postgres://authd:S3cret@db/authd?sslmode=bogus",
                ],
                "AUTHD_DATABASE_URL",
            ),
            (
                &["--redis-url", "http://user:S3cret@a:7000"],
                "AUTHD_REDIS_URL",
            ),
            (
                &["--redis-url", "redis://:S3cret@cache:6379/notadb"],
                "AUTHD_REDIS_URL",
            ),
        ] {
            let error = parse(args).unwrap().settings().unwrap_err();
            assert_eq!(error.setting, setting, "{args:?}");
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("S3cret"), "{args:?}: {shown}");
        }
    }

    #[test]
    fn a_database_an_older_authd_left_at_the_percent_decoded_path_stops_start_up() {
        let root = tempfile::tempdir().unwrap();
        let decoded = root.path().join("xA");
        std::fs::create_dir_all(&decoded).unwrap();
        std::fs::write(decoded.join("authd.db"), b"").unwrap();
        let data_dir = root.path().join("x%41");
        let data_dir = data_dir.to_str().unwrap();
        assert_eq!(refused_setting(&["--data-dir", data_dir]), "AUTHD_DATA_DIR");
        // Once moved into place, it is used.
        std::fs::create_dir_all(root.path().join("x%41")).unwrap();
        std::fs::rename(decoded.join("authd.db"), root.path().join("x%41/authd.db")).unwrap();
        parse(&["--data-dir", data_dir])
            .unwrap()
            .settings()
            .unwrap();
    }

    #[test]
    fn empty_urls_mean_the_embedded_defaults() {
        let settings = parse(&["--database-url", "", "--redis-url", " "])
            .unwrap()
            .settings()
            .unwrap();
        assert!(settings.database.is_embedded());
        assert!(settings.redis.is_none());
        let settings = parse(&["--redis-url", "redis://a:7000,redis://b:7001"])
            .unwrap()
            .settings()
            .unwrap();
        assert!(matches!(settings.redis, Some(RedisTopology::Cluster(_))));
    }
}
