//! Cached revocation mode (AUTHD_REVOCATION_MODE=cached): an in-memory mirror of the Redis
//! revocation set (revoked jtis, ended sessions, per-user cut-offs), so that Verify answers
//! without a Redis round trip.
//!
//! The mirror subscribes to the revocation channel, then loads every live revocation from the
//! index (so nothing published during the load is missed), and from then on applies each
//! announcement. It is *known to be current* only while it keeps hearing its own heartbeat, which
//! it publishes every 500 ms through the ordinary connection: after 2 s of silence (Redis down, a
//! partition, a dead subscription) Verify falls back to asking Redis, and fails closed if Redis
//! does not answer. Every reconnect reloads the whole set.
//!
//! The guarantee is weaker than strict mode: a Logout on another instance is seen here after the
//! announcement arrives (typically well under a millisecond on a LAN), not at once. Logouts made
//! through this instance are seen at once.
//!
//! The mirror is also the revocation feed (`feed.rs`) that WatchRevocations streams from; in
//! strict mode with watchers configured it runs only for that, and Verify keeps asking Redis.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;

use super::{
    InMemoryRevocations, Revocation, RevocationFeed, RevocationStore, StoreError, TokenRef,
    redis::{RedisStore, parse_index_member},
};
use crate::clock::{Clock, UnixSeconds};

/// How often the mirror publishes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// Silence after which the mirror is no longer trusted.
pub const STALE_AFTER: Duration = Duration::from_secs(2);
/// Revocations read from the index per round trip while loading.
const LOAD_PAGE: usize = 10_000;
/// Wait between reconnection attempts.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// A `RevocationStore` that answers from memory while current, else from Redis.
pub struct MirroredRevocations {
    redis: RedisStore,
    feed: Arc<RevocationFeed>,
    /// Cached mode: Verify answers from the mirror while it is current. Strict mode with
    /// watchers: the mirror only feeds WatchRevocations; Verify always asks Redis.
    answers_verify: bool,
    tasks: Vec<JoinHandle<()>>,
}

impl MirroredRevocations {
    /// Cached mode: starts the subscription and heartbeat tasks (stopped when this is dropped);
    /// Verify answers from the mirror while it is current.
    pub fn start(redis: RedisStore, clock: Arc<dyn Clock>) -> Self {
        Self::spawn(redis, clock, true)
    }

    /// Strict mode with watchers: the same tasks, but Verify always asks Redis; the mirror only
    /// feeds WatchRevocations.
    pub fn feeding_watchers(redis: RedisStore, clock: Arc<dyn Clock>) -> Self {
        Self::spawn(redis, clock, false)
    }

    fn spawn(redis: RedisStore, clock: Arc<dyn Clock>, answers_verify: bool) -> Self {
        let feed = Arc::new(RevocationFeed::new(clock.clone()));
        let heartbeat_id = format!("{:016x}", rand::random::<u64>());
        let tasks = vec![
            tokio::spawn(follow(
                redis.clone(),
                feed.clone(),
                clock,
                heartbeat_id.clone(),
            )),
            tokio::spawn(heartbeat(redis.clone(), heartbeat_id)),
        ];
        Self {
            redis,
            feed,
            answers_verify,
            tasks,
        }
    }

    /// Whether Verify may answer from memory right now.
    pub fn is_current(&self) -> bool {
        self.feed.is_current()
    }

    /// Revocations held in memory.
    pub fn len(&self) -> usize {
        self.feed.len()
    }

    /// Whether the mirror holds no revocations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for MirroredRevocations {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl RevocationStore for MirroredRevocations {
    async fn revoke(&self, revocations: &[Revocation], now: UnixSeconds) -> Result<(), StoreError> {
        self.redis.revoke(revocations, now).await?;
        // Read-your-writes on this instance, whatever the subscription is doing.
        for revocation in revocations {
            self.feed.insert(revocation.what, revocation.until);
        }
        Ok(())
    }

    async fn is_revoked(&self, token: &TokenRef, now: UnixSeconds) -> Result<bool, StoreError> {
        if self.answers_verify && self.is_current() {
            return self.feed.refuses(token, now);
        }
        self.redis.is_revoked(token, now).await
    }

    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        let purged = self.feed.purge(now)?;
        self.redis.purge_expired(now).await?;
        Ok(u64::try_from(purged).unwrap_or(u64::MAX))
    }

    async fn data_marker(&self) -> Result<Option<String>, StoreError> {
        self.redis.data_marker().await
    }

    async fn place_data_marker(&self, marker: &str) -> Result<String, StoreError> {
        self.redis.place_data_marker(marker).await
    }

    fn data_marker_scope(&self) -> String {
        self.redis.data_marker_scope()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }

    fn describe(&self) -> &'static str {
        if self.answers_verify {
            "redis (cached mirror)"
        } else {
            "redis (strict, mirrored for watchers)"
        }
    }

    fn in_memory(&self) -> Option<InMemoryRevocations> {
        Some(InMemoryRevocations {
            entries: self.len(),
            feed_silent_seconds: Some(self.feed.silent_seconds()),
        })
    }

    fn feed(&self) -> Option<Arc<RevocationFeed>> {
        Some(self.feed.clone())
    }
}

/// Subscribes, loads the whole set, applies announcements; starts over on any failure.
async fn follow(
    redis: RedisStore,
    feed: Arc<RevocationFeed>,
    clock: Arc<dyn Clock>,
    heartbeat_id: String,
) {
    loop {
        feed.mark_stale();
        if let Err(error) = follow_once(&redis, &feed, clock.as_ref(), &heartbeat_id).await {
            tracing::warn!(
                error = crate::telemetry::error_chain(&error),
                "revocation mirror lost its subscription; Verify asks Redis until it is back"
            );
        }
        feed.mark_stale();
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn follow_once(
    redis: &RedisStore,
    feed: &RevocationFeed,
    clock: &dyn Clock,
    heartbeat_id: &str,
) -> Result<(), StoreError> {
    // Subscribe first, then load: an announcement made during the load is queued, not lost.
    let mut subscription = redis.subscribe().await?;
    // Page through the index, so that loading a million revocations does not hold a million
    // strings at once.
    let now = clock.now();
    let mut loaded = Vec::new();
    let mut offset = 0;
    loop {
        let page = redis.live_revocations(now, offset, LOAD_PAGE).await?;
        offset += page.len();
        let last_page = page.len() < LOAD_PAGE;
        loaded.extend(
            page.into_iter()
                .filter_map(|(member, until)| Some((parse_index_member(&member)?, until))),
        );
        if last_page {
            break;
        }
    }
    let count = loaded.len();
    // Keeps what this instance revoked meanwhile; watchers hear of what was missed.
    feed.merge(loaded);
    tracing::info!(revocations = count, "revocation mirror loaded");
    let mut synced = false;
    let mut messages = subscription.on_message();
    while let Some(message) = messages.next().await {
        let Ok(payload) = message.get_payload::<String>() else {
            continue;
        };
        match payload.split_once(' ') {
            Some(("ping", id)) if id == heartbeat_id => {
                // Our own heartbeat came back: everything published before it has been applied.
                feed.heard(STALE_AFTER);
                if !synced {
                    synced = true;
                    tracing::info!("revocation mirror is current");
                }
            }
            Some(("ping", _)) => {}
            Some((member, until)) => {
                if let (Some(what), Ok(until)) = (parse_index_member(member), until.parse()) {
                    feed.insert(what, until);
                }
            }
            None => {}
        }
    }
    Err(StoreError::Unavailable {
        backend: "redis",
        cause: anyhow::anyhow!("subscription closed"),
    })
}

/// Publishes this instance's heartbeat so that `follow` can tell it is still hearing Redis.
async fn heartbeat(redis: RedisStore, heartbeat_id: String) {
    let message = format!("ping {heartbeat_id}");
    let mut interval = tokio::time::interval(HEARTBEAT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let _ = redis.announce(&message).await;
    }
}
