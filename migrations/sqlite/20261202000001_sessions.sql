-- Sessions: one per sign-in (Register, Login, ChangePassword), renewed by Refresh. Refresh tokens
-- are stored only as their SHA-256: the current one here, each spent one in spent_refresh_tokens
-- (so that presenting it again is recognised as reuse). All times are Unix milliseconds.
CREATE TABLE sessions (
    id                 TEXT    PRIMARY KEY NOT NULL,
    user_id            TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the current refresh token.
    refresh_hash       BLOB    NOT NULL,
    -- SHA-256 of the refresh token spent by the latest rotation, and when (the reuse grace).
    previous_hash      BLOB,
    rotated_at_ms      INTEGER,
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

CREATE UNIQUE INDEX sessions_refresh_hash_key ON sessions (refresh_hash);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_idle_expires_at_idx ON sessions (idle_expires_at_ms);
CREATE INDEX sessions_ended_at_idx ON sessions (ended_at_ms) WHERE ended_at_ms IS NOT NULL;

-- Refresh tokens already spent by a rotation, until their session is purged.
CREATE TABLE spent_refresh_tokens (
    hash        BLOB    PRIMARY KEY NOT NULL,
    session_id  TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    spent_at_ms INTEGER NOT NULL
);

CREATE INDEX spent_refresh_tokens_session_id_idx ON spent_refresh_tokens (session_id);

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
