//! Storage back ends behind three small traits: `UserStore` (Postgres or SQLite), and
//! `RevocationStore` and `ThrottleStore` (Redis, or the user database when no Redis is configured). The stores have no
//! rules about content: validation happens before, in `domain`; policy in `service`.
//!
//! Every call is bounded by a timeout, and connection-level failures become
//! `StoreError::Unavailable`, which the API reports as UNAVAILABLE.

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{Email, Jti, UserId, Username},
    password::PasswordHashString,
};

pub mod mirror;
pub mod postgres;
pub mod redis;
pub mod sqlite;

/// Upper bound for one SQL call, including waiting for a pooled connection.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(3);

/// What a store can report.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The normalised email is already registered.
    #[error("email already registered")]
    EmailTaken,
    /// The back end cannot be reached or did not answer in time.
    #[error("{backend} unavailable: {reason}")]
    Unavailable {
        /// Which back end ("database", "redis").
        backend: &'static str,
        /// What happened, without secrets.
        reason: String,
    },
    /// Anything else: a bug or corrupt data.
    #[error("{0}")]
    Unexpected(String),
}

/// A user to insert.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Its id.
    pub id: UserId,
    /// Its email.
    pub email: Email,
    /// Its display name.
    pub username: Option<Username>,
    /// Its argon2id hash.
    pub password_hash: PasswordHashString,
}

/// What Login needs to know about a user.
#[derive(Debug, Clone)]
pub struct StoredCredentials {
    /// The user's id.
    pub id: UserId,
    /// The stored argon2id hash.
    pub password_hash: PasswordHashString,
}

/// Where users live.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Inserts a user; `EmailTaken` if the normalised email exists (atomically, by unique index).
    async fn insert(&self, user: &NewUser) -> Result<(), StoreError>;
    /// Finds a user's credentials by normalised email.
    async fn find_credentials(
        &self,
        email: &Email,
    ) -> Result<Option<StoredCredentials>, StoreError>;
    /// Checks that the back end answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A short name for logs ("postgres", "sqlite").
    fn describe(&self) -> &'static str;
}

/// Where revoked token ids live until the token could no longer be accepted anyway.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Records that `jti` is revoked until `until` (Unix seconds); then the entry may vanish.
    async fn revoke(
        &self,
        jti: Jti,
        until: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<(), StoreError>;
    /// Whether `jti` is revoked.
    async fn is_revoked(&self, jti: Jti, now: UnixSeconds) -> Result<bool, StoreError>;
    /// Deletes entries past their time; a no-op where the back end expires them itself.
    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError>;
    /// Checks that the back end answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A short name for logs ("redis", "postgres", "sqlite").
    fn describe(&self) -> &'static str;
}

/// Failed logins counted under one throttle key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCount {
    /// Failures counted (0 when the key is absent or expired).
    pub failures: u32,
    /// Time of the latest failure.
    pub last_failure: UnixMillis,
    /// When the count will be forgotten.
    pub window_ends: UnixMillis,
}

/// Where failed-login counts live, shared by every instance.
#[async_trait]
pub trait ThrottleStore: Send + Sync + 'static {
    /// The counts under `keys`, in order (zero for absent or expired keys).
    async fn failures(
        &self,
        keys: &[String],
        now: UnixMillis,
    ) -> Result<Vec<FailureCount>, StoreError>;
    /// Counts one more failure under `key`. The count is forgotten `memory` after its first
    /// failure (a fixed window), or, if `sliding`, after its latest.
    async fn add_failure(
        &self,
        key: &str,
        memory: Duration,
        sliding: bool,
        now: UnixMillis,
    ) -> Result<FailureCount, StoreError>;
    /// Forgets `key`.
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
    /// Deletes counts past their memory; a no-op where the back end expires them itself.
    async fn purge_expired(&self, now: UnixMillis) -> Result<u64, StoreError>;
}

/// Duration in milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Runs a back-end call that must answer within `limit`.
pub(crate) async fn bounded<T>(
    backend: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable {
            backend,
            reason: format!("no answer within {} ms", limit.as_millis()),
        }),
    }
}

/// Classifies a sqlx error: connection problems are `Unavailable`, the rest `Unexpected`.
pub(crate) fn sql_error(error: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &error {
        E::Database(db) if db.is_unique_violation() => StoreError::EmailTaken,
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_) => StoreError::Unavailable {
            backend: "database",
            reason: error.to_string(),
        },
        // Postgres class 08 (connection exception), 57P (operator intervention: shutdown),
        // 53 (insufficient resources); SQLite BUSY/LOCKED.
        E::Database(db)
            if db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code.starts_with("53")
                    || code == "5"
                    || code == "6"
            }) =>
        {
            StoreError::Unavailable {
                backend: "database",
                reason: error.to_string(),
            }
        }
        _ => StoreError::Unexpected(error.to_string()),
    }
}
