//! The revocation set in memory: revoked jtis, ended sessions and per-user cut-offs, each kept
//! until its `until`. The cached mode's mirror and the embedded default's resident store answer
//! Verify from it without a round trip. A std `RwLock`: no await happens while it is held, and
//! Verify only reads.

use std::{collections::HashMap, sync::RwLock};

use super::{Revoked, StoreError, TokenRef};
use crate::{
    clock::UnixSeconds,
    domain::{Jti, SessionId, UserId},
};

#[derive(Debug, Default)]
struct Entries {
    /// jti → last second it is revoked.
    tokens: HashMap<Jti, UnixSeconds>,
    /// session → last second its tokens are revoked.
    sessions: HashMap<SessionId, UnixSeconds>,
    /// user → (tokens issued before this second are revoked, last second that matters).
    cutoffs: HashMap<UserId, (UnixSeconds, UnixSeconds)>,
}

/// Revocations held in memory.
#[derive(Debug, Default)]
pub struct RevokedSet {
    entries: RwLock<Entries>,
}

impl RevokedSet {
    /// Remembers one revocation; again keeps the later times. The entry as held afterwards when
    /// this changed it, `None` when it was already known.
    pub fn insert(&self, what: Revoked, until: UnixSeconds) -> Option<(Revoked, UnixSeconds)> {
        self.entries.write().ok()?.insert(what, until)
    }

    /// Adds `loaded` to what is held (revocations made while loading must not be lost); the
    /// entries this changed, as held afterwards.
    pub fn merge(
        &self,
        loaded: impl IntoIterator<Item = (Revoked, UnixSeconds)>,
    ) -> Vec<(Revoked, UnixSeconds)> {
        let Ok(mut entries) = self.entries.write() else {
            return Vec::new();
        };
        loaded
            .into_iter()
            .filter_map(|(what, until)| entries.insert(what, until))
            .collect()
    }

    /// Every entry in force at `now`.
    pub fn live_entries(
        &self,
        now: UnixSeconds,
    ) -> Result<Vec<(Revoked, UnixSeconds)>, StoreError> {
        let entries = self.entries.read().map_err(|_| poisoned())?;
        let tokens = entries
            .tokens
            .iter()
            .map(|(jti, until)| (Revoked::Token(*jti), *until));
        let sessions = entries
            .sessions
            .iter()
            .map(|(session, until)| (Revoked::Session(*session), *until));
        let cutoffs = entries
            .cutoffs
            .iter()
            .map(|(user, (before, until))| (Revoked::IssuedBefore(*user, *before), *until));
        Ok(tokens
            .chain(sessions)
            .chain(cutoffs)
            .filter(|(_, until)| *until >= now)
            .collect())
    }

    /// Whether a revocation in force at `now` refuses `token`.
    pub fn refuses(&self, token: &TokenRef, now: UnixSeconds) -> Result<bool, StoreError> {
        let entries = self.entries.read().map_err(|_| poisoned())?;
        let live = |until: Option<&UnixSeconds>| until.is_some_and(|until| *until >= now);
        Ok(live(entries.tokens.get(&token.jti))
            || token
                .session
                .is_some_and(|session| live(entries.sessions.get(&session)))
            || entries
                .cutoffs
                .get(&token.user)
                .is_some_and(|(before, until)| *until >= now && token.issued_at < *before))
    }

    /// Forgets entries past their time; how many.
    pub fn purge(&self, now: UnixSeconds) -> Result<usize, StoreError> {
        let mut entries = self.entries.write().map_err(|_| poisoned())?;
        let before = entries.len();
        entries.tokens.retain(|_, until| *until >= now);
        entries.sessions.retain(|_, until| *until >= now);
        entries.cutoffs.retain(|_, (_, until)| *until >= now);
        Ok(before - entries.len())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.read().map_or(0, |entries| entries.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entries {
    /// Keeps the later times; the entry as held afterwards if this changed it.
    fn insert(&mut self, what: Revoked, until: UnixSeconds) -> Option<(Revoked, UnixSeconds)> {
        match what {
            Revoked::Token(jti) => {
                let held = self.tokens.entry(jti).or_insert(UnixSeconds::MIN);
                (until > *held).then(|| {
                    *held = until;
                    (what, until)
                })
            }
            Revoked::Session(session) => {
                let held = self.sessions.entry(session).or_insert(UnixSeconds::MIN);
                (until > *held).then(|| {
                    *held = until;
                    (what, until)
                })
            }
            Revoked::IssuedBefore(user, before) => {
                let held = self
                    .cutoffs
                    .entry(user)
                    .or_insert((UnixSeconds::MIN, UnixSeconds::MIN));
                let merged = (held.0.max(before), held.1.max(until));
                (merged != *held).then(|| {
                    *held = merged;
                    (Revoked::IssuedBefore(user, merged.0), merged.1)
                })
            }
        }
    }

    fn len(&self) -> usize {
        self.tokens.len() + self.sessions.len() + self.cutoffs.len()
    }
}

fn poisoned() -> StoreError {
    StoreError::unexpected(anyhow::anyhow!("revocation set lock poisoned"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(user: UserId, session: Option<SessionId>, issued_at: UnixSeconds) -> TokenRef {
        TokenRef {
            user,
            jti: Jti::generate(),
            session,
            issued_at,
        }
    }

    #[test]
    fn each_kind_refuses_what_it_names_until_its_time() {
        let set = RevokedSet::default();
        let user = UserId::generate();
        let session = SessionId::generate();
        let mut by_jti = token(user, None, 100);
        set.insert(Revoked::Token(by_jti.jti), 200);
        assert!(set.refuses(&by_jti, 200).unwrap());
        assert!(!set.refuses(&by_jti, 201).unwrap());
        by_jti.jti = Jti::generate();
        assert!(!set.refuses(&by_jti, 150).unwrap());

        let in_session = token(user, Some(session), 100);
        assert!(!set.refuses(&in_session, 150).unwrap());
        set.insert(Revoked::Session(session), 300);
        assert!(set.refuses(&in_session, 300).unwrap());
        assert!(
            !set.refuses(&token(user, Some(SessionId::generate()), 100), 150)
                .unwrap()
        );

        let other = UserId::generate();
        set.insert(Revoked::IssuedBefore(other, 120), 400);
        // A second, earlier cut-off does not lower the first.
        set.insert(Revoked::IssuedBefore(other, 110), 350);
        assert!(set.refuses(&token(other, None, 119), 200).unwrap());
        assert!(!set.refuses(&token(other, None, 120), 200).unwrap());
        assert!(!set.refuses(&token(other, None, 119), 401).unwrap());
        assert!(!set.refuses(&token(user, None, 50), 200).unwrap());
    }

    #[test]
    fn purge_and_reload_keep_what_still_matters() {
        let set = RevokedSet::default();
        let kept = Jti::generate();
        set.insert(Revoked::Token(kept), 500);
        set.insert(Revoked::Token(Jti::generate()), 100);
        assert_eq!(set.purge(200).unwrap(), 1);
        let loaded = Jti::generate();
        let changed = set.merge([(Revoked::Token(loaded), 600), (Revoked::Token(kept), 400)]);
        assert_eq!(changed, vec![(Revoked::Token(loaded), 600)]);
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.live_entries(501).unwrap(),
            vec![(Revoked::Token(loaded), 600)]
        );
        let user = UserId::generate();
        for jti in [kept, loaded] {
            let token = TokenRef {
                user,
                jti,
                session: None,
                issued_at: 0,
            };
            assert!(set.refuses(&token, 300).unwrap());
        }
    }
}
