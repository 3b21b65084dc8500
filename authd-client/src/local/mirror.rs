//! The in-memory mirror of authd's live revocations, fed by `WatchRevocations`: tokens by `jti`,
//! sessions by `sid`, per-user and global cut-offs on `iat`. It knows whether it is current: a
//! complete snapshot arrived, and authd was heard from within three heartbeat intervals.

use std::{
    collections::HashMap,
    sync::{
        RwLock,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::{Claims, pb::Revocation, pb::revocation::Kind};

/// A heartbeat interval to assume before authd has said which it uses.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// How many heartbeats may be missed before the mirror is stale.
pub(crate) const MISSED_HEARTBEATS: u32 = 3;

/// Revocations in force; every entry lives until its `until` (Unix seconds, inclusive).
#[derive(Debug, Default)]
pub(crate) struct RevocationSet {
    tokens: HashMap<Uuid, i64>,
    sessions: HashMap<Uuid, i64>,
    /// User id → (issued_before, until).
    users: HashMap<Uuid, (i64, i64)>,
    /// (issued_before, until).
    global: Option<(i64, i64)>,
}

impl RevocationSet {
    /// Adds one revocation; a later `until` or cut-off for one already known wins. Returns
    /// false for a revocation this client does not understand (ignored). Ids are UUIDs, compared
    /// as such, whatever their spelling.
    pub(crate) fn apply(&mut self, revocation: &Revocation) -> bool {
        let until = revocation.until.as_ref().map_or(i64::MAX, |t| t.seconds);
        let issued_before = revocation.issued_before.as_ref().map(|t| t.seconds);
        let id = Uuid::try_parse(&revocation.id).ok();
        let later = |slot: &mut i64| *slot = (*slot).max(until);
        match (Kind::try_from(revocation.kind), id) {
            (Ok(Kind::Token), Some(id)) => later(self.tokens.entry(id).or_insert(until)),
            (Ok(Kind::Session), Some(id)) => later(self.sessions.entry(id).or_insert(until)),
            (Ok(Kind::UserCutoff), Some(id)) => {
                let Some(before) = issued_before else {
                    return false;
                };
                let entry = self.users.entry(id).or_insert((before, until));
                *entry = (entry.0.max(before), entry.1.max(until));
            }
            (Ok(Kind::GlobalCutoff), _) => {
                let Some(before) = issued_before else {
                    return false;
                };
                let entry = self.global.get_or_insert((before, until));
                *entry = (entry.0.max(before), entry.1.max(until));
            }
            _ => return false,
        }
        true
    }

    /// Whether these revocations refuse a token with `claims`.
    pub(crate) fn refuses(&self, claims: &Claims) -> bool {
        let issued_at = claims.issued_at_unix();
        let (user, session, token) = claims.ids();
        self.global.is_some_and(|(before, _)| issued_at < before)
            || self.tokens.contains_key(&token)
            || session.is_some_and(|sid| self.sessions.contains_key(&sid))
            || self
                .users
                .get(&user)
                .is_some_and(|(before, _)| issued_at < *before)
    }

    /// Forgets what no longer matters at `now`: entries whose `until` plus `leeway` has passed
    /// (a token this client accepts `leeway` past its expiry must stay refused that long).
    pub(crate) fn purge(&mut self, now: i64, leeway: i64) {
        let live = |until: i64| until.saturating_add(leeway) >= now;
        self.tokens.retain(|_, until| live(*until));
        self.sessions.retain(|_, until| live(*until));
        self.users.retain(|_, (_, until)| live(*until));
        if self.global.is_some_and(|(_, until)| !live(until)) {
            self.global = None;
        }
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
            + self.sessions.len()
            + self.users.len()
            + usize::from(self.global.is_some())
    }
}

/// What a snapshot says of authd's own rules, in seconds (`None`: an authd too old to say).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AuthdTerms {
    /// Tokens are accepted until `exp` plus this; revocations end then.
    pub(crate) clock_leeway: Option<i64>,
    /// Tokens living longer than this (plus the leeway) are refused, and cannot be revoked.
    pub(crate) token_ttl: Option<i64>,
}

/// The mirror: a set, plus whether it may be trusted now.
pub(crate) struct RevocationMirror {
    set: RwLock<RevocationSet>,
    /// A complete snapshot has been loaded at least once.
    loaded: AtomicBool,
    epoch: Instant,
    /// Milliseconds after `epoch` that authd was last heard from on a healthy stream.
    last_heard_ms: AtomicU64,
    heartbeat_ms: AtomicU64,
    /// authd's clock leeway in seconds (from the snapshot); `i64::MAX` until known.
    server_leeway: AtomicI64,
    /// authd's access-token lifetime in seconds (from the snapshot); `i64::MAX` until known.
    server_token_ttl: AtomicI64,
    /// How many seconds authd's clock is ahead of this one (never negative).
    server_ahead: AtomicI64,
    snapshots: tokio::sync::watch::Sender<u64>,
}

impl RevocationMirror {
    pub(crate) fn new() -> Self {
        Self {
            set: RwLock::new(RevocationSet::default()),
            loaded: AtomicBool::new(false),
            epoch: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            heartbeat_ms: AtomicU64::new(DEFAULT_HEARTBEAT.as_millis() as u64),
            server_leeway: AtomicI64::new(i64::MAX),
            server_token_ttl: AtomicI64::new(i64::MAX),
            server_ahead: AtomicI64::new(0),
            snapshots: tokio::sync::watch::Sender::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the mirror may be trusted: loaded, and heard from within the staleness bound.
    pub(crate) fn is_current(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
            && self
                .now_ms()
                .saturating_sub(self.last_heard_ms.load(Ordering::Acquire))
                <= self.staleness_bound().as_millis() as u64
    }

    /// Three heartbeat intervals.
    pub(crate) fn staleness_bound(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed)) * MISSED_HEARTBEATS
    }

    /// authd sent a heartbeat on a stream whose snapshot is loaded: it vouches that its feed is
    /// current. (Revocations alone do not: an instance whose feed is stale may still relay its
    /// own.) `server_time` is authd's clock then, in Unix seconds.
    pub(crate) fn heard(&self, server_time: Option<i64>, local_now: i64) {
        if let Some(server_time) = server_time {
            self.server_ahead.store(
                server_time.saturating_sub(local_now).max(0),
                Ordering::Relaxed,
            );
        }
        self.last_heard_ms.store(self.now_ms(), Ordering::Release);
    }

    /// The stream reported that revocations were lost (this watcher fell behind, or authd's feed
    /// went stale): stale at once, until the next snapshot.
    pub(crate) fn invalidate(&self) {
        self.loaded.store(false, Ordering::Release);
    }

    /// authd's clock leeway, in seconds, once a snapshot said it.
    pub(crate) fn server_leeway(&self) -> i64 {
        self.server_leeway.load(Ordering::Relaxed)
    }

    /// authd's access-token lifetime, in seconds, once a snapshot said it.
    pub(crate) fn server_token_ttl(&self) -> i64 {
        self.server_token_ttl.load(Ordering::Relaxed)
    }

    /// How far authd's clock is ahead of this one, in seconds (0 if it is not).
    pub(crate) fn server_ahead(&self) -> i64 {
        self.server_ahead.load(Ordering::Relaxed)
    }

    /// The interval authd's heartbeats come at (kept between 100 ms and 60 s).
    pub(crate) fn set_heartbeat(&self, interval: Duration) {
        let clamped = interval.clamp(Duration::from_millis(100), Duration::from_secs(60));
        self.heartbeat_ms
            .store(clamped.as_millis() as u64, Ordering::Relaxed);
    }

    /// Puts a complete snapshot in place of whatever the mirror held; authd's terms (leeway,
    /// token lifetime) and clock come with it.
    pub(crate) fn replace(
        &self,
        set: RevocationSet,
        terms: AuthdTerms,
        server_time: Option<i64>,
        local_now: i64,
    ) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
        if let Some(leeway) = terms.clock_leeway {
            self.server_leeway.store(leeway.max(0), Ordering::Relaxed);
        }
        if let Some(ttl) = terms.token_ttl {
            self.server_token_ttl.store(ttl.max(0), Ordering::Relaxed);
        }
        self.heard(server_time, local_now);
        self.loaded.store(true, Ordering::Release);
        self.snapshots.send_modify(|count| *count += 1);
    }

    /// Adds a revocation that arrived after the snapshot.
    pub(crate) fn apply(&self, revocation: &Revocation) {
        self.set
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(revocation);
    }

    /// Whether a token with `claims` is revoked (the caller checks [`Self::is_current`]).
    pub(crate) fn refuses(&self, claims: &Claims) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .refuses(claims)
    }

    pub(crate) fn purge(&self, now: i64, leeway: i64) {
        self.set
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .purge(now, leeway);
    }

    /// Waits until the mirror is current, or `timeout` passes; says which.
    pub(crate) async fn wait_until_current(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut snapshots = self.snapshots.subscribe();
        loop {
            if self.is_current() {
                return true;
            }
            // Woken by the next snapshot, or re-checked at least every 50 ms.
            let wake = tokio::time::Instant::now() + Duration::from_millis(50);
            if tokio::time::timeout_at(wake.min(deadline), snapshots.changed())
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.is_current();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn revocation(kind: Kind, id: &str, issued_before: Option<i64>, until: i64) -> Revocation {
        Revocation {
            kind: kind as i32,
            id: if id.is_empty() {
                String::new()
            } else {
                self::id(id)
            },
            issued_before: issued_before.map(|seconds| Timestamp { seconds, nanos: 0 }),
            until: Some(Timestamp {
                seconds: until,
                nanos: 0,
            }),
        }
    }

    /// Fixed UUIDs named by short labels, for readable tests.
    fn id(label: &str) -> String {
        let mut bytes = [0u8; 16];
        bytes[..label.len()].copy_from_slice(label.as_bytes());
        Uuid::from_bytes(bytes).to_string()
    }

    fn claims(user: &str, session: Option<&str>, jti: &str, issued_at: i64) -> Claims {
        let uuid = |label: &str| Uuid::parse_str(&id(label)).unwrap();
        Claims::new(
            uuid(user),
            session.map(uuid),
            uuid(jti),
            issued_at,
            issued_at + 900,
        )
    }

    #[test]
    fn each_kind_refuses_what_it_names() {
        let mut set = RevocationSet::default();
        assert!(set.apply(&revocation(Kind::Token, "j1", None, 2_000)));
        assert!(set.apply(&revocation(Kind::Session, "s1", None, 2_000)));
        assert!(set.apply(&revocation(Kind::UserCutoff, "u1", Some(1_000), 2_000)));
        assert!(set.refuses(&claims("u9", None, "j1", 1_500)));
        assert!(set.refuses(&claims("u9", Some("s1"), "j9", 1_500)));
        assert!(set.refuses(&claims("u1", None, "j9", 999)));
        assert!(
            !set.refuses(&claims("u1", None, "j9", 1_000)),
            "issued at the cut-off: not before it"
        );
        assert!(!set.refuses(&claims("u9", Some("s9"), "j9", 1)));
        assert!(set.apply(&revocation(Kind::GlobalCutoff, "", Some(500), 3_000)));
        assert!(set.refuses(&claims("u9", Some("s9"), "j9", 499)));
        assert!(!set.refuses(&claims("u9", Some("s9"), "j9", 500)));
    }

    #[test]
    fn later_cutoffs_win_and_unknown_kinds_are_ignored() {
        let mut set = RevocationSet::default();
        set.apply(&revocation(Kind::UserCutoff, "u1", Some(2_000), 5_000));
        set.apply(&revocation(Kind::UserCutoff, "u1", Some(1_000), 4_000));
        assert!(
            set.refuses(&claims("u1", None, "j", 1_500)),
            "an earlier cut-off does not lower a later one"
        );
        assert!(!set.apply(&revocation(Kind::Unspecified, "x", None, 5_000)));
        assert!(!set.apply(&revocation(Kind::Token, "", None, 5_000)));
        assert!(!set.apply(&revocation(Kind::UserCutoff, "u2", None, 5_000)));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn purge_keeps_entries_for_the_leeway_past_until() {
        let mut set = RevocationSet::default();
        set.apply(&revocation(Kind::Token, "j1", None, 1_000));
        set.apply(&revocation(Kind::GlobalCutoff, "", Some(900), 1_000));
        set.purge(1_005, 5);
        assert_eq!(set.len(), 2);
        set.purge(1_006, 5);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn a_mirror_is_stale_until_loaded_and_after_silence() {
        let mirror = RevocationMirror::new();
        assert!(!mirror.is_current());
        mirror.set_heartbeat(Duration::from_millis(100));
        mirror.replace(
            RevocationSet::default(),
            AuthdTerms {
                clock_leeway: Some(5),
                token_ttl: Some(900),
            },
            None,
            0,
        );
        assert!(mirror.is_current());
        std::thread::sleep(Duration::from_millis(350));
        assert!(!mirror.is_current(), "three missed heartbeats");
        mirror.heard(Some(1_010), 1_000);
        assert!(mirror.is_current());
        assert_eq!(mirror.server_ahead(), 10);
        mirror.invalidate();
        assert!(
            !mirror.is_current(),
            "lost revocations: stale until the next snapshot"
        );
    }

    #[test]
    fn ids_match_whatever_their_spelling() {
        let mut set = RevocationSet::default();
        let jti = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let upper = jti.hyphenated().to_string().to_uppercase();
        set.apply(&Revocation {
            kind: Kind::Token as i32,
            id: upper,
            issued_before: None,
            until: Some(Timestamp {
                seconds: 2_000,
                nanos: 0,
            }),
        });
        let claims = Claims::new(Uuid::from_u128(7), None, jti, 1_000, 1_900);
        assert!(set.refuses(&claims));
    }
}
