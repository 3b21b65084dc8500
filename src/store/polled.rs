//! Revocations in Postgres (no Redis configured) with a revocation feed for WatchRevocations:
//! Verify asks Postgres each time as before, and a task re-reads every revocation in force every
//! `POLL_INTERVAL`, so that revocations written through other instances reach this instance's
//! watchers within about that long. Used only when watchers are configured (the re-read is a
//! scan of the live revocations); large deployments use Redis, whose announcements need no poll.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::{
    InMemoryRevocations, Revocation, RevocationFeed, RevocationStore, SqlStore, StoreError,
    TokenRef,
};
use crate::clock::{Clock, UnixSeconds};

/// How often the revocations are re-read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Without a successful read for this long, the feed is not current.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// See the module documentation.
pub struct PolledRevocations {
    sql: SqlStore,
    feed: Arc<RevocationFeed>,
    poller: JoinHandle<()>,
}

impl PolledRevocations {
    /// Starts polling `sql` (stopped when this is dropped).
    pub fn start(sql: SqlStore, clock: Arc<dyn Clock>) -> Self {
        let feed = Arc::new(RevocationFeed::new(clock.clone()));
        let poller = tokio::spawn(poll(sql.clone(), feed.clone(), clock));
        Self { sql, feed, poller }
    }
}

impl Drop for PolledRevocations {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

async fn poll(sql: SqlStore, feed: Arc<RevocationFeed>, clock: Arc<dyn Clock>) {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        interval.tick().await;
        match sql.live_revocations(clock.now()).await {
            Ok(loaded) => {
                feed.merge(loaded);
                feed.heard(STALE_AFTER);
                failing = false;
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(
                    error = crate::telemetry::error_chain(&error),
                    "cannot read the revocations for WatchRevocations; watchers get no heartbeat \
                     until the database answers"
                );
            }
            Err(_) => {}
        }
    }
}

#[async_trait]
impl RevocationStore for PolledRevocations {
    async fn revoke(&self, revocations: &[Revocation], now: UnixSeconds) -> Result<(), StoreError> {
        self.sql.revoke(revocations, now).await?;
        // This instance's watchers hear of its own revocations at once.
        for revocation in revocations {
            self.feed.insert(revocation.what, revocation.until);
        }
        Ok(())
    }

    async fn is_revoked(&self, token: &TokenRef, now: UnixSeconds) -> Result<bool, StoreError> {
        self.sql.is_revoked(token, now).await
    }

    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        self.feed.purge(now)?;
        self.sql.purge_expired(now).await
    }

    async fn data_marker(&self) -> Result<Option<String>, StoreError> {
        self.sql.data_marker().await
    }

    async fn place_data_marker(&self, marker: &str) -> Result<String, StoreError> {
        self.sql.place_data_marker(marker).await
    }

    fn data_marker_scope(&self) -> String {
        self.sql.data_marker_scope()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        RevocationStore::ping(&self.sql).await
    }

    fn describe(&self) -> &'static str {
        "postgres (polled for watchers)"
    }

    fn in_memory(&self) -> Option<InMemoryRevocations> {
        Some(InMemoryRevocations {
            entries: self.feed.len(),
            feed_silent_seconds: Some(self.feed.silent_seconds()),
        })
    }

    fn feed(&self) -> Option<Arc<RevocationFeed>> {
        Some(self.feed.clone())
    }
}
