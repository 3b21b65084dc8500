//! SQLite, the embedded default: users, and revocations when no Redis is configured, in one file
//! (DATA_DIR/authd.db) in WAL mode, so a restart loses nothing. Migrations from
//! `migrations/sqlite` run at start-up.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    FailureCount, NewUser, RevocationStore, StoreError, StoredCredentials, ThrottleStore,
    UserStore, bounded, millis, sql_error,
};
use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{Email, Jti, UserId},
    password::PasswordHashString,
};

const BACKEND: &str = "database";

/// The SQLite store; cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if absent) the database at `url` and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unexpected(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL is durable across application crashes; FULL also across power loss.
            // Revocations must survive, so FULL.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(2))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(sql_error)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unexpected(format!("migrations failed: {e}")))?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert(&self, user: &NewUser) -> Result<(), StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            sqlx::query(
                "INSERT INTO users (id, email, email_normalized, username, password_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(user.id.to_string())
            .bind(user.email.as_str())
            .bind(user.email.normalized())
            .bind(user.username.as_ref().map(|u| u.as_str()))
            .bind(user.password_hash.as_str())
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
            Ok(())
        })
        .await
    }

    async fn find_credentials(
        &self,
        email: &Email,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            let row: Option<(String, String)> =
                sqlx::query_as("SELECT id, password_hash FROM users WHERE email_normalized = ?1")
                    .bind(email.normalized())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_error)?;
            row.map(|(id, hash)| {
                let id = UserId::parse(&id)
                    .ok_or_else(|| StoreError::Unexpected(format!("corrupt user id {id:?}")))?;
                Ok(StoredCredentials {
                    id,
                    password_hash: PasswordHashString::from_stored(hash),
                })
            })
            .transpose()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(sql_error)?;
            Ok(())
        })
        .await
    }

    fn describe(&self) -> &'static str {
        "sqlite"
    }
}

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn revoke(
        &self,
        jti: Jti,
        until: UnixSeconds,
        _now: UnixSeconds,
    ) -> Result<(), StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2) \
                 ON CONFLICT (jti) DO UPDATE SET expires_at = MAX(expires_at, excluded.expires_at)",
            )
            .bind(jti.to_string())
            .bind(until)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
            Ok(())
        })
        .await
    }

    async fn is_revoked(&self, jti: Jti, now: UnixSeconds) -> Result<bool, StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            let found: Option<(i64,)> =
                sqlx::query_as("SELECT 1 FROM revoked_tokens WHERE jti = ?1 AND expires_at >= ?2")
                    .bind(jti.to_string())
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_error)?;
            Ok(found.is_some())
        })
        .await
    }

    async fn purge_expired(&self, now: UnixSeconds) -> Result<u64, StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            let done = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < ?1")
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(sql_error)?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        UserStore::ping(self).await
    }

    fn describe(&self) -> &'static str {
        "sqlite"
    }
}

#[async_trait]
impl ThrottleStore for SqliteStore {
    async fn failures(
        &self,
        keys: &[String],
        now: UnixMillis,
    ) -> Result<Vec<FailureCount>, StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            let mut counts = Vec::with_capacity(keys.len());
            for key in keys {
                let row: Option<(i64, i64, i64)> = sqlx::query_as(
                    "SELECT failures, last_failure_ms, expires_at_ms FROM login_failures \
                     WHERE key = ?1 AND expires_at_ms > ?2",
                )
                .bind(key)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_error)?;
                counts.push(row.map(failure_count).unwrap_or_default());
            }
            Ok(counts)
        })
        .await
    }

    async fn add_failure(
        &self,
        key: &str,
        memory: std::time::Duration,
        sliding: bool,
        now: UnixMillis,
    ) -> Result<FailureCount, StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            // An expired row starts over; SET expressions read the row's old values.
            let row: (i64, i64, i64) = sqlx::query_as(
                "INSERT INTO login_failures (key, failures, last_failure_ms, expires_at_ms) \
                 VALUES (?1, 1, ?2, ?2 + ?3) \
                 ON CONFLICT (key) DO UPDATE SET \
                   failures = CASE WHEN login_failures.expires_at_ms <= ?2 THEN 1 \
                                   ELSE login_failures.failures + 1 END, \
                   expires_at_ms = CASE WHEN login_failures.expires_at_ms <= ?2 OR ?4 THEN ?2 + ?3 \
                                        ELSE login_failures.expires_at_ms END, \
                   last_failure_ms = ?2 \
                 RETURNING failures, last_failure_ms, expires_at_ms",
            )
            .bind(key)
            .bind(now)
            .bind(millis(memory))
            .bind(sliding)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error)?;
            Ok(failure_count(row))
        })
        .await
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            sqlx::query("DELETE FROM login_failures WHERE key = ?1")
                .bind(key)
                .execute(&self.pool)
                .await
                .map_err(sql_error)?;
            Ok(())
        })
        .await
    }

    async fn purge_expired(&self, now: UnixMillis) -> Result<u64, StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            let done = sqlx::query("DELETE FROM login_failures WHERE expires_at_ms <= ?1")
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(sql_error)?;
            Ok(done.rows_affected())
        })
        .await
    }
}

fn failure_count((failures, last_failure, window_ends): (i64, i64, i64)) -> FailureCount {
    FailureCount {
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        last_failure,
        window_ends,
    }
}
