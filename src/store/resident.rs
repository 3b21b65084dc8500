//! The embedded default's revocations: held in memory, loaded at start-up and written through to
//! SQLite, so that Verify makes no SQL query. Sound only because one process owns the data
//! directory (start-up takes a lock on it): nobody else writes revocations behind this one's back,
//! so the set in memory is a revocation feed (`feed.rs`) that is always current.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    InMemoryRevocations, Revocation, RevocationFeed, RevocationStore, SqlStore, StoreError,
    TokenRef,
};
use crate::clock::{Clock, UnixSeconds};

/// SQLite revocations answered from memory.
pub struct ResidentRevocations {
    sql: SqlStore,
    revoked: Arc<RevocationFeed>,
}

impl ResidentRevocations {
    /// Loads every revocation still in force now.
    pub async fn load(sql: SqlStore, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let now = clock.now();
        let revoked = Arc::new(RevocationFeed::always_current(clock));
        revoked.merge(sql.live_revocations(now).await?);
        Ok(Self { sql, revoked })
    }

    /// Revocations held.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }
}

#[async_trait]
impl RevocationStore for ResidentRevocations {
    async fn revoke(&self, revocations: &[Revocation], now: UnixSeconds) -> Result<(), StoreError> {
        // Durable first: a revocation the caller was told about survives a restart.
        self.sql.revoke(revocations, now).await?;
        for revocation in revocations {
            self.revoked.insert(revocation.what, revocation.until);
        }
        Ok(())
    }

    async fn is_revoked(&self, token: &TokenRef, now: UnixSeconds) -> Result<bool, StoreError> {
        self.revoked.refuses(token, now)
    }

    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        self.revoked.purge(now)?;
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
        "sqlite (in memory)"
    }

    fn in_memory(&self) -> Option<InMemoryRevocations> {
        Some(InMemoryRevocations {
            entries: self.len(),
            feed_silent_seconds: None,
        })
    }

    fn feed(&self) -> Option<Arc<RevocationFeed>> {
        Some(self.revoked.clone())
    }
}
