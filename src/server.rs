//! Wiring and serving: builds the back ends, the token authority and the service from the
//! configuration, then serves `auth.v1.AuthService`, grpc.health.v1 and reflection (v1 and
//! v1alpha) until shutdown, draining in-flight calls.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    api::{AuthApi, EdgeLayer},
    clock::{Clock, SystemClock},
    config::{Config, DatabaseSetting, JwtAlgorithm, RevocationMode},
    password::PasswordHasher,
    pb::{self, auth_service_server::AuthServiceServer},
    service::{AuthService, Parts},
    store::{
        RevocationStore, ThrottleStore, UserStore, mirror::MirroredRevocations,
        postgres::PostgresStore, redis::RedisStore, sqlite::SqliteStore,
    },
    throttle::LoginThrottle,
    token_cache::VerifiedTokenCache,
    tokens::{SigningKeyMaterial, TokenAuthority, load_or_generate_ed25519_key},
};

/// Requests larger than this are refused before they are decoded.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest HTTP/2 header block (metadata) accepted: a bearer token fits many times over.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// HTTP/2 PING interval on idle connections, and how long to wait for the answer before closing:
/// dead peers (and half-open connections through NATs) are noticed within a minute.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`HTTP2_KEEPALIVE_INTERVAL`].
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 connection-level flow-control window.
pub const HTTP2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// HTTP/2 stream-level flow-control window (a request is at most 64 KiB anyway).
pub const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;
/// TCP keep-alive for idle connections.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How often back ends are probed for the health service.
pub const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired revocations are purged from SQL stores.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The gRPC name of the service, as health checks know it.
pub const SERVICE_NAME: &str = "auth.v1.AuthService";

/// A built application, bound to its port, ready to serve.
pub struct App {
    listener: TcpListener,
    service: Arc<AuthService>,
    config: Config,
}

impl App {
    /// Connects the back ends (running migrations), loads or generates the signing key, and
    /// binds the listen address. Fails with a message naming the setting at fault.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.check()?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let backends = connect_backends(&config, clock.clone()).await?;
        tracing::info!(
            users = backends.users.describe(),
            revocations = backends.revocations.describe(),
            throttle = backends.throttle_describe,
            "back ends connected"
        );
        let tokens = token_authority(&config)?;
        let limits = config.hashing_limits();
        let hasher = PasswordHasher::new(limits)?;
        tracing::info!(
            threads = limits.concurrency,
            queue = limits.queue,
            "password hashing ready"
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let service = Arc::new(AuthService::new(Parts {
            users: backends.users,
            revocations: backends.revocations,
            throttle: LoginThrottle::new(backends.throttle, config.throttle_policy()),
            hasher,
            tokens,
            verified_tokens: VerifiedTokenCache::new(config.verify_cache_entries),
            clock,
        }));
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| {
                format!(
                    "invalid AUTHD_LISTEN_ADDR: cannot bind {}",
                    config.listen_addr
                )
            })?;
        Ok(Self {
            listener,
            service,
            config,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until SIGTERM or SIGINT, then drains in-flight calls.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        self.run_until_stopped(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = self.local_addr();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let (stop_tasks, stopped) = watch::channel(false);
        let tasks = [
            tokio::spawn(report_health(
                self.service.clone(),
                health_reporter,
                stopped.clone(),
            )),
            purge_revocations(self.service.clone(), stopped),
        ];

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let auth = AuthServiceServer::new(AuthApi::new(
            self.service.clone(),
            self.config.trusted_proxies.clone(),
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);

        tracing::info!(%address, "serving gRPC");
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let served = Server::builder()
            .max_concurrent_streams(self.config.max_concurrent_streams)
            // Larger flow-control windows: fewer WINDOW_UPDATE frames under many small calls.
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .tcp_keepalive(Some(TCP_KEEPALIVE))
            .layer(EdgeLayer::new(self.config.request_timeout))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                tracing::info!("shutting down: draining in-flight calls");
            })
            .await;

        let _ = stop_tasks.send(true);
        for task in tasks {
            let _ = task.await;
        }
        served.context("gRPC server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The connected stores.
struct Backends {
    users: Arc<dyn UserStore>,
    revocations: Arc<dyn RevocationStore>,
    throttle: Arc<dyn ThrottleStore>,
    throttle_describe: &'static str,
}

/// Users in Postgres or SQLite; revocations and throttle counts in Redis if configured, else in
/// the user database.
async fn connect_backends(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Backends> {
    let database_failed =
        |e| anyhow::anyhow!("invalid AUTHD_DATABASE_URL: cannot use the database: {e}");
    let mut backends = match config.database()? {
        DatabaseSetting::Postgres(url) => {
            let store = PostgresStore::connect(&url, config.database_max_connections)
                .await
                .map_err(database_failed)?;
            Backends {
                users: Arc::new(store.clone()),
                revocations: Arc::new(store.clone()),
                throttle: Arc::new(store),
                throttle_describe: "postgres",
            }
        }
        DatabaseSetting::Sqlite(url) => {
            create_private_dir(&config.data_dir)?;
            let store = SqliteStore::connect(&url).await.map_err(database_failed)?;
            Backends {
                users: Arc::new(store.clone()),
                revocations: Arc::new(store.clone()),
                throttle: Arc::new(store),
                throttle_describe: "sqlite",
            }
        }
    };
    if let Some(topology) = config.redis()? {
        let redis = RedisStore::connect(&topology, &config.redis_key_prefix)
            .await
            .map_err(|e| anyhow::anyhow!("invalid AUTHD_REDIS_URL: cannot use Redis: {e}"))?;
        backends.revocations = match config.revocation_mode {
            RevocationMode::Strict => Arc::new(redis.clone()),
            RevocationMode::Cached => Arc::new(MirroredRevocations::start(redis.clone(), clock)),
        };
        backends.throttle_describe = if redis.is_cluster() {
            "redis cluster"
        } else {
            "redis"
        };
        backends.throttle = Arc::new(redis);
    }
    Ok(backends)
}

fn token_authority(config: &Config) -> anyhow::Result<TokenAuthority> {
    let key = match config.jwt_alg {
        JwtAlgorithm::EdDsa => {
            let path = config.signing_key_path();
            if config.signing_key_file.is_none() {
                create_private_dir(&config.data_dir)?;
            }
            let (key, generated) = load_or_generate_ed25519_key(&path)
                .map_err(|e| anyhow::anyhow!("invalid AUTHD_SIGNING_KEY_FILE: {e:#}"))?;
            if generated {
                tracing::info!(path = %path.display(), "generated a new Ed25519 signing key");
            }
            SigningKeyMaterial::Ed25519(key)
        }
        JwtAlgorithm::Hs256 => SigningKeyMaterial::Hs256(
            config
                .jwt_secret
                .clone()
                .context("invalid AUTHD_JWT_SECRET: required with AUTHD_JWT_ALG=HS256")?,
        ),
    };
    let tokens = TokenAuthority::new(
        key,
        &config.jwt_issuer,
        &config.jwt_audience,
        config.access_token_ttl,
        config.clock_leeway,
    )?;
    tracing::info!(algorithm = ?tokens.algorithm(), kid = tokens.key_id(), "token signing ready");
    Ok(tokens)
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("invalid AUTHD_DATA_DIR: cannot create {}", dir.display()))
}

/// Probes the back ends every second: SERVING while all answer, NOT_SERVING otherwise, for both
/// the overall ("") and the `auth.v1.AuthService` health entries.
async fn report_health(
    service: Arc<AuthService>,
    reporter: HealthReporter,
    mut stopped: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let status = match service.check_backends().await {
            Ok(()) => ServingStatus::Serving,
            Err(error) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(?error, "health: NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            reporter.set_service_status("", status).await;
            reporter.set_service_status(SERVICE_NAME, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
            _ = stopped.changed() => {
                reporter.set_service_status("", ServingStatus::NotServing).await;
                reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
                return;
            }
        }
    }
}

/// Purges expired revocation entries once a minute (a no-op for Redis).
fn purge_revocations(
    service: Arc<AuthService>,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PURGE_INTERVAL) => {}
                _ = stopped.changed() => return,
            }
            match service.purge_expired_revocations().await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "purged expired revocations"),
                Err(error) => tracing::warn!(?error, "purging revocations failed"),
            }
            match service.purge_expired_throttle_counts().await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "purged forgotten login-failure counts"),
                Err(error) => tracing::warn!(?error, "purging login-failure counts failed"),
            }
        }
    })
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, before "serving" is
/// logged, so a signal that arrives right after start-up still shuts down gracefully.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let terminated = async {
                match terminate.as_mut() {
                    Some(terminate) => terminate.recv().await,
                    None => std::future::pending().await,
                }
            };
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(interrupt) => interrupt.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = terminated => {}
                _ = interrupted => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
