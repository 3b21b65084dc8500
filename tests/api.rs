//! End-to-end tests: the real server on a random port, called through the generated tonic client,
//! against real Postgres + Redis (a fresh database and key prefix per test) and again against the
//! embedded SQLite back end. One binary, one module per feature.

mod common;

/// One module per feature, in `tests/api/`.
mod api {
    mod account;
    mod audit;
    mod cached_mode;
    mod client;
    mod client_attacks;
    mod client_attacks2;
    mod connections;
    mod deploy;
    mod emails;
    mod ext_authz;
    mod gateways;
    mod health;
    mod hostile_requests;
    mod hostile_tokens;
    mod http_listener;
    mod key_rotation;
    mod login;
    mod logout;
    mod outages;
    mod process;
    mod refresh;
    mod register;
    mod scale_out;
    mod sessions;
    mod startup;
    mod throttling;
    mod tls;
    mod traces;
    mod verify;
    mod watch;
}
