//! Storage back ends behind four small traits: `UserStore` and `SessionStore` (Postgres or
//! SQLite), and `RevocationStore` and `ThrottleStore` (Redis, or the user database when no Redis is
//! configured).
//! The stores have no rules about content: validation happens before, in `domain`; policy in
//! `service`.
//!
//! - `sql/`: one implementation of all three traits for Postgres and SQLite; what differs between
//!   the two dialects sits in `sql/dialect.rs`.
//! - `redis/`: revocations and throttle counts in Redis or Redis Cluster.
//! - `mirror.rs`: cached revocation mode, an in-memory mirror of the Redis revocation set.
//! - `resident.rs`: the embedded default's revocations, held in memory and written through to
//!   SQLite, so that Verify asks no database.
//! - `polled.rs`: Postgres revocations (no Redis) polled into memory for WatchRevocations.
//! - `feed.rs`: the revocation feed those three keep: the set in memory and its changes, which
//!   WatchRevocations streams.
//! - `revoked_set.rs`: the in-memory revocation set the feed answers from.
//!
//! Every call is bounded by a timeout (`bounded`), and connection-level failures become
//! `StoreError::Unavailable`, which the API reports as UNAVAILABLE.

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{
        Email, Jti, PasswordHashString, RefreshTokenHash, SessionId, UserAgent, UserId, Username,
    },
};

pub mod feed;
pub mod mirror;
pub mod polled;
pub mod redis;
pub mod resident;
mod revoked_set;
pub mod sql;

pub use self::{
    feed::{FeedChange, RevocationFeed},
    mirror::MirroredRevocations,
    polled::PolledRevocations,
    redis::{EvictionPolicy, RedisStore, RedisTls, RedisTopology, warn_unknown_eviction_policy},
    resident::ResidentRevocations,
    revoked_set::RevokedSet,
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

/// What ChangePassword and DeleteAccount need to know about a user.
#[derive(Debug, Clone)]
pub struct StoredUser {
    /// The email as stored (normalised form), for the login throttle's account key.
    pub email_normalized: String,
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
    /// A user's email and hash by id.
    async fn find_user(&self, id: UserId) -> Result<Option<StoredUser>, StoreError>;
    /// Replaces a user's hash if it is still `expected` (so a rehash never undoes a concurrent
    /// password change); whether it did.
    async fn replace_password_hash(
        &self,
        id: UserId,
        expected: &PasswordHashString,
        new: &PasswordHashString,
    ) -> Result<bool, StoreError>;
    /// Deletes a user and, with it, its sessions; whether it existed.
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError>;
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

/// A session to insert.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Its id.
    pub id: SessionId,
    /// Whose.
    pub user_id: UserId,
    /// The hash of its first refresh token.
    pub refresh_hash: RefreshTokenHash,
    /// Now.
    pub created_at: UnixMillis,
    /// When the refresh token expires unused.
    pub idle_expires_at: UnixMillis,
    /// The session's absolute end.
    pub expires_at: UnixMillis,
    /// What started it.
    pub user_agent: Option<UserAgent>,
    /// From where (the login throttle's source address).
    pub source_address: Option<String>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Its id.
    pub id: SessionId,
    /// Whose.
    pub user_id: UserId,
    /// The hash of the refresh token spent by the latest rotation.
    pub previous_hash: Option<RefreshTokenHash>,
    /// When that rotation happened.
    pub rotated_at: Option<UnixMillis>,
    /// When it started.
    pub created_at: UnixMillis,
    /// When its refresh token was last used (or when it started).
    pub last_used_at: UnixMillis,
    /// When the refresh token expires unused (never after `expires_at`).
    pub idle_expires_at: UnixMillis,
    /// The absolute end.
    pub expires_at: UnixMillis,
    /// When it was ended; `None` while live.
    pub ended_at: Option<UnixMillis>,
    /// What started it.
    pub user_agent: Option<UserAgent>,
    /// From where.
    pub source_address: Option<String>,
}

impl StoredSession {
    /// Whether it is neither ended nor expired at `now`.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        self.ended_at.is_none() && self.idle_expires_at > now && self.expires_at > now
    }
}

/// Where a presented refresh token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokenState {
    /// It is the session's current one.
    Current,
    /// It was spent by a rotation.
    Spent,
}

/// A rotation of session `session`'s refresh token: spend `presented`, make `next` current,
/// extend the idle limit to `idle_until` (never past the session's absolute end).
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// The session the presented token names.
    pub session: SessionId,
    /// The refresh token presented.
    pub presented: RefreshTokenHash,
    /// Its successor.
    pub next: RefreshTokenHash,
    /// Now.
    pub now: UnixMillis,
    /// The new idle limit, before capping at the absolute end.
    pub idle_until: UnixMillis,
}

/// Where sessions live (the user database). Rotation is a compare-and-set on the current refresh
/// token, so of N concurrent rotations from one token exactly one succeeds.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a session; with `password_hash`, only if the user exists and its stored hash is
    /// still that one (in the same statement). Whether it was inserted.
    async fn create_session(
        &self,
        session: &NewSession,
        password_hash: Option<&PasswordHashString>,
    ) -> Result<bool, StoreError>;
    /// If `rotation.presented` is the current refresh token of `rotation.session`, live at `now`:
    /// makes `next` current, records `presented` as spent (the session's previous one, rotated
    /// now) and returns the session as it is afterwards. Otherwise `None`, and nothing changes.
    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
    ) -> Result<Option<StoredSession>, StoreError>;
    /// The reuse grace: if `expected_current` is still the current refresh token of session `id`
    /// and the session is live, replaces it by `rotation.next` (spending it), keeping
    /// `rotation.presented` as the previous one and the rotation time as it was.
    async fn replace_current_refresh_token(
        &self,
        id: SessionId,
        expected_current: RefreshTokenHash,
        rotation: &Rotation,
    ) -> Result<Option<StoredSession>, StoreError>;
    /// Session `session`, its current refresh token's hash, and whether `hash` is that one or
    /// one of its last spent ones; `None` when the session does not exist or knows no such token.
    async fn find_refresh_token(
        &self,
        session: SessionId,
        hash: RefreshTokenHash,
    ) -> Result<Option<(StoredSession, RefreshTokenHash, RefreshTokenState)>, StoreError>;
    /// A session by id.
    async fn session(&self, id: SessionId) -> Result<Option<StoredSession>, StoreError>;
    /// Ends session `id` if it is live and (when given) `user`'s; the ended session, or `None`
    /// when nothing was ended.
    async fn end_session(
        &self,
        id: SessionId,
        user: Option<UserId>,
        now: UnixMillis,
    ) -> Result<Option<StoredSession>, StoreError>;
    /// Ends every live session of `user`; the sessions ended.
    async fn end_user_sessions(
        &self,
        user: UserId,
        now: UnixMillis,
    ) -> Result<Vec<StoredSession>, StoreError>;
    /// `user`'s sessions (ended, expired or live) whose refresh token was last used at or after
    /// `since`.
    async fn sessions_used_since(
        &self,
        user: UserId,
        since: UnixMillis,
    ) -> Result<Vec<StoredSession>, StoreError>;
    /// Ends `user`'s live sessions beyond the newest `keep`; the sessions ended.
    async fn end_sessions_beyond(
        &self,
        user: UserId,
        keep: u32,
        now: UnixMillis,
    ) -> Result<Vec<StoredSession>, StoreError>;
    /// `user`'s sessions live at `now`, newest first.
    async fn live_sessions(
        &self,
        user: UserId,
        now: UnixMillis,
    ) -> Result<Vec<StoredSession>, StoreError>;
    /// Deletes sessions ended or expired before `before`. A session's
    /// idle limit never passes its absolute end (`create_session` callers and rotations cap it),
    /// so the idle limit alone tells expiry.
    async fn purge_sessions(&self, before: UnixMillis) -> Result<u64, StoreError>;
}

/// What a revocation refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// One access token.
    Token(Jti),
    /// Every access token issued in a session.
    Session(SessionId),
    /// Every access token of a user issued (`iat`) before a second.
    IssuedBefore(UserId, UnixSeconds),
}

/// A revocation: whose tokens, what it refuses, and until when (Unix seconds, inclusive) it must
/// be kept: until the last token it could refuse can no longer be accepted anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The user whose tokens are refused (Redis keeps a user's entries together).
    pub user: UserId,
    /// What is refused.
    pub what: Revoked,
    /// The last second the entry matters.
    pub until: UnixSeconds,
}

/// What Verify asks of a revocation store about one access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRef {
    /// `sub`.
    pub user: UserId,
    /// `jti`.
    pub jti: Jti,
    /// `sid`, if the token has one.
    pub session: Option<SessionId>,
    /// `iat`.
    pub issued_at: UnixSeconds,
}

/// Where revocations live until the tokens they refuse could no longer be accepted anyway.
/// Three kinds (`Revoked`), all checked by one `is_revoked`.
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Records `revocations` (at once where the back end allows); an entry may vanish after its
    /// `until`. Revoking again keeps the later time (and, for a cut-off, the later second).
    async fn revoke(&self, revocations: &[Revocation], now: UnixSeconds) -> Result<(), StoreError>;
    /// Whether any revocation in force at `now` refuses `token`: its jti, its session, or a
    /// cut-off of its user after its `iat`.
    async fn is_revoked(&self, token: &TokenRef, now: UnixSeconds) -> Result<bool, StoreError>;
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
    /// What this store holds in memory, for the metrics; `None` when it holds nothing there.
    fn in_memory(&self) -> Option<InMemoryRevocations> {
        None
    }
    /// The feed of every revocation in force and each new one, for WatchRevocations; `None`
    /// where this store keeps none (strict mode or Postgres without watchers configured).
    fn feed(&self) -> Option<std::sync::Arc<RevocationFeed>> {
        None
    }
}

/// A revocation store's in-memory copy, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InMemoryRevocations {
    /// Revocations held.
    pub entries: usize,
    /// A mirror of a feed: seconds since it last heard its heartbeat (infinite before the first);
    /// `None` for a store that is itself the truth (the embedded one).
    pub feed_silent_seconds: Option<f64>,
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
