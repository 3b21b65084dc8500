//! Sessions in the SQL store. A rotation is one UPDATE by primary key, a compare-and-set on the
//! current refresh token's hash that also prepends it to the session's list of spent hashes (so
//! presenting it again is recognised as reuse); it changes no indexed column. On Postgres it runs
//! on the connections kept for it (`rotation_pool.rs`), one round trip per rotation.

use async_trait::async_trait;

use super::{
    BACKEND, Pool, RotationPool, SQL_TIMEOUT, SqlStore, dialect, sql_error, statements::*,
};
use crate::{
    clock::UnixMillis,
    domain::{
        PasswordHashString, RefreshTokenHash, SPENT_MARK_CHARS, SessionId, UserAgent, UserId,
    },
    store::{
        NewSession, RefreshTokenState, Rotation, SessionStore, StoreError, StoredSession, bounded,
    },
};

/// A `StoredSession` as read, with the UUID encoding of the database `U`.
type SessionRow<U> = (
    U,
    U,
    Option<Vec<u8>>,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// The same, led by the session's current refresh-token hash and its spent list.
type RefreshRow<U> = (
    Vec<u8>,
    String,
    U,
    U,
    Option<Vec<u8>>,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn session<U>(row: SessionRow<U>, from_db: fn(U) -> uuid::Uuid) -> StoredSession {
    let (id, user_id, previous, rotated_at, created, used, idle, expires, ended, agent, source) =
        row;
    StoredSession {
        id: from_db(id).into(),
        user_id: from_db(user_id).into(),
        previous_hash: previous.as_deref().and_then(RefreshTokenHash::from_slice),
        rotated_at,
        created_at: created,
        last_used_at: used,
        idle_expires_at: idle,
        expires_at: expires,
        ended_at: ended,
        user_agent: agent.map(UserAgent::from_stored),
        source_address: source,
    }
}

fn with_current<U>(
    row: RefreshRow<U>,
    from_db: fn(U) -> uuid::Uuid,
) -> Option<(RefreshTokenHash, String, StoredSession)> {
    let (
        current,
        spent,
        id,
        user,
        previous,
        rotated,
        created,
        used,
        idle,
        expires,
        ended,
        agent,
        source,
    ) = row;
    let current = RefreshTokenHash::from_slice(&current)?;
    let session = session(
        (
            id, user, previous, rotated, created, used, idle, expires, ended, agent, source,
        ),
        from_db,
    );
    Some((current, spent, session))
}

/// Whether `hex` is one of the 64-character entries of a spent list.
fn is_listed(spent: &str, hex: &str) -> bool {
    spent
        .as_bytes()
        .chunks(SPENT_MARK_CHARS)
        .any(|entry| entry == hex.as_bytes())
}

impl SqlStore {
    /// The sessions `statement` returns for `user` (`$1`) and `values` (`$2`, …).
    async fn user_sessions(
        &self,
        statement: &'static str,
        user: UserId,
        values: &[i64],
    ) -> Result<Vec<StoredSession>, StoreError> {
        run!(self, |db, dialect| {
            let mut query = sqlx::query_as(statement).bind(dialect::uuid(user.as_uuid()));
            for value in values {
                query = query.bind(*value);
            }
            let rows: Vec<SessionRow<dialect::Uuid>> = query.fetch_all(db).await?;
            Ok(rows
                .into_iter()
                .map(|row| session(row, dialect::from_db))
                .collect())
        })
    }

    /// The rotation on the Postgres connections kept for it. Its values are moved into the
    /// call, which runs on a task of its own and so borrows nothing from here.
    async fn rotate_on(
        connections: &RotationPool,
        rotation: &Rotation,
    ) -> Result<Option<StoredSession>, StoreError> {
        let session_id = dialect::postgres::uuid(rotation.session.as_uuid());
        let presented = rotation.presented.as_bytes().to_vec();
        let next = rotation.next.as_bytes().to_vec();
        let (now, idle_until) = (rotation.now, rotation.idle_until);
        let spent = rotation.presented.spent_mark();
        bounded(BACKEND, SQL_TIMEOUT, async {
            let row: Option<SessionRow<dialect::postgres::Uuid>> = connections
                .run(move |db| {
                    Box::pin(async move {
                        sqlx::query_as(ROTATE)
                            .bind(session_id)
                            .bind(presented)
                            .bind(next)
                            .bind(now)
                            .bind(idle_until)
                            .bind(spent)
                            .fetch_optional(db)
                            .await
                    })
                })
                .await
                .map_err(sql_error)?;
            Ok(row.map(|row| session(row, dialect::postgres::from_db)))
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    #[tracing::instrument(name = "sql.create_session", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn create_session(
        &self,
        new: &NewSession,
        password_hash: Option<&PasswordHashString>,
    ) -> Result<bool, StoreError> {
        let statement = match password_hash {
            None => CREATE_SESSION,
            Some(_) => CREATE_SESSION_IF_PASSWORD,
        };
        run!(self, |db, dialect| {
            let mut insert = sqlx::query(statement)
                .bind(dialect::uuid(new.id.as_uuid()))
                .bind(dialect::uuid(new.user_id.as_uuid()))
                .bind(&new.refresh_hash.as_bytes()[..])
                .bind(new.created_at)
                .bind(new.idle_expires_at)
                .bind(new.expires_at)
                .bind(new.user_agent.as_ref().map(UserAgent::as_str))
                .bind(new.source_address.as_deref());
            if let Some(hash) = password_hash {
                insert = insert.bind(hash.as_str());
            }
            Ok(insert.execute(db).await?.rows_affected() == 1)
        })
    }

    #[tracing::instrument(name = "sql.rotate_refresh_token", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
    ) -> Result<Option<StoredSession>, StoreError> {
        if let Some(connections) = &self.rotation {
            return Self::rotate_on(connections, rotation).await;
        }
        let presented = &rotation.presented.as_bytes()[..];
        let next = &rotation.next.as_bytes()[..];
        let spent = rotation.presented.spent_mark();
        run!(self, |db, dialect| {
            let row: Option<SessionRow<dialect::Uuid>> = sqlx::query_as(ROTATE)
                .bind(dialect::uuid(rotation.session.as_uuid()))
                .bind(presented)
                .bind(next)
                .bind(rotation.now)
                .bind(rotation.idle_until)
                .bind(&spent)
                .fetch_optional(db)
                .await?;
            Ok(row.map(|row| session(row, dialect::from_db)))
        })
    }

    #[tracing::instrument(name = "sql.replace_current_refresh_token", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn replace_current_refresh_token(
        &self,
        id: SessionId,
        expected_current: RefreshTokenHash,
        rotation: &Rotation,
    ) -> Result<Option<StoredSession>, StoreError> {
        let expected = &expected_current.as_bytes()[..];
        let next = &rotation.next.as_bytes()[..];
        let spent = expected_current.spent_mark();
        run!(self, |db, dialect| {
            let row: Option<SessionRow<dialect::Uuid>> = sqlx::query_as(REPLACE_CURRENT)
                .bind(dialect::uuid(id.as_uuid()))
                .bind(expected)
                .bind(next)
                .bind(rotation.now)
                .bind(rotation.idle_until)
                .bind(&spent)
                .fetch_optional(db)
                .await?;
            Ok(row.map(|row| session(row, dialect::from_db)))
        })
    }

    #[tracing::instrument(name = "sql.find_refresh_token", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn find_refresh_token(
        &self,
        id: SessionId,
        hash: RefreshTokenHash,
    ) -> Result<Option<(StoredSession, RefreshTokenHash, RefreshTokenState)>, StoreError> {
        run!(self, |db, dialect| {
            let row: Option<RefreshRow<dialect::Uuid>> = sqlx::query_as(FIND_REFRESH)
                .bind(dialect::uuid(id.as_uuid()))
                .fetch_optional(db)
                .await?;
            let Some((current, spent, session)) =
                row.and_then(|row| with_current(row, dialect::from_db))
            else {
                return Ok(None);
            };
            let state = if current == hash {
                RefreshTokenState::Current
            } else if is_listed(&spent, &hash.spent_mark()) {
                RefreshTokenState::Spent
            } else {
                return Ok(None);
            };
            Ok(Some((session, current, state)))
        })
    }

    #[tracing::instrument(name = "sql.session", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn session(&self, id: SessionId) -> Result<Option<StoredSession>, StoreError> {
        run!(self, |db, dialect| {
            let row: Option<SessionRow<dialect::Uuid>> = sqlx::query_as(SESSION)
                .bind(dialect::uuid(id.as_uuid()))
                .fetch_optional(db)
                .await?;
            Ok(row.map(|row| session(row, dialect::from_db)))
        })
    }

    #[tracing::instrument(name = "sql.end_session", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn end_session(
        &self,
        id: SessionId,
        user: Option<UserId>,
        now: UnixMillis,
    ) -> Result<Option<StoredSession>, StoreError> {
        run!(self, |db, dialect| {
            let row: Option<SessionRow<dialect::Uuid>> = sqlx::query_as(END_SESSION)
                .bind(dialect::uuid(id.as_uuid()))
                .bind(user.map(|user| dialect::uuid(user.as_uuid())))
                .bind(now)
                .fetch_optional(db)
                .await?;
            Ok(row.map(|row| session(row, dialect::from_db)))
        })
    }

    #[tracing::instrument(name = "sql.end_user_sessions", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn end_user_sessions(
        &self,
        user: UserId,
        now: UnixMillis,
    ) -> Result<Vec<StoredSession>, StoreError> {
        self.user_sessions(END_USER_SESSIONS, user, &[now]).await
    }

    #[tracing::instrument(name = "sql.sessions_used_since", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn sessions_used_since(
        &self,
        user: UserId,
        since: UnixMillis,
    ) -> Result<Vec<StoredSession>, StoreError> {
        self.user_sessions(SESSIONS_USED_SINCE, user, &[since])
            .await
    }

    #[tracing::instrument(name = "sql.end_sessions_beyond", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn end_sessions_beyond(
        &self,
        user: UserId,
        keep: u32,
        now: UnixMillis,
    ) -> Result<Vec<StoredSession>, StoreError> {
        self.user_sessions(END_SESSIONS_BEYOND, user, &[i64::from(keep), now])
            .await
    }

    #[tracing::instrument(name = "sql.live_sessions", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn live_sessions(
        &self,
        user: UserId,
        now: UnixMillis,
    ) -> Result<Vec<StoredSession>, StoreError> {
        self.user_sessions(LIVE_SESSIONS, user, &[now]).await
    }

    #[tracing::instrument(name = "sql.purge_sessions", level = "debug", skip_all, fields(db.system = self.pool.db_system(), otel.kind = "client"))]
    async fn purge_sessions(&self, before: UnixMillis) -> Result<u64, StoreError> {
        run!(self, |db, dialect| {
            let done = sqlx::query(PURGE_SESSIONS).bind(before).execute(db).await?;
            Ok(done.rows_affected())
        })
    }
}
