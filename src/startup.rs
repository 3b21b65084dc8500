//! Start-up: from `Settings` and a `Clock`, connect the back ends (running migrations), load or
//! generate the signing key, start the hashing pool, assemble the service and bind the listen
//! address. Every failure names the setting at fault. Serving is `server.rs`'s job.

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::{
    clock::Clock,
    config::{
        GatewaySettings, RevocationMode, ServerLimits, Settings, SigningKeySetting, TokenSettings,
    },
    hashing::PasswordHasher,
    server::tls::{self, ReloadingTls},
    service::{AuthService, NormalizationReport, Parts},
    store::{
        EvictionPolicy, MirroredRevocations, PolledRevocations, RedisStore, RedisTls,
        ResidentRevocations, RevocationStore, SessionStore, SqlStore, ThrottleStore, UserStore,
        warn_unknown_eviction_policy,
    },
    throttle::LoginThrottle,
    tokens::{
        self, ScheduledKey, SigningKeyMaterial, TokenAuthority, VerifiedTokenCache,
        directory::KeyDirectory, load_ed25519_key,
    },
};

/// A built application, bound to its ports, ready to serve (`server.rs`).
pub struct App {
    pub(crate) listener: TcpListener,
    /// The HTTP listener (`http.rs`), unless `off`, and the public URL it is reached at.
    pub(crate) http: Option<(TcpListener, String)>,
    /// TLS of the gRPC and HTTP listeners, when configured (their ALPN differs).
    pub(crate) grpc_tls: Option<Arc<ReloadingTls>>,
    pub(crate) http_tls: Option<Arc<ReloadingTls>>,
    /// What gateways are told for an accepted token.
    pub(crate) gateway: GatewaySettings,
    /// How often the signing keys directory is read again.
    pub(crate) keys_reload: std::time::Duration,
    pub(crate) service: Arc<AuthService>,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    pub(crate) limits: ServerLimits,
    pub(crate) reflection: bool,
    /// Held while serving: the embedded database is single-process.
    pub(crate) _database_lock: Option<std::fs::File>,
}

impl App {
    /// Wires everything from `settings`, reading time from `clock` (the system clock in
    /// production, a settable one in tests).
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let (grpc_tls, http_tls) = match &settings.tls {
            Some(files) => (
                Some(ReloadingTls::load(files, tls::GRPC_ALPN)?),
                Some(ReloadingTls::load(files, tls::HTTP_ALPN)?),
            ),
            None => (None, None),
        };
        let database_lock = lock_database(&settings)?;
        let backends = connect_backends(&settings, clock.clone()).await?;
        tracing::info!(
            users = backends.users.describe(),
            revocations = backends.revocations.describe(),
            throttle = backends.throttle.describe(),
            "back ends connected"
        );
        let (tokens, signing_keys) = token_authority(&settings.signing_key, &settings.tokens)?;
        let hasher = PasswordHasher::new(settings.hashing, settings.password_params)?;
        let audit = audit_log(&settings.audit)?;
        tracing::info!(
            threads = settings.hashing.concurrency,
            queue = settings.hashing.queue,
            "password hashing ready"
        );
        let service = Arc::new(AuthService::new(Parts {
            users: backends.users,
            sessions: backends.sessions,
            session_policy: settings.sessions,
            revocations: backends.revocations,
            throttle: LoginThrottle::new(backends.throttle, settings.throttle),
            hasher,
            tokens,
            signing_keys,
            verified_tokens: VerifiedTokenCache::new(settings.verify_cache_entries),
            audit,
            watchers: settings.watchers.clone(),
            clock,
        }));
        report_email_normalization(service.normalize_stored_emails().await?);
        service
            .watch_revocation_store()
            .await
            .map_err(|e| anyhow::Error::new(e).context("cannot check the revocation store"))?;
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| {
                format!(
                    "invalid AUTHD_LISTEN_ADDR: cannot bind {}",
                    settings.listen_addr
                )
            })?;
        let http = match &settings.http {
            Some(http) => {
                let listener = TcpListener::bind(http.listen_addr).await.with_context(|| {
                    format!(
                        "invalid AUTHD_HTTP_LISTEN_ADDR: cannot bind {} (`off` disables the HTTP \
                         listener)",
                        http.listen_addr
                    )
                })?;
                let public_url = match &http.public_url {
                    Some(url) => url.clone(),
                    None => format!(
                        "{}://{}",
                        if http_tls.is_some() { "https" } else { "http" },
                        listener.local_addr()?
                    ),
                };
                Some((listener, public_url))
            }
            None => None,
        };
        Ok(Self {
            listener,
            http,
            grpc_tls,
            http_tls,
            gateway: settings.gateway,
            keys_reload: settings.signing_keys_reload,
            service,
            trusted_proxies: settings.trusted_proxies,
            limits: settings.server,
            reflection: settings.reflection,
            _database_lock: database_lock,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The bound address of the HTTP listener, unless it is `off`.
    pub fn http_local_addr(&self) -> Option<SocketAddr> {
        let (listener, _) = self.http.as_ref()?;
        listener.local_addr().ok()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }
}

/// Logs what re-normalising the stored emails did (the first start after an upgrade).
fn report_email_normalization(report: Option<NormalizationReport>) {
    let Some(report) = report else { return };
    tracing::info!(
        updated = report.updated,
        "stored emails re-normalised (NFKC, IDNA)"
    );
    for (kept, holder) in &report.collisions {
        tracing::error!(
            user_id = %kept,
            other_user_id = %holder,
            "two accounts now share one normalised email: both are kept, nothing was deleted; the \
             first cannot sign in under its email until an operator resolves the pair"
        );
    }
    for user_id in &report.unparsable {
        tracing::warn!(%user_id, "a stored email no longer parses; the account was left as it was");
    }
}

/// Locks the embedded database file itself (an advisory `flock`, which SQLite's own `fcntl`
/// locks do not interact with on local file systems), so that a second process on the same
/// database refuses to start, whatever path, symlink or hard link it names it by: the embedded
/// store keeps revocations in memory, and two processes would not see each other's. The file is
/// created empty if missing (an empty file is an empty SQLite database).
fn lock_database(settings: &Settings) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = settings.database.lock_target() else {
        return Ok(None);
    };
    if settings.database.is_embedded() {
        create_private_dir(&settings.data_dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&path)
        .with_context(|| format!("invalid AUTHD_DATA_DIR: cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "invalid AUTHD_DATA_DIR: another authd process is using the embedded database ({} is \
             locked); the embedded store serves one process only: stop the other, give this one \
             its own AUTHD_DATA_DIR, or use Postgres and Redis to run several instances",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => Err(anyhow::Error::new(error).context(
            format!("invalid AUTHD_DATA_DIR: cannot lock {}", path.display()),
        )),
    }
}

/// The connected stores.
struct Backends {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    revocations: Arc<dyn RevocationStore>,
    throttle: Arc<dyn ThrottleStore>,
}

/// Users in Postgres or SQLite; revocations and throttle counts in Redis if configured, else in
/// the user database.
async fn connect_backends(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Backends> {
    if settings.database.is_embedded() {
        create_private_dir(&settings.data_dir)?;
    }
    let sql = SqlStore::connect(&settings.database, settings.database_max_connections)
        .await
        .map_err(|e| {
            anyhow::Error::new(e).context("invalid AUTHD_DATABASE_URL: cannot use the database")
        })?;
    let Some(topology) = &settings.redis else {
        // One process owns an embedded database (it is locked): its revocations can live in
        // memory, written through. Postgres may be shared by several instances: ask it each time.
        // With watchers, Postgres is polled for their feed.
        let revocations: Arc<dyn RevocationStore> = if settings.database.is_embedded() {
            Arc::new(ResidentRevocations::load(sql.clone(), clock).await?)
        } else if settings.watchers.enabled() {
            Arc::new(PolledRevocations::start(sql.clone(), clock))
        } else {
            Arc::new(sql.clone())
        };
        return Ok(Backends {
            users: Arc::new(sql.clone()),
            sessions: Arc::new(sql.clone()),
            revocations,
            throttle: Arc::new(sql),
        });
    };
    let redis_tls = read_redis_tls(&settings.redis_tls)?;
    let redis = RedisStore::connect(
        topology,
        &redis_tls,
        &settings.redis_key_prefix,
        settings.redis_allow_eviction,
    )
    .await
    .map_err(|e| anyhow::Error::new(e).context("invalid AUTHD_REDIS_URL: cannot use Redis"))?;
    check_eviction_policy(&redis, settings.redis_allow_eviction).await?;
    let revocations: Arc<dyn RevocationStore> = match settings.revocation_mode {
        // Strict mode keeps a mirror only to feed watchers; Verify still asks Redis.
        RevocationMode::Strict if settings.watchers.enabled() => {
            Arc::new(MirroredRevocations::feeding_watchers(redis.clone(), clock))
        }
        RevocationMode::Strict => Arc::new(redis.clone()),
        RevocationMode::Cached => Arc::new(MirroredRevocations::start(redis.clone(), clock)),
    };
    Ok(Backends {
        users: Arc::new(sql.clone()),
        sessions: Arc::new(sql),
        revocations,
        throttle: Arc::new(redis),
    })
}

/// Refuses a Redis that may evict keys (revocations carry a TTL, so every policy but noeviction
/// can drop them when Redis is full), unless AUTHD_REDIS_ALLOW_EVICTION=true: then a warning, at
/// every start. A policy that cannot be read (managed Redis refusing CONFIG) draws a warning
/// saying what to check.
async fn check_eviction_policy(redis: &RedisStore, allowed: bool) -> anyhow::Result<()> {
    for policy in redis.eviction_policies().await {
        match policy {
            EvictionPolicy::Safe => {}
            EvictionPolicy::Evicting { node, policy } if allowed => tracing::warn!(
                %node,
                policy,
                "Redis evicts keys (AUTHD_REDIS_ALLOW_EVICTION=true): when it is full, revoked \
                 tokens may verify again"
            ),
            EvictionPolicy::Evicting { node, policy } => anyhow::bail!(
                "invalid AUTHD_REDIS_URL: Redis at {node} has maxmemory-policy {policy}, which \
                 evicts keys when it is full, and revoked tokens would verify again; set \
                 maxmemory-policy noeviction on that server, or AUTHD_REDIS_ALLOW_EVICTION=true \
                 to accept the risk"
            ),
            EvictionPolicy::Unknown { node, reason } => {
                warn_unknown_eviction_policy(&node, &reason)
            }
        }
    }
    Ok(())
}

/// The token authority for the configured key or keys, and the keys directory to re-read (when
/// keys come from one). A keys directory that holds no key gets one on first start (the single
/// key file of earlier versions, if there is one, else a new key).
fn token_authority(
    key: &SigningKeySetting,
    settings: &TokenSettings,
) -> anyhow::Result<(TokenAuthority, Option<KeyDirectory>)> {
    let (keys, directory) = match key {
        SigningKeySetting::Ed25519Directory { dir, legacy } => {
            let invalid =
                |e: anyhow::Error| anyhow::anyhow!("invalid AUTHD_SIGNING_KEYS_DIR: {e:#}");
            let directory = KeyDirectory::new(dir);
            if directory.ensure_key(Some(legacy)).map_err(invalid)? {
                tracing::info!(dir = %dir.display(), "generated a new Ed25519 signing key");
            }
            let keys = directory.load().map_err(invalid)?;
            (tokens::directory::scheduled(keys), Some(directory))
        }
        SigningKeySetting::Ed25519File(path) => {
            let key = load_ed25519_key(path)
                .map_err(|e| anyhow::anyhow!("invalid AUTHD_SIGNING_KEY_FILE: {e:#}"))?;
            (vec![always(SigningKeyMaterial::Ed25519(key))], None)
        }
        SigningKeySetting::Hs256(secret) => (
            vec![always(SigningKeyMaterial::Hs256(secret.clone()))],
            None,
        ),
    };
    let tokens = TokenAuthority::with_keys(
        keys,
        &settings.issuer,
        &settings.audience,
        settings.ttl,
        settings.leeway,
    )?;
    tracing::info!(
        algorithm = ?tokens.algorithm(),
        keys = ?tokens.schedule(),
        "token signing ready"
    );
    Ok((tokens, directory))
}

/// A key that signs from the start.
fn always(material: SigningKeyMaterial) -> ScheduledKey {
    ScheduledKey {
        material,
        starts_at: crate::clock::UnixSeconds::MIN,
    }
}

/// Creates the data directory readable by its owner only.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    tokens::create_private_dir(dir)
        .with_context(|| format!("invalid AUTHD_DATA_DIR: cannot create {}", dir.display()))
}

/// Reads the Redis TLS files named by the settings.
fn read_redis_tls(files: &crate::config::RedisTlsFiles) -> anyhow::Result<RedisTls> {
    let read = |path: &std::path::Path, setting: &str| {
        std::fs::read(path).with_context(|| format!("{setting}: cannot read {}", path.display()))
    };
    Ok(RedisTls {
        root_ca_pem: files
            .ca_file
            .as_deref()
            .map(|path| read(path, "AUTHD_REDIS_CA_FILE"))
            .transpose()?,
        client_identity_pem: files
            .client_identity
            .as_ref()
            .map(|(cert, key)| {
                Ok::<_, anyhow::Error>((
                    read(cert, "AUTHD_REDIS_CLIENT_CERT_FILE")?,
                    read(key, "AUTHD_REDIS_CLIENT_KEY_FILE")?,
                ))
            })
            .transpose()?,
    })
}

/// The audit log the settings describe; with no AUTHD_AUDIT_HASH_KEY, email hashes are keyed
/// with a random key of this process (they correlate until it restarts, and not across
/// instances).
fn audit_log(settings: &crate::config::AuditSettings) -> anyhow::Result<crate::audit::AuditLog> {
    use secrecy::ExposeSecret as _;
    let key: Vec<u8> = match &settings.email_hash_key {
        Some(key) => key.expose_secret().as_bytes().to_vec(),
        None => {
            tracing::info!(
                "audit: no AUTHD_AUDIT_HASH_KEY; email hashes in audit events correlate within this process only"
            );
            (0..32).map(|_| rand::random::<u8>()).collect()
        }
    };
    let audit = crate::audit::AuditLog::new(
        settings.instance_id.clone(),
        secrecy::SecretSlice::from(key),
        settings.file.as_deref(),
    )?;
    if let Some(file) = &settings.file {
        tracing::info!(path = %file.display(), instance_id = %settings.instance_id, "audit events also go to AUTHD_AUDIT_LOG");
    }
    Ok(audit)
}
