-- One-time maintenance steps that have run (e.g. re-normalising stored emails), so that start-up
-- runs each once.
CREATE TABLE maintenance (
    name       TEXT   PRIMARY KEY NOT NULL,
    -- Unix milliseconds.
    done_at_ms BIGINT NOT NULL
);
