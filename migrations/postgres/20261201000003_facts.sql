-- Small facts the instances share through the user database: the marker last seen in the
-- revocation store (to notice when it loses its data) and the global revocation cut-off (every
-- access token issued before it is refused).
CREATE TABLE facts (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
