//! Command-line flags and `AUTHD_*` environment variables (clap). Every value is parsed once, by
//! its flag's value parser, into the type it is used as (durations by humantime with their range,
//! counts as `NonZero*`, URLs by the back-end crates themselves); `settings.rs` then checks the
//! rules that join several flags and produces the `Settings` start-up wires from. An invalid value
//! stops start-up with a message that names the setting. Defaults sit beside their flags.

mod parse;
pub use parse::HttpListenAddr;
mod settings;

pub use settings::{
    AuditSettings, ConfigError, GatewaySettings, HttpSettings, ListenerTls, RedisTlsFiles,
    ServerLimits, Settings, SigningKeySetting, TokenSettings,
};

use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

use clap::{Parser, ValueEnum, builder::NonEmptyStringValueParser};
use secrecy::SecretString;

use self::parse::{
    duration_at_least, duration_between, header_prefix, http_listen_addr, network, public_url,
};

/// Default listen address: loopback only, so a fresh install is not reachable from the network.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50051";
/// Default address of the HTTP listener (JWKS, discovery, forward-auth, health, metrics).
pub const DEFAULT_HTTP_LISTEN_ADDR: &str = "127.0.0.1:8080";
/// Default prefix of the headers a gateway forwards upstream (`x-authd-user-id`, ...).
pub const DEFAULT_FORWARD_HEADER_PREFIX: &str = "x-authd-";
/// Access token lifetime. Short-lived bearer tokens limit the damage of a leak (RFC 9068 §5, OWASP).
pub const DEFAULT_ACCESS_TOKEN_TTL: &str = "15m";
/// Tolerated clock skew between instances when checking `exp`, `nbf` and `iat`.
pub const DEFAULT_CLOCK_LEEWAY: &str = "5s";
/// HS256 secrets must be at least as long as the hash output (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// ... and not a repetition of a few characters ("aaaa…", "abab…"): at least this many distinct
/// bytes. A random 32-byte secret has about 30; 16 still refuses every pattern typed by hand.
pub const MIN_HS256_DISTINCT_BYTES: usize = 16;
/// Consecutive failed logins of one account from one source before that pair backs off (OWASP
/// Authentication Cheat Sheet: throttle per account; NIST SP 800-63B §5.2.2: at most 100
/// consecutive failures).
pub const DEFAULT_LOGIN_FAILURES_BEFORE_BACKOFF: &str = "5";
/// First back-off delay; doubles with each further failure.
pub const DEFAULT_LOGIN_BACKOFF_BASE: &str = "1s";
/// Longest back-off delay.
pub const DEFAULT_LOGIN_BACKOFF_MAX: &str = "15m";
/// Failed logins of one account, from every source, per window before it is refused: well above
/// the (account, source) back-off threshold, so that it stops guessing spread over many addresses
/// without letting one attacker lock a victim out (OWASP ASVS 6.3.x; NIST SP 800-63B §5.2.2: at
/// most 100 consecutive failures).
pub const DEFAULT_ACCOUNT_MAX_FAILURES: u32 = 50;
/// The account window.
pub const DEFAULT_ACCOUNT_WINDOW: &str = "15m";
/// Failed logins from one source address per window before it is refused.
pub const DEFAULT_SOURCE_MAX_FAILURES: u32 = 100;
/// Registrations from one source address per window before it is refused (a backend-for-frontend
/// that registers users on their behalf passes each user's address, see the README).
pub const DEFAULT_SOURCE_MAX_REGISTRATIONS: u32 = 100;
/// The source address window.
pub const DEFAULT_SOURCE_WINDOW: &str = "15m";
/// Longest time one call may take before DEADLINE_EXCEEDED (clients may ask for less).
pub const DEFAULT_REQUEST_TIMEOUT: &str = "10s";
/// HTTP/2 streams one connection may have open at once.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: &str = "1024";
/// Connections open at once; past it new ones are closed at once (each costs a descriptor, a
/// task and HTTP/2 buffers).
pub const DEFAULT_MAX_CONNECTIONS: &str = "10000";
/// Connections open at once from one peer address: one host cannot take every slot. A gateway in
/// front of authd needs far fewer (HTTP/2 multiplexes its calls).
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: &str = "256";
/// Time a new connection has to send the HTTP/2 preface.
pub const DEFAULT_HANDSHAKE_TIMEOUT: &str = "10s";
/// Time a connection may stay open with no call in flight (clients reconnect transparently).
pub const DEFAULT_IDLE_TIMEOUT: &str = "5m";
/// How long an unused refresh token lives (each Refresh starts it again).
pub const DEFAULT_REFRESH_TOKEN_TTL: &str = "30d";
/// A session's absolute end, counted from sign-in.
pub const DEFAULT_SESSION_MAX_AGE: &str = "90d";
/// How long after a rotation the spent token still rotates instead of ending the session.
pub const DEFAULT_REFRESH_REUSE_GRACE: &str = "0s";
/// The longest reuse grace accepted.
pub const MAX_REFRESH_REUSE_GRACE: Duration = Duration::from_secs(300);
/// Postgres connections per instance: Login/Register are bounded by argon2, so a few go a long way.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: &str = "16";
/// Password hashes that may wait for a hashing thread before requests are shed.
pub const DEFAULT_HASH_QUEUE: &str = "64";

/// Shortest and longest access-token lifetimes accepted.
const ACCESS_TOKEN_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));
/// Largest clock leeway accepted.
const MAX_CLOCK_LEEWAY: Duration = Duration::from_secs(300);
/// Shortest per-call time limit accepted.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
/// Shortest back-off delays and windows accepted: counters keep milliseconds, so anything shorter
/// would be zero, which switches the limit off without a word.
const MIN_THROTTLE_DURATION: Duration = Duration::from_millis(1);

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

/// What the binary does besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage the signing keys in AUTHD_SIGNING_KEYS_DIR.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
}

/// `authd keys …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Every key: kid, state (next / active / retiring), created, starts signing at.
    List,
    /// Adds a key, published at once, that starts signing after the lead time.
    Rotate {
        /// Time between publishing the key and signing with it: at least the JWKS cache
        /// lifetime (5m) and the instances' reload interval, so that every verifier knows the
        /// key before the first token it signs.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        lead: Duration,
    },
    /// Removes keys whose last possible token has expired.
    Prune,
}

/// authd's configuration. Every flag can also be set with the environment variable shown (the
/// value name is the variable, so that every parse error names it).
#[derive(Debug, Clone, Parser)]
#[command(name = "authd", version, about = "gRPC authentication service")]
pub struct Config {
    /// What to do; without one, serve.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to serve gRPC on.
    #[arg(long, env = "AUTHD_LISTEN_ADDR", value_name = "AUTHD_LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,

    /// PEM certificate chain the listeners present: with AUTHD_TLS_KEY_FILE, the gRPC and HTTP
    /// listeners speak TLS only. Re-read when the file changes.
    #[arg(long, env = "AUTHD_TLS_CERT_FILE", value_name = "AUTHD_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of AUTHD_TLS_CERT_FILE.
    #[arg(long, env = "AUTHD_TLS_KEY_FILE", value_name = "AUTHD_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates for mutual TLS: clients must present a certificate they issued.
    #[arg(
        long,
        env = "AUTHD_TLS_CLIENT_CA_FILE",
        value_name = "AUTHD_TLS_CLIENT_CA_FILE"
    )]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Address of the HTTP listener (JWKS, OpenID discovery, forward-auth `/verify`, `/healthz`,
    /// `/readyz`, `/metrics`); `off` disables it.
    #[arg(long, env = "AUTHD_HTTP_LISTEN_ADDR", value_name = "AUTHD_HTTP_LISTEN_ADDR", default_value = DEFAULT_HTTP_LISTEN_ADDR, value_parser = http_listen_addr)]
    pub http_listen_addr: HttpListenAddr,

    /// The URL clients reach the HTTP listener at (http:// or https://, no query), for the
    /// `jwks_uri` of the discovery document; default http:// + AUTHD_HTTP_LISTEN_ADDR.
    #[arg(long, env = "AUTHD_PUBLIC_URL", value_name = "AUTHD_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<String>,

    /// Prefix of the headers gateways forward upstream for an accepted token (`<prefix>user-id`,
    /// `<prefix>session-id`, `<prefix>jti`).
    #[arg(long, env = "AUTHD_FORWARD_HEADER_PREFIX", value_name = "AUTHD_FORWARD_HEADER_PREFIX", default_value = DEFAULT_FORWARD_HEADER_PREFIX, value_parser = header_prefix)]
    pub forward_header_prefix: String,

    /// Envoy ext_authz: have Envoy remove the `authorization` header before the request goes
    /// upstream, so upstreams never see the token.
    #[arg(long, env = "AUTHD_EXTAUTHZ_STRIP_AUTHORIZATION", value_name = "AUTHD_EXTAUTHZ_STRIP_AUTHORIZATION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub extauthz_strip_authorization: bool,

    /// User database: postgres://… or sqlite:…; empty means embedded SQLite at DATA_DIR/authd.db.
    /// (Parsed in `settings.rs`, not by clap: clap's errors repeat the value, password included.)
    #[arg(
        long,
        env = "AUTHD_DATABASE_URL",
        value_name = "AUTHD_DATABASE_URL",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    pub database_url: SecretString,

    /// Redis for revocations and throttling: redis://… or rediss://…, several comma-separated
    /// seeds for a cluster; empty means the user database holds them.
    /// (Parsed in `settings.rs`, not by clap: clap's errors repeat the value, password included.)
    #[arg(
        long,
        env = "AUTHD_REDIS_URL",
        value_name = "AUTHD_REDIS_URL",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    pub redis_url: SecretString,

    /// Treat AUTHD_REDIS_URL as a Redis Cluster even when it names a single seed node.
    #[arg(long, env = "AUTHD_REDIS_CLUSTER", value_name = "AUTHD_REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub redis_cluster: bool,

    /// Start (with a warning) even when Redis's maxmemory-policy may evict keys: revoked tokens
    /// can then verify again once Redis is full. Off: such a Redis stops start-up.
    #[arg(long, env = "AUTHD_REDIS_ALLOW_EVICTION", value_name = "AUTHD_REDIS_ALLOW_EVICTION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub redis_allow_eviction: bool,

    /// PEM file of the CA certificates to trust for `rediss://` instead of the system's roots.
    #[arg(long, env = "AUTHD_REDIS_CA_FILE", value_name = "AUTHD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// PEM certificate chain authd presents to Redis (TLS client authentication); needs
    /// AUTHD_REDIS_CLIENT_KEY_FILE.
    #[arg(
        long,
        env = "AUTHD_REDIS_CLIENT_CERT_FILE",
        value_name = "AUTHD_REDIS_CLIENT_CERT_FILE"
    )]
    pub redis_client_cert_file: Option<PathBuf>,

    /// PEM private key of AUTHD_REDIS_CLIENT_CERT_FILE.
    #[arg(
        long,
        env = "AUTHD_REDIS_CLIENT_KEY_FILE",
        value_name = "AUTHD_REDIS_CLIENT_KEY_FILE"
    )]
    pub redis_client_key_file: Option<PathBuf>,

    /// Largest number of Postgres connections this instance opens.
    #[arg(long, env = "AUTHD_DATABASE_MAX_CONNECTIONS", value_name = "AUTHD_DATABASE_MAX_CONNECTIONS", default_value = DEFAULT_DATABASE_MAX_CONNECTIONS)]
    pub database_max_connections: NonZeroU32,

    /// Prefix of every Redis key authd writes.
    #[arg(long, env = "AUTHD_REDIS_KEY_PREFIX", value_name = "AUTHD_REDIS_KEY_PREFIX", default_value = "authd:", value_parser = NonEmptyStringValueParser::new())]
    pub redis_key_prefix: String,

    /// Directory for the embedded database and the generated signing key.
    #[arg(
        long,
        env = "AUTHD_DATA_DIR",
        value_name = "AUTHD_DATA_DIR",
        default_value = "./authd-data"
    )]
    pub data_dir: PathBuf,

    /// One Ed25519 PKCS#8 PEM signing key file, which must exist (no rotation); instead of
    /// AUTHD_SIGNING_KEYS_DIR.
    #[arg(
        long,
        env = "AUTHD_SIGNING_KEY_FILE",
        value_name = "AUTHD_SIGNING_KEY_FILE"
    )]
    pub signing_key_file: Option<PathBuf>,

    /// Directory of Ed25519 signing keys (`authd keys rotate` adds one); default DATA_DIR/keys,
    /// created with a key (0600) if it holds none.
    #[arg(
        long,
        env = "AUTHD_SIGNING_KEYS_DIR",
        value_name = "AUTHD_SIGNING_KEYS_DIR"
    )]
    pub signing_keys_dir: Option<PathBuf>,

    /// How often the keys directory is read again (also on SIGHUP), from 100ms to 1h.
    #[arg(long, env = "AUTHD_SIGNING_KEYS_RELOAD_INTERVAL", value_name = "AUTHD_SIGNING_KEYS_RELOAD_INTERVAL", default_value = "10s", value_parser = duration_between(Duration::from_millis(100), Duration::from_secs(3600)))]
    pub signing_keys_reload_interval: Duration,

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
    #[arg(long, env = "AUTHD_JWT_ISSUER", value_name = "AUTHD_JWT_ISSUER", default_value = "authd", value_parser = NonEmptyStringValueParser::new())]
    pub jwt_issuer: String,

    /// `aud` of issued tokens; the only audience accepted.
    #[arg(long, env = "AUTHD_JWT_AUDIENCE", value_name = "AUTHD_JWT_AUDIENCE", default_value = "authd", value_parser = NonEmptyStringValueParser::new())]
    pub jwt_audience: String,

    /// Lifetime of access tokens (humantime: 15m, 1h, 90s), from 1s to 24h.
    #[arg(long, env = "AUTHD_ACCESS_TOKEN_TTL", value_name = "AUTHD_ACCESS_TOKEN_TTL", default_value = DEFAULT_ACCESS_TOKEN_TTL, value_parser = duration_between(ACCESS_TOKEN_TTL_RANGE.0, ACCESS_TOKEN_TTL_RANGE.1))]
    pub access_token_ttl: Duration,

    /// Tolerated clock skew (humantime), at most 5m.
    #[arg(long, env = "AUTHD_CLOCK_LEEWAY", value_name = "AUTHD_CLOCK_LEEWAY", default_value = DEFAULT_CLOCK_LEEWAY, value_parser = duration_between(Duration::ZERO, MAX_CLOCK_LEEWAY))]
    pub clock_leeway: Duration,

    /// Consecutive failed logins of one account from one source before that pair backs off
    /// exponentially (other sources are not slowed down).
    #[arg(long, env = "AUTHD_LOGIN_FAILURES_BEFORE_BACKOFF", value_name = "AUTHD_LOGIN_FAILURES_BEFORE_BACKOFF", default_value = DEFAULT_LOGIN_FAILURES_BEFORE_BACKOFF)]
    pub login_failures_before_backoff: NonZeroU32,

    /// First back-off delay (doubles per further failure); at most AUTHD_LOGIN_BACKOFF_MAX.
    #[arg(long, env = "AUTHD_LOGIN_BACKOFF_BASE", value_name = "AUTHD_LOGIN_BACKOFF_BASE", default_value = DEFAULT_LOGIN_BACKOFF_BASE, value_parser = duration_at_least(MIN_THROTTLE_DURATION))]
    pub login_backoff_base: Duration,

    /// Longest back-off delay.
    #[arg(long, env = "AUTHD_LOGIN_BACKOFF_MAX", value_name = "AUTHD_LOGIN_BACKOFF_MAX", default_value = DEFAULT_LOGIN_BACKOFF_MAX, value_parser = duration_at_least(MIN_THROTTLE_DURATION))]
    pub login_backoff_max: Duration,

    /// Failed logins per account per window, from every source (0 disables the limit).
    #[arg(long, env = "AUTHD_ACCOUNT_MAX_FAILURES", value_name = "AUTHD_ACCOUNT_MAX_FAILURES", default_value_t = DEFAULT_ACCOUNT_MAX_FAILURES)]
    pub account_max_failures: u32,

    /// The per-account window.
    #[arg(long, env = "AUTHD_ACCOUNT_WINDOW", value_name = "AUTHD_ACCOUNT_WINDOW", default_value = DEFAULT_ACCOUNT_WINDOW, value_parser = duration_at_least(MIN_THROTTLE_DURATION))]
    pub account_window: Duration,

    /// Failed logins per source address per window (0 disables the limit).
    #[arg(long, env = "AUTHD_SOURCE_MAX_FAILURES", value_name = "AUTHD_SOURCE_MAX_FAILURES", default_value_t = DEFAULT_SOURCE_MAX_FAILURES)]
    pub source_max_failures: u32,

    /// Registrations per source address per window (0 disables the limit).
    #[arg(long, env = "AUTHD_SOURCE_MAX_REGISTRATIONS", value_name = "AUTHD_SOURCE_MAX_REGISTRATIONS", default_value_t = DEFAULT_SOURCE_MAX_REGISTRATIONS)]
    pub source_max_registrations: u32,

    /// The per-source window (failures and registrations).
    #[arg(long, env = "AUTHD_SOURCE_WINDOW", value_name = "AUTHD_SOURCE_WINDOW", default_value = DEFAULT_SOURCE_WINDOW, value_parser = duration_at_least(MIN_THROTTLE_DURATION))]
    pub source_window: Duration,

    /// Proxies (IPs or CIDRs, comma-separated) in front of authd: behind one, the source address is
    /// the rightmost `x-forwarded-for` hop that is not a trusted proxy.
    #[arg(long, env = "AUTHD_TRUSTED_PROXIES", value_name = "AUTHD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = network)]
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
    #[arg(long, env = "AUTHD_HASH_QUEUE", value_name = "AUTHD_HASH_QUEUE", default_value = DEFAULT_HASH_QUEUE)]
    pub hash_queue: NonZeroUsize,

    /// Argon2id memory per new password hash, in KiB (each hashing thread holds this much). With
    /// AUTHD_PASSWORD_ITERATIONS it must meet one of OWASP's minimums (m=47104 t=1, m=19456 t=2,
    /// m=12288 t=3, m=9216 t=4, m=7168 t=5), and be at most 65536 (the ceiling for stored hashes).
    #[arg(long, env = "AUTHD_PASSWORD_MEMORY_KIB", value_name = "AUTHD_PASSWORD_MEMORY_KIB", default_value_t = crate::hashing::DEFAULT_M_COST_KIB)]
    pub password_memory_kib: u32,

    /// Argon2id passes of new password hashes, from 1 to 8 (see AUTHD_PASSWORD_MEMORY_KIB).
    #[arg(long, env = "AUTHD_PASSWORD_ITERATIONS", value_name = "AUTHD_PASSWORD_ITERATIONS", default_value_t = crate::hashing::DEFAULT_T_COST)]
    pub password_iterations: u32,

    /// Argon2id lanes of new password hashes, from 1 to 4 (a hash still runs on one thread).
    #[arg(long, env = "AUTHD_PASSWORD_PARALLELISM", value_name = "AUTHD_PASSWORD_PARALLELISM", default_value_t = crate::hashing::DEFAULT_P_COST)]
    pub password_parallelism: u32,

    /// Longest time one call may take, at least 100ms.
    #[arg(long, env = "AUTHD_REQUEST_TIMEOUT", value_name = "AUTHD_REQUEST_TIMEOUT", default_value = DEFAULT_REQUEST_TIMEOUT, value_parser = duration_at_least(MIN_REQUEST_TIMEOUT))]
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
    #[arg(long, env = "AUTHD_VERIFY_CACHE_ENTRIES", value_name = "AUTHD_VERIFY_CACHE_ENTRIES", default_value_t = crate::tokens::DEFAULT_VERIFY_CACHE_ENTRIES)]
    pub verify_cache_entries: usize,

    /// HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "AUTHD_MAX_CONCURRENT_STREAMS", value_name = "AUTHD_MAX_CONCURRENT_STREAMS", default_value = DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: NonZeroU32,

    /// Serve gRPC server reflection (v1 and v1alpha), so grpcurl can list and call the API without
    /// proto files; `false` hides the API's shape from whoever can reach the port.
    #[arg(long, env = "AUTHD_REFLECTION", value_name = "AUTHD_REFLECTION", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub reflection: bool,

    /// Connections open at once; past it, new connections are closed as soon as accepted.
    #[arg(long, env = "AUTHD_MAX_CONNECTIONS", value_name = "AUTHD_MAX_CONNECTIONS", default_value = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: NonZeroUsize,

    /// Connections open at once from one peer address.
    #[arg(long, env = "AUTHD_MAX_CONNECTIONS_PER_SOURCE", value_name = "AUTHD_MAX_CONNECTIONS_PER_SOURCE", default_value = DEFAULT_MAX_CONNECTIONS_PER_SOURCE)]
    pub max_connections_per_source: NonZeroUsize,

    /// Time a new connection has to send the HTTP/2 preface, from 100ms to 10s.
    #[arg(long, env = "AUTHD_HANDSHAKE_TIMEOUT", value_name = "AUTHD_HANDSHAKE_TIMEOUT", default_value = DEFAULT_HANDSHAKE_TIMEOUT, value_parser = duration_between(Duration::from_millis(100), Duration::from_secs(10)))]
    pub handshake_timeout: Duration,

    /// How long a refresh token may go unused before it expires, at least 1s (each Refresh starts
    /// it again, never past the session's maximum age).
    #[arg(long, env = "AUTHD_REFRESH_TOKEN_TTL", value_name = "AUTHD_REFRESH_TOKEN_TTL", default_value = DEFAULT_REFRESH_TOKEN_TTL, value_parser = duration_at_least(Duration::from_secs(1)))]
    pub refresh_token_ttl: Duration,

    /// A session's absolute lifetime from sign-in, at least 1s.
    #[arg(long, env = "AUTHD_SESSION_MAX_AGE", value_name = "AUTHD_SESSION_MAX_AGE", default_value = DEFAULT_SESSION_MAX_AGE, value_parser = duration_at_least(Duration::from_secs(1)))]
    pub session_max_age: Duration,

    /// Within this long of a rotation, presenting the refresh token it spent returns a fresh pair
    /// instead of ending the session (0s to 5m; 0s: every reuse ends the session).
    #[arg(long, env = "AUTHD_REFRESH_REUSE_GRACE", value_name = "AUTHD_REFRESH_REUSE_GRACE", default_value = DEFAULT_REFRESH_REUSE_GRACE, value_parser = duration_between(Duration::ZERO, MAX_REFRESH_REUSE_GRACE))]
    pub refresh_reuse_grace: Duration,

    /// Live sessions one user may have; a sign-in past it ends the user's oldest (so that
    /// whoever holds a password cannot grow a user's sessions without bound, which would make
    /// LogoutAll and ListSessions ever larger).
    #[arg(long, env = "AUTHD_MAX_SESSIONS_PER_USER", value_name = "AUTHD_MAX_SESSIONS_PER_USER", default_value = "100", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_sessions_per_user: u32,

    /// Time a connection may stay open with no call in flight, at least 1s.
    #[arg(long, env = "AUTHD_IDLE_TIMEOUT", value_name = "AUTHD_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = duration_at_least(Duration::from_secs(1)))]
    pub idle_timeout: Duration,

    /// Also append the audit events (JSON lines) to this file; reopened on SIGHUP (logrotate).
    #[arg(long, env = "AUTHD_AUDIT_LOG", value_name = "AUTHD_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// Key of the audit log's email hashes (at least 32 bytes; the same on every instance so that
    /// their events correlate). Unset: a random key per process.
    #[arg(
        long,
        env = "AUTHD_AUDIT_HASH_KEY",
        value_name = "AUTHD_AUDIT_HASH_KEY",
        hide_env_values = true
    )]
    pub audit_hash_key: Option<SecretString>,

    /// The service credential of WatchRevocations (sent as `authorization: Bearer`): at least 32
    /// visible ASCII characters. Unset: only clients with a certificate (mTLS) may watch.
    #[arg(
        long,
        env = "AUTHD_WATCH_TOKEN",
        value_name = "AUTHD_WATCH_TOKEN",
        hide_env_values = true
    )]
    pub watch_token: Option<SecretString>,

    /// This instance's name in audit events. Default: the host name (a pod's name).
    #[arg(long, env = "AUTHD_INSTANCE_ID", value_name = "AUTHD_INSTANCE_ID")]
    pub instance_id: Option<String>,

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
