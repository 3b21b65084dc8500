-- Revoked access tokens for the embedded back end (when no Redis is configured).
-- An entry is kept until the token's expiry plus the clock leeway, then purged.
CREATE TABLE revoked_tokens (
    jti        TEXT    PRIMARY KEY NOT NULL,
    -- Unix seconds after which the entry may be purged.
    expires_at INTEGER NOT NULL
);

CREATE INDEX revoked_tokens_expires_at_idx ON revoked_tokens (expires_at);
