//! Login-throttle counters in Redis: a hash `{prefix}throttle:{key}` with fields `f` (count), `u`
//! (until) and `e` (expires at, ms), expiring by itself at `e` (PEXPIREAT). `replace` is one Lua
//! script on one key, so the compare and the set are atomic, on a single server and in a cluster
//! alike.

use std::sync::LazyLock;

use async_trait::async_trait;

use super::{REDIS_TIMEOUT, RedisStore};
use crate::{
    clock::UnixMillis,
    store::{Counter, RevocationStore, StoreError, ThrottleStore},
};

/// Compare-and-set of one counter. KEYS[1]: the counter. ARGV: now, whether a counter is expected
/// ("1") or none ("0"), the expected f, u, e, then the new f, u, e. A counter whose `e` has passed
/// (or a hash in an older layout, without `e`) counts as none. Returns 1 if it set the counter.
/// Its first write is HSET, which Redis refuses when it is out of memory (a first write that is
/// not refused, such as DEL, would let every later write in the script through): a full Redis
/// answers an error, never a silently uncounted attempt.
const REPLACE_SCRIPT: &str = r"
local current = redis.call('HMGET', KEYS[1], 'f', 'u', 'e')
local expires = tonumber(current[3])
local live = current[1] ~= false and expires ~= nil and expires > tonumber(ARGV[1])
if ARGV[2] == '0' then
  if live then return 0 end
else
  if not live or current[1] ~= ARGV[3] or current[2] ~= ARGV[4] or current[3] ~= ARGV[5] then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'f', ARGV[6], 'u', ARGV[7], 'e', ARGV[8])
redis.call('PEXPIREAT', KEYS[1], ARGV[8])
return 1
";

/// The script, hashed once (EVALSHA, falling back to EVAL where the server does not have it).
static REPLACE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REPLACE_SCRIPT));

#[async_trait]
impl ThrottleStore for RedisStore {
    #[tracing::instrument(name = "redis.load", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
    async fn load(&self, key: &str, now: UnixMillis) -> Result<Option<Counter>, StoreError> {
        let mut read = redis::cmd("HMGET");
        read.arg(self.throttle_key(key)).arg("f").arg("u").arg("e");
        let (count, until, expires_at): (Option<u32>, Option<i64>, Option<i64>) = self
            .query(REDIS_TIMEOUT, async move |connection| {
                read.query_async(connection).await
            })
            .await?;
        Ok(match (count, until, expires_at) {
            (Some(count), Some(until), Some(expires_at)) if expires_at > now => Some(Counter {
                count,
                until,
                expires_at,
            }),
            _ => None,
        })
    }

    #[tracing::instrument(name = "redis.replace", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
    async fn replace(
        &self,
        key: &str,
        expected: Option<Counter>,
        new: Counter,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut invocation = REPLACE.key(self.throttle_key(key));
        invocation
            .arg(now)
            .arg(if expected.is_some() { "1" } else { "0" });
        let old = expected.unwrap_or(Counter {
            count: 0,
            until: 0,
            expires_at: 0,
        });
        invocation
            .arg(old.count)
            .arg(old.until)
            .arg(old.expires_at)
            .arg(new.count)
            .arg(new.until)
            .arg(new.expires_at);
        let replaced: i64 = self
            .query(REDIS_TIMEOUT, async move |connection| {
                invocation.invoke_async(connection).await
            })
            .await?;
        Ok(replaced == 1)
    }

    #[tracing::instrument(name = "redis.clear", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let mut delete = redis::cmd("DEL");
        delete.arg(self.throttle_key(key));
        self.query(REDIS_TIMEOUT, async move |connection| {
            delete.query_async::<()>(connection).await
        })
        .await
    }

    #[tracing::instrument(name = "redis.purge_expired", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
    async fn purge_expired(&self, _now: UnixMillis) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn describe(&self) -> &'static str {
        RevocationStore::describe(self)
    }
}
