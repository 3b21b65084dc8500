//! Contract tests for the storage traits: one suite per trait (`UserStore`, `SessionStore`,
//! `RevocationStore`, `ThrottleStore`) stating what every implementation must do, run against
//! every real implementation of that trait (Postgres, SQLite, Redis, Redis Cluster, the
//! cached-mode mirror, the embedded default's resident set), each built fresh and isolated for the
//! test. No mocks: a case that passes here passes on the back end it names.

mod common;

/// One module per trait, plus how each implementation is built, in `tests/contract/`.
mod contract {
    mod backends;
    mod revocations;
    mod sessions;
    mod throttle;
    mod users;
}
