//! The revocation set in Redis. A user's entries share one hash tag, `{prefix}{u:<user>}:`, so
//! they sit in one Redis Cluster slot: `jti:<jti>` (a Logout), `sid:<session>` (an ended session)
//! and `cutoff` (a sorted set holding the second before which the user's tokens are refused).
//! Each expires when the last token it refuses can no longer be accepted anyway (EXAT
//! `until + 1`), so every instance sees a revocation at once and the set cleans itself up; Verify
//! reads all three in one round trip. Beside them, for the cached-mode mirrors: a sorted-set index
//! scored by `until`, and an announcement on the channel. Revoked jtis are also written under the
//! key of the version before sessions, so that its instances keep honouring Logouts during an
//! upgrade.

use async_trait::async_trait;

use super::{REDIS_TIMEOUT, RedisStore};
use crate::{
    clock::UnixSeconds,
    domain::{Jti, SessionId, UserId},
    store::{Revocation, RevocationStore, Revoked, StoreError, TokenRef},
};

impl RedisStore {
    /// The commands that record one revocation under its user's keys (one slot). Revoking again
    /// keeps the later expiry (SET NX EXAT, then EXPIREAT GT) and, for a cut-off, the later second
    /// (ZADD GT).
    fn record(&self, revocation: &Revocation) -> redis::Pipeline {
        // The entry disappears exactly when the last token it refuses can no longer be accepted.
        let expire_at = expire_at(revocation.until);
        let keys = self.user_keys(revocation.user);
        let mut pipe = redis::pipe();
        let key = match revocation.what {
            Revoked::Token(jti) => format!("{keys}jti:{jti}"),
            Revoked::Session(session) => format!("{keys}sid:{session}"),
            Revoked::IssuedBefore(..) => format!("{keys}cutoff"),
        };
        match revocation.what {
            Revoked::Token(_) | Revoked::Session(_) => {
                let options = redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::EXAT(expire_at));
                pipe.cmd("SET").arg(&key).arg(1).arg(&options).ignore();
            }
            Revoked::IssuedBefore(_, before) => {
                pipe.cmd("ZADD")
                    .arg(&key)
                    .arg("GT")
                    .arg(before)
                    .arg(CUTOFF_MEMBER)
                    .ignore();
                pipe.cmd("EXPIREAT")
                    .arg(&key)
                    .arg(expire_at)
                    .arg("NX")
                    .ignore();
            }
        }
        pipe.cmd("EXPIREAT")
            .arg(&key)
            .arg(expire_at)
            .arg("GT")
            .ignore();
        pipe
    }

    /// The pre-sessions key of a revoked jti, for instances of the older version.
    fn record_legacy(&self, jti: Jti, until: UnixSeconds) -> redis::Pipeline {
        let expire_at = expire_at(until);
        let key = self.legacy_revoked_key(jti);
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::EXAT(expire_at));
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(1).arg(&options).ignore();
        pipe.cmd("EXPIREAT")
            .arg(&key)
            .arg(expire_at)
            .arg("GT")
            .ignore();
        pipe
    }

    /// The index entry and the announcement, for the cached-mode mirrors. The index lives as long
    /// as its longest entry: EXPIREAT NX gives a new index a TTL, EXPIREAT GT extends it.
    fn index_and_announce(&self, revocation: &Revocation) -> (redis::Pipeline, redis::Cmd) {
        let member = index_member(revocation.user, revocation.what);
        let index_key = self.index_key();
        let mut index = redis::pipe();
        // GT: a second revocation of one member never lowers its score.
        index
            .cmd("ZADD")
            .arg(&index_key)
            .arg("GT")
            .arg(revocation.until)
            .arg(&member)
            .ignore();
        for condition in ["NX", "GT"] {
            index
                .cmd("EXPIREAT")
                .arg(&index_key)
                .arg(revocation.until.saturating_add(1))
                .arg(condition)
                .ignore();
        }
        let mut announce = redis::cmd("PUBLISH");
        announce
            .arg(self.channel())
            .arg(format!("{member} {}", revocation.until));
        (index, announce)
    }
}

/// The Unix second at which an entry kept until `until` (inclusive) may go.
fn expire_at(until: UnixSeconds) -> u64 {
    u64::try_from(until.saturating_add(1)).unwrap_or(u64::MAX)
}

/// The member of a user's cut-off sorted set (scored by the cut-off second).
const CUTOFF_MEMBER: &str = "before";

/// How a revocation is named in the index and on the channel: a bare jti (as before sessions,
/// so instances of the older version still follow Logouts), `sid:<session>`, or
/// `cut:<user>:<second>`.
fn index_member(user: UserId, what: Revoked) -> String {
    match what {
        Revoked::Token(jti) => jti.to_string(),
        Revoked::Session(session) => format!("sid:{session}"),
        Revoked::IssuedBefore(_, before) => format!("cut:{user}:{before}"),
    }
}

/// Reads an index member or announcement back; `None` for anything else.
pub(crate) fn parse_index_member(member: &str) -> Option<Revoked> {
    if let Some(session) = member.strip_prefix("sid:") {
        return SessionId::parse(session).map(Revoked::Session);
    }
    if let Some(cutoff) = member.strip_prefix("cut:") {
        let (user, before) = cutoff.split_once(':')?;
        return Some(Revoked::IssuedBefore(
            UserId::parse(user)?,
            before.parse().ok()?,
        ));
    }
    Jti::parse(member).map(Revoked::Token)
}

#[async_trait]
impl RevocationStore for RedisStore {
    #[tracing::instrument(name = "redis.revoke", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
    async fn revoke(&self, revocations: &[Revocation], now: UnixSeconds) -> Result<(), StoreError> {
        let revocations: Vec<&Revocation> = revocations.iter().filter(|r| r.until >= now).collect();
        if revocations.is_empty() {
            return Ok(());
        }
        let mut steps: Vec<redis::Pipeline> = Vec::new();
        for revocation in &revocations {
            steps.push(self.record(revocation));
            if let Revoked::Token(jti) = revocation.what {
                steps.push(self.record_legacy(jti, revocation.until));
            }
            let (index, announce) = self.index_and_announce(revocation);
            steps.push(index);
            let mut publish = redis::pipe();
            publish.add_command(announce).ignore();
            steps.push(publish);
        }
        if self.is_cluster() {
            // A cluster pipeline must stay within one slot: each step is one.
            self.query(REDIS_TIMEOUT, async move |connection| {
                for step in &steps {
                    step.query_async::<()>(&mut *connection).await?;
                }
                Ok(())
            })
            .await
        } else {
            // One round trip.
            let mut pipe = redis::pipe();
            for command in steps.iter().flat_map(|step| step.cmd_iter()) {
                pipe.add_command(command.clone()).ignore();
            }
            self.query(REDIS_TIMEOUT, async move |connection| {
                pipe.query_async::<()>(connection).await
            })
            .await
        }
    }

    #[tracing::instrument(name = "redis.is_revoked", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
    async fn is_revoked(&self, token: &TokenRef, _now: UnixSeconds) -> Result<bool, StoreError> {
        // One slot, one round trip: the jti, the session, the user's cut-off.
        let keys = self.user_keys(token.user);
        let mut pipe = redis::pipe();
        let exists = pipe.cmd("EXISTS").arg(format!("{keys}jti:{}", token.jti));
        if let Some(session) = token.session {
            exists.arg(format!("{keys}sid:{session}"));
        }
        pipe.cmd("ZSCORE")
            .arg(format!("{keys}cutoff"))
            .arg(CUTOFF_MEMBER);
        let legacy = token
            .session
            .is_none()
            .then(|| self.legacy_revoked_key(token.jti));
        let cluster = self.is_cluster();
        let (found, cutoff, legacy_found): (u32, Option<f64>, u32) = self
            .query(REDIS_TIMEOUT, async move |connection| match legacy {
                None => {
                    let (found, cutoff): (u32, Option<f64>) = pipe.query_async(connection).await?;
                    Ok((found, cutoff, 0))
                }
                // One server: the pre-sessions key fits in the same round trip.
                Some(legacy) if !cluster => {
                    pipe.cmd("EXISTS").arg(legacy);
                    pipe.query_async(connection).await
                }
                // A token without a session predates this version: a second round trip, for the
                // few minutes such tokens live on after an upgrade.
                Some(legacy) => {
                    let (found, cutoff): (u32, Option<f64>) =
                        pipe.query_async(&mut *connection).await?;
                    let legacy_found: u32 = redis::cmd("EXISTS")
                        .arg(legacy)
                        .query_async(connection)
                        .await?;
                    Ok((found, cutoff, legacy_found))
                }
            })
            .await?;
        let cut_off = cutoff.is_some_and(|before| (token.issued_at as f64) < before);
        Ok(found > 0 || legacy_found > 0 || cut_off)
    }

    #[tracing::instrument(name = "redis.purge_expired", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
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

    #[tracing::instrument(name = "redis.data_marker", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
    async fn data_marker(&self) -> Result<Option<String>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.marker_key());
        self.query(REDIS_TIMEOUT, async move |connection| {
            get.query_async(connection).await
        })
        .await
    }

    #[tracing::instrument(name = "redis.place_data_marker", level = "debug", skip_all, fields(db.system = "redis", otel.kind = "client"))]
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
