//! The SQL store: users, and revocations and throttle counts when no Redis is configured, in
//! Postgres or SQLite. One implementation for both: the statements are shared
//! (`statements.rs`), and `run!` runs
//! each on whichever pool this is, with `dialect` naming that database's UUID encoding
//! (everything that differs lives in `dialect.rs`). Every call is bounded and its sqlx error
//! classified in one place.

mod dialect;
mod rotation_pool;
mod statements;

pub use dialect::DatabaseLocation;

use std::time::Duration;

use async_trait::async_trait;

use self::{dialect::Pool, rotation_pool::RotationPool, statements::*};
use super::{
    Counter, NewUser, Revocation, RevocationStore, Revoked, StoreError, StoredCredentials,
    StoredEmail, StoredUser, ThrottleStore, TokenRef, UserStore, bounded,
};
use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{Email, Jti, PasswordHashString, UserId},
};

/// Upper bound for one SQL call, including waiting for a pooled connection.
pub const SQL_TIMEOUT: Duration = Duration::from_secs(3);

const BACKEND: &str = "database";

/// The SQL store; cheap to clone (pool handles).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: Pool,
    /// Postgres with at least two connections: half of them (rounded down), for Refresh's
    /// rotation, which runs on them without sqlx's ping on release.
    rotation: Option<RotationPool>,
}

impl SqlStore {
    /// Connects (Postgres: at most `max_connections` at once, split between the main pool and
    /// the rotation's) and runs the migrations.
    pub async fn connect(
        location: &DatabaseLocation,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let (pool_size, rotation) = match location {
            DatabaseLocation::Postgres(options) if max_connections >= 2 => {
                let rotation_size = max_connections / 2;
                (
                    max_connections - rotation_size,
                    Some(RotationPool::new(options.clone(), rotation_size as usize)),
                )
            }
            _ => (max_connections, None),
        };
        let pool = Pool::connect(location, pool_size)
            .await
            .map_err(sql_error)?;
        Ok(Self { pool, rotation })
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

mod sessions;

#[async_trait]
impl UserStore for SqlStore {
    #[tracing::instrument(name = "sql.insert", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
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

    #[tracing::instrument(name = "sql.find_credentials", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
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

    #[tracing::instrument(name = "sql.users_page", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn users_page(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<StoredEmail>, StoreError> {
        let limit = i64::from(limit);
        run!(self, |db, dialect| {
            let rows: Vec<(dialect::Uuid, String, String)> = match after {
                None => {
                    sqlx::query_as(USERS_FIRST_PAGE)
                        .bind(limit)
                        .fetch_all(db)
                        .await?
                }
                Some(after) => {
                    sqlx::query_as(USERS_PAGE_AFTER)
                        .bind(dialect::uuid(after.as_uuid()))
                        .bind(limit)
                        .fetch_all(db)
                        .await?
                }
            };
            Ok(rows
                .into_iter()
                .map(|(id, email, normalized)| StoredEmail {
                    id: dialect::from_db(id).into(),
                    email,
                    normalized,
                })
                .collect())
        })
    }

    #[tracing::instrument(name = "sql.find_user", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn find_user(&self, id: UserId) -> Result<Option<StoredUser>, StoreError> {
        run!(self, |db, dialect| {
            let row: Option<(String, String)> = sqlx::query_as(FIND_USER)
                .bind(dialect::uuid(id.as_uuid()))
                .fetch_optional(db)
                .await?;
            Ok(row.map(|(email_normalized, hash)| StoredUser {
                email_normalized,
                password_hash: PasswordHashString::from_phc(hash),
            }))
        })
    }

    #[tracing::instrument(name = "sql.replace_password_hash", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn replace_password_hash(
        &self,
        id: UserId,
        expected: &PasswordHashString,
        new: &PasswordHashString,
    ) -> Result<bool, StoreError> {
        run!(self, |db, dialect| {
            let done = sqlx::query(REPLACE_PASSWORD_HASH)
                .bind(dialect::uuid(id.as_uuid()))
                .bind(expected.as_str())
                .bind(new.as_str())
                .execute(db)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    #[tracing::instrument(name = "sql.delete_user", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        run!(self, |db, dialect| {
            let done = sqlx::query(DELETE_USER)
                .bind(dialect::uuid(id.as_uuid()))
                .execute(db)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    #[tracing::instrument(name = "sql.set_normalized_email", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn set_normalized_email(&self, id: UserId, normalized: &str) -> Result<(), StoreError> {
        run!(self, |db, dialect| {
            sqlx::query(SET_NORMALIZED_EMAIL)
                .bind(dialect::uuid(id.as_uuid()))
                .bind(normalized)
                .execute(db)
                .await
                .map(drop)
        })
    }

    #[tracing::instrument(name = "sql.maintenance_done", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn maintenance_done(&self, name: &str) -> Result<bool, StoreError> {
        run!(self, |db, dialect| {
            let found = sqlx::query(MAINTENANCE_DONE)
                .bind(name)
                .fetch_optional(db)
                .await?;
            Ok(found.is_some())
        })
    }

    #[tracing::instrument(name = "sql.record_maintenance", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn record_maintenance(&self, name: &str, now: UnixMillis) -> Result<(), StoreError> {
        run!(self, |db, dialect| {
            sqlx::query(RECORD_MAINTENANCE)
                .bind(name)
                .bind(now)
                .execute(db)
                .await
                .map(drop)
        })
    }

    #[tracing::instrument(name = "sql.fact", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn fact(&self, name: &str) -> Result<Option<String>, StoreError> {
        run!(self, |db, dialect| {
            sqlx::query_scalar(FACT).bind(name).fetch_optional(db).await
        })
    }

    #[tracing::instrument(name = "sql.replace_fact", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn replace_fact(
        &self,
        name: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, StoreError> {
        run!(self, |db, dialect| {
            let done = match expected {
                None => {
                    sqlx::query(CREATE_FACT)
                        .bind(name)
                        .bind(value)
                        .execute(db)
                        .await?
                }
                Some(expected) => {
                    sqlx::query(SWAP_FACT)
                        .bind(name)
                        .bind(expected)
                        .bind(value)
                        .execute(db)
                        .await?
                }
            };
            Ok(done.rows_affected() == 1)
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
    #[tracing::instrument(name = "sql.revoke", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn revoke(
        &self,
        revocations: &[Revocation],
        _now: UnixSeconds,
    ) -> Result<(), StoreError> {
        run!(self, |db, dialect| {
            // One transaction: a LogoutAll's entries are recorded together or not at all.
            let mut transaction = db.begin().await?;
            for revocation in revocations {
                let until = revocation.until;
                match revocation.what {
                    Revoked::Token(jti) => sqlx::query(REVOKE)
                        .bind(dialect::uuid(jti.as_uuid()))
                        .bind(until),
                    Revoked::Session(session) => sqlx::query(REVOKE_SESSION)
                        .bind(dialect::uuid(session.as_uuid()))
                        .bind(until),
                    Revoked::IssuedBefore(user, before) => sqlx::query(REVOKE_ISSUED_BEFORE)
                        .bind(dialect::uuid(user.as_uuid()))
                        .bind(before)
                        .bind(until),
                }
                .execute(&mut *transaction)
                .await?;
            }
            transaction.commit().await
        })
    }

    #[tracing::instrument(name = "sql.is_revoked", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn is_revoked(&self, token: &TokenRef, now: UnixSeconds) -> Result<bool, StoreError> {
        run!(self, |db, dialect| {
            let found = sqlx::query(IS_TOKEN_REVOKED)
                .bind(dialect::uuid(token.jti.as_uuid()))
                .bind(
                    token
                        .session
                        .map(|session| dialect::uuid(session.as_uuid())),
                )
                .bind(dialect::uuid(token.user.as_uuid()))
                .bind(now)
                .bind(token.issued_at)
                .fetch_optional(db)
                .await?;
            Ok(found.is_some())
        })
    }

    #[tracing::instrument(name = "sql.purge_expired", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        run!(self, |db, dialect| {
            let mut purged = 0;
            for purge in [PURGE_REVOKED, PURGE_REVOKED_SESSIONS, PURGE_USER_CUTOFFS] {
                purged += sqlx::query(purge)
                    .bind(now)
                    .execute(db)
                    .await?
                    .rows_affected();
            }
            Ok(purged)
        })
    }

    #[tracing::instrument(name = "sql.data_marker", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn data_marker(&self) -> Result<Option<String>, StoreError> {
        Ok(Some(DURABLE_MARKER.to_owned()))
    }

    #[tracing::instrument(name = "sql.place_data_marker", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn place_data_marker(&self, _marker: &str) -> Result<String, StoreError> {
        Ok(DURABLE_MARKER.to_owned())
    }

    fn data_marker_scope(&self) -> String {
        DURABLE_MARKER.to_owned()
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
    #[tracing::instrument(name = "sql.load", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn load(&self, key: &str, now: UnixMillis) -> Result<Option<Counter>, StoreError> {
        run!(self, |db, dialect| {
            let row: Option<(i64, i64, i64)> = sqlx::query_as(LOAD_COUNTER)
                .bind(key)
                .bind(now)
                .fetch_optional(db)
                .await?;
            Ok(row.map(counter))
        })
    }

    #[tracing::instrument(name = "sql.replace", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn replace(
        &self,
        key: &str,
        expected: Option<Counter>,
        new: Counter,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let count = i64::from(new.count);
        run!(self, |db, dialect| {
            let done = match expected {
                None => {
                    sqlx::query(CREATE_COUNTER)
                        .bind(key)
                        .bind(count)
                        .bind(new.until)
                        .bind(new.expires_at)
                        .bind(now)
                        .execute(db)
                        .await?
                }
                Some(old) => {
                    sqlx::query(SWAP_COUNTER)
                        .bind(key)
                        .bind(count)
                        .bind(new.until)
                        .bind(new.expires_at)
                        .bind(i64::from(old.count))
                        .bind(old.until)
                        .bind(old.expires_at)
                        .bind(now)
                        .execute(db)
                        .await?
                }
            };
            Ok(done.rows_affected() == 1)
        })
    }

    #[tracing::instrument(name = "sql.clear", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        run!(self, |db, dialect| sqlx::query(CLEAR_FAILURES)
            .bind(key)
            .execute(db)
            .await
            .map(drop))
    }

    #[tracing::instrument(name = "sql.purge_expired", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
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

impl SqlStore {
    /// Every revocation in force at `now`, for a store that answers from memory.
    pub async fn live_revocations(
        &self,
        now: UnixSeconds,
    ) -> Result<Vec<(Revoked, UnixSeconds)>, StoreError> {
        run!(self, |db, dialect| {
            let tokens: Vec<(dialect::Uuid, i64)> = sqlx::query_as(LIVE_REVOKED_TOKENS)
                .bind(now)
                .fetch_all(db)
                .await?;
            let sessions: Vec<(dialect::Uuid, i64)> = sqlx::query_as(LIVE_REVOKED_SESSIONS)
                .bind(now)
                .fetch_all(db)
                .await?;
            let cutoffs: Vec<(dialect::Uuid, i64, i64)> = sqlx::query_as(LIVE_USER_CUTOFFS)
                .bind(now)
                .fetch_all(db)
                .await?;
            let tokens = tokens
                .into_iter()
                .map(|(jti, until)| (Revoked::Token(Jti::from(dialect::from_db(jti))), until));
            let sessions = sessions.into_iter().map(|(session, until)| {
                (Revoked::Session(dialect::from_db(session).into()), until)
            });
            let cutoffs = cutoffs.into_iter().map(|(user, before, until)| {
                (
                    Revoked::IssuedBefore(dialect::from_db(user).into(), before),
                    until,
                )
            });
            Ok(tokens.chain(sessions).chain(cutoffs).collect())
        })
    }
}

fn counter((count, until, expires_at): (i64, i64, i64)) -> Counter {
    Counter {
        count: u32::try_from(count).unwrap_or(u32::MAX),
        until,
        expires_at,
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
        E::Database(db) => db.code().is_some_and(|code| {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                dialect::sqlite_unavailable(&code)
            } else {
                dialect::postgres_unavailable(&code)
            }
        }),
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
