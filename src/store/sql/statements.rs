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
pub(super) const IS_REVOKED: &str =
    "SELECT 1 FROM revoked_tokens WHERE jti = $1 AND expires_at >= $2";
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
