//! The SQL store: users, and revocations and throttle counts when no Redis is configured, in
//! Postgres or SQLite. One implementation for both: the statements are shared, and `run!` runs
//! each on whichever pool this is, with `dialect` naming that database's UUID encoding
//! (everything that differs lives in `dialect.rs`). Every call is bounded and its sqlx error
//! classified in one place.

mod dialect;

pub use dialect::DatabaseLocation;

use std::time::Duration;

use async_trait::async_trait;

use self::dialect::Pool;
use super::{
    FailureCount, NewUser, RevocationStore, StoreError, StoredCredentials, ThrottleStore,
    UserStore, bounded, millis,
};
use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{Email, Jti, PasswordHashString},
};

/// Upper bound for one SQL call, including waiting for a pooled connection.
pub const SQL_TIMEOUT: Duration = Duration::from_secs(3);

const BACKEND: &str = "database";

const INSERT_USER: &str = "INSERT INTO users (id, email, email_normalized, username, password_hash) \
     VALUES ($1, $2, $3, $4, $5)";
const FIND_CREDENTIALS: &str = "SELECT id, password_hash FROM users WHERE email_normalized = $1";
const PING: &str = "SELECT 1";
/// Revoking twice keeps the later expiry (a CASE, since Postgres has GREATEST and SQLite MAX).
const REVOKE: &str = "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
     ON CONFLICT (jti) DO UPDATE SET expires_at = CASE \
       WHEN revoked_tokens.expires_at > excluded.expires_at THEN revoked_tokens.expires_at \
       ELSE excluded.expires_at END";
const IS_REVOKED: &str = "SELECT 1 FROM revoked_tokens WHERE jti = $1 AND expires_at >= $2";
const PURGE_REVOKED: &str = "DELETE FROM revoked_tokens WHERE expires_at < $1";
const FAILURES: &str = "SELECT failures, last_failure_ms, expires_at_ms FROM login_failures \
     WHERE key = $1 AND expires_at_ms > $2";
/// An expired row starts over; SET expressions read the row's old values.
const ADD_FAILURE: &str = "INSERT INTO login_failures (key, failures, last_failure_ms, expires_at_ms) \
     VALUES ($1, 1, $2, $2 + $3) \
     ON CONFLICT (key) DO UPDATE SET \
       failures = CASE WHEN login_failures.expires_at_ms <= $2 THEN 1 \
                       ELSE login_failures.failures + 1 END, \
       expires_at_ms = CASE WHEN login_failures.expires_at_ms <= $2 OR $4 THEN $2 + $3 \
                            ELSE login_failures.expires_at_ms END, \
       last_failure_ms = $2 \
     RETURNING failures, last_failure_ms, expires_at_ms";
const CLEAR_FAILURES: &str = "DELETE FROM login_failures WHERE key = $1";
const PURGE_FAILURES: &str = "DELETE FROM login_failures WHERE expires_at_ms <= $1";

/// The SQL store; cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: Pool,
}

impl SqlStore {
    /// Connects (Postgres: at most `max_connections` at once) and runs the migrations.
    pub async fn connect(
        location: &DatabaseLocation,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = Pool::connect(location, max_connections)
            .await
            .map_err(sql_error)?;
        Ok(Self { pool })
    }
}

/// Runs `$body` on this store's pool, bounded by [`SQL_TIMEOUT`], with its sqlx error classified.
/// Inside `$body`, `$db` is the pool (`&PgPool` or `&SqlitePool`) and `$dialect` the module of that
/// database's UUID encoding (`dialect::postgres` or `dialect::sqlite`); `?` on sqlx errors works.
macro_rules! run {
    ($store:expr, |$db:ident, $dialect:ident| $body:expr) => {
        bounded(BACKEND, SQL_TIMEOUT, async {
            let result: Result<_, sqlx::Error> = async {
                match &$store.pool {
                    Pool::Postgres($db) => {
                        #[allow(unused_imports)]
                        use self::dialect::postgres as $dialect;
                        $body
                    }
                    Pool::Sqlite($db) => {
                        #[allow(unused_imports)]
                        use self::dialect::sqlite as $dialect;
                        $body
                    }
                }
            }
            .await;
            result.map_err(sql_error)
        })
        .await
    };
}

#[async_trait]
impl UserStore for SqlStore {
    async fn insert(&self, user: &NewUser) -> Result<(), StoreError> {
        run!(self, |db, dialect| {
            sqlx::query(INSERT_USER)
                .bind(dialect::uuid(user.id.as_uuid()))
                .bind(user.email.as_str())
                .bind(user.email.normalized())
                .bind(user.username.as_ref().map(|u| u.as_str()))
                .bind(user.password_hash.as_str())
                .execute(db)
                .await
                .map(drop)
        })
    }

    async fn find_credentials(
        &self,
        email: &Email,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        run!(self, |db, dialect| {
            let row: Option<(dialect::Uuid, String)> = sqlx::query_as(FIND_CREDENTIALS)
                .bind(email.normalized())
                .fetch_optional(db)
                .await?;
            Ok(row.map(|(id, hash)| StoredCredentials {
                id: dialect::from_db(id).into(),
                password_hash: PasswordHashString::from_phc(hash),
            }))
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        run!(self, |db, dialect| sqlx::query(PING)
            .execute(db)
            .await
            .map(drop))
    }

    fn describe(&self) -> &'static str {
        self.pool.describe()
    }
}

#[async_trait]
impl RevocationStore for SqlStore {
    async fn revoke(
        &self,
        jti: Jti,
        until: UnixSeconds,
        _now: UnixSeconds,
    ) -> Result<(), StoreError> {
        run!(self, |db, dialect| {
            sqlx::query(REVOKE)
                .bind(dialect::uuid(jti.as_uuid()))
                .bind(until)
                .execute(db)
                .await
                .map(drop)
        })
    }

    async fn is_revoked(&self, jti: Jti, now: UnixSeconds) -> Result<bool, StoreError> {
        run!(self, |db, dialect| {
            let found = sqlx::query(IS_REVOKED)
                .bind(dialect::uuid(jti.as_uuid()))
                .bind(now)
                .fetch_optional(db)
                .await?;
            Ok(found.is_some())
        })
    }

    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        run!(self, |db, dialect| {
            let done = sqlx::query(PURGE_REVOKED).bind(now).execute(db).await?;
            Ok(done.rows_affected())
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        UserStore::ping(self).await
    }

    fn describe(&self) -> &'static str {
        self.pool.describe()
    }
}

#[async_trait]
impl ThrottleStore for SqlStore {
    async fn failures(
        &self,
        keys: &[String],
        now: UnixMillis,
    ) -> Result<Vec<FailureCount>, StoreError> {
        run!(self, |db, dialect| {
            let mut counts = Vec::with_capacity(keys.len());
            for key in keys {
                let row: Option<(i64, i64, i64)> = sqlx::query_as(FAILURES)
                    .bind(key)
                    .bind(now)
                    .fetch_optional(db)
                    .await?;
                counts.push(row.map(failure_count).unwrap_or_default());
            }
            Ok(counts)
        })
    }

    async fn add_failure(
        &self,
        key: &str,
        memory: Duration,
        sliding: bool,
        now: UnixMillis,
    ) -> Result<FailureCount, StoreError> {
        run!(self, |db, dialect| {
            let row: (i64, i64, i64) = sqlx::query_as(ADD_FAILURE)
                .bind(key)
                .bind(now)
                .bind(millis(memory))
                .bind(sliding)
                .fetch_one(db)
                .await?;
            Ok(failure_count(row))
        })
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        run!(self, |db, dialect| sqlx::query(CLEAR_FAILURES)
            .bind(key)
            .execute(db)
            .await
            .map(drop))
    }

    async fn purge_expired(&self, now: UnixMillis) -> Result<u64, StoreError> {
        run!(self, |db, dialect| {
            let done = sqlx::query(PURGE_FAILURES).bind(now).execute(db).await?;
            Ok(done.rows_affected())
        })
    }

    fn describe(&self) -> &'static str {
        self.pool.describe()
    }
}

fn failure_count((failures, last_failure, window_ends): (i64, i64, i64)) -> FailureCount {
    FailureCount {
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        last_failure,
        window_ends,
    }
}

/// Classifies a sqlx error: a unique violation is `EmailTaken` (the only unique index an insert
/// can hit), connection problems are `Unavailable`, the rest `Unexpected`; the error stays the
/// cause.
fn sql_error(error: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let unavailable = match &error {
        E::Database(db) if db.is_unique_violation() => return StoreError::EmailTaken,
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_) => true,
        E::Database(db) => db
            .code()
            .is_some_and(|code| dialect::is_unavailable_code(&code)),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable {
            backend: BACKEND,
            cause: error.into(),
        }
    } else {
        StoreError::unexpected(error)
    }
}
