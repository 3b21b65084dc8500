//! Redis: the shared revocation set (`revocations.rs`) and login-throttle counts (`throttle.rs`),
//! on one server or a Redis Cluster, over a multiplexed, auto-reconnecting connection. This file
//! owns the topology, the connection (TLS for `rediss://`, with a CA and a client certificate of
//! the operator's) and the key names.

mod eviction;
mod revocations;
mod throttle;

pub use eviction::{EvictionPolicy, warn_unknown as warn_unknown_eviction_policy};
pub(crate) use revocations::parse_index_member;

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use redis::{
    Client, Cmd, IntoConnectionInfo as _, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use super::{StoreError, bounded};
use crate::{
    clock::UnixSeconds,
    domain::{Jti, UserId},
};

const BACKEND: &str = "redis";
/// Connect and response timeouts: Verify fails closed quickly rather than hang.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long start-up waits for Redis to answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one page of the mirror's index load may take.
const INDEX_PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS material for `rediss://` URLs (PEM bytes). Empty: the system's roots (webpki), no client
/// certificate. Ignored for `redis://`.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// CA certificates to trust instead of the system's roots.
    pub root_ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key (TLS client authentication).
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("root_ca", &self.root_ca_pem.is_some())
            .field("client_identity", &self.client_identity_pem.is_some())
            .finish()
    }
}

impl RedisTls {
    fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.root_ca_pem.is_none() && self.client_identity_pem.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self
                .client_identity_pem
                .clone()
                .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
            root_cert: self.root_ca_pem.clone(),
        })
    }

    /// A client of `url`, with this TLS material when the URL is `rediss://`.
    pub(crate) fn client(&self, url: &str) -> Result<Client, StoreError> {
        match self.certificates() {
            Some(certificates) if url.starts_with("rediss:") => {
                Client::build_with_tls(url, certificates)
            }
            _ => Client::open(url),
        }
        .map_err(StoreError::unexpected)
    }
}

/// Where the Redis data lives. Every URL was parsed by the redis crate when the settings were read.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (or a proxy in front of several).
    Single(String),
    /// A Redis Cluster, reached through these seed nodes; keys spread over its slots.
    Cluster(Vec<String>),
}

impl RedisTopology {
    /// Parses `AUTHD_REDIS_URL`'s comma-separated seed URLs, each by the redis crate. Empty
    /// entries are skipped; none at all means no Redis.
    pub fn parse_nodes(urls: &str) -> Result<Vec<String>, String> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        for url in &urls {
            url.as_str()
                .into_connection_info()
                .map_err(|e| format!("{:?} is not a usable Redis URL: {e}", redact_url(url)))?;
        }
        Ok(urls)
    }

    /// One server, or a cluster when there are several seeds (or `force_cluster`); `None`
    /// without nodes.
    pub fn from_nodes(nodes: &[String], force_cluster: bool) -> Option<Self> {
        match nodes {
            [] => None,
            [url] if !force_cluster => Some(Self::Single(url.clone())),
            nodes => Some(Self::Cluster(nodes.to_vec())),
        }
    }
}

/// URLs may carry a password: print them redacted.
impl fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(url) => write!(f, "Single({})", redact_url(url)),
            Self::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
                write!(f, "Cluster({nodes:?})")
            }
        }
    }
}

/// A URL without its user and password, for messages.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// A multiplexed, auto-reconnecting connection to one server or to a cluster.
#[derive(Clone)]
enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The Redis store; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    connection: RedisConnection,
    prefix: String,
    /// A node to subscribe to (in a cluster, PUBLISH reaches every node).
    pubsub_url: String,
    /// Every configured node, for the eviction-policy check.
    nodes: Arc<[String]>,
    /// The eviction-policy check after reconnects.
    eviction: Arc<EvictionCheck>,
    /// TLS material for the connections opened later (pub/sub, policy reads).
    tls: Arc<RedisTls>,
}

/// Whether an evicting policy is accepted, and when to look again.
struct EvictionCheck {
    allowed: bool,
    /// Set when a call failed: the next answer comes from a new connection, look then.
    recheck: AtomicBool,
    /// Whether an evicting policy has been reported (logged once until it is safe again).
    reported: AtomicBool,
    /// When the policy was last read (ms since `since`): reconnects the connection manager
    /// makes by itself are not seen, so the policy is also read again every so often.
    last_checked_ms: std::sync::atomic::AtomicU64,
    since: std::time::Instant,
}

impl RedisStore {
    /// Connects (failing if Redis does not answer) with automatic reconnection afterwards.
    /// `allow_eviction` (AUTHD_REDIS_ALLOW_EVICTION) accepts an evicting `maxmemory-policy`
    /// after a reconnect with a warning instead of an unhealthy store.
    pub async fn connect(
        topology: &RedisTopology,
        tls: &RedisTls,
        prefix: &str,
        allow_eviction: bool,
    ) -> Result<Self, StoreError> {
        let connection = match topology {
            RedisTopology::Single(url) => {
                let client = tls.client(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    // Every call is already bounded by `bounded` (one timer per call is enough).
                    .set_response_timeout(None)
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let manager = bounded(BACKEND, CONNECT_TIMEOUT, async {
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map_err(redis_error)
                })
                .await?;
                RedisConnection::Single(manager)
            }
            RedisTopology::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str));
                if let Some(certificates) = tls.certificates()
                    && nodes.iter().all(|node| node.starts_with("rediss:"))
                {
                    builder = builder.certs(certificates);
                }
                let client = builder
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    .retries(2)
                    .build()
                    .map_err(StoreError::unexpected)?;
                let cluster = bounded(BACKEND, CONNECT_TIMEOUT, async {
                    client.get_async_connection().await.map_err(redis_error)
                })
                .await?;
                RedisConnection::Cluster(cluster)
            }
        };
        let pubsub_url = match topology {
            RedisTopology::Single(url) => url.clone(),
            RedisTopology::Cluster(nodes) => nodes.first().cloned().unwrap_or_default(),
        };
        let nodes: Arc<[String]> = match topology {
            RedisTopology::Single(url) => Arc::from([url.clone()]),
            RedisTopology::Cluster(nodes) => nodes.clone().into(),
        };
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            pubsub_url,
            nodes,
            eviction: Arc::new(EvictionCheck {
                allowed: allow_eviction,
                recheck: AtomicBool::new(false),
                reported: AtomicBool::new(false),
                last_checked_ms: std::sync::atomic::AtomicU64::new(0),
                since: std::time::Instant::now(),
            }),
            tls: Arc::new(tls.clone()),
        })
    }

    /// Whether this store talks to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.connection, RedisConnection::Cluster(_))
    }

    /// Runs one command or pipeline, bounded by `limit`.
    async fn query<T: redis::FromRedisValue>(
        &self,
        limit: Duration,
        run: impl AsyncFnOnce(&mut RedisConnection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        bounded(BACKEND, limit, async move {
            run(&mut connection).await.map_err(redis_error)
        })
        .await
    }

    /// Where revocations of a jti were kept before sessions existed: still read for tokens without
    /// a session, and still written, so that instances of the older version see Logouts.
    fn legacy_revoked_key(&self, jti: Jti) -> String {
        format!("{}revoked:{}", self.prefix, jti)
    }

    /// The start of every key of one user's revocations. The hash tag puts them in one Redis
    /// Cluster slot, so Verify reads all of a token's in one round trip.
    fn user_keys(&self, user: UserId) -> String {
        format!("{}{{u:{}}}:", self.prefix, user)
    }

    /// The sorted set of revoked jtis scored by `until`: what a mirror loads on (re)connect.
    fn index_key(&self) -> String {
        format!("{}revoked-index", self.prefix)
    }

    /// The pub/sub channel on which revocations ("<member> <until>", the member as in the index)
    /// and heartbeats ("ping <id>") are announced.
    fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// The data marker: a key without TTL whose absence means Redis lost its data.
    fn marker_key(&self) -> String {
        format!("{}data-marker", self.prefix)
    }

    fn throttle_key(&self, key: &str) -> String {
        format!("{}throttle:{}", self.prefix, key)
    }

    /// One page of the revocations still in force at `now`, from the index.
    pub(crate) async fn live_revocations(
        &self,
        now: UnixSeconds,
        offset: usize,
        count: usize,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut range = redis::cmd("ZRANGE");
        range
            .arg(self.index_key())
            .arg(now)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(offset)
            .arg(count)
            .arg("WITHSCORES");
        self.query(INDEX_PAGE_TIMEOUT, async move |connection| {
            range.query_async(connection).await
        })
        .await
    }

    /// A dedicated subscription to the revocation channel.
    pub(crate) async fn subscribe(&self) -> Result<redis::aio::PubSub, StoreError> {
        let client = self.tls.client(&self.pubsub_url)?;
        let channel = self.channel();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            let mut pubsub = client.get_async_pubsub().await.map_err(redis_error)?;
            pubsub.subscribe(channel).await.map_err(redis_error)?;
            Ok(pubsub)
        })
        .await
    }

    /// Publishes `message` on the revocation channel.
    pub(crate) async fn announce(&self, message: &str) -> Result<(), StoreError> {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.channel()).arg(message);
        self.query(REDIS_TIMEOUT, async move |connection| {
            publish.query_async::<()>(connection).await
        })
        .await
    }

    /// Checks that Redis answers; the first answer after a failure (a reconnect) also checks
    /// the eviction policy again.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let answered = self
            .query(REDIS_TIMEOUT, async |connection| {
                redis::cmd("PING")
                    .query_async::<String>(connection)
                    .await
                    .map(drop)
            })
            .await;
        if answered.is_err() {
            self.eviction.recheck.store(true, Ordering::Release);
        }
        answered?;
        self.recheck_eviction_after_reconnect().await
    }
}

/// Every Redis failure is `Unavailable`: Verify and Login fail closed.
fn redis_error(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        cause: error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(urls: &str, force_cluster: bool) -> Option<RedisTopology> {
        RedisTopology::from_nodes(&RedisTopology::parse_nodes(urls).unwrap(), force_cluster)
    }

    #[test]
    fn several_urls_mean_a_cluster() {
        assert_eq!(
            topology("redis://a:7000, redis://b:7001", false),
            Some(RedisTopology::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into()
            ]))
        );
        assert_eq!(
            topology("redis://a:7000", false),
            Some(RedisTopology::Single("redis://a:7000".into()))
        );
        assert!(matches!(
            topology("redis://a:7000", true),
            Some(RedisTopology::Cluster(_))
        ));
        assert_eq!(topology(" , ", false), None);
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let error = RedisTopology::parse_nodes("http://user:secret@a:7000").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
        let topology = topology("redis://:secret@a:7000", false).unwrap();
        assert!(!format!("{topology:?}").contains("secret"));
    }
}
