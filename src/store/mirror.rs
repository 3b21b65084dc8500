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

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;

use super::{
    InMemoryRevocations, Revocation, RevocationStore, RevokedSet, StoreError, TokenRef,
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

/// What the background task shares with Verify.
struct MirrorState {
    /// What is revoked, until when.
    revoked: RevokedSet,
    /// Until when (Unix ms) the mirror is known to be current; 0 when it is not.
    current_until: AtomicI64,
    /// When (Unix ms) the mirror last heard its own heartbeat; 0 before the first.
    last_heard: AtomicI64,
}

/// A `RevocationStore` that answers from memory while current, else from Redis.
pub struct MirroredRevocations {
    redis: RedisStore,
    state: Arc<MirrorState>,
    clock: Arc<dyn Clock>,
    tasks: Vec<JoinHandle<()>>,
}

impl MirroredRevocations {
    /// Starts the subscription and heartbeat tasks (stopped when this is dropped).
    pub fn start(redis: RedisStore, clock: Arc<dyn Clock>) -> Self {
        let state = Arc::new(MirrorState {
            revoked: RevokedSet::default(),
            current_until: AtomicI64::new(0),
            last_heard: AtomicI64::new(0),
        });
        let heartbeat_id = format!("{:016x}", rand::random::<u64>());
        let tasks = vec![
            tokio::spawn(follow(
                redis.clone(),
                state.clone(),
                clock.clone(),
                heartbeat_id.clone(),
            )),
            tokio::spawn(heartbeat(redis.clone(), heartbeat_id)),
        ];
        Self {
            redis,
            state,
            clock,
            tasks,
        }
    }

    /// Whether Verify may answer from memory right now.
    pub fn is_current(&self) -> bool {
        self.clock.now_millis() < self.state.current_until.load(Ordering::Acquire)
    }

    /// Revocations held in memory.
    pub fn len(&self) -> usize {
        self.state.revoked.len()
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
            self.state.revoked.insert(revocation.what, revocation.until);
        }
        Ok(())
    }

    async fn is_revoked(&self, token: &TokenRef, now: UnixSeconds) -> Result<bool, StoreError> {
        if self.is_current() {
            return self.state.revoked.refuses(token, now);
        }
        self.redis.is_revoked(token, now).await
    }

    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        let purged = self.state.revoked.purge(now)?;
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
        "redis (cached mirror)"
    }

    fn in_memory(&self) -> Option<InMemoryRevocations> {
        let last_heard = self.state.last_heard.load(Ordering::Acquire);
        let feed_silent_seconds = if last_heard == 0 {
            f64::INFINITY
        } else {
            self.clock.now_millis().saturating_sub(last_heard).max(0) as f64 / 1000.0
        };
        Some(InMemoryRevocations {
            entries: self.len(),
            feed_silent_seconds: Some(feed_silent_seconds),
        })
    }
}

/// Subscribes, loads the whole set, applies announcements; starts over on any failure.
async fn follow(
    redis: RedisStore,
    state: Arc<MirrorState>,
    clock: Arc<dyn Clock>,
    heartbeat_id: String,
) {
    loop {
        state.current_until.store(0, Ordering::Release);
        if let Err(error) = follow_once(&redis, &state, clock.as_ref(), &heartbeat_id).await {
            tracing::warn!(
                error = crate::telemetry::error_chain(&error),
                "revocation mirror lost its subscription; Verify asks Redis until it is back"
            );
        }
        state.current_until.store(0, Ordering::Release);
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn follow_once(
    redis: &RedisStore,
    state: &MirrorState,
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
    // Keeps what this instance revoked meanwhile.
    state.revoked.replace_with(loaded);
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
                let stale_after = i64::try_from(STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
                let now = clock.now_millis();
                state.last_heard.store(now, Ordering::Release);
                state
                    .current_until
                    .store(now.saturating_add(stale_after), Ordering::Release);
                if !synced {
                    synced = true;
                    tracing::info!("revocation mirror is current");
                }
            }
            Some(("ping", _)) => {}
            Some((member, until)) => {
                if let (Some(what), Ok(until)) = (parse_index_member(member), until.parse()) {
                    state.revoked.insert(what, until);
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
