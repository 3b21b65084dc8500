-- Sessions: one per sign-in (Register, Login, ChangePassword), renewed by Refresh. A refresh
-- token carries its session's id, so a rotation finds the row by primary key and compares the
-- token's SHA-256 with refresh_hash; no index covers a column a rotation changes, so on Postgres
-- it is a HOT update (fillfactor leaves room for it). The token itself is never stored. All times
-- are Unix milliseconds.
CREATE TABLE sessions (
    id                 UUID   PRIMARY KEY,
    user_id            UUID   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the current refresh token.
    refresh_hash       BYTEA  NOT NULL,
    -- SHA-256 of the refresh token spent by the latest rotation, and when (the reuse grace).
    previous_hash      BYTEA,
    rotated_at_ms      BIGINT,
    -- Lowercase hex SHA-256 of the last 16 spent refresh tokens, newest first, so that
    -- presenting one again is recognised as reuse (older ones are merely invalid).
    spent_hashes       TEXT   NOT NULL DEFAULT '',
    created_at_ms      BIGINT NOT NULL,
    last_used_at_ms    BIGINT NOT NULL,
    -- When the refresh token expires unused (never after expires_at_ms).
    idle_expires_at_ms BIGINT NOT NULL,
    -- The session's absolute end.
    expires_at_ms      BIGINT NOT NULL,
    -- When it was ended (Logout, LogoutAll, ChangePassword, RevokeSession, reuse); NULL while live.
    ended_at_ms        BIGINT,
    user_agent         TEXT,
    source_address     TEXT
) WITH (fillfactor = 70);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Ended sessions whose access tokens must be refused, used only when no Redis is configured.
-- Kept until the last access token the session could have issued expires (plus leeway).
CREATE TABLE revoked_sessions (
    session_id UUID   PRIMARY KEY,
    -- Unix seconds after which the entry may be purged.
    expires_at BIGINT NOT NULL
);

CREATE INDEX revoked_sessions_expires_at_idx ON revoked_sessions (expires_at);

-- Per-user cut-offs (LogoutAll, ChangePassword, DeleteAccount), used only when no Redis is
-- configured: the user's access tokens issued before not_before (Unix seconds) are refused.
CREATE TABLE user_cutoffs (
    user_id    UUID   PRIMARY KEY,
    not_before BIGINT NOT NULL,
    -- Unix seconds after which the entry may be purged.
    expires_at BIGINT NOT NULL
);

CREATE INDEX user_cutoffs_expires_at_idx ON user_cutoffs (expires_at);
