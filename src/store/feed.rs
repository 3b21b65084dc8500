//! The revocation feed: every revocation in force, held in memory, and each change to it as it
//! happens, for WatchRevocations (and for Verify where the mode answers from memory). It is fed
//! by the Redis mirror (`mirror.rs`: cached mode, or strict mode with watchers), by the embedded
//! store's own writes (`resident.rs`), or by polling the user database when Postgres holds the
//! revocations (`polled.rs`).
//!
//! A watcher subscribes to the changes *before* it reads the snapshot, and a change is applied to
//! the set before it is announced, so nothing falls between the two (a change may arrive twice;
//! applying one again changes nothing).

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};
use std::time::Duration;

use tokio::sync::broadcast;

use super::{Revoked, RevokedSet, StoreError, TokenRef};
use crate::clock::{Clock, UnixMillis, UnixSeconds};

/// A revocation as the feed announces it: what is refused, and the last second it matters.
pub type FeedChange = (Revoked, UnixSeconds);

/// Changes a watcher may fall behind by before it is cut off (and reloads).
const CHANGES_BUFFERED: usize = 16_384;

/// See the module documentation.
pub struct RevocationFeed {
    revoked: RevokedSet,
    changes: broadcast::Sender<FeedChange>,
    /// Until when (Unix ms) the feed is known to hold every revocation; 0 when it is not.
    current_until: AtomicI64,
    /// When (Unix ms) its source last proved alive; 0 before the first time.
    last_heard: AtomicI64,
    clock: Arc<dyn Clock>,
}

impl RevocationFeed {
    /// A feed that is not current until its source says so (`heard`).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            revoked: RevokedSet::default(),
            changes: broadcast::channel(CHANGES_BUFFERED).0,
            current_until: AtomicI64::new(0),
            last_heard: AtomicI64::new(0),
            clock,
        }
    }

    /// A feed that is its own truth (nobody else writes revocations): always current.
    pub fn always_current(clock: Arc<dyn Clock>) -> Self {
        let feed = Self::new(clock);
        feed.current_until.store(UnixMillis::MAX, Ordering::Release);
        feed
    }

    /// Applies one revocation, and announces it if it changed anything.
    pub fn insert(&self, what: Revoked, until: UnixSeconds) {
        if let Some(change) = self.revoked.insert(what, until) {
            // No watcher is not an error.
            let _ = self.changes.send(change);
        }
    }

    /// Applies `loaded`, announcing each entry it changed.
    pub fn merge(&self, loaded: impl IntoIterator<Item = FeedChange>) {
        for change in self.revoked.merge(loaded) {
            let _ = self.changes.send(change);
        }
    }

    /// The changes from now on; read the snapshot (`live_entries`) after this.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedChange> {
        self.changes.subscribe()
    }

    /// Every revocation in force at `now`.
    pub fn live_entries(&self, now: UnixSeconds) -> Result<Vec<FeedChange>, StoreError> {
        self.revoked.live_entries(now)
    }

    /// Whether the feed holds every revocation right now.
    pub fn is_current(&self) -> bool {
        self.clock.now_millis() < self.current_until.load(Ordering::Acquire)
    }

    /// The source proved alive now, and everything it announced before has been applied: the
    /// feed is current for `for_at_least` from now.
    pub fn heard(&self, for_at_least: Duration) {
        let now = self.clock.now_millis();
        let span = i64::try_from(for_at_least.as_millis()).unwrap_or(i64::MAX);
        self.last_heard.store(now, Ordering::Release);
        self.current_until
            .store(now.saturating_add(span), Ordering::Release);
    }

    /// The source was lost: the feed may miss revocations until it is heard again.
    pub fn mark_stale(&self) {
        self.current_until.store(0, Ordering::Release);
    }

    /// Seconds since the source last proved alive (infinite before the first time, zero for a
    /// feed that is always current).
    pub fn silent_seconds(&self) -> f64 {
        if self.current_until.load(Ordering::Acquire) == UnixMillis::MAX {
            return 0.0;
        }
        match self.last_heard.load(Ordering::Acquire) {
            0 => f64::INFINITY,
            heard => self.clock.now_millis().saturating_sub(heard).max(0) as f64 / 1000.0,
        }
    }

    /// Whether a revocation held and in force at `now` refuses `token`.
    pub fn refuses(&self, token: &TokenRef, now: UnixSeconds) -> Result<bool, StoreError> {
        self.revoked.refuses(token, now)
    }

    /// Forgets entries past their time; how many.
    pub fn purge(&self, now: UnixSeconds) -> Result<usize, StoreError> {
        self.revoked.purge(now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{clock::ManualClock, domain::Jti};

    #[test]
    fn a_change_is_announced_once_and_a_watcher_misses_nothing() {
        let clock = Arc::new(ManualClock::at(1_000));
        let feed = RevocationFeed::new(clock.clone());
        let before = Revoked::Token(Jti::generate());
        feed.insert(before, 2_000);
        let mut changes = feed.subscribe();
        let after = Revoked::Token(Jti::generate());
        feed.insert(after, 2_000);
        feed.insert(after, 1_500);
        feed.merge([(before, 2_000), (after, 2_500)]);
        assert_eq!(changes.try_recv().unwrap(), (after, 2_000));
        assert_eq!(changes.try_recv().unwrap(), (after, 2_500));
        assert!(changes.try_recv().is_err());
        let mut snapshot = feed.live_entries(1_000).unwrap();
        snapshot.sort_by_key(|(_, until)| *until);
        assert_eq!(snapshot, vec![(before, 2_000), (after, 2_500)]);
    }

    #[test]
    fn a_feed_is_current_only_while_heard() {
        let clock = Arc::new(ManualClock::at(1_000));
        let feed = RevocationFeed::new(clock.clone());
        assert!(!feed.is_current());
        assert!(feed.silent_seconds().is_infinite());
        feed.heard(Duration::from_secs(2));
        assert!(feed.is_current());
        clock.advance(Duration::from_millis(2_001));
        assert!(!feed.is_current());
        assert!((feed.silent_seconds() - 2.001).abs() < 1e-9);
        feed.heard(Duration::from_secs(2));
        feed.mark_stale();
        assert!(!feed.is_current());
        let own = RevocationFeed::always_current(clock);
        assert!(own.is_current());
        assert_eq!(own.silent_seconds(), 0.0);
    }
}
