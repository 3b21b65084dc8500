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
    AsyncCommands as _, Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{FailureCount, RevocationStore, StoreError, ThrottleStore, bounded, millis};
use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::Jti,
};

const BACKEND: &str = "redis";
/// Connect and response timeouts: Verify fails closed quickly rather than hang.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The Redis store; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
}

impl RedisStore {
    /// Connects (failing if Redis does not answer) with automatic reconnection afterwards.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client =
            Client::open(url).map_err(|e| StoreError::Unexpected(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            // Every call is already bounded by `bounded` (one timer per call is enough).
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = bounded(BACKEND, Duration::from_secs(5), async {
            ConnectionManager::new_with_config(client, config)
                .await
                .map_err(redis_error)
        })
        .await?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    fn key(&self, jti: Jti) -> String {
        format!("{}revoked:{}", self.prefix, jti)
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
        let key = self.key(jti);
        let mut connection = self.connection.clone();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            // EXAT: the entry disappears exactly when the token can no longer be accepted.
            let expire_at = u64::try_from(until.saturating_add(1)).unwrap_or(u64::MAX);
            let options =
                redis::SetOptions::default().with_expiration(redis::SetExpiry::EXAT(expire_at));
            connection
                .set_options::<_, _, ()>(key, 1, options)
                .await
                .map_err(redis_error)
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

    async fn purge_expired(&self, _now: UnixSeconds) -> Result<u64, StoreError> {
        Ok(0)
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
        let mut pipe = redis::pipe();
        for key in keys {
            let key = self.throttle_key(key);
            pipe.cmd("HMGET").arg(&key).arg("f").arg("l").pttl(&key);
        }
        let mut connection = self.connection.clone();
        bounded(BACKEND, REDIS_TIMEOUT, async move {
            let replies: Vec<((Option<u32>, Option<i64>), i64)> = pipe
                .query_async::<Vec<redis::Value>>(&mut connection)
                .await
                .map_err(redis_error)?
                .chunks(2)
                .map(|pair| redis::from_redis_value(redis::Value::Array(pair.to_vec())))
                .collect::<Result<_, _>>()
                .map_err(|e| StoreError::Unexpected(format!("unexpected Redis reply: {e}")))?;
            Ok(replies
                .into_iter()
                .map(|((failures, last), ttl)| match (failures, last) {
                    (Some(failures), Some(last_failure)) if ttl > 0 => FailureCount {
                        failures,
                        last_failure,
                        window_ends: now.saturating_add(ttl),
                    },
                    _ => FailureCount::default(),
                })
                .collect())
        })
        .await
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
