//! authd: a gRPC authentication service — Register, Login, Logout and Verify.
//!
//! Data flows one way:
//!
//! ```text
//! api (tonic edge: proto <-> domain, Error -> Status)
//!   -> service (the use cases)
//!        -> tokens (keys, JWT issue/verify, verified-token cache), hashing (argon2id on a
//!           bounded pool), throttle (login back-off policy)
//!        -> store (UserStore, RevocationStore, ThrottleStore: SQL (Postgres, SQLite), Redis)
//! ```
//!
//! Nothing below `api` knows about tonic; nothing above `store` knows about SQL or Redis.
//! `http` is the second edge (JWKS, discovery, forward-auth, probes) and `api::ext_authz` the
//! Envoy one; both answer from `gateway`'s verdict on Verify's checks.
//! `config` parses the flags into typed `Settings`; `startup` wires an `App` from them and a
//! `Clock`; `server` serves it, with `tasks` beside; `telemetry` sets up logs and traces, and
//! `audit` is where the use cases record security-relevant actions.

pub mod api;
pub mod audit;
pub mod clock;
pub mod config;
pub mod domain;
pub mod gateway;
pub mod hashing;
pub mod http;
pub mod metrics;
pub mod server;
pub mod service;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod throttle;
pub mod tokens;

/// Code generated from `proto/auth/v1/auth.proto`.
pub mod pb {
    tonic::include_proto!("auth.v1");

    /// The encoded file descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_descriptor");

    /// The encoded file descriptor set of `envoy.service.auth.v3` (the ext_authz API; its Rust
    /// types come from the `envoy-types` crate), served by reflection too.
    pub const ENVOY_EXT_AUTHZ_FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("envoy_ext_authz_descriptor");
}

pub use config::{Config, Settings};
pub use startup::App;
