//! Storage back ends behind three small traits: `UserStore` (Postgres or SQLite), and
//! `RevocationStore` and `ThrottleStore` (Redis, or the user database when no Redis is configured).
//! The stores have no rules about content: validation happens before, in `domain`; policy in
//! `service`.
//!
//! - `sql/`: one implementation of all three traits for Postgres and SQLite; what differs between
//!   the two dialects sits in `sql/dialect.rs`.
//! - `redis/`: revocations and throttle counts in Redis or Redis Cluster.
//! - `mirror.rs`: cached revocation mode, an in-memory mirror of the Redis revocation set.
//!
//! Every call is bounded by a timeout (`bounded`), and connection-level failures become
//! `StoreError::Unavailable`, which the API reports as UNAVAILABLE.

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{Email, Jti, PasswordHashString, UserId, Username},
};

pub mod mirror;
pub mod redis;
pub mod sql;

pub use self::{
    mirror::MirroredRevocations,
    redis::{EvictionPolicy, RedisStore, RedisTopology, warn_unknown_eviction_policy},
    sql::{DatabaseLocation, SqlStore},
};

/// What a store can report. `Display` is short; the cause chain (`source()`) carries the details
/// for the logs, and never a secret (back-end errors name no passwords or tokens).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The normalised email is already registered.
    #[error("email already registered")]
    EmailTaken,
    /// The back end cannot be reached or did not answer in time.
    #[error("{backend} unavailable")]
    Unavailable {
        /// Which back end ("database", "redis").
        backend: &'static str,
        /// What happened.
        #[source]
        cause: anyhow::Error,
    },
    /// Anything else: a bug or corrupt data.
    #[error("unexpected store error")]
    Unexpected(#[source] anyhow::Error),
}

impl StoreError {
    /// `Unexpected`, with `cause` as its source.
    pub(crate) fn unexpected(cause: impl Into<anyhow::Error>) -> Self {
        Self::Unexpected(cause.into())
    }
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

/// A user's emails as stored, for re-normalisation.
#[derive(Debug, Clone)]
pub struct StoredEmail {
    /// The user.
    pub id: UserId,
    /// The email as the user gave it.
    pub email: String,
    /// The normalised form stored beside it.
    pub normalized: String,
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
    /// Up to `limit` users in id order, after `after` (from the start when `None`).
    async fn users_page(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<StoredEmail>, StoreError>;
    /// Changes a user's normalised email; `EmailTaken` if another user has it.
    async fn set_normalized_email(&self, id: UserId, normalized: &str) -> Result<(), StoreError>;
    /// Whether the one-time maintenance step `name` has been recorded.
    async fn maintenance_done(&self, name: &str) -> Result<bool, StoreError>;
    /// Records the one-time maintenance step `name` (again is fine).
    async fn record_maintenance(&self, name: &str, now: UnixMillis) -> Result<(), StoreError>;
    /// The shared fact `name`, if recorded.
    async fn fact(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Records `value` as fact `name` if it is still `expected` (`None`: not recorded yet);
    /// whether it did.
    async fn replace_fact(
        &self,
        name: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, StoreError>;
    /// Checks that the back end answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A short name for logs ("postgres", "sqlite").
    fn describe(&self) -> &'static str;
}

/// Where revoked token ids live until the token could no longer be accepted anyway.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Records that `jti` is revoked until `until` (Unix seconds, inclusive); then the entry may
    /// vanish. Revoking again keeps the later of the two times.
    async fn revoke(
        &self,
        jti: Jti,
        until: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<(), StoreError>;
    /// Whether `jti` is revoked at `now`.
    async fn is_revoked(&self, jti: Jti, now: UnixSeconds) -> Result<bool, StoreError>;
    /// Deletes entries past their time; a no-op where the back end expires them itself.
    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError>;
    /// The marker this store holds as long as it keeps its data (Redis: a key without TTL that a
    /// restart without persistence or a FLUSHALL removes); `None` when there is none.
    async fn data_marker(&self) -> Result<Option<String>, StoreError>;
    /// Puts `marker` in place unless one already is; the marker in place afterwards.
    async fn place_data_marker(&self, marker: &str) -> Result<String, StoreError>;
    /// What distinguishes this store from others sharing the user database (Redis: the key
    /// prefix), so that each has its marker recorded apart.
    fn data_marker_scope(&self) -> String;
    /// Checks that the back end answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A short name for logs ("redis", "postgres", "sqlite").
    fn describe(&self) -> &'static str;
}

/// What the login throttle keeps under one key. The store attaches no meaning to `count` and
/// `until` (the policy in `throttle.rs` does); it keeps the counter until `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// Attempts counted.
    pub count: u32,
    /// A time the policy needs: the end of a back-off or of a window.
    pub until: UnixMillis,
    /// When the counter is forgotten.
    pub expires_at: UnixMillis,
}

/// Where login-throttle counters live, shared by every instance. Updates are compare-and-set, so
/// that an attempt is counted atomically with the check that allowed it: of N concurrent
/// `replace` calls from one `expected`, exactly one succeeds.
#[async_trait]
pub trait ThrottleStore: Send + Sync + 'static {
    /// The counter under `key`, or `None` when there is none or it has expired at `now`.
    async fn load(&self, key: &str, now: UnixMillis) -> Result<Option<Counter>, StoreError>;
    /// Puts `new` under `key` if the counter there is still `expected` (`None`: absent or expired
    /// at `now`); whether it did.
    async fn replace(
        &self,
        key: &str,
        expected: Option<Counter>,
        new: Counter,
        now: UnixMillis,
    ) -> Result<bool, StoreError>;
    /// Forgets `key`.
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
    /// Deletes counters past their expiry; a no-op where the back end expires them itself.
    async fn purge_expired(&self, now: UnixMillis) -> Result<u64, StoreError>;
    /// A short name for logs ("redis", "redis cluster", "postgres", "sqlite").
    fn describe(&self) -> &'static str;
}

/// Runs a back-end call that must answer within `limit`; past it, `Unavailable`.
pub(crate) async fn bounded<T>(
    backend: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable {
            backend,
            cause: anyhow::anyhow!("no answer within {} ms", limit.as_millis()),
        }),
    }
}
