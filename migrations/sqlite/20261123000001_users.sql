-- Users and their argon2id password hashes (PHC strings).
CREATE TABLE users (
    id               TEXT    PRIMARY KEY NOT NULL,
    -- The email as the user gave it (trimmed).
    email            TEXT    NOT NULL,
    -- Trimmed and case-folded: the identity that must be unique.
    email_normalized TEXT    NOT NULL,
    username         TEXT,
    password_hash    TEXT    NOT NULL,
    -- Unix seconds.
    created_at       INTEGER NOT NULL DEFAULT (unixepoch())
);

CREATE UNIQUE INDEX users_email_normalized_key ON users (email_normalized);
