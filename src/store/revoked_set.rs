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
    /// Remembers one revocation; again keeps the later times.
    pub fn insert(&self, what: Revoked, until: UnixSeconds) {
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(what, until);
        }
    }

    /// Replaces everything with `loaded`, keeping what is held now too (revocations made while
    /// loading must not be lost).
    pub fn replace_with(&self, loaded: impl IntoIterator<Item = (Revoked, UnixSeconds)>) {
        let mut fresh = Entries::default();
        for (what, until) in loaded {
            fresh.insert(what, until);
        }
        if let Ok(mut entries) = self.entries.write() {
            let old = std::mem::take(&mut *entries);
            for (jti, until) in old.tokens {
                fresh.insert(Revoked::Token(jti), until);
            }
            for (session, until) in old.sessions {
                fresh.insert(Revoked::Session(session), until);
            }
            for (user, (before, until)) in old.cutoffs {
                fresh.insert(Revoked::IssuedBefore(user, before), until);
            }
            *entries = fresh;
        }
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
    fn insert(&mut self, what: Revoked, until: UnixSeconds) {
        match what {
            Revoked::Token(jti) => {
                let entry = self.tokens.entry(jti).or_insert(until);
                *entry = (*entry).max(until);
            }
            Revoked::Session(session) => {
                let entry = self.sessions.entry(session).or_insert(until);
                *entry = (*entry).max(until);
            }
            Revoked::IssuedBefore(user, before) => {
                let entry = self.cutoffs.entry(user).or_insert((before, until));
                *entry = (entry.0.max(before), entry.1.max(until));
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
        set.replace_with([(Revoked::Token(loaded), 600)]);
        assert_eq!(set.len(), 2);
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
