-- Users and their argon2id password hashes (PHC strings).
CREATE TABLE users (
    id               UUID        PRIMARY KEY,
    -- The email as the user gave it (trimmed).
    email            TEXT        NOT NULL,
    -- Trimmed and case-folded: the identity that must be unique.
    email_normalized TEXT        NOT NULL,
    username         TEXT,
    password_hash    TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_normalized_key ON users (email_normalized);
