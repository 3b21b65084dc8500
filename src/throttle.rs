//! Login throttling: per account, exponential back-off after consecutive failures; per source
//! address, a cap on failures per window. The state lives in a `ThrottleStore` (Redis or the user
//! database) shared by every instance; if it cannot be reached, Login fails closed.
//!
//! Accounts are keyed by a hash of the normalised email whether or not such an account exists,
//! so throttling reveals nothing about which emails are registered, and the store holds no emails.
//! IPv6 sources are keyed by their /64, the block one subscriber usually gets.

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};

use crate::{
    clock::UnixMillis,
    domain::Email,
    store::{FailureCount, StoreError, ThrottleStore},
};

/// How long an account's failure count is remembered after its latest failure.
pub const ACCOUNT_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// The limits (see `config` for the defaults and their sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Consecutive failures of one account before it backs off.
    pub failures_before_backoff: u32,
    /// The first delay; doubled per further failure.
    pub backoff_base: Duration,
    /// The longest delay.
    pub backoff_max: Duration,
    /// Failures per source per window (0: no limit).
    pub source_max_failures: u32,
    /// The source window, counted from its first failure.
    pub source_window: Duration,
}

impl ThrottlePolicy {
    /// The back-off after `failures` consecutive failures, if any: base × 2^(failures − threshold),
    /// capped.
    pub fn account_backoff(&self, failures: u32) -> Option<Duration> {
        let beyond = failures.checked_sub(self.failures_before_backoff)?;
        let factor = 2u32.checked_pow(beyond.min(31)).unwrap_or(u32::MAX);
        Some(
            self.backoff_base
                .saturating_mul(factor)
                .min(self.backoff_max),
        )
    }

    /// How long an account must still wait, given its failures, at `now`.
    pub fn account_wait(&self, count: &FailureCount, now: UnixMillis) -> Option<Duration> {
        let backoff = self.account_backoff(count.failures)?;
        let until = count.last_failure.saturating_add(millis(backoff));
        remaining(until, now)
    }

    /// How long a source must still wait, given its failures in the window, at `now`.
    pub fn source_wait(&self, count: &FailureCount, now: UnixMillis) -> Option<Duration> {
        if self.source_max_failures == 0 || count.failures < self.source_max_failures {
            return None;
        }
        remaining(count.window_ends, now)
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
    /// The throttle state cannot be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
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

    /// Refuses a login attempt while its account or source is backing off.
    pub async fn check(
        &self,
        account: &Email,
        source: Option<IpAddr>,
        now: UnixMillis,
    ) -> Result<(), ThrottleError> {
        let mut keys = vec![account_key(account)];
        keys.extend(source.map(source_key));
        let counts = self.store.failures(&keys, now).await?;
        let account_wait = counts
            .first()
            .and_then(|c| self.policy.account_wait(c, now));
        let source_wait = counts.get(1).and_then(|c| self.policy.source_wait(c, now));
        match account_wait.max(source_wait) {
            Some(wait) => Err(ThrottleError::Throttled(wait)),
            None => Ok(()),
        }
    }

    /// Records a failed attempt against the account and the source.
    pub async fn failed(
        &self,
        account: &Email,
        source: Option<IpAddr>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.store
            .add_failure(&account_key(account), ACCOUNT_MEMORY, true, now)
            .await?;
        if let Some(source) = source.filter(|_| self.policy.source_max_failures > 0) {
            self.store
                .add_failure(&source_key(source), self.policy.source_window, false, now)
                .await?;
        }
        Ok(())
    }

    /// Deletes forgotten counts where the store does not expire them itself.
    pub async fn purge_expired(&self, now: UnixMillis) -> Result<u64, StoreError> {
        self.store.purge_expired(now).await
    }

    /// A success resets the account's count (the source's window runs its course).
    pub async fn succeeded(&self, account: &Email) -> Result<(), StoreError> {
        self.store.clear(&account_key(account)).await
    }
}

fn account_key(account: &Email) -> String {
    let digest = Sha256::digest(account.normalized().as_bytes());
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
            source_max_failures: 100,
            source_window: Duration::from_secs(900),
        }
    }

    #[test]
    fn backoff_starts_after_five_failures_doubles_and_is_capped() {
        let policy = policy();
        assert_eq!(policy.account_backoff(4), None);
        let seconds: Vec<u64> = (5..=16)
            .map(|n| policy.account_backoff(n).unwrap().as_secs())
            .collect();
        assert_eq!(seconds, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]);
        assert_eq!(
            policy.account_backoff(u32::MAX),
            Some(Duration::from_secs(900))
        );
    }

    #[test]
    fn an_account_waits_from_its_latest_failure() {
        let policy = policy();
        let count = FailureCount {
            failures: 6,
            last_failure: 10_000,
            window_ends: 0,
        };
        assert_eq!(
            policy.account_wait(&count, 10_000),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            policy.account_wait(&count, 11_500),
            Some(Duration::from_millis(500))
        );
        assert_eq!(policy.account_wait(&count, 12_000), None);
    }

    #[test]
    fn a_source_waits_for_its_window_once_over_the_limit() {
        let policy = policy();
        let under = FailureCount {
            failures: 99,
            last_failure: 0,
            window_ends: 900_000,
        };
        let over = FailureCount {
            failures: 100,
            ..under
        };
        assert_eq!(policy.source_wait(&under, 1_000), None);
        assert_eq!(
            policy.source_wait(&over, 1_000),
            Some(Duration::from_millis(899_000))
        );
        assert_eq!(policy.source_wait(&over, 900_000), None);
        let unlimited = ThrottlePolicy {
            source_max_failures: 0,
            ..policy
        };
        assert_eq!(unlimited.source_wait(&over, 1_000), None);
    }

    #[test]
    fn keys_hide_emails_and_group_ipv6_by_64() {
        let email = Email::parse("Secret.Person@Example.com").unwrap();
        let same = Email::parse("secret.person@example.com").unwrap();
        assert_eq!(account_key(&email), account_key(&same));
        assert!(!account_key(&email).contains("secret"));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), "source:192.0.2.7");
    }
}
