//! Login throttling. Three limits, each a counter in a `ThrottleStore` (Redis or the user
//! database) shared by every instance:
//!
//! - per **(account, source)**: exponential back-off after consecutive failures. One source's
//!   failures slow down that source only, so an attacker at one address cannot lock a victim out
//!   of their own account from elsewhere;
//! - per **account**, whatever the source: a cap on failures per window, at a higher threshold,
//!   which stops guessing spread over many addresses (the trade-off: an attacker with that many
//!   addresses can hold the account at its cap, see SECURITY.md);
//! - per **source**, whatever the account: a cap on failures per window.
//!
//! An attempt **reserves** its place in every counter before the password is hashed, with a
//! compare-and-set that also checks the limit, so N concurrent guesses can never get past a
//! limit, and a guess that cannot be counted (the store is down or refuses writes) is never
//! answered from the password check: Login fails closed. A failed attempt keeps its reservations;
//! a successful one releases them (the source and account windows count failures only) and resets
//! its (account, source) back-off.
//!
//! Accounts are keyed by a hash of the normalised email whether or not such an account exists, so
//! throttling reveals nothing about which emails are registered, and the store holds no emails.
//! IPv6 sources are keyed by their /64, the block one subscriber usually gets.

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};

use crate::{
    clock::UnixMillis,
    domain::Email,
    store::{Counter, StoreError, ThrottleStore},
};

/// How long an (account, source) back-off count is remembered after its latest failure.
pub const BACKOFF_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Compare-and-set rounds one reservation may take before the key counts as flooded.
const MAX_RESERVATION_ROUNDS: usize = 32;
/// What a flooded key (one that lost every round) answers: retry in a moment.
const FLOODED_RETRY: Duration = Duration::from_secs(1);

/// The limits (see `config` for the defaults and their sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Consecutive failures of one (account, source) before it backs off.
    pub failures_before_backoff: u32,
    /// The first delay; doubled per further failure.
    pub backoff_base: Duration,
    /// The longest delay.
    pub backoff_max: Duration,
    /// Failures per account per window, from every source (0: no limit).
    pub account_max_failures: u32,
    /// The account window, counted from its first failure.
    pub account_window: Duration,
    /// Failures per source per window, on every account (0: no limit).
    pub source_max_failures: u32,
    /// Registrations per source per window (0: no limit).
    pub source_max_registrations: u32,
    /// The source windows (failures, registrations), counted from their first attempt.
    pub source_window: Duration,
}

impl ThrottlePolicy {
    /// The back-off after `failures` consecutive failures, if any: base × 2^(failures − threshold),
    /// capped.
    pub fn backoff(&self, failures: u32) -> Option<Duration> {
        let beyond = failures.checked_sub(self.failures_before_backoff)?;
        let factor = 2u32.checked_pow(beyond.min(31)).unwrap_or(u32::MAX);
        Some(
            self.backoff_base
                .saturating_mul(factor)
                .min(self.backoff_max),
        )
    }
}

/// One of the three limits, as applied to one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// `until` is when the next attempt may start; each attempt moves it by the back-off.
    Backoff,
    /// At most `max` attempts until `until`, the window's end.
    Window { max: u32, window: Duration },
}

impl Limit {
    /// The counter after one more attempt at `now`, or how long the attempt must wait.
    fn count_one(
        self,
        policy: &ThrottlePolicy,
        current: Option<Counter>,
        now: UnixMillis,
    ) -> Result<Counter, Duration> {
        match self {
            Self::Backoff => {
                let current = current.unwrap_or(Counter {
                    count: 0,
                    until: 0,
                    expires_at: now,
                });
                if let Some(wait) = remaining(current.until, now) {
                    return Err(wait);
                }
                let count = current.count.saturating_add(1);
                // Below the threshold there is no back-off at all (`until` 0), not one that ends
                // "now": an attempt that began a moment earlier must not wait for this one.
                let until = policy
                    .backoff(count)
                    .map_or(0, |backoff| now.saturating_add(millis(backoff)));
                Ok(Counter {
                    count,
                    until,
                    expires_at: now.saturating_add(millis(BACKOFF_MEMORY)),
                })
            }
            Self::Window { max, window } => {
                let ends = now.saturating_add(millis(window));
                let current = current.unwrap_or(Counter {
                    count: 0,
                    until: ends,
                    expires_at: ends,
                });
                if current.count >= max {
                    return Err(remaining(current.until, now).unwrap_or(FLOODED_RETRY));
                }
                Ok(Counter {
                    count: current.count + 1,
                    ..current
                })
            }
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn remaining(until: UnixMillis, now: UnixMillis) -> Option<Duration> {
    let left = until.checked_sub(now).filter(|left| *left > 0)?;
    Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
}

/// Why a login may not proceed.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// Too many failures: retry after this long.
    #[error("too many failed logins")]
    Throttled(Duration),
    /// Too many registrations from this source: retry after this long.
    #[error("too many registrations")]
    RegistrationsThrottled(Duration),
    /// The throttle state cannot be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One counted attempt: the counter before and after it, so that it can be given back exactly.
#[derive(Debug, Clone)]
struct Reservation {
    key: String,
    before: Option<Counter>,
    after: Counter,
}

/// A login attempt that holds its places in the counters: keep it on failure, hand it to
/// [`LoginThrottle::succeeded`] on success.
#[derive(Debug)]
#[must_use = "a successful login must release its reservation"]
pub struct LoginAttempt {
    /// The (account, source) back-off counter.
    backoff_key: String,
    /// The window counters this attempt took a place in.
    windows: Vec<Reservation>,
    /// If this attempt fails, how long the next one must wait (it reached a limit).
    wait_if_failed: Option<Duration>,
}

impl LoginAttempt {
    /// How long the next attempt must wait if this one fails: `Some` when this attempt is the
    /// one that reaches a limit (the audit log's `login.throttled`).
    pub fn wait_if_failed(&self) -> Option<Duration> {
        self.wait_if_failed
    }
}

/// Applies the policy to logins.
pub struct LoginThrottle {
    store: Arc<dyn ThrottleStore>,
    policy: ThrottlePolicy,
}

impl LoginThrottle {
    /// Throttles with `policy`, keeping state in `store`.
    pub fn new(store: Arc<dyn ThrottleStore>, policy: ThrottlePolicy) -> Self {
        Self { store, policy }
    }

    /// Counts a login attempt before its password is checked, or refuses it while any limit
    /// says wait. The (account, source) back-off comes first: a source that is backing off is
    /// refused after one read of its own counter, writing nothing that other sources share.
    /// Then the source window, then the account window; places taken before a refusal are given
    /// back by a task of their own, so a client that cancels its call cannot leave them taken.
    pub async fn begin(
        &self,
        account: &Email,
        source: Option<IpAddr>,
        now: UnixMillis,
    ) -> Result<LoginAttempt, ThrottleError> {
        self.begin_for(account.normalized(), source, now).await
    }

    /// [`begin`](Self::begin) for an account known by its stored, normalised email
    /// (ChangePassword, DeleteAccount): the same counters as a Login of that email.
    pub async fn begin_for(
        &self,
        normalized_email: &str,
        source: Option<IpAddr>,
        now: UnixMillis,
    ) -> Result<LoginAttempt, ThrottleError> {
        let account = account_key(normalized_email);
        let source = source.map(source_key);
        let backoff_key = format!("{account}|{}", source.as_deref().unwrap_or("source:none"));
        let backoff = self.reserve(&backoff_key, Limit::Backoff, now).await?;
        let mut windows = Vec::new();
        if let Some(source) = source.filter(|_| self.policy.source_max_failures > 0) {
            windows.push((
                source,
                self.policy.source_max_failures,
                self.policy.source_window,
            ));
        }
        if self.policy.account_max_failures > 0 {
            windows.push((
                account,
                self.policy.account_max_failures,
                self.policy.account_window,
            ));
        }
        let mut wait_if_failed = remaining(backoff.after.until, now);
        let mut held = Vec::new();
        for (key, max, window) in windows {
            match self.reserve(&key, Limit::Window { max, window }, now).await {
                Ok(reservation) => {
                    if reservation.after.count >= max {
                        let wait = remaining(reservation.after.until, now).unwrap_or(FLOODED_RETRY);
                        wait_if_failed = Some(wait_if_failed.map_or(wait, |other| other.max(wait)));
                    }
                    held.push(reservation);
                }
                Err(error) => {
                    self.give_back_detached(Some(backoff), held, now);
                    return Err(error);
                }
            }
        }
        Ok(LoginAttempt {
            backoff_key,
            windows: held,
            wait_if_failed,
        })
    }

    /// The password was right: the (account, source) back-off starts over and the windows get
    /// their places back.
    pub async fn succeeded(
        &self,
        attempt: LoginAttempt,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.store.clear(&attempt.backoff_key).await?;
        for reservation in &attempt.windows {
            release_window_place(self.store.as_ref(), reservation, now).await?;
        }
        Ok(())
    }

    /// Counts a registration from `source`, or refuses it once the source has registered
    /// `source_max_registrations` times in the window (no limit when 0 or without a source).
    pub async fn count_registration(
        &self,
        source: Option<IpAddr>,
        now: UnixMillis,
    ) -> Result<(), ThrottleError> {
        let Some(source) = source.filter(|_| self.policy.source_max_registrations > 0) else {
            return Ok(());
        };
        let limit = Limit::Window {
            max: self.policy.source_max_registrations,
            window: self.policy.source_window,
        };
        self.reserve(&format!("register|{}", source_key(source)), limit, now)
            .await
            .map(drop)
            .map_err(|error| match error {
                ThrottleError::Throttled(wait) => ThrottleError::RegistrationsThrottled(wait),
                other => other,
            })
    }

    /// Forgets an account's counters (DeleteAccount): its window and its back-off from `source`;
    /// back-offs from other sources expire by themselves.
    pub async fn forget_account(
        &self,
        normalized_email: &str,
        source: Option<IpAddr>,
    ) -> Result<(), StoreError> {
        let account = account_key(normalized_email);
        let source = source.map(source_key);
        let backoff_key = format!("{account}|{}", source.as_deref().unwrap_or("source:none"));
        self.store.clear(&backoff_key).await?;
        self.store.clear(&account).await
    }

    /// Deletes forgotten counters where the store does not expire them itself.
    pub async fn purge_expired(&self, now: UnixMillis) -> Result<u64, StoreError> {
        self.store.purge_expired(now).await
    }

    /// Counts one attempt under `key` if `limit` allows it now, atomically (compare-and-set).
    /// A refusal writes nothing.
    async fn reserve(
        &self,
        key: &str,
        limit: Limit,
        now: UnixMillis,
    ) -> Result<Reservation, ThrottleError> {
        for _ in 0..MAX_RESERVATION_ROUNDS {
            let before = self.store.load(key, now).await?;
            let after = limit
                .count_one(&self.policy, before, now)
                .map_err(ThrottleError::Throttled)?;
            if self.store.replace(key, before, after, now).await? {
                return Ok(Reservation {
                    key: key.to_owned(),
                    before,
                    after,
                });
            }
        }
        // Every round lost to a concurrent attempt on this key: it is being flooded.
        Err(ThrottleError::Throttled(FLOODED_RETRY))
    }

    /// Gives back the places of an attempt refused further on, on a task of its own (it runs to
    /// the end even when the caller's request is cancelled). A store error leaves a place taken,
    /// counted as a failure, which errs on the safe side.
    fn give_back_detached(
        &self,
        backoff: Option<Reservation>,
        windows: Vec<Reservation>,
        now: UnixMillis,
    ) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut result = Ok(());
            if let Some(backoff) = backoff {
                result = undo_backoff(store.as_ref(), &backoff, now).await;
            }
            for reservation in &windows {
                if result.is_ok() {
                    result = release_window_place(store.as_ref(), reservation, now).await;
                }
            }
            if let Err(error) = result {
                tracing::warn!(
                    error = crate::telemetry::error_chain(&error),
                    "giving back a throttle place failed"
                );
            }
        });
    }
}

/// Puts an (account, source) counter back as it was before `reservation`, if nothing has
/// changed it since.
async fn undo_backoff(
    store: &dyn ThrottleStore,
    reservation: &Reservation,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let restored = reservation.before.unwrap_or(Counter {
        count: 0,
        until: 0,
        expires_at: reservation.after.expires_at,
    });
    store
        .replace(&reservation.key, Some(reservation.after), restored, now)
        .await
        .map(drop)
}

/// Gives one place back in the window `reservation` took it in (never below zero, and never in
/// a later window, which it did not take a place in).
async fn release_window_place(
    store: &dyn ThrottleStore,
    reservation: &Reservation,
    now: UnixMillis,
) -> Result<(), StoreError> {
    for _ in 0..MAX_RESERVATION_ROUNDS {
        let Some(current) = store.load(&reservation.key, now).await? else {
            return Ok(());
        };
        if current.count == 0 || current.until != reservation.after.until {
            return Ok(());
        }
        let fewer = Counter {
            count: current.count - 1,
            ..current
        };
        if store
            .replace(&reservation.key, Some(current), fewer, now)
            .await?
        {
            return Ok(());
        }
    }
    Ok(())
}

fn account_key(normalized_email: &str) -> String {
    let digest = Sha256::digest(normalized_email.as_bytes());
    format!("account:{}", URL_SAFE_NO_PAD.encode(&digest[..18]))
}

fn source_key(source: IpAddr) -> String {
    match source {
        IpAddr::V4(v4) => format!("source:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("source:{v4}"),
            None => {
                let segments = v6.segments();
                format!(
                    "source:{:x}:{:x}:{:x}:{:x}::/64",
                    segments[0], segments[1], segments[2], segments[3]
                )
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            failures_before_backoff: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(900),
            account_max_failures: 50,
            account_window: Duration::from_secs(900),
            source_max_failures: 100,
            source_max_registrations: 100,
            source_window: Duration::from_secs(900),
        }
    }

    #[test]
    fn backoff_starts_after_five_failures_doubles_and_is_capped() {
        let policy = policy();
        assert_eq!(policy.backoff(4), None);
        let seconds: Vec<u64> = (5..=16)
            .map(|n| policy.backoff(n).unwrap().as_secs())
            .collect();
        assert_eq!(seconds, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]);
        assert_eq!(policy.backoff(u32::MAX), Some(Duration::from_secs(900)));
    }

    #[test]
    fn the_fifth_failure_locks_the_next_attempt_for_the_base_delay() {
        let policy = policy();
        let mut counter = None;
        for _ in 0..4 {
            let next = Limit::Backoff.count_one(&policy, counter, 10_000).unwrap();
            assert_eq!(next.until, 0, "no back-off before the fifth failure");
            // An attempt that began earlier is not held up by it.
            Limit::Backoff
                .count_one(&policy, Some(next), 9_990)
                .unwrap();
            counter = Some(next);
        }
        let fifth = Limit::Backoff.count_one(&policy, counter, 10_000).unwrap();
        assert_eq!(fifth.until, 11_000);
        assert_eq!(
            Limit::Backoff.count_one(&policy, Some(fifth), 10_500),
            Err(Duration::from_millis(500))
        );
        let sixth = Limit::Backoff
            .count_one(&policy, Some(fifth), 11_000)
            .unwrap();
        assert_eq!((sixth.count, sixth.until), (6, 13_000));
    }

    #[test]
    fn a_window_takes_max_attempts_then_waits_for_its_end() {
        let policy = policy();
        let limit = Limit::Window {
            max: 2,
            window: Duration::from_secs(900),
        };
        let first = limit.count_one(&policy, None, 1_000).unwrap();
        assert_eq!((first.count, first.until), (1, 901_000));
        let second = limit.count_one(&policy, Some(first), 2_000).unwrap();
        assert_eq!(
            (second.count, second.until),
            (2, 901_000),
            "the window runs from the first"
        );
        assert_eq!(
            limit.count_one(&policy, Some(second), 3_000),
            Err(Duration::from_millis(898_000))
        );
    }

    #[test]
    fn keys_hide_emails_and_group_ipv6_by_64() {
        let email = Email::parse("Secret.Person@Example.com").unwrap();
        let same = Email::parse("secret.person@example.com").unwrap();
        assert_eq!(
            account_key(email.normalized()),
            account_key(same.normalized())
        );
        assert!(!account_key(email.normalized()).contains("secret"));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), "source:192.0.2.7");
    }
}
