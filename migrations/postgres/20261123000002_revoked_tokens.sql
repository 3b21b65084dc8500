-- Revoked access tokens, used only when no Redis is configured.
-- An entry is kept until the token's expiry plus the clock leeway, then purged.
CREATE TABLE revoked_tokens (
    jti        UUID   PRIMARY KEY,
    -- Unix seconds after which the entry may be purged.
    expires_at BIGINT NOT NULL
);

CREATE INDEX revoked_tokens_expires_at_idx ON revoked_tokens (expires_at);
