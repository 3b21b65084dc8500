//! Redis: the shared revocation set and login-throttle counts.
//!
//! One key per revoked jti, `{prefix}revoked:{jti}`, expiring at the token's `exp + leeway`
//! (SET … EXAT), so every instance sees a Logout at once and the set cleans itself up. One round
//! trip per Verify over a multiplexed, auto-reconnecting connection. Throttle counts are hashes
//! `{prefix}throttle:{key}` with fields `f` (failures) and `l` (latest failure, ms), updated in
//! one MULTI/EXEC and expiring by themselves.

use std::time::Duration;

use async_trait::async_trait;
use redis::{
    AsyncCommands as _, Client, Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use super::{FailureCount, RevocationStore, StoreError, ThrottleStore, bounded, millis};
use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::Jti,
};

const BACKEND: &str = "redis";
/// Connect and response timeouts: Verify fails closed quickly rather than hang.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the Redis data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (or a proxy in front of several).
    Single(String),
    /// A Redis Cluster, reached through these seed nodes; keys spread over its slots.
    Cluster(Vec<String>),
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
}

impl RedisStore {
    /// Connects (failing if Redis does not answer) with automatic reconnection afterwards.
    pub async fn connect(topology: &RedisTopology, prefix: &str) -> Result<Self, StoreError> {
        let bad_url = |e: redis::RedisError| StoreError::Unexpected(format!("bad Redis URL: {e}"));
        let connection = match topology {
            RedisTopology::Single(url) => {
                let client = Client::open(url.as_str()).map_err(bad_url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    // Every call is already bounded by `bounded` (one timer per call is enough).
                    .set_response_timeout(None)
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let manager = bounded(BACKEND, Duration::from_secs(5), async {
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map_err(redis_error)
                })
                .await?;
                RedisConnection::Single(manager)
            }
            RedisTopology::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    .retries(2)
                    .build()
                    .map_err(bad_url)?;
                let cluster = bounded(BACKEND, Duration::from_secs(5), async {
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
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            pubsub_url,
        })
    }

    /// Whether this store talks to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.connection, RedisConnection::Cluster(_))
    }

    fn key(&self, jti: Jti) -> String {
        format!("{}revoked:{}", self.prefix, jti)
    }

    /// The sorted set of revoked jtis scored by `until`: what a mirror loads on (re)connect.
    pub(crate) fn index_key(&self) -> String {
        format!("{}revoked-index", self.prefix)
    }

    /// The pub/sub channel on which revocations ("<jti> <until>") and heartbeats are announced.
    pub(crate) fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
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
        let mut connection = self.connection.clone();
        bounded(BACKEND, Duration::from_secs(10), async move {
            range
                .query_async(&mut connection)
                .await
                .map_err(redis_error)
        })
        .await
    }

    /// A dedicated subscription to the revocation channel.
    pub(crate) async fn subscribe(&self) -> Result<redis::aio::PubSub, StoreError> {
        let client = Client::open(self.pubsub_url.as_str())
            .map_err(|e| StoreError::Unexpected(format!("bad Redis URL: {e}")))?;
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
        let mut connection = self.connection.clone();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            publish
                .query_async::<()>(&mut connection)
                .await
                .map_err(redis_error)
        })
        .await
    }

    fn throttle_key(&self, key: &str) -> String {
        format!("{}throttle:{}", self.prefix, key)
    }
}

fn redis_error(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        reason: error.to_string(),
    }
}

#[async_trait]
impl RevocationStore for RedisStore {
    async fn revoke(
        &self,
        jti: Jti,
        until: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<(), StoreError> {
        if until < now {
            return Ok(());
        }
        // EXAT: the entry disappears exactly when the token can no longer be accepted.
        let expire_at = u64::try_from(until.saturating_add(1)).unwrap_or(u64::MAX);
        let options =
            redis::SetOptions::default().with_expiration(redis::SetExpiry::EXAT(expire_at));
        let mut set = redis::cmd("SET");
        set.arg(self.key(jti)).arg(1).arg(&options);
        // The index and the announcement feed the mirrors of instances in cached mode.
        // The index lives as long as its longest entry: EXPIREAT NX gives a new index a TTL,
        // EXPIREAT GT extends it (GT alone never sets one on a key without a TTL).
        let index_key = self.index_key();
        let expire_index_at = until.saturating_add(1);
        let mut index = redis::pipe();
        index
            .zadd(&index_key, jti.to_string(), until)
            .ignore()
            .cmd("EXPIREAT")
            .arg(&index_key)
            .arg(expire_index_at)
            .arg("NX")
            .ignore()
            .cmd("EXPIREAT")
            .arg(&index_key)
            .arg(expire_index_at)
            .arg("GT")
            .ignore();
        let mut announce = redis::cmd("PUBLISH");
        announce.arg(self.channel()).arg(format!("{jti} {until}"));
        let mut connection = self.connection.clone();
        let single = !self.is_cluster();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            if single {
                // One round trip.
                let mut pipe = redis::pipe();
                pipe.add_command(set).ignore();
                for command in index.cmd_iter() {
                    pipe.add_command(command.clone()).ignore();
                }
                pipe.add_command(announce).ignore();
                pipe.query_async::<()>(&mut connection)
                    .await
                    .map_err(redis_error)
            } else {
                // A cluster pipeline must stay within one slot: the key, then the index, then the
                // announcement.
                set.query_async::<()>(&mut connection)
                    .await
                    .map_err(redis_error)?;
                index
                    .query_async::<()>(&mut connection)
                    .await
                    .map_err(redis_error)?;
                announce
                    .query_async::<()>(&mut connection)
                    .await
                    .map_err(redis_error)
            }
        })
        .await
    }

    async fn is_revoked(&self, jti: Jti, _now: UnixSeconds) -> Result<bool, StoreError> {
        let key = self.key(jti);
        let mut connection = self.connection.clone();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            connection.exists(key).await.map_err(redis_error)
        })
        .await
    }

    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        // The revocation keys expire by themselves; the mirrors' index is trimmed here.
        let mut trim = redis::cmd("ZREMRANGEBYSCORE");
        trim.arg(self.index_key())
            .arg("-inf")
            .arg(format!("({now}"));
        let mut connection = self.connection.clone();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            trim.query_async(&mut connection).await.map_err(redis_error)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map_err(redis_error)?;
            Ok(())
        })
        .await
    }

    fn describe(&self) -> &'static str {
        "redis"
    }
}

#[async_trait]
impl ThrottleStore for RedisStore {
    async fn failures(
        &self,
        keys: &[String],
        now: UnixMillis,
    ) -> Result<Vec<FailureCount>, StoreError> {
        let mut counts = Vec::with_capacity(keys.len());
        // One pipeline per key: in a cluster, a pipeline must stay within one slot.
        for key in keys {
            let key = self.throttle_key(key);
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET").arg(&key).arg("f").arg("l").pttl(&key);
            let mut connection = self.connection.clone();
            let ((failures, last), ttl): ((Option<u32>, Option<i64>), i64) =
                bounded(BACKEND, REDIS_TIMEOUT, async move {
                    pipe.query_async(&mut connection).await.map_err(redis_error)
                })
                .await?;
            counts.push(match (failures, last) {
                (Some(failures), Some(last_failure)) if ttl > 0 => FailureCount {
                    failures,
                    last_failure,
                    window_ends: now.saturating_add(ttl),
                },
                _ => FailureCount::default(),
            });
        }
        Ok(counts)
    }

    async fn add_failure(
        &self,
        key: &str,
        memory: Duration,
        sliding: bool,
        now: UnixMillis,
    ) -> Result<FailureCount, StoreError> {
        let key = self.throttle_key(key);
        let mut expire = redis::cmd("PEXPIRE");
        expire.arg(&key).arg(millis(memory));
        if !sliding {
            // Only a new count gets a TTL: the window runs from the first failure.
            expire.arg("NX");
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hincr(&key, "f", 1)
            .hset(&key, "l", now)
            .ignore()
            .add_command(expire)
            .ignore()
            .pttl(&key);
        let mut connection = self.connection.clone();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            let (failures, ttl): (u32, i64) = pipe
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            Ok(FailureCount {
                failures,
                last_failure: now,
                window_ends: now.saturating_add(ttl.max(0)),
            })
        })
        .await
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let key = self.throttle_key(key);
        let mut connection = self.connection.clone();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            connection.del(key).await.map_err(redis_error)
        })
        .await
    }

    async fn purge_expired(&self, _now: UnixMillis) -> Result<u64, StoreError> {
        Ok(0)
    }
}
