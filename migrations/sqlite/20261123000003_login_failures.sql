-- Failed-login counts for throttling, used only when no Redis is configured.
-- Keys are "account:<hash of the normalised email>" or "source:<address>"; no emails are stored.
CREATE TABLE login_failures (
    key             TEXT   PRIMARY KEY NOT NULL,
    failures        BIGINT NOT NULL,
    -- Unix milliseconds.
    last_failure_ms BIGINT NOT NULL,
    -- Unix milliseconds after which the count is forgotten.
    expires_at_ms   BIGINT NOT NULL
);

CREATE INDEX login_failures_expires_at_idx ON login_failures (expires_at_ms);
