//! Postgres: users (and revocations when no Redis is configured). Migrations from
//! `migrations/postgres` run at start-up under sqlx's advisory lock, so instances starting at once
//! are safe.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

use super::{
    FailureCount, NewUser, RevocationStore, StoreError, StoredCredentials, ThrottleStore,
    UserStore, bounded, millis, sql_error,
};
use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{Email, Jti},
    password::PasswordHashString,
};

/// Pool size: Login/Register are bounded by argon2, so a few connections go a long way.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// How long a request may wait for a pooled connection before UNAVAILABLE.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

const BACKEND: &str = "database";

/// The Postgres store; cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects (at most `max_connections` at once) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(sql_error)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unexpected(format!("migrations failed: {e}")))?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn insert(&self, user: &NewUser) -> Result<(), StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            sqlx::query(
                "INSERT INTO users (id, email, email_normalized, username, password_hash) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user.id.as_uuid())
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
            let row: Option<(Uuid, String)> =
                sqlx::query_as("SELECT id, password_hash FROM users WHERE email_normalized = $1")
                    .bind(email.normalized())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_error)?;
            Ok(row.map(|(id, hash)| StoredCredentials {
                id: id.into(),
                password_hash: PasswordHashString::from_stored(hash),
            }))
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
        "postgres"
    }
}

#[async_trait]
impl RevocationStore for PostgresStore {
    async fn revoke(
        &self,
        jti: Jti,
        until: UnixSeconds,
        _now: UnixSeconds,
    ) -> Result<(), StoreError> {
        bounded(BACKEND, super::BACKEND_TIMEOUT, async {
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (jti) DO UPDATE SET expires_at = GREATEST(revoked_tokens.expires_at, EXCLUDED.expires_at)",
            )
            .bind(jti.as_uuid())
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
            let found: Option<(i32,)> =
                sqlx::query_as("SELECT 1 FROM revoked_tokens WHERE jti = $1 AND expires_at >= $2")
                    .bind(jti.as_uuid())
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
            let done = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
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
        "postgres"
    }
}

#[async_trait]
impl ThrottleStore for PostgresStore {
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
                     WHERE key = $1 AND expires_at_ms > $2",
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
                 VALUES ($1, 1, $2, $2 + $3) \
                 ON CONFLICT (key) DO UPDATE SET \
                   failures = CASE WHEN login_failures.expires_at_ms <= $2 THEN 1 \
                                   ELSE login_failures.failures + 1 END, \
                   expires_at_ms = CASE WHEN login_failures.expires_at_ms <= $2 OR $4 THEN $2 + $3 \
                                        ELSE login_failures.expires_at_ms END, \
                   last_failure_ms = $2 \
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
            sqlx::query("DELETE FROM login_failures WHERE key = $1")
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
            let done = sqlx::query("DELETE FROM login_failures WHERE expires_at_ms <= $1")
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
