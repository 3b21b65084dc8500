//! Redis: the shared revocation set. One key per revoked jti, `{prefix}revoked:{jti}`, expiring
//! at the token's `exp + leeway` (SET … EXAT), so every instance sees a Logout at once and the set
//! cleans itself up. One round trip per Verify over a multiplexed, auto-reconnecting connection.

use std::time::Duration;

use async_trait::async_trait;
use redis::{
    AsyncCommands as _, Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{RevocationStore, StoreError, bounded};
use crate::{clock::UnixSeconds, domain::Jti};

const BACKEND: &str = "redis";
/// Connect and response timeouts: Verify fails closed quickly rather than hang.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The Redis revocation store; cheap to clone.
#[derive(Clone)]
pub struct RedisRevocations {
    connection: ConnectionManager,
    prefix: String,
}

impl RedisRevocations {
    /// Connects (failing if Redis does not answer) with automatic reconnection afterwards.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client =
            Client::open(url).map_err(|e| StoreError::Unexpected(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = bounded(BACKEND, async {
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
}

fn redis_error(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        reason: error.to_string(),
    }
}

#[async_trait]
impl RevocationStore for RedisRevocations {
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
        bounded(BACKEND, async move {
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
        bounded(BACKEND, async move {
            connection.exists(key).await.map_err(redis_error)
        })
        .await
    }

    async fn purge_expired(&self, _now: UnixSeconds) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        bounded(BACKEND, async move {
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
