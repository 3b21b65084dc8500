-- Sessions: one per sign-in (Register, Login, ChangePassword), renewed by Refresh. A refresh
-- token carries its session's id, so a rotation finds the row by primary key and compares the
-- token's SHA-256 with refresh_hash; no index covers a column a rotation changes, so on Postgres
-- it is a HOT update (fillfactor leaves room for it). The token itself is never stored. All times
-- are Unix milliseconds.
CREATE TABLE sessions (
    id                 TEXT   PRIMARY KEY NOT NULL,
    user_id            TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the current refresh token.
    refresh_hash       BLOB   NOT NULL,
    -- SHA-256 of the refresh token spent by the latest rotation, and when (the reuse grace).
    previous_hash      BLOB,
    rotated_at_ms      INTEGER,
    -- Lowercase hex SHA-256 of the last 16 spent refresh tokens, newest first, so that
    -- presenting one again is recognised as reuse (older ones are merely invalid).
    spent_hashes       TEXT   NOT NULL DEFAULT '',
    created_at_ms      INTEGER NOT NULL,
    last_used_at_ms    INTEGER NOT NULL,
    -- When the refresh token expires unused (never after expires_at_ms).
    idle_expires_at_ms INTEGER NOT NULL,
    -- The session's absolute end.
    expires_at_ms      INTEGER NOT NULL,
    -- When it was ended (Logout, LogoutAll, ChangePassword, RevokeSession, reuse); NULL while live.
    ended_at_ms        INTEGER,
    user_agent         TEXT,
    source_address     TEXT
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Ended sessions whose access tokens must be refused, used only when no Redis is configured.
-- Kept until the last access token the session could have issued expires (plus leeway).
CREATE TABLE revoked_sessions (
    session_id TEXT    PRIMARY KEY NOT NULL,
    -- Unix seconds after which the entry may be purged.
    expires_at INTEGER NOT NULL
);

CREATE INDEX revoked_sessions_expires_at_idx ON revoked_sessions (expires_at);

-- Per-user cut-offs (LogoutAll, ChangePassword, DeleteAccount), used only when no Redis is
-- configured: the user's access tokens issued before not_before (Unix seconds) are refused.
CREATE TABLE user_cutoffs (
    user_id    TEXT    PRIMARY KEY NOT NULL,
    not_before INTEGER NOT NULL,
    -- Unix seconds after which the entry may be purged.
    expires_at INTEGER NOT NULL
);

CREATE INDEX user_cutoffs_expires_at_idx ON user_cutoffs (expires_at);
