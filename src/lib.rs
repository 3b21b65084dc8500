//! authd: a gRPC authentication service — Register, Login, Logout and Verify.
//!
//! Data flows one way:
//!
//! ```text
//! api (tonic edge: proto <-> domain, Error -> Status)
//!   -> service (the four use cases)
//!        -> tokens (JWT issue/verify), password (argon2id on a bounded pool),
//!           throttle (login back-off policy)
//!        -> store (UserStore, RevocationStore, ThrottleStore: Postgres, SQLite, Redis)
//! ```
//!
//! Nothing below `api` knows about tonic; nothing above `store` knows about SQL or Redis.
//! `server` wires it together (`App`), `config` parses the settings, `telemetry` sets up logs.

pub mod api;
pub mod clock;
pub mod config;
pub mod domain;
pub mod password;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod token_cache;
pub mod tokens;

/// Code generated from `proto/auth/v1/auth.proto`.
pub mod pb {
    tonic::include_proto!("auth.v1");

    /// The encoded file descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_descriptor");
}

pub use config::Config;
pub use server::App;
