//! The revocation set in Redis. One key per revoked jti, `{prefix}revoked:{jti}`, expiring when
//! the token can no longer be accepted anyway (SET … EXAT `exp + leeway + 1`), so every instance
//! sees a Logout at once and the set cleans itself up; one EXISTS per Verify. Beside it, for the
//! cached-mode mirrors: a sorted-set index scored by `until`, and an announcement on the channel.

use async_trait::async_trait;

use super::{REDIS_TIMEOUT, RedisStore};
use crate::{
    clock::UnixSeconds,
    domain::Jti,
    store::{RevocationStore, StoreError},
};

impl RedisStore {
    /// The revocation key itself. Revoking again keeps the later expiry: SET NX creates the key
    /// with its EXAT, EXPIREAT GT moves an existing key's expiry only forward.
    fn set_revoked(&self, jti: Jti, until: UnixSeconds) -> redis::Pipeline {
        // The entry disappears exactly when the token can no longer be accepted.
        let expire_at = u64::try_from(until.saturating_add(1)).unwrap_or(u64::MAX);
        let key = self.revoked_key(jti);
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::EXAT(expire_at));
        let mut set = redis::pipe();
        set.cmd("SET").arg(&key).arg(1).arg(&options).ignore();
        set.cmd("EXPIREAT")
            .arg(&key)
            .arg(expire_at)
            .arg("GT")
            .ignore();
        set
    }

    /// The index entry. The index lives as long as its longest entry: EXPIREAT NX gives a new
    /// index a TTL, EXPIREAT GT extends it (GT alone never sets one on a key without a TTL).
    fn index_revoked(&self, jti: Jti, until: UnixSeconds) -> redis::Pipeline {
        let index_key = self.index_key();
        let expire_index_at = until.saturating_add(1);
        let mut index = redis::pipe();
        // GT: a second revocation of one jti never lowers its score.
        index
            .cmd("ZADD")
            .arg(&index_key)
            .arg("GT")
            .arg(until)
            .arg(jti.to_string())
            .ignore();
        for condition in ["NX", "GT"] {
            index
                .cmd("EXPIREAT")
                .arg(&index_key)
                .arg(expire_index_at)
                .arg(condition)
                .ignore();
        }
        index
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
        let set = self.set_revoked(jti, until);
        let index = self.index_revoked(jti, until);
        let mut announce = redis::cmd("PUBLISH");
        announce.arg(self.channel()).arg(format!("{jti} {until}"));
        if self.is_cluster() {
            // A cluster pipeline must stay within one slot: the key, then the index, then the
            // announcement.
            self.query(REDIS_TIMEOUT, async move |connection| {
                set.query_async::<()>(&mut *connection).await?;
                index.query_async::<()>(&mut *connection).await?;
                announce.query_async::<()>(connection).await
            })
            .await
        } else {
            // One round trip.
            let mut pipe = redis::pipe();
            for command in set.cmd_iter().chain(index.cmd_iter()) {
                pipe.add_command(command.clone()).ignore();
            }
            pipe.add_command(announce).ignore();
            self.query(REDIS_TIMEOUT, async move |connection| {
                pipe.query_async::<()>(connection).await
            })
            .await
        }
    }

    async fn is_revoked(&self, jti: Jti, _now: UnixSeconds) -> Result<bool, StoreError> {
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.revoked_key(jti));
        self.query(REDIS_TIMEOUT, async move |connection| {
            exists.query_async(connection).await
        })
        .await
    }

    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        // The revocation keys expire by themselves; the mirrors' index is trimmed here.
        let mut trim = redis::cmd("ZREMRANGEBYSCORE");
        trim.arg(self.index_key())
            .arg("-inf")
            .arg(format!("({now}"));
        self.query(REDIS_TIMEOUT, async move |connection| {
            trim.query_async(connection).await
        })
        .await
    }

    async fn data_marker(&self) -> Result<Option<String>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.marker_key());
        self.query(REDIS_TIMEOUT, async move |connection| {
            get.query_async(connection).await
        })
        .await
    }

    async fn place_data_marker(&self, marker: &str) -> Result<String, StoreError> {
        // SET NX, no TTL, then read what is there: instances placing at once agree on one.
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.marker_key())
            .arg(marker)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(self.marker_key());
        let (placed,): (String,) = self
            .query(REDIS_TIMEOUT, async move |connection| {
                pipe.query_async(connection).await
            })
            .await?;
        Ok(placed)
    }

    fn data_marker_scope(&self) -> String {
        format!("redis:{}", self.prefix)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        RedisStore::ping(self).await
    }

    fn describe(&self) -> &'static str {
        if self.is_cluster() {
            "redis cluster"
        } else {
            "redis"
        }
    }
}
