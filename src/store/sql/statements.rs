//! Every statement of the SQL store, shared by Postgres and SQLite (`$n` placeholders work on
//! both; where the dialects differ in SQL, as GREATEST vs MAX, the statement uses a CASE).

pub(super) const INSERT_USER: &str = "INSERT INTO users (id, email, email_normalized, username, password_hash) \
     VALUES ($1, $2, $3, $4, $5)";
pub(super) const FIND_CREDENTIALS: &str =
    "SELECT id, password_hash FROM users WHERE email_normalized = $1";
pub(super) const PING: &str = "SELECT 1";
pub(super) const USERS_FIRST_PAGE: &str =
    "SELECT id, email, email_normalized FROM users ORDER BY id LIMIT $1";
pub(super) const USERS_PAGE_AFTER: &str =
    "SELECT id, email, email_normalized FROM users WHERE id > $1 ORDER BY id LIMIT $2";
pub(super) const SET_NORMALIZED_EMAIL: &str =
    "UPDATE users SET email_normalized = $2 WHERE id = $1";
pub(super) const FACT: &str = "SELECT value FROM facts WHERE name = $1";
pub(super) const CREATE_FACT: &str =
    "INSERT INTO facts (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
pub(super) const SWAP_FACT: &str = "UPDATE facts SET value = $3 WHERE name = $1 AND value = $2";
/// What a SQL revocation store answers as its data marker: its revocations live in the user
/// database, which does not lose them on its own.
pub(super) const DURABLE_MARKER: &str = "sql";
pub(super) const MAINTENANCE_DONE: &str = "SELECT 1 FROM maintenance WHERE name = $1";
pub(super) const RECORD_MAINTENANCE: &str = "INSERT INTO maintenance (name, done_at_ms) VALUES ($1, $2) \
     ON CONFLICT (name) DO NOTHING";
/// Revoking twice keeps the later expiry (a CASE, since Postgres has GREATEST and SQLite MAX).
pub(super) const REVOKE: &str = "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
     ON CONFLICT (jti) DO UPDATE SET expires_at = CASE \
       WHEN revoked_tokens.expires_at > excluded.expires_at THEN revoked_tokens.expires_at \
       ELSE excluded.expires_at END";
pub(super) const PURGE_REVOKED: &str = "DELETE FROM revoked_tokens WHERE expires_at < $1";
pub(super) const LOAD_COUNTER: &str = "SELECT failures, until_ms, expires_at_ms FROM login_failures \
     WHERE key = $1 AND expires_at_ms > $2";
/// Creates the counter, or replaces one that has expired at $5 (a live one stays: 0 rows).
pub(super) const CREATE_COUNTER: &str = "INSERT INTO login_failures (key, failures, until_ms, expires_at_ms) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, until_ms = excluded.until_ms, \
       expires_at_ms = excluded.expires_at_ms \
     WHERE login_failures.expires_at_ms <= $5";
/// Replaces the counter only if it is still the expected one ($5..$7) and live at $8.
pub(super) const SWAP_COUNTER: &str = "UPDATE login_failures SET failures = $2, until_ms = $3, expires_at_ms = $4 \
     WHERE key = $1 AND failures = $5 AND until_ms = $6 AND expires_at_ms = $7 \
       AND expires_at_ms > $8";
pub(super) const CLEAR_FAILURES: &str = "DELETE FROM login_failures WHERE key = $1";
pub(super) const PURGE_FAILURES: &str = "DELETE FROM login_failures WHERE expires_at_ms <= $1";
pub(super) const FIND_USER: &str =
    "SELECT email_normalized, password_hash FROM users WHERE id = $1";
pub(super) const REPLACE_PASSWORD_HASH: &str =
    "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2";
pub(super) const DELETE_USER: &str = "DELETE FROM users WHERE id = $1";
pub(super) const REVOKE_SESSION: &str = "INSERT INTO revoked_sessions (session_id, expires_at) \
     VALUES ($1, $2) ON CONFLICT (session_id) DO UPDATE SET expires_at = CASE \
       WHEN revoked_sessions.expires_at > excluded.expires_at THEN revoked_sessions.expires_at \
       ELSE excluded.expires_at END";
/// A user's cut-off keeps the later second and the later expiry.
pub(super) const REVOKE_ISSUED_BEFORE: &str = "INSERT INTO user_cutoffs (user_id, not_before, expires_at) \
     VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET \
       not_before = CASE WHEN user_cutoffs.not_before > excluded.not_before \
         THEN user_cutoffs.not_before ELSE excluded.not_before END, \
       expires_at = CASE WHEN user_cutoffs.expires_at > excluded.expires_at \
         THEN user_cutoffs.expires_at ELSE excluded.expires_at END";
/// All three kinds in one query: $1 jti, $2 session (NULL matches nothing), $3 user, $4 now,
/// $5 the token's iat.
pub(super) const IS_TOKEN_REVOKED: &str = "SELECT 1 FROM revoked_tokens WHERE jti = $1 AND expires_at >= $4 \
     UNION ALL SELECT 1 FROM revoked_sessions WHERE session_id = $2 AND expires_at >= $4 \
     UNION ALL SELECT 1 FROM user_cutoffs WHERE user_id = $3 AND expires_at >= $4 \
       AND not_before > $5 \
     LIMIT 1";
pub(super) const PURGE_REVOKED_SESSIONS: &str =
    "DELETE FROM revoked_sessions WHERE expires_at < $1";
pub(super) const PURGE_USER_CUTOFFS: &str = "DELETE FROM user_cutoffs WHERE expires_at < $1";
pub(super) const LIVE_REVOKED_TOKENS: &str =
    "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at >= $1";
pub(super) const LIVE_REVOKED_SESSIONS: &str =
    "SELECT session_id, expires_at FROM revoked_sessions WHERE expires_at >= $1";
pub(super) const LIVE_USER_CUTOFFS: &str =
    "SELECT user_id, not_before, expires_at FROM user_cutoffs WHERE expires_at >= $1";

/// The columns of a `StoredSession`, in `SessionRow` order.
macro_rules! session_columns {
    () => {
        "id, user_id, previous_hash, rotated_at_ms, created_at_ms, last_used_at_ms, \
         idle_expires_at_ms, expires_at_ms, ended_at_ms, user_agent, source_address"
    };
}

pub(super) const CREATE_SESSION: &str = "INSERT INTO sessions (id, user_id, refresh_hash, created_at_ms, \
     last_used_at_ms, idle_expires_at_ms, expires_at_ms, user_agent, source_address) \
     VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8)";
/// The same, only while the user's hash is still $9.
pub(super) const CREATE_SESSION_IF_PASSWORD: &str = "INSERT INTO sessions (id, user_id, refresh_hash, \
     created_at_ms, last_used_at_ms, idle_expires_at_ms, expires_at_ms, user_agent, source_address) \
     SELECT $1, id, $3, $4, $4, $5, $6, $7, $8 FROM users WHERE id = $2 AND password_hash = $9";
/// The compare-and-set of a rotation, by primary key: $1 session, $2 presented, $3 next, $4 now,
/// $5 the new idle limit, $6 the presented token's spent mark (prepended to the spent list, which
/// is cut to its newest 16: 512 characters).
///
/// The list holds 32-character marks (the first 128 bits of each SHA-256, in hex). Rows written
/// before 2026-12-02 hold full 64-character hashes; every entry is a multiple of 32 long, so the
/// list still splits into 32-character chunks, and an old entry's first chunk is its mark.
pub(super) const ROTATE: &str = concat!(
    "UPDATE sessions SET refresh_hash = $3, previous_hash = $2, rotated_at_ms = $4, \
       last_used_at_ms = $4, \
       idle_expires_at_ms = CASE WHEN $5 < expires_at_ms THEN $5 ELSE expires_at_ms END, \
       spent_hashes = substr($6 || spent_hashes, 1, 512) \
     WHERE id = $1 AND refresh_hash = $2 AND ended_at_ms IS NULL AND idle_expires_at_ms > $4 \
       AND expires_at_ms > $4 \
     RETURNING ",
    session_columns!()
);
/// The grace: $1 session, $2 expected current, $3 next, $4 now, $5 the new idle limit, $6 the
/// expected current's spent mark (it becomes spent); previous_hash and rotated_at_ms stay.
pub(super) const REPLACE_CURRENT: &str = concat!(
    "UPDATE sessions SET refresh_hash = $3, last_used_at_ms = $4, \
       idle_expires_at_ms = CASE WHEN $5 < expires_at_ms THEN $5 ELSE expires_at_ms END, \
       spent_hashes = substr($6 || spent_hashes, 1, 512) \
     WHERE id = $1 AND refresh_hash = $2 AND ended_at_ms IS NULL AND idle_expires_at_ms > $4 \
       AND expires_at_ms > $4 \
     RETURNING ",
    session_columns!()
);
/// A session with its current hash and spent list, for telling why a rotation failed.
pub(super) const FIND_REFRESH: &str = concat!(
    "SELECT refresh_hash, spent_hashes, ",
    session_columns!(),
    " FROM sessions WHERE id = $1"
);
pub(super) const SESSION: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE id = $1"
);
/// $1 session, $2 user (NULL: any), $3 now.
pub(super) const END_SESSION: &str = concat!(
    "UPDATE sessions SET ended_at_ms = $3 \
     WHERE id = $1 AND ($2 IS NULL OR user_id = $2) AND ended_at_ms IS NULL \
       AND idle_expires_at_ms > $3 AND expires_at_ms > $3 \
     RETURNING ",
    session_columns!()
);
pub(super) const END_USER_SESSIONS: &str = concat!(
    "UPDATE sessions SET ended_at_ms = $2 \
     WHERE user_id = $1 AND ended_at_ms IS NULL AND idle_expires_at_ms > $2 AND expires_at_ms > $2 \
     RETURNING ",
    session_columns!()
);
pub(super) const SESSIONS_USED_SINCE: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE user_id = $1 AND last_used_at_ms >= $2"
);
/// $1 user, $2 how many to keep, $3 now.
pub(super) const END_SESSIONS_BEYOND: &str = concat!(
    "UPDATE sessions SET ended_at_ms = $3 WHERE id IN (SELECT id FROM sessions \
       WHERE user_id = $1 AND ended_at_ms IS NULL AND idle_expires_at_ms > $3 \
         AND expires_at_ms > $3 \
       ORDER BY created_at_ms DESC, id DESC LIMIT 1000000000 OFFSET $2) \
     RETURNING ",
    session_columns!()
);
pub(super) const LIVE_SESSIONS: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE user_id = $1 AND ended_at_ms IS NULL AND idle_expires_at_ms > $2 \
       AND expires_at_ms > $2 ORDER BY created_at_ms DESC, id DESC"
);
pub(super) const PURGE_SESSIONS: &str =
    "DELETE FROM sessions WHERE ended_at_ms < $1 OR idle_expires_at_ms < $1";
