//! Login-throttle counts in Redis: a hash `{prefix}throttle:{key}` with fields `f` (failures) and
//! `l` (latest failure, ms), updated in one MULTI/EXEC and expiring by itself (PEXPIRE: from the
//! latest failure when sliding, else from the first).

use std::time::Duration;

use async_trait::async_trait;

use super::{REDIS_TIMEOUT, RedisStore};
use crate::{
    clock::UnixMillis,
    store::{FailureCount, RevocationStore, StoreError, ThrottleStore, millis},
};

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
            let ((failures, last), ttl): ((Option<u32>, Option<i64>), i64) = self
                .query(REDIS_TIMEOUT, async move |connection| {
                    pipe.query_async(connection).await
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
        let (failures, ttl): (u32, i64) = self
            .query(REDIS_TIMEOUT, async move |connection| {
                pipe.query_async(connection).await
            })
            .await?;
        Ok(FailureCount {
            failures,
            last_failure: now,
            window_ends: now.saturating_add(ttl.max(0)),
        })
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let mut delete = redis::cmd("DEL");
        delete.arg(self.throttle_key(key));
        self.query(REDIS_TIMEOUT, async move |connection| {
            delete.query_async::<()>(connection).await
        })
        .await
    }

    async fn purge_expired(&self, _now: UnixMillis) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn describe(&self) -> &'static str {
        RevocationStore::describe(self)
    }
}
